"""CPU_ATTN's two entries to the same C++ decode function: the source's CPython function (``paged_decode``,
METH_FASTCALL) and ctypes.  Same argument list, same results, bad arguments refused."""

from __future__ import annotations

import ctypes
import re

import pytest

torch = pytest.importorskip("torch")

from attnsolve.kernels import _cpu_ext  # noqa: E402
from attnsolve.kernels._cpp_build import CSRC, build  # noqa: E402
from attnsolve.kernels.cpu import cpu_attn_impl  # noqa: E402
from paged_cases import FP8, make_batch  # noqa: E402

HAS_EXT = _cpu_ext.load() is not None
pytestmark = pytest.mark.skipif(not HAS_EXT, reason=f"CPU_ATTN extension not built: {_cpu_ext.reason()}")
PY_ENTRY = HAS_EXT and not hasattr(_cpu_ext.load(), "argtypes")  # a ctypes function has argtypes
_KIND = {ctypes.c_int: "i", ctypes.c_int64: "l", ctypes.c_void_p: "p", ctypes.c_float: "f"}


def test_the_cpython_entry_parses_the_c_signature():
    src = (CSRC / "cpu_attn.cpp").read_text()
    kinds = re.search(r'kDecodeKinds\[kDecodeArgs \+ 1\] = "([a-z]+)"', src).group(1)
    assert kinds == "".join(_KIND[t] for t in _cpu_ext.DECODE_ARGTYPES)


def _ctypes_entry():
    lib = ctypes.CDLL(str(build("cpu_attn", _cpu_ext._flag_sets())))
    fn = lib.attnsolve_paged_decode
    fn.restype, fn.argtypes = ctypes.c_int, list(_cpu_ext.DECODE_ARGTYPES)
    return fn


@pytest.mark.skipif(not PY_ENTRY, reason="built without the CPython entry (no Python headers): ctypes only")
@pytest.mark.parametrize("case", [
    dict(dtype=torch.bfloat16, opts={}),
    dict(dtype=torch.float32, opts={"sliding_window": 9, "logits_soft_cap": 20.0}),
    dict(dtype=torch.float16, opts={"sinks": True, "scale": 0.2}),
    dict(dtype=torch.bfloat16, cache=FP8[0], opts={"k_scale": 0.5, "v_scale": 2.0}),
])
def test_both_entries_give_the_same_answer(case, monkeypatch):
    q, kc, vc, md = make_batch([1, 3, 16], [40, 23, 70], 8, 2, 64, 16, dtype=case["dtype"],
                               cache_dtype=case.get("cache"), seed=3)
    kw = dict(case["opts"])
    if kw.pop("sinks", False):
        kw["sinks"] = torch.linspace(-1, 1, 8)
    py = cpu_attn_impl(q, kc, vc, md, **kw)
    monkeypatch.setitem(_cpu_ext._state, "fn", _ctypes_entry())
    ct = cpu_attn_impl(q, kc, vc, md, **kw)
    assert torch.equal(py, ct)


@pytest.mark.skipif(not PY_ENTRY, reason="built without the CPython entry")
def test_bad_arguments_are_refused():
    fn = _cpu_ext.load()
    with pytest.raises(TypeError, match="takes 39 arguments"):
        fn(1, 2, 3)
    args = [0] * 39
    args[22] = 2**40  # nseqs, a C int
    with pytest.raises(OverflowError, match="argument 22"):
        fn(*args)
    args[22] = 0
    args[28] = "0.5"  # scale, a float
    with pytest.raises(TypeError):
        fn(*args)
