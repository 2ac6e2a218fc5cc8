"""``TRITON_MLA``: MLA attention over the latent cache (absorbed query), dense and sparse top-k.

Semantics exactly as ``attnsolve.kernels.reference.mla_decode_reference``:

* ``query [num_tokens, num_heads, kv_lora_rank + rope_dim]`` (latent part, then rope part),
  varlen batch in the paged layout of ``attnsolve.kernels.metadata``;
* ``kv_cache [num_blocks, block_size, kv_lora_rank + rope_dim]`` (or with a ``1`` head
  dim before the last): one latent "KV head" shared by all query heads (MQA);
* ``scores = scale * q . k`` over all dims, ``scale`` defaulting to ``query.shape[-1] ** -0.5``;
  ``output = softmax(scores) @ kv[..., :kv_lora_rank]`` -> ``[num_tokens, num_heads, kv_lora_rank]``;
* dense: causal within the sequence; sparse (``topk_indices [num_tokens, topk]``, token
  positions within the sequence, ``-1`` = padding): each query attends exactly to the
  listed positions (a repeated index counts repeatedly), no other mask.

Work split: program ``(token, head_block)`` owns one query token and ``BLOCK_H`` heads;
it walks the keys in tiles of ``TILE`` positions (dense) or ``TILE`` top-k entries
(sparse), loading each latent row once for all its heads (scores and values come from
the same latent tile), with an online softmax in float32.  Split-KV (``num_segments``): the
tiles are shared among segments whose partial results a second kernel combines; on a GPU
it is on by default when ``tokens x head blocks`` would not fill the SMs.

On CPU it runs through Triton's interpreter (``TRITON_INTERPRET=1`` before triton is
imported), like ``TRITON_ATTN``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from attnsolve.kernels.registry import register_kernel
from attnsolve.kernels.validate import check_mla
from attnsolve.kernels.triton_attn import _require_runnable, interpreter_reason
from attnsolve.kernels.triton_attn_kernels import _reduce_segments_kernel
from attnsolve.kernels.triton_launch import (
    fit_shared_memory, launch_options, pow2_at_least, remembered, run_fitted, shared_memory_limit, split_kv_segments,
)

__all__ = ["triton_mla_attention"]


@triton.jit
def _mla_kernel(
    out_ptr,
    seg_acc_ptr,
    seg_ml_ptr,
    q_ptr,
    kv_ptr,
    topk_ptr,
    block_table_ptr,
    seq_lens_ptr,
    query_start_loc_ptr,
    num_seqs,
    scale,
    topk,
    stride_qt,
    stride_qh,
    stride_ot,
    stride_oh,
    stride_kb,
    stride_ks,
    stride_bt,
    stride_topk,
    block_size,
    num_heads,
    LORA: tl.constexpr,
    ROPE: tl.constexpr,
    LORA_PAD: tl.constexpr,
    ROPE_PAD: tl.constexpr,
    BLOCK_H: tl.constexpr,
    TILE: tl.constexpr,
    SPARSE: tl.constexpr,
    HAS_ROPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    DOT_F32: tl.constexpr,
    P_TWO_TERMS: tl.constexpr,
    NUM_SEGMENTS: tl.constexpr,
):
    tok = tl.program_id(0)
    head_block = tl.program_id(1)
    segment = tl.program_id(2)

    # sequence owning this token: last i with query_start_loc[i] <= tok
    left: tl.int32 = 0  # typed: a loop-carried value in compiled Triton
    right = num_seqs
    while left < right:
        mid = (left + right) // 2
        if tl.load(query_start_loc_ptr + mid) <= tok:
            left = mid + 1
        else:
            right = mid
    seq_idx = left - 1
    q_start = tl.load(query_start_loc_ptr + seq_idx)
    q_len = tl.load(query_start_loc_ptr + seq_idx + 1) - q_start
    seq_len = tl.load(seq_lens_ptr + seq_idx)
    q_pos = seq_len - q_len + (tok - q_start)

    offs_h = head_block * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = offs_h < num_heads
    offs_c = tl.arange(0, LORA_PAD)
    c_ok = offs_c < LORA
    offs_t = tl.arange(0, TILE)

    q_row = q_ptr + tok.to(tl.int64) * stride_qt + offs_h[:, None] * stride_qh
    q_c = tl.load(q_row + offs_c[None, :], mask=h_ok[:, None] & c_ok[None, :], other=0.0)
    if DOT_F32:
        q_c = q_c.to(tl.float32)
    if HAS_ROPE:
        offs_r = tl.arange(0, ROPE_PAD)
        r_ok = offs_r < ROPE
        q_r = tl.load(q_row + LORA + offs_r[None, :], mask=h_ok[:, None] & r_ok[None, :], other=0.0)
        if DOT_F32:
            q_r = q_r.to(tl.float32)

    m_i = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, LORA_PAD], dtype=tl.float32)

    bt_row = block_table_ptr + seq_idx * stride_bt
    if SPARSE:
        n_tiles = (topk + TILE - 1) // TILE
    else:
        n_tiles = (q_pos + 1 + TILE - 1) // TILE
    t_lo = 0
    t_hi = n_tiles
    if NUM_SEGMENTS > 1:  # split-KV: one contiguous share of the tiles
        per_segment = (n_tiles + NUM_SEGMENTS - 1) // NUM_SEGMENTS
        t_lo = segment * per_segment
        t_hi = tl.minimum(t_lo + per_segment, n_tiles)
    for t in range(t_lo, t_hi):
        if SPARSE:
            j = t * TILE + offs_t
            pos = tl.load(topk_ptr + tok.to(tl.int64) * stride_topk + j, mask=j < topk, other=-1)
            k_ok = (pos >= 0) & (pos < seq_len)
            pos = tl.where(k_ok, pos, 0)
        else:
            pos = t * TILE + offs_t
            k_ok = pos <= q_pos
        phys = tl.load(bt_row + pos // block_size, mask=k_ok, other=0).to(tl.int64)
        slot = (pos % block_size).to(tl.int64)
        row = kv_ptr + phys * stride_kb + slot * stride_ks  # [TILE]

        kc = tl.load(row[:, None] + offs_c[None, :], mask=k_ok[:, None] & c_ok[None, :], other=0.0)
        kc = kc.to(q_c.dtype)  # [TILE, LORA_PAD]
        s = tl.dot(q_c, tl.trans(kc), input_precision=DOT_PRECISION)  # [BLOCK_H, TILE]
        if HAS_ROPE:
            kr = tl.load(row[None, :] + LORA + offs_r[:, None], mask=r_ok[:, None] & k_ok[None, :], other=0.0)
            s += tl.dot(q_r, kr.to(q_r.dtype), input_precision=DOT_PRECISION)
        s = s * scale
        s = tl.where(h_ok[:, None] & k_ok[None, :], s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None]
        p_hi = p.to(kc.dtype)
        acc += tl.dot(p_hi, kc, input_precision=DOT_PRECISION)
        if P_TWO_TERMS:  # P = hi + lo in the cache's 16-bit type: P.V as exact as float32 P
            acc += tl.dot((p - p_hi.to(tl.float32)).to(kc.dtype), kc, input_precision=DOT_PRECISION)
        m_i = m_new

    if NUM_SEGMENTS == 1:
        l_safe = tl.where(l_i > 0, l_i, 1.0)
        out = acc / l_safe[:, None]
        tl.store(
            out_ptr + tok.to(tl.int64) * stride_ot + offs_h[:, None] * stride_oh + offs_c[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=h_ok[:, None] & c_ok[None, :],
        )
    else:
        slot = (tok.to(tl.int64) * num_heads + offs_h) * NUM_SEGMENTS + segment  # [BLOCK_H]
        tl.store(seg_acc_ptr + slot[:, None] * LORA_PAD + offs_c[None, :], acc, mask=h_ok[:, None])
        tl.store(seg_ml_ptr + slot * 2, m_i, mask=h_ok)
        tl.store(seg_ml_ptr + slot * 2 + 1, l_i, mask=h_ok)


_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def triton_mla_attention(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    md,
    *,
    kv_lora_rank: int = 512,
    scale=None,
    topk_indices: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    block_h: int | None = None,
    tile: int | None = None,
    num_segments: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    p_two_terms: bool | None = None,
    dot_f32: bool | None = None,
) -> torch.Tensor:
    """MLA attention over a paged latent cache; see the module docstring.

    ``num_warps``/``num_stages``: Triton launch options (default: Triton's own).

    ``num_segments`` (a power of two): split-KV segments combined by a second kernel;
    default 1 on CPU, on GPU enough for about two programs per SM (at most 16).

    ``dot_f32``: upcast the query and latent rows to float32 before the dots (default: on CPU,
    where Triton's interpreter is exact in float32 either way; off on GPUs, whose tensor cores
    take the 16-bit rows).  ``p_two_terms``: with 16-bit dots, multiply the probabilities as
    two 16-bit terms (hi + lo) so P.V keeps float32 precision (default on: rounding P to one
    bf16 term fails the peers' CPU MLA test tolerance at 256+ tokens, measured on an H200);
    ``False`` trades that precision for one tensor-core product per tile, as vLLM's Triton
    MLA kernel does.
    """
    c = check_mla(query, kv_cache, md, kv_lora_rank=kv_lora_rank, scale=scale, topk_indices=topk_indices,
                  query_dtypes=_FLOAT_DTYPES)
    query, kv_cache, topk_indices = c.query, c.kv_cache, c.topk_indices
    T, H, Dq = query.shape
    dev = query.device
    rope = Dq - kv_lora_rank
    qsl, seq_lens, block_table = c.query_start_loc, c.seq_lens, c.block_table
    num_seqs = int(seq_lens.shape[0])

    if out is None:
        out = torch.empty(T, H, kv_lora_rank, dtype=query.dtype, device=dev)
    if T == 0 or num_seqs == 0:
        return out

    sparse = topk_indices is not None
    if sparse:
        if topk_indices.dim() != 2 or topk_indices.shape[0] != T:
            raise ValueError(
                f"Expected topk_indices [num_tokens={T}, topk], but got {tuple(topk_indices.shape)}."
            )
        topk_t = topk_indices.to(device=dev, dtype=torch.int32)
        if topk_t.stride(-1) != 1:
            topk_t = topk_t.contiguous()
        topk = int(topk_t.shape[1])
        stride_topk = topk_t.stride(0)
    else:
        topk_t, topk, stride_topk = qsl, 0, 0

    if block_h is None:
        block_h = 16
    block_h = pow2_at_least(min(block_h, max(H, 1)), 16)
    chosen_by_caller = tile is not None
    if tile is None:
        tile = 32  # CPU: fewer interpreter steps; H200: 1.2x the 16-key tiles with split-KV (launch sweep)
    if tile < 16 or tile & (tile - 1):
        raise ValueError(f"Expected tile a power of two >= 16, but got {tile}.")
    lora_pad = pow2_at_least(kv_lora_rank, 16)
    rope_pad = pow2_at_least(rope, 16)
    shape_key = ("TRITON_MLA", dev.type, dev.index, lora_pad, rope_pad, query.dtype, kv_cache.dtype, block_h, tile,
                 num_warps, num_stages)
    scale = Dq ** -0.5 if scale is None else float(scale)

    if dot_f32 is None:
        dot_f32 = dev.type == "cpu"
    if p_two_terms is None:
        p_two_terms = True
    dot_f32 = bool(dot_f32) or query.dtype == torch.float32
    p_two_terms = bool(p_two_terms) and not dot_f32  # float32 P.V is exact without the split
    if dev.type != "cpu" and not chosen_by_caller:  # one latent row serves as key and value
        row = lora_pad + (rope_pad if rope > 0 else 0)
        _, tile = fit_shared_memory(block_h, tile, q_row=row, kv_key=row, elem_bytes=query.element_size(),
                                    p_bytes=8 if p_two_terms else 4, limit=shared_memory_limit(dev),
                                    least_block_m=block_h)
        _, tile = remembered(shape_key, block_h, tile)
    head_blocks = -(-H // block_h)
    if num_segments is None:
        num_segments = split_kv_segments(dev, T * head_blocks)
    if num_segments < 1 or num_segments & (num_segments - 1):
        raise ValueError(f"Expected num_segments a power of two >= 1, but got {num_segments}.")
    if num_segments > 1:
        seg_acc = torch.empty(T * H * num_segments * lora_pad, dtype=torch.float32, device=dev)
        seg_ml = torch.empty(T * H * num_segments * 2, dtype=torch.float32, device=dev)
    else:
        seg_acc = seg_ml = qsl

    kernel = _mla_kernel
    _require_runnable("TRITON_MLA", dev, kernel, None)
    grid = (T, head_blocks, num_segments)

    def launch(block_h: int, tile: int) -> None:
        kernel[grid](
            out,
            seg_acc,
            seg_ml,
            query,
            kv_cache,
            topk_t,
            block_table,
            seq_lens,
            qsl,
            num_seqs,
            scale,
            topk,
            query.stride(0),
            query.stride(1),
            out.stride(0),
            out.stride(1),
            kv_cache.stride(0),
            kv_cache.stride(1),
            block_table.stride(0),
            stride_topk,
            kv_cache.shape[1],
            H,
            LORA=kv_lora_rank,
            ROPE=rope,
            LORA_PAD=lora_pad,
            ROPE_PAD=rope_pad,
            BLOCK_H=block_h,
            TILE=tile,
            SPARSE=sparse,
            HAS_ROPE=rope > 0,
            DOT_PRECISION="ieee" if (query.dtype == torch.float32 or dev.type == "cpu") else None,
            DOT_F32=dot_f32,
            P_TWO_TERMS=p_two_terms,
            NUM_SEGMENTS=num_segments,
            **launch_options(num_warps, num_stages),
        )

    run_fitted(launch, block_h, tile, shape_key=shape_key, least_block_m=block_h,
               chosen_by_caller=chosen_by_caller or dev.type == "cpu")
    if num_segments > 1:
        _reduce_segments_kernel[(T, H)](
            out, seg_acc, seg_ml, seg_ml, out.stride(0), out.stride(1),
            NUM_HEADS=H, HEAD_SIZE_V=kv_lora_rank, HEAD_PAD_V=lora_pad, NUM_SEGMENTS=num_segments, RETURN_LSE=False,
        )
    return out




def _check(device: str) -> str | None:
    return interpreter_reason("TRITON_MLA", device, _mla_kernel)


@register_kernel("TRITON_MLA", devices=("cuda", "rocm", "cpu"), requires=("triton",), check=_check)
def triton_mla(query, kv_cache, md, *, kv_lora_rank=512, scale=None, topk_indices=None):
    """The registered ``TRITON_MLA`` kernel (see ``triton_mla_attention``)."""
    return triton_mla_attention(
        query, kv_cache, md, kv_lora_rank=kv_lora_rank, scale=scale, topk_indices=topk_indices
    )
