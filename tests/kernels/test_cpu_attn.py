"""CPU_ATTN agrees with the float64 reference: every path (C++ decode, flash prefill, tiled torch)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402

from attnsolve.kernels import _cpu_ext  # noqa: E402
from attnsolve.kernels.cpu import DECODE_MAX_ROWS, cpu_attn, cpu_attn_impl  # noqa: E402
from attnsolve.kernels.reference import paged_attention_reference  # noqa: E402
from paged_cases import close, make_batch, problems  # noqa: E402

HAS_EXT = _cpu_ext.load() is not None
needs_ext = pytest.mark.skipif(not HAS_EXT, reason=f"CPU_ATTN extension not built: {_cpu_ext.reason()}")
_N = max(10, settings().max_examples // 3)  # ci: 50 examples


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/kernels/conftest.py)


@needs_ext
@settings(max_examples=_N)
@given(problems())
def test_default_path_matches_reference(case):
    (q, kc, vc, md), opts = case
    close(cpu_attn(q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts), q.dtype)


@settings(max_examples=max(10, _N // 2))
@given(problems())
def test_torch_path_matches_reference(case):
    """No extension: flash prefill (tiled path for soft-cap) and the torch decode fallback."""
    (q, kc, vc, md), opts = case
    close(cpu_attn_impl(q, kc, vc, md, use_ext=False, **opts), paged_attention_reference(q, kc, vc, md, **opts),
          q.dtype)


@settings(max_examples=max(5, _N // 5))
@given(problems())
def test_tiled_torch_path_matches_reference(case):
    (q, kc, vc, md), opts = case
    out = cpu_attn_impl(q, kc, vc, md, use_ext=False, use_flash=False, **opts)
    close(out, paged_attention_reference(q, kc, vc, md, **opts), q.dtype)


@needs_ext
@pytest.mark.parametrize("head", [32, 80, 128, 224, 256, 48])  # 48: not a tile size, portable C++ loop
@pytest.mark.parametrize("dtype,cache", [(torch.float32, None), (torch.bfloat16, None), (torch.float16, None),
                                         (torch.bfloat16, torch.float8_e4m3fn), (torch.float32, torch.float8_e5m2)])
def test_decode_long_context_chunks_merge(head, dtype, cache):
    """Decode rows long enough to be split into several key chunks (log-sum-exp merge), GQA 4, two threads."""
    torch.set_num_threads(2)
    q, kc, vc, md = make_batch([1, 1, 2], [700, 1500, 333], 8, 2, head, 16, dtype=dtype, cache_dtype=cache, seed=1)
    opts = dict(sinks=torch.randn(8), k_scale=0.5, v_scale=2.0) if cache else {}
    close(cpu_attn(q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts), dtype)


@pytest.mark.parametrize("ext", [pytest.param(True, marks=needs_ext), False])
@pytest.mark.parametrize("n", [65, 130, 300, 1087, 1088])  # chunk edges: 1..4 chunks of >= 64 rows, the bound
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_causal_prefill_in_row_chunks(ext, n, dtype, monkeypatch):
    """A causal prefill of 65..1087 rows runs as row chunks against the keys each chunk sees (the first
    with is_causal, the others with a mask sliced from one buffer); 1088 rows is one call.  Sinks use the
    merged log-sum-exp; a batch with a second sequence writes into the shared output."""
    from attnsolve.kernels import cpu as cpu_mod

    calls = []
    real = cpu_mod._flash_causal_chunked
    monkeypatch.setattr(cpu_mod, "_flash_causal_chunked", lambda *a: calls.append(a[0].shape[2]) or real(*a))
    monkeypatch.setattr(cpu_mod, "_prefill_amx", lambda *a, **k: None)  # the torch path (AMX's: test_cpu_prefill)
    monkeypatch.setattr(cpu_mod, "_vector_prefill", lambda *a: False)  # (the decode kernel's: test_cpu_rows_per_item)
    # the path itself for every size below the bound (which sizes take it depends on threads and dtype,
    # measured: test_chunk_policy)
    monkeypatch.setattr(cpu_mod, "_chunk_prefill", lambda rows, dt: cpu_mod._CHUNK_ROWS < rows < cpu_mod._CHUNK_BELOW)
    q, kc, vc, md = make_batch([n, 1], [n, 90], 4, 2, 32, 16, dtype=dtype, seed=n)
    sinks = torch.randn(4)
    close(cpu_attn_impl(q, kc, vc, md, use_ext=ext, sinks=sinks),
          paged_attention_reference(q, kc, vc, md, sinks=sinks), dtype)
    assert calls == ([] if n >= cpu_mod._CHUNK_BELOW else [n])


@pytest.mark.parametrize("amx", [True, False])
def test_chunk_policy(monkeypatch, amx):
    """Row chunks where they measured faster than one call: any dtype on one thread; on more threads float32
    at 288 to 767 rows, and 16-bit queries only where torch cannot run them on AMX tiles (bf16 288 to 671 rows,
    fp16 288 to 575; with AMX the causal work torch wastes costs less than the extra calls, docs/kernels.md)."""
    from attnsolve.kernels import cpu as cpu_mod

    monkeypatch.setattr(cpu_mod, "_torch_amx", lambda dtype: amx)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert cpu_mod._chunk_prefill(512, torch.bfloat16) and cpu_mod._chunk_prefill(1000, torch.float32)
        assert not cpu_mod._chunk_prefill(64, torch.float32) and not cpu_mod._chunk_prefill(1088, torch.float32)
        torch.set_num_threads(2)
        assert cpu_mod._chunk_prefill(512, torch.float32) and cpu_mod._chunk_prefill(320, torch.float32)
        assert not cpu_mod._chunk_prefill(256, torch.float32) and not cpu_mod._chunk_prefill(768, torch.float32)
        assert cpu_mod._chunk_prefill(512, torch.bfloat16) is not amx
        assert cpu_mod._chunk_prefill(640, torch.bfloat16) is not amx
        assert cpu_mod._chunk_prefill(512, torch.float16) is not amx
        assert not cpu_mod._chunk_prefill(704, torch.bfloat16) and not cpu_mod._chunk_prefill(576, torch.float16)
        assert not cpu_mod._chunk_prefill(256, torch.bfloat16) and not cpu_mod._chunk_prefill(256, torch.float16)
    finally:
        torch.set_num_threads(saved)


def test_torch_amx_probe_reads_this_cpu():
    """The probe behind the 16-bit chunk rule answers from torch's own CPU capability report (where it has one)."""
    from attnsolve.kernels import cpu as cpu_mod

    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is None:
        assert cpu_mod._torch_amx(torch.bfloat16)
        return
    flags = caps()
    assert cpu_mod._torch_amx(torch.bfloat16) is bool(flags.get("amx_bf16"))
    assert cpu_mod._torch_amx(torch.float16) is bool(flags.get("amx_fp16"))


@needs_ext
def test_mixed_batch_routes_short_rows_to_extension():
    """A batch mixing decode, speculative and prefill rows gives the same output per sequence."""
    q_lens = [1, DECODE_MAX_ROWS, DECODE_MAX_ROWS + 1, 40]
    q, kc, vc, md = make_batch(q_lens, [50, 60, 70, 40], 4, 2, 64, 8, seed=3)
    out = cpu_attn(q, kc, vc, md, sliding_window=20)
    close(out, paged_attention_reference(q, kc, vc, md, sliding_window=20), q.dtype)
    close(out, cpu_attn_impl(q, kc, vc, md, sliding_window=20, use_ext=False), q.dtype)


@pytest.mark.parametrize("ext", [pytest.param(True, marks=needs_ext), False])
def test_value_head_size_differs_and_strided_query(ext):
    """head_size_v != head_size (MLA-style prefill caches) and a query that is a strided view."""
    q, kc, _, md = make_batch([1, 20, 3], [30, 20, 9], 4, 2, 64, 16, seed=13)
    vc = torch.randn(kc.shape[0], kc.shape[1], 2, 32)
    q = torch.cat([q, q], dim=1)[:, ::2]
    assert not q.is_contiguous()
    sinks = torch.randn(4)
    out = cpu_attn_impl(q, kc, vc, md, use_ext=ext, sinks=sinks)
    assert out.shape == (q.shape[0], 4, 32)
    close(out, paged_attention_reference(q, kc, vc, md, sinks=sinks), q.dtype)


@pytest.mark.parametrize("opts", [{}, dict(sliding_window=6, sinks=torch.linspace(-1, 1, 8)),
                                  dict(causal=False), dict(k_scale=0.5, v_scale=2.0)])
@pytest.mark.parametrize("cache", [None, torch.float8_e5m2])
def test_torch_fallback_batches_short_rows(opts, cache, monkeypatch):
    """No extension: short-row sequences of similar length go through one padded flash call."""
    from attnsolve.kernels import cpu as cpu_mod

    calls = []
    real = cpu_mod._short_rows_batched
    monkeypatch.setattr(cpu_mod, "_short_rows_batched", lambda *a, **k: calls.append(1) or real(*a, **k))
    q, kc, vc, md = make_batch([1, 3, 1, 2, 40], [30, 27, 33, 29, 40], 8, 2, 64, 8, cache_dtype=cache, seed=15)
    out = cpu_attn_impl(q, kc, vc, md, use_ext=False, **opts)
    assert calls == [1]
    close(out, paged_attention_reference(q, kc, vc, md, **opts), q.dtype)


@pytest.mark.parametrize("ext", [pytest.param(True, marks=needs_ext), False])
def test_consecutive_blocks_are_read_in_place(ext):
    """Sequences whose blocks are consecutive in the cache (a fresh allocation) take the no-copy view."""
    q, kc, vc, md = make_batch([40, 1, 25], [40, 30, 50], 4, 2, 32, 8, seed=16)  # 5 + 4 + 7 blocks + 3 spare
    md.block_table.zero_()
    md.block_table[0, :5] = torch.arange(0, 5, dtype=torch.int32)
    md.block_table[1, :4] = torch.tensor([18, 12, 16, 13], dtype=torch.int32)
    md.block_table[2, :7] = torch.arange(5, 12, dtype=torch.int32)
    for b in (14, 15, 17):  # blocks no table uses
        kc[b] = float("nan")
        vc[b] = float("nan")
    sinks = torch.randn(4)
    close(cpu_attn_impl(q, kc, vc, md, use_ext=ext, sinks=sinks),
          paged_attention_reference(q, kc, vc, md, sinks=sinks), q.dtype)


def test_empty_query_rows_and_tensor_scales():
    q, kc, vc, md = make_batch([0, 3, 0], [5, 9, 1], 4, 4, 32, 8, cache_dtype=torch.float8_e4m3fn, seed=2)
    opts = dict(k_scale=torch.tensor(0.5), v_scale=torch.tensor(4.0))
    close(cpu_attn(q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts), q.dtype)


def test_does_not_touch_blocks_outside_the_tables():
    """NaN in every block the tables do not reference changes nothing (no whole-cache pass)."""
    q, kc, vc, md = make_batch([1, 20], [33, 20], 4, 2, 64, 16, seed=4)
    used = set()
    for i, L in enumerate(md.seq_lens.tolist()):
        used |= set(md.block_table[i, : -(-L // 16)].tolist())
    for b in range(kc.shape[0]):
        if b not in used:
            kc[b] = float("nan")
            vc[b] = float("nan")
    ref = paged_attention_reference(q, kc, vc, md)
    assert not ref.isnan().any()
    close(cpu_attn(q, kc, vc, md), ref, q.dtype)
    close(cpu_attn_impl(q, kc, vc, md, use_ext=False), ref, q.dtype)


@pytest.mark.parametrize("bad,match", [
    (lambda q, k, v: (q[:, :3], k, v), "divisible"),
    (lambda q, k, v: (q.to(torch.float64), k, v), "query dtype"),
    (lambda q, k, v: (q, k, v.to(torch.float16)), "one dtype"),
    (lambda q, k, v: (q[0], k, v), "num_tokens, num_heads, head_size"),
])
def test_bad_input_is_a_value_error(bad, match):
    q, kc, vc, md = make_batch([1], [5], 4, 2, 32, 8)
    with pytest.raises(ValueError, match=match):
        cpu_attn(*bad(q, kc, vc), md)


@pytest.mark.parametrize("ext", [pytest.param(True, marks=needs_ext), False])
def test_bad_block_table_is_an_error_not_a_wild_read(ext):
    q, kc, vc, md = make_batch([1, 2], [20, 9], 4, 2, 32, 8)
    md.block_table[1, 1] = kc.shape[0] + 5
    with pytest.raises((ValueError, IndexError)):
        cpu_attn_impl(q, kc, vc, md, use_ext=ext)
    md.block_table[1, 1] = 0
    md.block_table[0, 2] = -1
    with pytest.raises((ValueError, IndexError)):
        cpu_attn_impl(q, kc, vc, md, use_ext=ext)
    md.seq_lens[0] = 9 * 8  # more tokens than the table has columns for
    md._host = None
    with pytest.raises(ValueError, match="block_table columns"):
        cpu_attn_impl(q, kc, vc, md, use_ext=ext)


def test_query_rows_beyond_context_rejected():
    q, kc, vc, md = make_batch([3], [3], 2, 2, 32, 8)
    md.seq_lens[0] = 2
    md._host = None
    with pytest.raises(ValueError, match="seq_len"):
        cpu_attn(q, kc, vc, md)


def test_extension_disabled_by_env(monkeypatch):
    monkeypatch.setenv("ATTNSOLVE_CPU_EXT", "0")
    _cpu_ext._reset_for_tests()
    try:
        assert _cpu_ext.load() is None
        assert "ATTNSOLVE_CPU_EXT" in _cpu_ext.reason()
        q, kc, vc, md = make_batch([1, 4], [9, 30], 4, 2, 32, 8)
        close(cpu_attn(q, kc, vc, md), paged_attention_reference(q, kc, vc, md), q.dtype)
        with pytest.raises(RuntimeError, match="extension unavailable"):
            cpu_attn_impl(q, kc, vc, md, use_ext=True)
    finally:
        monkeypatch.delenv("ATTNSOLVE_CPU_EXT")
        _cpu_ext._reset_for_tests()


def test_extension_without_compiler_falls_back(monkeypatch, tmp_path):
    """No usable compiler: load() returns None with the reason, and the kernel still answers."""
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("ATTNSOLVE_CACHE_DIR", str(tmp_path / "cache"))
    _cpu_ext._reset_for_tests()
    try:
        assert _cpu_ext.load() is None
        assert "no-such-compiler" in _cpu_ext.reason() or "No such file" in _cpu_ext.reason()
        q, kc, vc, md = make_batch([1, 4], [9, 30], 4, 2, 32, 8)
        close(cpu_attn(q, kc, vc, md), paged_attention_reference(q, kc, vc, md), q.dtype)
    finally:
        monkeypatch.undo()
        _cpu_ext._reset_for_tests()


@pytest.mark.parametrize("heads", [(32, 2), (24, 2), (40, 4), (16, 1)])  # GQA 16, 12, 10, 16
@pytest.mark.parametrize("head,bs", [(128, 16), (64, 1), (256, 32)])
def test_fp16_decode_large_groups(heads, head, bs):
    """fp16 decode with 10 or more query heads per KV head: on a CPU with AMX tiles this takes the
    two-term bf16 split path (docs/kernels.md), elsewhere the FMA path; both against the reference,
    with sinks, a window and soft-capping."""
    H, hkv = heads
    q, kc, vc, md = make_batch([1, 1, 2], [700, 37, 333], H, hkv, head, bs, dtype=torch.float16, seed=H + head)
    for opts in ({}, {"sinks": torch.randn(H)}, {"sliding_window": 100, "logits_soft_cap": 20.0}):
        close(cpu_attn(q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts), torch.float16)


def _hnd(cache: torch.Tensor) -> torch.Tensor:
    """The same values in vLLM's CPU layout, [blocks, kv heads, block size, head] in memory, viewed as
    [blocks, block size, kv heads, head] (what paged_attention takes): a token's KV heads are not one run."""
    return cache.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)


@needs_ext
@pytest.mark.parametrize("cache", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("heads,kv_heads,head,block", [(32, 8, 128, 16), (16, 2, 64, 32), (8, 8, 96, 8),
                                                       (12, 4, 256, 24), (24, 3, 128, 16)])
def test_fp8_decode_in_cpu_layout_matches_reference(cache, heads, kv_heads, head, block):
    """fp8 caches in vLLM's CPU layout (KV heads apart within a block) take the pipelined AMX path, which widens
    one KV head's rows at a time (session 20; the one-tile path needs a token's KV heads in one run): partial
    tiles, several chunks per sequence (two threads), a window, sinks and a v_scale, against the reference."""
    torch.set_num_threads(2)
    q, kc, vc, md = make_batch([1, 1, 3, 1], [17, 700, 300, 2100], heads, kv_heads, head, block,
                               dtype=torch.bfloat16, cache_dtype=cache, seed=head + block)
    kc, vc = _hnd(kc), _hnd(vc)
    assert kc.stride(2) != head  # (the layout under test)
    g = torch.Generator().manual_seed(block)
    for opts in ({}, dict(sinks=torch.randn(heads, generator=g), v_scale=0.5, sliding_window=250)):
        close(cpu_attn(q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts), torch.bfloat16)
