"""Build the peer-grid cases' tensors and their float64 reference (no triton import).

Shared by ``test_peer_grid.py`` (CPU, Triton's interpreter) and ``gpu_peer_grid.py`` (the same
cases at the peers' own sizes on a CUDA device, compiled Triton): one harness, one reference.
The reference is written from the peers' documented semantics (see ``test_peer_grid.py``'s
docstring) and runs on whatever device its inputs live on (float64 on a GPU is fast enough for
the peers' 8k-token prefills).
"""

from __future__ import annotations

import math
import random

import torch

import peer_grid_cases as grid
from peer_grid_cases import MlaCase, PagedCase

from attnsolve.kernels.metadata import AttentionMetadata

_FP8 = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
_CACHE_BYTES = 48 << 20  # one K or V pool at most this large (the peers' 32768 blocks are a GPU overflow test)


# ----------------------------------------------------------------------------- case tensors

def _pool(case: PagedCase, cache_bytes: int = _CACHE_BYTES) -> int:
    need = sum(-(-kv // case.block_size) for _, kv in case.seqs)
    row = case.block_size * case.num_kv_heads * max(case.head_size, case.head_size_v or 0) * 4
    pool = min(case.num_blocks, max(need + 8, cache_bytes // row))
    if case.block_tables != "randint":  # distinct blocks per sequence
        pool = max(pool, len(case.seqs) * max(-(-kv // case.block_size) for _, kv in case.seqs))
    return pool


def _block_table(case: PagedCase, pool: int, g: torch.Generator) -> torch.Tensor:
    nblk = [-(-kv // case.block_size) for _, kv in case.seqs]
    b, width = len(nblk), max(nblk)
    if case.block_tables == "randint":  # repeated blocks occur, as in the peers' tests
        return torch.randint(0, pool, (b, width), generator=g, dtype=torch.int32)
    if case.block_tables == "randperm":
        return torch.randperm(pool, generator=g)[: b * width].view(b, width).to(torch.int32)
    bt = torch.zeros(b, width, dtype=torch.int32)
    start = 0
    for i, n in enumerate(nblk):
        bt[i, :n] = torch.arange(start, start + n, dtype=torch.int32)
        start += n
    return bt


def _values(shape, kind: str, g: torch.Generator, head_size: int) -> torch.Tensor:
    if kind == "uniform_1e-3":
        return (torch.rand(shape, generator=g) * 2 - 1) * 1e-3
    x = torch.randn(shape, generator=g)
    if kind == "clamp1":
        return x.clamp(-1, 1)
    if kind == "randn_div_sqrt_d":
        return x / head_size ** 0.5
    return x


def _lay_out(k: torch.Tensor, v: torch.Tensor, layout: str):
    """The caches in the case's memory layout (always ``[nb, bs, Hkv, D]`` views)."""
    if layout == "hnd":  # head-major blocks, as vLLM's CPU cache: a permuted, strided view
        return (k.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3),
                v.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3))
    if layout == "kv_split" and k.shape == v.shape:  # FlashInfer's [nb, 2, bs, Hkv, D]
        kv = torch.stack([k, v], dim=1)
        return kv[:, 0], kv[:, 1]
    return k, v


def build(case: PagedCase, seed: int = 0, cache_bytes: int = _CACHE_BYTES):
    """(query, key_cache, value_cache, md, kwargs, dequantised float64 K and V pools)."""
    g = torch.Generator().manual_seed(seed)
    dt = getattr(torch, case.dtype)
    qlens = [q for q, _ in case.seqs]
    kvlens = [kv for _, kv in case.seqs]
    b, h, hkv, d = len(case.seqs), case.num_heads, case.num_kv_heads, case.head_size
    dv = case.head_size_v or d
    q = _values((sum(qlens), h, d), case.kv_init if case.kv_init == "uniform_1e-3" else "randn", g, d)
    if case.q_fp8_scale is not None:
        s = case.q_fp8_scale
        q = (q / s).to(torch.float8_e4m3fn).float() * s
    q = q.to(dt)
    pool = _pool(case, cache_bytes)
    bt = _block_table(case, pool, g)
    k = _values((pool, case.block_size, hkv, d), case.kv_init, g, d)
    v = _values((pool, case.block_size, hkv, dv), case.kv_init, g, d)
    live = torch.zeros(pool, case.block_size, dtype=torch.bool)
    for i, L in enumerate(kvlens):
        t = torch.arange(L)
        live[bt[i, t // case.block_size].long(), t % case.block_size] = True
    k[~live] = float("nan")  # slots no sequence uses: a read past seq_len shows up as NaN
    v[~live] = float("nan")
    if case.kv_cache_dtype != "auto":
        kc, vc = (k / case.k_scale).to(_FP8[case.kv_cache_dtype]), (v / case.v_scale).to(_FP8[case.kv_cache_dtype])
        kd, vd = kc.double() * case.k_scale, vc.double() * case.v_scale
    else:
        kc, vc = k.to(dt), v.to(dt)
        kd, vd = kc.double(), vc.double()
    kc, vc = _lay_out(kc, vc, case.layout)
    qsl = torch.tensor([0] + qlens, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    md = AttentionMetadata(qsl, torch.tensor(kvlens, dtype=torch.int32), bt)
    kw = {}
    if not case.causal:
        kw["causal"] = False
    if case.sliding_window:
        kw["sliding_window"] = case.sliding_window
    if case.soft_cap:
        kw["logits_soft_cap"] = case.soft_cap
    if case.alibi:
        kw["alibi_slopes"] = torch.tensor(grid.alibi_slopes(h), dtype=torch.float32)
    if case.sinks:
        kw["sinks"] = (15 * torch.rand(h, generator=g)).to(torch.bfloat16).float()
    if case.kv_cache_dtype != "auto":
        if case.scale_shape == "seq_head":
            kw["k_scale"] = torch.full((b, hkv), case.k_scale)
            kw["v_scale"] = torch.full((b, hkv), case.v_scale)
        else:
            kw["k_scale"], kw["v_scale"] = case.k_scale, case.v_scale
    return q, kc, vc, md, kw, (kd, vd)


# ----------------------------------------------------------------------------- the reference

def reference(case: PagedCase, q, md, kw, kd, vd) -> torch.Tensor:
    """Float64 attention from the peers' documented semantics (rows in chunks: bounded memory)."""
    h, hkv, d = case.num_heads, case.num_kv_heads, case.head_size
    group = h // hkv
    scale = d ** -0.5
    dev = kd.device  # the reference runs where the float64 pools live (cpu, or cuda for gpu_peer_grid.py)
    qsl, sl, bt = md.query_start_loc.tolist(), md.seq_lens.tolist(), md.block_table.long().to(dev)
    slopes = kw.get("alibi_slopes")
    slopes = None if slopes is None else slopes.double().to(dev).view(h, 1, 1)
    sinks = kw.get("sinks")
    sinks = None if sinks is None else sinks.to(dev)
    out = torch.zeros(q.shape[0], h, vd.shape[-1], dtype=torch.float64, device=dev)
    w, cap = case.sliding_window, case.soft_cap
    for i, L in enumerate(sl):
        q0, q1 = qsl[i], qsl[i + 1]
        n = q1 - q0
        t = torch.arange(L, device=dev)
        blocks = bt[i, t // case.block_size]
        k = kd[blocks, t % case.block_size].repeat_interleave(group, dim=1)  # [L, H, D]
        v = vd[blocks, t % case.block_size].repeat_interleave(group, dim=1)
        for r0 in range(0, n, 256):
            r1 = min(n, r0 + 256)
            p = (torch.arange(r0, r1, device=dev) + L - n).unsqueeze(1)  # positions (n > L only without causality)
            qq = q[q0 + r0:q0 + r1].double().to(dev)
            s = torch.einsum("nhd,lhd->hnl", qq, k) * scale
            if cap:
                s = cap * torch.tanh(s / cap)
            if slopes is not None:
                s = s + slopes * (t.view(1, 1, -1) - p.view(1, -1, 1)).double()
            allowed = torch.ones(r1 - r0, L, dtype=torch.bool, device=dev)
            if case.causal:
                allowed &= t.unsqueeze(0) <= p
                if w:
                    allowed &= t.unsqueeze(0) > p - w
            elif w and n <= L:
                allowed &= (t.unsqueeze(0) - p).abs() <= w - 1
            s = s.masked_fill(~allowed.unsqueeze(0), -math.inf)
            m = s.amax(dim=-1, keepdim=True)
            if sinks is not None:
                m = torch.maximum(m, sinks.double().view(h, 1, 1))
            m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            e = torch.exp(s - m)
            den = e.sum(-1, keepdim=True)
            if sinks is not None:
                den = den + torch.exp(sinks.double().view(h, 1, 1) - m)
            pr = torch.where(den > 0, e / den.clamp_min(1e-300), e)
            out[q0 + r0:q0 + r1] = torch.einsum("hnl,lhd->nhd", pr, v)
    return out


# ----------------------------------------------------------------------------- which cases run

def features(c: PagedCase) -> set[str]:
    f = {c.source, c.dtype, c.layout, f"kv:{c.kv_cache_dtype}", f"bs:{c.block_size}"}
    for name in ("alibi", "sinks"):
        if getattr(c, name):
            f.add(name)
    if c.soft_cap:
        f.add("soft_cap")
    if c.sliding_window:
        f.add("window" if c.causal else "encoder_window")
    if not c.causal:
        f.add("encoder")
    if c.scale_shape == "seq_head":
        f.add("seq_head_scales")
    if c.q_fp8_scale is not None:
        f.add("q_fp8")
    if c.head_size_v:
        f.add("head_size_v")
    if any(q > 1 for q, _ in c.seqs) and any(q == 1 for q, _ in c.seqs):
        f.add("mixed")
    return f


def cost(c: PagedCase) -> float:
    return sum(q * kv for q, kv in c.seqs) * c.num_heads * c.head_size


def sample(cases: list[PagedCase], per_source: int = 1) -> list[PagedCase]:
    """A deterministic sample: ``per_source`` cases of every source test, then one case for
    every feature not yet covered (window, encoder window, ALiBi, sinks, soft-cap, fp8
    e4m3/e5m2, per-(seq, head) scales, fp8 query, layouts, dtypes, block sizes, dv != d)."""
    chosen: list[PagedCase] = []
    order = {}
    for c in cases:
        order.setdefault(c.source, []).append(c)
    for src, lst in order.items():
        rng = random.Random(src)
        lst = lst[:]
        rng.shuffle(lst)
        order[src] = lst
        chosen += lst[:per_source]
    covered = set().union(*(features(c) for c in chosen))
    everything = [c for lst in order.values() for c in lst]
    for c in everything:
        new = features(c) - covered
        if new:
            chosen.append(c)
            covered |= features(c)
    return chosen


def page_size_1(k, v, md):
    """The same cache memory seen as pages of one token: ``(k1, v1, md1)`` (a strided layout is copied)."""
    bs = k.shape[1]
    k1 = k.reshape(k.shape[0] * bs, 1, *k.shape[2:])
    v1 = v.reshape(v.shape[0] * bs, 1, *v.shape[2:])
    bt = md.block_table.long()
    bt1 = (bt.unsqueeze(-1) * bs + torch.arange(bs, device=bt.device)).reshape(bt.shape[0], -1).to(torch.int32)
    return k1, v1, AttentionMetadata(md.query_start_loc, md.seq_lens, bt1)


def check(case, out, ref, q):
    assert out.shape == ref.shape and out.dtype == q.dtype, (out.shape, out.dtype)
    assert not out.isnan().any(), "Likely read out of bounds (NaN written past seq_len reached the output)"
    torch.testing.assert_close(out.float(), ref.to(q.dtype).float(), atol=case.atol, rtol=case.rtol)


def mla_build(case: MlaCase, seed: int = 0):
    """The peer's set-up: sequential block table padded to a multiple of 256 tokens, NaN past seq_len."""
    g = torch.Generator().manual_seed(seed)
    dt = getattr(torch, case.dtype)
    b = len(case.seq_lens)
    pad = -(-max(case.seq_lens) // 256) * 256
    per = pad // case.block_size
    bt = torch.arange(b * per, dtype=torch.int32).view(b, per)
    kv = torch.randn(b * per, case.block_size, case.head_size, generator=g)
    for i, L in enumerate(case.seq_lens):
        kv.view(b, pad, case.head_size)[i, L:] = float("nan")
    q = torch.randn(b, case.num_heads, case.head_size, generator=g).to(dt)
    md = AttentionMetadata(torch.arange(b + 1, dtype=torch.int32), torch.tensor(case.seq_lens, dtype=torch.int32), bt)
    return q, kv.to(dt), md


def mla_reference(case: MlaCase, q, kv, md) -> torch.Tensor:
    """softmax(scale · q · k) @ kv[:, :dv] over the first seq_len tokens, float64."""
    dev = kv.device
    out = torch.zeros(q.shape[0], case.num_heads, case.kv_lora_rank, dtype=torch.float64, device=dev)
    flat = kv.reshape(-1, case.head_size)
    bt = md.block_table.to(dev)
    for i, L in enumerate(md.seq_lens.tolist()):
        t = torch.arange(L, device=dev)
        rows = flat[bt[i, t // case.block_size].long() * case.block_size + t % case.block_size].double()
        s = q[i].double() @ rows.T * case.head_size ** -0.5
        out[i] = torch.softmax(s, dim=-1) @ rows[:, : case.kv_lora_rank]
    return out

