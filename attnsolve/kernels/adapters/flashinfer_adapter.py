"""``FLASHINFER`` through ``flashinfer-python``: ``BatchPrefillWithPagedKVCacheWrapper``.

The cache layout is FlashInfer's ``NHD`` paged layout already
(``[num_pages, page_size, num_kv_heads, head_dim]``, K and V as a tuple), so only the block
table is translated: ``kv_indptr``/``kv_indices``/``kv_last_page_len`` (see
``_common.kv_indptr_paged``), ``qo_indptr = query_start_loc``.  One ``plan`` + ``run`` per
call handles the mixed prefill/decode batch (the prefill wrapper covers decode rows).

* causal: FlashInfer aligns it bottom-right (query rows are the last positions), as here;
* ``sliding_window=w`` -> ``window_left=w - 1``;  ``logits_soft_cap`` -> ``logits_soft_cap``;
* fp8 KV: ``kv_data_type`` = the cache dtype, ``k_scale``/``v_scale`` passed to ``run``;
* sinks: FlashInfer's native kernels have none (vLLM uses TRT-LLM kernels on SM 10.x) ->
  ``KernelUnavailableError`` naming ``TRITON_ATTN``;
* head sizes 64/128/256, fp16/bf16, SM 7.5 .. 12.x (vLLM's declared support).
"""

from __future__ import annotations

import torch

from attnsolve.kernels.adapters import _common as C
from attnsolve.kernels.registry import register_kernel

__all__ = ["flashinfer_paged", "INFO"]

BACKEND = "FLASHINFER"
ALTERNATIVE = "TRITON_ATTN"
MIN_VERSION = "0.2.0"  # plan/run API
HEAD_SIZES = (64, 128, 256)
WORKSPACE_BYTES = 128 * 1024 * 1024

INFO = C.AdapterInfo(
    backend=BACKEND,
    package="flashinfer-python",
    module="flashinfer",
    min_version=MIN_VERSION,
    compute_capability=">= 7.5, <= 12.1",
    dtypes=("float16", "bfloat16"),
    notes=("head sizes 64/128/256", "fp8 KV with k_scale/v_scale", "no sinks (native kernels)"),
)

_wrappers: dict = {}


def _check(device: str) -> str | None:
    if not C.have("flashinfer"):
        return "package 'flashinfer-python' (import flashinfer) is not installed"
    why = C.cuda_reason(BACKEND, device, min_cc=(7, 5), max_cc=(12, 1))
    if why:
        return why
    v = C.package_version("flashinfer-python")
    if not C.version_at_least(v, MIN_VERSION):
        return f"flashinfer-python {v} is too old (needs >= {MIN_VERSION})"
    return None


def _wrapper(lib, device: torch.device):
    key = (id(lib), str(device))
    w = _wrappers.get(key)
    if w is None:
        workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=device)
        w = _wrappers[key] = lib.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    return w


def flashinfer_paged(
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
    """The registered ``FLASHINFER`` kernel (FlashInfer has a left window only: a non-causal
    window, which vLLM makes symmetric, is refused)."""
    lib = C.load("flashinfer")
    if lib is None:
        raise C.unavailable(BACKEND, ["package 'flashinfer-python' is not installed (pip install flashinfer-python)"],
                            ALTERNATIVE, device=query.device.type)
    c, md = C.checked(BACKEND, ALTERNATIVE, query, key_cache, value_cache, md, scale=scale, causal=causal,
                      sliding_window=sliding_window, logits_soft_cap=logits_soft_cap, sinks=sinks, k_scale=k_scale,
                      v_scale=v_scale, alibi_slopes=alibi_slopes, mm_prefix_ranges=mm_prefix_ranges,
                      return_lse=return_lse, q_scale=q_scale)
    query, key_cache, value_cache = c.query, c.key_cache, c.value_cache
    missing = []
    T, H, D = query.shape
    nb, bs, Hkv, _ = key_cache.shape
    if query.dtype not in (torch.float16, torch.bfloat16):
        missing.append(f"FlashInfer runs fp16/bf16 only, not {query.dtype}")
    if D not in HEAD_SIZES or value_cache.shape[-1] != D:
        missing.append(f"FlashInfer supports head sizes {list(HEAD_SIZES)} (same for K and V), not {D}/{value_cache.shape[-1]}")
    if sinks is not None:
        missing.append("FlashInfer's native kernels have no attention sinks (vLLM uses TRT-LLM kernels on SM 10.x)")
    if missing:
        raise C.unavailable(BACKEND, missing, ALTERNATIVE, device=query.device.type)

    dev = query.device
    qo_indptr = md.query_start_loc.to(device=dev, dtype=torch.int32)
    kv_indptr, kv_indices, last_len = C.kv_indptr_paged(md, bs, dev)
    w = _wrapper(lib, dev)
    w.plan(
        qo_indptr,
        kv_indptr,
        kv_indices,
        last_len,
        H,
        Hkv,
        D,
        bs,
        causal=bool(causal),
        pos_encoding_mode="NONE",
        window_left=C.flash_window(c.window)[0],
        logits_soft_cap=c.cap,
        sm_scale=c.scale,
        q_data_type=query.dtype,
        kv_data_type=key_cache.dtype,
    )
    kw = {}
    if k_scale is not None:
        kw["k_scale"] = C.scalar(k_scale)
    if v_scale is not None:
        kw["v_scale"] = C.scalar(v_scale)
    return w.run(query, (key_cache, value_cache), **kw)


register_kernel(BACKEND, devices=("cuda",), check=_check)(flashinfer_paged)
