"""``TRITON_ATTN``: a unified paged-attention Triton kernel (mixed prefill/decode batch).

One launch serves a varlen batch that mixes prefill and decode rows, in vLLM's paged
layout (see ``attnsolve.kernels.metadata``).  Features: GQA/MQA, causal, sliding window,
logits soft-cap, attention sinks, fp8 KV cache with per-tensor scales, any head size
(padded to a power of two and masked), a value head size different from the key's,
any block size.

Work split (as in vLLM's ``triton_unified_attention``): program ``(q_block, kv_head)``
owns ``BLOCK_Q`` consecutive query tokens of one sequence times the
``num_heads // num_kv_heads`` query heads sharing ``kv_head`` (``BLOCK_M`` rows), and
walks the sequence's keys tile by tile (``TILE`` positions, looked up through the block
table one position at a time, so ``TILE`` does not depend on the block size) with an
online softmax in float32.  The grid is ``num_tokens // BLOCK_Q + num_seqs`` q-blocks,
an upper bound that needs no host sync; a program finds its sequence by binary search
over ``query_start_loc`` and exits if it has no rows.

Where it runs:

* CUDA (and ROCm) tensors: compiled by Triton.
* CPU tensors: through Triton's interpreter (numpy), which is slow and meant for tests.
  It needs ``TRITON_INTERPRET=1`` set before triton is first imported (triton decides
  between compiling and interpreting at decoration time); the registry offers the
  kernel on CPU only then (an explicit opt-in), so the dispatch never picks the
  interpreter for real work by accident.

This module imports torch and triton at the top; ``attnsolve.kernels.registry`` imports
it lazily.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from attnsolve.kernels.registry import register_kernel
from attnsolve.kernels.triton_launch import (
    default_segments, fit_shared_memory, gpu_launch, launch_options, pow2_at_least, remembered, run_fitted,
    shared_memory_limit, split_kv_segments,
)
from attnsolve.kernels.validate import check_paged

__all__ = ["triton_paged_attention", "interpreter_reason", "is_interpreted", "split_kv_segments"]


@triton.jit
def _e4m3fn_bits_to_f32(b):
    """float8_e4m3fn bits (loaded as uint8) -> float32, for GPUs whose Triton has no
    fp8e4nv conversion (SM < 8.9).  bias 7, subnormals, no infinities; 0x7F/0xFF are NaN."""
    x = b.to(tl.int32)
    e = (x >> 3) & 15
    m = (x & 7).to(tl.float32)
    mag = tl.where(e == 0, m * 0.001953125, (8.0 + m) * tl.exp2((e - 10).to(tl.float32)))  # m/8*2^-6 | (1+m/8)*2^(e-7)
    mag = tl.where((e == 15) & ((x & 7) == 7), float("nan"), mag)
    return tl.where((x & 128) != 0, -mag, mag)


@triton.jit
def _e5m2_bits_to_f32(b):
    """float8_e5m2 bits (loaded as uint8) -> float32, for GPUs below SM 8.9 (Triton 3.6 emits a
    ``cvt .e5m2x2`` that ptxas refuses there).  bias 15, subnormals, infinities, NaN."""
    x = b.to(tl.int32)
    e = (x >> 2) & 31
    m = (x & 3).to(tl.float32)
    mag = tl.where(e == 0, m * 0.0000152587890625, (4.0 + m) * tl.exp2((e - 17).to(tl.float32)))  # m/4*2^-14 | (1+m/4)*2^(e-15)
    mag = tl.where(e == 31, tl.where((x & 3) == 0, float("inf"), float("nan")), mag)
    return tl.where((x & 128) != 0, -mag, mag)


@triton.jit
def _unified_attention_kernel(
    out_ptr,
    seg_acc_ptr,
    seg_ml_ptr,
    q_ptr,
    k_ptr,
    v_ptr,
    sinks_ptr,
    k_scale_ptr,
    v_scale_ptr,
    alibi_ptr,
    mm_ptr,
    lse_ptr,
    block_table_ptr,
    seq_lens_ptr,
    query_start_loc_ptr,
    num_seqs,
    scale,
    softcap,
    win_left,
    win_right,
    stride_qt,
    stride_qh,
    stride_ot,
    stride_oh,
    stride_kb,
    stride_ks,
    stride_kh,
    stride_vb,
    stride_vs,
    stride_vh,
    stride_bt,
    block_size,
    HEAD_SIZE: tl.constexpr,
    HEAD_SIZE_V: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    HEAD_PAD_V: tl.constexpr,
    QUERIES_PER_KV: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_M: tl.constexpr,
    TILE: tl.constexpr,
    CAUSAL: tl.constexpr,
    USE_WINDOW: tl.constexpr,
    USE_SOFTCAP: tl.constexpr,
    USE_SINKS: tl.constexpr,
    USE_K_SCALE: tl.constexpr,
    USE_V_SCALE: tl.constexpr,
    SCALE_PER_SEQ: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    USE_ALIBI: tl.constexpr,
    MAX_MM: tl.constexpr,
    RETURN_LSE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    DOT_F32: tl.constexpr,
    NUM_SEGMENTS: tl.constexpr,
    NUM_HEADS: tl.constexpr,
    FP8_BITS: tl.constexpr,
    MASK_EVERY_TILE: tl.constexpr,
):
    q_block_global = tl.program_id(0)
    kv_head = tl.program_id(1)
    segment = tl.program_id(2)

    # -- which sequence: binary search over query_start_loc (in q-block units) --------
    # Sequence i's q-blocks start at query_start_loc[i] // BLOCK_Q + i.
    left: tl.int32 = 0  # typed: a loop-carried value in compiled Triton
    right = num_seqs
    while left < right:
        mid = (left + right) // 2
        mid_val = tl.load(query_start_loc_ptr + mid) // BLOCK_Q + mid
        if mid_val <= q_block_global:
            left = mid + 1
        else:
            right = mid
    seq_idx = left - 1

    q_start = tl.load(query_start_loc_ptr + seq_idx)
    q_end = tl.load(query_start_loc_ptr + seq_idx + 1)
    q_len = q_end - q_start
    q_block_local = q_block_global - (q_start // BLOCK_Q + seq_idx)
    if q_block_local * BLOCK_Q < q_len:
        seq_len = tl.load(seq_lens_ptr + seq_idx)
        context_len = seq_len - q_len

        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_PAD)
        offs_dv = tl.arange(0, HEAD_PAD_V)
        offs_t = tl.arange(0, TILE)

        q_in_block = offs_m // QUERIES_PER_KV
        q_idx = q_block_local * BLOCK_Q + q_in_block  # query row within the sequence
        head = kv_head * QUERIES_PER_KV + offs_m % QUERIES_PER_KV
        row_ok = (q_in_block < BLOCK_Q) & (q_idx < q_len)
        q_pos = context_len + q_idx  # absolute position of each row
        d_ok = offs_d < HEAD_SIZE
        dv_ok = offs_dv < HEAD_SIZE_V

        q_rows = (q_start + q_idx).to(tl.int64)
        q = tl.load(
            q_ptr + q_rows[:, None] * stride_qt + head[:, None] * stride_qh + offs_d[None, :],
            mask=row_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        if DOT_F32:
            # Triton's interpreter computes bf16 tl.dot wrongly (numpy has no bf16), so on
            # CPU every dot runs in float32.
            q = q.to(tl.float32)

        if USE_SINKS:
            # the sink joins the denominator once: in segment 0 only
            is_first = segment == 0
            sink = tl.load(sinks_ptr + head, mask=row_ok, other=float("-inf")).to(tl.float32)
            m_i = tl.where(is_first, sink, float("-inf"))
            l_i = tl.where(is_first, tl.where(row_ok, 1.0, 0.0), 0.0).to(tl.float32)
        else:
            m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
            l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_PAD_V], dtype=tl.float32)

        scale_idx = 0
        if SCALE_PER_SEQ:  # [num_seqs, num_kv_heads] scales
            scale_idx = seq_idx * NUM_KV_HEADS + kv_head
        if USE_K_SCALE:
            k_scale = tl.load(k_scale_ptr + scale_idx).to(tl.float32)
        if USE_V_SCALE:
            v_scale = tl.load(v_scale_ptr + scale_idx).to(tl.float32)
        if USE_ALIBI:
            slope = tl.load(alibi_ptr + head, mask=row_ok, other=0.0).to(tl.float32)

        # -- key range this q-block can see ----------------------------------------------
        first_pos = context_len + q_block_local * BLOCK_Q
        last_row = tl.minimum(q_block_local * BLOCK_Q + BLOCK_Q, q_len)
        if CAUSAL:
            kv_hi = tl.minimum(context_len + last_row, seq_len)
        else:
            kv_hi = seq_len
            if USE_WINDOW:
                kv_hi = tl.minimum(context_len + last_row + win_right, seq_len)
        kv_lo = 0
        if USE_WINDOW:
            kv_lo = tl.maximum(first_pos - win_left, 0)
        if MAX_MM > 0:  # a multimodal range may reach past the causal/window bounds
            kv_lo = 0
            kv_hi = seq_len
        tile_lo = kv_lo // TILE
        tile_hi = (kv_hi + TILE - 1) // TILE
        if NUM_SEGMENTS > 1:  # split-KV: this program takes one contiguous share of the tiles
            per_segment = (tile_hi - tile_lo + NUM_SEGMENTS - 1) // NUM_SEGMENTS
            tile_lo = tile_lo + segment * per_segment
            tile_hi = tl.minimum(tile_lo + per_segment, tile_hi)

        # tiles [full_lo, full_hi) are visible to every row of this q-block: no mask to build
        full_lo = 0
        full_hi = 0
        if not MASK_EVERY_TILE and MAX_MM == 0:
            if CAUSAL:
                full_keys = tl.minimum(first_pos + 1, seq_len)
            elif USE_WINDOW:
                full_keys = tl.minimum(first_pos + win_right + 1, seq_len)
            else:
                full_keys = seq_len
            full_hi = full_keys // TILE
            if USE_WINDOW:
                lowest = tl.maximum(context_len + last_row - 1 - win_left, 0)  # the last row's first key
                full_lo = (lowest + TILE - 1) // TILE
        bt_row = block_table_ptr + seq_idx * stride_bt
        for t in range(tile_lo, tile_hi):
            k_pos = t * TILE + offs_t
            k_ok = k_pos < seq_len
            phys = tl.load(bt_row + k_pos // block_size, mask=k_ok, other=0).to(tl.int64)
            slot = (k_pos % block_size).to(tl.int64)

            k = tl.load(
                k_ptr
                + phys[None, :] * stride_kb
                + slot[None, :] * stride_ks
                + kv_head * stride_kh
                + offs_d[:, None],
                mask=d_ok[:, None] & k_ok[None, :],
                other=0.0,
            )  # [HEAD_PAD, TILE]
            if FP8_BITS == 1:
                k = _e4m3fn_bits_to_f32(k)
            elif FP8_BITS == 2:
                k = _e5m2_bits_to_f32(k)
            if USE_K_SCALE:
                k = (k.to(tl.float32) * k_scale).to(q.dtype)
            else:
                k = k.to(q.dtype)
            v = tl.load(
                v_ptr
                + phys[:, None] * stride_vb
                + slot[:, None] * stride_vs
                + kv_head * stride_vh
                + offs_dv[None, :],
                mask=k_ok[:, None] & dv_ok[None, :],
                other=0.0,
            )  # [TILE, HEAD_PAD_V]
            if FP8_BITS == 1:
                v = _e4m3fn_bits_to_f32(v)
            elif FP8_BITS == 2:
                v = _e5m2_bits_to_f32(v)
            if USE_V_SCALE:
                v = (v.to(tl.float32) * v_scale).to(q.dtype)
            else:
                v = v.to(q.dtype)

            s = tl.dot(q, k, input_precision=DOT_PRECISION) * scale  # [BLOCK_M, TILE] fp32
            if USE_SOFTCAP:
                # c * tanh(s / c), overflow-free form
                x = s / softcap
                e = tl.exp(-2.0 * tl.abs(x))
                th = (1.0 - e) / (1.0 + e)
                s = softcap * tl.where(x >= 0, th, -th)

            if USE_ALIBI:
                s += slope[:, None] * (k_pos[None, :] - q_pos[:, None]).to(tl.float32)
            if (t < full_lo) | (t >= full_hi):
                vis = k_pos[None, :] >= 0  # all true, [BLOCK_M, TILE] after the first combination below
                vis = vis & (q_pos[:, None] == q_pos[:, None])
                if CAUSAL:
                    vis = vis & (k_pos[None, :] <= q_pos[:, None])
                if USE_WINDOW:
                    vis = vis & (k_pos[None, :] >= q_pos[:, None] - win_left) & (k_pos[None, :] <= q_pos[:, None] + win_right)
                for r in tl.static_range(MAX_MM):  # (causal and window) or inside one multimodal range
                    mm_a = tl.load(mm_ptr + (seq_idx * MAX_MM + r) * 2)
                    mm_b = tl.load(mm_ptr + (seq_idx * MAX_MM + r) * 2 + 1)
                    vis = vis | ((q_pos[:, None] >= mm_a) & (q_pos[:, None] < mm_b) & (k_pos[None, :] >= mm_a) & (k_pos[None, :] < mm_b))
                vis = vis & row_ok[:, None] & k_ok[None, :]  # after the ranges: keys past seq_len never count
                s = tl.where(vis, s, float("-inf"))

            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None]
            acc += tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
            m_i = m_new

        if NUM_SEGMENTS == 1:
            l_safe = tl.where(l_i > 0, l_i, 1.0)
            out = acc / l_safe[:, None]
            if RETURN_LSE:
                lse = tl.where(l_i > 0, m_i + tl.log(l_safe), float("-inf"))
                lse = tl.where(l_i == l_i, lse, l_i)  # NaN stays NaN
                tl.store(lse_ptr + q_rows * NUM_HEADS + head, lse, mask=row_ok)
            tl.store(
                out_ptr + q_rows[:, None] * stride_ot + head[:, None] * stride_oh + offs_dv[None, :],
                out.to(out_ptr.dtype.element_ty),
                mask=row_ok[:, None] & dv_ok[None, :],
            )
        else:
            # partial results: unnormalised acc, running max and denominator per segment
            slot = (q_rows * NUM_HEADS + head) * NUM_SEGMENTS + segment  # [BLOCK_M]
            tl.store(
                seg_acc_ptr + slot[:, None] * HEAD_PAD_V + offs_dv[None, :],
                acc,  # padded columns hold zeros
                mask=row_ok[:, None],
            )
            tl.store(seg_ml_ptr + slot * 2, m_i, mask=row_ok)
            tl.store(seg_ml_ptr + slot * 2 + 1, l_i, mask=row_ok)


@triton.jit
def _reduce_segments_kernel(
    out_ptr,
    seg_acc_ptr,
    seg_ml_ptr,
    lse_ptr,
    stride_ot,
    stride_oh,
    NUM_HEADS: tl.constexpr,
    HEAD_SIZE_V: tl.constexpr,
    HEAD_PAD_V: tl.constexpr,
    NUM_SEGMENTS: tl.constexpr,
    RETURN_LSE: tl.constexpr,
):
    """Combine the split-KV partials of one (token, head): rescale to a common max."""
    tok = tl.program_id(0)
    head = tl.program_id(1)
    offs_s = tl.arange(0, NUM_SEGMENTS)
    offs_d = tl.arange(0, HEAD_PAD_V)
    base = (tok.to(tl.int64) * NUM_HEADS + head) * NUM_SEGMENTS + offs_s
    m = tl.load(seg_ml_ptr + base * 2)
    l = tl.load(seg_ml_ptr + base * 2 + 1)
    m_max = tl.max(m, axis=0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.exp(m - m_max)
    denom = tl.sum(w * l, axis=0)
    acc = tl.load(seg_acc_ptr + base[:, None] * HEAD_PAD_V + offs_d[None, :])
    num = tl.sum(acc * w[:, None], axis=0)
    out = num / tl.where(denom > 0, denom, 1.0)
    if RETURN_LSE:
        lse = tl.where(denom > 0, m_max + tl.log(tl.where(denom > 0, denom, 1.0)), float("-inf"))
        lse = tl.where(denom == denom, lse, denom)
        tl.store(lse_ptr + tok.to(tl.int64) * NUM_HEADS + head, lse)
    tl.store(
        out_ptr + tok.to(tl.int64) * stride_ot + head * stride_oh + offs_d,
        out.to(out_ptr.dtype.element_ty),
        mask=offs_d < HEAD_SIZE_V,
    )


# --------------------------------------------------------------------------------------
# Launch
# --------------------------------------------------------------------------------------

def is_interpreted(kernel=None) -> bool:
    """Whether the module's kernels were built by Triton's interpreter.

    ``@triton.jit`` decides between compiling and interpreting when triton and this
    module are imported (``TRITON_INTERPRET=1`` at that time); the decision cannot be
    changed afterwards, because triton's own ``tl.sum``/``tl.zeros``... are decided
    the same way.
    """
    from triton.runtime.interpreter import InterpretedFunction

    k = kernel if kernel is not None else _unified_attention_kernel
    # both ours and triton's standard library (tl.sum, tl.zeros...) must be interpreted
    return isinstance(k, InterpretedFunction) and isinstance(tl.zeros, InterpretedFunction)


def _require_runnable(backend: str, device: torch.device, kernel, alternative: str | None = "CPU_ATTN") -> None:
    if device.type == "cpu" and not is_interpreted(kernel):
        from attnsolve.kernels.registry import KernelUnavailableError

        raise KernelUnavailableError(
            backend,
            (
                f"{backend} runs on CPU tensors only through Triton's interpreter, and triton was "
                "imported without TRITON_INTERPRET=1 (set it before anything imports triton)",
            ),
            alternative,
            device="cpu",
        )


_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def triton_paged_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    md,
    *,
    scale=None,
    causal: bool = True,
    sliding_window=None,
    logits_soft_cap=None,
    sinks=None,
    k_scale=None,
    v_scale=None,
    alibi_slopes=None,
    mm_prefix_ranges=None,
    return_lse: bool = False,
    q_scale=None,
    out: torch.Tensor | None = None,
    block_m: int | None = None,
    tile: int | None = None,
    num_segments: int | None = None,
    fp8_bits: bool | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    mask_every_tile: bool = False,
):
    """Paged attention with the unified Triton kernel; returns a tensor like ``query``
    (``(out, lse)`` with ``return_lse=True``).

    Arguments and semantics as ``attnsolve.kernels.reference.paged_attention_reference``.
    ``block_m`` (query rows per program, a power of two >= 16) and ``tile`` (keys per
    step, a power of two >= 16) are tuning knobs.  ``num_segments`` (a power of two)
    splits each program's keys into that many parallel segments combined by a second
    kernel (split-KV, for decode batches too small to fill the GPU); default: 1 on CPU,
    on GPU chosen from the shapes alone (no host sync) for decode-only batches.
    ``num_warps``/``num_stages``: Triton launch options (default: Triton's own).
    ``mask_every_tile``: build the causal/window mask on every key tile, also on tiles every
    row of the program sees whole (default: only on the edge tiles; a sweep knob).
    ``fp8_bits``: decode a ``float8_e4m3fn`` or ``float8_e5m2`` cache from its bits in the
    kernel (default: on CUDA GPUs below SM 8.9, where Triton has no fp8e4nv conversion and
    Triton 3.6's e5m2 conversion does not assemble).
    """
    c = check_paged(
        query, key_cache, value_cache, md, scale=scale, causal=causal, sliding_window=sliding_window,
        logits_soft_cap=logits_soft_cap, sinks=sinks, k_scale=k_scale, v_scale=v_scale, alibi_slopes=alibi_slopes,
        mm_prefix_ranges=mm_prefix_ranges, return_lse=return_lse, q_scale=q_scale, query_dtypes=_FLOAT_DTYPES,
    )
    query, key_cache, value_cache = c.query, c.key_cache, c.value_cache
    T, H, D = query.shape
    nb, bs, Hkv, _ = key_cache.shape
    Dv = value_cache.shape[3]
    dev = query.device
    qsl, seq_lens, block_table = c.query_start_loc, c.seq_lens, c.block_table
    num_seqs = len(c.lens)
    window = None
    if c.window is not None:  # clamp to the longest sequence: same mask, no int32 overflow in the kernel
        longest = max(c.lens, default=0)
        window = (min(c.window[0], longest), min(c.window[1], longest))

    if out is None:
        out = torch.empty(T, H, Dv, dtype=query.dtype, device=dev)
    elif tuple(out.shape) != (T, H, Dv) or out.device != dev or out.stride(-1) != 1:
        raise ValueError(
            f"Expected out [{T}, {H}, {Dv}] on {dev}, contiguous in its last dimension, but got "
            f"{tuple(out.shape)} on {out.device} with strides {out.stride()}."
        )
    lse = torch.full((T, H), float("-inf"), dtype=torch.float32, device=dev) if c.return_lse else None
    if T == 0 or num_seqs == 0:
        return (out, lse) if c.return_lse else out

    qpkv = H // Hkv
    head_pad = pow2_at_least(D, 16)
    head_pad_v = pow2_at_least(Dv, 16)
    chosen_by_caller = block_m is not None or tile is not None
    if dev.type == "cpu":  # interpreter: fewer, bigger programs are much faster
        block_m = 64 if block_m is None else block_m
        tile = 32 if tile is None else tile
    else:
        gpu_block_m, gpu_tile, gpu_warps = gpu_launch(T, num_seqs, qpkv)
        if num_warps is None and not chosen_by_caller:
            num_warps = gpu_warps
        block_m = gpu_block_m if block_m is None else block_m
        tile = gpu_tile if tile is None else tile
    for knob, val in (("block_m", block_m), ("tile", tile)):
        if val < 16 or val & (val - 1):
            raise ValueError(f"Expected {knob} a power of two >= 16, but got {val}.")
    least_block_m = pow2_at_least(qpkv, 16)
    block_m = max(block_m, least_block_m)
    shape_key = ("TRITON_ATTN", dev.type, dev.index, head_pad, head_pad_v, query.dtype, key_cache.dtype,
                 block_m, tile, num_warps, num_stages)
    if dev.type != "cpu" and not chosen_by_caller:
        block_m, tile = fit_shared_memory(
            block_m, tile, q_row=head_pad, kv_key=head_pad + head_pad_v, elem_bytes=query.element_size(),
            p_bytes=4 if query.element_size() == 4 else 0, limit=shared_memory_limit(dev), least_block_m=least_block_m)
        block_m, tile = remembered(shape_key, block_m, tile)

    scale = c.scale
    sinks_t = c.sinks
    per_seq = c.per_seq_scales

    def scale_t(x):
        if isinstance(x, torch.Tensor):
            return x
        if x == 1.0 and not per_seq:
            return None
        if per_seq:
            return torch.full((num_seqs, Hkv), float(x), dtype=torch.float32, device=dev)
        return torch.tensor([float(x)], dtype=torch.float32, device=dev)

    ks, vs = scale_t(c.k_scale), scale_t(c.v_scale)
    if per_seq:
        ks = ks if ks is not None else torch.ones(num_seqs, Hkv, dtype=torch.float32, device=dev)
        vs = vs if vs is not None else torch.ones(num_seqs, Hkv, dtype=torch.float32, device=dev)
    mm_t, max_mm = None, 0
    if c.mm is not None:
        max_mm = max(len(r) for r in c.mm)
        rows = [list(r) + [(0, 0)] * (max_mm - len(r)) for r in c.mm]
        mm_t = torch.tensor(rows, dtype=torch.int32, device=dev).reshape(num_seqs, max_mm, 2)
    dummy = qsl  # any valid pointer for unused arguments

    if num_segments is None:
        num_segments = default_segments(dev, T, num_seqs, Hkv)
    if num_segments < 1 or num_segments & (num_segments - 1):
        raise ValueError(f"Expected num_segments a power of two >= 1, but got {num_segments}.")
    if num_segments > 1:
        seg_acc = torch.empty(T * H * num_segments * head_pad_v, dtype=torch.float32, device=dev)
        seg_ml = torch.empty(T * H * num_segments * 2, dtype=torch.float32, device=dev)
    else:
        seg_acc = seg_ml = dummy

    fp8_code = _FP8_BITS_CODE.get(key_cache.dtype, 0)
    if fp8_code != _FP8_BITS_CODE.get(value_cache.dtype, 0):
        raise ValueError(f"Expected key and value caches of one dtype, but got {key_cache.dtype} and {value_cache.dtype}.")
    if fp8_bits is None:
        fp8_bits = bool(fp8_code) and dev.type == "cuda" and not torch.version.hip and \
            tuple(torch.cuda.get_device_capability(dev)) < (8, 9)
    if fp8_bits and not fp8_code:
        raise ValueError(f"Expected a float8_e4m3fn or float8_e5m2 cache for fp8_bits=True, but got {key_cache.dtype}.")
    if fp8_bits:
        key_cache, value_cache = key_cache.view(torch.uint8), value_cache.view(torch.uint8)
    else:
        fp8_code = 0

    kernel = _unified_attention_kernel
    _require_runnable("TRITON_ATTN", dev, kernel)

    def launch(block_m: int, tile: int) -> None:
        block_q = block_m // qpkv
        grid = (T // block_q + num_seqs, Hkv, num_segments)
        kernel[grid](
            out,
            seg_acc,
            seg_ml,
            query,
            key_cache,
            value_cache,
            sinks_t if sinks_t is not None else dummy,
            ks if ks is not None else dummy,
            vs if vs is not None else dummy,
            c.alibi if c.alibi is not None else dummy,
            mm_t if mm_t is not None else dummy,
            lse if lse is not None else dummy,
            block_table,
            seq_lens,
            qsl,
            num_seqs,
            scale,
            c.cap if c.cap is not None else 1.0,
            window[0] if window is not None else 0,
            window[1] if window is not None else 0,
            query.stride(0),
            query.stride(1),
            out.stride(0),
            out.stride(1),
            key_cache.stride(0),
            key_cache.stride(1),
            key_cache.stride(2),
            value_cache.stride(0),
            value_cache.stride(1),
            value_cache.stride(2),
            block_table.stride(0),
            bs,
            HEAD_SIZE=D,
            HEAD_SIZE_V=Dv,
            HEAD_PAD=head_pad,
            HEAD_PAD_V=head_pad_v,
            QUERIES_PER_KV=qpkv,
            BLOCK_Q=block_q,
            BLOCK_M=block_m,
            TILE=tile,
            CAUSAL=bool(causal),
            USE_WINDOW=window is not None,
            USE_SOFTCAP=c.cap is not None,
            USE_SINKS=sinks_t is not None,
            USE_K_SCALE=ks is not None,
            USE_V_SCALE=vs is not None,
            SCALE_PER_SEQ=per_seq,
            NUM_KV_HEADS=Hkv,
            USE_ALIBI=c.alibi is not None,
            MAX_MM=max_mm,
            RETURN_LSE=c.return_lse,
            DOT_PRECISION="ieee" if (query.dtype == torch.float32 or dev.type == "cpu") else None,
            DOT_F32=dev.type == "cpu",
            NUM_SEGMENTS=num_segments,
            NUM_HEADS=H,
            FP8_BITS=fp8_code,
            MASK_EVERY_TILE=bool(mask_every_tile),
            **launch_options(num_warps, num_stages),
        )

    run_fitted(launch, block_m, tile, shape_key=shape_key, least_block_m=least_block_m,
               chosen_by_caller=chosen_by_caller or dev.type == "cpu")
    if num_segments > 1:
        _reduce_segments_kernel[(T, H)](
            out,
            seg_acc,
            seg_ml,
            lse if lse is not None else dummy,
            out.stride(0),
            out.stride(1),
            NUM_HEADS=H,
            HEAD_SIZE_V=Dv,
            HEAD_PAD_V=head_pad_v,
            NUM_SEGMENTS=num_segments,
            RETURN_LSE=c.return_lse,
        )
    return (out, lse) if c.return_lse else out


# FP8_BITS: which bit decoder the kernel applies to a cache viewed as uint8 (0: none)
_FP8_BITS_CODE = {torch.float8_e4m3fn: 1, torch.float8_e5m2: 2}


# --------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------


def interpreter_reason(backend: str, device: str, kernel=None) -> str | None:
    """Why a Triton kernel cannot run on ``device`` (``None`` = it can).

    CPU needs ``TRITON_INTERPRET=1`` as an explicit opt-in (the interpreter is slow);
    CUDA needs a visible device.
    """
    if device == "cpu":
        if os.environ.get("TRITON_INTERPRET", "0") != "1":
            return (
                f"{backend} runs on CPU only in Triton's interpreter (slow, for tests); "
                "set TRITON_INTERPRET=1 (before triton is imported) to allow it"
            )
        if not is_interpreted(kernel):
            return (
                f"{backend} runs on CPU only in Triton's interpreter, but triton was imported "
                "before TRITON_INTERPRET=1 was set, so its kernels are compiled ones"
            )
        return None
    if device in ("cuda", "rocm"):
        if not torch.cuda.is_available():
            return f"{backend} needs a GPU, but torch sees no CUDA/ROCm device"
        return None
    return f"{backend} does not run on {device}"


def _check(device: str) -> str | None:
    return interpreter_reason("TRITON_ATTN", device)


@register_kernel("TRITON_ATTN", devices=("cuda", "rocm", "cpu"), requires=("triton",), check=_check)
def triton_attn(
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
    """The registered ``TRITON_ATTN`` kernel (see ``triton_paged_attention``)."""
    return triton_paged_attention(
        query,
        key_cache,
        value_cache,
        md,
        scale=scale,
        causal=causal,
        sliding_window=sliding_window,
        logits_soft_cap=logits_soft_cap,
        sinks=sinks,
        k_scale=k_scale,
        v_scale=v_scale,
        alibi_slopes=alibi_slopes,
        mm_prefix_ranges=mm_prefix_ranges,
        return_lse=return_lse,
        q_scale=q_scale,
    )
