"""CPU_ATTN's C++ decode entry (``csrc/cpu_decode_entry.cpp``, ``_cpu_ext.load_entry``): for a plain decode call
it reads the tensors, checks the metadata and allocates the output in C++, then makes the kernel call the Python
paths make; the same answer bit for bit, and None (the Python path's turn, with its errors) for every call it
does not take."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from attnsolve.kernels import _cpp_build, _cpu_ext  # noqa: E402
from attnsolve.kernels import cpu as cpu_mod  # noqa: E402
from attnsolve.kernels.cpu import cpu_attn, cpu_attn_impl  # noqa: E402
from attnsolve.kernels.metadata import AttentionMetadata  # noqa: E402
from paged_cases import BLOCK_SIZES, FP8, HEAD_SIZES, make_batch  # noqa: E402

HAS_EXT = _cpu_ext.load() is not None
ENTRY = _cpu_ext.load_entry(cpu_mod._MIN_PARALLEL_WORK, cpu_mod._CHUNK_MIN, cpu_mod._CHUNK_MAX) if HAS_EXT else None
pytestmark = [pytest.mark.skipif(ENTRY is None, reason=f"no C++ decode entry: {_cpu_ext.entry_reason()}"),
              pytest.mark.usefixtures("one_thread")]


def _call(q, kc, vc, md, scale=None):
    return ENTRY(q, kc, vc, md.query_start_loc, md.seq_lens, md.block_table, scale)


@pytest.mark.skipif(not HAS_EXT, reason="CPU_ATTN extension not built")
def test_the_entry_is_built_where_the_headers_are():
    if _cpp_build.torch_ext_flags() is not None:
        assert ENTRY is not None, _cpu_ext.entry_reason()


@st.composite
def decode_batches(draw):
    """One query row per sequence, any dtype (fp8 caches too), head size, block size, GQA, scale."""
    b = draw(st.integers(1, 5))
    seq_lens = [draw(st.integers(1, 300)) for _ in range(b)]
    hkv = draw(st.sampled_from([1, 2, 4]))
    group = draw(st.sampled_from([1, 2, 4, 8]))
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
    cache = draw(st.sampled_from([None, *FP8])) if dtype != torch.float32 else None
    batch = make_batch([1] * b, seq_lens, hkv * group, hkv, draw(st.sampled_from(HEAD_SIZES)),
                       draw(st.sampled_from(BLOCK_SIZES)), dtype=dtype, cache_dtype=cache,
                       seed=draw(st.integers(0, 2**16)))
    return batch, draw(st.sampled_from([None, 0.125, 1, 0.07]))


@settings(max_examples=max(10, settings().max_examples // 3))
@given(decode_batches(), st.booleans())
def test_the_entry_gives_the_full_paths_answer(case, two_threads):
    (q, kc, vc, md), scale = case
    if two_threads:  # the work split as cpu.py's (threads from the parallel threshold on)
        torch.set_num_threads(2)
    try:
        full = cpu_attn_impl(q, kc, vc, md, scale=scale)
        got = _call(q, kc, vc, md, scale)
        assert got is not None
        assert got.dtype == q.dtype and got.shape == full.shape and got.is_contiguous() and not got.requires_grad
        assert torch.equal(got, full)
        assert torch.equal(cpu_attn(q, kc, vc, md, scale=scale), full)
    finally:
        torch.set_num_threads(1)


def test_cpu_attn_takes_the_entry(monkeypatch):
    q, kc, vc, md = make_batch([1, 1], [40, 23], 8, 2, 64, 16, dtype=torch.bfloat16)
    want = cpu_attn_impl(q, kc, vc, md)
    monkeypatch.setattr(cpu_mod, "_decode_fast", lambda *a: pytest.fail("the Python fast path ran"))
    assert torch.equal(cpu_attn(q, kc, vc, md), want)


class _Sub(torch.Tensor):
    pass


def _declined(q, kc, vc, md, scale=None):
    """The entry declines, and cpu_attn still answers as the full path (or raises its error)."""
    assert _call(q, kc, vc, md, scale) is None
    try:
        want = cpu_attn_impl(q, kc, vc, md, scale=scale)
    except ValueError as e:
        with pytest.raises(ValueError) as got:
            cpu_attn(q, kc, vc, md, scale=scale)
        assert str(got.value) == str(e)
        return
    assert torch.equal(cpu_attn(q, kc, vc, md, scale=scale), want)


@pytest.mark.parametrize("change", [
    "query subclass", "cache subclass", "int64 seq_lens", "int64 block_table", "strided block_table",
    "query last stride", "cache last stride", "fp8 query", "float64 query", "other value dtype",
    "value heads differ", "several rows", "a prefill row", "seq_len 0", "seq_len past the table",
    "block id out of range", "negative block id", "query_start_loc not at 0", "fewer rows than sequences",
])
def test_the_entry_declines(change):
    q_lens, seq_lens = [1, 1], [40, 23]
    if change == "several rows":
        q_lens = [1, 3]
    elif change == "a prefill row":
        q_lens = [1, 20]
    q, kc, vc, md = make_batch(q_lens, seq_lens, 8, 2, 64, 16, dtype=torch.bfloat16)
    qsl, sl, bt = md.query_start_loc, md.seq_lens, md.block_table
    if change == "query subclass":
        q = q.as_subclass(_Sub)
    elif change == "cache subclass":
        kc = kc.as_subclass(_Sub)
    elif change == "int64 seq_lens":
        sl = sl.long()
    elif change == "int64 block_table":
        bt = bt.long()
    elif change == "strided block_table":
        bt = torch.cat([bt, bt], 1)[:, ::2]
    elif change == "query last stride":
        q = q.transpose(1, 2).contiguous().transpose(1, 2)
    elif change == "cache last stride":
        kc = kc.transpose(2, 3).contiguous().transpose(2, 3)
    elif change == "fp8 query":
        q = q.to(torch.float8_e4m3fn)
    elif change == "float64 query":
        q = q.double()
    elif change == "other value dtype":
        vc = vc.half()
    elif change == "value heads differ":
        vc = vc[:, :, :1]
    elif change == "seq_len 0":
        sl = sl.clone()
        sl[1] = 0
    elif change == "seq_len past the table":
        sl = sl.clone()
        sl[0] = bt.shape[1] * kc.shape[1] + 1
    elif change == "block id out of range":
        bt = bt.clone()
        bt[0, 0] = kc.shape[0]
    elif change == "negative block id":
        bt = bt.clone()
        bt[1, 0] = -1
    elif change == "query_start_loc not at 0":
        qsl = qsl + 1
    elif change == "fewer rows than sequences":
        q = q[:1]
    _declined(q, kc, vc, AttentionMetadata(qsl, sl, bt))


@pytest.mark.parametrize("scale", [torch.tensor(0.1), True, 2**2000, "0.1"])
def test_a_scale_that_is_not_a_plain_number_is_declined(scale):
    q, kc, vc, md = make_batch([1, 1], [40, 23], 8, 2, 64, 16, dtype=torch.bfloat16)
    assert _call(q, kc, vc, md, scale) is None


def test_padding_past_a_sequences_blocks_is_not_read():
    """Only the blocks a sequence uses are checked (vLLM pads block tables; -1 past the end is fine)."""
    q, kc, vc, md = make_batch([1, 1], [40, 3], 8, 2, 64, 16, dtype=torch.bfloat16)
    bt = md.block_table.clone()
    bt[1, 1:] = -1
    md = AttentionMetadata(md.query_start_loc, md.seq_lens, bt)
    got = _call(q, kc, vc, md)
    assert got is not None and torch.equal(got, cpu_attn_impl(q, kc, vc, md))


@pytest.mark.parametrize("mode", ["inference", "no_grad"])
def test_the_output_is_torch_emptys_in_each_grad_mode(mode):
    q, kc, vc, md = make_batch([1, 1], [40, 23], 8, 2, 64, 16, dtype=torch.float32)
    ctx = torch.inference_mode() if mode == "inference" else torch.no_grad()
    with ctx:
        got = _call(q, kc, vc, md)
        like = torch.empty(2, 8, 64)
    assert got.is_inference() == like.is_inference()
    assert torch.equal(got, cpu_attn_impl(q, kc, vc, md))


def test_wrong_arity_is_a_type_error():
    with pytest.raises(TypeError, match="takes 7 arguments"):
        ENTRY(1, 2, 3)


def test_the_entry_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("ATTNSOLVE_CPU_ENTRY", "0")
    saved = dict(_cpu_ext._state)
    try:
        _cpu_ext._state.pop("entry", None)
        assert _cpu_ext.load_entry(1, 2, 3) is None
        assert _cpu_ext.entry_reason() == "disabled by ATTNSOLVE_CPU_ENTRY=0"
    finally:
        _cpu_ext._state.clear()
        _cpu_ext._state.update(saved)
