"""#15 kernel fuzz: bad inputs of every class, run in a child process so a crash is a failure.

Hypothesis draws lists of cases (a valid small batch plus one mutation from the classes in #15:
devices, dtypes, out-of-range ids before narrowing, lengths, shapes, strides, windows, soft-caps,
scales, NaN/inf, the newer feature arguments); ``fuzz_kernel_runner.py`` runs a whole list in one
child process.  A crash (signal), a hang (timeout), an exception outside ``ValueError`` /
``KernelUnavailableError``, a ``ValueError`` without the "Expected ..." form, or a wrong result
shape fails the test, naming the case.  CI profile: a few lists; nightly: ten times as many.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

try:
    from strategies import budget
except ImportError:  # pragma: no cover
    def budget(n):
        return n

RUNNER = Path(__file__).with_name("fuzz_kernel_runner.py")
ROOT = Path(__file__).resolve().parents[2]
KERNELS = ["cpu_ext", "cpu_torch", "cpu_tiled", "flex", "reference", "dispatch"]
BIG = [2**32 + 3, -(2**40), 2**31, -(2**31) - 1, -1, 2**62]


def _special(v):
    if isinstance(v, float) and v != v:
        return {"special": "nan"}
    if v in (float("inf"), float("-inf")):
        return {"special": "inf" if v > 0 else "-inf"}
    if isinstance(v, tuple):
        return {"special": "tuple", "data": list(v)}
    return v


def _tensor(data, dtype="float32"):
    return {"special": "tensor", "data": data, "dtype": dtype}


MUTATIONS = st.one_of(
    st.tuples(st.just("meta"), st.sampled_from(["block_table", "seq_lens", "query_start_loc", "query", "key_cache"])),
    st.tuples(st.just("sinks_meta"), st.none()),
    st.tuples(st.just("bt_dtype"), st.sampled_from(["float32", "bool", "float64", "int8", "uint8", "int16", "int64"])),
    st.tuples(st.just("bt_value"), st.sampled_from(BIG + [0, 3, 10**6])),
    st.tuples(st.just("sl_value"), st.sampled_from(BIG + [0, 1, 17, 10**6])),
    st.tuples(st.just("qsl_value"), st.sampled_from(BIG + [0, 1, 5])),
    st.tuples(st.just("query_dtype"), st.sampled_from(["int32", "float64", "int8", "bool", "complex64", "float8_e4m3fn",
                                                        "bfloat16", "float16"])),
    st.tuples(st.just("cache_dtype"), st.sampled_from(["int8", "float64", "float16", "float8_e4m3fn", "bool", "int32"])),
    st.tuples(st.just("query_view"), st.sampled_from(["stride2", "expand_tokens", "expand_heads", "expand_last",
                                                       "transposed"])),
    st.tuples(st.just("cache_view"), st.sampled_from(["split", "hnd", "expanded", "last_strided"])),
    st.tuples(st.just("shape"), st.sampled_from(["q2d", "cache5d", "heads_not_divisible", "zero_kv_heads", "zero_block",
                                                  "d_mismatch", "bt_rows", "empty_query"])),
    st.tuples(st.just("nan"), st.sampled_from(["query", "unused_blocks", "inf_query"])),
)

OPTIONS = st.one_of(
    st.tuples(st.just("sliding_window"), st.sampled_from(
        [-5, -1, 0, 1, 2**32 + 1, 2**63, 2.5, "x", True, (-2, 3), (3, -2), (1, 2, 3), (-1, -1), (0, 0), (2**40, 1)])),
    st.tuples(st.just("logits_soft_cap"), st.sampled_from([-1.0, float("nan"), float("inf"), 0.0, "x", 1e-30, 30.0])),
    st.tuples(st.just("scale"), st.sampled_from([float("nan"), float("inf"), -1.0, 0.0, "x", 1e30])),
    st.tuples(st.just("k_scale"), st.sampled_from([_tensor([1.0, 2.0, 3.0]), "x", _tensor([[1.0]]), 0.0, -2.0,
                                                   _tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])])),
    st.tuples(st.just("v_scale"), st.sampled_from([_tensor([1.0, 2.0]), float("nan"), _tensor([[0.5, 0.5]])])),
    st.tuples(st.just("sinks"), st.sampled_from([_tensor([0.0]), _tensor([1, 2, 3, 4], "int32"), "x",
                                                 _tensor([0.0, 0.0, 0.0, 0.0])])),
    st.tuples(st.just("alibi_slopes"), st.sampled_from([_tensor([0.5]), _tensor([1, 2, 3, 4], "int32"),
                                                        _tensor([0.1, 0.2, 0.3, 0.4]), 3])),
    st.tuples(st.just("mm_prefix_ranges"), st.sampled_from([[[(3, 1)]], "0-4", [[(0, 2**40)], []], [[(-1, 2)], []],
                                                            [[(0, 5)], [(1, 3)]], [[("a", 1)], []], 7])),
    st.tuples(st.just("causal"), st.sampled_from(["yes", 2, None, False])),
    st.tuples(st.just("return_lse"), st.sampled_from([True, "yes"])),
)


@st.composite
def cases(draw):
    b = draw(st.integers(1, 2))
    seq_lens = [draw(st.integers(1, 40)) for _ in range(b)]
    q_lens = [draw(st.sampled_from([1, min(L, 20)])) for L in seq_lens]
    hkv = draw(st.sampled_from([1, 2]))
    case = dict(q_lens=q_lens, seq_lens=seq_lens, H=hkv * 2, hkv=hkv, D=draw(st.sampled_from([32, 64])),
                bs=draw(st.sampled_from([1, 16, 48])), kernel=draw(st.sampled_from(KERNELS)),
                row=draw(st.integers(0, 3)), seed=draw(st.integers(0, 99)))
    if draw(st.booleans()):
        m, arg = draw(MUTATIONS)
        case.update(mutation=m, arg=_special(arg) if not isinstance(arg, dict) else arg)
    else:
        name, arg = draw(OPTIONS)
        if name in ("mm_prefix_ranges",) and isinstance(arg, list):
            arg = [[list(r) for r in row] for row in arg]
        case.update(mutation="option", name=name, arg=arg if isinstance(arg, dict) else _special(arg))
    return case


def run_cases(batch: list[dict], timeout: int = 600) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TRITON_INTERPRET", None)
    try:
        r = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(batch), capture_output=True, text=True,
                           timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        started = [ln for ln in (e.stdout or b"").decode().splitlines() if ln.startswith("START")]
        i = int(started[-1].split()[1]) if started else 0
        pytest.fail(f"hang: case {batch[i]} did not finish in {timeout}s")
    lines = r.stdout.splitlines()
    bad = [ln for ln in lines if ln.startswith("BAD")]
    if r.returncode != 0 or "DONE" not in lines:
        started = [ln for ln in lines if ln.startswith("START")]
        i = int(started[-1].split()[1]) if started else 0
        pytest.fail(f"crash (exit {r.returncode}) on case {batch[i]}:\n{r.stderr[-2000:]}")
    assert not bad, "\n".join(f"{ln}\n  case: {batch[int(ln.split()[1])]}" for ln in bad)


@settings(max_examples=budget(3), deadline=None)
@given(st.lists(cases(), min_size=20, max_size=40))
def test_bad_kernel_inputs_never_crash_hang_or_escape(batch):
    run_cases(batch)


def test_issue15_reproducers_in_a_child_process():
    """The exact #15 reproducers, in one child process (a segfault here is a test failure)."""
    base = dict(q_lens=[1, 20], seq_lens=[40, 20], H=4, hkv=2, D=128, bs=16, row=0, seed=0)
    batch = []
    for kernel in KERNELS:
        for m, arg in (("meta", "block_table"), ("bt_value", 2**32 + 3), ("bt_value", -(2**40)),
                       ("bt_dtype", "float32"), ("bt_dtype", "bool"), ("query_view", "stride2"),
                       ("query_view", "expand_tokens"), ("cache_view", "split"), ("sinks_meta", None),
                       ("nan", "query"), ("nan", "unused_blocks"), ("query_dtype", "int32"),
                       ("query_dtype", "float64"), ("cache_dtype", "int8")):
            batch.append(dict(base, kernel=kernel, mutation=m, arg=arg))
        for name, arg in (("sliding_window", 2**32 + 1), ("sliding_window", -1), ("scale", {"special": "nan"})):
            batch.append(dict(base, kernel=kernel, mutation="option", name=name, arg=arg))
    run_cases(batch)
