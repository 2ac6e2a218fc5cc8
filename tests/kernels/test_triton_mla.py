"""TRITON_MLA (dense and sparse top-k) against the float64 MLA reference, in Triton's interpreter.

Same interpreter handling as ``test_triton_attn.py``: ``TRITON_INTERPRET=1`` is set
before triton is imported (and per test), or, if triton was imported earlier in this
process without it, the tests re-run in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sizes import pick  # noqa: E402
from triton_import import import_interpreted, rerun_in_interpreter  # noqa: E402

torch, triton_mla, _SET_ENV = import_interpreted("attnsolve.kernels.triton_mla")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from attnsolve.kernels import KernelUnavailableError  # noqa: E402
from attnsolve.kernels.metadata import AttentionMetadata  # noqa: E402
from attnsolve.kernels.reference import mla_decode_reference  # noqa: E402
from attnsolve.kernels.triton_attn import is_interpreted  # noqa: E402
from attnsolve.kernels.triton_mla import triton_mla_attention  # noqa: E402

INTERPRETED = is_interpreted(triton_mla._mla_kernel)


def _peer_mla_cases():
    import peer_grid_cases

    return peer_grid_cases.mla_cases()
needs_interp = pytest.mark.skipif(
    not INTERPRETED,
    reason="triton was imported before TRITON_INTERPRET=1 in this process; "
    "these tests run in a subprocess instead (test_in_interpreter_subprocess)",
)
HAS_CUDA = torch.cuda.is_available()
# Interpreter examples: 25 under ci (dev: 15), 300 under nightly / --runslow (tests/sizes.py).
_N = pick(max(6, min(25, settings().max_examples // 2)), 300)

TOL = {
    torch.float32: dict(atol=2e-4, rtol=2e-4),
    torch.float16: dict(atol=3e-3, rtol=3e-3),
    torch.bfloat16: dict(atol=2.5e-2, rtol=2e-2),
}


@pytest.fixture(autouse=True)
def _interpret_env(monkeypatch):
    if INTERPRETED:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def make_mla(q_lens, seq_lens, num_heads, lora, rope, block_size, *, dtype=torch.float32, seed=0,
             head_dim=False):
    g = torch.Generator().manual_seed(seed)
    nblk = [-(-s // block_size) for s in seq_lens]
    total = sum(nblk) + 2
    perm = torch.randperm(total, generator=g)
    bt = torch.randint(0, total, (len(seq_lens), max(nblk + [1])), generator=g, dtype=torch.int32)
    k = 0
    for i, n in enumerate(nblk):
        bt[i, :n] = perm[k:k + n]
        k += n
    qsl = [0]
    for n in q_lens:
        qsl.append(qsl[-1] + n)
    md = AttentionMetadata(torch.tensor(qsl, dtype=torch.int32), torch.tensor(seq_lens, dtype=torch.int32), bt)
    q = torch.randn(qsl[-1], num_heads, lora + rope, generator=g).to(dtype)
    shape = (total, block_size, 1, lora + rope) if head_dim else (total, block_size, lora + rope)
    kv = torch.randn(*shape, generator=g).to(dtype)
    return q, kv, md


def random_topk(md, topk, seed, *, pad_frac=0.3, repeats=True):
    g = torch.Generator().manual_seed(seed)
    qsl, sl = md.query_start_loc.tolist(), md.seq_lens.tolist()
    out = torch.full((qsl[-1], topk), -1, dtype=torch.int32)
    for i, L in enumerate(sl):
        for t in range(qsl[i], qsl[i + 1]):
            if repeats:
                idx = torch.randint(0, L, (topk,), generator=g, dtype=torch.int32)
            else:
                idx = torch.randperm(L, generator=g)[:topk].to(torch.int32)
                idx = torch.cat([idx, torch.full((topk - idx.numel(),), -1, dtype=torch.int32)])
            pad = torch.rand(topk, generator=g) < pad_frac
            out[t] = torch.where(pad, torch.full_like(idx, -1), idx)
    return out


def check(out, ref, dtype):
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out.float(), ref.float(), **TOL[dtype])


@st.composite
def mla_cases(draw):
    batch = draw(st.integers(1, 3))
    seqs = []
    for _ in range(batch):
        L = draw(st.integers(1, 48))
        n = draw(st.sampled_from([1, 1, 2, 4]))
        seqs.append((min(n, L), L))
    heads = draw(st.sampled_from([1, 4, 16, 20]))
    lora = draw(st.sampled_from([16, 32, 48, 64]))
    rope = draw(st.sampled_from([0, 8, 16]))
    block_size = draw(st.sampled_from([1, 8, 16, 64]))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    topk = draw(st.one_of(st.none(), st.integers(1, 40)))
    scale = draw(st.sampled_from([None, 0.1]))
    seed = draw(st.integers(0, 2**16))
    segments = draw(st.sampled_from([1, 1, 2, 8]))
    return seqs, heads, lora, rope, block_size, dtype, topk, scale, seed, segments


@needs_interp
@settings(max_examples=_N, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mla_cases())
def test_matches_reference(case):
    seqs, heads, lora, rope, bs, dtype, topk, scale, seed, segments = case
    q, kv, md = make_mla([a for a, _ in seqs], [b for _, b in seqs], heads, lora, rope, bs,
                         dtype=dtype, seed=seed)
    idx = None if topk is None else random_topk(md, topk, seed)
    out = triton_mla_attention(q, kv, md, kv_lora_rank=lora, scale=scale, topk_indices=idx, num_segments=segments)
    ref = mla_decode_reference(q, kv, md, kv_lora_rank=lora, scale=scale, topk_indices=idx)
    check(out, ref, dtype)


@needs_interp
@pytest.mark.parametrize("sparse", [False, True])
def test_deepseek_dims(sparse):
    """kv_lora_rank 512 + rope 64, 16 heads (a TP-8 shard of DeepSeek-V3's 128), bf16."""
    q, kv, md = make_mla([1, 1, 2], [70, 5, 33], 16, 512, 64, 64, dtype=torch.bfloat16, seed=7,
                         head_dim=True)
    idx = random_topk(md, 32, 7, repeats=False) if sparse else None
    out = triton_mla_attention(q, kv, md, topk_indices=idx, scale=192 ** -0.5, num_segments=4)
    assert out.shape == (4, 16, 512)
    check(out, mla_decode_reference(q, kv, md, topk_indices=idx, scale=192 ** -0.5), torch.bfloat16)


@needs_interp
# float16 only: Triton's interpreter has no bfloat16 dot (its bf16 products come out as garbage,
# ~1e9, measured with Triton 3.9); the bf16 cases run compiled in tests/kernels/gpu_peer_grid.py.
@pytest.mark.parametrize("case", [c for c in _peer_mla_cases() if c.dtype == "float16"],
                         ids=lambda c: "uniform" if len(set(c.seq_lens)) == 1 else "varlen")
@pytest.mark.parametrize("p_two_terms", [True, False])
def test_gpu_arithmetic_meets_the_peer_cpu_tolerance(case, p_two_terms):
    """16-bit dots as a GPU does them (``dot_f32=False``; the interpreter rounds P like the tensor
    cores are fed): two-term P meets the peers' CPU MLA test tolerance (assert_close defaults);
    one bf16/fp16 term does not (4 of 6 peer cases failed that way on an H200)."""
    from peer_grid_run import mla_build, mla_reference

    q, kv, md = mla_build(case)
    ref = mla_reference(case, q, kv, md).to(q.dtype).float()
    out = triton_mla_attention(q, kv, md, kv_lora_rank=case.kv_lora_rank, scale=case.head_size ** -0.5,
                               dot_f32=False, p_two_terms=p_two_terms).float()
    close = torch.allclose(out, ref, atol=case.atol, rtol=case.rtol)
    assert close == p_two_terms, (out - ref).abs().max().item()


@needs_interp
def test_all_padding_row_gives_zeros():
    q, kv, md = make_mla([1, 1], [5, 9], 4, 32, 16, 8, seed=8)
    idx = torch.tensor([[-1, -1, -1], [0, 3, -1]], dtype=torch.int32)
    out = triton_mla_attention(q, kv, md, kv_lora_rank=32, topk_indices=idx)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    check(out, mla_decode_reference(q, kv, md, kv_lora_rank=32, topk_indices=idx), torch.float32)


def test_rejects_bad_shapes():
    q, kv, md = make_mla([1], [3], 4, 32, 16, 4)
    with pytest.raises(ValueError, match="last dim"):
        triton_mla_attention(q, kv[..., :40], md, kv_lora_rank=32)
    with pytest.raises(ValueError, match="kv_lora_rank"):
        triton_mla_attention(q, kv, md, kv_lora_rank=64)
    with pytest.raises(ValueError, match="topk_indices"):
        triton_mla_attention(q, kv, md, kv_lora_rank=32, topk_indices=torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="power of two"):
        triton_mla_attention(q, kv, md, kv_lora_rank=32, num_segments=6)
    with pytest.raises(ValueError, match="one latent KV head"):
        triton_mla_attention(q, kv.unsqueeze(2).expand(-1, -1, 2, -1), md, kv_lora_rank=32)


@needs_interp
def test_registered_kernel(monkeypatch):
    from attnsolve.kernels import kernel_for, runnable_backends

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert "TRITON_MLA" in runnable_backends("cpu")
    q, kv, md = make_mla([1, 3], [4, 20], 4, 32, 16, 8, seed=9)
    out = kernel_for("TRITON_MLA", "cpu")(q, kv, md, kv_lora_rank=32, scale=None, topk_indices=None)
    check(out, mla_decode_reference(q, kv, md, kv_lora_rank=32), torch.float32)


def test_cpu_without_interpreter_says_why(monkeypatch):
    from attnsolve.kernels import kernel_for

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(KernelUnavailableError, match="TRITON_INTERPRET=1") as ei:
        kernel_for("TRITON_MLA", "cpu")
    assert ei.value.backend == "TRITON_MLA"


@pytest.mark.skipif(INTERPRETED, reason="triton runs in interpreter mode in this process already")
def test_in_interpreter_subprocess():
    rerun_in_interpreter(__file__)


_GPU_SCRIPT = r"""
import torch
from attnsolve.kernels.metadata import AttentionMetadata
from attnsolve.kernels.reference import mla_decode_reference
from attnsolve.kernels import triton_mla
torch.manual_seed(0)
bs, seq_lens, H = 64, [1000, 7, 4097, 300], 128
nblk = [-(-s // bs) for s in seq_lens]; total = sum(nblk)
perm = torch.randperm(total).to(torch.int32); bt = torch.zeros(len(seq_lens), max(nblk), dtype=torch.int32); k = 0
for i, n in enumerate(nblk):
    bt[i, :n] = perm[k:k + n]; k += n
md = AttentionMetadata(torch.arange(5, dtype=torch.int32), torch.tensor(seq_lens, dtype=torch.int32), bt)
mdc = AttentionMetadata(md.query_start_loc.cuda(), md.seq_lens.cuda(), md.block_table.cuda())
q = torch.randn(4, H, 576, dtype=torch.bfloat16); kv = torch.randn(total, bs, 576, dtype=torch.bfloat16)
out = triton_mla.triton_mla_attention(q.cuda(), kv.cuda(), mdc, scale=192 ** -0.5)
ref = mla_decode_reference(q, kv, md, scale=192 ** -0.5)
torch.testing.assert_close(out.float().cpu(), ref.float(), atol=2.5e-2, rtol=2e-2)
idx = torch.stack([torch.randperm(L)[:256] if L >= 256 else torch.cat([torch.randperm(L), -torch.ones(256 - L, dtype=torch.long)]) for L in seq_lens]).to(torch.int32)
out = triton_mla.triton_mla_attention(q.cuda(), kv.cuda(), mdc, scale=192 ** -0.5, topk_indices=idx.cuda())
ref = mla_decode_reference(q, kv, md, scale=192 ** -0.5, topk_indices=idx)
torch.testing.assert_close(out.float().cpu(), ref.float(), atol=2.5e-2, rtol=2e-2)
for segs in (1, 8):
    out = triton_mla.triton_mla_attention(q.cuda(), kv.cuda(), mdc, scale=192 ** -0.5, num_segments=segs)
    torch.testing.assert_close(out.float().cpu(), mla_decode_reference(q, kv, md, scale=192 ** -0.5).float(),
                               atol=2.5e-2, rtol=2e-2)
print("GPU OK")
"""


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (none visible to torch)")
def test_compiled_kernel_on_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _GPU_SCRIPT], env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0 and "GPU OK" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
