"""CPU_MLA (dense and sparse top-k) against the float64 MLA reference.

The peers' own MLA grid (vLLM's ``test_mla_decode_cpu.py``: NaN past ``seq_len``, fp32 /
fp16 / bf16, fixed and varied lengths) runs in ``test_peer_grid.py``; here: random cases
drawn by hypothesis, repeated blocks, NaN slots, sparse padding, registration and errors.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from attnsolve.kernels import KernelUnavailableError, kernel_for, runnable_backends  # noqa: E402
from attnsolve.kernels import _cpu_mla_ext  # noqa: E402
from attnsolve.kernels import cpu_mla as cpu_mla_module  # noqa: E402
from attnsolve.kernels.cpu_mla import cpu_mla_attention  # noqa: E402
from attnsolve.kernels.metadata import AttentionMetadata  # noqa: E402
from attnsolve.kernels.reference import mla_decode_reference  # noqa: E402

_N = max(10, settings().max_examples // 3)  # ci: 50 examples
# both paths on every case: the C++ kernel (where it builds) and the torch flash path
PATHS = [False] + ([True] if _cpu_mla_ext.load() is not None else [])

# the peer's tolerances (torch.testing.assert_close defaults per dtype, as vLLM's MLA CPU test)
TOL = {
    torch.float32: dict(atol=1e-5, rtol=1.3e-6 * 10),  # float32 sums in another order: 10x the default rtol
    torch.float16: dict(atol=1e-5, rtol=1e-3),
    torch.bfloat16: dict(atol=1e-5, rtol=1.6e-2),
}


def make_mla(q_lens, seq_lens, num_heads, lora, rope, block_size, *, dtype=torch.float32, seed=0,
             head_dim=False, repeats=True, nan_tail=True):
    """Latent cache with a ``randint`` block table (repeated blocks occur) and NaN past seq_len.

    With ``repeats`` the table is drawn with ``randint`` like the peers'; the NaN tail is then
    written only into blocks that hold no live token of any sequence.
    """
    g = torch.Generator().manual_seed(seed)
    nblk = [-(-s // block_size) for s in seq_lens]
    total = max(sum(nblk) + 2, 4)
    if repeats:
        bt = torch.randint(0, total, (len(seq_lens), max(nblk + [1])), generator=g, dtype=torch.int32)
    else:
        perm = torch.randperm(total, generator=g).to(torch.int32)
        bt = torch.zeros(len(seq_lens), max(nblk + [1]), dtype=torch.int32)
        k = 0
        for i, n in enumerate(nblk):
            bt[i, :n] = perm[k:k + n]
            k += n
    qsl = [0]
    for n in q_lens:
        qsl.append(qsl[-1] + n)
    md = AttentionMetadata(torch.tensor(qsl, dtype=torch.int32), torch.tensor(seq_lens, dtype=torch.int32), bt)
    q = torch.randn(qsl[-1], num_heads, lora + rope, generator=g).to(dtype)
    kv = torch.randn(total, block_size, lora + rope, generator=g).to(dtype)
    if nan_tail:
        live = torch.zeros(total, block_size, dtype=torch.bool)
        for i, L in enumerate(seq_lens):
            for t in range(L):
                live[bt[i, t // block_size], t % block_size] = True
        kv[~live] = float("nan")
    if head_dim:
        kv = kv.unsqueeze(2)
    return q, kv, md


def random_topk(md, topk, seed, *, pad_frac=0.3):
    g = torch.Generator().manual_seed(seed)
    qsl, sl = md.query_start_loc.tolist(), md.seq_lens.tolist()
    out = torch.full((qsl[-1], topk), -1, dtype=torch.int32)
    for i, L in enumerate(sl):
        for t in range(qsl[i], qsl[i + 1]):
            idx = torch.randint(0, L, (topk,), generator=g, dtype=torch.int32)  # repeats count twice
            pad = torch.rand(topk, generator=g) < pad_frac
            out[t] = torch.where(pad, torch.full_like(idx, -1), idx)
    return out


def check(out, ref, dtype):
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert not out.isnan().any(), "NaN in the output: likely read past seq_len"
    torch.testing.assert_close(out, ref, **TOL[dtype])


@st.composite
def mla_cases(draw):
    batch = draw(st.integers(1, 4))
    seqs = []
    for _ in range(batch):
        L = draw(st.integers(1, 80))
        n = draw(st.sampled_from([1, 1, 1, 2, 4]))
        seqs.append((min(n, L), L))
    heads = draw(st.sampled_from([1, 3, 4, 16, 20]))
    lora = draw(st.sampled_from([16, 32, 64, 512]))
    rope = draw(st.sampled_from([0, 8, 64]))
    block_size = draw(st.sampled_from([1, 16, 32, 64]))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    topk = draw(st.one_of(st.none(), st.integers(1, 64)))
    scale = draw(st.sampled_from([None, 192 ** -0.5]))
    seed = draw(st.integers(0, 2**16))
    return seqs, heads, lora, rope, block_size, dtype, topk, scale, seed


@settings(max_examples=_N, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mla_cases())
def test_matches_reference(case):
    seqs, heads, lora, rope, bs, dtype, topk, scale, seed = case
    q, kv, md = make_mla([a for a, _ in seqs], [b for _, b in seqs], heads, lora, rope, bs, dtype=dtype, seed=seed)
    idx = None if topk is None else random_topk(md, topk, seed)
    ref = mla_decode_reference(q, kv.nan_to_num(0.0), md, kv_lora_rank=lora, scale=scale, topk_indices=idx)
    for ext in PATHS:
        out = cpu_mla_attention(q, kv, md, kv_lora_rank=lora, scale=scale, topk_indices=idx, use_ext=ext)
        check(out, ref, dtype)


@pytest.mark.parametrize("ext", PATHS)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
def test_deepseek_dims_repeated_blocks_and_nan(sparse, dtype, ext):
    """kv_lora_rank 512 + rope 64, 16 heads, a block table with a repeated block, NaN past seq_len."""
    q, kv, md = make_mla([1, 1, 3], [70, 5, 33], 16, 512, 64, 16, dtype=dtype, seed=7, head_dim=True,
                         repeats=False)
    md.block_table[0, 2] = md.block_table[0, 0]  # block 0 of sequence 0 appears twice
    kv = kv.clone()
    idx = random_topk(md, 48, 7) if sparse else None
    out = cpu_mla_attention(q, kv, md, topk_indices=idx, scale=192 ** -0.5, use_ext=ext)
    assert out.shape == (5, 16, 512)
    ref = mla_decode_reference(q, kv.nan_to_num(0.0), md, topk_indices=idx, scale=192 ** -0.5)
    check(out, ref, dtype)


@pytest.mark.parametrize("ext", PATHS)
def test_all_padding_row_gives_zeros(ext):
    q, kv, md = make_mla([1, 1], [5, 9], 4, 32, 16, 8, seed=8)
    idx = torch.tensor([[-1, -1, -1], [0, 3, -1]], dtype=torch.int32)
    out = cpu_mla_attention(q, kv, md, kv_lora_rank=32, topk_indices=idx, use_ext=ext)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    check(out, mla_decode_reference(q, kv.nan_to_num(0.0), md, kv_lora_rank=32, topk_indices=idx), torch.float32)


@pytest.mark.parametrize("ext", PATHS)
def test_single_head_group_and_odd_heads(ext):
    for heads in (1, 5):
        q, kv, md = make_mla([2, 1], [9, 30], heads, 64, 8, 4, seed=heads)
        out = cpu_mla_attention(q, kv, md, kv_lora_rank=64, use_ext=ext)
        check(out, mla_decode_reference(q, kv.nan_to_num(0.0), md, kv_lora_rank=64), torch.float32)


@pytest.mark.parametrize("ext", PATHS)
def test_nan_inside_seq_len_propagates(ext):
    """A NaN in a live row is data, not padding: it must reach the output (as in the reference)."""
    q, kv, md = make_mla([1], [20], 4, 32, 16, 8, seed=5)
    kv = kv.clone()
    kv[md.block_table[0, 1], 2] = float("nan")  # position 10
    out = cpu_mla_attention(q, kv, md, kv_lora_rank=32, use_ext=ext)
    assert out.isnan().all()


def test_extension_switch(monkeypatch):
    q, kv, md = make_mla([1], [20], 4, 32, 16, 8, seed=6)
    monkeypatch.setenv("ATTNSOLVE_CPU_EXT", "0")
    _cpu_mla_ext._reset_for_tests()
    try:
        with pytest.raises(RuntimeError, match="ATTNSOLVE_CPU_EXT=0"):
            cpu_mla_attention(q, kv, md, kv_lora_rank=32, use_ext=True)
        out = cpu_mla_attention(q, kv, md, kv_lora_rank=32)  # the torch path
        check(out, mla_decode_reference(q, kv.nan_to_num(0.0), md, kv_lora_rank=32), torch.float32)
    finally:
        monkeypatch.delenv("ATTNSOLVE_CPU_EXT")
        _cpu_mla_ext._reset_for_tests()


@pytest.mark.parametrize("ext", PATHS)
def test_rejects_bad_input(ext):
    q, kv, md = make_mla([1], [3], 4, 32, 16, 4, nan_tail=False)
    with pytest.raises(ValueError, match="last dim"):
        cpu_mla_attention(q, kv[..., :40], md, kv_lora_rank=32, use_ext=ext)
    with pytest.raises(ValueError, match="kv_lora_rank"):
        cpu_mla_attention(q, kv, md, kv_lora_rank=64, use_ext=ext)
    with pytest.raises(ValueError, match="topk_indices"):
        cpu_mla_attention(q, kv, md, kv_lora_rank=32, topk_indices=torch.zeros(2, 3, dtype=torch.int32), use_ext=ext)
    with pytest.raises(ValueError, match="topk_indices < seq_len"):
        cpu_mla_attention(q, kv, md, kv_lora_rank=32, topk_indices=torch.tensor([[0, 3]], dtype=torch.int32), use_ext=ext)
    with pytest.raises(ValueError, match="one latent KV head"):
        cpu_mla_attention(q, kv.unsqueeze(2).expand(-1, -1, 2, -1), md, kv_lora_rank=32, use_ext=ext)
    with pytest.raises(ValueError, match="kv_cache dtype"):
        cpu_mla_attention(q, kv.to(torch.bfloat16), md, kv_lora_rank=32, use_ext=ext)
    with pytest.raises(ValueError, match="block_table"):
        bad = AttentionMetadata(md.query_start_loc, md.seq_lens, torch.tensor([[99]], dtype=torch.int32))
        cpu_mla_attention(q, kv, bad, kv_lora_rank=32, use_ext=ext)


def test_registered_for_cpu_mla_backends():
    assert "CPU_MLA" in runnable_backends("cpu")
    q, kv, md = make_mla([1, 3], [4, 20], 4, 32, 16, 8, seed=9)
    out = kernel_for("CPU_MLA", "cpu")(q, kv, md, kv_lora_rank=32, scale=None, topk_indices=None)
    check(out, mla_decode_reference(q, kv.nan_to_num(0.0), md, kv_lora_rank=32), torch.float32)
    with pytest.raises(KernelUnavailableError, match="CPU_MLA"):
        kernel_for("CPU_MLA", "cuda")


def test_amx_mla_needs_amx_and_bf16():
    has_amx = bool(torch.cpu._is_amx_tile_supported())
    if has_amx:
        assert kernel_for("AMX_MLA", "cpu") is cpu_mla_module.amx_mla
    else:
        with pytest.raises(KernelUnavailableError, match="AMX tiles") as ei:
            kernel_for("AMX_MLA", "cpu")
        assert ei.value.backend == "AMX_MLA"
    q, kv, md = make_mla([1], [40], 16, 512, 64, 32, dtype=torch.bfloat16, seed=3)
    out = cpu_mla_module.amx_mla(q, kv, md)
    check(out, mla_decode_reference(q, kv.nan_to_num(0.0), md), torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16 for AMX_MLA"):
        cpu_mla_module.amx_mla(q.float(), kv.float(), md)


@pytest.mark.parametrize("ext", PATHS)
def test_plan_kept_per_metadata_state(ext):
    """The layers of one step reuse what a dense call derives from the metadata (checks, per-token arrays, work
    items); an in-place update (vLLM's persistent buffers) is seen on the next call, and a refused state is
    refused on every call (nothing kept from it)."""
    q, kv, md = make_mla([1, 2], [30, 41], 4, 64, 8, 16, dtype=torch.bfloat16, seed=3, nan_tail=False)
    first = cpu_mla_attention(q, kv, md, kv_lora_rank=64, use_ext=ext)
    plans = dict(md._plans or {})
    again = cpu_mla_attention(q, kv, md, kv_lora_rank=64, use_ext=ext)
    assert torch.equal(first, again)
    if ext:
        assert md._plans["cpu_mla_dense"] is plans["cpu_mla_dense"]  # reused, not rebuilt
    md.seq_lens += 3  # in place: the same tensor, a new version
    check(cpu_mla_attention(q, kv, md, kv_lora_rank=64, use_ext=ext),
          mla_decode_reference(q, kv, md, kv_lora_rank=64), torch.bfloat16)
    md.query_start_loc.copy_(torch.tensor([0, 2, 3], dtype=torch.int32))  # rows move to the other sequence
    check(cpu_mla_attention(q, kv, md, kv_lora_rank=64, use_ext=ext),
          mla_decode_reference(q, kv, md, kv_lora_rank=64), torch.bfloat16)
    md.seq_lens[0] = 1  # two query rows, one token of context: refused, on every call
    for _ in range(2):
        with pytest.raises(ValueError, match="query rows <= seq_len"):
            cpu_mla_attention(q, kv, md, kv_lora_rank=64, use_ext=ext)


def test_metadata_plan_memo():
    """``AttentionMetadata.plan``: one build per (metadata state, key); a failed build keeps nothing; inference
    tensors (no version counter) keep nothing."""
    md = AttentionMetadata(torch.tensor([0, 1], dtype=torch.int32), torch.tensor([5], dtype=torch.int32),
                           torch.zeros(1, 1, dtype=torch.int32))
    built = []
    build = lambda: built.append(1) or len(built)  # noqa: E731
    assert md.plan("p", (1,), build) == 1 and md.plan("p", (1,), build) == 1
    assert md.plan("p", (2,), build) == 2  # another key
    md.seq_lens += 1
    assert md.plan("p", (2,), build) == 3  # another state

    def fails():
        raise ValueError("refused")
    for _ in range(2):
        with pytest.raises(ValueError):
            md.plan("q", (), fails)
    assert "q" not in md._plans
    with torch.inference_mode():
        mi = AttentionMetadata(torch.tensor([0, 1], dtype=torch.int32), torch.tensor([5], dtype=torch.int32),
                               torch.zeros(1, 1, dtype=torch.int32))
        assert mi.plan("p", (), build) == 4 and mi.plan("p", (), build) == 5


def test_the_cpython_entry_parses_the_c_signature():
    """``kMlaKinds`` (what the CPython entry parses) is ``MLA_ARGTYPES`` (what ctypes passes), kind by kind."""
    import ctypes
    import re

    from attnsolve.kernels._cpp_build import CSRC

    kind = {ctypes.c_int32: "i", ctypes.c_int64: "l", ctypes.c_void_p: "p", ctypes.c_float: "f"}
    src = (CSRC / "cpu_mla.cpp").read_text()
    kinds = re.search(r'kMlaKinds\[kMlaArgs \+ 1\] = "([a-z]+)"', src).group(1)
    assert kinds == "".join(kind[t] for t in _cpu_mla_ext.MLA_ARGTYPES)


@pytest.mark.skipif(True not in PATHS, reason="CPU_MLA extension not built here")
def test_both_entries_give_the_same_answer(monkeypatch):
    """The CPython entry and ctypes run the same C function: equal outputs, dense and sparse."""
    import ctypes

    fn = _cpu_mla_ext.load().mla_attend
    if hasattr(fn, "argtypes"):
        pytest.skip("built without the CPython entry (no Python headers): ctypes only")
    cfn = _cpu_mla_ext._state["cdll"].mla_attend
    assert list(cfn.argtypes) == list(_cpu_mla_ext.MLA_ARGTYPES) and cfn.restype is ctypes.c_int32
    q, kv, md = make_mla([1, 3], [40, 23], 16, 512, 64, 16, dtype=torch.bfloat16, seed=11)
    idx = random_topk(md, 20, 11)
    py = [cpu_mla_attention(q, kv, md, use_ext=True, topk_indices=i) for i in (None, idx)]
    monkeypatch.setitem(_cpu_mla_ext._state, "lib", _cpu_mla_ext.Kernel(cfn))
    ct = [cpu_mla_attention(q, kv, md, use_ext=True, topk_indices=i) for i in (None, idx)]
    assert all(torch.equal(a, b) for a, b in zip(py, ct))
    with pytest.raises(TypeError, match="takes 28 arguments"):
        fn(1, 2, 3)
    args = [0] * 28
    args[6] = 2**40  # num_blocks, a C int
    with pytest.raises(OverflowError, match="argument 6"):
        fn(*args)
