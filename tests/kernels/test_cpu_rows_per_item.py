"""CPU_ATTN's decode kernel with several query rows per work item (``rows_per_item``): the rows' heads share each K
and V row read.  The outputs must equal one row per item's bit for bit (masked diagonal and window edges give
probability exactly 0), and long prefills take this path only where it was measured faster (``_vector_prefill``)."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from attnsolve.kernels import _cpu_ext  # noqa: E402
from attnsolve.kernels import cpu as cpu_mod  # noqa: E402
from attnsolve.kernels.cpu import cpu_attn, cpu_attn_impl  # noqa: E402
from attnsolve.kernels.reference import paged_attention_reference  # noqa: E402
from paged_cases import close, make_batch  # noqa: E402

HAS_EXT = _cpu_ext.load() is not None
pytestmark = pytest.mark.skipif(not HAS_EXT, reason=f"CPU_ATTN extension not built: {_cpu_ext.reason()}")

# rows of 1, 5, 37 and 16 query rows (decode, speculative, prefill with context, a whole prefill) over 40 to 70 keys
_Q_LENS, _SEQ_LENS = [1, 5, 37, 16], [40, 23, 70, 16]


def _run(q, kc, vc, md, rows, *, causal=True, window=None, cap=None, sinks=None, ks=1.0, vs=1.0):
    out = torch.full((q.shape[0], q.shape[1], vc.shape[3]), float("nan"), dtype=q.dtype)
    cpu_mod._decode_ext(_cpu_ext.load(), q, kc, vc, md, list(range(md.seq_lens.numel())), out,
                        scale=q.shape[-1] ** -0.5, causal=causal, window=window, cap=cap, sinks=sinks, ks=ks, vs=vs,
                        rows_per_item=rows)
    return out


_CASES = [
    # (query dtype, cache dtype, heads, KV heads, head size)
    (torch.bfloat16, None, 8, 2, 64), (torch.float32, None, 4, 4, 128), (torch.float16, None, 16, 2, 32),
    (torch.bfloat16, torch.float8_e4m3fn, 8, 2, 64), (torch.float32, None, 6, 2, 80), (torch.bfloat16, None, 2, 1, 48),
]


@pytest.mark.parametrize("dtype,cache,H,hkv,D", _CASES)
@pytest.mark.parametrize("opts", [dict(), dict(window=7), dict(window=40, cap=20.0), dict(causal=False),
                                  dict(causal=False, window=9), dict(sinks=True, ks=0.5, vs=2.0)])
def test_rows_per_item_equal_one_row_per_item(dtype, cache, H, hkv, D, opts):
    """Every grouping of rows (2, 3, 8, 16 per item; a sequence's last group shorter) gives exactly the output of
    one row per item, with windows (rows whose windows start at different keys), soft-cap, sinks, scales, and
    non-causal rows; head 48 has no tile (the kernel keeps one row per item there)."""
    opts = dict(opts)
    if opts.pop("sinks", False):
        opts["sinks"] = torch.linspace(-1, 1, H)
    torch.set_num_threads(2)
    q, kc, vc, md = make_batch(_Q_LENS, _SEQ_LENS, H, hkv, D, 16, dtype=dtype, cache_dtype=cache, seed=D)
    one = _run(q, kc, vc, md, 1, **opts)
    assert not one.isnan().any()
    for rows in (2, 3, 8, 16):
        assert torch.equal(_run(q, kc, vc, md, rows, **opts), one), rows


def test_a_long_prefill_in_groups_of_rows_matches_the_reference():
    """300 causal rows after 40 keys of context in groups of 8 rows, two threads (the team merges the rows; rows
    are not split along their keys, so the comparison is with groups of 2, not one row per item, whose rows are)."""
    torch.set_num_threads(2)
    q, kc, vc, md = make_batch([300], [340], 8, 2, 128, 16, dtype=torch.bfloat16, seed=5)
    out = _run(q, kc, vc, md, 8)
    assert torch.equal(out, _run(q, kc, vc, md, 2))
    close(out, paged_attention_reference(q, kc, vc, md), torch.bfloat16)


def _calls(monkeypatch):
    calls = []
    real = cpu_mod._decode_ext
    monkeypatch.setattr(cpu_mod, "_decode_ext",
                        lambda *a, **k: calls.append((list(a[5]), k.get("rows_per_item", 1))) or real(*a, **k))
    return calls


needs_tile = pytest.mark.skipif(not _cpu_ext.tile_ok(128), reason="no AVX-512 tile in this build")


@needs_tile
@pytest.mark.parametrize("dtype,cache,n,vector", [
    (torch.bfloat16, None, 300, True), (torch.float16, None, 300, True), (torch.float32, None, 300, True),
    (torch.bfloat16, torch.float8_e4m3fn, 300, True),
    (torch.float32, None, -300, False),  # K and V beyond the float32 bound (set to 300 rows' worth below)
    (torch.float32, torch.bfloat16, 300, False),  # a cache of another dtype: gathered for the flash kernel
])
def test_which_prefills_take_the_decode_kernel(monkeypatch, dtype, cache, n, vector):
    """Where no AMX prefill kernel runs, a prefill goes to the decode kernel in groups of rows (16-bit at any
    length, float32 while K and V fit the measured bound); the answer is the reference's either way."""
    monkeypatch.setattr(cpu_mod, "_amx_shape", lambda *a: False)
    if n < 0:  # the cache-size bound: 303 keys of 2 KV heads of 128 + 128 float32 are 620,544 bytes
        n = -n
        monkeypatch.setattr(cpu_mod, "_VECTOR_PREFILL_F32_KV_BYTES", 600_000)
    calls = _calls(monkeypatch)
    q, kc, vc, md = make_batch([n, 1], [n + 3, 90], 8, 2, 128, 16, dtype=dtype, cache_dtype=cache, seed=n)
    close(cpu_attn_impl(q, kc, vc, md), paged_attention_reference(q, kc, vc, md), dtype)
    rows = cpu_mod._rows_per_item(4, dtype)
    assert calls == ([([0, 1], rows)] if vector else [([1], 1)])


@needs_tile
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_soft_capped_prefills_take_it_and_amx_machines_keep_their_kernel(monkeypatch, dtype):
    """Soft-capped prefills at any length (torch's flash kernel has no soft-cap; float32 too beyond the bound), with
    the kernel's vector tanh; a CPU with the AMX prefill kernel keeps that kernel."""
    monkeypatch.setattr(cpu_mod, "_amx_shape", lambda *a: False)
    monkeypatch.setattr(cpu_mod, "_VECTOR_PREFILL_F32_KV_BYTES", 100_000)  # (200 rows stand for the long ones)
    calls = _calls(monkeypatch)
    n = 200
    q, kc, vc, md = make_batch([n], [n], 8, 2, 128, 16, dtype=dtype, seed=2)
    for cap in (30.0, 1.5):
        close(cpu_attn_impl(q, kc, vc, md, logits_soft_cap=cap),
              paged_attention_reference(q, kc, vc, md, logits_soft_cap=cap), dtype)
    assert calls == [([0], cpu_mod._rows_per_item(4, dtype))] * 2
    assert not cpu_mod._vector_prefill(n, n, q, kc, vc, 30.0, True)
    assert cpu_mod._vector_prefill(n, n, q, kc, vc, 30.0, False)


@needs_tile
def test_windowed_float32_prefills_take_it_at_any_length(monkeypatch):
    """A window shorter than the keys: torch's kernel would compute every key under a mask, this kernel only the
    window's, so float32 goes there beyond its bound too (the bound set to 100,000 bytes of K and V here)."""
    monkeypatch.setattr(cpu_mod, "_amx_shape", lambda *a: False)
    monkeypatch.setattr(cpu_mod, "_VECTOR_PREFILL_F32_KV_BYTES", 100_000)  # (230 keys of 2 KV heads: 235,520 bytes)
    calls = _calls(monkeypatch)
    q, kc, vc, md = make_batch([200], [230], 8, 2, 64, 16, dtype=torch.float32, seed=6)
    sinks = torch.randn(8)
    close(cpu_attn_impl(q, kc, vc, md, sliding_window=50, sinks=sinks),
          paged_attention_reference(q, kc, vc, md, sliding_window=50, sinks=sinks), torch.float32)
    assert calls == [([0], 4)]
    calls.clear()
    close(cpu_attn_impl(q, kc, vc, md, sliding_window=500), paged_attention_reference(q, kc, vc, md), torch.float32)
    assert calls == []  # a window that covers every key is no window: the bound holds


@needs_tile
def test_speculative_decode_rows_share_their_reads(monkeypatch):
    """A decode batch of 4-row runs (speculative decoding) groups each sequence's rows (the common call's path
    too); one-row batches keep one row per item."""
    monkeypatch.setattr(cpu_mod, "_amx_rows", lambda *a: False)
    q, kc, vc, md = make_batch([4, 4, 1], [500, 90, 33], 8, 2, 128, 16, dtype=torch.bfloat16, seed=4)
    calls = _calls(monkeypatch)
    ref = paged_attention_reference(q, kc, vc, md)
    close(cpu_attn_impl(q, kc, vc, md, sinks=torch.zeros(8)), ref, torch.bfloat16)
    assert calls == [([0, 1, 2], 4)]
    close(cpu_attn(q, kc, vc, md), ref, torch.bfloat16)  # the common call's entry (_decode_fast)
    q1, kc1, vc1, md1 = make_batch([1, 1], [500, 90], 8, 2, 128, 16, dtype=torch.bfloat16, seed=4)
    calls.clear()
    cpu_attn_impl(q1, kc1, vc1, md1, sinks=torch.zeros(8))
    assert calls == [([0, 1], 1)]


def test_rows_per_item_policy():
    """32 query heads per K/V read for 16-bit queries, 16 for float32 (48 in runs of 4096 rows or more), at most
    16 rows."""
    got = {(g, dt): cpu_mod._rows_per_item(g, dt) for g, dt in itertools.product([1, 4, 8, 32, 64],
                                                                                 [torch.bfloat16, torch.float32])}
    assert got == {(1, torch.bfloat16): 16, (4, torch.bfloat16): 8, (8, torch.bfloat16): 4, (32, torch.bfloat16): 1,
                   (64, torch.bfloat16): 1, (1, torch.float32): 16, (4, torch.float32): 4, (8, torch.float32): 2,
                   (32, torch.float32): 1, (64, torch.float32): 1}
    long = {g: cpu_mod._rows_per_item(g, torch.float32, cpu_mod._F32_LONG_RUN) for g in (1, 2, 4, 8, 16, 64)}
    assert long == {1: 16, 2: 16, 4: 12, 8: 6, 16: 3, 64: 1}
    assert cpu_mod._rows_per_item(4, torch.bfloat16, 8192) == 8  # (16-bit: the same at any length)
    assert cpu_mod._grouping(8192, 4, torch.float32, 128) == 12 and cpu_mod._grouping(4095, 4, torch.float32, 128) == 4
