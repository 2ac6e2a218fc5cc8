"""``FLASH_ATTN`` through the ``flash_attn`` package, or torch SDPA's fused kernels without it.

With ``flash_attn`` (FlashAttention-2, ``flash-attn>=2.6``): one
``flash_attn_varlen_func`` call for the whole mixed batch.

* Paged KV (``block_table=``) when the block size is a multiple of 256 (FA2's paged-KV
  requirement); otherwise each sequence's KV is gathered once into a packed
  ``[sum(seq_lens), num_kv_heads, head_size]`` (bounded: only the batch's tokens) and the
  varlen call gets ``cu_seqlens_k``.
* causal is bottom-right aligned in FA2 (query rows are the last positions), as here.
* ``sliding_window=w`` -> ``window_size=(w - 1, 0)`` (causal) or ``(w - 1, -1)``.
* ``logits_soft_cap`` -> ``softcap``; fp8 KV is dequantised during the gather (FA2 has no
  fp8 path); sinks are not supported by upstream FA2 (vLLM's own ``vllm_flash_attn``
  FA3 build has them) -> ``KernelUnavailableError`` naming ``TRITON_ATTN``.

Without ``flash_attn``: ``sdpa_fallback.sdpa_paged`` (torch SDPA's fused kernels, no window,
soft-cap or sinks).
"""

from __future__ import annotations

import torch

from attnsolve.kernels.adapters import _common as C
from attnsolve.kernels.adapters.sdpa_fallback import ALTERNATIVE, BACKEND, flash_shape_reasons, sdpa_paged
from attnsolve.kernels.registry import register_kernel

__all__ = ["flash_attn_paged", "sdpa_paged", "INFO"]

MIN_VERSION = "2.6.0"  # softcap + block_table in flash_attn_varlen_func
PAGED_BLOCK_MULTIPLE = 256

INFO = C.AdapterInfo(
    backend=BACKEND,
    package="flash-attn",
    module="flash_attn",
    min_version=MIN_VERSION,
    compute_capability=">= 8.0",
    dtypes=("float16", "bfloat16"),
    notes=(
        "FA2 varlen; paged KV when block_size % 256 == 0, else a bounded gather",
        "fp8 KV dequantised during the gather",
        "no sinks (upstream FA2)",
    ),
    fallback="torch SDPA fused kernels (flash / memory-efficient): no window, soft-cap or sinks",
)


def _check(device: str) -> str | None:
    why = C.cuda_reason(BACKEND, device, min_cc=(8, 0))
    if why:
        return why
    if C.have("flash_attn"):
        v = C.package_version("flash-attn")
        if not C.version_at_least(v, MIN_VERSION):
            return f"flash-attn {v} is too old (needs >= {MIN_VERSION} for softcap and paged KV)"
    return None


def flash_attn_paged(
    query,
    key_cache,
    value_cache,
    md,
    *,
    scale=None,
    causal=True,
    sliding_window=None,
    logits_soft_cap=None,
    sinks=None,
    k_scale=None,
    v_scale=None,
    alibi_slopes=None,
    mm_prefix_ranges=None,
    return_lse=False,
    q_scale=None,
):
    """The registered ``FLASH_ATTN`` kernel: flash_attn when installed, else SDPA."""
    lib = C.load("flash_attn")
    if lib is None:
        return sdpa_paged(
            query, key_cache, value_cache, md, scale=scale, causal=causal, sliding_window=sliding_window,
            logits_soft_cap=logits_soft_cap, sinks=sinks, k_scale=k_scale, v_scale=v_scale,
            alibi_slopes=alibi_slopes, mm_prefix_ranges=mm_prefix_ranges, return_lse=return_lse, q_scale=q_scale,
        )
    c, md = C.checked(BACKEND, ALTERNATIVE, query, key_cache, value_cache, md, scale=scale, causal=causal,
                      sliding_window=sliding_window, logits_soft_cap=logits_soft_cap, sinks=sinks, k_scale=k_scale,
                      v_scale=v_scale, alibi_slopes=alibi_slopes, mm_prefix_ranges=mm_prefix_ranges,
                      return_lse=return_lse, q_scale=q_scale, supports=("a two-sided (non-causal) sliding_window",))
    query, key_cache, value_cache = c.query, c.key_cache, c.value_cache
    missing = flash_shape_reasons(query, key_cache, value_cache, "flash_attn")
    if sinks is not None:
        missing.append("upstream flash_attn (FA2) has no attention sinks (vLLM's FA3 build has)")
    if missing:
        raise C.unavailable(BACKEND, missing, ALTERNATIVE, device=query.device.type)

    T, H, D = query.shape
    bs = key_cache.shape[1]
    q_lens, seq_lens = C.host_lens(md)
    max_q = max(q_lens, default=0)
    max_k = max(seq_lens, default=0)
    dev = query.device
    cu_q = md.query_start_loc.to(device=dev, dtype=torch.int32)
    sc = c.scale  # q_scale folded in (check_paged)
    window = C.flash_window(c.window)
    kwargs = dict(
        dropout_p=0.0,
        softmax_scale=sc,
        causal=bool(causal),
        window_size=window,
        softcap=c.cap or 0.0,
    )
    fp8 = key_cache.dtype in C.FP8_DTYPES or value_cache.dtype in C.FP8_DTYPES
    if bs % PAGED_BLOCK_MULTIPLE == 0 and not fp8:
        cu_k = torch.zeros(len(seq_lens) + 1, dtype=torch.int32, device=dev)
        torch.cumsum(md.seq_lens.to(device=dev, dtype=torch.int32), 0, out=cu_k[1:])
        return lib.flash_attn_varlen_func(
            query, key_cache, value_cache, cu_q, cu_k, max_q, max_k,
            block_table=md.block_table.to(device=dev, dtype=torch.int32), **kwargs,
        )
    k, cu_k = C.packed_kv(key_cache, md, scale=k_scale if fp8 else None, dtype=query.dtype)
    v, _ = C.packed_kv(value_cache, md, scale=v_scale if fp8 else None, dtype=query.dtype)
    return lib.flash_attn_varlen_func(query, k, v, cu_q, cu_k, max_q, max_k, **kwargs)


register_kernel(BACKEND, devices=("cuda",), check=_check)(flash_attn_paged)
