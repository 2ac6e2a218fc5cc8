"""CPU_ATTN's AMX prefill (``csrc/cpu_prefill.cpp``): bf16 query rows against the paged bf16 or fp8 K/V read in
place (float32 or fp16 throughout: every value as three or two bf16 parts), causal work only up to each row's diagonal.  Checked against the float64 reference and the torch
flash path, for every block size (block sizes that are not a multiple of 16 are gathered first: the result
must not change with the block size), with sinks, context (chunked prefill), non-causal rows, NaN in the
unused slots, and bad block tables."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings, strategies as st  # noqa: E402

from attnsolve.kernels import _cpu_prefill_ext, cpu as cpu_mod  # noqa: E402
from attnsolve.kernels.cpu import cpu_attn, cpu_attn_impl  # noqa: E402
from attnsolve.kernels.metadata import AttentionMetadata  # noqa: E402
from attnsolve.kernels.reference import paged_attention_reference  # noqa: E402
from paged_cases import amx_decode_host, close, close_result, make_batch  # noqa: E402


def _amx_prefill_runs() -> bool:
    """Whether the kernel runs here (built, and the CPU grants AMX): one tiny call."""
    q, kc, vc, md = make_batch([32], [32], 2, 1, 32, 16, dtype=torch.bfloat16)
    return cpu_mod._prefill_amx(q, kc, vc, md.block_table[0], 32, scale=0.2, causal=True, sinks=None,
                                gfn=None) is not None


RUNS = _cpu_prefill_ext.load() is not None and _amx_prefill_runs()
needs_amx_prefill = pytest.mark.skipif(not RUNS, reason="no AMX prefill here (no amx_bf16, or the build or "
                                                        f"switch says no: {_cpu_prefill_ext.reason()})")
pytestmark = pytest.mark.usefixtures("one_thread")
_N = max(10, settings().max_examples // 3)


@pytest.fixture
def taken(monkeypatch):
    """The (n, L) of every prefill the AMX kernel answered."""
    seen = []
    real = cpu_mod._prefill_amx

    def spy(q, *a, **k):
        got = real(q, *a, **k)
        if got is not None:
            seen.append((q.shape[0], a[3]))
        return got

    monkeypatch.setattr(cpu_mod, "_prefill_amx", spy)
    return seen


def _torch_path(monkeypatch, *args, **opts):
    with monkeypatch.context() as m:
        m.setattr(cpu_mod, "_prefill_amx", lambda *a, **k: None)
        return cpu_attn(*args, **opts)


@st.composite
def prefills(draw):
    """A batch of prefills (some with context, some decode rows beside them), a bf16 query over a bf16 or fp8
    cache (with scales) or float32 or fp16 throughout, any head size the kernel tiles, GQA 1 to 8, any block size, sinks, soft-caps, ALiBi,
    the log-sum-exp, causal (with or without a sliding window) or not."""
    b = draw(st.integers(1, 3))
    q_lens, seq_lens = [], []
    for _ in range(b):
        n = draw(st.sampled_from([1, 2, 4, 17, 33, draw(st.integers(3, 16)), draw(st.integers(17, 150))]))
        ctx = draw(st.sampled_from([0, 0, draw(st.integers(1, 90))]))
        q_lens.append(n)
        seq_lens.append(n + ctx)
    hkv = draw(st.sampled_from([1, 2, 4]))
    group = draw(st.sampled_from([1, 2, 3, 4, 8]))
    head = draw(st.sampled_from([32, 64, 96, 128, 256]))
    bs = draw(st.sampled_from([1, 8, 16, 32, 48, 64]))
    opts = {}
    if draw(st.booleans()):
        opts["sinks"] = torch.randn(hkv * group, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    if draw(st.integers(0, 3)) == 0:
        opts["causal"] = False
    elif draw(st.integers(0, 2)) == 0:
        opts["sliding_window"] = draw(st.sampled_from([1, 5, 16, 40, 130, draw(st.integers(1, 300))]))
    if draw(st.booleans()):
        opts["scale"] = draw(st.sampled_from([0.05, 0.3]))
    if draw(st.integers(0, 3)) == 0:
        opts["logits_soft_cap"] = draw(st.sampled_from([0.5, 5.0, 30.0]))
    if draw(st.integers(0, 3)) == 0:
        opts["alibi_slopes"] = torch.rand(hkv * group, generator=torch.Generator().manual_seed(3)) * 0.5
    if draw(st.integers(0, 3)) == 0:
        opts["return_lse"] = True
    dtype = draw(st.sampled_from([torch.bfloat16, torch.bfloat16, torch.float32, torch.float16]))
    cache = draw(st.sampled_from([None, None, torch.float8_e4m3fn, torch.float8_e5m2])) if dtype == torch.bfloat16 \
        else None
    if cache is not None:
        opts["k_scale"] = draw(st.sampled_from([0.5, 1.0, 2.0]))
        opts["v_scale"] = draw(st.sampled_from([0.25, 1.0, 3.0]))
    batch = make_batch(q_lens, seq_lens, hkv * group, hkv, head, bs, dtype=dtype, cache_dtype=cache,
                       seed=draw(st.integers(0, 2**16)))
    return batch, opts


@needs_amx_prefill
@settings(max_examples=_N, deadline=None)
@given(case=prefills())
def test_matches_reference_and_torch_path(case):
    (q, kc, vc, md), opts = case
    seen = []
    real = cpu_mod._prefill_amx

    def spy(q_, *a, **k):
        got = real(q_, *a, **k)
        seen.append(q_.shape[0] if got is not None else None)
        return got

    with pytest.MonkeyPatch.context() as m:
        m.setattr(cpu_mod, "_prefill_amx", spy)
        out = cpu_attn(q, kc, vc, md, **opts)
    close_result(out, paged_attention_reference(q, kc, vc, md, **opts), q.dtype)
    with pytest.MonkeyPatch.context() as m:
        close_result(out, _torch_path(m, q, kc, vc, md, **opts), q.dtype)
    qsl = md.query_start_loc.tolist()
    group = q.shape[1] // kc.shape[2]
    runs = [b - a for a, b in zip(qsl, qsl[1:])]
    if "alibi_slopes" in opts or "return_lse" in opts:  # the general path: every sequence, one at a time
        assert sorted(seen) == sorted(runs)
    else:
        assert sorted(seen) == sorted(n for n in runs if n > 16 or cpu_mod._amx_rows(n, group, q.dtype))


@needs_amx_prefill
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
@pytest.mark.parametrize("n,ctx,window", [(17, 0, None), (100, 0, None), (300, 0, None), (64, 200, None),
                                          (300, 100, 70), (40, 300, 200)])
def test_same_result_for_every_block_size(n, ctx, window, dtype, taken):
    """Tiles sit at absolute multiples of 16 tokens: the same cache content in blocks of 1 .. 128 (read in
    place, or gathered first) gives the same output bit for bit."""
    L = n + ctx
    g = torch.Generator().manual_seed(n)
    q = torch.randn(n, 8, 64, generator=g).to(dtype)
    k = torch.randn(L, 2, 64, generator=g).to(dtype)
    v = torch.randn(L, 2, 64, generator=g).to(dtype)
    outs = []
    for bs in (1, 8, 16, 32, 48, 128):
        nb = -(-L // bs)
        perm = torch.randperm(nb + 2, generator=g)[:nb]
        kc = torch.full((nb + 2, bs, 2, 64), float("nan")).to(dtype)
        vc = torch.full((nb + 2, bs, 2, 64), float("nan")).to(dtype)
        for j in range(nb):
            kc[perm[j], : min(bs, L - j * bs)] = k[j * bs:(j + 1) * bs]
            vc[perm[j], : min(bs, L - j * bs)] = v[j * bs:(j + 1) * bs]
        md = AttentionMetadata(torch.tensor([0, n], dtype=torch.int32), torch.tensor([L], dtype=torch.int32),
                               perm.view(1, nb).to(torch.int32))
        outs.append(cpu_attn(q, kc, vc, md, sinks=torch.zeros(8), sliding_window=window))
    assert len(taken) == 6
    for o in outs[1:]:
        assert torch.equal(o, outs[0])
    assert not outs[0].isnan().any()


@needs_amx_prefill
@pytest.mark.parametrize("head,scale,ctx", [(128, None, 0), (64, 0.3, 40), (256, None, 0), (32, 1.0, 100)])
def test_float32_keeps_float32_accuracy(head, scale, ctx, taken, monkeypatch):
    """float32 runs as three bf16 parts per value and six part products per product (the three below 2^-24 of
    it dropped) and a float32-accurate exponential: its error against the float64 reference is no worse than
    torch's own float32 paths' (measured 0.5-0.85x of theirs), far below a two-part split's (about 2^-16 per
    product), a bf16 product's or the bf16 kernel's exponential's (5-6e-6 here); the log-sum-exp too."""
    q, kc, vc, md = make_batch([300], [300 + ctx], 8, 2, head, 16, dtype=torch.float32, seed=head)
    ref, ref_lse = paged_attention_reference(q.double(), kc.double(), vc.double(), md, scale=scale, return_lse=True)
    out, lse = cpu_attn(q, kc, vc, md, scale=scale, return_lse=True)
    assert out.dtype == torch.float32 and len(taken) == 1
    t_out, t_lse = _torch_path(monkeypatch, q, kc, vc, md, scale=scale, return_lse=True)
    err = lambda a, b: (a.double() - b).abs().max().item()  # noqa: E731
    assert err(out, ref) <= 1.25 * err(t_out, ref) + 5e-7, (err(out, ref), err(t_out, ref))
    assert err(lse, ref_lse) <= 1.25 * err(t_lse, ref_lse) + 5e-7, (err(lse, ref_lse), err(t_lse, ref_lse))
    assert not torch.equal(out, cpu_attn(q.bfloat16(), kc.bfloat16(), vc.bfloat16(), md, scale=scale).float())


@needs_amx_prefill
@pytest.mark.parametrize("head,ctx", [(128, 0), (64, 40), (256, 0)])
def test_fp16_within_torch_fp16_accuracy(head, ctx, taken, monkeypatch):
    """fp16 runs as two bf16 parts per value (exact: 11 bits) and three part products (the fourth, below 1/32 of
    an fp16 ulp, dropped), the probabilities in two parts: its error against the float64 reference stays within
    torch's fp16 path's (it rounds the probabilities to fp16), and well below a bf16 computation's."""
    q, kc, vc, md = make_batch([300], [300 + ctx], 8, 2, head, 16, dtype=torch.float16, seed=head)
    ref = paged_attention_reference(q.double(), kc.double(), vc.double(), md)
    out = cpu_attn(q, kc, vc, md)
    assert out.dtype == torch.float16 and len(taken) == 1
    err = lambda a: (a.double() - ref).abs().max().item()  # noqa: E731
    as_bf16 = cpu_attn(q.bfloat16(), kc.bfloat16(), vc.bfloat16(), md)
    assert err(out) <= 1.25 * err(_torch_path(monkeypatch, q, kc, vc, md)) + 1e-4, err(out)
    assert err(out) * 4 < err(as_bf16), (err(out), err(as_bf16))


@needs_amx_prefill
@pytest.mark.parametrize("cache,code", [(torch.float8_e4m3fn, 3), (torch.float8_e5m2, 4)])
def test_fp8_widening_is_exact_for_every_code(cache, code):
    """The kernel's fp8 -> bf16 widening, value by value against torch's, for all 256 codes (NaN stays NaN)."""
    fn = _cpu_prefill_ext.fp8_widen()
    src = torch.arange(256, dtype=torch.uint8)
    dst = torch.empty(256, dtype=torch.bfloat16)
    assert fn(code, src.data_ptr(), dst.data_ptr(), 256) == 0
    want = src.view(cache).to(torch.bfloat16)
    assert torch.equal(dst.isnan(), want.isnan())
    assert torch.equal(dst.nan_to_num().view(torch.int16), want.nan_to_num().view(torch.int16))  # -0.0 too


@needs_amx_prefill
@pytest.mark.parametrize("cache", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_every_fp8_value_converts_exactly(cache, taken):
    """K and V hold every fp8 value (subnormals, both zeros, the largest; NaN too): the kernel widens them to
    bf16 exactly, so its answer equals, bit for bit, its answer for the same cache stored as bf16 (the same
    scales), in place and gathered (block size 8)."""
    codes = torch.arange(256, dtype=torch.uint8)
    g = torch.Generator().manual_seed(7)
    L, D = 256, 64
    perms = torch.stack([codes[torch.randperm(256, generator=g)] for _ in range(2 * D)])  # [2 D, 256 tokens]
    pick = perms.view(2, D, L).permute(0, 2, 1).unsqueeze(2).contiguous()  # [2, L, 1, D]: every code in every dim
    q = torch.randn(40, 4, D, generator=g).bfloat16()
    for bs in (16, 8):
        kc = pick[0].view(cache).view(L // bs, bs, 1, D)
        vc = pick[1].view(cache).view(L // bs, bs, 1, D)
        md = AttentionMetadata(torch.tensor([0, 40], dtype=torch.int32), torch.tensor([L], dtype=torch.int32),
                               torch.arange(L // bs, dtype=torch.int32).view(1, -1))
        out = cpu_attn(q, kc, vc, md, k_scale=0.5, v_scale=2.0)
        wide = cpu_attn(q, kc.to(torch.bfloat16), vc.to(torch.bfloat16), md, k_scale=0.5, v_scale=2.0)
        assert torch.equal(out.isnan(), wide.isnan())
        assert torch.equal(out.nan_to_num(), wide.nan_to_num())
    assert len(taken) == 4


@needs_amx_prefill
def test_nan_in_unused_slots_and_masked_future_keys_stay_out(taken):
    """Slots past seq_len hold NaN (vLLM's MLA test writes them on purpose), and a huge value in a key a
    row must not see yet: neither reaches the output."""
    q, kc, vc, md = make_batch([40], [40], 4, 1, 128, 16, dtype=torch.bfloat16, seed=3)
    last = int(md.block_table[0, 2])
    kc[last, 8:] = float("nan")
    vc[last, 8:] = float("nan")
    first = int(md.block_table[0, 1])
    vc[first, 15] = 1e30  # token 31: rows 0..30 must not see it
    out = cpu_attn(q, kc, vc, md)
    assert taken and not out.isnan().any()
    close(out, paged_attention_reference(q, kc, vc, md), torch.bfloat16)
    assert out[:31].float().abs().max() < 10


@needs_amx_prefill
def test_bad_block_table_same_error_as_torch_path(monkeypatch):
    q, kc, vc, md = make_batch([50], [50], 4, 2, 64, 16, dtype=torch.bfloat16)
    md.block_table[0, 2] = kc.shape[0] + 5
    with pytest.raises(ValueError) as ours:
        cpu_attn(q, kc, vc, md)
    with pytest.raises(ValueError) as theirs:
        _torch_path(monkeypatch, q, kc, vc, md)
    assert "Expected block_table entries in [0, num_blocks=" in str(ours.value)
    assert str(ours.value) == str(theirs.value)


@needs_amx_prefill
def test_mixed_batch_writes_its_rows(taken):
    """Decode rows and two prefills in one batch: each prefill's rows land in its slice of the output."""
    q, kc, vc, md = make_batch([1, 70, 3, 45], [90, 70, 20, 100], 8, 4, 128, 32, dtype=torch.bfloat16, seed=9)
    sinks = torch.randn(8, generator=torch.Generator().manual_seed(1))
    out = cpu_attn(q, kc, vc, md, sinks=sinks)
    close(out, paged_attention_reference(q, kc, vc, md, sinks=sinks), torch.bfloat16)
    assert sorted(taken) == [(45, 100), (70, 70)]


@needs_amx_prefill
@pytest.mark.parametrize("dtype,rows,group,goes", [
    (torch.bfloat16, 4, 4, True), (torch.bfloat16, 8, 4, True), (torch.bfloat16, 16, 1, True),
    (torch.bfloat16, 3, 8, True), (torch.bfloat16, 2, 4, False), (torch.bfloat16, 2, 8, False),
    (torch.bfloat16, 5, 2, False), (torch.float16, 3, 8, True), (torch.float16, 4, 4, False),
    (torch.float16, 6, 4, True), (torch.float16, 8, 2, False), (torch.float32, 8, 2, True),
    (torch.float32, 16, 1, True), (torch.float32, 6, 4, False), (torch.float32, 8, 1, False)])
def test_short_runs_of_several_rows_take_it(dtype, rows, group, goes, taken):
    """Speculative-decode runs (several rows, at most DECODE_MAX_ROWS) read their sequence's K/V once here
    instead of once per row in the decode kernel: bf16 from 3 rows and 12 (row, head) columns per KV head, fp16
    from 3 rows and 24 columns, float32 from 8 rows and 16 columns (measured crossovers: _AMX_RUN_MIN). The
    answer agrees with the decode kernel's and the reference; the fast decode path declines the batch."""
    q, kc, vc, md = make_batch([rows, 1, rows], [300, 50, rows + 40], 2 * group, 2, 128, 16, dtype=dtype, seed=rows)
    out = cpu_attn(q, kc, vc, md)
    close(out, paged_attention_reference(q, kc, vc, md), dtype)
    assert sorted(taken) == (sorted([(rows, 300), (rows, rows + 40)]) if goes else [])
    assert (cpu_mod._decode_fast(q, kc, vc, md, None) is None) == goes
    with pytest.MonkeyPatch.context() as m:  # the decode kernel's answer
        m.setattr(cpu_mod, "_amx_rows", lambda *a: False)
        close(out, cpu_attn(q, kc, vc, md), dtype)


@needs_amx_prefill
def test_declines_what_it_does_not_cover(taken):
    """An fp16 query over an fp8 cache, a float32 query over a bf16 cache, per-(sequence, KV head) scales,
    two-sided (non-causal) windows and head sizes that are not a multiple of 32 take the torch path (and agree
    with the reference there)."""
    cases = [
        (dict(dtype=torch.float16, cache_dtype=torch.float8_e4m3fn), {}),
        (dict(dtype=torch.float32, cache_dtype=torch.bfloat16), {}),
        (dict(dtype=torch.float32), {"k_scale": torch.tensor([[1.0, 2.0]])}),
        (dict(dtype=torch.bfloat16, cache_dtype=torch.float8_e4m3fn), {"v_scale": torch.tensor([[1.0, 2.0]])}),
        (dict(dtype=torch.bfloat16), {"sliding_window": 20, "causal": False}),
    ]
    for kw, opts in cases:
        q, kc, vc, md = make_batch([60], [60], 4, 2, 64, 16, **kw)
        close(cpu_attn(q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts), q.dtype)
    q, kc, vc, md = make_batch([60], [60], 4, 2, 80, 16, dtype=torch.bfloat16)
    close(cpu_attn(q, kc, vc, md), paged_attention_reference(q, kc, vc, md), q.dtype)
    assert taken == []


@needs_amx_prefill
def test_long_causal_prefill_two_threads(taken):
    """Enough rows for several items per thread (and the costliest-first schedule) on two threads."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        q, kc, vc, md = make_batch([700], [900], 16, 2, 128, 16, dtype=torch.bfloat16, seed=5)
        out = cpu_attn(q, kc, vc, md)
    finally:
        torch.set_num_threads(saved)
    assert taken == [(700, 900)]
    close(out, paged_attention_reference(q, kc, vc, md), torch.bfloat16)
    assert math.isfinite(out.float().abs().max().item())


def test_kernel_builds_and_runs_where_the_cpu_has_amx():
    """With a compiler the kernel must build (a build failure would otherwise only show as skipped tests), and
    on a CPU with amx_bf16 (not switched off), built with AMX, it must run."""
    import shutil

    if not (shutil.which("g++") or shutil.which("c++")):
        pytest.skip("no compiler here: the torch path is the prefill path")
    assert _cpu_prefill_ext.load() is not None, _cpu_prefill_ext.reason()
    if not amx_decode_host():
        pytest.skip("no AMX here: the kernel declines and the torch path runs")
    if not _cpu_prefill_ext.amx_ok():
        pytest.skip("this compiler built the kernel without AMX intrinsics")
    assert RUNS
