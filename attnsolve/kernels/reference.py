"""Plain reference implementations every kernel is tested against.

Float64, explicit softmax, one sequence at a time, no cleverness.  Semantics (see
``docs/kernels.md`` for the layout):

* ``scale`` defaults to ``head_size ** -0.5``.
* ``causal``: a query at position ``p`` sees keys at positions ``<= p``.
* ``sliding_window=w``: it sees only keys at positions ``> p - w`` (``w`` keys incl. itself).
* ``logits_soft_cap=c``: scores become ``c * tanh(score / c)`` before the softmax.
* ``sinks [num_heads]``: a per-head logit that joins the softmax denominator only.
* ``k_scale`` / ``v_scale``: dequantisation scales of an fp8 cache (float or 0-d tensor):
  the real key is ``key_cache.float() * k_scale``.
* Query head ``h`` uses KV head ``h // (num_heads // num_kv_heads)``.
* A query row that sees no key at all (only possible with ``causal=False`` windows
  pointing past the context, never in vLLM's use) gets zeros.
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


def _mask(n: int, seq_len: int, causal: bool, sliding_window) -> torch.Tensor:
    pos_q = torch.arange(seq_len - n, seq_len).unsqueeze(1)
    pos_k = torch.arange(seq_len).unsqueeze(0)
    mask = torch.ones(n, seq_len, dtype=torch.bool)
    if causal:
        mask &= pos_k <= pos_q
    if sliding_window is not None:
        mask &= pos_k > pos_q - int(sliding_window)
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
) -> torch.Tensor:
    """Paged attention in float64, one sequence at a time; returns ``query.dtype``."""
    T, H, D = query.shape
    Hkv = key_cache.shape[2]
    Dv = value_cache.shape[3]
    if H % Hkv:
        raise ValueError(f"Expected num_heads divisible by num_kv_heads, but got {H} and {Hkv}.")
    group = H // Hkv
    sc = D ** -0.5 if scale is None else float(scale)
    ks, vs = _scale_value(k_scale), _scale_value(v_scale)
    cap = None if not logits_soft_cap else float(logits_soft_cap)
    sink = None if sinks is None else sinks.to(torch.float64)
    qsl = md.query_start_loc.tolist()
    sl = md.seq_lens.tolist()
    out = torch.zeros(T, H, Dv, dtype=torch.float64)
    for i in range(len(sl)):
        q0, q1, L = qsl[i], qsl[i + 1], sl[i]
        n = q1 - q0
        if n == 0:
            continue
        if n > L:
            raise ValueError(f"Expected query rows <= seq_len for sequence {i}, but got {n} > {L}.")
        k = gather_sequence(key_cache, md.block_table[i], L).to(torch.float64) * ks  # [L, Hkv, D]
        v = gather_sequence(value_cache, md.block_table[i], L).to(torch.float64) * vs
        k = k.repeat_interleave(group, dim=1)  # [L, H, D]
        v = v.repeat_interleave(group, dim=1)
        q = query[q0:q1].to(torch.float64)  # [n, H, D]
        s = torch.einsum("nhd,lhd->hnl", q, k) * sc
        if cap is not None:
            s = cap * torch.tanh(s / cap)
        s = s.masked_fill(~_mask(n, L, causal, sliding_window), -math.inf)
        p = _softmax_rows(s, sink)
        out[q0:q1] = torch.einsum("hnl,lhd->nhd", p, v)
    return out.to(query.dtype)


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
