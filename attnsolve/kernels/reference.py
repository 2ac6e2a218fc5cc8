"""Plain reference implementations every kernel is tested against.

Float64, explicit softmax, one sequence at a time, no cleverness.  Semantics (see
``docs/kernels.md`` for the layout):

* ``scale`` defaults to ``head_size ** -0.5``.
* ``causal``: a query at position ``p`` sees keys at positions ``<= p``.
* ``sliding_window``: ``0``/``None`` none; ``w`` causal: keys ``> p - w`` (``w`` keys incl. itself),
  non-causal: ``|t - p| < w``; ``(left, right)``: ``p - left <= t <= p + right`` (``-1``: unbounded).
* ``alibi_slopes [H]``: ``slope * (t - p)`` added after the soft-cap.
* ``mm_prefix_ranges``: per sequence, half-open ranges whose rows see the whole range.
* ``logits_soft_cap=c``: scores become ``c * tanh(score / c)`` before the softmax.
* ``sinks [num_heads]``: a per-head logit that joins the softmax denominator only.
* ``k_scale`` / ``v_scale``: dequantisation scales (float, 0-d tensor or ``[num_seqs, num_kv_heads]``):
  the real key is ``key_cache.float() * k_scale``.
* Query head ``h`` uses KV head ``h // (num_heads // num_kv_heads)``.
* A query row that sees no key at all gets zeros (and ``lse = -inf`` without a sink).
* ``causal=False`` accepts more rows than keys (cross-attention): every row sees all keys.
"""

from __future__ import annotations

import math

import torch

from attnsolve.kernels.metadata import AttentionMetadata

__all__ = ["paged_attention_reference", "mla_decode_reference", "gather_sequence"]


def _scale_value(s) -> float:
    if s is None:
        return 1.0
    if isinstance(s, torch.Tensor):
        return float(s.reshape(()).item())
    return float(s)


def gather_sequence(cache: torch.Tensor, block_table_row: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Tokens ``0..seq_len-1`` of one sequence from a paged cache: ``[seq_len, *cache.shape[2:]]``."""
    bs = cache.shape[1]
    nblk = -(-seq_len // bs)
    blocks = block_table_row[:nblk].long()
    return cache[blocks].reshape(nblk * bs, *cache.shape[2:])[:seq_len]


def _mask(n: int, seq_len: int, causal: bool, sliding_window, mm_ranges=()) -> torch.Tensor:
    """``[n, seq_len]`` visibility of rows at positions ``seq_len - n + j``: ``(causal and window) or mm``.

    ``sliding_window``: ``None``, an int (as ``paged_attention``) or a normalised ``(left, right)`` pair.
    """
    from attnsolve.kernels.validate import check_window

    pos_q = torch.arange(seq_len - n, seq_len).unsqueeze(1)
    pos_k = torch.arange(seq_len).unsqueeze(0)
    mask = torch.ones(n, seq_len, dtype=torch.bool)
    if causal:
        mask &= pos_k <= pos_q
    window = sliding_window if isinstance(sliding_window, tuple) else check_window(sliding_window, causal)
    if window is not None:
        left, right = window
        mask &= (pos_k >= pos_q - left) & (pos_k <= pos_q + right)
    for a, b in mm_ranges:
        mask |= (pos_q >= a) & (pos_q < b) & (pos_k >= a) & (pos_k < b)
    return mask


def _softmax_rows(s: torch.Tensor, sink: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last dim of float64 ``s`` (``-inf`` = masked); ``sink`` [H] joins the denominator."""
    m = s.amax(dim=-1, keepdim=True)
    if sink is not None:
        m = torch.maximum(m, sink.view(-1, *([1] * (s.dim() - 1))))
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    denom = p.sum(dim=-1, keepdim=True)
    if sink is not None:
        denom = denom + torch.exp(sink.view(-1, *([1] * (s.dim() - 1))) - m)
    return torch.where(denom > 0, p / torch.where(denom > 0, denom, torch.ones_like(denom)), p)


def paged_attention_reference(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    md: AttentionMetadata,
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
):
    """Paged attention in float64, one sequence at a time; returns ``query.dtype`` (bfloat16 for an
    fp8 query, whose ``q_scale`` multiplies the scores) and the float32 log-sum-exp
    ``[num_tokens, num_heads]`` with ``return_lse=True``."""
    from attnsolve.kernels.validate import FLOAT_DTYPES, FP8_DTYPES, check_paged

    c = check_paged(
        query, key_cache, value_cache, md, scale=scale, causal=causal, sliding_window=sliding_window,
        logits_soft_cap=logits_soft_cap, sinks=sinks, k_scale=k_scale, v_scale=v_scale, alibi_slopes=alibi_slopes,
        mm_prefix_ranges=mm_prefix_ranges, return_lse=return_lse, q_scale=q_scale,
        query_dtypes=FLOAT_DTYPES + (torch.float64,),
        cache_dtypes=FLOAT_DTYPES + FP8_DTYPES + (torch.float64,),
    )
    T, H, D = query.shape
    Hkv = key_cache.shape[2]
    Dv = value_cache.shape[3]
    group = H // Hkv
    sink = None if c.sinks is None else c.sinks.cpu().to(torch.float64)
    alibi = None if c.alibi is None else c.alibi.cpu().to(torch.float64)
    out = torch.zeros(T, H, Dv, dtype=torch.float64)
    lse = torch.full((T, H), -math.inf, dtype=torch.float64)
    qsl, sl = c.qsl, c.lens
    bt = c.block_table.cpu()
    kc, vc, qc = key_cache.cpu(), value_cache.cpu(), c.query.cpu()

    def scale_of(x, i):
        if isinstance(x, torch.Tensor):
            return x[i].cpu().to(torch.float64).view(1, Hkv, 1)
        return x

    for i in range(len(sl)):
        q0, q1, L = qsl[i], qsl[i + 1], sl[i]
        n = q1 - q0
        if n == 0:
            continue
        if L == 0:  # rows without keys (non-causal, empty context): zeros; the sink alone in the lse
            if sink is not None:
                lse[q0:q1] = sink.view(1, H)
            continue
        k = gather_sequence(kc, bt[i], L).to(torch.float64) * scale_of(c.k_scale, i)  # [L, Hkv, D]
        v = gather_sequence(vc, bt[i], L).to(torch.float64) * scale_of(c.v_scale, i)
        k = k.repeat_interleave(group, dim=1)  # [L, H, D]
        v = v.repeat_interleave(group, dim=1)
        q = qc[q0:q1].to(torch.float64)  # [n, H, D]
        s = torch.einsum("nhd,lhd->hnl", q, k) * c.scale
        if c.cap is not None:
            s = c.cap * torch.tanh(s / c.cap)
        if alibi is not None:
            rel = torch.arange(L).view(1, L) - torch.arange(L - n, L).view(n, 1)  # t - p
            s = s + alibi.view(H, 1, 1) * rel.to(torch.float64)
        s = s.masked_fill(~_mask(n, L, c.causal, c.window, c.mm[i] if c.mm else ()), -math.inf)
        p = _softmax_rows(s, sink)
        out[q0:q1] = torch.einsum("hnl,lhd->nhd", p, v)
        terms = s if sink is None else torch.cat([s, sink.view(H, 1, 1).expand(H, n, 1)], dim=-1)
        lse[q0:q1] = torch.logsumexp(terms, dim=-1).transpose(0, 1)
    out = out.to(c.query.dtype).to(query.device)
    if c.return_lse:
        return out, lse.to(torch.float32).to(query.device)
    return out


def mla_decode_reference(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    md: AttentionMetadata,
    *,
    kv_lora_rank: int = 512,
    scale=None,
    topk_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """MLA attention over a latent cache (absorbed query), float64; returns ``query.dtype``.

    * ``query [num_tokens, num_heads, kv_lora_rank + rope_dim]``: latent part, then rope part.
    * ``kv_cache [num_blocks, block_size, kv_lora_rank + rope_dim]`` (a ``[.., 1, ..]`` head
      dim is accepted and squeezed): one latent "KV head" shared by all query heads.
    * scores ``= scale * q . k`` over all ``kv_lora_rank + rope_dim`` dims; ``scale`` defaults
      to ``query.shape[-1] ** -0.5`` (real models pass their own, e.g. DeepSeek's
      ``(qk_nope + qk_rope) ** -0.5`` times mscale).
    * output ``= softmax(scores) @ kv[..., :kv_lora_rank]`` -> ``[num_tokens, num_heads, kv_lora_rank]``.
    * Dense: causal within the sequence as in ``paged_attention_reference``.
    * Sparse (``topk_indices [num_tokens, topk]`` int32): each query attends exactly to the
      listed token positions of its sequence (``-1`` = padding, skipped; a repeated index
      counts repeatedly); no other mask.
    """
    if kv_cache.dim() == 4:
        kv_cache = kv_cache.squeeze(2)
    T, H, Dq = query.shape
    if kv_cache.shape[-1] != Dq:
        raise ValueError(f"Expected kv_cache last dim {Dq} (like the query), but got {kv_cache.shape[-1]}.")
    sc = Dq ** -0.5 if scale is None else float(scale)
    qsl = md.query_start_loc.tolist()
    sl = md.seq_lens.tolist()
    out = torch.zeros(T, H, kv_lora_rank, dtype=torch.float64)
    for i in range(len(sl)):
        q0, q1, L = qsl[i], qsl[i + 1], sl[i]
        n = q1 - q0
        if n == 0:
            continue
        kv = gather_sequence(kv_cache, md.block_table[i], L).to(torch.float64)  # [L, Dq]
        q = query[q0:q1].to(torch.float64)  # [n, H, Dq]
        if topk_indices is None:
            s = torch.einsum("nhd,ld->hnl", q, kv) * sc
            s = s.masked_fill(~_mask(n, L, True, None), -math.inf)
            p = _softmax_rows(s, None)
            out[q0:q1] = torch.einsum("hnl,ld->nhd", p, kv[:, :kv_lora_rank])
        else:
            idx = topk_indices[q0:q1].long()  # [n, topk]
            if bool((idx >= L).any()):
                raise ValueError(f"Expected topk_indices < seq_len {L} for sequence {i}.")
            valid = idx >= 0
            sel = kv[idx.clamp(min=0)]  # [n, topk, Dq]
            s = torch.einsum("nhd,nkd->hnk", q, sel) * sc
            s = s.masked_fill(~valid.unsqueeze(0), -math.inf)
            p = _softmax_rows(s, None)
            out[q0:q1] = torch.einsum("hnk,nkd->nhd", p, sel[..., :kv_lora_rank])
    return out.to(query.dtype)
