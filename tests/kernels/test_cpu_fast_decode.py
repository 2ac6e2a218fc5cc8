"""CPU_ATTN's decode fast path (``cpu._decode_fast``): the same C++ call as the full path, taken only when
the metadata's checks already passed for its current state, declined (None) in every other case."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from attnsolve.kernels import _cpu_ext  # noqa: E402
from attnsolve.kernels.cpu import DECODE_MAX_ROWS, _amx_rows, _amx_shape, _decode_fast, cpu_attn, cpu_attn_impl  # noqa: E402
from attnsolve.kernels.metadata import AttentionMetadata  # noqa: E402
from paged_cases import BLOCK_SIZES, FP8, HEAD_SIZES, make_batch  # noqa: E402

HAS_EXT = _cpu_ext.load() is not None
pytestmark = [pytest.mark.skipif(not HAS_EXT, reason=f"CPU_ATTN extension not built: {_cpu_ext.reason()}"),
              pytest.mark.usefixtures("one_thread")]


@st.composite
def decode_batches(draw):
    """A decode batch (1 to DECODE_MAX_ROWS rows per sequence) of any dtype, head size, block size, GQA."""
    b = draw(st.integers(1, 4))
    seq_lens = [draw(st.integers(1, 70)) for _ in range(b)]
    q_lens = [draw(st.integers(1, min(L, DECODE_MAX_ROWS))) for L in seq_lens]
    hkv = draw(st.sampled_from([1, 2, 4]))
    group = draw(st.sampled_from([1, 2, 4, 8]))
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
    cache = draw(st.sampled_from([None, *FP8])) if dtype != torch.float32 else None
    batch = make_batch(q_lens, seq_lens, hkv * group, hkv, draw(st.sampled_from(HEAD_SIZES)),
                       draw(st.sampled_from(BLOCK_SIZES)), dtype=dtype, cache_dtype=cache,
                       seed=draw(st.integers(0, 2**16)))
    scale = draw(st.sampled_from([None, 0.125, 1]))
    return batch, scale


@settings(max_examples=max(10, settings().max_examples // 3))
@given(decode_batches())
def test_fast_path_gives_the_full_paths_answer(case):
    (q, kc, vc, md), scale = case
    fast = _decode_fast(q, kc, vc, md, scale)  # fresh metadata: checked here
    full = cpu_attn_impl(q, kc, vc, md, scale=scale)
    runs = md.query_start_loc.diff().tolist()
    if _amx_shape(q, kc, vc) and _amx_rows(max(runs), q.shape[1] // kc.shape[2], q.dtype):
        assert fast is None  # runs of several rows go to the AMX prefill kernel (test_cpu_prefill.py)
        assert torch.equal(cpu_attn(q, kc, vc, md, scale=scale), full)
        return
    assert fast is not None
    assert torch.equal(fast, full)
    assert torch.equal(cpu_attn(q, kc, vc, md, scale=scale), full)


def _checked_batch(q_lens=(1, 1), seq_lens=(40, 23), dtype=torch.bfloat16):
    q, kc, vc, md = make_batch(list(q_lens), list(seq_lens), 8, 2, 64, 16, dtype=dtype)
    cpu_attn_impl(q, kc, vc, md)  # the full path checks and memoises the metadata state
    assert _decode_fast(q, kc, vc, md, None) is not None
    return q, kc, vc, md


class _Sub(torch.Tensor):
    pass


def test_a_prefill_row_takes_the_full_path():
    q, kc, vc, md = make_batch([1, 17], [40, 23], 8, 2, 64, 16, dtype=torch.bfloat16)
    full = cpu_attn_impl(q, kc, vc, md)
    assert _decode_fast(q, kc, vc, md, None) is None  # checked, but not a decode batch
    assert torch.equal(cpu_attn(q, kc, vc, md), full)


@pytest.mark.parametrize("change", [
    "query subclass", "int64 seq_lens", "query last stride", "cache last stride", "tensor scale",
    "other metadata type", "fp8 query",
])
def test_fast_path_declines(change):
    q, kc, vc, md = _checked_batch()
    scale = None
    if change == "query subclass":
        q = q.as_subclass(_Sub)
    elif change == "int64 seq_lens":
        md = AttentionMetadata(md.query_start_loc, md.seq_lens.long(), md.block_table)
    elif change == "query last stride":
        q = q.transpose(1, 2).contiguous().transpose(1, 2)
    elif change == "cache last stride":
        kc = kc.transpose(2, 3).contiguous().transpose(2, 3)
    elif change == "tensor scale":
        scale = torch.tensor(0.1)
    elif change == "other metadata type":
        class Md(AttentionMetadata):
            pass
        md = Md(md.query_start_loc, md.seq_lens, md.block_table)
        cpu_attn_impl(q, kc, vc, md)
    elif change == "fp8 query":
        q = q.to(torch.float8_e4m3fn)
    assert _decode_fast(q, kc, vc, md, scale) is None
    full = cpu_attn_impl(q, kc, vc, md, scale=scale)
    assert torch.equal(cpu_attn(q, kc, vc, md, scale=scale), full)


@pytest.mark.parametrize("opt", [
    dict(sliding_window=8), dict(logits_soft_cap=5.0), dict(sinks=torch.zeros(8)), dict(k_scale=0.5),
    dict(causal=False), dict(return_lse=True),
])
def test_options_take_the_full_path(opt, monkeypatch):
    q, kc, vc, md = _checked_batch()
    called = []
    monkeypatch.setattr("attnsolve.kernels.cpu._decode_fast", lambda *a: called.append(1))
    got = cpu_attn(q, kc, vc, md, **opt)
    assert not called
    want = cpu_attn_impl(q, kc, vc, md, **opt)
    if isinstance(want, tuple):
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    else:
        assert torch.equal(got, want)


def _errors(fn):
    try:
        fn()
    except ValueError as e:
        return str(e)
    return None


def test_a_changed_block_table_is_checked_again(monkeypatch):
    q, kc, vc, md = _checked_batch()
    md.block_table[0, 0] = kc.shape[0] + 5  # in place: the version counter moves, the memo no longer holds
    calls = []
    real = _cpu_ext._state["fn"]
    monkeypatch.setitem(_cpu_ext._state, "fn", lambda *a: calls.append(1) or real(*a))
    fast = _errors(lambda: _decode_fast(q, kc, vc, md, None))
    assert not calls  # refused before the kernel (whose own range check would refuse it too)
    monkeypatch.setitem(_cpu_ext._state, "fn", real)
    assert fast is not None and "block_table entries in [0, num_blocks=" in fast
    assert fast == _errors(lambda: cpu_attn_impl(q, kc, vc, md))  # the full path's words


def test_grown_seq_lens_are_checked_again():
    q, kc, vc, md = _checked_batch(seq_lens=(40, 23))
    md.seq_lens += 1  # the next decode step, in place (vLLM's persistent buffers)
    fast = _decode_fast(q, kc, vc, md, None)
    assert fast is not None and torch.equal(fast, cpu_attn_impl(q, kc, vc, md))
    md.seq_lens[0] = 10_000  # beyond the table's capacity: refused as the full path refuses it, not read
    err = _errors(lambda: cpu_attn(q, kc, vc, md))
    assert err is not None and "seq_lens <=" in err
    assert err == _errors(lambda: cpu_attn_impl(q, kc, vc, md))


def test_inference_mode_metadata():
    """vLLM runs under torch.inference_mode: its tensors have no version counter (no memo is kept; every
    call checks, and an in-place update is seen)."""
    with torch.inference_mode():
        q, kc, vc, md = make_batch([1, 2], [40, 23], 8, 2, 64, 16, dtype=torch.bfloat16)
        fast = _decode_fast(q, kc, vc, md, None)
        assert fast is not None and torch.equal(fast, cpu_attn_impl(q, kc, vc, md))
        md.seq_lens += 1
        fast = _decode_fast(q, kc, vc, md, None)
        assert torch.equal(fast, cpu_attn_impl(q, kc, vc, md))
        md.block_table[1, 0] = -1
        with pytest.raises(ValueError, match="block_table entries"):
            cpu_attn(q, kc, vc, md)
        md.block_table[1, 0] = 0
        k = torch.tensor(0.5)
        a = cpu_attn(q, kc, vc, md, k_scale=k)
        k.fill_(2.0)  # read again: an inference tensor's value is not memoised
        assert not torch.equal(a, cpu_attn(q, kc, vc, md, k_scale=k))
