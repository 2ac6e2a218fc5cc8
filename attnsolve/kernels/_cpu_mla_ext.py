"""Lazily built C++/OpenMP MLA kernel for CPU_MLA, called through its CPython entry or ctypes (as ``_cpu_ext``).

One pass over each query token's latent rows (dense: the first ``pos + 1`` tokens of its
sequence; sparse: its listed ``topk`` positions), reading every row once for all heads:
rows are widened to float32 in tiles of 16, scores for all heads, an online softmax in
float32, and ``P · V`` over the first ``kv_lora_rank`` columns.  Long row lists are split
among work items whose float32 partial results (max, sum, accumulator) are merged exactly,
so one sequence keeps every thread busy and nothing is rounded before the end.

Same build rules as ``_cpu_ext``: ``g++ -O3 -march=native -fopenmp``, cached under
``$ATTNSOLVE_CACHE_DIR``; ``ATTNSOLVE_CPU_EXT=0`` disables it; ``load()`` never raises and
``reason()`` says why it is unavailable.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from typing import Callable

from attnsolve.kernels._cpp_build import FLAGS, build, python_entry, python_ext_flags

__all__ = ["load", "reason", "DTYPE_CODES", "MLA_ARGTYPES", "Kernel"]

DTYPE_CODES = {"float32": 0, "bfloat16": 1, "float16": 2}

_p, _i32, _i64, _f32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float
# mla_attend's arguments, in order (the C signature; the CPython entry parses the same list: kMlaKinds in the
# source, checked against this one by tests/kernels/test_cpu_mla.py)
MLA_ARGTYPES = (
    _p, _i64, _i64,  # query, strides (token, head), elements
    _p, _i64, _i64, _i32,  # kv cache, strides (block, slot), num_blocks
    _i32, _i32, _i32, _i32, _i32, _i32,  # dtype, block_size, D, R (kv_lora_rank), H, T
    _p, _p, _p, _i64,  # tok_seq, tok_limit (dense rows / -1 sparse), block_table, its row stride
    _p, _i32, _i64,  # topk (int32, or null), topk, its row stride
    _f32,  # scale
    _p, _i64, _i64,  # out, strides (token, head)
    _p, _p, _i32, _i64,  # scratch float32, item table int32, max items, rows per item
)
_EXT_MODULE = "attnsolve_cpu_mla"


@dataclass(frozen=True)
class Kernel:
    """The loaded kernel: ``mla_attend`` is the source's CPython entry (METH_FASTCALL) where the build has one
    (the interpreter's headers are installed and ``ATTNSOLVE_CPU_PYENTRY`` is not 0), else the ctypes function;
    both take ``MLA_ARGTYPES`` in order and return the C function's int."""

    mla_attend: Callable[..., int]


_lock = threading.Lock()
_state: dict = {}


def _build() -> Kernel:
    py = python_ext_flags()
    out = build("cpu_mla", (FLAGS + py, FLAGS) if py else (FLAGS,))
    lib = _state["cdll"] = ctypes.CDLL(str(out))  # (kept loaded for the ctypes function)
    fn = lib.mla_attend
    fn.restype = _i32
    fn.argtypes = list(MLA_ARGTYPES)
    if os.environ.get("ATTNSOLVE_CPU_PYENTRY", "1").strip().lower() not in ("0", "false", "no", "off"):
        fn = python_entry(str(out), _EXT_MODULE, "mla_attend") or fn
    return Kernel(fn)


def load():
    """The loaded ``Kernel``, or ``None`` (see ``reason()``)."""
    if "lib" in _state:  # loaded (or refused) before: no lock on the per-call path
        return _state["lib"]
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        lib = None
        if os.environ.get("ATTNSOLVE_CPU_EXT", "1") == "0":
            _state["reason"] = "disabled by ATTNSOLVE_CPU_EXT=0"
        else:
            try:
                lib = _build()
            except Exception as e:  # no compiler, failed build: the torch path runs instead
                _state["reason"] = str(e)
        _state["lib"] = lib
        return lib


def reason() -> str | None:
    """Why the extension is not loaded (``None`` when it is, or was not tried yet)."""
    return _state.get("reason")


def _reset_for_tests() -> None:
    with _lock:
        _state.clear()
