"""The Triton programs of ``TRITON_ATTN``: the unified paged-attention kernel, the split-KV reduce
kernel (shared with ``TRITON_MLA``) and the fp8 bit decoders for GPUs below SM 8.9.

Why a module of their own: this is device code, read and changed for different reasons than the
host wrapper in ``triton_attn.py`` (checks, launch choices, registration); the work split, masks and
features are described there and in docs/gpu_kernels.md.  Imported by ``triton_attn``, which
re-exports these names; like it, importing this module decides interpret-or-compile for the kernels
(``TRITON_INTERPRET`` when triton is first imported).
"""

from __future__ import annotations

import triton
import triton.language as tl


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
