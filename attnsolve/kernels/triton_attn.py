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

This module is the host side (checks, launch choices, the launch, registration); the Triton
programs are in ``triton_attn_kernels.py``. It imports torch and triton at the top;
``attnsolve.kernels.registry`` imports it lazily.
"""

from __future__ import annotations

import os

import torch
import triton.language as tl

from attnsolve.kernels.registry import register_kernel
from attnsolve.kernels.triton_attn_kernels import _reduce_segments_kernel, _unified_attention_kernel
from attnsolve.kernels.triton_launch import (
    default_segments, fit_shared_memory, gpu_launch, launch_options, pow2_at_least, remembered, run_fitted,
    shared_memory_limit, split_kv_segments,
)
from attnsolve.kernels.validate import check_paged

__all__ = ["triton_paged_attention", "interpreter_reason", "is_interpreted", "split_kv_segments"]


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
