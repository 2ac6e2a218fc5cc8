"""Shared pieces of the library adapters: lazy imports, hardware checks, metadata translation.

Nothing here imports a GPU library at module import; ``load(package)`` imports it on first
use (tests inject fakes through ``set_library``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from typing import Iterable

import torch

from attnsolve.kernels.registry import KernelUnavailableError

__all__ = [
    "AdapterInfo",
    "unavailable",
    "load",
    "set_library",
    "package_version",
    "cuda_reason",
    "packed_kv",
    "kv_indptr_paged",
    "scalar",
    "FP8_DTYPES",
]

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)

# package name -> module (or None: checked and missing); tests put fakes here.
_LIBS: dict[str, object] = {}


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter can run, for docs, ``attnsolve backends`` and the solver's ``available=``."""

    backend: str
    package: str | None  # the pip distribution it calls (None: torch only)
    module: str | None  # the import name
    min_version: str | None
    compute_capability: str  # in words, e.g. ">= 8.0" or "9.x"
    dtypes: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    fallback: str | None = None  # what runs when the package is missing

    def as_dict(self) -> dict:
        return {
            "backend": self.backend,
            "package": self.package,
            "installed_version": package_version(self.package) if self.package else None,
            "min_version": self.min_version,
            "compute_capability": self.compute_capability,
            "dtypes": list(self.dtypes),
            "notes": list(self.notes),
            "fallback": self.fallback,
        }


def unavailable(backend: str, missing: Iterable[str] | str, alternative: str | None, device: str | None = "cuda"):
    """A ``KernelUnavailableError`` (to raise) naming what is missing and the alternative."""
    return KernelUnavailableError(backend, missing, alternative, device=device)


def set_library(name: str, module) -> None:
    """Use ``module`` as package ``name`` (tests: a fake with the library's call signatures).

    ``module=None`` marks it missing; ``del``-ing goes back to the real import via ``reset``.
    """
    _LIBS[name] = module


def reset_library(name: str) -> None:
    _LIBS.pop(name, None)


def load(name: str):
    """The imported package ``name`` or ``None`` when it is not installed / fails to import."""
    if name in _LIBS:
        return _LIBS[name]
    mod = None
    try:
        if importlib.util.find_spec(name.split(".")[0]) is not None:
            mod = importlib.import_module(name)
    except Exception:  # a broken install (e.g. CUDA mismatch) counts as missing
        mod = None
    _LIBS[name] = mod
    return mod


def have(name: str) -> bool:
    if name in _LIBS:
        return _LIBS[name] is not None
    try:
        return importlib.util.find_spec(name.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def package_version(dist: str | None) -> str | None:
    if not dist:
        return None
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("+")[0].split("."):
        num = ""
        for ch in part:
            if ch.isdigit():
                num += ch
            else:
                break
        if not num:
            break
        out.append(int(num))
    return tuple(out)


def version_at_least(installed: str | None, minimum: str | None) -> bool:
    if minimum is None or installed is None:
        return True
    return _version_tuple(installed) >= _version_tuple(minimum)


def cuda_reason(backend: str, device: str, *, min_cc: tuple[int, int] | None = None,
                majors: tuple[int, ...] | None = None, max_cc: tuple[int, int] | None = None) -> str | None:
    """Why ``backend`` cannot run on ``device`` for hardware reasons (``None``: it can)."""
    if device != "cuda":
        return f"{backend} runs on NVIDIA GPUs (cuda), not {device}"
    if not torch.cuda.is_available() or torch.version.hip:
        return f"{backend} needs an NVIDIA GPU, but torch sees none (torch {torch.__version__})"
    cc = tuple(torch.cuda.get_device_capability())
    name = torch.cuda.get_device_name()
    if min_cc is not None and cc < min_cc:
        return f"{backend} needs compute capability >= {min_cc[0]}.{min_cc[1]}, but {name} is {cc[0]}.{cc[1]}"
    if max_cc is not None and cc > max_cc:
        return f"{backend} needs compute capability <= {max_cc[0]}.{max_cc[1]}, but {name} is {cc[0]}.{cc[1]}"
    if majors is not None and cc[0] not in majors:
        want = " or ".join(f"{m}.x" for m in majors)
        return f"{backend} needs compute capability {want}, but {name} is {cc[0]}.{cc[1]}"
    return None


def _bounded_non_causal_window(c) -> bool:
    from attnsolve.kernels.validate import UNBOUNDED
    return c.window is not None and not c.causal and c.window[1] < UNBOUNDED


_FEATURES = {
    "alibi_slopes": lambda c: c.alibi is not None,
    "mm_prefix_ranges": lambda c: c.mm is not None,
    "return_lse": lambda c: c.return_lse,
    "per-(sequence, KV head) k_scale/v_scale": lambda c: c.per_seq_scales,
    # non-causal with a bounded right side (even 0): a left-only window cannot say it
    "a two-sided (non-causal) sliding_window": _bounded_non_causal_window,
}


def checked(backend: str, alternative: str | None, query, key_cache, value_cache, md, *, supports=(), **kw):
    """``validate.check_paged`` for an adapter, plus a clear refusal (``KernelUnavailableError``)
    naming each paged-attention feature the library behind it cannot do.  Returns the checked
    inputs and metadata whose tensors are the checked int32 ones."""
    from attnsolve.kernels.metadata import AttentionMetadata
    from attnsolve.kernels.validate import check_paged

    c = check_paged(query, key_cache, value_cache, md, **kw)
    missing = [f"{backend}'s adapter does not support {name}" for name, used in _FEATURES.items()
               if name not in supports and used(c)]
    if missing:
        raise unavailable(backend, missing, alternative, device=query.device.type)
    return c, AttentionMetadata(c.query_start_loc, c.seq_lens, c.block_table)


def flash_window(window) -> tuple[int, int]:
    """A checked ``(left, right)`` window as flash-attn's ``window_size`` (``-1``: unbounded)."""
    from attnsolve.kernels.validate import UNBOUNDED

    if window is None:
        return (-1, -1)
    return tuple(-1 if w >= UNBOUNDED else int(w) for w in window)


def scalar(x) -> float:
    if x is None:
        return 1.0
    if isinstance(x, torch.Tensor):
        from attnsolve.kernels.validate import tensor_scalar

        return tensor_scalar(x)
    return float(x)


def host_lens(md) -> tuple[list[int], list[int]]:
    """``(query lengths, seq_lens)`` as Python lists."""
    qsl = md.query_start_loc.tolist()
    sl = md.seq_lens.tolist()
    return [qsl[i + 1] - qsl[i] for i in range(len(sl))], sl


def packed_kv(cache: torch.Tensor, md, *, scale=None, dtype: torch.dtype | None = None):
    """Gather each sequence's tokens from a paged cache into a packed ``[sum(seq_lens), H, D]``.

    Returns ``(packed, cu_seqlens_k int32 [batch+1])``.  One bounded gather (only the
    sequences' tokens, not the whole cache); an fp8 cache is dequantised with ``scale``
    into ``dtype`` on the way.
    """
    dev = cache.device
    nb, bs = cache.shape[:2]
    seq_lens = md.seq_lens.to(device=dev, dtype=torch.long)
    cu = torch.zeros(seq_lens.numel() + 1, dtype=torch.long, device=dev)
    torch.cumsum(seq_lens, 0, out=cu[1:])
    total = int(cu[-1])
    seq_id = torch.repeat_interleave(torch.arange(seq_lens.numel(), device=dev), seq_lens, output_size=total)
    pos = torch.arange(total, device=dev) - cu[:-1][seq_id]
    bt = md.block_table.to(device=dev, dtype=torch.long)
    slot = bt[seq_id, pos // bs] * bs + pos % bs
    flat = cache.reshape(nb * bs, *cache.shape[2:])
    out = flat.index_select(0, slot)
    if out.dtype in FP8_DTYPES or (dtype is not None and out.dtype != dtype):
        out = out.to(torch.float32)
        if scale is not None:
            out = out * scalar(scale)
        out = out.to(dtype if dtype is not None else torch.float32)
    return out, cu.to(torch.int32)


def kv_indptr_paged(md, block_size: int, device):
    """FlashInfer's page description of the block table.

    Returns ``(kv_indptr [batch+1], kv_indices [total_pages], kv_last_page_len [batch])``,
    int32: sequence ``i`` uses pages ``kv_indices[kv_indptr[i]:kv_indptr[i+1]]``, the
    last one filled to ``kv_last_page_len[i]`` slots.
    """
    seq_lens = md.seq_lens.to(device=device, dtype=torch.int32)
    bt = md.block_table.to(device=device, dtype=torch.int32)
    pages = (seq_lens + block_size - 1) // block_size
    indptr = torch.zeros(pages.numel() + 1, dtype=torch.int32, device=device)
    torch.cumsum(pages, 0, out=indptr[1:])
    cols = torch.arange(bt.shape[1], device=device, dtype=torch.int32)
    indices = bt[cols.unsqueeze(0) < pages.unsqueeze(1)]  # row-major: sequence by sequence
    last = torch.where(pages > 0, seq_lens - (pages - 1) * block_size, torch.zeros_like(seq_lens))
    return indptr, indices.contiguous(), last
