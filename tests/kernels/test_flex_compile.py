"""FLEX_ATTENTION's compiled path (attnsolve/kernels/flex.py): padded buckets, the tile-bound block mask,
no recompile per decode step, and the eager fallback, against the float64 reference.

On CPU the compiled path is opt-in (``ATTNSOLVE_FLEX_COMPILE=1``) and costs ~6-8 s of inductor C++
compile per new graph here, so the cases share few graphs: one float32 (rows, keys) bucket for the
mask features, one for decode, one with a score_mod, one with multimodal ranges, one for the batched
layout of decode-like batches (sequences on flex's batch dimension).  The block-mask property runs
without compiling: a recorder stands in for the compiled flex (eager flex on the very inputs the
compiled one would get) and checks the mask, per batch entry, against ``mask_mod`` evaluated densely.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import attnsolve.kernels.flex as flex_mod  # noqa: E402
from attnsolve.kernels.flex import flex_paged_attention as flex  # noqa: E402
from attnsolve.kernels.reference import paged_attention_reference  # noqa: E402
from paged_cases import close_result, feature_problems, make_batch  # noqa: E402

try:
    from strategies import budget
except ImportError:  # pragma: no cover
    def budget(n):
        return n


@pytest.fixture(autouse=True)
def _compiled(monkeypatch):
    """Compiled flex on every device, one intra-op thread (steadier on a shared 2-core box), a clean
    fallback record (a failure in one test must not turn the next one eager)."""
    monkeypatch.setenv("ATTNSOLVE_FLEX_COMPILE", "1")
    monkeypatch.setattr(flex_mod, "_broken", {})
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _graphs() -> int:
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


def _check(q, kc, vc, md, *, device: str = "cpu", **opts):
    """The compiled call (on ``device``) agrees with the reference (on the host copies) and did not fall
    back (a fallback warns)."""
    def on(x):
        return x.to(device) if isinstance(x, torch.Tensor) else x

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with torch.no_grad():
            got = flex(on(q), on(kc), on(vc), md, **{k: on(v) for k, v in opts.items()})
    assert flex_mod._broken == {}
    got = tuple(x.cpu() for x in got) if isinstance(got, tuple) else got.cpu()
    close_result(got, paged_attention_reference(q, kc, vc, md, **opts), q.dtype)


# -- the env switch and the buckets (no compile) -----------------------------------------------------

def test_triton_interpreting_is_read_from_the_environment_and_the_imported_triton(monkeypatch):
    """Compiled flex on a GPU needs inductor's Triton kernels compiled: TRITON_INTERPRET set now, or a triton
    imported in interpreter mode, sends it eager (with one warning) instead of an inductor error."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "triton.language", types.SimpleNamespace(zeros=lambda: None))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert flex_mod._triton_interpreting()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not flex_mod._triton_interpreting()

    class InterpretedFunction:  # the class name triton's interpreter gives its library functions
        pass

    monkeypatch.setitem(sys.modules, "triton.language", types.SimpleNamespace(zeros=InterpretedFunction()))
    assert flex_mod._triton_interpreting()


def test_env_switch(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.delenv("ATTNSOLVE_FLEX_COMPILE")
    assert (flex_mod._want_compile(cpu), flex_mod._want_compile(gpu)) == (False, True)
    monkeypatch.setenv("ATTNSOLVE_FLEX_COMPILE", "0")
    assert (flex_mod._want_compile(cpu), flex_mod._want_compile(gpu)) == (False, False)
    monkeypatch.setenv("ATTNSOLVE_FLEX_COMPILE", "1")
    assert (flex_mod._want_compile(cpu), flex_mod._want_compile(gpu)) == (True, True)
    monkeypatch.setenv("ATTNSOLVE_FLEX_COMPILE", "maybe")
    with pytest.raises(ValueError, match=r"Expected ATTNSOLVE_FLEX_COMPILE .* but got 'maybe'\."):
        flex_mod._want_compile(cpu)


def test_buckets_bound_padding_and_change_rarely():
    seen = set()
    for n in range(1, 5000):
        b = flex_mod._bucket(n, 128)
        assert b >= n and b % 128 == 0 and (b <= 128 or b <= n * 1.125 + 128), (n, b)
        seen.add(b)
    assert len(seen) < 40  # ~8 per octave past 1024, not one per length


# -- the block mask, checked densely (eager flex on the compiled path's inputs, no compile) -----------

def _tiles(bm) -> tuple[set, set]:
    """(partial, full) (batch entry, q tile, kv tile) triples of a block mask."""
    out = []
    for num, idx in ((bm.kv_num_blocks, bm.kv_indices), (bm.full_kv_num_blocks, bm.full_kv_indices)):
        out.append({(b, i, int(idx[b, 0, i, j])) for b in range(num.shape[0]) for i in range(num.shape[-1])
                    for j in range(int(num[b, 0, i]))})
    return out[0], out[1]


def _check_mask(bm, tq: int, tk: int) -> None:
    """Per batch entry: every visible (row, key) pair lies in a kept tile; a full tile holds only visible
    pairs, or rows past the last real one (padding of a short query tile, dropped)."""
    partial, full = _tiles(bm)
    assert not partial & full
    bsz = 128
    for b in range(bm.kv_num_blocks.shape[0]):
        dense = bm.mask_mod(torch.tensor(b), 0, torch.arange(tq).view(-1, 1), torch.arange(tk).view(1, -1))
        real = int(dense.any(1).nonzero().max()) + 1 if dense.any() else 0  # rows up to the last visible one
        for i in range(-(-tq // bsz)):
            for j in range(-(-tk // bsz)):
                tile = dense[i * bsz:(i + 1) * bsz, j * bsz:(j + 1) * bsz]
                if tile.any():
                    assert (b, i, j) in partial | full, (b, i, j)
                if (b, i, j) in full:
                    assert real > 0 and tile[:real - i * bsz].all() and tile.shape[1] == bsz, (b, i, j)
                    assert tk > j * bsz and (tile.shape[0] == bsz or tq < bsz), (b, i, j)


@pytest.fixture
def recorder(monkeypatch):
    """Stands in for the compiled flex: eager flex on the same (padded) inputs; keeps the block masks."""
    from torch.nn.attention.flex_attention import flex_attention
    seen = []

    def run(q, k, v, **kw):
        seen.append((kw["block_mask"], q.shape[2], k.shape[2]))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*without torch.compile.*")
            return flex_attention(q, k, v, **kw)

    monkeypatch.setattr(flex_mod, "_compiled_flex", lambda device_type: run)
    return seen


@pytest.fixture
def masks_only(monkeypatch):
    """Stands in for the compiled flex and only keeps the block masks (the output is not looked at)."""
    seen = []

    def run(q, k, v, **kw):
        seen.append((kw["block_mask"], q.shape[2], k.shape[2]))
        return torch.zeros_like(q)

    monkeypatch.setattr(flex_mod, "_compiled_flex", lambda device_type: run)
    return seen


@pytest.mark.parametrize("opts", [dict(causal=True), dict(causal=False), dict(sliding_window=70),
                                  dict(causal=False, sliding_window=(100, 3)),
                                  dict(mm_prefix_ranges=[[(5, 60)], [(0, 150)], []])])
def test_block_mask_is_conservative_and_full_tiles_are_exact(recorder, opts):
    """Several 128-tiles per side, tiles across sequence boundaries, padded rows and keys."""
    q, kc, vc, md = make_batch([1, 200, 120], [300, 200, 420], 4, 2, 32, 16, seed=11)
    close_result(flex(q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts), q.dtype)
    (bm, tq, tk), = recorder
    assert (tq, tk) == (flex_mod._bucket(321, 16), flex_mod._bucket(920, 128))
    _check_mask(bm, tq, tk)
    partial, full = _tiles(bm)
    assert len(partial | full) < (-(-tq // 128)) * (-(-tk // 128))  # something was skipped


@settings(max_examples=budget(25),  # the recorder is cleared per example
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(feature_problems(max_len=300, block_sizes=(1, 16, 48)))
def test_padded_inputs_and_block_mask_match_reference(recorder, case):
    """Every feature group (windows both sides, ALiBi, soft-cap, mm ranges, per-(seq, KV head) scales,
    sinks, return_lse) through the compiled path's padding and block mask (lse calls stay eager on CPU)."""
    (q, kc, vc, md), opts = case
    recorder.clear()
    close_result(flex(q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts), q.dtype)
    for bm, tq, tk in recorder:
        _check_mask(bm, tq, tk)


# a tile pair (rows 128i.., keys 128j.., aligned positions) spans t - p in [128m - 127, 128m + 127], m = j - i
_EDGES = sorted({128 * m + e + d for m in range(4) for e in (-127, 127) for d in (-1, 0, 1)} - set(range(-130, 0)))


@st.composite
def tile_edge_problems(draw):
    """Mostly whole tiles (rows and keys multiples of 128, so tiles hold one sequence at aligned positions)
    and window sides on, or one off, a tile pair's extreme ``t - p``: an off-by-one in the tile bounds
    shows as a lost visible pair or a wrongly full tile.  Sometimes unaligned lengths, tiles shared by
    two sequences, one-sided windows."""
    aligned = draw(st.integers(0, 3)) > 0
    length = st.sampled_from([128, 256, 384]) if aligned else st.integers(1, 400)
    q_lens, seq_lens = [], []
    for _ in range(draw(st.integers(1, 2))):
        L = draw(length)
        q_lens.append(min(L, draw(length)))
        seq_lens.append(L)
    side = st.sampled_from(_EDGES) if draw(st.integers(0, 3)) > 0 else st.one_of(st.just(-1), st.integers(0, 400))
    opts = dict(causal=draw(st.booleans()), sliding_window=(draw(side), draw(side)))
    return make_batch(q_lens, seq_lens, 2, 1, 16, 16, seed=draw(st.integers(0, 99))), opts


@settings(max_examples=budget(60), suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tile_edge_problems())
def test_block_mask_at_tile_edges(recorder, case):
    (q, kc, vc, md), opts = case
    recorder.clear()
    close_result(flex(q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts), q.dtype)
    (bm, tq, tk), = recorder
    _check_mask(bm, tq, tk)


def test_block_mask_tile_edges_sweep(masks_only):
    """Every window side on, or one off, a tile pair's extreme ``t - p`` (whole, aligned tiles; a short
    query tile; two sequences): an off-by-one in the band tests fails here."""
    sides = [-1, 0, 1, 126, 127, 128, 254, 255, 256]
    shapes = [([256], [256]), ([128], [384]), ([64], [256]), ([128, 256], [256, 256])]
    for (q_lens, seq_lens) in shapes:
        q, kc, vc, md = make_batch(q_lens, seq_lens, 2, 1, 16, 16, seed=1)
        for causal in (True, False):
            for left in sides:
                for right in sides:
                    masks_only.clear()
                    flex(q, kc, vc, md, causal=causal, sliding_window=(left, right))
                    for bm, tq, tk in masks_only:
                        _check_mask(bm, tq, tk)


# -- the batched layout of decode-like batches (sequences on flex's batch dimension) -------------------

_UNEVEN_Q = [1, 4, 0, 2, 3, 1]  # at most 16 rows per sequence: batched; a sequence with no rows and no keys
_UNEVEN_L = [700, 4, 0, 192, 260, 1]  # 1157 keys, bucket 1280: shared tiles, a 1-key sequence; sequence 3
# ends on a tile boundary with 2 rows: its last tile lies inside it but is not full (a causal future key)


def _uneven_batch(**kw):
    """Spec-decode-like rows (Nq = 4) over very uneven lengths, GQA 8/2: one compiled graph per mask_mod."""
    return make_batch(_UNEVEN_Q, _UNEVEN_L, 8, 2, 32, 16, seed=5, **kw)


def _poisoned(q, kc, vc, md, lens):
    """Sequence 3 reads sequence 0's first two blocks (prefix caching); NaN in every unreferenced slot."""
    md.block_table[3, :2] = md.block_table[0, :2]
    md._host = None
    kc, vc = kc.clone(), vc.clone()
    bs = kc.shape[1]
    used = {(int(md.block_table[i, t // bs]), t % bs) for i, L in enumerate(lens) for t in range(L)}
    for b in range(kc.shape[0]):
        for s in range(bs):
            if (b, s) not in used:
                kc[b, s], vc[b, s] = float("nan"), float("nan")
    return q, kc, vc, md


def test_batched_block_mask_keeps_only_own_tiles(masks_only):
    """A decode batch: entry b holds only the key tiles of sequence b (all of them when causal, full where
    a tile lies inside the sequence), padding entries none."""
    lens = [3, 700, 129, 1, 260, 0, 40]
    q, kc, vc, md = make_batch([1, 1, 1, 1, 1, 0, 1], lens, 8, 2, 32, 16, seed=2)
    flex(q, kc, vc, md)
    (bm, tq, tk), = masks_only
    assert (tq, tk) == (1, flex_mod._bucket(sum(lens), 128))
    _check_mask(bm, tq, tk)
    partial, full = _tiles(bm)
    starts = [sum(lens[:i]) for i in range(len(lens))]
    for b in range(bm.kv_num_blocks.shape[0]):
        L, s = (lens[b], starts[b]) if b < len(lens) else (0, 0)
        own = set(range(s // 128, -(-(s + L) // 128))) if L and b != 5 else set()
        inside = {j for j in own if j * 128 >= s and (j + 1) * 128 <= s + L}
        assert {j for bb, _, j in partial | full if bb == b} == own, b
        assert {j for bb, _, j in full if bb == b} == inside, b
    assert len(partial | full) == 1 + 6 + 2 + 1 + 3 + 0 + 1  # 14 tile visits; packed: 1 row tile x 9 key tiles per row

    masks_only.clear()
    flex(q, kc, vc, md, sliding_window=(100, 0))  # only the tiles holding the last 101 positions
    (bm, tq, tk), = masks_only
    _check_mask(bm, tq, tk)
    partial, full = _tiles(bm)
    assert {j for b, _, j in partial | full if b == 1} == {(3 + 599) // 128, (3 + 699) // 128}


def test_batched_shape_and_shared_keys(monkeypatch):
    """The compiled flex gets q [Bp, H, Nq, D] (Nq a power of two) and the packed keys once, batch 1 (flex
    broadcasts them); a sequence with more than 16 rows keeps the packed layout."""
    seen = []

    def run(q, k, v, **kw):
        seen.append((tuple(q.shape), tuple(k.shape), tuple(v.shape), kw["block_mask"].kv_num_blocks.shape[0]))
        return torch.zeros(*q.shape[:3], v.shape[-1])

    monkeypatch.setattr(flex_mod, "_compiled_flex", lambda device_type: run)
    flex(*_uneven_batch())
    flex(*make_batch([17, 1], [40, 300], 8, 2, 32, 16))
    flex(*make_batch([1] * 9, [5] * 9, 8, 2, 32, 16))  # 9 sequences: 12 entries (a bucket), Nq 1
    assert seen == [((8, 8, 4, 32), (1, 2, 1280, 32), (1, 2, 1280, 32), 8),
                    ((1, 8, 32, 32), (1, 2, 384, 32), (1, 2, 384, 32), 1),
                    ((12, 8, 1, 32), (1, 2, 128, 32), (1, 2, 128, 32), 12)]


@pytest.mark.parametrize("opts", [dict(), dict(sliding_window=(50, 0)), dict(causal=False, sliding_window=(30, 2)),
                                  dict(logits_soft_cap=6.0, alibi_slopes=torch.linspace(0.05, 0.5, 8)),
                                  dict(sinks=torch.linspace(-1.0, 2.0, 8), return_lse=True),
                                  dict(return_lse=True, causal=False),
                                  dict(mm_prefix_ranges=[[(690, 700)], [(0, 4)], [], [(0, 200)], [], []])])
def test_batched_inputs_match_reference(recorder, monkeypatch, opts):
    """Every feature on the batched inputs and block mask (eager flex stands in for the compiled one, so
    sinks and lse, which CPU's compiled template cannot return, are covered too)."""
    monkeypatch.setattr(flex_mod, "_compiled_lse", lambda device_type: True)
    batch = _poisoned(*_uneven_batch(), _UNEVEN_L)
    close_result(flex(*batch, **opts), paged_attention_reference(*batch, **opts), torch.float32)
    (bm, tq, tk), = recorder
    assert bm.kv_num_blocks.shape[0] == 8  # 6 sequences, 2 padding entries
    _check_mask(bm, tq, tk)


def test_compiled_batched_uneven_decode():
    """Compiled, one graph: GQA, uneven lengths, padding rows and entries, a zero
    sequence, causal / window / bidirectional, a repeated block with NaN in every unreferenced slot, an
    HND-strided cache, fp8 cache with per-(sequence, KV head) scales (all outside the graph)."""
    batch = _uneven_batch()
    _check(*batch)
    before = _graphs()
    for opts in (dict(sliding_window=(50, 0)), dict(causal=False, sliding_window=(30, 2)), dict(causal=False)):
        _check(*batch, **opts)
    q, kc, vc, md = _poisoned(*_uneven_batch(), _UNEVEN_L)
    hnd_k = kc.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    hnd_v = vc.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    _check(q, hnd_k, hnd_v, md)
    with torch.no_grad():
        assert not torch.isnan(flex(q, hnd_k, hnd_v, md)).any()
    g = torch.Generator().manual_seed(3)
    _check(*_uneven_batch(cache_dtype=torch.float8_e4m3fn), k_scale=torch.rand(6, 2, generator=g) + 0.5,
           v_scale=0.5)
    assert _graphs() == before, "a mask option or cache layout compiled a new graph"
    # multimodal ranges (another graph, ~10 s cold): covered on the batched inputs by the recorder test


# -- the eager fallback (no compile) ------------------------------------------------------------------

def test_compile_failure_falls_back_to_eager_once_with_a_warning(monkeypatch):
    calls = []

    def broken(device_type):
        calls.append(device_type)

        def fail(*a, **k):
            raise RuntimeError("inductor: no working C++ compiler found")
        return fail

    monkeypatch.setattr(flex_mod, "_compiled_flex", broken)
    q, kc, vc, md = make_batch([1, 5], [30, 9], 4, 2, 32, 16, seed=3)
    want = paged_attention_reference(q, kc, vc, md, logits_soft_cap=8.0)
    with pytest.warns(RuntimeWarning, match="no working C\\+\\+ compiler"):
        close_result(flex(q, kc, vc, md, logits_soft_cap=8.0), want, q.dtype)
    assert "no working C++ compiler" in flex_mod._broken["cpu"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        close_result(flex(q, kc, vc, md, logits_soft_cap=8.0), want, q.dtype)
    assert calls == ["cpu"]  # the second call went straight to eager


def test_oom_is_not_swallowed(monkeypatch):
    def oom(device_type):
        def fail(*a, **k):
            raise torch.OutOfMemoryError("out of memory")
        return fail

    monkeypatch.setattr(flex_mod, "_compiled_flex", oom)
    q, kc, vc, md = make_batch([1], [30], 4, 2, 32, 16)
    with pytest.raises(torch.OutOfMemoryError):
        flex(q, kc, vc, md)
    assert flex_mod._broken == {}


# -- the compiled path itself (CPU: inductor's C++ template; ~7 s per new graph) ---------------------

def test_compiled_decode_steps_do_not_recompile():
    """Two decode steps (every sequence one longer: new row positions, new packed length) share a graph;
    soft-cap, ALiBi and per-(sequence, KV head) fp8 scales ride along."""
    g = torch.Generator().manual_seed(0)
    opts = dict(logits_soft_cap=20.0, alibi_slopes=torch.rand(8, generator=g) * 0.3,
                k_scale=torch.rand(3, 2, generator=g) + 0.5, v_scale=torch.rand(3, 2, generator=g) + 0.5)
    before = None
    for step in range(2):
        q, kc, vc, md = make_batch([1, 1, 1], [40 + step, 150 + step, 300 + step], 8, 2, 64, 16, seed=step,
                                   cache_dtype=torch.float8_e4m3fn)
        if step == 1:
            before = _graphs()
        _check(q, kc, vc, md, **opts)
    assert _graphs() == before, "the second decode step compiled a new graph"


def _features_batch(**kw):
    """T = 241 rows and 670 keys in three sequences: buckets (256, 768), several tiles each side."""
    return make_batch([1, 200, 40], [300, 200, 170], 4, 2, 32, 16, seed=9, **kw)


def test_compiled_masks_share_one_graph():
    """Causal, windows and bidirectional are tensors of one mask graph: only the first case may compile."""
    batch = _features_batch()
    _check(*batch)
    before = _graphs()
    for opts in (dict(sliding_window=33), dict(causal=False, sliding_window=(50, 7)), dict(causal=False)):
        _check(*batch, **opts)
    assert _graphs() == before, "a mask option compiled a new graph"


def test_compiled_full_tiles_single_sequence():
    """One sequence filling whole tiles (same buckets as above): full, partial and skipped tiles."""
    q, kc, vc, md = make_batch([256], [768], 4, 2, 32, 16, seed=4)
    for opts in (dict(), dict(causal=False)):
        _check(q, kc, vc, md, **opts)


def test_compiled_cache_layouts():
    """fp8 cache with scales, a block repeated in the table, NaN in every unreferenced slot, an HND-strided
    cache: all handled in the gather, outside the compiled graph."""
    q, kc, vc, md = _features_batch(cache_dtype=torch.float8_e5m2)
    _check(q, kc, vc, md, k_scale=0.5, v_scale=torch.tensor(2.0))

    q, kc, vc, md = _features_batch()
    md.block_table[2, :3] = md.block_table[0, :3]  # prefix caching: sequence 2 reads sequence 0's blocks
    md._host = None
    kc, vc = kc.clone(), vc.clone()
    used = {(int(md.block_table[i, t // 16]), t % 16) for i, L in enumerate([300, 200, 170]) for t in range(L)}
    for b in range(kc.shape[0]):
        for s in range(16):
            if (b, s) not in used:
                kc[b, s], vc[b, s] = float("nan"), float("nan")
    hnd_k = kc.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)  # [nb, Hkv, bs, D] storage
    hnd_v = vc.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    _check(q, hnd_k, hnd_v, md)
    with torch.no_grad():
        assert not torch.isnan(flex(q, hnd_k, hnd_v, md)).any()


def test_compiled_multimodal_prefix_ranges():
    _check(*_features_batch(), mm_prefix_ranges=[[(0, 10)], [(20, 90), (150, 160)], []])


@pytest.mark.slow
def test_compiled_bf16_score_mods():
    """bf16 query, soft-cap and ALiBi on the multi-tile batch (one more graph)."""
    q, kc, vc, md = _features_batch(dtype=torch.bfloat16)
    _check(q, kc, vc, md, logits_soft_cap=15.0, alibi_slopes=torch.linspace(0.05, 0.4, 4), sliding_window=(80, 0))


# -- CUDA (run on a GPU machine) ---------------------------------------------------------------------

@pytest.mark.gpu
def test_cuda_compiled_default_matches_reference(monkeypatch):
    """The default on CUDA is compiled (env unset), dynamic: ten decode steps compile at most once more
    after the first; every feature group, lse and sinks included, agrees with the reference.  In a process
    whose triton runs in its interpreter (another module's CPU tests imported it so) it runs in a fresh one."""
    if flex_mod._triton_interpreting():
        from triton_import import rerun_compiled

        rerun_compiled(__file__, "test_cuda_compiled_default_matches_reference")
        return
    monkeypatch.delenv("ATTNSOLVE_FLEX_COMPILE")
    g = torch.Generator().manual_seed(1)
    counts = []
    for step in range(10):
        lens = [100 + 37 * step, 700 + 37 * step, 5 + 37 * step, 2000 + 37 * step]
        _check(*make_batch([1] * 4, lens, 32, 8, 128, 16, dtype=torch.bfloat16, seed=step), device="cuda",
               logits_soft_cap=30.0)
        counts.append(_graphs())
    assert counts[-1] - counts[0] <= 1, counts
    for opts in (dict(sinks=torch.randn(32, generator=g), return_lse=True), dict(sliding_window=(64, 0)),
                 dict(alibi_slopes=torch.rand(32, generator=g)), dict(causal=False, sliding_window=(40, 9)),
                 dict(mm_prefix_ranges=[[(0, 50)], [(10, 300)], [], []]),
                 dict(k_scale=torch.rand(4, 8, generator=g) + 0.5, v_scale=0.5)):
        batch = make_batch([1, 300, 33, 1], [500, 300, 40, 2100], 32, 8, 128, 16, dtype=torch.bfloat16, seed=2)
        _check(*batch, device="cuda", **opts)
    fp8 = make_batch([1, 200], [900, 200], 32, 8, 128, 16, dtype=torch.bfloat16, cache_dtype=torch.float8_e4m3fn)
    _check(*fp8, device="cuda", k_scale=0.5, v_scale=2.0)
