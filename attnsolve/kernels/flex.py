"""FLEX_ATTENTION: paged attention with ``torch.nn.attention.flex_attention``, as vLLM's FlexAttention backend does it.

The KV cache is used in place as one long "physical" sequence
(``[1, num_kv_heads, num_blocks * block_size, head_size]``, a strided view, no copy); a
``mask_mod`` maps each physical slot back to its logical position through a
physical-to-logical block table per sequence (the paged lookup) and applies the causal and
sliding-window masks; a ``score_mod`` applies the soft-cap (and an fp8 ``k_scale``).  Sinks
use the log-sum-exp flex returns: ``out * sigmoid(lse - sink)``.

On CPU in torch 2.13 flex runs in two ways: eagerly (a reference implementation that
materialises the ``[heads, num_tokens, num_blocks * block_size]`` score matrix; correct, used
by default), or through ``torch.compile`` (inductor's C++ flex template, about 6 s to compile
per new shape here), enabled with ``ATTNSOLVE_FLEX_COMPILE=1``; that template cannot return the
log-sum-exp, so calls with sinks stay eager on CPU.  CPU_ATTN is what vLLM runs
on CPU; this kernel is reached there through ``kernel_for("FLEX_ATTENTION")``.

An fp8 cache has no flex path: it is dequantised to the query dtype first (a full copy of
the cache, the one place attnsolve does that; vLLM's FlexAttention has no fp8 KV either).
"""

from __future__ import annotations

import os
import warnings

import torch

from attnsolve.kernels.metadata import AttentionMetadata
from attnsolve.kernels.registry import register_kernel

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


def _scalar(x) -> float:
    if x is None:
        return 1.0
    return float(x.reshape(()).item()) if isinstance(x, torch.Tensor) else float(x)


@register_kernel("FLEX_ATTENTION", devices=("cpu", "cuda", "rocm"), check=_check)
def flex_paged_attention(
    query, key_cache, value_cache, md: AttentionMetadata, *, scale=None, causal=True, sliding_window=None,
    logits_soft_cap=None, sinks=None, k_scale=None, v_scale=None,
) -> torch.Tensor:
    """Paged attention through flex_attention; same contract as CPU_ATTN (``docs/kernels.md``)."""
    from torch.nn.attention.flex_attention import AuxRequest, create_block_mask

    T, H, D = query.shape
    nb, bs, hkv, _ = key_cache.shape
    dv = value_cache.shape[3]
    if H % hkv:
        raise ValueError(f"Expected num_heads divisible by num_kv_heads, but got {H} and {hkv}.")
    md.validate(T)
    dev = query.device
    sc = D ** -0.5 if scale is None else float(scale)
    ks, vs = _scalar(k_scale), _scalar(v_scale)
    kc, vc = key_cache, value_cache
    if kc.dtype != query.dtype:  # fp8 / bf16 cache with another query dtype: dequantise
        kc, vc = kc.to(query.dtype), vc.to(query.dtype)
    k = kc.view(nb * bs, hkv, D).permute(1, 0, 2).unsqueeze(0)  # [1, Hkv, nb*bs, D], no copy
    v = vc.view(nb * bs, hkv, dv).permute(1, 0, 2).unsqueeze(0)
    q = query.transpose(0, 1).unsqueeze(0)  # [1, H, T, D]

    qsl, lens = md.host_lists()
    B = len(lens)
    doc = torch.repeat_interleave(torch.arange(B, device=dev), torch.tensor([qsl[i + 1] - qsl[i] for i in range(B)],
                                                                             device=dev), output_size=T)
    qpos = torch.cat([torch.arange(lens[i] - (qsl[i + 1] - qsl[i]), lens[i], device=dev) for i in range(B)]
                     or [torch.zeros(0, dtype=torch.long, device=dev)])
    # physical -> logical block per sequence (-1: not this sequence's block)
    p2l = torch.full((B, nb), -1, dtype=torch.long, device=dev)
    for i in range(B):
        nblk = -(-lens[i] // bs)
        if nblk:
            p2l[i, md.block_table[i, :nblk].long().to(dev)] = torch.arange(nblk, device=dev)
    seq_lens = md.seq_lens.long().to(dev)
    w = int(sliding_window) if sliding_window else None

    def mask_mod(b, h, q_idx, kv_idx):
        s = doc[q_idx]
        lb = p2l[s, kv_idx // bs]
        kpos = lb * bs + kv_idx % bs
        ok = (lb >= 0) & (kpos < seq_lens[s])
        if causal:
            ok = ok & (kpos <= qpos[q_idx])
        if w is not None:
            ok = ok & (kpos > qpos[q_idx] - w)
        return ok

    cap = float(logits_soft_cap) if logits_soft_cap else None
    score_mod = None
    if cap is not None or ks != 1.0:
        def score_mod(score, b, h, q_idx, kv_idx):
            if ks != 1.0:
                score = score * ks
            if cap is not None:
                score = cap * torch.tanh(score / cap)
            return score

    block_mask = create_block_mask(mask_mod, None, None, T, nb * bs, device=dev)
    need_lse = sinks is not None
    kw = dict(score_mod=score_mod, block_mask=block_mask, scale=sc, enable_gqa=(hkv != H))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*without torch.compile.*")
        if need_lse:
            o, aux = _flex(True, dev)(q, k, v, return_aux=AuxRequest(lse=True), **kw)
        else:
            o = _flex(False, dev)(q, k, v, **kw)
    o = o.float() if (sinks is not None or vs != 1.0) else o
    if sinks is not None:
        o = o * torch.sigmoid(aux.lse - sinks.detach().to(torch.float32).view(1, H, 1)).unsqueeze(-1)
    if vs != 1.0:
        o = o * vs
    return o[0].transpose(0, 1).to(query.dtype).contiguous()
