"""FLASH_ATTN's stand-in when ``flash_attn`` is not installed: torch SDPA's fused kernels on the paged KV.

``torch.nn.functional.scaled_dot_product_attention`` restricted to
its fused CUDA kernels (flash, memory-efficient), a constant number of calls per batch (a
per-sequence loop cost ~100x the attention in decode): the KV gathered through the block table
into a padded ``[B, Hkv, Lmax, D]`` (one index op), queries into ``[B, H, Nmax, D]``.

* Same ``n`` and ``L`` everywhere: no mask, ``is_causal`` (``n == L``) or
  ``causal_lower_right`` (bottom-right), so the flash kernel runs (``enable_gqa=True``).
* Otherwise a boolean mask ``[B, 1, rows, Lmax]`` (padding + causal aligned to each sequence's
  end) for the memory-efficient kernel, which has no GQA: the query heads of a KV head are
  folded into the rows (or, for long chunks, the KV heads repeated).
* Uneven batches (padding > 4x the packed size) run in a few length buckets (``plan_buckets``).

Covered: fp16/bf16, head size <= 256 and a multiple of 8, causal or not, fp8 KV (dequantised in
the gather).  Not covered: sliding window, soft-cap, sinks -> ``KernelUnavailableError``
(alternative ``TRITON_ATTN``).
"""

from __future__ import annotations

import torch

from attnsolve.kernels.adapters import _common as C

__all__ = ["sdpa_paged", "plan_buckets", "flash_shape_reasons"]

BACKEND = "FLASH_ATTN"
ALTERNATIVE = "TRITON_ATTN"


def flash_shape_reasons(query, key_cache, value_cache, what: str) -> list[str]:
    """What a flash kernel (FA2, SDPA's flash) cannot take in these tensors (dtype, head sizes)."""
    missing = []
    if query.dtype not in (torch.float16, torch.bfloat16):
        missing.append(f"{what} runs fp16/bf16 only, not {query.dtype}")
    D, Dv = query.shape[-1], value_cache.shape[-1]
    if D > 256 or D % 8:
        missing.append(f"{what} needs head_size <= 256 and a multiple of 8, not {D}")
    if Dv != D:
        missing.append(f"{what} needs equal key and value head sizes, not {D} and {Dv}")
    return missing


# Bucketing of an uneven batch: a bucket's padded KV rows and score entries may exceed the
# packed ones by this factor (plus a small absolute slack, so tiny batches stay in one call).
PAD_FACTOR = 4
PAD_SLACK_ROWS = 256
PAD_SLACK_SCORES = 1 << 16
# Largest boolean mask (entries) one call may materialise; beyond it a bucket is split, down to
# single sequences, which need no mask (plain, top-left == bottom-right or lower-right causal).
MASK_BUDGET = 1 << 27


class _Run:
    """Running sizes of a bucket (O(1) per added sequence, so planning stays O(batch log batch))."""

    __slots__ = ("count", "n_max", "n_min", "l_max", "l_min", "sum_n", "sum_l", "sum_nl")

    def __init__(self) -> None:
        self.count = self.n_max = self.l_max = self.sum_n = self.sum_l = self.sum_nl = 0
        self.n_min = self.l_min = 1 << 62

    def plus(self, n: int, L: int) -> _Run:
        r = _Run()
        r.count, r.sum_n, r.sum_l, r.sum_nl = self.count + 1, self.sum_n + n, self.sum_l + L, self.sum_nl + n * L
        r.n_max, r.n_min = max(self.n_max, n), min(self.n_min, n)
        r.l_max, r.l_min = max(self.l_max, L), min(self.l_min, L)
        return r

    def padded_ok(self, group: int, scores: bool = True) -> bool:
        """Padded KV rows (and with ``scores``, score entries) within PAD_FACTOR of packed; a mask
        within MASK_BUDGET.  Without ``scores`` (query lengths already within PAD_FACTOR of each
        other) a run closes only where the context length drops by PAD_FACTOR or at the budget."""
        c, n, L = self.count, self.n_max, self.l_max
        uniform = self.n_min == n and self.l_min == L
        if not uniform and c * group * n * L > MASK_BUDGET:
            return False
        return (c * L <= PAD_FACTOR * self.sum_l + PAD_SLACK_ROWS
                and (not scores or c * n * L <= PAD_FACTOR * self.sum_nl + PAD_SLACK_SCORES))

    def kv_ok(self, group: int) -> bool:
        return self.padded_ok(group, scores=False)

    def rows_ok(self, group: int) -> bool:
        """Query lengths within PAD_FACTOR of each other: a decode row never joins a long chunk
        (its mask would cost more than a second call)."""
        return self.n_max <= PAD_FACTOR * self.n_min


def _greedy(ids: list[int], q_lens: list[int], seq_lens: list[int], by: list[int], ok, group: int) -> list[list[int]]:
    """Split ``ids`` sorted by ``by`` (descending) into runs, closing a run when ``ok`` fails.

    Closing means the new element is much smaller than the run's first, so the number of runs
    grows with log(max / min), not with the batch size.
    """
    runs: list[list[int]] = []
    run = _Run()
    for i in sorted(ids, key=lambda i: -by[i]):
        nxt = run.plus(q_lens[i], seq_lens[i])
        if runs and ok(nxt, group):
            runs[-1].append(i)
            run = nxt
        else:
            runs.append([i])
            run = _Run().plus(q_lens[i], seq_lens[i])
    return runs


def plan_buckets(q_lens: list[int], seq_lens: list[int], group: int = 1) -> list[list[int]]:
    """Sequence ids per SDPA call: one bucket when padding the batch costs <= PAD_FACTOR x, else
    classes of query lengths within PAD_FACTOR, each split where the context length drops by
    PAD_FACTOR: O(log(max n) * log(max L)) buckets, never O(batch) (only MASK_BUDGET splits more,
    for batches of long non-uniform chunks, where each call's work dwarfs its overhead).

    Sequences without query rows or without keys are left out (the latter's rows are zeros).
    """
    active = [i for i in range(len(seq_lens)) if q_lens[i] > 0 and seq_lens[i] > 0]
    if not active:
        return []
    whole = _Run()
    for i in active:
        whole = whole.plus(q_lens[i], seq_lens[i])
    if whole.padded_ok(group):
        return [active]
    buckets: list[list[int]] = []
    for cls in _greedy(active, q_lens, seq_lens, q_lens, _Run.rows_ok, group):
        buckets.extend(_greedy(cls, q_lens, seq_lens, seq_lens, _Run.kv_ok, group))
    return [sorted(b) for b in buckets]


def _index(values: list[int], dev: torch.device) -> torch.Tensor:
    """A small host list as a device int64 tensor, without a blocking copy on CUDA."""
    t = torch.tensor(values, dtype=torch.long, device="cpu")
    if dev.type == "cuda":
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)


def _slots(bt: torch.Tensor, lens: torch.Tensor | None, l_max: int, bs: int):
    """Flat cache slots ``[Bk * l_max]`` of each sequence's tokens 0..l_max-1, and the padding mask.

    ``lens`` (``None``: every sequence has ``l_max`` tokens) marks padding, which reads slot 0 and
    is zeroed after the gather (``valid``), so NaN in unused cache slots never reaches the softmax.
    """
    pos = torch.arange(l_max, device=bt.device)
    slot = bt.index_select(1, pos // bs).long() * bs + pos % bs  # [Bk, l_max]
    valid = None
    if lens is not None:
        valid = pos < lens.unsqueeze(1)
        slot = torch.where(valid, slot, torch.zeros_like(slot))
    return slot.reshape(-1), valid


def _gather(cache: torch.Tensor, slot: torch.Tensor, valid: torch.Tensor | None, Bk: int, l_max: int,
            scale: float | None, dtype: torch.dtype) -> torch.Tensor:
    """``[Bk, Hkv, l_max, D]`` from the paged cache (one gather), fp8 dequantised into ``dtype``."""
    nb, bs = cache.shape[:2]
    kv = cache.reshape(nb * bs, *cache.shape[2:]).index_select(0, slot).view(Bk, l_max, *cache.shape[2:])
    if kv.dtype in C.FP8_DTYPES or kv.dtype != dtype:
        kv = kv.to(torch.float32)
        if scale is not None:
            kv = kv * scale
        kv = kv.to(dtype)
    if valid is not None:
        kv = kv.masked_fill(~valid[:, :, None, None], 0)
    return kv.transpose(1, 2)


def _run_bucket(query, key_cache, value_cache, c, ids: list[int], causal: bool, k_scale: float | None,
                v_scale: float | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """One SDPA call for the sequences ``ids``.

    Returns ``(rows, where)``: ``rows [Bk * n_max, H, Dv]`` padded outputs and ``where`` = (the row
    in ``rows``, the token in the batch) of each of the bucket's tokens (``None``: ``rows`` are the
    batch's tokens ``c.qsl[ids[0]]:c.qsl[ids[-1] + 1]``, in order).
    """
    from torch.nn.attention.bias import causal_lower_right

    H, D = query.shape[1:]
    Hkv, Dv = value_cache.shape[2:]
    g = H // Hkv
    dev = query.device
    q_lens = [c.qsl[i + 1] - c.qsl[i] for i in ids]
    lens = [c.lens[i] for i in ids]
    Bk, n_max, l_max = len(ids), max(q_lens), max(lens)
    uniform_n = min(q_lens) == n_max
    uniform_l = min(lens) == l_max
    need_mask = not uniform_l or (causal and not uniform_n)
    a, z = ids[0], ids[-1] + 1
    in_range = z - a == Bk  # sequences a..z-1: slices of the metadata, no index upload
    direct = in_range and uniform_n  # the query is [Bk * n_max] rows in order already

    sl, qsl, bt = c.seq_lens, c.query_start_loc, c.block_table
    if in_range:
        sl, bt = sl[a:z], bt[a:z]
        q0, q1 = qsl[a:z], qsl[a + 1:z + 1]
    else:
        idx = _index(ids, dev)
        sl, bt = sl.index_select(0, idx), bt.index_select(0, idx)
        q0, q1 = qsl.index_select(0, idx), qsl.index_select(0, idx + 1)
    L_d = sl.long() if need_mask else None
    n_d = None
    if need_mask or not direct:
        q0 = q0.long()
        n_d = q1.long() - q0

    slot, valid = _slots(bt, None if uniform_l else L_d, l_max, key_cache.shape[1])
    k = _gather(key_cache, slot, valid, Bk, l_max, k_scale, query.dtype)
    v = _gather(value_cache, slot, valid, Bk, l_max, v_scale, query.dtype)

    if direct:
        q = query[c.qsl[a]:c.qsl[z]].view(Bk, n_max, H, D)
    else:
        j = torch.arange(n_max, device=dev)
        qidx = q0.unsqueeze(1) + j
        if not uniform_n:  # padding rows repeat the sequence's first row; their output is dropped
            qidx = torch.where(j < n_d.unsqueeze(1), qidx, q0.unsqueeze(1))
        q = query.index_select(0, qidx.reshape(-1)).view(Bk, n_max, H, D)

    mask, is_causal, gqa, fold = None, False, False, g > 1
    if not need_mask:
        if causal and n_max > 1:
            fold, gqa = False, g > 1  # flash's GQA keeps its causal alignment
            if n_max == l_max:
                is_causal = True
            else:
                mask = causal_lower_right(n_max, l_max)
    else:
        pos = torch.arange(l_max, device=dev)
        vis = pos < L_d[:, None, None]  # [Bk, 1, l_max]
        if causal:  # row j is position L - n + j
            j = torch.arange(n_max, device=dev)
            vis = vis & (pos - j[:, None] <= (L_d - n_d)[:, None, None])
        else:
            vis = vis.expand(Bk, n_max, l_max)
        # GQA: the memory-efficient kernel takes no enable_gqa; fold the query heads of a KV head
        # into the rows (a g x taller mask) or repeat the KV heads, whichever allocates less.
        if fold and n_max > 2 * Hkv * D:
            fold = False
            k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        if fold:
            mask = vis[:, None, None].expand(Bk, 1, g, n_max, l_max).reshape(Bk, 1, g * n_max, l_max)
        else:
            mask = vis[:, None]
    if fold:  # row r = i * n_max + j of KV head h is query head h * g + i, row j
        q = q.view(Bk, n_max, Hkv, g, D).permute(0, 2, 3, 1, 4).reshape(Bk, Hkv, g * n_max, D)
    else:
        q = q.transpose(1, 2)  # [Bk, H, n_max, D]
    o = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=is_causal, scale=c.scale, enable_gqa=gqa
    )
    o = o.unflatten(2, (g, n_max)) if fold else o.unsqueeze(2)  # [Bk, H / g', g', n_max, Dv]
    o = o.permute(0, 3, 1, 2, 4).reshape(Bk * n_max, H, Dv)
    if direct:
        return o, None
    Tk = sum(q_lens)
    b = torch.repeat_interleave(torch.arange(Bk, device=dev), n_d, output_size=Tk)
    starts = torch.cumsum(n_d, 0) - n_d
    j = torch.arange(Tk, device=dev) - starts[b]
    return o, (b * n_max + j, q0[b] + j)


def sdpa_paged(
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
    fused_only: bool | None = None,
):
    """FLASH_ATTN's fallback: torch SDPA on the KV gathered into a padded batch.

    A constant number of SDPA calls per batch (a per-sequence loop costs more than the attention
    itself in decode): one, or a few length buckets when padding would cost over PAD_FACTOR x.
    ``fused_only`` (default: on CUDA) restricts SDPA to its flash and memory-efficient
    kernels, so an unsupported case fails loudly instead of silently running the math path.
    """
    c, md = C.checked(BACKEND, ALTERNATIVE, query, key_cache, value_cache, md, scale=scale, causal=causal,
                      sliding_window=sliding_window, logits_soft_cap=logits_soft_cap, sinks=sinks, k_scale=k_scale,
                      v_scale=v_scale, alibi_slopes=alibi_slopes, mm_prefix_ranges=mm_prefix_ranges,
                      return_lse=return_lse, q_scale=q_scale, supports=("a two-sided (non-causal) sliding_window",))
    query, key_cache, value_cache = c.query, c.key_cache, c.value_cache
    sliding_window, logits_soft_cap = c.window, c.cap
    missing = flash_shape_reasons(query, key_cache, value_cache, "SDPA's flash kernel")
    if sliding_window is not None:
        missing.append("SDPA's fused kernels have no sliding window (install flash-attn)")
    if logits_soft_cap:
        missing.append("SDPA's fused kernels have no logits soft-cap (install flash-attn)")
    if sinks is not None:
        missing.append("SDPA's fused kernels have no attention sinks")
    if missing:
        raise C.unavailable(BACKEND, missing, ALTERNATIVE, device=query.device.type)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    T, H, _ = query.shape
    Dv = value_cache.shape[-1]
    dev = query.device
    if fused_only is None:
        fused_only = dev.type == "cuda"
    fp8 = key_cache.dtype in C.FP8_DTYPES or value_cache.dtype in C.FP8_DTYPES
    ks, vs = (c.k_scale, c.v_scale) if fp8 else (None, None)
    B = len(c.lens)
    q_lens = [c.qsl[i + 1] - c.qsl[i] for i in range(B)]
    buckets = plan_buckets(q_lens, list(c.lens), H // key_cache.shape[2])
    covered = sum(q_lens[i] for b in buckets for i in b)
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION] if fused_only else [
        SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    # rows of sequences without keys (cross-attention on an empty context) see nothing: zeros
    out = None if covered == T else query.new_zeros(T, H, Dv)
    with sdpa_kernel(backends):
        for b in buckets:
            rows, where = _run_bucket(query, key_cache, value_cache, c, b, causal, ks, vs)
            if where is None and rows.shape[0] == T:  # every token, in order
                out = rows
            elif where is None:
                if out is None:
                    out = query.new_empty(T, H, Dv)
                out[c.qsl[b[0]]:c.qsl[b[-1] + 1]] = rows
            elif out is None and len(buckets) == 1:
                out = rows.index_select(0, where[0])  # every token, in order
            else:
                if out is None:
                    out = query.new_empty(T, H, Dv)
                out.index_copy_(0, where[1], rows.index_select(0, where[0]))
    if out is None:
        out = query.new_zeros(T, H, Dv)
    return out
