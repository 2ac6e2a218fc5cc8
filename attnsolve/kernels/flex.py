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

On CPU in torch 2.13 flex runs in two ways: eagerly (a reference implementation that
materialises the ``[heads, num_tokens, num_blocks * block_size]`` score matrix; correct, used
by default), or through ``torch.compile`` (inductor's C++ flex template, about 6 s to compile
per new shape here), enabled with ``ATTNSOLVE_FLEX_COMPILE=1``; that template cannot return the
log-sum-exp, so calls with sinks stay eager on CPU.  CPU_ATTN is what vLLM runs
on CPU; this kernel is reached there through ``kernel_for("FLEX_ATTENTION")``.

An fp8 cache has no flex path: the gather dequantises the used tokens into the query dtype
(vLLM's FlexAttention has no fp8 KV either).
"""

from __future__ import annotations

import math
import os
import warnings

import torch

from attnsolve.kernels.metadata import AttentionMetadata
from attnsolve.kernels.registry import register_kernel
from attnsolve.kernels.validate import check_paged

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


_compiled = None


def _flex(need_lse: bool, device: torch.device):
    global _compiled
    from torch.nn.attention.flex_attention import flex_attention

    # inductor's CPU flex template cannot return the log-sum-exp (torch 2.13): sinks run eagerly there
    if os.environ.get("ATTNSOLVE_FLEX_COMPILE", "0") == "1" and not (need_lse and device.type == "cpu"):
        if _compiled is None:
            _compiled = torch.compile(flex_attention, dynamic=False)
        return _compiled
    return flex_attention


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
    return_lse: bool = False,
):
    """Paged attention through flex_attention; same contract as CPU_ATTN (``docs/kernels.md``)."""
    from torch.nn.attention.flex_attention import AuxRequest, create_block_mask

    c = check_paged(
        query, key_cache, value_cache, md, scale=scale, causal=causal, sliding_window=sliding_window,
        logits_soft_cap=logits_soft_cap, sinks=sinks, k_scale=k_scale, v_scale=v_scale, alibi_slopes=alibi_slopes,
        mm_prefix_ranges=mm_prefix_ranges, return_lse=return_lse,
    )
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

    n = torch.tensor([qsl[i + 1] - qsl[i] for i in range(B)], device=dev)
    L = torch.tensor(lens, device=dev)
    doc = torch.repeat_interleave(torch.arange(B, device=dev), n, output_size=T)
    qstart = torch.tensor(qsl[:-1], device=dev)
    qpos = torch.arange(T, device=dev) - qstart[doc] + (L - n)[doc]  # rows are the last n positions
    kdoc = torch.repeat_interleave(torch.arange(B, device=dev), L, output_size=total)
    kstart = torch.cumsum(L, 0) - L
    kpos = torch.arange(total, device=dev) - kstart[kdoc]
    bt = c.block_table.to(dev).long()
    blk = bt[kdoc, kpos // bs]
    slot = kpos % bs
    k = _gather(c.key_cache, blk, slot, c.k_scale, kdoc, query.dtype).permute(1, 0, 2).unsqueeze(0)
    v = _gather(c.value_cache, blk, slot, c.v_scale, kdoc, query.dtype).permute(1, 0, 2).unsqueeze(0)
    q = query.transpose(0, 1).unsqueeze(0)  # [1, H, T, D]

    window, is_causal = c.window, c.causal
    mm = c.mm
    if mm is not None:
        width = max(len(r) for r in mm)
        rs = torch.zeros(B, width, dtype=torch.long, device=dev)
        re = torch.zeros(B, width, dtype=torch.long, device=dev)
        for i, ranges in enumerate(mm):
            for j, (a, b) in enumerate(ranges):
                rs[i, j], re[i, j] = a, b

    def mask_mod(b, h, q_idx, kv_idx):
        s = doc[q_idx]
        p = qpos[q_idx]
        t = kpos[kv_idx]
        same = s == kdoc[kv_idx]
        ok = None
        if is_causal:
            ok = t <= p
        if window is not None:
            w = (t >= p - window[0]) & (t <= p + window[1])
            ok = w if ok is None else (ok & w)
        if ok is None:
            return same
        if mm is not None:
            for j in range(width):
                a, e = rs[s, j], re[s, j]
                ok = ok | ((p >= a) & (p < e) & (t >= a) & (t < e))
        return same & ok

    cap = c.cap
    slopes = c.alibi
    score_mod = None
    if cap is not None or slopes is not None:
        def score_mod(score, b, h, q_idx, kv_idx):
            if cap is not None:
                score = cap * torch.tanh(score / cap)
            if slopes is not None:
                score = score + slopes[h] * (kpos[kv_idx] - qpos[q_idx]).to(score.dtype)
            return score

    block_mask = create_block_mask(mask_mod, None, None, T, total, device=dev)
    need_lse = c.sinks is not None or c.return_lse
    kw = dict(score_mod=score_mod, block_mask=block_mask, scale=c.scale, enable_gqa=(hkv != H))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*without torch.compile.*")
        if need_lse:
            o, aux = _flex(True, dev)(q, k, v, return_aux=AuxRequest(lse=True), **kw)
            lse = aux.lse[0].transpose(0, 1).float()  # [T, H]
        else:
            o = _flex(False, dev)(q, k, v, **kw)
    o = o[0].transpose(0, 1)  # [T, H, dv]
    if c.sinks is not None:
        sk = c.sinks.view(1, H)
        o = o.float() * torch.sigmoid(lse - sk).unsqueeze(-1)
        lse = torch.logaddexp(lse, sk.expand_as(lse))
    out = o.to(query.dtype).contiguous()
    return (out, lse.contiguous()) if c.return_lse else out
