"""Lazily built C++/OpenMP decode kernel for CPU_ATTN, loaded with ctypes.

Why not ``torch.utils.cpp_extension``: that includes the ATen and pybind11 headers and takes
30-60 s to compile here; this source uses only the C ABI (raw pointers, strides), compiles
with ``g++ -O3 -march=native -fopenmp`` in about two seconds, and shares torch's OpenMP
runtime (same ``libgomp.so.1`` SONAME, already loaded by torch).

The shared object is cached under ``$ATTNSOLVE_CACHE_DIR`` (default ``~/.cache/attnsolve``),
keyed by a hash of the source, the flags, the compiler and the CPU's feature flags.
``ATTNSOLVE_CPU_EXT=0`` disables it (pure-torch paths are used instead).  ``load()`` never
raises: it returns ``None`` and records ``reason()`` when no compiler or the build fails.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

__all__ = ["load", "load_gather", "reason", "DTYPE_CODES"]

_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno", "-std=c++17"]
# tried in order: a compiler or CPU that refuses -march=native still gets the portable loops
_FLAG_SETS = (_FLAGS, [f for f in _FLAGS if f != "-march=native"])

# dtype codes shared with the C++ source (enum DType)
DTYPE_CODES = {"float32": 0, "bfloat16": 1, "float16": 2, "float8_e4m3fn": 3, "float8_e5m2": 4}

_lock = threading.Lock()
_state: dict = {}


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    """``$ATTNSOLVE_CACHE_DIR``, else ``~/.cache/attnsolve``, else a per-user temp dir if home is not writable."""
    d = os.environ.get("ATTNSOLVE_CACHE_DIR")
    if d:
        return Path(d)
    home = Path.home() / ".cache" / "attnsolve"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if os.access(home, os.W_OK):
            return home
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"attnsolve-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def _build() -> ctypes.CDLL:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (g++/c++ not on PATH, CXX unset)")
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256("\0".join([_SOURCE, " ".join(flags), cxx, _cpu_signature()]).encode()).hexdigest()[:16]
        out = _cache_dir() / f"cpu_attn_{key}.so"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
                src = Path(tmp) / "cpu_attn.cpp"
                src.write_text(_SOURCE)
                so = Path(tmp) / "cpu_attn.so"
                proc = subprocess.run([cxx, *flags, "-o", str(so), str(src)], capture_output=True, text=True, timeout=120)
                if proc.returncode != 0:
                    errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-1000:]}")
                    continue
                os.replace(so, out)  # atomic: concurrent builders race harmlessly
        break
    else:
        raise RuntimeError("compiling the CPU_ATTN extension failed: " + " | ".join(errors))
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


# The C++ source lives beside this module (csrc/cpu_attn.cpp: a real file for editors, compilers' line numbers
# and diffs); its text is part of the build's cache key.
_SOURCE = (Path(__file__).resolve().parent / "csrc" / "cpu_attn.cpp").read_text(encoding="utf-8")
