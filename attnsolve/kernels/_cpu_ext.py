"""Lazily built C++/OpenMP decode kernel for CPU_ATTN (``csrc/cpu_attn.cpp``).

Built and cached by ``_cpp_build`` (``g++ -O3 -march=native -fopenmp``, about two seconds).  The decode
entry is called through the source's own CPython function (``METH_FASTCALL``, built where the
interpreter's headers are installed: 0.24 us per call against ctypes' 4.4, 13 against 55 when the caches
are cold), else through ctypes; the prefill gather through ctypes.  ``ATTNSOLVE_CPU_EXT=0`` disables the
kernel (pure-torch paths are used instead).  ``load()`` never raises: it returns ``None`` and records
``reason()`` when no compiler or the build fails.

The plain decode call (one query row per sequence, no options) has a second entry, ``load_entry()``: a small
source built against torch's headers (``csrc/cpu_decode_entry.cpp``) that reads the tensors, checks the metadata
and allocates the output in C++ before the same kernel call.  ``ATTNSOLVE_CPU_ENTRY=0`` leaves it out.
"""

from __future__ import annotations

import ctypes
import os
import threading

from attnsolve.kernels._cpp_build import FLAGS, build, python_entry, python_ext_flags, python_module, torch_ext_flags

__all__ = ["load", "load_gather", "load_entry", "tile_ok", "reason", "entry_reason", "DTYPE_CODES"]

# tried in order: a compiler or CPU that refuses -march=native still gets the portable loops
_FLAG_SETS = (FLAGS, tuple(f for f in FLAGS if f != "-march=native"))
# the decode entry's arguments, in order (the C function's signature; the CPython entry parses the same
# list: kDecodeKinds in the source, checked against this one by tests/kernels/test_cpu_entry.py)
_I64, _I, _F, _P = ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_void_p
DECODE_ARGTYPES = (_I, _I, _I, _P, _I64, _I64, _P, _I64, _I64, _I64, _P, _I64, _I64, _I64, _P, _I64, _I64,
                   _P, _P, _P, _I64, _P, _I, _I, _I, _I, _I, _I, _F, _I, _I, _F, _P, _F, _F, _I, _I, _I64, _I)
_EXT_MODULE = "attnsolve_cpu_attn"


def _flag_sets() -> tuple[tuple[str, ...], ...]:
    py = python_ext_flags()
    return tuple(f + py for f in _FLAG_SETS) + _FLAG_SETS if py else _FLAG_SETS


# dtype codes shared with the C++ source (enum DType)
DTYPE_CODES = {"float32": 0, "bfloat16": 1, "float16": 2, "float8_e4m3fn": 3, "float8_e5m2": 4}

_lock = threading.Lock()
_state: dict = {}


def _build():
    out = build("cpu_attn", _flag_sets())
    lib = ctypes.CDLL(str(out))
    fn = lib.attnsolve_paged_decode
    I64, I, F, P = ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    fn.restype = I
    fn.argtypes = list(DECODE_ARGTYPES)
    if not _off("ATTNSOLVE_CPU_PYENTRY"):
        fn = python_entry(str(out), _EXT_MODULE, "paged_decode") or fn  # (=0: ctypes, for comparisons)
    gather = lib.attnsolve_gather_kv
    gather.restype = I
    gather.argtypes = [I, P, I64, I64, I64, P, I64, I64, I64, P, I, I, I, I, I, I, I64, P, P, I]
    lib.attnsolve_tile_ok.restype = I
    lib.attnsolve_tile_ok.argtypes = [I]
    _state["lib"] = lib  # the decode entry calls into it by address
    return fn, gather, lib.attnsolve_tile_ok


def load():
    """The ``attnsolve_paged_decode`` C function, or ``None`` if it cannot be built here."""
    if "fn" in _state:
        return _state["fn"]
    with _lock:
        if "fn" not in _state:
            if _off("ATTNSOLVE_CPU_EXT"):
                _state["fn"], _state["reason"] = None, "disabled by ATTNSOLVE_CPU_EXT=0"
            else:
                try:
                    (_state["fn"], _state["gather"], _state["tile_ok"]), _state["reason"] = _build(), None
                except Exception as e:  # no compiler, failed build, bad cache dir: use the torch path
                    _state["fn"], _state["reason"] = None, f"{type(e).__name__}: {e}"
    return _state["fn"]


def load_gather():
    """The ``attnsolve_gather_kv`` C function (prefill's paged K/V gather), or ``None``."""
    return _state.get("gather") if load() is not None else None


def _off(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() in ("0", "false", "no", "off")


def load_entry(min_parallel_work: int, chunk_min: int, chunk_max: int):
    """The C++ decode entry (``decode(query, key_cache, value_cache, query_start_loc, seq_lens, block_table,
    scale)``: the output, or None where the Python path must answer), or None where it cannot be built (the
    reason in ``entry_reason()``).  The arguments are cpu.py's work split (``_work_split``), which the entry
    applies as it does; the first call builds and configures, later ones return the same function."""
    if "entry" in _state:
        return _state["entry"]
    if load() is None:
        return None
    with _lock:
        if "entry" not in _state:
            entry, why = None, None
            if _off("ATTNSOLVE_CPU_ENTRY"):
                why = "disabled by ATTNSOLVE_CPU_ENTRY=0"
            elif (flags := torch_ext_flags()) is None:
                why = "no Python or torch C++ headers here"
            else:
                try:
                    mod = python_module(str(build("cpu_decode_entry", (flags,))), "attnsolve_cpu_decode_entry")
                    if mod is None:
                        why = "the build did not load (ImportError)"
                    else:
                        addr = ctypes.cast(_state["lib"].attnsolve_paged_decode, ctypes.c_void_p).value
                        mod.configure(addr, int(min_parallel_work), int(chunk_min), int(chunk_max))
                        entry = mod.decode
                except Exception as e:  # no torch headers, failed build: the Python fast path stays
                    why = f"{type(e).__name__}: {e}"
            _state["entry"], _state["entry_reason"] = entry, why
    return _state["entry"]


def entry_reason() -> str | None:
    """Why ``load_entry()`` returned None (None when it is loaded or not tried yet)."""
    return _state.get("entry_reason")


def tile_ok(head_size: int) -> bool:
    """Whether the loaded kernel has its AVX-512 tile for this head size: the path that serves several query rows
    per K/V read (``rows_per_item``); False without the extension."""
    if load() is None:
        return False
    cache = _state.setdefault("tile_cache", {})
    if head_size not in cache:
        cache[head_size] = bool(_state["tile_ok"](int(head_size)))
    return cache[head_size]


def reason() -> str | None:
    """Why ``load()`` returned ``None`` (``None`` when the extension is loaded or not tried yet)."""
    return _state.get("reason")


def _reset_for_tests() -> None:
    with _lock:
        _state.clear()
