"""Builders and hypothesis strategies for paged-attention problems (shared by the kernel tests).

One strategy (``problems``) drives every kernel-vs-reference property: a varlen batch mixing
prefill and decode rows, GQA ratios, head sizes from the CPU_ATTN rules, block sizes from the
Config domain, block tables with shuffled (and junk-padded) blocks, windows, soft-caps,
sinks, query dtypes and fp8 caches with scales.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from attnsolve.kernels.metadata import AttentionMetadata

try:
    from attnsolve.rules import default_rules

    HEAD_SIZES = tuple(sorted(default_rules().backends["CPU_ATTN"].caps.head_sizes.in_))
except Exception:  # rules API moved: the documented list
    HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256)
BLOCK_SIZES = (1, 8, 16, 32, 64, 128, 256)
FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)

# output tolerance by query dtype (fp8 caches: the reference dequantises the same stored values)
TOL = {
    torch.float32: dict(atol=2e-4, rtol=2e-4),
    torch.float16: dict(atol=4e-3, rtol=4e-3),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
}


def make_batch(q_lens, seq_lens, num_heads, num_kv_heads, head_size, block_size, *, dtype=torch.float32,
               cache_dtype=None, seed=0, extra_blocks=3):
    """Random query and caches with shuffled blocks; block-table padding holds junk block ids."""
    g = torch.Generator().manual_seed(seed)
    cache_dtype = cache_dtype or dtype
    nblk = [-(-s // block_size) for s in seq_lens]
    total = sum(nblk) + extra_blocks
    perm = torch.randperm(total, generator=g)
    bt = torch.randint(0, total, (len(seq_lens), max(nblk + [1])), generator=g, dtype=torch.int32)
    k = 0
    for i, n in enumerate(nblk):
        bt[i, :n] = perm[k:k + n]
        k += n
    kc = torch.randn(total, block_size, num_kv_heads, head_size, generator=g).to(cache_dtype)
    vc = torch.randn(total, block_size, num_kv_heads, head_size, generator=g).to(cache_dtype)
    qsl = torch.zeros(len(q_lens) + 1, dtype=torch.int32)
    qsl[1:] = torch.tensor(q_lens, dtype=torch.int32).cumsum(0)
    q = torch.randn(int(qsl[-1]), num_heads, head_size, generator=g).to(dtype)
    md = AttentionMetadata(qsl, torch.tensor(seq_lens, dtype=torch.int32), bt)
    return q, kc, vc, md


@st.composite
def seqs(draw, max_batch=4, max_len=80, max_q=24):
    """(q_lens, seq_lens): decode rows (1), short chunks and prefills, some with context."""
    b = draw(st.integers(1, max_batch))
    q_lens, seq_lens = [], []
    for _ in range(b):
        L = draw(st.integers(1, max_len))
        kind = draw(st.sampled_from(["decode", "spec", "prefill", "chunk"]))
        n = {"decode": 1, "spec": min(L, draw(st.integers(2, 16))), "prefill": min(L, max_q)}.get(kind)
        if n is None:
            n = draw(st.integers(1, min(L, max_q)))
        seq_lens.append(max(L, n))
        q_lens.append(n)
    return q_lens, seq_lens


@st.composite
def problems(draw, *, dtypes=(torch.float32, torch.bfloat16, torch.float16), fp8=True, max_len=80):
    q_lens, seq_lens = draw(seqs(max_len=max_len))
    hkv = draw(st.sampled_from([1, 2, 4]))
    group = draw(st.sampled_from([1, 2, 4, 8]))
    head = draw(st.sampled_from(HEAD_SIZES))
    bs = draw(st.sampled_from(BLOCK_SIZES))
    dtype = draw(st.sampled_from(dtypes))
    cache_dtype = draw(st.sampled_from([None, *FP8])) if fp8 else None
    opts = {}
    if draw(st.booleans()):
        opts["sliding_window"] = draw(st.integers(1, 64))
    if draw(st.integers(0, 3)) == 0:
        opts["logits_soft_cap"] = draw(st.sampled_from([5.0, 30.0]))
    if draw(st.booleans()):
        opts["sinks"] = torch.randn(hkv * group, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    if draw(st.integers(0, 4)) == 0:
        opts["causal"] = False
    if draw(st.booleans()):
        opts["scale"] = draw(st.sampled_from([0.05, 0.3]))
    if cache_dtype is not None:
        opts["k_scale"] = draw(st.sampled_from([0.5, 1.0, 2.0]))
        opts["v_scale"] = torch.tensor(draw(st.sampled_from([0.25, 1.0, 3.0])))
    seed = draw(st.integers(0, 2**16))
    batch = make_batch(q_lens, seq_lens, hkv * group, hkv, head, bs, dtype=dtype, cache_dtype=cache_dtype, seed=seed)
    return batch, opts


def close(out, ref, dtype):
    torch.testing.assert_close(out.float(), ref.float(), **TOL[dtype])


@st.composite
def feature_problems(draw, *, dtypes=(torch.float32, torch.bfloat16), max_len=60, head_sizes=(32, 64),
                     block_sizes=(1, 16, 48), max_heads=8):
    """Problems using the #17 features: ALiBi, int and (left, right) windows (0, -1 sides), multimodal
    prefix ranges, per-(sequence, KV head) scales, return_lse, cross-attention rows (n > L, non-causal)."""
    q_lens, seq_lens = draw(seqs(max_len=max_len, max_batch=3))
    hkv = draw(st.sampled_from([1, 2]))
    group = draw(st.sampled_from([g for g in (1, 2, 4) if hkv * g <= max_heads]))
    H = hkv * group
    head = draw(st.sampled_from(head_sizes))
    bs = draw(st.sampled_from(block_sizes))
    dtype = draw(st.sampled_from(dtypes))
    causal = draw(st.booleans())
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    opts = {"causal": causal}
    cross = not causal and draw(st.integers(0, 3)) == 0
    if cross:  # more query rows than keys in one sequence
        i = draw(st.integers(0, len(seq_lens) - 1))
        seq_lens[i] = draw(st.integers(1, max(1, q_lens[i] - 1))) if q_lens[i] > 1 else seq_lens[i]
    kind = draw(st.sampled_from(["none", "int", "pair"]))
    if kind == "int" and not cross:
        opts["sliding_window"] = draw(st.integers(0, 40))
    elif kind == "pair" and not cross:
        opts["sliding_window"] = (draw(st.integers(-1, 30)), draw(st.integers(-1, 30)))
    if draw(st.booleans()):
        opts["alibi_slopes"] = torch.rand(H, generator=g) * 0.5
    if draw(st.booleans()):
        opts["mm_prefix_ranges"] = [
            [tuple(sorted(draw(st.tuples(st.integers(0, L + 4), st.integers(0, L + 4)))))
             for _ in range(draw(st.integers(0, 2)))]
            for L in seq_lens
        ]
    sc = draw(st.sampled_from(["none", "float", "per_seq"]))
    if sc == "float":
        opts["k_scale"], opts["v_scale"] = 0.5, torch.tensor(2.0)
    elif sc == "per_seq":
        opts["k_scale"] = torch.rand(len(seq_lens), hkv, generator=g) + 0.5
        opts["v_scale"] = torch.rand(len(seq_lens), hkv, generator=g) + 0.5
    if draw(st.integers(0, 2)) == 0:
        opts["sinks"] = torch.randn(H, generator=g)
    if draw(st.integers(0, 3)) == 0:
        opts["logits_soft_cap"] = 10.0
    opts["return_lse"] = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    batch = make_batch(q_lens, seq_lens, H, hkv, head, bs, dtype=dtype, seed=seed)
    return batch, opts


LSE_TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
           torch.float16: dict(atol=4e-3, rtol=4e-3)}


def close_result(got, want, dtype):
    """``close`` for ``out`` or ``(out, lse)`` results."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == 2
        close(got[0], want[0], dtype)
        assert got[1].dtype == torch.float32 and got[1].shape == want[1].shape
        torch.testing.assert_close(got[1], want[1], **LSE_TOL[dtype])
    else:
        close(got, want, dtype)


def amx_decode_host() -> bool:
    """CPU_ATTN's C++ decode may use AMX tiles here (an x86 CPU with amx_bf16, not switched off)."""
    import os

    if os.environ.get("ATTNSOLVE_CPU_AMX", "1")[:1].lower() in ("0", "n", "f"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False
