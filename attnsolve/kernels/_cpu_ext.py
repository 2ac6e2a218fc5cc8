"""Lazily built C++/OpenMP decode kernel for CPU_ATTN (``csrc/cpu_attn.cpp``), loaded with ctypes.

Built and cached by ``_cpp_build`` (``g++ -O3 -march=native -fopenmp``, about two seconds).
``ATTNSOLVE_CPU_EXT=0`` disables it (pure-torch paths are used instead).  ``load()`` never
raises: it returns ``None`` and records ``reason()`` when no compiler or the build fails.
"""

from __future__ import annotations

import ctypes
import os
import threading

from attnsolve.kernels._cpp_build import FLAGS, build

__all__ = ["load", "load_gather", "reason", "DTYPE_CODES"]

# tried in order: a compiler or CPU that refuses -march=native still gets the portable loops
_FLAG_SETS = (FLAGS, tuple(f for f in FLAGS if f != "-march=native"))

# dtype codes shared with the C++ source (enum DType)
DTYPE_CODES = {"float32": 0, "bfloat16": 1, "float16": 2, "float8_e4m3fn": 3, "float8_e5m2": 4}

_lock = threading.Lock()
_state: dict = {}


def _build() -> ctypes.CDLL:
    out = build("cpu_attn", _FLAG_SETS)
    lib = ctypes.CDLL(str(out))
    fn = lib.attnsolve_paged_decode
    I64, I, F, P = ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    fn.restype = I
    fn.argtypes = [I, I, I, P, I64, I64, P, I64, I64, I64, P, I64, I64, I64, P, I64, I64,
                   P, P, P, I64, P, I, I, I, I, I, I, F, I, I, F, P, F, F, I, I, I64]
    gather = lib.attnsolve_gather_kv
    gather.restype = I
    gather.argtypes = [I, P, I64, I64, I64, P, I64, I64, I64, P, I, I, I, I, I, I, I64, P, P, I]
    return fn, gather


def load():
    """The ``attnsolve_paged_decode`` C function, or ``None`` if it cannot be built here."""
    if "fn" in _state:
        return _state["fn"]
    with _lock:
        if "fn" not in _state:
            if os.environ.get("ATTNSOLVE_CPU_EXT", "1").strip().lower() in ("0", "false", "no", "off"):
                _state["fn"], _state["reason"] = None, "disabled by ATTNSOLVE_CPU_EXT=0"
            else:
                try:
                    (_state["fn"], _state["gather"]), _state["reason"] = _build(), None
                except Exception as e:  # no compiler, failed build, bad cache dir: use the torch path
                    _state["fn"], _state["reason"] = None, f"{type(e).__name__}: {e}"
    return _state["fn"]


def load_gather():
    """The ``attnsolve_gather_kv`` C function (prefill's paged K/V gather), or ``None``."""
    return _state.get("gather") if load() is not None else None


def reason() -> str | None:
    """Why ``load()`` returned ``None`` (``None`` when the extension is loaded or not tried yet)."""
    return _state.get("reason")


def _reset_for_tests() -> None:
    with _lock:
        _state.clear()
