"""Lazily built C++/OpenMP MLA kernel for CPU_MLA, loaded with ctypes (the ``_cpu_ext`` approach).

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

from attnsolve.kernels._cpp_build import build

__all__ = ["load", "reason", "DTYPE_CODES"]

DTYPE_CODES = {"float32": 0, "bfloat16": 1, "float16": 2}

_lock = threading.Lock()
_state: dict = {}


def _build() -> ctypes.CDLL:
    out = build("cpu_mla")
    lib = ctypes.CDLL(str(out))
    p, i32, i64, f32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float
    lib.mla_attend.restype = i32
    lib.mla_attend.argtypes = [
        p, i64, i64,  # query, strides (token, head), elements
        p, i64, i64, i32,  # kv cache, strides (block, slot), num_blocks
        i32, i32, i32, i32, i32, i32,  # dtype, block_size, D, R (kv_lora_rank), H, T
        p, p, p, i64,  # tok_seq, tok_limit (dense rows / -1 sparse), block_table, its row stride
        p, i32, i64,  # topk (int32, or null), topk, its row stride
        f32,  # scale
        p, i64, i64,  # out, strides (token, head)
        p, p, i32, i64,  # scratch float32, item table int32, max items, rows per item
    ]
    return lib


def load():
    """The loaded library, or ``None`` (see ``reason()``)."""
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
