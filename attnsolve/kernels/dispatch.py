"""Tensors in, selection, the chosen kernel runs.

``paged_attention`` derives a ``Config`` from the tensors (``infer_config``), asks the solver
which backend vLLM would select, and calls the kernel registered for it.  The selection is
cached per *config key* (device, dtypes, head count, head size, block size, sinks,
requested backend), so a repeated call costs one dict lookup on top of the kernel.

A selected backend without a runnable kernel here raises ``KernelUnavailableError`` naming
the backend, what is missing, and the solver's pick among the backends runnable here
(``solve(config, available=runnable_backends(platform))``).

The same entry point is registered as the ``torch.library.custom_op``
``attnsolve::paged_attention`` with a fake (meta) implementation; ``paged_attention`` routes
to it while ``torch.compile`` traces, so ``torch.compile(fullgraph=True)`` works.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch

from attnsolve import Config, SelectionError, solve
from attnsolve import rules as _rules
from attnsolve.kernels import registry
from attnsolve.kernels.metadata import AttentionMetadata
from attnsolve.kernels.registry import KernelUnavailableError, runnable_backends, unavailable_reasons

__all__ = ["paged_attention", "paged_attention_op", "infer_config", "resolve", "clear_cache", "SelectionWarning"]


class SelectionWarning(UserWarning):
    """The solver's warnings for a selection (e.g. vLLM ignoring a requested backend on CPU).

    Emitted once per config key (selections are cached); filter with
    ``warnings.filterwarnings("ignore", category=SelectionWarning)``.
    """

_DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}
_FP8_NAMES = {torch.float8_e4m3fn: "fp8", torch.float8_e5m2: "fp8_e5m2"}
_capability: dict[int, tuple[int, int]] = {}


def _platform(device: torch.device) -> tuple[str, tuple[int, int] | None]:
    if device.type == "cpu":
        return "cpu", None
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        cc = _capability.get(idx)
        if cc is None:
            cc = _capability[idx] = tuple(torch.cuda.get_device_capability(idx))
        return ("rocm" if torch.version.hip else "cuda"), cc
    raise ValueError(f"Expected tensors on cpu or cuda, but got device {device}. Try moving them with .to('cpu').")


def _kv_cache_dtype(query_dtype: torch.dtype, cache_dtype: torch.dtype) -> str:
    if cache_dtype == query_dtype:
        return "auto"
    if cache_dtype in _FP8_NAMES:
        return _FP8_NAMES[cache_dtype]
    if cache_dtype == torch.bfloat16:
        return "bfloat16"
    raise ValueError(
        f"Expected key_cache dtype {query_dtype} (like the query), bfloat16, float8_e4m3fn or float8_e5m2, "
        f"but got {cache_dtype}."
    )


def infer_config(query: torch.Tensor, key_cache: torch.Tensor, *, sinks: torch.Tensor | None = None,
                 backend: str | None = None) -> Config:
    """The ``Config`` these tensors describe (raises ``ConfigError``/``ValueError`` on bad input).

    platform from the device (cuda on a HIP build is rocm), compute capability from
    ``torch.cuda.get_device_capability``, dtype from the query, kv_cache_dtype from the cache
    (same as the query: ``auto``; ``float8_e4m3fn``: ``fp8``; ``float8_e5m2``: ``fp8_e5m2``),
    head size and head count from the query, block size from the cache, has_sink from ``sinks``.
    """
    if query.dim() != 3 or key_cache.dim() != 4:
        raise ValueError(
            "Expected query [num_tokens, num_heads, head_size] and key_cache [num_blocks, block_size, "
            f"num_kv_heads, head_size], but got shapes {tuple(query.shape)} and {tuple(key_cache.shape)}."
        )
    dtype = _DTYPE_NAMES.get(query.dtype)
    if dtype is None:
        raise ValueError(f"Expected query dtype float16, bfloat16 or float32, but got {query.dtype}.")
    platform, cc = _platform(query.device)
    return Config(
        platform=platform, dtype=dtype, compute_capability=cc,
        kv_cache_dtype=_kv_cache_dtype(query.dtype, key_cache.dtype),
        head_size=int(query.shape[2]), block_size=int(key_cache.shape[1]), num_heads=int(query.shape[1]),
        has_sink=sinks is not None, backend=backend,
    )


# config key -> ((registry generation, rules generation), selected backend, kernel)
_cache: dict[tuple, tuple[int, str, object]] = {}


def clear_cache() -> None:
    """Forget cached selections (e.g. after changing rules)."""
    _cache.clear()


def resolve(query: torch.Tensor, key_cache: torch.Tensor, *, sinks=None, backend: str | None = None):
    """``(selection, kernel)`` for these tensors, uncached; raises ``KernelUnavailableError``."""
    cfg = infer_config(query, key_cache, sinks=sinks, backend=backend)
    sel = solve(cfg)
    for w in sel.warnings:
        warnings.warn(f"attnsolve: {w}", SelectionWarning, stacklevel=4)
    platform = cfg.platform
    missing = unavailable_reasons(sel.backend, platform)
    if missing:
        runnable = runnable_backends(platform)
        try:
            alt = solve(cfg.replace(backend=None), available=runnable).backend if runnable else None
        except SelectionError:
            alt = None
        raise KernelUnavailableError(sel.backend, missing, alt, device=platform, runnable=runnable)
    return sel, registry.kernel_for(sel.backend, platform)


def _kernel(query, key_cache, value_cache, sinks, backend):
    key = (query.device, query.dtype, key_cache.dtype, value_cache.dtype, query.shape[1], query.shape[2],
           key_cache.shape[1], sinks is None, backend)
    hit = _cache.get(key)
    gen = (registry._generation, _rules.generation())  # new kernels or new rules invalidate the entry
    if hit is None or hit[0] != gen:
        sel, fn = resolve(query, key_cache, sinks=sinks, backend=backend)
        hit = _cache[key] = (gen, sel.backend, fn)
    return hit[2]


def paged_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    md: AttentionMetadata,
    *,
    backend: str | None = None,
    scale: float | None = None,
    causal: bool = True,
    sliding_window: int | None = None,
    logits_soft_cap: float | None = None,
    sinks: torch.Tensor | None = None,
    k_scale=None,
    v_scale=None,
) -> torch.Tensor:
    """Paged attention with the backend vLLM would select for these tensors.

    Layout and semantics: ``docs/kernels.md`` (and ``attnsolve.kernels.metadata``).
    ``backend`` requests one, as vLLM's ``attention_backend`` does (on CPU vLLM ignores the
    request with a warning and uses CPU_ATTN).  Raises ``KernelUnavailableError`` when the
    selected backend has no kernel that can run here.
    """
    if torch.compiler.is_compiling():
        if isinstance(k_scale, torch.Tensor):
            k_scale = float(k_scale)
        if isinstance(v_scale, torch.Tensor):
            v_scale = float(v_scale)
        return paged_attention_op(
            query, key_cache, value_cache, md.query_start_loc, md.seq_lens, md.block_table, backend,
            None if scale is None else float(scale), causal, sliding_window,
            None if logits_soft_cap is None else float(logits_soft_cap), sinks, k_scale, v_scale,
        )
    return _kernel(query, key_cache, value_cache, sinks, backend)(
        query, key_cache, value_cache, md, scale=scale, causal=causal, sliding_window=sliding_window,
        logits_soft_cap=logits_soft_cap, sinks=sinks, k_scale=k_scale, v_scale=v_scale,
    )


@torch.library.custom_op("attnsolve::paged_attention", mutates_args=())
def paged_attention_op(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor,
    backend: Optional[str] = None,
    scale: Optional[float] = None,
    causal: bool = True,
    sliding_window: Optional[int] = None,
    logits_soft_cap: Optional[float] = None,
    sinks: Optional[torch.Tensor] = None,
    k_scale: Optional[float] = None,
    v_scale: Optional[float] = None,
) -> torch.Tensor:
    """``paged_attention`` as a torch custom op (flat arguments: the metadata's three tensors)."""
    md = AttentionMetadata(query_start_loc, seq_lens, block_table)
    return _kernel(query, key_cache, value_cache, sinks, backend)(
        query, key_cache, value_cache, md, scale=scale, causal=causal, sliding_window=sliding_window,
        logits_soft_cap=logits_soft_cap, sinks=sinks, k_scale=k_scale, v_scale=v_scale,
    )


@paged_attention_op.register_fake
def _paged_attention_fake(query, key_cache, value_cache, query_start_loc, seq_lens, block_table, backend=None,
                          scale=None, causal=True, sliding_window=None, logits_soft_cap=None, sinks=None,
                          k_scale=None, v_scale=None):
    return query.new_empty((query.shape[0], query.shape[1], value_cache.shape[3]))
