"""The peers' kernel-test grids, ported as data (parameter values and tolerances only).

Sources (vLLM's ``tests/kernels/attention/``), one generator each; every case names its
source so a failure points at the peer test it came from:

* ``test_cpu_attn.py``: varlen paged KV (normal / vec16 / soft-cap / ALiBi / sink, fp8
  e4m3 and e5m2 caches) and the varlen encoder (non-causal, symmetric window) tests.
* ``test_triton_unified_attention.py``: paged KV with windows, soft-cap, fp8 query and
  per-(sequence, KV-head) scales, and the bf16-query fp8-KV test.
* ``test_flash_attn.py``: ``test_varlen_with_paged_kv`` (head sizes 40..256, fp8 query).
* ``test_flashinfer.py``: decode and prefill with the ``[num_blocks, 2, ...]`` K/V split.
* ``test_prefix_prefill.py``: ``test_contexted_kv_attention`` (+ ALiBi), fp16 with fp8 caches.
* ``test_triton_decode_attention.py``: decode where page size 1 and 16 of one cache must agree.
* ``test_mla_decode_cpu.py``: MLA decode, NaN written past ``seq_len``.

What is *not* taken from the peers: their code. The harness (``test_peer_grid.py``) builds
tensors from these fields with its own reference, always with ``randint`` block tables where
the peer drew them so (repeated blocks occur) and NaN in every cache slot no sequence uses.

Porting decisions (all visible in the fields):

* Axes that only pick a peer implementation (``isa``, ``fa_version``, ``use_out``, ``op``,
  ``seq_threshold_3D``, split/non-split) collapse: the cases they duplicate appear once.
* ``num_blocks`` keeps the peer's value; the harness caps the pool it allocates (the
  peers' 32768 blocks exist to test 32-bit index overflow on a GPU, which a CPU test of a
  few hundred MiB cannot) and draws block ids over that pool.
* A peer's fp8 *query* (``q_dtype=fp8`` with ``q_descale``) is quantised and dequantised
  by the harness: the paged API takes no fp8 query, so the kernels see the rounded values.
* ``test_prefix_prefill.py`` draws its lengths with ``random.randint``; they are drawn
  here with ``random.Random(0)`` (same ranges, same batch of 10 with one decode row).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, replace

__all__ = ["PagedCase", "MlaCase", "paged_cases", "mla_cases", "small", "alibi_slopes", "case_id"]


@dataclass(frozen=True)
class PagedCase:
    """One paged-attention case of a peer grid (sizes as the peer ran them)."""

    source: str  # "<peer file>::<peer test>"
    seqs: tuple[tuple[int, int], ...]  # (query_len, kv_len) per sequence
    num_heads: int
    num_kv_heads: int
    head_size: int
    block_size: int
    num_blocks: int
    dtype: str  # query dtype: float32 | bfloat16 | float16
    atol: float
    rtol: float
    head_size_v: int | None = None  # None: same as head_size
    kv_cache_dtype: str = "auto"  # auto | fp8_e4m3 | fp8_e5m2
    k_scale: float = 1.0
    v_scale: float = 1.0
    scale_shape: str = "tensor"  # tensor | seq_head ([num_seqs, num_kv_heads])
    q_fp8_scale: float | None = None  # fp8 query: quantised by q / scale, dequantised
    causal: bool = True
    sliding_window: int | None = None
    soft_cap: float | None = None
    alibi: bool = False
    sinks: bool = False  # 15 * U(0, 1) per head, bf16-rounded (the CPU test's s_aux)
    layout: str = "nhd"  # nhd | hnd (vLLM CPU's packed, permuted view) | kv_split (FlashInfer)
    kv_init: str = "randn"  # randn | clamp1 | uniform_1e-3 | randn_div_sqrt_d
    block_tables: str = "randint"  # randint | sequential | randperm
    compare: str = "reference"  # reference | page_size_1 (and reference)


@dataclass(frozen=True)
class MlaCase:
    """One MLA decode case (``test_mla_decode_cpu.py``): latent cache, NaN past seq_len."""

    source: str
    seq_lens: tuple[int, ...]
    num_heads: int
    head_size: int  # d = kv_lora_rank + rope
    kv_lora_rank: int  # dv
    block_size: int
    dtype: str
    atol: float
    rtol: float


# torch.testing.assert_close defaults, used where a peer calls it without tolerances
ASSERT_CLOSE_DEFAULTS = {"float32": (1e-5, 1.3e-6), "float16": (1e-5, 1e-3), "bfloat16": (1e-5, 1.6e-2)}

_CPU = "test_cpu_attn.py"
_CPU_HEADS = ((4, 4), (8, 2), (9, 3))
_CPU_SEQS = (
    ((1, 213), (1, 1), (1, 312), (1, 7), (1, 7812)),  # decode batch
    ((2345, 2345), (5, 5), (3, 16), (134, 5131)),  # prefill batch
    ((992, 2456), (1, 1234), (98, 1145), (1, 4162), (2345, 2345)),  # mixed batch
)
_CPU_QTYPES = ("bfloat16", "float16", "float32")
_CPU_WINDOWS = (None, 256)
_CPU_FP8_ATOL = {"fp8_e4m3": 0.2, "fp8_e5m2": 0.3}


def _cpu_tol(kv: str) -> tuple[float, float]:
    return (_CPU_FP8_ATOL[kv], 0.1) if kv != "auto" else (1.5e-2, 1e-2)


def _cpu_attn() -> list[PagedCase]:
    out = []
    # encoder: non-causal, symmetric window (w-1, w-1), sequential blocks of 128
    for heads, hs, w, dt in itertools.product(_CPU_HEADS, (96, 128, 512), _CPU_WINDOWS, _CPU_QTYPES):
        lens = (1, 678, 2367, 145, 4162, 36, 7812)
        out.append(PagedCase(f"{_CPU}::test_varlen_encoder_attention_vec", tuple((n, n) for n in lens),
                             heads[0], heads[1], hs, 128, sum(-(-n // 128) for n in lens), dt, 1.5e-2, 1e-2,
                             causal=False, sliding_window=w, layout="hnd", block_tables="sequential"))
    # normal: kv dtype x seqs x heads x head x block 96/128 x window x qtype
    for kv, seqs, heads, hs, bs, w, dt in itertools.product(
            ("auto", "fp8_e4m3", "fp8_e5m2"), _CPU_SEQS, _CPU_HEADS, (96, 128, 512), (96, 128), _CPU_WINDOWS,
            _CPU_QTYPES):
        atol, rtol = _cpu_tol(kv)
        out.append(PagedCase(f"{_CPU}::test_varlen_with_paged_kv_normal_vec", seqs, heads[0], heads[1], hs, bs,
                             1024, dt, atol, rtol, kv_cache_dtype=kv, sliding_window=w, layout="hnd",
                             kv_init="clamp1" if kv != "auto" else "randn"))
    for seqs, heads, hs, w in itertools.product(_CPU_SEQS, _CPU_HEADS, (96, 80, 112, 128), _CPU_WINDOWS):
        out.append(PagedCase(f"{_CPU}::test_varlen_with_paged_kv_normal_vec16", seqs, heads[0], heads[1], hs, 48,
                             1024, "bfloat16", 1.5e-2, 1e-2, sliding_window=w, layout="hnd"))
    for name, extra in (("softcap", dict(soft_cap=50.0)), ("alibi", dict(alibi=True)), ("sink", dict(sinks=True))):
        for kv, seqs, heads, w in itertools.product(("auto", "fp8_e4m3"), _CPU_SEQS, _CPU_HEADS, _CPU_WINDOWS):
            atol, rtol = _cpu_tol(kv)
            out.append(PagedCase(f"{_CPU}::test_varlen_with_paged_kv_{name}", seqs, heads[0], heads[1], 96, 128,
                                 1024, "bfloat16", atol, rtol, kv_cache_dtype=kv, sliding_window=w, layout="hnd",
                                 kv_init="clamp1" if kv != "auto" else "randn", **extra))
    return out


_UNI = "test_triton_unified_attention.py"
_UNI_SEQS = (((1, 1328), (5, 18), (129, 463)), ((1, 523), (1, 37), (1, 2011)))


def _unified() -> list[PagedCase]:
    out = []
    for seqs, heads, hs, w, cap, nb, qfp8 in itertools.product(
            _UNI_SEQS, ((4, 4), (8, 2), (5, 1)), (128, 256), (None, 64, 128, 256), (None, 50.0), (32768, 2048),
            (False, True)):
        fp8 = dict(q_fp8_scale=0.75, kv_cache_dtype="fp8_e4m3", k_scale=0.5, v_scale=0.25,
                   scale_shape="seq_head") if qfp8 else {}
        tol = (1.5e-1, 1.5e-1) if qfp8 else (1.5e-2, 1e-2)
        out.append(PagedCase(f"{_UNI}::test_triton_unified_attn", seqs, heads[0], heads[1], hs, 16, nb, "bfloat16",
                             *tol, sliding_window=w, soft_cap=cap, **fp8))
    for seqs, heads, hs, nb in itertools.product(_UNI_SEQS, ((4, 4), (8, 2), (5, 1)), (128, 256), (32768, 2048)):
        out.append(PagedCase(f"{_UNI}::test_triton_unified_attn_bf16_query_fp8_kv", seqs, heads[0], heads[1], hs,
                             16, nb, "bfloat16", 1.5e-1, 1.5e-1, kv_cache_dtype="fp8_e4m3", k_scale=0.5,
                             v_scale=0.25, scale_shape="seq_head"))
    return out


_FA = "test_flash_attn.py"


def _flash_attn() -> list[PagedCase]:
    out = []
    for seqs, heads, hs, w, cap, nb, qfp8 in itertools.product(
            _UNI_SEQS, ((4, 4), (8, 2)), (40, 72, 80, 128, 256), (None, 256), (None, 50.0), (32768, 2048),
            (False, True)):
        # fp8: q, K and V cast to float8_e4m3fn with descales of one (shape [num_seqs, num_kv_heads])
        fp8 = dict(q_fp8_scale=1.0, kv_cache_dtype="fp8_e4m3", scale_shape="seq_head") if qfp8 else {}
        tol = (1.5e-1, 1.5e-1) if qfp8 else (1.5e-2, 1e-2)
        out.append(PagedCase(f"{_FA}::test_varlen_with_paged_kv", seqs, heads[0], heads[1], hs, 16, nb, "bfloat16",
                             *tol, sliding_window=w, soft_cap=cap, **fp8))
    return out


_FI = "test_flashinfer.py"


def _flashinfer() -> list[PagedCase]:
    out = []
    for lens, heads, hs, bs, cap, w in itertools.product(
            ((1328, 18, 463), (1, 54, 293, 70)), ((32, 8), (6, 1)), (128, 256), (16, 32), (None, 30.0), (None, 64)):
        out.append(PagedCase(f"{_FI}::test_flashinfer_decode_with_paged_kv", tuple((1, n) for n in lens),
                             heads[0], heads[1], hs, bs, 32768, "bfloat16", 1e-2, 1e-2, sliding_window=w,
                             soft_cap=cap, layout="kv_split"))
    for heads, hs, bs, cap, w in itertools.product(((32, 8), (6, 1)), (128, 256), (16, 32), (None, 30.0), (None, 64)):
        out.append(PagedCase(f"{_FI}::test_flashinfer_prefill_with_paged_kv", ((1, 1328), (5, 18), (129, 463)),
                             heads[0], heads[1], hs, bs, 32768, "bfloat16", 5e-2, 1e-2, sliding_window=w,
                             soft_cap=cap, layout="kv_split", kv_init="randn_div_sqrt_d"))
    return out


_PP = "test_prefix_prefill.py"


def _prefix_lens(decode_last: bool) -> tuple[tuple[int, int], ...]:
    rng = random.Random(0)
    q = [rng.randint(16, 1024) for _ in range(10)]
    if decode_last:
        q[-1] = 1
    ctx = [rng.randint(16, 1024) for _ in range(10)]
    return tuple((a, a + b) for a, b in zip(q, ctx))


def _prefix_prefill() -> list[PagedCase]:
    out = []
    for qpk, hs, kv, w in itertools.product((1, 64), (24, 128), ("float16", "fp8", "fp8_e5m2"), (0, 16, 2048)):
        kvd = {"float16": "auto", "fp8": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2"}[kv]
        out.append(PagedCase(f"{_PP}::test_contexted_kv_attention", _prefix_lens(True), 64, 64 // qpk, hs, 32, 640,
                             "float16", 1e-3 if kv != "float16" else 1e-4, 0.0, kv_cache_dtype=kvd,
                             sliding_window=w, kv_init="uniform_1e-3", block_tables="randperm"))
    for qpk, hs, kv in itertools.product((1, 64), (24, 128), ("float16", "fp8", "fp8_e5m2")):
        kvd = {"float16": "auto", "fp8": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2"}[kv]
        out.append(PagedCase(f"{_PP}::test_contexted_kv_attention_alibi", _prefix_lens(False), 64, 64 // qpk, hs, 32,
                             640, "float16", 1e-3 if kv != "float16" else 1e-4, 0.0, kv_cache_dtype=kvd, alibi=True,
                             kv_init="uniform_1e-3", block_tables="randperm"))
    return out


_TD = "test_triton_decode_attention.py"


def _triton_decode() -> list[PagedCase]:
    out = []
    for b, L, hkv, dqk, dv in itertools.product((3, 5), (1027, 1025), (32, 8), (128, 192, 576), (128, 512)):
        # the peer asserts page size 16 == page size 1 of the same cache (torch.allclose defaults)
        out.append(PagedCase(f"{_TD}::test_decode_attention", tuple((1, L) for _ in range(b)), 32, hkv, dqk, 16,
                             16384 // 16, "bfloat16", 1e-8, 1e-5, head_size_v=dv, compare="page_size_1"))
    return out


def paged_cases() -> list[PagedCase]:
    """Every paged case of every peer grid, in a fixed order."""
    return _cpu_attn() + _unified() + _flash_attn() + _flashinfer() + _prefix_prefill() + _triton_decode()


def _mla_varlen_lens(bs: int, mean: int) -> tuple[int, ...]:
    import torch  # only the varlen draw needs it

    g = torch.Generator().manual_seed(0)
    lens = torch.empty(bs).normal_(mean, mean / 2, generator=g).clip(2).to(torch.int32)
    return tuple(int(x) for x in lens)


def mla_cases() -> list[MlaCase]:
    out = []
    for dt, varlen in itertools.product(("float32", "float16", "bfloat16"), (False, True)):
        lens = _mla_varlen_lens(4, 256) if varlen else (256,) * 4
        atol, rtol = ASSERT_CLOSE_DEFAULTS[dt]
        out.append(MlaCase("test_mla_decode_cpu.py::test_mla_decode_cpu", lens, 16, 576, 512, 16, dt, atol, rtol))
    return out


def small(case: PagedCase, max_kv: int = 96, max_heads: int = 8) -> PagedCase:
    """The case at interpreter/eager-flex size: lengths, window and heads scaled down, features kept."""
    longest = max(kv for _, kv in case.seqs)
    f = min(1.0, max_kv / longest)
    seqs = []
    for q, kv in case.seqs:
        kv2 = max(1, math.ceil(kv * f))
        q2 = kv2 if q == kv else min(kv2, max(1, math.ceil(q * f)))
        seqs.append((q2, kv2))
    group = case.num_heads // case.num_kv_heads
    if case.num_heads <= max_heads:
        h, hkv = case.num_heads, case.num_kv_heads
    elif group >= max_heads:
        h, hkv = max_heads, 1
    else:
        hkv = max(1, max_heads // group)
        h = hkv * group
    w = case.sliding_window
    if w:
        w = max(2, math.ceil(w * f))
    need = sum(-(-kv // case.block_size) for _, kv in seqs)
    return replace(case, seqs=tuple(seqs), num_heads=h, num_kv_heads=hkv, sliding_window=w,
                   num_blocks=min(case.num_blocks, need + 8))


def alibi_slopes(num_heads: int) -> list[float]:
    """The standard ALiBi slopes (Press et al.): a geometric sequence from 2^(-8/n), n the largest
    power of two <= num_heads, then every other slope of the 2n sequence for the remaining heads."""
    n = 2 ** math.floor(math.log2(num_heads))
    slopes = [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]
    if n != num_heads:
        extra = [2.0 ** (-4.0 * (2 * i + 1) / n) for i in range(min(n, num_heads - n))]
        slopes += extra
    return slopes


def case_id(case) -> str:
    """A short readable id: source test, then the parameters that vary."""
    test = case.source.split("::")[1].replace("test_", "")
    if isinstance(case, MlaCase):
        return f"{test}-{case.dtype}-{'x'.join(map(str, case.seq_lens))}"
    parts = [test, f"{case.num_heads}/{case.num_kv_heads}h", f"d{case.head_size}", f"bs{case.block_size}",
             case.dtype, "L" + "+".join(str(kv) for _, kv in case.seqs[:2])]
    if case.head_size_v:
        parts.append(f"dv{case.head_size_v}")
    if case.kv_cache_dtype != "auto":
        parts.append(case.kv_cache_dtype + ("/sh" if case.scale_shape == "seq_head" else ""))
    if case.q_fp8_scale is not None:
        parts.append("qfp8")
    if case.sliding_window:
        parts.append(f"w{case.sliding_window}")
    if case.soft_cap:
        parts.append(f"cap{case.soft_cap:g}")
    for flag in ("alibi", "sinks"):
        if getattr(case, flag):
            parts.append(flag)
    if not case.causal:
        parts.append("enc")
    if case.num_blocks not in (1024, 640) and "triton_decode" not in case.source:
        parts.append(f"nb{case.num_blocks}")
    return "-".join(parts)
