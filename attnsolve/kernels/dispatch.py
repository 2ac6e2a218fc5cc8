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

import math
from os import environ as _environ
import warnings
from typing import Optional

import torch

from attnsolve import Config, SelectionError, solve
from attnsolve import rules as _rules
from attnsolve.rules.sets import DEFAULT_ENV
from attnsolve.kernels import registry
from attnsolve.kernels.metadata import AttentionMetadata
from attnsolve.kernels.registry import KernelUnavailableError, runnable_backends, unavailable_reasons

__all__ = ["paged_attention", "paged_attention_op", "paged_attention_lse_op", "selection_block_size", "infer_config", "resolve", "clear_cache", "SelectionWarning"]


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


_CONFIG_BLOCK_SIZES = (1, 8, 16, 32, 64, 128, 256)


def selection_block_size(block_size: int) -> int:
    """The block size selection is asked about: the cache's own when ``Config`` knows it, else
    ``gcd(block_size, 256)`` (48 -> 16, 96 -> 32).  The rules test "a multiple of a kernel block
    size" (powers of two up to 256), and a size is a multiple of a power of two ``k <= 256`` exactly
    when that gcd is, so the verdict is the same."""
    if block_size in _CONFIG_BLOCK_SIZES or block_size <= 0:
        return block_size
    return math.gcd(block_size, 256)


def _host_cpu_facts() -> dict[str, bool]:
    """What vLLM asks torch about the host CPU (``torch.cpu._is_amx_tile_supported`` / ``_is_avx512_supported``)."""
    if "cpu" not in _capability_cpu:
        facts = {}
        for field, probe in (("cpu_amx", "_is_amx_tile_supported"), ("cpu_avx512", "_is_avx512_supported")):
            fn = getattr(torch.cpu, probe, None)
            if fn is not None:
                try:
                    facts[field] = bool(fn())
                except Exception:  # an old or unusual torch build: leave the rules' default
                    pass
        _capability_cpu["cpu"] = facts
    return _capability_cpu["cpu"]


_capability_cpu: dict[str, dict[str, bool]] = {}


def infer_config(query: torch.Tensor, key_cache: torch.Tensor, *, sinks: torch.Tensor | None = None,
                 backend: str | None = None, vllm: str | None = None, mla: bool = False,
                 kv_lora_rank: int | None = None, sparse: bool = False) -> Config:
    """The ``Config`` these tensors describe (raises ``ConfigError``/``ValueError`` on bad input).

    platform from the device (cuda on a HIP build is rocm), compute capability from
    ``torch.cuda.get_device_capability``, dtype from the query, kv_cache_dtype from the cache
    (same as the query: ``auto``; ``float8_e4m3fn``: ``fp8``; ``float8_e5m2``: ``fp8_e5m2``),
    head size and head count from the query, block size from the cache (``selection_block_size``),
    has_sink from ``sinks``.  ``vllm`` picks the rule set (default: ``$ATTNSOLVE_VLLM``, else the
    newest released set), as ``Config(vllm=...)`` does.  ``mla``: the key cache is an MLA latent
    cache ``[num_blocks, block_size, (1,) kv_lora_rank + rope_dim]`` (``use_mla``, head size = the
    query's last dim, ``kv_lora_rank`` where the release declares it; ``sparse``: top-k indices
    given, ``use_sparse``).  Host facts a release
    declares (``cpu_amx``, ``cpu_avx512`` at 0.33) come from torch, as vLLM reads them.
    """
    for name, t in (("query", query), ("key_cache", key_cache)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"Expected {name} a torch.Tensor, but got {type(t).__name__}.")
    if mla:
        if query.dim() != 3 or key_cache.dim() not in (3, 4) or (key_cache.dim() == 4 and key_cache.shape[2] != 1):
            raise ValueError(
                "Expected query [num_tokens, num_heads, kv_lora_rank + rope_dim] and an MLA latent cache "
                "[num_blocks, block_size, kv_lora_rank + rope_dim] (or with a 1 head dim), but got shapes "
                f"{tuple(query.shape)} and {tuple(key_cache.shape)}."
            )
    elif query.dim() != 3 or key_cache.dim() != 4:
        raise ValueError(
            "Expected query [num_tokens, num_heads, head_size] and key_cache [num_blocks, block_size, "
            f"num_kv_heads, head_size], but got shapes {tuple(query.shape)} and {tuple(key_cache.shape)}."
        )
    # an fp8 query is vLLM's quantized query of a bfloat16 model (the kernels widen it exactly)
    qdtype = torch.bfloat16 if (query.dtype in _FP8_NAMES and not mla) else query.dtype
    dtype = _DTYPE_NAMES.get(qdtype)
    if dtype is None:
        raise ValueError(f"Expected query dtype float16, bfloat16 or float32 (or an fp8 query with q_scale), "
                         f"but got {query.dtype}.")
    platform, cc = _platform(query.device)
    declared = _declared_fields(vllm)
    extra: dict = {}
    if platform == "cpu":
        extra.update({k: v for k, v in _host_cpu_facts().items() if k in declared})
    if mla:
        extra["use_mla"] = True
        if sparse:
            extra["use_sparse"] = True
        if kv_lora_rank is not None and "kv_lora_rank" in declared:
            extra["kv_lora_rank"] = int(kv_lora_rank)
    if vllm is not None:
        extra["vllm"] = vllm
    return Config(
        platform=platform, dtype=dtype, compute_capability=cc,
        kv_cache_dtype=_kv_cache_dtype(qdtype, key_cache.dtype),
        head_size=int(query.shape[2]), block_size=selection_block_size(int(key_cache.shape[1])),
        num_heads=int(query.shape[1]),
        has_sink=sinks is not None, backend=backend, **extra,
    )


def _declared_fields(vllm: str | None) -> frozenset[str]:
    """The selection inputs the release ``vllm`` (``None``: the default one) declares."""
    from attnsolve.config import parse_vllm
    from attnsolve.rules import rules_for

    label = parse_vllm(vllm)
    hit = _declared.get(label)
    if hit is None or hit[0] != _rules.generation():
        hit = _declared[label] = (_rules.generation(), frozenset(rules_for(label).fields))
    return hit[1]


_declared: dict[str, tuple[int, frozenset[str]]] = {}


# config key -> ((registry generation, rules generation), selected backend, kernel)
_cache: dict[tuple, tuple[int, int, str, object]] = {}


def clear_cache() -> None:
    """Forget cached selections (e.g. after changing rules)."""
    _cache.clear()


def resolve(query: torch.Tensor, key_cache: torch.Tensor, *, sinks=None, backend: str | None = None,
            vllm: str | None = None, mla: bool = False, kv_lora_rank: int | None = None, sparse: bool = False):
    """``(selection, kernel)`` for these tensors, uncached; raises ``KernelUnavailableError``."""
    cfg = infer_config(query, key_cache, sinks=sinks, backend=backend, vllm=vllm, mla=mla, kv_lora_rank=kv_lora_rank,
                       sparse=sparse)
    sel = solve(cfg)
    for w in sel.warnings:
        warnings.warn(f"attnsolve: {w}", SelectionWarning, stacklevel=4)
    platform = cfg.platform
    missing = unavailable_reasons(sel.backend, platform)
    if missing:
        runnable = runnable_backends(platform)
        from attnsolve.rules import rules_for

        known = rules_for(cfg.vllm).backends  # kernels of another release's backends (CPU_MLA at 0.17) are no candidates
        candidates = [b for b in runnable if b in known]
        try:
            alt = solve(cfg.replace(backend=None), available=candidates).backend if candidates else None
        except SelectionError:
            alt = None
        raise KernelUnavailableError(sel.backend, missing, alt, device=platform, runnable=runnable)
    return sel, registry.kernel_for(sel.backend, platform)


# os.environ.get encodes the key and decodes the value on every call (about 2 us right after a kernel has
# run, a third of the dispatch budget); CPython's os.environ keeps its encoded items in `_data`, which
# os.environ's own setters keep current, so the raw bytes are read from there (os.environ.get elsewhere).
_ENV_DATA = getattr(_environ, "_data", None)
_ENV_KEY = _environ.encodekey(DEFAULT_ENV) if _ENV_DATA is not None and hasattr(_environ, "encodekey") else None


def _env_default() -> object:
    """The raw $ATTNSOLVE_VLLM (bytes or str), None when unset."""
    if _ENV_KEY is not None:
        return _ENV_DATA.get(_ENV_KEY)
    return _environ.get(DEFAULT_ENV)


def _kernel(query, key_cache, value_cache, sinks, backend, vllm=None, kv_lora_rank=None, sparse=False):
    mla = value_cache is None
    # The release is part of the key: `vllm`, else the raw $ATTNSOLVE_VLLM (it may change between calls;
    # resolving it to a packaged release happens on a miss only: this runs on every call)
    release = vllm if vllm is not None else _env_default()
    for name, t in (("query", query), ("key_cache", key_cache), ("value_cache", value_cache)):
        if type(t) is not torch.Tensor and not isinstance(t, torch.Tensor) and not (mla and t is None):
            raise ValueError(f"Expected {name} a torch.Tensor, but got {type(t).__name__}.")
    key = (query.device, query.dtype, key_cache.dtype, None if mla else value_cache.dtype, query.shape[1],
           query.shape[2], key_cache.shape[1], sinks is None, backend, release, vllm is None, mla, kv_lora_rank,
           sparse)
    hit = _cache.get(key)
    # new kernels or new rules invalidate the entry
    if hit is None or hit[0] != registry._generation or hit[1] != _rules.generation():
        gen = (registry._generation, _rules.generation())
        sel, fn = resolve(query, key_cache, sinks=sinks, backend=backend, vllm=vllm, mla=mla,
                          kv_lora_rank=kv_lora_rank, sparse=sparse)
        hit = _cache[key] = (*gen, sel.backend, fn)
    return hit[3]


_MLA_UNSUPPORTED = (("causal", True), ("sliding_window", None), ("logits_soft_cap", None), ("sinks", None),
                    ("k_scale", None), ("v_scale", None), ("alibi_slopes", None), ("mm_prefix_ranges", None),
                    ("return_lse", False), ("q_scale", None))


def _mla_call(query, kv_cache, md, backend, vllm, scale, kv_lora_rank, topk_indices, given):
    """MLA over a latent cache (``value_cache=None``): the MLA kernel the rules select, called with
    its own arguments; keywords MLA kernels do not take are refused by name."""
    bad = [k for k, default in _MLA_UNSUPPORTED if given[k] is not default]
    if bad:
        raise ValueError(
            f"Expected only scale, kv_lora_rank and topk_indices with an MLA latent cache (value_cache=None), "
            f"but got {', '.join(bad)}; MLA kernels attend causally with no window, soft-cap, sinks or scales."
        )
    rank = 512 if kv_lora_rank is None else int(kv_lora_rank)
    fn = _kernel(query, kv_cache, None, None, backend, vllm, rank, topk_indices is not None)
    return fn(query, kv_cache, md, kv_lora_rank=rank, scale=scale, topk_indices=topk_indices)


def _extras(alibi_slopes, mm_prefix_ranges, return_lse, q_scale=None) -> dict:
    """The newer keyword arguments, passed on only when used (kernels registered by others that
    predate them keep working for the common call)."""
    kw = {}
    if q_scale is not None:
        kw["q_scale"] = q_scale
    if alibi_slopes is not None:
        kw["alibi_slopes"] = alibi_slopes
    if mm_prefix_ranges is not None:
        kw["mm_prefix_ranges"] = mm_prefix_ranges
    if return_lse:
        kw["return_lse"] = True
    return kw


def _call(fn, query, key_cache, value_cache, md, backend, kw):
    try:
        return fn(query, key_cache, value_cache, md, **kw)
    except TypeError as e:
        extra = [k for k in ("alibi_slopes", "mm_prefix_ranges", "return_lse", "q_scale") if k in kw and f"'{k}'" in str(e)]
        if extra:
            raise KernelUnavailableError(
                backend or getattr(fn, "__name__", "?"),
                f"its kernel does not take {', '.join(extra)} (a feature it does not have)",
            ) from e
        raise


def paged_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    md: AttentionMetadata,
    *,
    backend: str | None = None,
    scale: float | None = None,
    causal: bool = True,
    sliding_window: int | tuple[int, int] | None = None,
    logits_soft_cap: float | None = None,
    sinks: torch.Tensor | None = None,
    k_scale=None,
    v_scale=None,
    alibi_slopes: torch.Tensor | None = None,
    mm_prefix_ranges=None,
    return_lse: bool = False,
    vllm: str | None = None,
    kv_lora_rank: int | None = None,
    topk_indices: torch.Tensor | None = None,
    q_scale=None,
):
    """Paged attention with the backend vLLM would select for these tensors.

    Layout and semantics (every keyword): ``docs/kernels.md``.  ``backend`` requests one, as
    vLLM's ``attention_backend`` does (on CPU vLLM ignores the request with a warning and uses
    CPU_ATTN).  ``vllm`` names the release whose rules select (default ``$ATTNSOLVE_VLLM``, else
    the newest released set), like ``Config(vllm=...)``.  MLA: pass the latent cache as
    ``key_cache`` and ``value_cache=None`` (``kv_lora_rank`` default 512, ``topk_indices`` for
    sparse top-k); the release's MLA backend runs (CPU_MLA on CPU at 0.33; 0.17 has none on CPU).
    An fp8 query (vLLM's quantized query) comes with its descale ``q_scale``; it selects as a
    bfloat16 model and returns bfloat16.
    Returns ``out``, or ``(out, lse)`` with ``return_lse=True``.  Raises
    ``KernelUnavailableError`` when the selected backend has no kernel that can run here, and
    ``ValueError`` ("Expected ..., but got ...") for bad input.
    """
    if value_cache is None:
        if torch.compiler.is_compiling():
            raise ValueError("Expected a value_cache under torch.compile: the MLA path (value_cache=None) runs eagerly only.")
        given = dict(causal=causal, sliding_window=sliding_window, logits_soft_cap=logits_soft_cap, sinks=sinks,
                     k_scale=k_scale, v_scale=v_scale, alibi_slopes=alibi_slopes, mm_prefix_ranges=mm_prefix_ranges,
                     return_lse=return_lse, q_scale=q_scale)
        return _mla_call(query, key_cache, md, backend, vllm, scale, kv_lora_rank, topk_indices, given)
    if kv_lora_rank is not None or topk_indices is not None:
        raise ValueError("Expected value_cache=None (an MLA latent cache) with kv_lora_rank or topk_indices, "
                         "but got a value_cache.")
    if torch.compiler.is_compiling():
        window_right = None
        if isinstance(sliding_window, (tuple, list)):
            sliding_window, window_right = sliding_window
        args = (
            query, key_cache, value_cache, md.query_start_loc, md.seq_lens, md.block_table, backend,
            None if scale is None else float(scale), causal, sliding_window,
            None if logits_soft_cap is None else float(logits_soft_cap), sinks, _scale_tensor(k_scale),
            _scale_tensor(v_scale), alibi_slopes, _mm_tensor(mm_prefix_ranges), window_right, vllm,
            _scale_tensor(q_scale),
        )
        if return_lse:
            return paged_attention_lse_op(*args)
        return paged_attention_op(*args)
    fn = _kernel(query, key_cache, value_cache, sinks, backend, vllm)
    if alibi_slopes is None and mm_prefix_ranges is None and not return_lse and q_scale is None:  # the common call
        return fn(query, key_cache, value_cache, md, scale=scale, causal=causal, sliding_window=sliding_window,
                  logits_soft_cap=logits_soft_cap, sinks=sinks, k_scale=k_scale, v_scale=v_scale)
    kw = dict(scale=scale, causal=causal, sliding_window=sliding_window, logits_soft_cap=logits_soft_cap,
              sinks=sinks, k_scale=k_scale, v_scale=v_scale,
              **_extras(alibi_slopes, mm_prefix_ranges, return_lse, q_scale))
    return _call(fn, query, key_cache, value_cache, md, backend, kw)


def _out_dtype(query: torch.Tensor) -> torch.dtype:
    """The output dtype of a paged call: the query's, bfloat16 for an fp8 query (widened exactly)."""
    return torch.bfloat16 if query.dtype in _FP8_NAMES else query.dtype


def _scale_tensor(x):
    if x is None or isinstance(x, torch.Tensor):
        return x
    return torch.tensor(float(x), dtype=torch.float32, device="cpu")  # a host value (any default device)


def _mm_tensor(ranges):
    """Nested ``[[(start, end), ...], ...]`` -> int64 ``[num_seqs, max_ranges, 2]`` (padding: empty ``(0, 0)``)."""
    if ranges is None or isinstance(ranges, torch.Tensor):
        return ranges
    width = 0
    for r in ranges:  # plain loops: dynamo traces this while compiling
        if r and len(r) > width:
            width = len(r)
    flat = []
    for r in ranges:
        r = list(r or ())
        for a, b in r + [(0, 0)] * (width - len(r)):
            flat += [int(a), int(b)]
    return torch.tensor(flat, dtype=torch.int64, device="cpu").reshape(len(ranges), width, 2)


def _op_call(query, key_cache, value_cache, query_start_loc, seq_lens, block_table, backend, scale, causal,
             sliding_window, logits_soft_cap, sinks, k_scale, v_scale, alibi_slopes, mm_prefix_ranges,
             sliding_window_right, return_lse, vllm=None, q_scale=None):
    md = AttentionMetadata(query_start_loc, seq_lens, block_table)
    if sliding_window_right is not None:
        sliding_window = (-1 if sliding_window is None else sliding_window, sliding_window_right)
    fn = _kernel(query, key_cache, value_cache, sinks, backend, vllm)
    if alibi_slopes is None and mm_prefix_ranges is None and not return_lse and q_scale is None:  # the common call
        return fn(query, key_cache, value_cache, md, scale=scale, causal=causal, sliding_window=sliding_window,
                  logits_soft_cap=logits_soft_cap, sinks=sinks, k_scale=k_scale, v_scale=v_scale)
    kw = dict(scale=scale, causal=causal, sliding_window=sliding_window, logits_soft_cap=logits_soft_cap,
              sinks=sinks, k_scale=k_scale, v_scale=v_scale,
              **_extras(alibi_slopes, mm_prefix_ranges, return_lse, q_scale))
    return _call(fn, query, key_cache, value_cache, md, backend, kw)


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
    k_scale: Optional[torch.Tensor] = None,
    v_scale: Optional[torch.Tensor] = None,
    alibi_slopes: Optional[torch.Tensor] = None,
    mm_prefix_ranges: Optional[torch.Tensor] = None,
    sliding_window_right: Optional[int] = None,
    vllm: Optional[str] = None,
    q_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``paged_attention`` as a torch custom op (flat arguments: the metadata's three tensors).

    Scales are tensors (0-d or ``[num_seqs, num_kv_heads]``); ``mm_prefix_ranges`` an integer
    ``[num_seqs, max_ranges, 2]`` tensor of half-open ranges (``start == end``: padding);
    a ``(left, right)`` window is ``sliding_window=left, sliding_window_right=right``.
    """
    return _op_call(query, key_cache, value_cache, query_start_loc, seq_lens, block_table, backend, scale, causal,
                    sliding_window, logits_soft_cap, sinks, k_scale, v_scale, alibi_slopes, mm_prefix_ranges,
                    sliding_window_right, False, vllm, q_scale)


@paged_attention_op.register_fake
def _paged_attention_fake(query, key_cache, value_cache, query_start_loc, seq_lens, block_table, backend=None,
                          scale=None, causal=True, sliding_window=None, logits_soft_cap=None, sinks=None,
                          k_scale=None, v_scale=None, alibi_slopes=None, mm_prefix_ranges=None,
                          sliding_window_right=None, vllm=None, q_scale=None):
    return query.new_empty((query.shape[0], query.shape[1], value_cache.shape[3]), dtype=_out_dtype(query))


@torch.library.custom_op("attnsolve::paged_attention_lse", mutates_args=())
def paged_attention_lse_op(
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
    k_scale: Optional[torch.Tensor] = None,
    v_scale: Optional[torch.Tensor] = None,
    alibi_slopes: Optional[torch.Tensor] = None,
    mm_prefix_ranges: Optional[torch.Tensor] = None,
    sliding_window_right: Optional[int] = None,
    vllm: Optional[str] = None,
    q_scale: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``paged_attention(..., return_lse=True)`` as a custom op: ``(out, lse [num_tokens, num_heads] float32)``."""
    out, lse = _op_call(query, key_cache, value_cache, query_start_loc, seq_lens, block_table, backend, scale, causal,
                        sliding_window, logits_soft_cap, sinks, k_scale, v_scale, alibi_slopes, mm_prefix_ranges,
                        sliding_window_right, True, vllm, q_scale)
    return out, lse


@paged_attention_lse_op.register_fake
def _paged_attention_lse_fake(query, key_cache, value_cache, query_start_loc, seq_lens, block_table, backend=None,
                              scale=None, causal=True, sliding_window=None, logits_soft_cap=None, sinks=None,
                              k_scale=None, v_scale=None, alibi_slopes=None, mm_prefix_ranges=None,
                              sliding_window_right=None, vllm=None, q_scale=None):
    return (query.new_empty((query.shape[0], query.shape[1], value_cache.shape[3]), dtype=_out_dtype(query)),
            query.new_empty((query.shape[0], query.shape[1]), dtype=torch.float32))
