"""FLEX_ATTENTION: paged attention with ``torch.nn.attention.flex_attention``, as vLLM's FlexAttention backend does it.

The tokens the sequences use are gathered once, in logical order, into one packed sequence
(``[1, num_kv_heads, sum(seq_lens), head_size]``, indexed by (block, slot), so any cache strides
work and a block repeated in a block table is read once per use); a document ``mask_mod``
keeps each row to its own sequence and applies the causal, window and multimodal-prefix masks;
a ``score_mod`` applies the soft-cap and ALiBi.  Scales (per tensor or per (sequence, KV head))
are applied in the gather.  Sinks use the log-sum-exp flex returns: ``out * sigmoid(lse - sink)``.
Why a gather and not vLLM's in-place physical view: the physical view keeps one logical position
per physical block (wrong for repeated blocks) and multiplies masked probabilities by whatever
unreferenced slots hold (NaN there reaches the output).

Eager or compiled (``ATTNSOLVE_FLEX_COMPILE``, read on every call): unset, compiled on CUDA/ROCm
and eager on CPU; ``0`` (or false/no/off) eager everywhere; ``1`` (or true/yes/on) compiled everywhere;
anything else is a ``ValueError``.  Eager flex materialises the ``[heads, rows, keys]`` score matrix
(on an H200: 29 ms for a batch-8 1k-context decode step, 1.9 ms compiled).  CPU stays eager by
default because inductor's C++ flex template costs ~6 s to compile per new graph, and it cannot
return the log-sum-exp (torch 2.13), so calls with sinks or ``return_lse`` stay eager on CPU.

The compiled path, built so that a decode step (every length one longer) does not recompile:

* the rows and the packed keys are padded up to a bucket (a multiple of an eighth of their power of
  two, keys at least 128); the padding belongs to no sequence, so mask_mod hides it and the block
  mask skips its tiles, and padded keys read a used slot (never an unreferenced, maybe-NaN one);
* the block mask is built from per-tile bounds (sequence ids and positions of each 128-row and
  128-key tile, O(tiles)) instead of ``create_block_mask`` evaluating mask_mod over every (row, key);
  it is conservative (a kept tile still runs mask_mod), full tiles are exact;
* causality and the window are one band of allowed ``t - p`` held in tensors, the soft-cap a tensor
  too, so they are not constants of the graph;
* GPUs compile with dynamic shapes (one graph across buckets); CPU with static shapes (one graph per
  bucket pair: the C++ template emits code that does not compile for a dynamic key length);
* if compiling or running the compiled flex raises (no C compiler, an unsupported feature), the call
  is answered eagerly, one ``RuntimeWarning`` names the reason, and that device type stays eager for
  the rest of the process.  Out-of-memory errors are raised, not retried eagerly.

* decode-like batches (at most ``_BATCH_ROWS`` = 16 query rows per sequence: decode, speculative
  decode) put the sequences on flex's batch dimension: ``q`` is ``[B, H, Nq, D]`` (each sequence's rows
  padded to ``Nq``, a power of two; ``B`` bucketed too, padding entries have no tiles), the packed keys
  stay ``[1, Hkv, keys, D]``, shared by every batch entry through flex's own key/value batch broadcast
  (``Bkv == 1``; eager, the CPU template and the GPU templates support it, no copy, no stride-0 view
  for a TMA descriptor to trip on), and the block mask has one row per sequence
  holding only that sequence's key tiles (full where every real row sees the whole tile; the query tile
  is short, the kernels bound-check its rows).  Without this the decode rows of all sequences share one
  128-row tile that keeps every sequence's key tiles, so each row scans all keys (masked): batch 64 at
  16k context took 74 ms compiled on an H200.  Batches with a longer sequence (prefill, chunks) keep
  the packed layout: padding every sequence's rows to the longest would cost more than it saves.

CPU_ATTN is what vLLM runs on CPU; this kernel is reached there through ``kernel_for("FLEX_ATTENTION")``.

An fp8 cache has no flex path: the gather dequantises the used tokens into the query dtype
(vLLM's FlexAttention has no fp8 KV either).
"""

from __future__ import annotations

import math
import os
import sys
import warnings

import torch

from attnsolve.kernels.metadata import AttentionMetadata
from attnsolve.kernels.registry import register_kernel
from attnsolve.kernels.validate import UNBOUNDED, check_paged

__all__ = ["flex_paged_attention"]

_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def _check(device: str) -> str | None:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError as e:  # pragma: no cover - torch < 2.5
        return f"torch.nn.attention.flex_attention is not available in torch {torch.__version__} ({e})"
    if device in ("cuda", "rocm"):
        if not torch.cuda.is_available():
            return f"no {'ROCm' if device == 'rocm' else 'CUDA'} GPU is visible to torch {torch.__version__}"
        if (device == "rocm") != bool(torch.version.hip):
            return f"this torch build targets {'ROCm' if torch.version.hip else 'CUDA'}, not {device}"
    return None


_ENV = "ATTNSOLVE_FLEX_COMPILE"
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_SPARSE_BLOCK = 128  # flex's default block-mask tile, both sides
_BATCH_ROWS = 16  # at most this many query rows per sequence: sequences on flex's batch dimension
_compiled: dict[str, object] = {}
_broken: dict[str, str] = {}  # device type -> why the compiled path failed there (eager from then on)


def _want_compile(device: torch.device) -> bool:
    """Read per call so a test (or a user) can flip it; unset: compiled on GPUs, eager on CPU."""
    v = os.environ.get(_ENV, "").strip().lower()
    if v in _ON:
        return True
    if v in _OFF:
        return False
    if v:
        raise ValueError(f"Expected {_ENV} unset, 0 (eager) or 1 (compiled), but got {v!r}.")
    return device.type == "cuda"  # ROCm devices are "cuda" too


def _triton_interpreting() -> bool:
    """Whether inductor's Triton kernels would be interpreted here: ``TRITON_INTERPRET`` is read when a
    kernel is decorated, and triton's own library (``tl.zeros``...) was fixed when triton was imported."""
    if os.environ.get("TRITON_INTERPRET", "0").strip() not in ("", "0"):
        return True
    tl = sys.modules.get("triton.language")
    return tl is not None and type(getattr(tl, "zeros", None)).__name__ == "InterpretedFunction"


def _compiled_flex(device_type: str):
    """One compiled flex per device type.  GPUs: dynamic shapes, so a new bucket of rows or keys reuses
    the graph (``dynamic=False`` would compile once per bucket pair and soon hit dynamo's recompile
    limit).  CPU: static shapes (one graph per bucket pair), since inductor's C++ flex template emits
    code that does not compile for a dynamic key length (torch 2.13).  fullgraph: a graph break is an
    error we see (and fall back from), not a silent eager flex inside the graph."""
    fn = _compiled.get(device_type)
    if fn is None:
        from torch.nn.attention.flex_attention import flex_attention

        fn = torch.compile(flex_attention, dynamic=device_type != "cpu", fullgraph=True)
        _compiled[device_type] = fn
    return fn


def _compiled_lse(device_type: str) -> bool:
    """Whether compiled flex returns the log-sum-exp there: inductor's CPU flex template cannot (torch 2.13),
    so calls with sinks or ``return_lse`` run eagerly on CPU (a function so tests can stand in for it)."""
    return device_type != "cpu"


def _bucket(n: int, least: int) -> int:
    """``n`` rounded up to a multiple of an eighth of its power of two (at least ``least``): at most
    12.5% padding, and a length that grows by one per decode step changes bucket rarely."""
    if n <= least:
        return least
    step = max(least, 1 << max(0, n.bit_length() - 4))
    return -(-n // step) * step


def _pad(x: torch.Tensor, n: int, fill) -> torch.Tensor:
    """``x`` with its first dim grown to ``n`` by ``fill`` (a number or a 0-dim tensor)."""
    if x.shape[0] == n:
        return x
    return torch.cat([x, x.new_zeros((n - x.shape[0], *x.shape[1:])) + fill])


def _tile_bounds(x: torch.Tensor, n_tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per 128-tile (min, max) of ``x`` over its real entries (the last tile may be short)."""
    pad = n_tiles * _SPARSE_BLOCK - x.numel()
    big = torch.iinfo(x.dtype).max

    def padded(v: int) -> torch.Tensor:
        return torch.cat([x, x.new_full((pad,), v)]).view(n_tiles, _SPARSE_BLOCK)

    return padded(big).amin(1), padded(-big).amax(1)


def _direct_block_mask(mask_mod, doc, qpos, kdoc, kpos, T: int, total: int, band_lo, band_hi, mm: bool):
    """The block mask from tile bounds, O(tiles) instead of ``create_block_mask``'s O(T * total) mask
    evaluation over every (row, key) on every call.

    A (query tile, key tile) pair is kept unless it provably holds no visible pair: the tiles share no
    sequence, or (one sequence on both sides, no multimodal ranges) every ``t - p`` lies outside the
    band ``[band_lo, band_hi]`` the causal/window masks allow.  It is "full" (mask_mod skipped) only when
    both tiles are complete, hold one sequence, and every ``t - p`` lies inside the band.  Over-keeping
    costs time, never correctness: kept partial tiles still run ``mask_mod``.
    """
    from torch.nn.attention.flex_attention import BlockMask

    nq, nk = -(-T // _SPARSE_BLOCK), -(-total // _SPARSE_BLOCK)
    dq_lo, dq_hi = _tile_bounds(doc, nq)
    dk_lo, dk_hi = _tile_bounds(kdoc, nk)
    p_lo, p_hi = _tile_bounds(qpos, nq)
    t_lo, t_hi = _tile_bounds(kpos, nk)
    keep = (dk_lo[None, :] <= dq_hi[:, None]) & (dk_hi[None, :] >= dq_lo[:, None])
    single = (dq_lo == dq_hi)[:, None] & (dk_lo == dk_hi)[None, :] & (dq_lo[:, None] == dk_lo[None, :])
    d_min = t_lo[None, :] - p_hi[:, None]  # smallest t - p over the tile pair (positions are contiguous)
    d_max = t_hi[None, :] - p_lo[:, None]
    if not mm:  # multimodal ranges can unmask pairs outside the band
        keep &= ~single | ((d_min <= band_hi) & (d_max >= band_lo))
    whole_q = torch.arange(1, nq + 1, device=doc.device) * _SPARSE_BLOCK <= T
    whole_k = torch.arange(1, nk + 1, device=doc.device) * _SPARSE_BLOCK <= total
    full = keep & single & (d_min >= band_lo) & (d_max <= band_hi) & whole_q[:, None] & whole_k[None, :]
    partial = keep & ~full

    def blocks(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        num = m.sum(-1, dtype=torch.int32)
        idx = torch.argsort((~m).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return num.view(1, 1, nq), idx.view(1, 1, nq, nk)

    kv_num, kv_idx = blocks(partial)
    full_num, full_idx = blocks(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=_SPARSE_BLOCK,
                                    mask_mod=mask_mod, seq_lengths=(T, total), compute_q_blocks=False)


def _batched_block_mask(mask_mod, L: torch.Tensor, n: torch.Tensor, Nq: int, Tk: int, band_lo: int,
                        band_hi: int, mm: bool):
    """The block mask of the batched layout: batch entry ``b`` (sequence ``b``; ``L``, ``n`` padded with 0
    for padding entries) keeps only the key tiles of the packed sequence holding its keys, minus those
    its rows' band provably misses (no multimodal ranges).  A tile is full when it lies inside the
    sequence and every real row sees all of it; padding rows (masked by mask_mod in partial tiles) may
    see it too, their outputs are dropped.  The one query tile is short (``Nq`` < 128): the CPU and GPU
    templates bound-check query rows, full tiles skip only mask_mod.
    """
    from torch.nn.attention.flex_attention import BlockMask

    if Tk % _SPARSE_BLOCK:
        raise ValueError(f"Expected the packed key length to be a multiple of {_SPARSE_BLOCK}, but got {Tk}.")
    nk = Tk // _SPARSE_BLOCK
    Bp = L.numel()
    ks = (torch.cumsum(L, 0) - L)[:, None]
    ke = ks + L[:, None]
    start = torch.arange(nk, device=L.device)[None, :] * _SPARSE_BLOCK
    end = start + _SPARSE_BLOCK
    t_lo = torch.maximum(start, ks) - ks  # the tile's smallest and largest key position in the sequence
    t_hi = torch.minimum(end, ke) - 1 - ks
    d_min = t_lo - (L - 1)[:, None]  # rows sit at positions L - n .. L - 1
    d_max = t_hi - (L - n)[:, None]
    keep = (start < ke) & (end > ks) & (n > 0)[:, None]
    if not mm:  # multimodal ranges can unmask pairs outside the band
        keep &= (d_min <= band_hi) & (d_max >= band_lo)
    full = keep & (start >= ks) & (end <= ke) & (d_min >= band_lo) & (d_max <= band_hi)
    partial = keep & ~full

    def blocks(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        num = m.sum(-1, dtype=torch.int32)
        idx = torch.argsort((~m).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return num.view(Bp, 1, 1), idx.view(Bp, 1, 1, nk)

    kv_num, kv_idx = blocks(partial)
    full_num, full_idx = blocks(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=_SPARSE_BLOCK,
                                    mask_mod=mask_mod, seq_lengths=(Nq, Tk), compute_q_blocks=False)


def _gather(cache: torch.Tensor, blk: torch.Tensor, slot: torch.Tensor, scale, seq_id: torch.Tensor, dtype):
    """Tokens ``[total, Hkv, D]`` of every sequence in logical order, dequantised into ``dtype``.

    Indexing by (block, slot) works on any strides (FlashInfer's ``[nb, 2, bs, Hkv, D]`` split, a
    permuted HND cache) and reads only the slots the sequences use.
    """
    x = cache[blk, slot]
    if isinstance(scale, torch.Tensor):  # per (sequence, KV head)
        x = (x.to(torch.float32) * scale[seq_id].unsqueeze(-1)).to(dtype)
    elif scale != 1.0 or x.dtype in _FP8:
        x = (x.to(torch.float32) * scale).to(dtype)
    else:
        x = x.to(dtype)
    return x


@register_kernel("FLEX_ATTENTION", devices=("cpu", "cuda", "rocm"), check=_check)
def flex_paged_attention(
    query, key_cache, value_cache, md: AttentionMetadata, *, scale=None, causal=True, sliding_window=None,
    logits_soft_cap=None, sinks=None, k_scale=None, v_scale=None, alibi_slopes=None, mm_prefix_ranges=None,
    return_lse: bool = False, q_scale=None,
):
    """Paged attention through flex_attention; same contract as CPU_ATTN (``docs/kernels.md``)."""
    from torch.nn.attention.flex_attention import AuxRequest, create_block_mask

    c = check_paged(
        query, key_cache, value_cache, md, scale=scale, causal=causal, sliding_window=sliding_window,
        logits_soft_cap=logits_soft_cap, sinks=sinks, k_scale=k_scale, v_scale=v_scale, alibi_slopes=alibi_slopes,
        mm_prefix_ranges=mm_prefix_ranges, return_lse=return_lse, q_scale=q_scale,
    )
    args = (query, key_cache, value_cache, md)
    kwargs = dict(scale=scale, causal=causal, sliding_window=sliding_window, logits_soft_cap=logits_soft_cap,
                  sinks=sinks, k_scale=k_scale, v_scale=v_scale, alibi_slopes=alibi_slopes,
                  mm_prefix_ranges=mm_prefix_ranges, return_lse=return_lse, q_scale=q_scale)
    query = c.query
    T, H, D = query.shape
    bs, hkv = key_cache.shape[1], key_cache.shape[2]
    dv = value_cache.shape[3]
    dev = query.device
    qsl, lens = c.qsl, c.lens
    B = len(lens)
    total = sum(lens)
    out = torch.zeros(T, H, dv, dtype=query.dtype, device=dev)
    lse_out = torch.full((T, H), -math.inf, dtype=torch.float32, device=dev)
    if T == 0 or total == 0:
        if c.sinks is not None:
            lse_out[:] = c.sinks.view(1, H)
        return (out, lse_out) if c.return_lse else out

    need_lse = c.sinks is not None or c.return_lse
    if dev.type != "cpu" and dev.type not in _broken and _want_compile(dev) and _triton_interpreting():
        _broken[dev.type] = "triton runs in its interpreter in this process (TRITON_INTERPRET=1)"
        warnings.warn(f"FLEX_ATTENTION: compiled flex_attention needs compiled Triton kernels on {dev.type}, but "
                      f"{_broken[dev.type]}; running flex eagerly from now on in this process (much slower). "
                      f"Unset TRITON_INTERPRET before triton is imported, or set {_ENV}=0 to choose eager.",
                      RuntimeWarning, stacklevel=2)
    compiled = _want_compile(dev) and dev.type not in _broken and not (need_lse and not _compiled_lse(dev.type))
    rows_per_seq = [qsl[i + 1] - qsl[i] for i in range(B)]
    batched = compiled and max(rows_per_seq) <= _BATCH_ROWS
    # compiled: rows and packed keys padded up to a bucket (padding belongs to no sequence, so the
    # block mask skips its tiles and mask_mod hides it), so shapes change rarely, never per step
    Tq, Tk = (_bucket(T, 16), _bucket(total, _SPARSE_BLOCK)) if compiled else (T, total)
    # batched: Bp entries (B sequences, then padding entries without tiles) of Nq rows each
    Bp, Nq = (_bucket(B, 4), 1 << (max(rows_per_seq) - 1).bit_length()) if batched else (1, Tq)

    n = torch.tensor(rows_per_seq, device=dev)
    L = torch.tensor(lens, device=dev)
    seq = torch.arange(B, device=dev)
    doc = _pad(torch.repeat_interleave(seq, n, output_size=T), Tq, B + 1)
    qstart = torch.tensor(qsl[:-1], device=dev)
    rows = torch.arange(T, device=dev)
    within = rows - qstart[doc[:T]]  # a row's index among its sequence's rows
    qpos = _pad(within + (L - n)[doc[:T]], Tq, 0)  # rows are the last n positions
    kseq = torch.repeat_interleave(seq, L, output_size=total)
    kstart = torch.cumsum(L, 0) - L
    kpos = torch.arange(total, device=dev) - kstart[kseq]
    bt = c.block_table.to(dev).long()
    blk = bt[kseq, kpos // bs]
    slot = kpos % bs
    # padded keys read a slot that is used (finite), never an unreferenced one (may hold NaN)
    blk, slot, kseq_g = _pad(blk, Tk, blk[0]), _pad(slot, Tk, slot[0]), _pad(kseq, Tk, 0)
    kdoc, kpos = _pad(kseq, Tk, -1 if batched else B), _pad(kpos, Tk, 0)
    k = _gather(c.key_cache, blk, slot, c.k_scale, kseq_g, query.dtype).permute(1, 0, 2).unsqueeze(0)
    v = _gather(c.value_cache, blk, slot, c.v_scale, kseq_g, query.dtype).permute(1, 0, 2).unsqueeze(0)
    if batched:
        # [Bp, H, Nq, D]; the keys stay [1, Hkv, Tk, D]: flex broadcasts a key/value batch of 1
        qb = query.new_zeros(Bp, Nq, H, D)
        qb[doc[:T], within] = query
        q = qb.permute(0, 2, 1, 3)
        nb, Lb = _pad(n, Bp, 0), _pad(L, Bp, 0)
        qposb = (Lb - nb)[:, None] + torch.arange(Nq, device=dev)[None, :]  # [Bp, Nq]
    else:
        q = _pad(query, Tq, 0).transpose(0, 1).unsqueeze(0)  # [1, H, Tq, D]

    def row_seq_pos(b, q_idx):
        """(sequence, position) of query row ``q_idx`` of batch entry ``b``."""
        if batched:
            return b, qposb[b, q_idx]
        return doc[q_idx], qpos[q_idx]

    # the causal and window masks as one band of allowed t - p, as tensors so that neither the window
    # nor causality is a constant of the compiled graph
    left, right = c.window if c.window is not None else (UNBOUNDED, UNBOUNDED)
    if c.causal:
        right = min(right, 0)
    band_lo, band_hi = -left, right
    lo_t = torch.tensor(band_lo, dtype=torch.long, device=dev)
    hi_t = torch.tensor(band_hi, dtype=torch.long, device=dev)
    mm = c.mm
    width, rs, re = 0, None, None
    if mm is not None:
        width = max(len(r) for r in mm)
        nr = max(B + 2, Bp)  # packed: rows B, B + 1 are the padding's (empty) ranges; batched: padding entries
        rs = torch.zeros(nr, width, dtype=torch.long, device="cpu")
        re = torch.zeros(nr, width, dtype=torch.long, device="cpu")
        for i, ranges in enumerate(mm):
            for j, (a, b) in enumerate(ranges):
                rs[i, j], re[i, j] = a, b
        rs, re = rs.to(dev), re.to(dev)

    def mask_mod(b, h, q_idx, kv_idx):
        s, p = row_seq_pos(b, q_idx)
        t = kpos[kv_idx]
        ok = (t - p >= lo_t) & (t - p <= hi_t)
        for j in range(width):
            a, e = rs[s, j], re[s, j]
            ok = ok | ((p >= a) & (p < e) & (t >= a) & (t < e))
        if batched:  # padding rows see nothing
            ok = ok & (q_idx < nb[b])
        return (s == kdoc[kv_idx]) & ok

    cap = None if c.cap is None else torch.tensor(c.cap, dtype=torch.float32, device=dev)
    slopes = c.alibi
    score_mod = None
    if cap is not None or slopes is not None:
        def score_mod(score, b, h, q_idx, kv_idx):
            if cap is not None:
                score = cap * torch.tanh(score / cap)
            if slopes is not None:
                score = score + slopes[h] * (kpos[kv_idx] - row_seq_pos(b, q_idx)[1]).to(score.dtype)
            return score

    if batched:
        block_mask = _batched_block_mask(mask_mod, Lb, nb, Nq, Tk, band_lo, band_hi, mm is not None)
    elif compiled:
        block_mask = _direct_block_mask(mask_mod, doc, qpos, kdoc, kpos, Tq, Tk, band_lo, band_hi, mm is not None)
    else:
        block_mask = create_block_mask(mask_mod, None, None, T, total, device=dev)
    kw = dict(score_mod=score_mod, block_mask=block_mask, scale=c.scale, enable_gqa=(hkv != H))
    if need_lse:
        kw["return_aux"] = AuxRequest(lse=True)
    res = None
    if compiled:
        try:
            res = _compiled_flex(dev.type)(q, k, v, **kw)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - inductor without a C compiler, a feature the template lacks
            why = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
            _broken[dev.type] = why
            warnings.warn(f"FLEX_ATTENTION: compiled flex_attention failed on {dev.type} ({why}); running flex "
                          f"eagerly from now on in this process (much slower: it materialises the scores). "
                          f"Set {_ENV}=0 to choose eager and silence this.", RuntimeWarning, stacklevel=2)
            # eager, on the packed unpadded layout (eager flex over the batched one would materialise
            # [B, H, Nq, all keys] scores)
            return flex_paged_attention(*args, **kwargs)
    if res is None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*without torch.compile.*")
            from torch.nn.attention.flex_attention import flex_attention

            res = flex_attention(q, k, v, **kw)
    if need_lse:
        o, aux = res
        lse = aux.lse
    else:
        o, lse = res, None
    if batched:  # [Bp, H, Nq, *] -> [T, H, *]: each row from its entry, padding dropped
        o = o.permute(0, 2, 1, 3)[doc[:T], within]
        lse = None if lse is None else lse.permute(0, 2, 1)[doc[:T], within].float()
    else:
        o = o[0, :, :T].transpose(0, 1)  # [T, H, dv]
        lse = None if lse is None else lse[0, :, :T].transpose(0, 1).float()  # [T, H]
    if c.sinks is not None:
        sk = c.sinks.view(1, H)
        o = o.float() * torch.sigmoid(lse - sk).unsqueeze(-1)
        lse = torch.logaddexp(lse, sk.expand_as(lse))
    out = o.to(query.dtype).contiguous()
    return (out, lse.contiguous()) if c.return_lse else out
