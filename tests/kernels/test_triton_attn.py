"""TRITON_ATTN against the float64 reference, on CPU through Triton's interpreter.

Triton decides between compiling and interpreting when it is first imported, so this
module sets ``TRITON_INTERPRET=1`` before importing it (and restores the variable
afterwards, so other tests see the environment they expect).  If something imported
triton earlier in this process without it, the module's tests re-run in a subprocess
with the variable set instead (``test_in_interpreter_subprocess``).

Shapes are tiny: the interpreter runs each program's block ops in numpy.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sizes import FULL, pick  # noqa: E402
from triton_import import import_interpreted, rerun_in_interpreter  # noqa: E402

torch, triton_attn, _SET_ENV = import_interpreted("attnsolve.kernels.triton_attn")
# the Triton programs, imported (in the same mode) by triton_attn; a module global, since a @triton.jit
# function resolves the names it calls in its module's globals
from attnsolve.kernels import triton_attn_kernels  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from attnsolve.kernels import KernelUnavailableError  # noqa: E402
from attnsolve.kernels.metadata import AttentionMetadata  # noqa: E402
from attnsolve.kernels.reference import paged_attention_reference  # noqa: E402
from attnsolve.kernels.triton_attn import triton_paged_attention  # noqa: E402

INTERPRETED = triton_attn.is_interpreted()
needs_interp = pytest.mark.skipif(
    not INTERPRETED,
    reason="triton was imported before TRITON_INTERPRET=1 in this process; "
    "these tests run in a subprocess instead (test_in_interpreter_subprocess)",
)
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _interpret_env(monkeypatch):
    """Triton reads TRITON_INTERPRET again at launch (lazy imports): keep it set per test."""
    if INTERPRETED:
        monkeypatch.setenv("TRITON_INTERPRET", "1")

# Interpreter examples cost ~0.1-0.3 s each (more on a loaded box): 25 under ci (dev: 15), 300 under
# nightly / --runslow (tests/sizes.py).  The targeted cases below pin every code path on fixed shapes.
_N = pick(max(6, min(25, settings().max_examples // 2)), 300)

TOL = {
    torch.float32: dict(atol=2e-4, rtol=2e-4),
    torch.float16: dict(atol=3e-3, rtol=3e-3),
    torch.bfloat16: dict(atol=2.5e-2, rtol=2e-2),
}


def make_batch(q_lens, seq_lens, num_heads, num_kv_heads, head_size, block_size, *,
               dtype=torch.float32, head_size_v=None, seed=0, device="cpu", extra_blocks=3):
    """Random query, caches with shuffled blocks, and metadata for a varlen batch."""
    g = torch.Generator().manual_seed(seed)
    head_size_v = head_size_v or head_size
    nblk = [-(-s // block_size) for s in seq_lens]
    total = sum(nblk) + extra_blocks
    perm = torch.randperm(total, generator=g)
    bt = torch.randint(0, total, (len(seq_lens), max(nblk + [1])), generator=g, dtype=torch.int32)
    k = 0
    for i, n in enumerate(nblk):
        bt[i, :n] = perm[k:k + n]
        k += n
    qsl = [0]
    for n in q_lens:
        qsl.append(qsl[-1] + n)
    md = AttentionMetadata(
        torch.tensor(qsl, dtype=torch.int32, device=device),
        torch.tensor(seq_lens, dtype=torch.int32, device=device),
        bt.to(device),
    )
    T = qsl[-1]
    q = torch.randn(T, num_heads, head_size, generator=g).to(dtype).to(device)
    kc = torch.randn(total, block_size, num_kv_heads, head_size, generator=g).to(dtype).to(device)
    vc = torch.randn(total, block_size, num_kv_heads, head_size_v, generator=g).to(dtype).to(device)
    return q, kc, vc, md


def assert_matches(out, ref, dtype):
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out.float().cpu(), ref.float().cpu(), **TOL[dtype])


# --------------------------------------------------------------------------------------
# Hypothesis: mixed batches x options
# --------------------------------------------------------------------------------------


@st.composite
def attn_cases(draw):
    batch = draw(st.integers(1, 3))
    seqs = []
    for _ in range(batch):
        seq_len = draw(st.integers(1, 40))
        kind = draw(st.sampled_from(["decode", "prefill", "chunk"]))
        q_len = {"decode": 1, "prefill": seq_len}.get(kind) or draw(st.integers(1, seq_len))
        seqs.append((q_len, seq_len))
    num_kv_heads = draw(st.sampled_from([1, 2]))
    group = draw(st.sampled_from([1, 2, 3, 4, 8]))
    head_size = draw(st.sampled_from([32, 64, 80, 96, 128]))
    block_size = draw(st.sampled_from([1, 4, 8, 16, 32]))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    fp8 = draw(st.sampled_from([None, None, torch.float8_e4m3fn, torch.float8_e5m2]))
    opts = dict(
        causal=draw(st.sampled_from([True, True, True, False])),
        sliding_window=draw(st.one_of(st.none(), st.integers(1, 24))),
        logits_soft_cap=draw(st.sampled_from([None, None, 5.0, 30.0])),
        scale=draw(st.sampled_from([None, None, 0.05])),
    )
    sinks = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    opts["num_segments"] = draw(st.sampled_from([1, 1, 2, 4]))  # split-KV (kernel knob, not reference)
    opts["fp8_bits"] = fp8 is not None and draw(st.booleans())  # the SM < 8.9 path
    return seqs, num_kv_heads, group, head_size, block_size, dtype, fp8, opts, sinks, seed


@needs_interp
@settings(max_examples=_N, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attn_cases())
def test_matches_reference(case):
    seqs, hkv, group, d, bs, dtype, fp8, opts, sinks, seed = case
    q_lens = [a for a, _ in seqs]
    seq_lens = [b for _, b in seqs]
    q, kc, vc, md = make_batch(q_lens, seq_lens, hkv * group, hkv, d, bs, dtype=dtype, seed=seed)
    if sinks:
        opts["sinks"] = torch.randn(hkv * group, generator=torch.Generator().manual_seed(seed)) * 2
    if fp8 is not None:
        kc, vc = (kc.float() / 2).to(fp8), (vc.float() / 4).to(fp8)
        opts.update(k_scale=2.0, v_scale=torch.tensor(4.0))
    segments, fp8_bits = opts.pop("num_segments"), opts.pop("fp8_bits")
    out = triton_paged_attention(q, kc, vc, md, num_segments=segments, fp8_bits=fp8_bits, **opts)
    ref = paged_attention_reference(q, kc, vc, md, **opts)
    assert_matches(out, ref, dtype)


# --------------------------------------------------------------------------------------
# Targeted cases
# --------------------------------------------------------------------------------------


@needs_interp
@pytest.mark.parametrize(
    "num_heads,num_kv_heads,head_size,head_size_v",
    [
        (4, 4, 32, 32),  # MHA, smallest head
        (8, 1, 64, 64),  # MQA
        (12, 4, 80, 80),  # group 3 (not a power of two), head 80 (padded to 128)
        (32, 2, 48, 48),  # group 16 -> one query token per 16 rows
        (4, 2, 256, 256),  # largest head
        (4, 2, 192, 128),  # value head differs from key head (as DeepSeek prefill)
        (8, 2, 112, 112),
    ],
)
def test_head_shapes(num_heads, num_kv_heads, head_size, head_size_v):
    q, kc, vc, md = make_batch([1, 5, 9], [17, 5, 30], num_heads, num_kv_heads, head_size, 16,
                               head_size_v=head_size_v, seed=num_heads + head_size)
    out = triton_paged_attention(q, kc, vc, md)
    assert out.shape == (15, num_heads, head_size_v)
    assert_matches(out, paged_attention_reference(q, kc, vc, md), torch.float32)


@needs_interp
@pytest.mark.parametrize("block_m,tile", [(16, 16), (32, 64), (128, 16)])
def test_tuning_knobs_do_not_change_results(block_m, tile):
    q, kc, vc, md = make_batch([3, 1, 20], [3, 50, 44], 8, 2, 64, 8, seed=1)
    out = triton_paged_attention(q, kc, vc, md, block_m=block_m, tile=tile, sliding_window=9)
    assert_matches(out, paged_attention_reference(q, kc, vc, md, sliding_window=9), torch.float32)


@needs_interp
@pytest.mark.parametrize("kw", [{}, {"sliding_window": 100, "logits_soft_cap": 20.0}, {"sinks": "x"}],
                         ids=["plain", "window-softcap", "sinks"])
def test_gpu_default_launches_in_the_interpreter(kw):
    """The launches a GPU gets by default (triton_launch.gpu_launch: decode 16 rows x 128-key tiles with
    split-KV for two programs per SM, prefill 128 rows x 64-key tiles), run in the interpreter: tiles longer
    than most sequences, empty split-KV segments, and edge-only masks at those sizes match the reference."""
    from attnsolve.kernels import triton_launch

    if kw.get("sinks") == "x":
        kw = {"sinks": torch.randn(8)}
    q, kc, vc, md = make_batch([1, 1, 1, 1], [300, 7, 1000, 129], 8, 2, 64, 16, seed=11)
    block_m, tile, _ = triton_launch.gpu_launch(4, 4, 4)
    assert (block_m, tile) == (16, 128)
    for segments in (1, 8, 16):  # split_kv_segments on 132 SMs: 8 for 33-65 programs, 16 for fewer
        out = triton_paged_attention(q, kc, vc, md, block_m=block_m, tile=tile, num_segments=segments, **kw)
        assert_matches(out, paged_attention_reference(q, kc, vc, md, **kw), torch.float32)
    q, kc, vc, md = make_batch([300, 40], [300, 200], 8, 2, 64, 16, seed=12)
    block_m, tile, _ = triton_launch.gpu_launch(340, 2, 4)
    assert (block_m, tile) == (128, 64)
    out = triton_paged_attention(q, kc, vc, md, block_m=block_m, tile=tile, **kw)
    assert_matches(out, paged_attention_reference(q, kc, vc, md, **kw), torch.float32)


@needs_interp
@pytest.mark.parametrize("kw", [
    {},  # causal prefill with context: full tiles below each q-block's first row
    {"sliding_window": 37},  # causal window: edge tiles on both sides
    {"causal": False},  # encoder: every tile full
    {"causal": False, "sliding_window": (21, 13)},  # two-sided window: full tiles in the middle only
    {"sliding_window": 40, "alibi_slopes": "x", "logits_soft_cap": 8.0},
    {"mm_prefix_ranges": [[(2, 30)], [], [(0, 5), (60, 90)]]},  # ranges reach past the bounds: masks stay on
], ids=["causal", "window", "encoder", "two-sided", "alibi-softcap", "mm"])
def test_unmasked_full_tiles_equal_masking_every_tile(kw):
    """The kernel skips the mask on key tiles every row of a program sees whole; the result is the
    same bits as masking every tile, and matches the reference (GQA 3: padded rows in each program)."""
    q, kc, vc, md = make_batch([70, 1, 33], [100, 64, 95], 6, 2, 32, 16, seed=7)
    if kw.get("alibi_slopes") == "x":
        kw = {**kw, "alibi_slopes": torch.rand(6)}
    for block_m, tile in ((64, 16), (16, 32)):
        out = triton_paged_attention(q, kc, vc, md, block_m=block_m, tile=tile, **kw)
        every = triton_paged_attention(q, kc, vc, md, block_m=block_m, tile=tile, mask_every_tile=True, **kw)
        assert torch.equal(out, every)
        assert_matches(out, paged_attention_reference(q, kc, vc, md, **kw), torch.float32)


@needs_interp
@pytest.mark.parametrize("fp8", ["float8_e4m3fn", "float8_e5m2"])
def test_fp8_query_with_its_descale(fp8):
    """vLLM's quantized query: widened exactly, ``q_scale`` on the scores, a bfloat16 output; checked
    against the float64 reference on the dequantized query (and the descale matters)."""
    q, kc, vc, md = make_batch([3, 1, 20], [3, 50, 44], 8, 2, 64, 8, seed=4)
    q8 = (q * 4).to(getattr(torch, fp8))
    out = triton_paged_attention(q8, kc, vc, md, q_scale=torch.tensor([0.25]), sliding_window=9)
    assert out.dtype == torch.bfloat16
    ref = paged_attention_reference(q8.double() * 0.25, kc.double(), vc.double(), md, scale=64 ** -0.5,
                                    sliding_window=9)
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
    plain = triton_paged_attention(q8, kc, vc, md, sliding_window=9)
    assert not torch.allclose(plain.float(), ref.float(), atol=2e-2, rtol=2e-2)


@needs_interp
@pytest.mark.parametrize("segments", [2, 8, 32] if FULL else [2, 8])
def test_split_kv_segments(segments):
    """Split-KV: more segments than tiles (empty segments), sinks only in segment 0, windows.
    With 32-key tiles the 90-key sequence has 3 tiles, so 8 segments already leave empty segments in
    every sequence; 32 (the same path on a 4x larger interpreter grid) runs with the full sizes."""
    q, kc, vc, md = make_batch([1, 1, 4, 1], [3, 90, 40, 1], 8, 2, 64, 16, seed=segments)
    sinks = torch.randn(8)
    for kw in ({}, {"sinks": sinks}, {"sliding_window": 20, "logits_soft_cap": 10.0}):
        out = triton_paged_attention(q, kc, vc, md, num_segments=segments, **kw)
        assert_matches(out, paged_attention_reference(q, kc, vc, md, **kw), torch.float32)
    with pytest.raises(ValueError, match="power of two"):
        triton_paged_attention(q, kc, vc, md, num_segments=3)


@needs_interp
@pytest.mark.parametrize("fmt", ["e4m3fn", "e5m2"])
def test_fp8_bit_decoders_are_exact_for_all_256_patterns(fmt):
    """The fp8_bits decoders (GPUs below SM 8.9): every bit pattern, subnormals, NaN and e5m2's inf."""
    import triton
    import triton.language as tl

    @triton.jit
    def decode(x_ptr, y_ptr, E4M3: tl.constexpr):
        offs = tl.arange(0, 256)
        x = tl.load(x_ptr + offs)
        if E4M3:
            y = triton_attn_kernels._e4m3fn_bits_to_f32(x)
        else:
            y = triton_attn_kernels._e5m2_bits_to_f32(x)
        tl.store(y_ptr + offs, y)

    bits = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    y = torch.empty(256)
    decode[(1,)](bits, y, E4M3=fmt == "e4m3fn")
    expect = bits.view(getattr(torch, "float8_" + fmt)).float()
    torch.testing.assert_close(y, expect, equal_nan=True, atol=0, rtol=0)


@needs_interp
def test_empty_query_rows_and_decode_only_batch():
    # a sequence with no query rows between two that have some
    q, kc, vc, md = make_batch([2, 0, 1], [6, 9, 12], 4, 2, 32, 4, seed=2)
    assert_matches(triton_paged_attention(q, kc, vc, md), paged_attention_reference(q, kc, vc, md),
                   torch.float32)
    q, kc, vc, md = make_batch([1] * 6, [1, 2, 3, 33, 64, 65], 4, 1, 32, 16, seed=3)
    assert_matches(triton_paged_attention(q, kc, vc, md), paged_attention_reference(q, kc, vc, md),
                   torch.float32)


@needs_interp
def test_window_of_one_returns_own_value():
    # window 1 on a prefill: every row sees exactly itself -> output == its own value.
    q, kc, vc, md = make_batch([5], [5], 2, 2, 32, 4, seed=4)
    out = triton_paged_attention(q, kc, vc, md, sliding_window=1)
    v = vc[md.block_table[0, :2].long()].reshape(8, 2, 32)[:5]
    torch.testing.assert_close(out, v)


@needs_interp
def test_noncontiguous_query_and_out_buffer():
    q, kc, vc, md = make_batch([4, 2], [10, 7], 4, 2, 64, 8, seed=5)
    big = torch.randn(q.shape[0], 4, 128)
    big[..., :64] = q
    qv = big[..., :64]
    assert not qv.is_contiguous()
    out = torch.full((q.shape[0], 4, 64), float("nan"))
    res = triton_paged_attention(qv, kc, vc, md, out=out)
    assert res is out
    assert_matches(out, paged_attention_reference(q, kc, vc, md), torch.float32)
    # vLLM's combined cache: kv [num_blocks, 2, block_size, heads, head] -> strided K and V views
    kv = torch.stack([kc, vc], dim=1)
    k_view, v_view = kv[:, 0], kv[:, 1]
    assert not k_view.is_contiguous()
    assert_matches(triton_paged_attention(q, k_view, v_view, md), paged_attention_reference(q, kc, vc, md),
                   torch.float32)


def test_rejects_bad_shapes():
    q, kc, vc, md = make_batch([1], [3], 4, 2, 32, 4)
    with pytest.raises(ValueError, match="num_heads divisible"):
        triton_paged_attention(q[:, :3], kc, vc, md)
    with pytest.raises(ValueError, match="Expected key_cache"):
        triton_paged_attention(q, kc[..., :16], vc, md)
    with pytest.raises(ValueError, match="sliding_window >= 0"):
        triton_paged_attention(q, kc, vc, md, sliding_window=-3)
    # #17 item 4: 0 is vLLM's "no window"
    assert_matches(triton_paged_attention(q, kc, vc, md, sliding_window=0), paged_attention_reference(q, kc, vc, md),
                   torch.float32)
    with pytest.raises(ValueError, match="dtype"):
        triton_paged_attention(q.double(), kc, vc, md)
    with pytest.raises(ValueError, match="float8_e4m3fn or float8_e5m2 cache"):
        triton_paged_attention(q, kc, vc, md, fp8_bits=True)
    with pytest.raises(ValueError, match="block_m a power of two"):
        triton_paged_attention(q, kc, vc, md, block_m=48)
    with pytest.raises(ValueError, match="tile a power of two"):
        triton_paged_attention(q, kc, vc, md, tile=8)
    with pytest.raises(ValueError, match="Expected out"):
        triton_paged_attention(q, kc, vc, md, out=torch.empty(1, 4, 16))


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


@needs_interp
def test_registered_and_runnable_on_cpu_with_interpreter(monkeypatch):
    from attnsolve.kernels import kernel_for, runnable_backends

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert "TRITON_ATTN" in runnable_backends("cpu")
    fn = kernel_for("TRITON_ATTN", "cpu")
    q, kc, vc, md = make_batch([2, 1], [5, 9], 4, 2, 32, 4, seed=6)
    out = fn(q, kc, vc, md, scale=0.1, causal=True, sliding_window=None, logits_soft_cap=None,
             sinks=None, k_scale=None, v_scale=None)
    assert_matches(out, paged_attention_reference(q, kc, vc, md, scale=0.1), torch.float32)


def test_cpu_without_interpreter_says_why(monkeypatch):
    from attnsolve.kernels import kernel_for

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(KernelUnavailableError) as ei:
        kernel_for("TRITON_ATTN", "cpu")
    assert ei.value.backend == "TRITON_ATTN"
    assert "TRITON_INTERPRET=1" in str(ei.value)


def test_compiled_kernel_on_cpu_tensors_raises():
    with pytest.raises(KernelUnavailableError) as ei:
        triton_attn._require_runnable("TRITON_ATTN", torch.device("cpu"), object())
    assert ei.value.alternative == "CPU_ATTN"
    assert "imported without TRITON_INTERPRET=1" in str(ei.value)


def test_fresh_process_without_interpreter_env():
    """The real path: triton imported without TRITON_INTERPRET -> clear error on CPU."""
    code = (
        "import torch\n"
        "from attnsolve.kernels import KernelUnavailableError, runnable_backends\n"
        "from attnsolve.kernels.registry import unavailable_reasons\n"
        "from attnsolve.kernels import triton_attn\n"
        "from attnsolve.kernels.metadata import AttentionMetadata\n"
        "assert not triton_attn.is_interpreted()\n"
        "assert 'TRITON_ATTN' not in runnable_backends('cpu')\n"
        "print(unavailable_reasons('TRITON_ATTN', 'cpu'))\n"
        "md = AttentionMetadata(torch.tensor([0, 1], dtype=torch.int32), torch.tensor([1], dtype=torch.int32),"
        " torch.zeros(1, 1, dtype=torch.int32))\n"
        "q = torch.randn(1, 2, 32); kc = torch.randn(1, 4, 2, 32)\n"
        "try:\n"
        "    triton_attn.triton_paged_attention(q, kc, kc, md)\n"
        "except KernelUnavailableError as e:\n"
        "    print('ERR', e.backend, e.alternative)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "TRITON_INTERPRET=1" in r.stdout
    assert "ERR TRITON_ATTN CPU_ATTN" in r.stdout


@pytest.mark.skipif(INTERPRETED, reason="triton runs in interpreter mode in this process already")
def test_in_interpreter_subprocess():
    rerun_in_interpreter(__file__)


# --------------------------------------------------------------------------------------
# Real GPU (compiled kernel): in a subprocess without TRITON_INTERPRET
# --------------------------------------------------------------------------------------

_GPU_SCRIPT = r"""
import torch
from attnsolve.kernels.metadata import AttentionMetadata
from attnsolve.kernels.reference import paged_attention_reference
from attnsolve.kernels import triton_attn
assert not triton_attn.is_interpreted()
torch.manual_seed(0)
def batch(q_lens, seq_lens, H, Hkv, D, bs, dtype):
    nblk = [-(-s // bs) for s in seq_lens]; total = sum(nblk) + 2
    perm = torch.randperm(total); bt = torch.zeros(len(seq_lens), max(nblk), dtype=torch.int32); k = 0
    for i, n in enumerate(nblk):
        bt[i, :n] = perm[k:k + n]; k += n
    qsl = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    md = AttentionMetadata(qsl.cuda(), torch.tensor(seq_lens, dtype=torch.int32).cuda(), bt.cuda())
    T = sum(q_lens)
    return (torch.randn(T, H, D, device="cuda", dtype=dtype), torch.randn(total, bs, Hkv, D, device="cuda", dtype=dtype),
            torch.randn(total, bs, Hkv, D, device="cuda", dtype=dtype), md)
sinks = torch.randn(32, device="cuda")
every = ({}, {"sliding_window": 100}, {"logits_soft_cap": 30.0}, {"sinks": sinks})
combined = ({}, {"sliding_window": 100, "logits_soft_cap": 30.0, "sinks": sinks})
for dtype, tol in ((torch.float16, 3e-3), (torch.bfloat16, 2.5e-2), (torch.float32, 1e-3)):
    for D in (64, 80, 128, 256):  # each feature alone at 128, together at the other sizes (fewer compiles)
        for kw in (every if D == 128 else combined):
            # prefill-heavy batch: the 128-row programs, fitted to shared memory (float32 head 256 is over
            # the H200's 227 KB unfitted)
            q, kc, vc, md = batch([1, 1, 300, 37, 1], [1000, 17, 300, 2000, 4097], 32, 8, D, 16, dtype)
            out = triton_attn.triton_paged_attention(q, kc, vc, md, **kw)
            ref = paged_attention_reference(q, kc, vc, md, **kw)  # float64, on the GPU
            torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)
            if D == 128 and kw in combined:
                kc8, vc8 = kc.to(torch.float8_e4m3fn), vc.to(torch.float8_e4m3fn)
                out = triton_attn.triton_paged_attention(q, kc8, vc8, md, k_scale=1.0, v_scale=1.0, **kw)
                ref = paged_attention_reference(q, kc8, vc8, md, k_scale=1.0, v_scale=1.0, **kw)
                torch.testing.assert_close(out.float(), ref.float(), atol=max(tol, 2e-2), rtol=2e-2)
for segs in (None, 4):  # decode-only batch: the default picks split-KV on a big GPU
    q, kc, vc, md = batch([1] * 4, [5000, 17, 1, 1200], 32, 8, 128, 16, torch.bfloat16)
    sinks = torch.randn(32, device="cuda")
    out = triton_attn.triton_paged_attention(q, kc, vc, md, num_segments=segs, sinks=sinks)
    ref = paged_attention_reference(q, kc, vc, md, sinks=sinks)
    torch.testing.assert_close(out.float(), ref.float(), atol=2.5e-2, rtol=2e-2)
print("GPU OK")
"""


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (none visible to torch)")
def test_compiled_kernel_on_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _GPU_SCRIPT], env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0 and "GPU OK" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
