"""FLASH_ATTN's SDPA fallback (``sdpa_paged``) on CPU: batched calls against the float64 reference.

The fallback pads the batch into ``[B, H, Nmax, D]`` / ``[B, Hkv, Lmax, D]`` and issues a constant
number of SDPA calls (one, or a few length buckets).  These tests check that it keeps the
per-sequence semantics (bottom-right causal rows, GQA, scale, fp8 dequantisation, cross-attention
rows without keys), that padding and unused cache slots (NaN here) never reach the output, and
that the number of SDPA calls does not grow with the batch size.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from attnsolve.kernels import KernelUnavailableError  # noqa: E402
from attnsolve.kernels.adapters import sdpa_fallback as FA  # noqa: E402
from attnsolve.kernels.adapters.sdpa_fallback import plan_buckets, sdpa_paged  # noqa: E402
from attnsolve.kernels.metadata import AttentionMetadata  # noqa: E402
from attnsolve.kernels.reference import paged_attention_reference  # noqa: E402

TOL = {
    torch.float16: dict(atol=4e-3, rtol=4e-3),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
}
_N = max(10, min(60, settings().max_examples // 3))


def build(q_lens, seq_lens, H, Hkv, D, bs, *, dtype=torch.bfloat16, cache_dtype=None, seed=0,
          share_blocks=False):
    """A paged problem whose cache slots outside every sequence's tokens hold NaN.

    ``share_blocks``: later sequences reuse the first sequence's leading blocks (prefix sharing,
    so one block id appears in several block-table rows).  Block-table entries past a sequence's
    last block hold out-of-range junk ids, which a kernel must never read.
    """
    g = torch.Generator().manual_seed(seed)
    cache_dtype = cache_dtype or dtype
    nblk = [-(-L // bs) for L in seq_lens]
    total = sum(nblk) + 2
    perm = torch.randperm(total, generator=g).tolist()
    cols = max(nblk + [1]) + 1
    bt = torch.full((len(seq_lens), cols), 10**6, dtype=torch.int32)
    bt[:, -1] = -7
    used = torch.zeros(total, bs, dtype=torch.bool)
    k = 0
    for i, n in enumerate(nblk):
        bt[i, :n] = torch.tensor(perm[k:k + n], dtype=torch.int32)
        k += n
    if share_blocks and len(seq_lens) > 1:
        full0 = seq_lens[0] // bs  # full blocks only: a shared block is read whole by each sharer
        for i in range(1, len(seq_lens)):
            m = min(full0, seq_lens[i] // bs)
            bt[i, :m] = bt[0, :m]
    for i, L in enumerate(seq_lens):
        for t in range(L):
            used[int(bt[i, t // bs]), t % bs] = True
    kc = torch.randn(total, bs, Hkv, D, generator=g)
    vc = torch.randn(total, bs, Hkv, D, generator=g)
    kc[~used] = math.nan
    vc[~used] = math.nan
    qsl = [0]
    for n in q_lens:
        qsl.append(qsl[-1] + n)
    md = AttentionMetadata(torch.tensor(qsl, dtype=torch.int32), torch.tensor(seq_lens, dtype=torch.int32), bt)
    q = torch.randn(qsl[-1], H, D, generator=g).to(dtype)
    return q, kc.to(cache_dtype), vc.to(cache_dtype), md


def check(out, ref, dtype):
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert not torch.isnan(out).any(), "NaN from padding or unused cache slots reached the output"
    torch.testing.assert_close(out.float(), ref.float(), **TOL[dtype])


class Counter:
    """Wraps ``F.scaled_dot_product_attention`` and counts calls."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = torch.nn.functional.scaled_dot_product_attention

        def counting(*a, **kw):
            self.calls += 1
            return real(*a, **kw)

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)


# --------------------------------------------------------------------------------------
# against the reference
# --------------------------------------------------------------------------------------

KINDS = ("decode", "prefill", "chunk", "empty", "cross")


@st.composite
def batches(draw):
    b = draw(st.integers(1, 7))
    causal = draw(st.booleans())
    uneven = draw(st.booleans())
    q_lens, seq_lens = [], []
    for _ in range(b):
        kind = draw(st.sampled_from(KINDS if not causal else KINDS[:4]))
        L = draw(st.integers(1, 300 if uneven and draw(st.booleans()) else 48))
        if kind == "decode":
            n = 1
        elif kind == "prefill":
            n = L
        elif kind == "chunk":
            n = draw(st.integers(1, L))
        elif kind == "empty":
            n = 0
        else:  # non-causal cross-attention: more rows than keys, possibly no key at all
            L = draw(st.integers(1, 6))  # L == 0: test_rows_without_keys_are_zero
            n = draw(st.integers(L + 1, L + 9))
        q_lens.append(n)
        seq_lens.append(L)
    Hkv = draw(st.sampled_from([1, 2]))
    group = draw(st.sampled_from([1, 4, 8]))
    return dict(
        q_lens=q_lens, seq_lens=seq_lens, causal=causal, H=Hkv * group, Hkv=Hkv,
        D=draw(st.sampled_from([32, 64])), bs=draw(st.sampled_from([16, 32])),
        dtype=draw(st.sampled_from([torch.bfloat16, torch.float16])),
        fp8=draw(st.sampled_from([None, None, torch.float8_e4m3fn, torch.float8_e5m2])),
        share=draw(st.booleans()), scale=draw(st.sampled_from([None, 0.07])), seed=draw(st.integers(0, 9)),
    )


@settings(max_examples=_N, deadline=None)
@given(batches())
def test_matches_reference(case):
    q, kc, vc, md = build(case["q_lens"], case["seq_lens"], case["H"], case["Hkv"], case["D"], case["bs"],
                          dtype=case["dtype"], cache_dtype=case["fp8"], seed=case["seed"], share_blocks=case["share"])
    kw = dict(causal=case["causal"], scale=case["scale"])
    if case["fp8"] is not None:
        kw.update(k_scale=0.5, v_scale=1.5)
    out = sdpa_paged(q, kc, vc, md, **kw)
    check(out, paged_attention_reference(q, kc, vc, md, **kw), case["dtype"])


GRID = {
    "decode": ([1] * 6, [5, 17, 33, 64, 1, 40]),
    "decode_same_len": ([1] * 5, [37] * 5),
    "prefill_same": ([24] * 3, [24] * 3),
    "prefill_mixed": ([24, 9, 40], [24, 9, 40]),
    "chunk_same": ([8] * 3, [50] * 3),  # one bottom-right causal shape for the whole batch
    "mixed": ([1, 16, 1, 5, 0, 1], [70, 16, 3, 45, 9, 128]),
    "uneven": ([1] * 9 + [3], [1000] + [2] * 8 + [700]),  # the bucket path
    "uneven_prefill": ([1, 1, 256, 1, 2], [600, 3, 256, 5, 400]),
}


@pytest.mark.parametrize("name", sorted(GRID))
@pytest.mark.parametrize("group", [1, 4, 8])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bs", [16, 32])
def test_grid(name, group, dtype, bs):
    q_lens, seq_lens = GRID[name]
    q, kc, vc, md = build(q_lens, seq_lens, 2 * group, 2, 32, bs, dtype=dtype, seed=len(name),
                          share_blocks=(bs == 16))
    out = sdpa_paged(q, kc, vc, md, scale=0.2)
    check(out, paged_attention_reference(q, kc, vc, md, scale=0.2), dtype)


def test_uneven_batch_takes_the_bucket_path(monkeypatch):
    q_lens, seq_lens = GRID["uneven"]
    buckets = plan_buckets(q_lens, seq_lens, 4)
    assert len(buckets) > 1, f"Expected the uneven batch to be split, but got {buckets}."
    cnt = Counter(monkeypatch)
    q, kc, vc, md = build(q_lens, seq_lens, 8, 2, 32, 16, seed=5)
    out = sdpa_paged(q, kc, vc, md)
    assert cnt.calls == len(buckets)
    check(out, paged_attention_reference(q, kc, vc, md), torch.bfloat16)


def test_rows_without_keys_are_zero():
    q, kc, vc, md = build([3, 1, 2], [0, 7, 2], 4, 2, 32, 16, dtype=torch.float16, seed=2)
    out = sdpa_paged(q, kc, vc, md, causal=False)
    assert torch.equal(out[:3], torch.zeros_like(out[:3]))
    # the reference cannot take an empty context (softmax over zero keys): compare the rest
    rest = AttentionMetadata(md.query_start_loc[1:] - 3, md.seq_lens[1:], md.block_table[1:])
    check(out[3:], paged_attention_reference(q[3:], kc, vc, rest, causal=False), torch.float16)


def test_empty_batch_and_no_query_rows():
    q, kc, vc, md = build([0, 0], [5, 9], 4, 2, 32, 16, dtype=torch.float16)
    assert sdpa_paged(q, kc, vc, md).shape == (0, 4, 32)


def test_fp32_is_refused_by_name():
    q, kc, vc, md = build([1, 4], [9, 4], 4, 2, 32, 16, dtype=torch.float32)
    with pytest.raises(KernelUnavailableError, match="fp16/bf16") as ei:
        sdpa_paged(q, kc, vc, md)
    assert ei.value.alternative == "TRITON_ATTN"


# --------------------------------------------------------------------------------------
# the number of SDPA calls
# --------------------------------------------------------------------------------------


def _lens(kind: str, B: int, g: torch.Generator):
    L = torch.randint(40, 120, (B,), generator=g).tolist()
    if kind == "decode":
        return [1] * B, L
    if kind == "mixed":  # chunked prefill (16 rows) among decodes
        return [16 if i % 4 == 0 else 1 for i in range(B)], L
    # very uneven: a few long contexts among short ones
    return [1] * B, [3000 if i % 16 == 0 else int(x) // 8 + 1 for i, x in enumerate(L)]


@pytest.mark.parametrize("kind", ["decode", "mixed", "uneven"])
def test_calls_do_not_grow_with_batch(kind, monkeypatch):
    cnt = Counter(monkeypatch)
    calls = {}
    for B in (2, 16, 64):
        q_lens, seq_lens = _lens(kind, B, torch.Generator().manual_seed(B))
        q, kc, vc, md = build(q_lens, seq_lens, 8, 2, 32, 16, seed=B)
        cnt.calls = 0
        out = sdpa_paged(q, kc, vc, md)
        calls[B] = cnt.calls
        if B == 16:
            check(out, paged_attention_reference(q, kc, vc, md), torch.bfloat16)
    assert calls[64] <= calls[16] + 1 and calls[64] <= 3, f"Expected O(1) SDPA calls, but got {calls}."
    if kind == "decode":
        assert set(calls.values()) == {1}, f"Expected one SDPA call per decode batch, but got {calls}."


def _run(b, q_lens, seq_lens):
    run = FA._Run()
    for i in b:
        run = run.plus(q_lens[i], seq_lens[i])
    return run


@settings(max_examples=_N, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 16), st.integers(0, 4096)), min_size=1, max_size=200),
       st.sampled_from([1, 4, 8]))
def test_plan_buckets_partition_and_bound(pairs, group):
    q_lens = [min(n, L) for n, L in pairs]
    seq_lens = [L for _, L in pairs]
    buckets = plan_buckets(q_lens, seq_lens, group)
    flat = sorted(i for b in buckets for i in b)
    assert flat == [i for i in range(len(pairs)) if q_lens[i] > 0 and seq_lens[i] > 0]
    for b in buckets:
        run = _run(b, q_lens, seq_lens)
        if len(buckets) == 1 and run.padded_ok(group):
            break  # the whole batch in one call: padding within PAD_FACTOR, scores included
        # else: a class of query lengths within 4x, KV padding within 4x
        assert run.n_max <= FA.PAD_FACTOR * run.n_min
        assert len(b) == 1 or run.padded_ok(group, scores=False)
    # the mask budget cannot bind here (200 * 8 * 16 * 4096 < 2^27), so: classes of query lengths
    # within 4x over 1..16 (<= 3) x splits where the context drops 4x over 1..4096 (<= 7)
    assert len(buckets) <= 3 * 7, f"Expected O(log) buckets, but got {len(buckets)} for {len(pairs)} sequences."


def test_plan_buckets_mask_budget():
    """Long uneven chunks: each masked bucket stays within MASK_BUDGET, single sequences need none."""
    q_lens = [512 + 7 * i for i in range(40)]
    seq_lens = [8192 + 100 * i for i in range(40)]
    buckets = plan_buckets(q_lens, seq_lens, 8)
    for b in buckets:
        run = _run(b, q_lens, seq_lens)
        assert len(b) == 1 or run.count * 8 * run.n_max * run.l_max <= FA.MASK_BUDGET
    assert sorted(i for b in buckets for i in b) == list(range(40))


# --------------------------------------------------------------------------------------
# CUDA: the fused kernels only (flash / memory-efficient), as FLASH_ATTN runs it
# --------------------------------------------------------------------------------------


def _md_cuda(md):
    return AttentionMetadata(md.query_start_loc.cuda(), md.seq_lens.cuda(), md.block_table.cuda())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible to torch)")
@pytest.mark.parametrize("name", sorted(GRID) + ["cross", "fp8"])
@pytest.mark.parametrize("group", [1, 4])
def test_gpu_fused_kernels(name, group):
    causal = name != "cross"
    q_lens, seq_lens = GRID.get(name, ([5, 1, 9], [3, 200, 9]) if not causal else ([1, 3, 9], [70, 200, 9]))
    q, kc, vc, md = build(q_lens, seq_lens, 8 * group, 8, 128, 16, seed=7,
                          cache_dtype=torch.float8_e4m3fn if name == "fp8" else None)
    kw = dict(causal=causal, k_scale=0.5, v_scale=2.0) if name == "fp8" else dict(causal=causal)
    out = sdpa_paged(q.cuda(), kc.cuda(), vc.cuda(), _md_cuda(md), **kw)
    check(out.cpu(), paged_attention_reference(q, kc, vc, md, **kw), torch.bfloat16)
