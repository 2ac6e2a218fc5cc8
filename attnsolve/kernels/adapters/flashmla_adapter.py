"""``FLASHMLA`` (dense decode) and ``FLASHMLA_SPARSE`` through the ``flash_mla`` package (flash-mla).

MLA calling convention (as ``TRITON_MLA``): ``fn(query, kv_cache, md, *, kv_lora_rank=512,
scale=None, topk_indices=None)``, query ``[num_tokens, num_heads, 576]``, kv_cache
``[num_blocks, 64, 576]`` (or ``[.., 64, 1, 576]``), output ``[num_tokens, num_heads, 512]``.

Dense (``flash_mla_with_kvcache``): FlashMLA takes a padded batch
``q [batch, s_q, heads, 576]`` with one ``s_q`` for all sequences; a varlen batch is laid out
*left-padded* to ``s_q = max(query lengths)`` so each sequence's real rows sit at the bottom,
where FlashMLA's bottom-right causal mask puts the last positions; padded rows are dropped.
``get_mla_metadata`` is called with ``(seq_lens, s_q * heads, 1)``; the call works with both
the older API (metadata tensors + ``num_splits``) and the newer one (a ``FlashMLASchedMeta``
object, ``num_splits=None``).  Needs SM 9.x (Hopper), page size 64, 512 + 64 dims, bf16/fp16.

Sparse (``flash_mla_sparse_fwd``, bf16): the paged cache is viewed as one flat
``[num_blocks * 64, 1, 576]`` sequence and each top-k position becomes a global slot
``block_table[seq, pos // 64] * 64 + pos % 64`` (``-1`` stays ``-1``); heads are padded to
64 or 128 and top-k to a multiple of 128 with ``-1``.  Needs SM 9.x or 10.x.
"""

from __future__ import annotations

import torch

from attnsolve.kernels.metadata import AttentionMetadata
from attnsolve.kernels.validate import check_mla

from attnsolve.kernels.adapters import _common as C
from attnsolve.kernels.registry import register_kernel

__all__ = ["flashmla_decode", "flashmla_sparse", "INFO", "INFO_SPARSE"]

ALTERNATIVE = "TRITON_MLA"
PAGE = 64
LORA, ROPE = 512, 64

INFO = C.AdapterInfo(
    backend="FLASHMLA",
    package="flash-mla",
    module="flash_mla",
    min_version=None,
    compute_capability="9.x",
    dtypes=("float16", "bfloat16"),
    notes=("kv_lora_rank 512 + rope 64", "page size 64", "varlen batch left-padded to max query length"),
)
INFO_SPARSE = C.AdapterInfo(
    backend="FLASHMLA_SPARSE",
    package="flash-mla",
    module="flash_mla",
    min_version=None,
    compute_capability="9.x or 10.x",
    dtypes=("bfloat16",),
    notes=("flash_mla_sparse_fwd on the flat cache with global slot indices", "heads padded to 64/128"),
)


_NO_PKG = "package 'flash-mla' (import flash_mla) is not installed"


def _check_dense(device: str) -> str | None:
    if not C.have("flash_mla"):
        return _NO_PKG
    return C.cuda_reason("FLASHMLA", device, majors=(9,))


def _check_sparse(device: str) -> str | None:
    if not C.have("flash_mla"):
        return _NO_PKG
    return C.cuda_reason("FLASHMLA_SPARSE", device, majors=(9, 10))


def _latent(kv_cache: torch.Tensor) -> torch.Tensor:
    """``[num_blocks, page, 576]`` -> ``[num_blocks, page, 1, 576]``."""
    if kv_cache.dim() == 3:
        return kv_cache.unsqueeze(2)
    return kv_cache


def _shape_checks(backend, query, kv_cache, kv_lora_rank, dtypes) -> list[str]:
    missing = []
    if query.dtype not in dtypes:
        missing.append(f"{backend} runs {'/'.join(str(d).split('.')[-1] for d in dtypes)} only, not {query.dtype}")
    if kv_lora_rank != LORA or query.shape[-1] != LORA + ROPE:
        missing.append(
            f"{backend} needs kv_lora_rank {LORA} + rope {ROPE} (DeepSeek dims), not "
            f"{kv_lora_rank} + {query.shape[-1] - kv_lora_rank}"
        )
    if kv_cache.shape[1] != PAGE:
        missing.append(f"{backend} needs block size {PAGE}, not {kv_cache.shape[1]}")
    lat = _latent(kv_cache)
    if lat.dim() != 4 or lat.shape[2] != 1:
        missing.append(f"{backend} needs one latent KV head, got cache shape {tuple(kv_cache.shape)}")
    return missing


def flashmla_decode(query, kv_cache, md, *, kv_lora_rank=512, scale=None, topk_indices=None):
    """The registered ``FLASHMLA`` kernel (dense)."""
    if topk_indices is not None:
        raise C.unavailable("FLASHMLA", ["FLASHMLA is dense; sparse top-k goes to FLASHMLA_SPARSE"],
                            "FLASHMLA_SPARSE", device=query.device.type)
    lib = C.load("flash_mla")
    if lib is None:
        raise C.unavailable("FLASHMLA", ["package 'flash-mla' (module flash_mla) is not installed"],
                            ALTERNATIVE, device=query.device.type)
    c = check_mla(query, kv_cache, md, kv_lora_rank=kv_lora_rank, scale=scale, topk_indices=topk_indices)
    query, kv_cache, topk_indices = c.query, c.kv_cache, c.topk_indices
    md = AttentionMetadata(c.query_start_loc, c.seq_lens, c.block_table)
    missing = _shape_checks("FLASHMLA", query, kv_cache, kv_lora_rank, (torch.float16, torch.bfloat16))
    if missing:
        raise C.unavailable("FLASHMLA", missing, ALTERNATIVE, device=query.device.type)

    T, H, Dq = query.shape
    dev = query.device
    q_lens, seq_lens = C.host_lens(md)
    B = len(seq_lens)
    s_q = max(q_lens, default=0)
    out = torch.zeros(T, H, kv_lora_rank, dtype=query.dtype, device=dev)
    if T == 0:
        return out
    qsl = md.query_start_loc.tolist()
    uniform = all(n == s_q for n in q_lens)
    if uniform:
        q4 = query.reshape(B, s_q, H, Dq)
    else:  # left-pad: real rows at the bottom
        q4 = torch.zeros(B, s_q, H, Dq, dtype=query.dtype, device=dev)
        for i, n in enumerate(q_lens):
            if n:
                q4[i, s_q - n:] = query[qsl[i]:qsl[i + 1]]
    cache_seqlens = md.seq_lens.to(device=dev, dtype=torch.int32)
    block_table = md.block_table.to(device=dev, dtype=torch.int32)
    meta, splits = lib.get_mla_metadata(cache_seqlens, s_q * H, 1)
    o4, _lse = lib.flash_mla_with_kvcache(
        q4, _latent(kv_cache), block_table, cache_seqlens, kv_lora_rank, meta, splits,
        softmax_scale=Dq ** -0.5 if scale is None else float(scale), causal=True,
    )
    if uniform:
        return o4.reshape(T, H, kv_lora_rank)
    for i, n in enumerate(q_lens):
        if n:
            out[qsl[i]:qsl[i + 1]] = o4[i, s_q - n:]
    return out


def global_slots(topk_indices: torch.Tensor, md, page: int) -> torch.Tensor:
    """Top-k token positions (per query row, ``-1`` padding) -> global cache slots (``-1`` kept)."""
    dev = topk_indices.device
    qsl = md.query_start_loc.to(device=dev, dtype=torch.long)
    T = topk_indices.shape[0]
    counts = qsl[1:] - qsl[:-1]
    seq_of_row = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), counts, output_size=T)
    pos = topk_indices.to(torch.long)
    valid = pos >= 0
    p = pos.clamp(min=0)
    bt = md.block_table.to(device=dev, dtype=torch.long)
    blocks = bt[seq_of_row.unsqueeze(1), p // page]
    return torch.where(valid, blocks * page + p % page, torch.full_like(p, -1)).to(torch.int32)


def flashmla_sparse(query, kv_cache, md, *, kv_lora_rank=512, scale=None, topk_indices=None):
    """The registered ``FLASHMLA_SPARSE`` kernel (bf16 cache)."""
    if topk_indices is None:
        raise C.unavailable("FLASHMLA_SPARSE", ["FLASHMLA_SPARSE needs topk_indices (dense MLA goes to FLASHMLA)"],
                            "FLASHMLA", device=query.device.type)
    lib = C.load("flash_mla")
    if lib is None:
        raise C.unavailable("FLASHMLA_SPARSE", ["package 'flash-mla' (module flash_mla) is not installed"],
                            ALTERNATIVE, device=query.device.type)
    c = check_mla(query, kv_cache, md, kv_lora_rank=kv_lora_rank, scale=scale, topk_indices=topk_indices)
    query, kv_cache, topk_indices = c.query, c.kv_cache, c.topk_indices
    md = AttentionMetadata(c.query_start_loc, c.seq_lens, c.block_table)
    missing = _shape_checks("FLASHMLA_SPARSE", query, kv_cache, kv_lora_rank, (torch.bfloat16,))
    T, H, Dq = query.shape
    if H > 128:
        missing.append(f"FLASHMLA_SPARSE handles at most 128 heads per call, not {H}")
    if missing:
        raise C.unavailable("FLASHMLA_SPARSE", missing, ALTERNATIVE, device=query.device.type)
    lat = _latent(kv_cache)
    flat = lat.reshape(lat.shape[0] * lat.shape[1], 1, Dq)
    idx = global_slots(topk_indices, md, lat.shape[1])
    k = idx.shape[1]
    k_pad = -(-k // 128) * 128
    if k_pad != k:
        idx = torch.cat([idx, torch.full((T, k_pad - k), -1, dtype=idx.dtype, device=idx.device)], 1)
    h_pad = 64 if H <= 64 else 128
    q = query
    if h_pad != H:
        q = torch.zeros(T, h_pad, Dq, dtype=query.dtype, device=query.device)
        q[:, :H] = query
    res = lib.flash_mla_sparse_fwd(q, flat, idx.unsqueeze(1).contiguous(),
                                   Dq ** -0.5 if scale is None else float(scale), kv_lora_rank)
    out = res[0]
    return out[:, :H].contiguous()


register_kernel("FLASHMLA", devices=("cuda",), check=_check_dense)(flashmla_decode)
register_kernel("FLASHMLA_SPARSE", devices=("cuda",), check=_check_sparse)(flashmla_sparse)
