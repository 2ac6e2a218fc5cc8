"""The peers' kernel-test grids (``peer_grid_cases.py``) against every CPU-runnable backend.

Reference: written here from the peers' documented semantics, not from any attnsolve code:
float64; causal rows aligned to the end of the sequence; window ``w`` sees ``t > p - w``
(causal) or ``|t - p| <= w - 1`` (encoder, vLLM's ``window_size = (w - 1, w - 1)``);
soft-cap on ``scale · q · k``; ALiBi ``slope[h] · (t - p)`` added after it; one sink logit per
head in the denominator; query head ``h`` reads KV head ``h // group``; fp8 dequantised by
``k_scale`` / ``v_scale`` (per tensor or per (sequence, KV head)); default scale
``head_size ** -0.5``.  Every cache slot that no sequence uses holds NaN, so a kernel that
reads past ``seq_len`` (or a masked slot without guarding it) fails with "Likely read out of
bounds", as vLLM's MLA CPU test asserts.

Backends: CPU_ATTN at the peers' sizes through ``paged_attention`` (``kernel_for("CPU_ATTN")``
where dispatch would refuse the config, e.g. block size 48 or 96); FLEX_ATTENTION (eager) and
TRITON_ATTN (``TRITON_INTERPRET=1``) at ``peer_grid_cases.small`` sizes through ``kernel_for``
(on CPU vLLM always selects CPU_ATTN, so dispatch never reaches them); the MLA grid against
CPU_MLA at the peer's sizes and TRITON_MLA (interpreter) at a quarter of the length.

How much runs: a deterministic sample (every source test, every feature) by default and in
the ``ci`` profile, about two minutes on 2 cores; ``ATTNSOLVE_PEER_GRID=<n>`` takes ``n`` cases of
every source test; the whole grid with ``HYPOTHESIS_PROFILE=nightly``, ``--runslow`` or ``ATTNSOLVE_PEER_GRID=full``.  The tolerances are the peers' (see the case fields).
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from dataclasses import replace

import pytest

from triton_import import import_interpreted  # noqa: E402

torch, _triton_attn, _ = import_interpreted("attnsolve.kernels.triton_attn")
_, _triton_mla, _ = import_interpreted("attnsolve.kernels.triton_mla")  # @triton.jit decides at import

import peer_grid_cases as grid  # noqa: E402
import sizes  # noqa: E402
from paged_cases import amx_decode_host  # noqa: E402
from peer_grid_cases import MlaCase, PagedCase, case_id  # noqa: E402

from attnsolve import ConfigError, SelectionError  # noqa: E402
from attnsolve.kernels import KernelUnavailableError, kernel_for, paged_attention  # noqa: E402
from attnsolve.kernels.dispatch import resolve  # noqa: E402
from attnsolve.kernels.metadata import AttentionMetadata  # noqa: E402

INTERPRETED = _triton_attn.is_interpreted()
FULL = os.environ.get("ATTNSOLVE_PEER_GRID") == "full" or sizes.FULL  # nightly profile or --runslow
_FP8 = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
_CACHE_BYTES = 48 << 20  # one K or V pool at most this large (the peers' 32768 blocks are a GPU overflow test)


# ----------------------------------------------------------------------------- case tensors

def _pool(case: PagedCase) -> int:
    need = sum(-(-kv // case.block_size) for _, kv in case.seqs)
    row = case.block_size * case.num_kv_heads * max(case.head_size, case.head_size_v or 0) * 4
    pool = min(case.num_blocks, max(need + 8, _CACHE_BYTES // row))
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


def build(case: PagedCase, seed: int = 0):
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
    pool = _pool(case)
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
    qsl, sl, bt = md.query_start_loc.tolist(), md.seq_lens.tolist(), md.block_table.long()
    slopes = kw.get("alibi_slopes")
    slopes = None if slopes is None else slopes.double().view(h, 1, 1)
    sinks = kw.get("sinks")
    out = torch.zeros(q.shape[0], h, vd.shape[-1], dtype=torch.float64)
    w, cap = case.sliding_window, case.soft_cap
    for i, L in enumerate(sl):
        q0, q1 = qsl[i], qsl[i + 1]
        n = q1 - q0
        t = torch.arange(L)
        blocks = bt[i, t // case.block_size]
        k = kd[blocks, t % case.block_size].repeat_interleave(group, dim=1)  # [L, H, D]
        v = vd[blocks, t % case.block_size].repeat_interleave(group, dim=1)
        for r0 in range(0, n, 256):
            r1 = min(n, r0 + 256)
            p = (torch.arange(r0, r1) + L - n).unsqueeze(1)  # positions (n > L only without causality)
            qq = q[q0 + r0:q0 + r1].double()
            s = torch.einsum("nhd,lhd->hnl", qq, k) * scale
            if cap:
                s = cap * torch.tanh(s / cap)
            if slopes is not None:
                s = s + slopes * (t.view(1, 1, -1) - p.view(1, -1, 1)).double()
            allowed = torch.ones(r1 - r0, L, dtype=torch.bool)
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

def _features(c: PagedCase) -> set[str]:
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


def _cost(c: PagedCase) -> float:
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
    covered = set().union(*(_features(c) for c in chosen))
    everything = [c for lst in order.values() for c in lst]
    for c in everything:
        new = _features(c) - covered
        if new:
            chosen.append(c)
            covered |= _features(c)
    return chosen


_ALL = grid.paged_cases()
_SMALL_ALL = [grid.small(c) for c in _ALL]
if FULL:
    CPU_CASES = _ALL
    SMALL_CASES = _SMALL_ALL
else:  # ATTNSOLVE_PEER_GRID=<n>: n cases of every source test (plus the feature cover), small sizes
    _n = os.environ.get("ATTNSOLVE_PEER_GRID", "")
    SMALL_CASES = sample(_SMALL_ALL, int(_n) if _n.isdigit() else 1)
    # CPU_ATTN at the peers' own sizes too: the cheapest case of every source test whose
    # reference stays small (decode-heavy batches; the 2k-8k-token prefills run nightly)
    by_source: dict[str, PagedCase] = {}
    for c in _ALL:
        if c.source not in by_source or _cost(c) < _cost(by_source[c.source]):
            by_source[c.source] = c
    CPU_CASES = [c for c in by_source.values() if _cost(c) <= 5e8]


def _ids(cases):
    seen: dict[str, int] = {}
    out = []
    for c in cases:
        base = case_id(c)
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return out


# ----------------------------------------------------------------------------- running

def _cpu_attn_kernel(q, kc, kw):
    """``paged_attention`` when dispatch selects CPU_ATTN for these tensors, else ``kernel_for``."""
    try:
        sel, _ = resolve(q, kc, sinks=kw.get("sinks"))
        if sel.backend == "CPU_ATTN":
            return paged_attention
    except (ConfigError, SelectionError, KernelUnavailableError, ValueError):
        pass
    return kernel_for("CPU_ATTN", "cpu")


def _check(case, out, ref, q):
    assert out.shape == ref.shape and out.dtype == q.dtype, (out.shape, out.dtype)
    assert not out.isnan().any(), "Likely read out of bounds (NaN written past seq_len reached the output)"
    torch.testing.assert_close(out.float(), ref.to(q.dtype).float(), atol=case.atol, rtol=case.rtol)


def _run(backend: str, case: PagedCase):
    q, kc, vc, md, kw, (kd, vd) = build(case)
    fn = _cpu_attn_kernel(q, kc, kw) if backend == "CPU_ATTN" else kernel_for(backend, "cpu")
    out = fn(q, kc, vc, md, **kw)
    if case.compare == "page_size_1":
        # the same memory as a cache of page size 1: out must agree (the peer's torch.allclose)
        bs = case.block_size
        k1 = kc.reshape(kc.shape[0] * bs, 1, *kc.shape[2:])
        v1 = vc.reshape(vc.shape[0] * bs, 1, *vc.shape[2:])
        bt = md.block_table.long()
        bt1 = (bt.unsqueeze(-1) * bs + torch.arange(bs)).reshape(bt.shape[0], -1).to(torch.int32)
        md1 = AttentionMetadata(md.query_start_loc, md.seq_lens, bt1)
        fn1 = _cpu_attn_kernel(q, k1, kw) if backend == "CPU_ATTN" else fn
        out1 = fn1(q, k1, v1, md1, **kw)
        assert not out1.isnan().any(), "Likely read out of bounds (page size 1)"
        # both against the reference first, with vLLM's paged-attention tolerance
        ref = reference(case, q, md, kw, kd, vd)
        _check(replace(case, atol=1.5e-2, rtol=1e-2), out, ref, q)
        _check(replace(case, atol=1.5e-2, rtol=1e-2), out1, ref, q)
        if backend == "CPU_ATTN" and amx_decode_host():
            # On a CPU with AMX tiles the bf16 scores of 16-row groups inside one block come from AMX
            # (a page of 1 has no such groups): the two agree to ~1 bf16 ulp there (docs/kernels.md).
            torch.testing.assert_close(out.float(), out1.float(), atol=2e-3, rtol=8e-3)
        else:
            # CPU_ATTN steps its online softmax over tiles at absolute multiples of 32 tokens and splits
            # rows into chunks of whole tiles, whatever the page size: the peer's equality holds (#17 item 7)
            torch.testing.assert_close(out, out1, atol=case.atol, rtol=case.rtol)
        return
    _check(case, out, reference(case, q, md, kw, kd, vd), q)


@pytest.mark.parametrize("case", CPU_CASES, ids=_ids(CPU_CASES))
def test_cpu_attn_peer_sizes(case):
    _run("CPU_ATTN", case)


@pytest.mark.parametrize("case", SMALL_CASES, ids=_ids(SMALL_CASES))
def test_cpu_attn_small(case):
    _run("CPU_ATTN", case)


@pytest.mark.parametrize("case", SMALL_CASES, ids=_ids(SMALL_CASES))
def test_flex_small(case):
    _run("FLEX_ATTENTION", case)


@pytest.fixture
def _interpret_env(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.mark.skipif(not INTERPRETED, reason="triton was imported in compile mode in this process: "
                    "these cases run in a subprocess (test_triton_cases_in_interpreter_subprocess)")
@pytest.mark.usefixtures("_interpret_env")
@pytest.mark.parametrize("case", SMALL_CASES, ids=_ids(SMALL_CASES))
def test_triton_small(case):
    _run("TRITON_ATTN", case)


# ----------------------------------------------------------------------------- MLA

MLA_CASES = grid.mla_cases()


def _mla_build(case: MlaCase, seed: int = 0):
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


def _mla_reference(case: MlaCase, q, kv, md) -> torch.Tensor:
    """softmax(scale · q · k) @ kv[:, :dv] over the first seq_len tokens, float64."""
    out = torch.zeros(q.shape[0], case.num_heads, case.kv_lora_rank, dtype=torch.float64)
    flat = kv.reshape(-1, case.head_size)
    for i, L in enumerate(md.seq_lens.tolist()):
        t = torch.arange(L)
        rows = flat[md.block_table[i, t // case.block_size].long() * case.block_size + t % case.block_size].double()
        s = q[i].double() @ rows.T * case.head_size ** -0.5
        out[i] = torch.softmax(s, dim=-1) @ rows[:, : case.kv_lora_rank]
    return out


def _mla_run(backend: str, case: MlaCase):
    q, kv, md = _mla_build(case)
    out = kernel_for(backend, "cpu")(q, kv, md, kv_lora_rank=case.kv_lora_rank, scale=case.head_size ** -0.5,
                                      topk_indices=None)
    assert not out.isnan().any(), "Likely read out of bounds"
    torch.testing.assert_close(out, _mla_reference(case, q, kv, md).to(q.dtype), atol=case.atol, rtol=case.rtol)


@pytest.mark.parametrize("case", MLA_CASES, ids=_ids(MLA_CASES))
def test_cpu_mla_peer_grid(case):
    _mla_run("CPU_MLA", case)


_MLA_SMALL = [replace(c, seq_lens=tuple(max(2, n // 4) for n in c.seq_lens)) for c in MLA_CASES]
_MLA_SMALL = _MLA_SMALL if FULL else _MLA_SMALL[1::2]  # the varlen ones in CI


@pytest.mark.skipif(not INTERPRETED, reason="triton was imported in compile mode in this process: "
                    "these cases run in a subprocess (test_triton_cases_in_interpreter_subprocess)")
@pytest.mark.usefixtures("_interpret_env")
@pytest.mark.parametrize("case", _MLA_SMALL, ids=_ids(_MLA_SMALL))
def test_triton_mla_peer_grid(case):
    _mla_run("TRITON_MLA", case)


@pytest.mark.skipif(INTERPRETED, reason="triton runs in interpreter mode in this process already")
def test_triton_cases_in_interpreter_subprocess():
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                        "-k", "test_triton_small or test_triton_mla_peer_grid"],
                       env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


# ----------------------------------------------------------------------------- the grid itself

def test_grid_is_the_peers():
    """Sizes of the ported grids (a change to the data shows up here) and the sample's coverage."""
    counts: dict[str, int] = {}
    for c in _ALL:
        counts[c.source] = counts.get(c.source, 0) + 1
    assert counts["test_cpu_attn.py::test_varlen_with_paged_kv_normal_vec"] == 3 * 3 * 3 * 3 * 2 * 2 * 3
    assert counts["test_triton_unified_attention.py::test_triton_unified_attn"] == 2 * 3 * 2 * 4 * 2 * 2 * 2
    assert counts["test_flash_attn.py::test_varlen_with_paged_kv"] == 2 * 2 * 5 * 2 * 2 * 2 * 2
    assert counts["test_triton_decode_attention.py::test_decode_attention"] == 2 * 2 * 2 * 3 * 2
    assert len(counts) == 14 and len(MLA_CASES) == 6
    got = set().union(*(_features(c) for c in sample(_SMALL_ALL)))
    assert got >= set().union(*(_features(c) for c in _SMALL_ALL))
    # repeated blocks really occur in the randint tables (a physical block twice in one row)
    unified = [c for c in _ALL if c.source.startswith("test_triton_unified")][0]
    md = build(unified)[3]
    assert any(len(set(r)) < len(r) for r in md.block_table.tolist())
