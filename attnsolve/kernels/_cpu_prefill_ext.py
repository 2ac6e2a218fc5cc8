"""Lazily built C++ AMX prefill kernel for CPU_ATTN (``csrc/cpu_prefill.cpp``), loaded with ctypes.

Same build rules as ``_cpu_ext``: ``g++ -O3 -march=native -fopenmp`` through ``_cpp_build``, cached under
``$ATTNSOLVE_CACHE_DIR``; ``ATTNSOLVE_CPU_EXT=0`` disables it.  The function itself answers -1 where the
build or the CPU has no AMX (the caller then takes the torch path).  ``load()`` never raises; ``reason()``
says why it is unavailable.
"""

from __future__ import annotations

import ctypes
import os
import threading

from attnsolve.kernels._cpp_build import build

__all__ = ["load", "amx_ok", "reason", "PREFILL_ARGTYPES"]

_P, _I64, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
# attnsolve_prefill_bf16's parameters, in order (see the C source)
PREFILL_ARGTYPES = (
    _P, _I64, _I64,  # query [n, H, D], strides (row, head)
    _P, _I64, _I64, _I64,  # key cache, strides (block, slot, KV head)
    _P, _I64, _I64, _I64,  # value cache, strides
    _P, _I, _I64,  # the sequence's block-table row (int32), block size, number of blocks
    _I, _F, _F,  # cache type (1 bf16, 3 fp8 e4m3, 4 fp8 e5m2), k_scale, v_scale
    _I, _I, _I, _I, _I, _I, _I, _F, _F, _P,  # n, L, H, Hkv, D, causal, window (0: none), scale, soft-cap (0: none),
    # sinks (float32 [H] or null)
    _P,  # ALiBi slopes (float32 [H] or null)
    _P, _I64, _I64,  # out [n, H, D], strides (row, head)
    _P, _I64, _I64,  # log-sum-exp (float32 [n, H] or null), strides
    _I,  # threads
)

_lock = threading.Lock()
_state: dict = {}


def load():
    """The ``attnsolve_prefill_bf16`` C function, or ``None`` (see ``reason()``)."""
    if "fn" in _state:
        return _state["fn"]
    with _lock:
        if "fn" not in _state:
            if os.environ.get("ATTNSOLVE_CPU_EXT", "1").strip().lower() in ("0", "false", "no", "off"):
                _state["fn"], _state["reason"] = None, "disabled by ATTNSOLVE_CPU_EXT=0"
            else:
                try:
                    lib = ctypes.CDLL(str(build("cpu_prefill")))
                    fn = lib.attnsolve_prefill_bf16
                    fn.restype = _I
                    fn.argtypes = list(PREFILL_ARGTYPES)
                    lib.attnsolve_fp8_to_bf16.restype = _I
                    lib.attnsolve_fp8_to_bf16.argtypes = [_I, _P, _P, _I]
                    _state["fp8"] = lib.attnsolve_fp8_to_bf16
                    lib.attnsolve_prefill_amx_ok.restype = _I
                    lib.attnsolve_prefill_amx_ok.argtypes = []
                    _state["amx"] = bool(lib.attnsolve_prefill_amx_ok())
                    _state["fn"], _state["reason"] = fn, None
                except Exception as e:  # no compiler, failed build: the torch path runs instead
                    _state["fn"], _state["reason"] = None, f"{type(e).__name__}: {e}"
    return _state["fn"]


def amx_ok() -> bool:
    """Whether the kernel runs here: built with AMX, and the CPU grants AMX to this process."""
    if "amx" not in _state:
        load()
    return bool(_state.get("amx"))


def fp8_widen():
    """The kernel's fp8 -> bf16 widening as a C function ``(ctype, src, dst, n) -> int``, or None (for tests)."""
    return _state.get("fp8") if load() is not None else None


def reason() -> str | None:
    """Why ``load()`` returned ``None`` (``None`` when it is loaded or was not tried yet)."""
    return _state.get("reason")


def _reset_for_tests() -> None:
    with _lock:
        _state.clear()
