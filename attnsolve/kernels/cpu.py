"""CPU_ATTN: paged attention on CPU (prefill and decode), the kernel vLLM's CPU backend selects.

The paths, chosen per sequence of a mixed batch:

* Rows of sequences with at most ``DECODE_MAX_ROWS`` query rows (decode, speculative
  decode, short chunks) go to a C++/OpenMP kernel (``_cpu_ext``): one online-softmax pass
  that reads each paged KV block in place (no gather, no contiguous copy), split into
  (row, key chunk) work items for both cores and merged by log-sum-exp.  AVX-512 tiles
  for head sizes 32..256, a portable loop otherwise; fp32/bf16/fp16 and fp8 caches.  On the tiles a work
  item takes up to 16 consecutive rows of a sequence (``_rows_per_item``): their heads share every K/V read.
* Longer query runs (prefill), and runs of several rows where that is faster (``_amx_rows``, bf16), with a
  bf16 query over a bf16 or fp8 cache, or float32 or fp16 throughout (each value as exact bf16 parts), on a
  CPU with AMX go to a C++ kernel of their own (``_cpu_prefill_ext``, ``csrc/cpu_prefill.cpp``): paged K/V
  read in place, causal work only up to each row's diagonal (and from its window's start).
* Elsewhere (no AMX prefill kernel) prefills go to that decode kernel in groups of rows where it measured
  faster than torch's flash kernel (``_vector_prefill``: 16-bit at any length, float32 while K and V
  fit the last-level cache).
* Other prefills gather the sequence's own blocks once (a bounded gather,
  ``seq_len`` rows, never the whole cache, into a per-thread buffer reused across calls; a
  C++ memcpy gather with the extension) and run torch's CPU flash-attention kernel
  (``aten._scaled_dot_product_flash_attention_for_cpu``, the one SDPA uses), whose
  log-sum-exp output gives exact sinks and the merge of a causal chunk with its context.  A
  causal prefill of a few hundred rows runs as at most 8 row chunks against only the keys each
  chunk sees (that kernel computes whole 512-key blocks) where that measured faster
  (``_chunk_prefill``: float32 on two threads, any dtype on one).  Soft-capping (which that kernel
  lacks) uses a tiled float32 torch path where the decode kernel's grouped rows cannot take it.

Without a compiler (or with ``ATTNSOLVE_CPU_EXT=0``) every sequence takes the torch paths.
All paths are tested against ``reference.paged_attention_reference``.
"""

from __future__ import annotations

import functools
import math
import threading

import torch

from attnsolve.kernels import _cpu_ext, _cpu_prefill_ext
from attnsolve.kernels.metadata import AttentionMetadata
from attnsolve.kernels.registry import register_kernel
from attnsolve.kernels.validate import Paged, _check_block_ids, _checked_seqs, check_paged

__all__ = ["cpu_attn", "cpu_attn_impl", "DECODE_MAX_ROWS"]

DECODE_MAX_ROWS = 16
_QUERY_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_CACHE_DTYPES = _QUERY_DTYPES + (torch.float8_e4m3fn, torch.float8_e5m2)
_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)
_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
# every tensor these kernels make names its device: under torch.set_default_device("cuda") (or "meta") a factory
# call without one made a tensor whose pointer the C++ kernels then wrote through (a segfault)
_CPU = torch.device("cpu")
_TILE_ELEMS = 1 << 23  # float32 score elements per tile of the torch path (32 MiB)
# (key, head) pairs below which the C++ kernel stays single-threaded: waking the OpenMP team costs more
# than it saves below this.  Quiet 2-core box, bf16 32/8 heads (session 12): two threads win from 256 keys
# (86 vs 94 us; 1k keys: 182 vs 324 us); it was 1 << 16, chosen on a box loaded far beyond its cores.
_MIN_PARALLEL_WORK = 1 << 12
_CHUNK_MIN, _CHUNK_MAX = 256, 2048  # keys per work item of a decode (_work_split)


def _int32(t: torch.Tensor) -> torch.Tensor:
    if t.dtype != torch.int32:
        t = t.to(torch.int32)
    return t if t.is_contiguous() else t.contiguous()


def _last_contig(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


# ----------------------------------------------------------------------------------------------
# decode rows: the C++ kernel


def _work_split(total: int, H: int, bs: int, row_blocks: int = 0, longest: int = 0) -> tuple[int, int]:
    """(threads, key-chunk length) for a decode of ``total`` keys: small problems run on the calling thread
    (waking an OpenMP team costs more than it saves); chunks of 256 to 2048 keys, whole blocks.  A prefill's
    ``row_blocks`` (work items of several rows) from 8 per thread are work enough: its rows are not split
    along their keys (``longest``: the longest key range), which saves their partial results and merges
    (8k-token bf16 prefill: 1.72x SDPA whole, 1.67x in 2k-key chunks)."""
    threads = torch.get_num_threads() if total * H >= _MIN_PARALLEL_WORK else 1
    if row_blocks >= 8 * threads and longest:
        return threads, -(-longest // bs) * bs
    chunk = min(_CHUNK_MAX, max(_CHUNK_MIN, -(-total // (4 * threads))))
    return threads, -(-chunk // bs) * bs


# Several query rows per work item (the kernel's ``rows_per_item``, on its AVX-512 tile): the rows' heads share
# every K and V row read, as a KV head's query heads do, so a prefill reads its keys once per group of rows, not
# once per row.  Grouped to 32 query heads per KV head (16-bit) or 16 (float32; 48 for runs of 4096 rows or more),
# at most 16 rows.  Measured (2-vCPU AMD EPYC Zen 4 VM, causal prefill, head 128, against SDPA on the same problem):
# bf16 32/8 heads 2k tokens 1.61x one row per item -> 1.89x at 8 rows; 8/2 heads 8k 1.06 -> 1.72x (8), 32/32 heads
# 2k 0.44 -> 1.62x (16); float32 32/8 heads 2k 0.81 -> 1.02x (4), 32/32 heads 512 -> 1.42x (8).  float32 with the
# outer-product scores (session 30, SDPA in the same rounds): 16 / 32 / 48 heads per item 1.08-1.10 / 1.06-1.09 /
# - x at 2k rows of 32/8 heads, 1.08 / 0.96 / - x at 2k of 32/16, 1.03-1.06 / 1.09-1.13 / 1.14x at 4k of 8/2,
# 0.93-0.95 / 1.00-1.06 / 1.05-1.10x at 8k of 8/2 (each K and V row read by fewer groups; beyond 48 heads the
# accumulators crowd L1: 64 heads 1.0-1.05x).  Outputs equal one row per item's, bit for bit.
_F32_LONG_RUN = 4096


def _rows_per_item(group: int, dtype: torch.dtype, rows: int = 1) -> int:
    """Query rows per work item for ``group`` query heads per KV head, in a call whose longest run has ``rows``."""
    heads = 32 if dtype != torch.float32 else (48 if rows >= _F32_LONG_RUN else 16)
    return max(1, min(16, heads // group))


def _grouping(longest: int, group: int, dtype: torch.dtype, head_size: int) -> int:
    """The kernel's ``rows_per_item`` for a call whose longest run has ``longest`` rows (1 without the tile)."""
    return min(longest, _rows_per_item(group, dtype, longest)) if longest > 1 and _cpu_ext.tile_ok(head_size) else 1


# float32 prefills go to the decode kernel while the sequence's K and V fit the last-level cache (every group of
# rows reads them again; this VM's L3: 32 MiB), at any length.  Measured against SDPA in the same rounds (32/8 heads
# of 128 unless said), with the outer-product scores of session 30: 1.64-1.69x at 512 rows, 1.38x at 1k, 1.06-1.10x
# at 2k (torch's flash kernel 0.99-1.0x), 1.09-1.14x at 4k of 8/2 heads (8 MiB), 1.05-1.10x at 8k of 8/2 (16 MiB),
# 32 MiB on a par with the flash kernel (4k rows 1.01-1.02x, flash 0.99-1.01x; 2k rows of 32/16 heads 1.08x, flash
# 0.98-1.0x); beyond: 48 MiB at 1536 rows of 32/32 heads 0.98x (flash 0.96x), 64 MiB at 2k rows of 32/32 heads
# 0.88-0.91x (flash 0.92x).  (Before session 30, with dot-product scores, the bound was 2560 keys and 24 MiB: 0.81x
# at 4k rows.)  16-bit prefills at any length (bf16 1.6 to 2.6x, fp16 1.5 to 3.5x, 512 to 8k rows; bf16 32/32 heads
# at 4k rows, 64 MiB, 1.36x).
_VECTOR_PREFILL_F32_KV_BYTES = 32 << 20


def _vector_prefill(n: int, L: int, query, key_cache, value_cache, cap, amx: bool, window: int | None = None) -> bool:
    """Whether a run of ``n > DECODE_MAX_ROWS`` query rows (``L`` keys) goes to the decode kernel, several rows per
    work item, rather than to torch's flash kernel: the kernel's AVX-512 tile exists for the head size, no AMX
    prefill kernel runs here (``amx``: it takes these rows), same K and V head sizes, a cache of the query's
    dtype (or fp8 under a bf16 query), and float32 only up to ``_VECTOR_PREFILL_F32_KV_BYTES`` of K and V.
    Soft-capped prefills at any length (torch's flash kernel has no
    soft-cap: their other path is the tiled float32 one), and windowed ones (``window`` keys per row, fewer than
    ``L``): torch's kernel computes every key under a mask, this kernel only the window's (4k rows, window 128,
    64/8 heads of 64: float32 18.8x, bf16 27x; 2k rows, window 1024, 32/8 heads of 128: 2.3x, 4.3x)."""
    D, qdt, cdt = query.shape[-1], query.dtype, key_cache.dtype
    if amx or n > L or value_cache.shape[-1] != D or not _cpu_ext.tile_ok(D):
        return False
    if cdt != qdt and not (qdt == torch.bfloat16 and cdt in _FP8 and D % 32 == 0):
        return False
    if qdt == torch.float32:
        kv_bytes = L * key_cache.shape[2] * (D + value_cache.shape[-1]) * 4
        return kv_bytes <= _VECTOR_PREFILL_F32_KV_BYTES or cap is not None or (window is not None and window < L)
    return qdt in (torch.bfloat16, torch.float16)


def _decode_ext(fn, query, key_cache, value_cache, md, seqs, out, *, scale, causal, window, cap, sinks, ks, vs,
                rows_per_item=1):
    """The C++ kernel over the rows of ``seqs`` (``rows_per_item``: query rows of a sequence per work item)."""
    T, H, D = query.shape
    _, bs, hkv, _ = key_cache.shape
    dv = value_cache.shape[3]
    q = _last_contig(query)
    kc = _last_contig(key_cache)
    vc = _last_contig(value_cache)
    qsl, sl, bt = _int32(md.query_start_loc), _int32(md.seq_lens), _int32(md.block_table)
    all_seqs = len(seqs) == len(md.host_lists()[1])  # the common decode batch: no index list needed
    seq_t = None if all_seqs else torch.tensor(seqs, dtype=torch.int32, device=_CPU)
    sk = None if sinks is None else sinks.detach().to(torch.float32).contiguous()
    qsl_h, lens = md.host_lists()
    total = sum(min(lens[i], window) if window else lens[i] for i in seqs)
    blocks = sum(-(-(qsl_h[i + 1] - qsl_h[i]) // rows_per_item) for i in seqs) if rows_per_item > 1 else 0
    threads, chunk = _work_split(total, H, bs, blocks, max(lens[i] for i in seqs) if blocks else 0)
    code = _cpu_ext.DTYPE_CODES
    bad = fn(
        code[str(q.dtype)[6:]], code[str(kc.dtype)[6:]], code[str(out.dtype)[6:]],
        q.data_ptr(), q.stride(0), q.stride(1),
        kc.data_ptr(), kc.stride(0), kc.stride(1), kc.stride(2),
        vc.data_ptr(), vc.stride(0), vc.stride(1), vc.stride(2),
        out.data_ptr(), out.stride(0), out.stride(1),
        qsl.data_ptr(), sl.data_ptr(), bt.data_ptr(), bt.stride(0),
        None if seq_t is None else seq_t.data_ptr(), len(seqs),
        H, hkv, D, dv, bs,
        scale, int(causal), int(window or 0), float(cap or 0.0), None if sk is None else sk.data_ptr(),
        ks, vs, threads, chunk, kc.shape[0], rows_per_item,
    )
    del seq_t, sk  # kept alive across the call above
    if bad:
        i = bad - 1
        used = md.block_table[i, : -(-lens[i] // bs)].tolist()
        raise ValueError(
            f"Expected block_table entries in [0, num_blocks={kc.shape[0]}) for the blocks sequence {i} uses, "
            f"but got {[b for b in used if not 0 <= b < kc.shape[0]]}."
        )


_FAST_QUERY = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # _cpu_ext.DTYPE_CODES by dtype
_FAST_CACHE = {**_FAST_QUERY, torch.float8_e4m3fn: 3, torch.float8_e5m2: 4}


def _decode_fast(query, key_cache, value_cache, md, scale) -> torch.Tensor | None:
    """vLLM's common decode call straight to the C++ kernel, or None (then ``cpu_attn_impl`` answers).

    The case: plain tensors on the CPU in the layout the kernel reads (unit last stride, int32 contiguous
    ``AttentionMetadata``), every sequence 1 to ``DECODE_MAX_ROWS`` rows, no option besides ``scale``.  The
    values are checked as ``check_paged`` checks them, by the same functions (so with the same errors, which
    come first in both: the structure checked here is what ``check_paged`` checks before them), memoised per
    metadata state: the first layer of an engine step checks, the others reuse it.  What this skips is
    ``check_paged``'s generality: ~25 us of Python per call here, and ~130 us of the ~270 us the full path
    costs when a decode step finds its caches evicted (2-vCPU Xeon VM, docs/kernels.md).  The C++ call, and
    so the result, is the one the full path makes."""
    T_ = torch.Tensor
    if type(md) is not AttentionMetadata or type(query) is not T_ or type(key_cache) is not T_ \
            or type(value_cache) is not T_:
        return None
    fn = _cpu_ext._state.get("fn")  # loaded by an earlier full-path call (None: not built, or unavailable)
    if fn is None:
        return None
    qcode, ccode = _FAST_QUERY.get(query.dtype), _FAST_CACHE.get(key_cache.dtype)
    if qcode is None or ccode is None or value_cache.dtype != key_cache.dtype:
        return None
    qshape, kshape, vshape = query.shape, key_cache.shape, value_cache.shape
    if len(qshape) != 3 or len(kshape) != 4 or len(vshape) != 4:
        return None
    T, H, D = qshape
    nb, bs, hkv, dk = kshape
    dv = vshape[3]
    if dk != D or tuple(vshape[:3]) != (nb, bs, hkv) or not (T and H and D and dv and bs and hkv) or H % hkv:
        return None
    if not (query.is_cpu and key_cache.is_cpu and value_cache.is_cpu):
        return None
    qs, ks, vs = query.stride(), key_cache.stride(), value_cache.stride()
    if qs[2] != 1 or ks[3] != 1 or vs[3] != 1:
        return None
    qsl, sl, bt = md.query_start_loc, md.seq_lens, md.block_table
    for t in (qsl, sl, bt):
        if type(t) is not T_ or t.dtype != torch.int32 or not t.is_cpu or not t.is_contiguous():
            return None
    if qsl.dim() != 1 or sl.dim() != 1 or bt.dim() != 2:
        return None
    B = sl.shape[0]
    if qsl.shape[0] != B + 1 or bt.shape[0] != B:
        return None
    # check_paged's value checks, by the same functions (the same errors), memoised per metadata state
    hk = md.host_key()  # read once: each tensor version read is a call into torch
    lens = _checked_seqs(md, T, B, bt.shape[1] * bs, True, True, hk)[1]
    _check_block_ids(md, bt, lens, bs, nb)
    total, longest = md.decode_rows(DECODE_MAX_ROWS, hk)
    if total is None:
        return None
    if _amx_rows(longest, H // hkv, query.dtype) and _amx_shape(query, key_cache, value_cache):
        return None  # runs of several rows go to the AMX prefill kernel (cpu_attn_impl)
    if scale is None:
        sc = D ** -0.5
    elif type(scale) is float or type(scale) is int:
        sc = float(scale)
    else:
        return None
    threads, chunk = _work_split(total, H, bs)
    rows = _grouping(longest, H // hkv, query.dtype, D)
    out = torch.empty(T, H, dv, dtype=query.dtype, device=_CPU)
    os_ = out.stride()
    bad = fn(qcode, ccode, qcode, query.data_ptr(), qs[0], qs[1],
             key_cache.data_ptr(), ks[0], ks[1], ks[2], value_cache.data_ptr(), vs[0], vs[1], vs[2],
             out.data_ptr(), os_[0], os_[1], qsl.data_ptr(), sl.data_ptr(), bt.data_ptr(), bt.stride(0), None, B,
             H, hkv, D, dv, bs, sc, 1, 0, 0.0, None, 1.0, 1.0, threads, chunk, nb, rows)
    return None if bad else out


# ----------------------------------------------------------------------------------------------
# torch paths (prefill; everything when the extension is unavailable)


_BUF_MAX_BYTES = 1 << 29  # gather buffers above this are not kept between calls
_tls = threading.local()


def _buffer(nbytes: int, slot: str = "kv") -> torch.Tensor:
    """A per-thread byte buffer reused across calls (grown as needed): prefill's gather writes
    into memory that is already mapped instead of first-touching fresh pages every call, which
    costs more than the copy itself on this kind of VM."""
    if nbytes > _BUF_MAX_BYTES:
        return torch.empty(nbytes, dtype=torch.uint8, device=_CPU)
    bufs = getattr(_tls, "bufs", None)
    if bufs is None:
        bufs = _tls.bufs = {}
    buf = bufs.get(slot)
    if buf is None or buf.numel() < nbytes:
        buf = bufs[slot] = torch.empty(max(nbytes, 1 << 20), dtype=torch.uint8, device=_CPU)
    return buf[:nbytes]


_Q_PAD = 32  # elements added to each query row of the padded copy (see _flash_rows)


def _padded_query(q: torch.Tensor) -> torch.Tensor:
    """``q [n, H, D]`` copied into a reused buffer whose rows are ``H * D + _Q_PAD`` elements apart.

    With 16-bit queries the row stride ``H * D`` is a power of two bytes (8 KiB for 32 x 128),
    so the flash kernel's reads of one head's rows all land in the same cache sets; the padded
    copy measured ~6% faster end to end for a 2k bf16 prefill (the copy included), while fp32
    showed no difference.  The kernel's output stays a dense ``[n, H, D]``.
    """
    n, H, D = q.shape
    row = H * D + _Q_PAD
    buf = _buffer(n * row * q.element_size(), "q").view(q.dtype).view(n, row)
    qp = buf[:, : H * D].view(n, H, D)
    qp.copy_(q)
    return qp


def _finish(x: torch.Tensor, dtype, s: float) -> torch.Tensor:
    if x.dtype in _FP8 or s != 1.0:
        x = x.to(torch.float32)
        if s != 1.0:
            x = x * s
    return x.to(dtype)


def _gather_kv(key_cache, value_cache, bt_row: torch.Tensor, L: int, dtype, ks: float, vs: float, gfn):
    """This sequence's first ``L`` tokens as ``k [Hkv, L, D]``, ``v [Hkv, L, Dv]`` in ``dtype`` (one
    bounded gather of this sequence's blocks only, never the whole cache).

    With the extension: a C++ memcpy gather straight into contiguous ``[Hkv, L, D]`` in a reused
    buffer.  Without it: consecutive blocks are a view (no copy); scattered ones are copied with
    ``index_select`` into a reused buffer and read through a strided ``[Hkv, L, D]`` view.
    """
    nb, bs, hkv, D = key_cache.shape
    dv = value_cache.shape[3]
    nblk = -(-L // bs)
    if gfn is not None:
        kc, vc = _last_contig(key_cache), _last_contig(value_cache)
        es = kc.element_size()
        buf = _buffer(hkv * L * (D + dv) * es).view(kc.dtype)
        k = buf[: hkv * L * D].view(hkv, L, D)
        v = buf[hkv * L * D:].view(hkv, L, dv)
        blocks = bt_row[:nblk]
        blocks = blocks if blocks.dtype == torch.int32 and blocks.is_contiguous() else blocks.to(torch.int32).contiguous()
        # a tiny gather stays on this thread (one parallel region fewer, which matters on a busy machine);
        # from 2k (token, KV head) rows both threads win on a quiet box (512 x 8 rows of bf16: 0.086 ms
        # on two threads, 0.139 on one; 2k x 8: 0.51 vs 0.74; session 12)
        threads = torch.get_num_threads() if L * hkv >= 2048 else 1
        bad = gfn(es, kc.data_ptr(), kc.stride(0), kc.stride(1), kc.stride(2),
                  vc.data_ptr(), vc.stride(0), vc.stride(1), vc.stride(2),
                  blocks.data_ptr(), L, bs, hkv, D, dv, threads, nb, k.data_ptr(), v.data_ptr(), 1)
        if bad:
            raise ValueError(
                f"Expected block_table entries in [0, num_blocks={nb}) for the blocks a sequence uses, "
                f"but got {int(blocks[bad - 1])}."
            )
        return _finish(k, dtype, ks), _finish(v, dtype, vs)
    blocks = bt_row[:nblk].long()
    b0 = int(blocks[0])
    if nblk == 1 or bool((blocks[1:] - blocks[:-1] == 1).all()):
        if not 0 <= b0 <= nb - nblk:
            raise IndexError(f"block_table entries out of range [0, {nb}): {blocks.tolist()}")
        xk, xv = key_cache[b0:b0 + nblk], value_cache[b0:b0 + nblk]  # a fresh allocation: views, no copy
    else:
        es = key_cache.element_size()
        nk, nv = nblk * bs * hkv * D, nblk * bs * hkv * dv
        buf = _buffer((nk + nv) * es).view(key_cache.dtype)
        xk = torch.index_select(key_cache, 0, blocks, out=buf[:nk].view(nblk, bs, hkv, D))
        xv = torch.index_select(value_cache, 0, blocks, out=buf[nk:].view(nblk, bs, hkv, dv))
    # seen as [Hkv, L, D] through a strided view: the flash kernel reads it in place
    k = xk.reshape(nblk * bs, hkv, D)[:L].transpose(0, 1)
    v = xv.reshape(nblk * bs, hkv, dv)[:L].transpose(0, 1)
    return _finish(k, dtype, ks), _finish(v, dtype, vs)


def _torch_rows(q, k, v, L, *, scale, causal, window, cap, sinks, alibi=None, mm=(), want_lse=False):
    """Rows ``q [n, H, D]`` at positions ``L - n .. L - 1`` against ``k/v [Hkv, L, D]``, float32 math.

    The general path: any window ``(left, right)``, ALiBi, multimodal-prefix ranges, sinks, the
    log-sum-exp.  Returns ``out [n, H, Dv]`` float32 (and ``lse [n, H]`` with ``want_lse``).
    NaN in a visible score propagates to the row (NaN output), like the other paths.
    """
    n, H, D = q.shape
    hkv, _, dv = v.shape
    g = H // hkv
    p0 = L - n
    kf = k.to(torch.float32)
    vf = v.to(torch.float32)
    out = torch.empty(n, H, dv, dtype=torch.float32, device=_CPU)
    lse = torch.empty(n, H, dtype=torch.float32, device=_CPU) if want_lse else None
    tile = max(1, _TILE_ELEMS // max(1, H * L))
    pos_k = torch.arange(L, device=_CPU).unsqueeze(0)
    sink = None if sinks is None else sinks.detach().to(torch.float32).view(hkv, g, 1, 1)
    slope = None if alibi is None else alibi.to(torch.float32).view(hkv, g, 1, 1)
    for t0 in range(0, n, tile):
        t1 = min(n, t0 + tile)
        nt = t1 - t0
        qt = q[t0:t1].to(torch.float32).reshape(nt, hkv, g, D).permute(1, 2, 0, 3).reshape(hkv, g * nt, D)
        s = torch.bmm(qt, kf.transpose(1, 2)).view(hkv, g, nt, L)
        s.mul_(scale)
        if cap:
            s = torch.tanh(s.div_(cap)).mul_(cap)
        pos_q = torch.arange(p0 + t0, p0 + t1, device=_CPU).unsqueeze(1)
        if slope is not None:
            s = s + slope * (pos_k - pos_q).to(torch.float32)
        visible = None
        if causal:
            visible = pos_k <= pos_q
        if window is not None:
            left, right = window
            w = (pos_k >= pos_q - left) & (pos_k <= pos_q + right)
            visible = w if visible is None else (visible & w)
        if visible is not None:
            for a, b in mm:
                visible = visible | ((pos_q >= a) & (pos_q < b) & (pos_k >= a) & (pos_k < b))
            s = s.masked_fill(~visible, -math.inf)
        m = s.amax(dim=-1, keepdim=True)
        if sink is not None:
            m = torch.maximum(m, sink.expand(hkv, g, nt, 1))  # NaN in m stays NaN
        m = torch.where(m == -math.inf, torch.zeros_like(m), m)
        p = torch.exp(s - m)
        den = p.sum(dim=-1, keepdim=True)
        if sink is not None:
            den = den + torch.exp(sink - m)
        o = torch.bmm(p.reshape(hkv, g * nt, L), vf).view(hkv, g, nt, dv)
        o = torch.where(den == 0, torch.zeros_like(o), o / den)
        out[t0:t1] = o.permute(2, 0, 1, 3).reshape(nt, H, dv)
        if want_lse:
            lse[t0:t1] = (torch.log(den) + m).view(hkv, g, nt).permute(2, 0, 1).reshape(nt, H)
    return (out, lse) if want_lse else out


_CHUNK_ROWS = 64  # fewest query rows per call of a chunked causal prefill
_CHUNKS = 8  # at most this many calls (each is one parallel region: fewer barriers on a busy machine)
_CHUNK_BELOW = 1088  # chunking measured 1.03-1.06x SDPA at 1024 rows, 0.92x at 1280 (one thread)
# Two or more threads (session 12, quiet 2-core Xeon with AMX, the kernel call alone, median of 15): float32
# 1.20-1.32x at 320-640 rows with 8 chunks, 1.0x at 768, 0.95x at 1024, 0.78x at 256; 16-bit 0.91-1.03x
# at 320-640 (torch's bf16 kernel runs on AMX tiles: the causal work it wastes costs less than the
# extra calls), so there 16-bit queries chunk on one thread only (1.07-1.11x at 512 rows).
# Without AMX (session 28, the 2-core AMD EPYC Zen 4 VM: torch's 16-bit flash kernel on AVX-512, the kernel call
# against SDPA on the same query view, interleaved, best of 5): bf16 1.20-1.39x at 256-576 rows, 1.15x at 640,
# 0.97x at 704, 0.90x at 768; fp16 1.01-1.15x at 256-512, 1.0x at 576, 0.95x at 640.  So 16-bit queries chunk
# on two or more threads too where torch cannot run them on AMX tiles (_torch_amx).
_CHUNK_FROM = 288
_CHUNK_BELOW_F32_THREADS = 768
_CHUNK_BELOW_THREADS_NO_AMX = {torch.bfloat16: 672, torch.float16: 576}
_PAD_FROM = 1024  # padded 16-bit query copy: costs 0.18 ms and saves 0.08 at 512 rows, saves 0.4 ms net at 1k


@functools.lru_cache(maxsize=None)
def _torch_amx(dtype: torch.dtype) -> bool:
    """Whether torch's CPU kernels can run this 16-bit dtype on AMX tiles here (AMX-BF16 for bfloat16, AMX-FP16
    for float16).  A torch without ``torch.cpu.get_capabilities`` answers True: the measured Xeon rule is kept."""
    caps = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    if caps is None:
        return True
    try:
        flags = caps()
    except Exception:  # a probe that fails must not fail a prefill
        return True
    return bool(flags.get("amx_bf16" if dtype == torch.bfloat16 else "amx_fp16", False))


def _chunk_prefill(n: int, dtype: torch.dtype) -> bool:
    """Whether a causal prefill of ``n`` rows (no context, no window) runs in row chunks (measured bounds above)."""
    if torch.get_num_threads() <= 1:
        return _CHUNK_ROWS < n < _CHUNK_BELOW
    if dtype == torch.float32:
        return _CHUNK_FROM <= n < _CHUNK_BELOW_F32_THREADS
    below = _CHUNK_BELOW_THREADS_NO_AMX.get(dtype)
    return below is not None and _CHUNK_FROM <= n < below and not _torch_amx(dtype)


def _flash_causal_chunked(qh: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale):
    """A causal prefill of ``n < _CHUNK_BELOW`` rows (no context) in at most ``_CHUNKS`` chunks of at least
    ``_CHUNK_ROWS`` rows (a multiple of 32).

    torch's CPU flash kernel works in 32-, 64- or (from 768 rows) 256-row query blocks against 512-key
    blocks and, with ``is_causal``, computes each key block whole: every row of a 512-token prefill
    meets all 512 keys (twice the causal work), a 1k one half again the causal work.  Chunk ``j`` (rows
    ``m .. e``) is called with only the keys ``[0, e)``: the first chunk with ``is_causal`` (square, so
    its top-left causal mask is the end-aligned one), the others with an additive mask that hides each
    row's future keys of the chunk.  The masks are column slices of one ``[c, n + c]`` buffer
    ``B[r, t'] = 0 if t' <= n + r else -inf`` (chunk at ``m`` reads ``B[:, n - m : n - m + e]``), so
    nothing is built per chunk.  Measured (one thread) 1.2 to 1.4x SDPA's causal call at 256 to 704 rows, 1.03 to
    1.06x at 1k, 0.92x at 1280 and below 1x at 2k (the kernel's waste shrinks with length while small
    chunks compute less efficiently), hence the bound.  Returns ``(out [1, H, n, D], lse [1, H, n])``
    like ``_flash``.
    """
    _, H, n, D = qh.shape
    c = max(_CHUNK_ROWS, -(-n // (_CHUNKS * 32)) * 32)
    t = torch.arange(n + c, device=_CPU).view(1, -1)
    buf = torch.zeros(c, n + c, dtype=torch.float32, device=_CPU).masked_fill_(
        t > n + torch.arange(c, device=_CPU).view(-1, 1), -math.inf)
    outs, lses = [], []
    for m in range(0, n, c):
        e = min(n, m + c)
        if m == 0:
            o, l = _flash(qh[:, :, :e], k[None, :, :e], v[None, :, :e], is_causal=True, scale=scale)
        else:
            o, l = _flash(qh[:, :, m:e], k[None, :, :e], v[None, :, :e], attn_mask=buf[: e - m, n - m: n - m + e],
                          scale=scale)
        outs.append(o[0].transpose(0, 1))  # [rows, H, D]: the kernel writes in the query's order
        lses.append(l)
    # one copy each (a parallel region per op costs on a busy machine: no per-chunk copies)
    return torch.cat(outs).transpose(0, 1).unsqueeze(0), torch.cat(lses, dim=2)


def _flash_rows(q, k, v, p0, *, scale, causal, window, sinks):
    """Same contract as ``_torch_rows`` via torch's CPU flash-attention kernel (no soft-cap)."""
    n, H, D = q.shape
    hkv, L, dv = v.shape
    chunked = causal and not window and p0 == 0 and _chunk_prefill(n, q.dtype)
    # (the chunked calls gain nothing from the padded copy: 1.35x SDPA without it, 1.31x with, at 512 rows)
    if q.element_size() == 2 and n >= _PAD_FROM and (H * D * 2) % 4096 == 0 and not chunked:
        q = _padded_query(q)
    # [1, H, n, D] as a strided view: the kernel reads it in place and then writes its output in
    # the same [n, H, D] order, so neither the query nor the output needs a transposing copy
    qh = q.transpose(0, 1).unsqueeze(0)
    if window:
        lo = max(0, p0 - int(window) + 1)
        pos_q = torch.arange(p0, p0 + n, device=_CPU).unsqueeze(1)
        pos_k = torch.arange(lo, L, device=_CPU).unsqueeze(0)
        visible = pos_k > pos_q - int(window)
        if causal:
            visible &= pos_k <= pos_q
        mask = torch.zeros(n, L - lo, dtype=q.dtype, device=_CPU).masked_fill_(~visible, -math.inf)
        o, lse = _flash(qh, k[None, :, lo:], v[None, :, lo:], attn_mask=mask, scale=scale)
    elif chunked:
        o, lse = _flash_causal_chunked(qh, k, v, scale)
    elif not causal or p0 == 0:
        o, lse = _flash(qh, k[None], v[None], is_causal=bool(causal), scale=scale)
    else:
        # causal chunk with context: context keys [0, p0) fully visible, chunk keys causal (aligned)
        o1, l1 = _flash(qh, k[None, :, :p0], v[None, :, :p0], scale=scale)
        o2, l2 = _flash(qh, k[None, :, p0:], v[None, :, p0:], is_causal=True, scale=scale)
        lse = torch.logaddexp(l1, l2)
        o = o1.float() * torch.exp(l1 - lse).unsqueeze(-1) + o2.float() * torch.exp(l2 - lse).unsqueeze(-1)
    if sinks is not None:
        w = torch.sigmoid(lse - sinks.detach().to(torch.float32).view(1, H, 1))  # e^lse / (e^lse + e^sink)
        o = o.float() * w.unsqueeze(-1)
    return o[0].transpose(0, 1)  # [n, H, dv]


def _short_rows_batched(query, key_cache, value_cache, md, seqs, out, *, scale, causal, window, sinks, ks, vs):
    """Without the extension: all short-row sequences in one flash call over a padded gather.

    Returns False (and does nothing) when padding to the longest sequence would more than
    double the gathered rows; the caller then goes one sequence at a time.
    """
    qsl, lens = md.host_lists()
    bs = key_cache.shape[1]
    L = [lens[i] for i in seqs]
    n = [qsl[i + 1] - qsl[i] for i in seqs]
    B, nb_max, nmax = len(seqs), -(-max(L) // bs), max(n)
    lpad = nb_max * bs
    if B * lpad > 2 * sum(L) + 4 * bs:
        return False
    T, H, D = query.shape
    hkv = key_cache.shape[2]
    idx = torch.tensor(seqs, dtype=torch.long, device=_CPU)
    lt = torch.tensor(L, dtype=torch.long, device=_CPU)
    nt = torch.tensor(n, dtype=torch.long, device=_CPU)
    bt = md.block_table.index_select(0, idx)[:, :nb_max].long()
    bt = torch.where(torch.arange(nb_max, device=_CPU) < ((lt + bs - 1) // bs).unsqueeze(1), bt,
                     torch.zeros_like(bt))
    flat = bt.reshape(-1)

    pad = (torch.arange(lpad, device=_CPU).view(1, 1, lpad, 1) >= lt.view(B, 1, 1, 1))  # slots past each seq_len

    def gather(cache, s):
        x = torch.index_select(cache, 0, flat).view(B, lpad, hkv, cache.shape[3]).transpose(1, 2)
        if x.dtype in _FP8 or s != 1.0:
            x = x.to(torch.float32)
            if s != 1.0:
                x = x * s
        # masked slots still meet a zero probability in the product: whatever they hold (NaN in an
        # unused slot) must not reach the output
        return x.to(query.dtype).masked_fill(pad, 0)

    k, v = gather(key_cache, ks), gather(value_cache, vs)
    j = torch.arange(nmax, device=_CPU)
    real = j.unsqueeze(0) < nt.unsqueeze(1)  # [B, nmax]
    start = torch.tensor([qsl[i] for i in seqs], dtype=torch.long, device=_CPU).unsqueeze(1)
    rows = torch.where(real, start + j, start)  # padding rows repeat the first row (discarded)
    pos = torch.where(real, (lt - nt).unsqueeze(1) + j, (lt - 1).unsqueeze(1))  # [B, nmax]
    t = torch.arange(lpad, device=_CPU).view(1, 1, lpad)
    visible = (t < lt.view(B, 1, 1)).expand(B, nmax, lpad)
    if causal:
        visible = visible & (t <= pos.unsqueeze(2))
    if window:
        visible = visible & (t > pos.unsqueeze(2) - int(window))
    mask = torch.zeros(B, 1, nmax, lpad, dtype=query.dtype, device=_CPU).masked_fill_(~visible.unsqueeze(1),
                                                                                        -math.inf)
    qb = query.index_select(0, rows.reshape(-1)).view(B, nmax, H, D).transpose(1, 2)  # [B, H, nmax, D]
    o, lse = _flash(qb, k, v, attn_mask=mask, scale=scale)
    if sinks is not None:
        o = o.float() * torch.sigmoid(lse - sinks.detach().to(torch.float32).view(1, H, 1)).unsqueeze(-1)
    o = o.transpose(1, 2)  # [B, nmax, H, D]
    out[rows[real]] = o[real].to(out.dtype)
    return True


# ----------------------------------------------------------------------------------------------
# prefill rows on AMX (bf16)


# Short runs (speculative decode, small chunks) also go to the AMX prefill kernel from this many rows and (row,
# query head) columns per KV head, per query dtype: it reads a sequence's K/V once for all its rows, the decode
# kernel once per row.  Measured (2-vCPU AMX box, heads of 128, two threads, warm):
# bf16, one sequence of 4k keys, 32/8 heads: 3 rows 1.33x, 4 rows 1.6x, 8 rows 2.8x, 16 rows 4.1x, 2 rows 0.82x;
# four sequences: 4 rows at G 8 1.57x, 6 rows at G 4 1.28x, 8 rows at G 4 and 16k keys 1.63x, 16 rows at G 1
# 3.5x, 3 rows at G 8 1.11x, 4 rows at G 4 0.98 to 1.22x.
# float32 and fp16 (two and three part products: the kernel costs more per run), four sequences of 4k keys, 8 KV
# heads: float32 8 rows 1.08x (G 1, 0.90x at 256 keys) to 1.21x (G 2, 4), 16 rows 1.8-1.9x, 6 rows 0.95x, 4 rows
# at G 8 0.94x (1.19x at 1k keys), 4 rows at G 4 0.68x; fp16 3 rows at G 8 1.14x, 4 rows at G 8 1.57x, 4 rows at
# G 4 0.86x, 6 rows at G 2 1.20x and at G 4 1.30x, 8 rows 1.06-1.10x (G 1) to 1.69x (G 4), 16 rows 2.2-2.6x.
_AMX_RUN_MIN = {torch.bfloat16: (3, 12), torch.float16: (3, 24), torch.float32: (8, 16)}  # (rows, columns)


def _amx_rows(n: int, group: int, dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether a run of ``n`` query rows (at most DECODE_MAX_ROWS) with ``group`` query heads per KV head and this
    query dtype goes to the AMX prefill kernel rather than the decode kernel (where that kernel runs)."""
    least = _AMX_RUN_MIN.get(dtype)
    return least is not None and n >= least[0] and n * group >= least[1]


# the kernel's cache types (bf16 query), and its float32 and fp16 modes (query, cache and output of that type, each
# value as bf16 parts: split3_32 in the C source)
_AMX_CACHE = {torch.bfloat16: 1, torch.float8_e4m3fn: 3, torch.float8_e5m2: 4}
_AMX_SAME = {torch.float32: 2, torch.float16: 5}


def _amx_ctype(query, key_cache, value_cache) -> int | None:
    """The AMX prefill kernel's cache-type code for these dtypes (a bf16 query with a bf16 or fp8 cache, or float32
    or fp16 throughout), or None."""
    if value_cache.dtype != key_cache.dtype:
        return None
    if query.dtype in _AMX_SAME:
        return _AMX_SAME[query.dtype] if key_cache.dtype == query.dtype else None
    return _AMX_CACHE.get(key_cache.dtype) if query.dtype == torch.bfloat16 else None


def _amx_shape(query, key_cache, value_cache) -> bool:
    """The dtypes and head size the AMX prefill kernel takes (``_amx_ctype``), and the kernel runs on this CPU."""
    D = query.shape[-1]
    return (_amx_ctype(query, key_cache, value_cache) is not None and value_cache.shape[-1] == D and D % 32 == 0
            and D <= 256 and _cpu_prefill_ext.amx_ok())


def _prefill_amx(q, key_cache, value_cache, bt_row, L: int, *, scale: float, causal: bool, sinks, gfn, window=None,
                 ks: float = 1.0, vs: float = 1.0, cap=None, alibi=None, lse=None, out=None):
    """One sequence's query rows ``q [n, H, D]`` (bf16) against its first ``L`` paged tokens (bf16, or fp8 with
    ``ks``/``vs``; or float32 / fp16 query and cache) with the AMX prefill kernel (``csrc/cpu_prefill.cpp``): K/V tiles read in place from blocks of a
    multiple of 16 tokens (other block sizes: the raw rows gathered first, then read as one block), causal work
    only up to each row's diagonal (and from its window's start: ``window`` as for the other paths, a causal row
    at p sees keys t > p - window; ``cap`` soft-caps the scores; ``alibi`` slopes add ``slope * (t - p)``).
    Writes the log-sum-exp into ``lse`` (float32 ``[n, H]``) when given, and the output into ``out`` (``[n, H, D]`` rows of a contiguous output) when given.
    None where it does not apply (no AMX or extension, another dtype or head size): the caller takes the torch
    path."""
    fn = _cpu_prefill_ext.load()
    n, H, D = q.shape
    nb, bs, hkv, dv = value_cache.shape
    ctype = _amx_ctype(q, key_cache, value_cache)
    if (fn is None or ctype is None or dv != D or D % 32 or D > 256 or not scale > 0 or H % hkv or n > L
            or (window is not None and not causal)):
        return None
    q, kc, vc = _last_contig(q), _last_contig(key_cache), _last_contig(value_cache)
    nblk = -(-L // bs)
    if bs % 16 == 0:
        blocks = _int32(bt_row[:nblk])
        k_st, v_st, kbs, knb = kc.stride()[:3], vc.stride()[:3], bs, nb
    else:  # the raw rows gathered into [Hkv, L, D] and read as one block (the same tiles: the same result)
        if gfn is None:
            return None
        kc, vc = _gather_raw(kc, vc, bt_row, L, gfn)
        blocks = torch.zeros(1, dtype=torch.int32, device=_CPU)
        k_st, v_st, kbs, knb = (0, D, L * D), (0, D, L * D), -(-L // 16) * 16, 1
    o = out if out is not None else torch.empty(n, H, D, dtype=q.dtype, device=_CPU)
    sk = None if sinks is None else sinks.detach().to(torch.float32).contiguous()
    al = None if alibi is None else alibi.detach().to(torch.float32).contiguous()
    if lse is not None and lse.dtype != torch.float32:
        return None
    rc = fn(q.data_ptr(), q.stride(0), q.stride(1), kc.data_ptr(), *k_st, vc.data_ptr(), *v_st,
            blocks.data_ptr(), kbs, knb, ctype, float(ks), float(vs), n, L, H, hkv, D, int(bool(causal)),
            int(window or 0), float(scale), float(cap or 0.0), None if sk is None else sk.data_ptr(),
            None if al is None else al.data_ptr(), o.data_ptr(), o.stride(0), o.stride(1),
            None if lse is None else lse.data_ptr(), *(lse.stride() if lse is not None else (0, 0)),
            torch.get_num_threads())
    if rc < 0:
        return None  # no AMX here, or a value it does not take (nothing written)
    if rc > 0:
        raise ValueError(f"Expected block_table entries in [0, num_blocks={nb}) for the blocks a sequence uses, "
                         f"but got {int(blocks[rc - 1])}.")
    return o


def _gather_raw(kc, vc, bt_row, L: int, gfn):
    """This sequence's first ``L`` K and V rows as stored (no conversion, no scale), contiguous ``[Hkv, L, D]``,
    with the C++ gather (range-checked: the same error as the other paths)."""
    nb, bs, hkv, D = kc.shape
    es = kc.element_size()
    buf = _buffer(2 * hkv * L * D * es).view(kc.dtype)
    k, v = buf[: hkv * L * D].view(hkv, L, D), buf[hkv * L * D:].view(hkv, L, D)
    blocks = _int32(bt_row[: -(-L // bs)])
    threads = torch.get_num_threads() if L * hkv >= 2048 else 1
    bad = gfn(es, kc.data_ptr(), kc.stride(0), kc.stride(1), kc.stride(2), vc.data_ptr(), vc.stride(0), vc.stride(1),
              vc.stride(2), blocks.data_ptr(), L, bs, hkv, D, D, threads, nb, k.data_ptr(), v.data_ptr(), 1)
    if bad:
        raise ValueError(f"Expected block_table entries in [0, num_blocks={nb}) for the blocks a sequence uses, "
                         f"but got {int(blocks[bad - 1])}.")
    return k, v


# ----------------------------------------------------------------------------------------------


def _needs_general(c: Paged) -> bool:
    """Features only the general torch path has (the C++ and flash paths keep vLLM's common case fast)."""
    if c.alibi is not None or c.mm is not None or c.per_seq_scales or c.return_lse:
        return True
    if c.window is not None and not c.causal:
        return True  # a two-sided (encoder) window
    return any(c.qsl[i + 1] - c.qsl[i] > c.lens[i] for i in range(len(c.lens)))  # cross-attention, n > L


def _general(c: Paged, gfn, use_amx: bool = True) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    query = c.query
    T, H, D = query.shape
    hkv, dv = c.key_cache.shape[2], c.value_cache.shape[3]
    out = torch.zeros(T, H, dv, dtype=query.dtype, device=_CPU)
    lse = torch.full((T, H), -math.inf, dtype=torch.float32, device=_CPU) if c.return_lse else None
    per_seq = c.per_seq_scales
    # the AMX prefill kernel (_amx_ctype's dtypes; float scales) takes what it can: not the
    # multimodal ranges, per-sequence scales, two-sided windows or more rows than keys
    amx = use_amx and gfn is not None and not per_seq and _amx_shape(query, c.key_cache, c.value_cache)
    ks_f = 1.0 if isinstance(c.k_scale, torch.Tensor) else c.k_scale
    vs_f = 1.0 if isinstance(c.v_scale, torch.Tensor) else c.v_scale
    for i, L in enumerate(c.lens):
        q0, q1 = c.qsl[i], c.qsl[i + 1]
        if q1 == q0:
            continue
        if L == 0:
            continue  # no keys: zeros, lse = log(e^sink) or -inf
        if amx and not (c.mm and c.mm[i]) and q1 - q0 <= L and (c.window is None or c.causal):
            # ALiBi, return_lse or a causal window with them: the AMX prefill kernel when it takes the shape
            w = None if c.window is None or c.window[0] < 0 else c.window[0] + 1
            if _prefill_amx(query[q0:q1], c.key_cache, c.value_cache, c.block_table[i], L, scale=c.scale,
                            causal=c.causal, sinks=c.sinks, gfn=gfn, window=w, ks=ks_f, vs=vs_f, cap=c.cap,
                            alibi=c.alibi, lse=lse[q0:q1] if lse is not None else None,
                            out=out[q0:q1]) is not None:
                continue
        dt = torch.float32 if per_seq else query.dtype
        k, v = _gather_kv(c.key_cache, c.value_cache, c.block_table[i], L, dt, ks_f, vs_f, gfn)
        if isinstance(c.k_scale, torch.Tensor):
            k = k * c.k_scale[i].view(hkv, 1, 1)
        if isinstance(c.v_scale, torch.Tensor):
            v = v * c.v_scale[i].view(hkv, 1, 1)
        r = _torch_rows(query[q0:q1], k, v, L, scale=c.scale, causal=c.causal, window=c.window, cap=c.cap,
                        sinks=c.sinks, alibi=c.alibi, mm=c.mm[i] if c.mm else (), want_lse=c.return_lse)
        if c.return_lse:
            out[q0:q1], lse[q0:q1] = r[0], r[1]
        else:
            out[q0:q1] = r
    if c.return_lse:
        if c.sinks is not None:  # rows with no key: the denominator is the sink alone
            empty = torch.isneginf(lse)
            lse = torch.where(empty, c.sinks.view(1, H).expand(T, H), lse)
        return out, lse
    return out


def cpu_attn_impl(
    query, key_cache, value_cache, md: AttentionMetadata, *, scale=None, causal=True, sliding_window=None,
    logits_soft_cap=None, sinks=None, k_scale=None, v_scale=None, alibi_slopes=None, mm_prefix_ranges=None,
    return_lse: bool = False, q_scale=None, use_ext: bool | None = None, use_flash: bool = True,
):
    """CPU_ATTN with the path choice exposed for tests: ``use_ext`` False forces the torch paths,
    True requires the extension (``RuntimeError`` if it cannot be built), None = use it if possible;
    ``use_flash`` False forces the tiled torch path for prefill."""
    c = check_paged(
        query, key_cache, value_cache, md, scale=scale, causal=causal, sliding_window=sliding_window,
        logits_soft_cap=logits_soft_cap, sinks=sinks, k_scale=k_scale, v_scale=v_scale, alibi_slopes=alibi_slopes,
        mm_prefix_ranges=mm_prefix_ranges, return_lse=return_lse, q_scale=q_scale, query_dtypes=_QUERY_DTYPES,
        cache_dtypes=_CACHE_DTYPES,
    )
    if c.query.device.type != "cpu":
        raise ValueError(f"Expected query on cpu for CPU_ATTN, but got {query.device}.")
    query, key_cache, value_cache = c.query, c.key_cache, c.value_cache
    T, H, D = query.shape
    dv = value_cache.shape[3]
    fn = None
    if use_ext is not False:
        fn = _cpu_ext.load()
        if fn is None and use_ext:
            raise RuntimeError(f"CPU_ATTN extension unavailable: {_cpu_ext.reason()}")
        if fn is not None and "entry" not in _cpu_ext._state:  # for the next plain decode call (cpu_attn)
            _cpu_ext.load_entry(_MIN_PARALLEL_WORK, _CHUNK_MIN, _CHUNK_MAX)
    if _needs_general(c):
        return _general(c, _cpu_ext.load_gather() if fn is not None else None, use_flash)
    sc, ks, vs, cap, sinks = c.scale, c.k_scale, c.v_scale, c.cap, c.sinks
    window = None if c.window is None else c.window[0] + 1  # causal: keys t > p - window
    qsl, lens = c.qsl, c.lens
    if not (c.query_start_loc is md.query_start_loc and c.seq_lens is md.seq_lens and c.block_table is md.block_table):
        md = AttentionMetadata(c.query_start_loc, c.seq_lens, c.block_table)  # int32 copies of checked values
    short, long_ = [], []
    out = None
    # short runs of several rows read their sequence's K/V once on the AMX prefill kernel (_amx_rows)
    amx_runs = use_flash and fn is not None and _amx_shape(query, key_cache, value_cache)
    group = H // key_cache.shape[2]
    vector = []  # long runs for the decode kernel, several rows per work item (_vector_prefill)
    for i in range(len(lens)):
        n = qsl[i + 1] - qsl[i]
        if n == 0:
            continue
        if n <= DECODE_MAX_ROWS and not (amx_runs and _amx_rows(n, group, query.dtype)):
            short.append(i)
        elif use_flash and fn is not None and _vector_prefill(n, lens[i], query, key_cache, value_cache, cap,
                                                              amx_runs, window):
            vector.append(i)
        else:
            long_.append(i)
    if short or vector or len(long_) != 1 or qsl[long_[0] + 1] - qsl[long_[0]] != T:
        out = torch.empty(T, H, dv, dtype=query.dtype, device=_CPU)
    if (short or vector) and fn is not None:
        runs = sorted(short + vector)
        longest = max(qsl[i + 1] - qsl[i] for i in runs)
        rows = _grouping(longest, group, query.dtype, D)
        _decode_ext(fn, query, key_cache, value_cache, md, runs, out, scale=sc, causal=c.causal, window=window,
                    cap=cap, sinks=sinks, ks=ks, vs=vs, rows_per_item=rows)
    elif short:
        if not (use_flash and cap is None and dv == D and len(short) > 1 and _short_rows_batched(
                query, key_cache, value_cache, md, short, out, scale=sc, causal=c.causal, window=window, sinks=sinks,
                ks=ks, vs=vs)):
            long_ = sorted(long_ + short)
    if long_:
        cdt = query.dtype
        gfn = _cpu_ext.load_gather() if fn is not None else None
        amx = use_flash and fn is not None
        for i in long_:
            q0, q1, L = qsl[i], qsl[i + 1], lens[i]
            if amx:
                whole = out is None  # a batch that is one prefill: the kernel's output is the answer
                o = _prefill_amx(query[q0:q1], key_cache, value_cache, c.block_table[i], L, scale=sc,
                                 causal=c.causal, sinks=sinks, gfn=gfn, window=window, ks=ks, vs=vs, cap=cap,
                                 out=None if whole else out[q0:q1])
                if o is not None:
                    if whole:
                        return o
                    continue
            k, v = _gather_kv(key_cache, value_cache, c.block_table[i], L, cdt, ks, vs, gfn)
            if use_flash and cap is None and dv == D:  # torch's flash kernel needs equal K/V head sizes
                o = _flash_rows(query[q0:q1], k, v, L - (q1 - q0), scale=sc, causal=c.causal, window=window,
                                sinks=sinks)
            else:
                o = _torch_rows(query[q0:q1], k, v, L, scale=sc, causal=c.causal, window=c.window, cap=cap,
                                sinks=sinks)
            if out is None:  # a batch that is one prefill: the kernel's output is the answer
                return o.to(query.dtype).contiguous()
            out[q0:q1] = o
    return out


@register_kernel("CPU_ATTN", devices=("cpu",))
def cpu_attn(
    query, key_cache, value_cache, md: AttentionMetadata, *, scale=None, causal=True, sliding_window=None,
    logits_soft_cap=None, sinks=None, k_scale=None, v_scale=None, alibi_slopes=None, mm_prefix_ranges=None,
    return_lse: bool = False, q_scale=None,
):
    """Paged attention on CPU; see the module docstring and ``docs/kernels.md``."""
    if (causal is True and sliding_window is None and logits_soft_cap is None and sinks is None and k_scale is None
            and v_scale is None and alibi_slopes is None and mm_prefix_ranges is None and return_lse is False
            and q_scale is None):
        entry = _cpu_ext._state.get("entry")  # C++ reads the tensors (cpu_decode_entry.cpp); None: Python's turn
        if entry is not None and type(md) is AttentionMetadata:
            out = entry(query, key_cache, value_cache, md.query_start_loc, md.seq_lens, md.block_table, scale)
            if out is not None:
                return out
        out = _decode_fast(query, key_cache, value_cache, md, scale)
        if out is not None:
            return out
    return cpu_attn_impl(
        query, key_cache, value_cache, md, scale=scale, causal=causal, sliding_window=sliding_window,
        logits_soft_cap=logits_soft_cap, sinks=sinks, k_scale=k_scale, v_scale=v_scale, alibi_slopes=alibi_slopes,
        mm_prefix_ranges=mm_prefix_ranges, return_lse=return_lse, q_scale=q_scale,
    )
