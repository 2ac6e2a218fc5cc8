"""Build a C++ kernel from ``csrc/`` into a cached shared object (for ``_cpu_ext`` and ``_cpu_mla_ext``).

Why not ``torch.utils.cpp_extension``: that includes the ATen and pybind11 headers and takes
30-60 s to compile here; the kernels use only the C ABI (raw pointers, strides), compile with
``g++ -O3 -march=native -fopenmp`` in about two seconds, and share torch's OpenMP runtime (same
``libgomp.so.1`` SONAME, already loaded by torch).  One small source is the exception
(``TORCH_SOURCES``: CPU_ATTN's decode entry, which reads tensors itself): it includes only the headers it
needs and builds in about ten seconds, once per torch version.

The shared object is cached under ``$ATTNSOLVE_CACHE_DIR`` (default ``~/.cache/attnsolve``), keyed
by a hash of the source, the shared header ``cpu_common.h``, the flags, the compiler and the
CPU's feature flags.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

__all__ = ["build", "FLAGS", "CSRC", "TORCH_SOURCES", "python_ext_flags", "torch_ext_flags", "python_entry",
           "python_module", "fallbacks"]

CSRC = Path(__file__).resolve().parent / "csrc"
HEADER = "cpu_common.h"  # included by every kernel source; written beside it for the compiler
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno", "-std=c++17")
# sources that include torch's headers (built with torch_ext_flags, not FLAGS)
TORCH_SOURCES = ("cpu_decode_entry",)


def python_ext_flags() -> tuple[str, ...] | None:
    """Flags that add a source's CPython entry (``-DATTNSOLVE_PYEXT`` and this interpreter's headers), or
    None where the headers are not installed (a distribution Python without its -dev package): the build
    then has only the C ABI, which ctypes loads."""
    import sysconfig

    inc = sysconfig.get_paths().get("include")
    if not inc or not os.path.exists(os.path.join(inc, "Python.h")):
        return None
    return ("-DATTNSOLVE_PYEXT", f"-I{inc}")


def torch_ext_flags() -> tuple[str, ...] | None:
    """Flags for a source that reads torch tensors itself (``cpu_decode_entry.cpp``): torch's headers, linked
    to the torch libraries this process has loaded (found by their SONAMEs), or None without the interpreter's
    or torch's headers.  Only that small source pays for the headers (~10 s, once); the kernels do not."""
    py = python_ext_flags()
    if py is None:
        return None
    import re

    import torch

    root = Path(torch.__file__).resolve().parent
    inc, lib = root / "include", root / "lib"
    if not (inc / "torch" / "csrc" / "autograd" / "python_variable.h").exists():
        return None
    abi = int(bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True)))
    return ("-O2", "-fPIC", "-shared", "-std=c++20", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
            # torch's version in the flags: they key the cached build, which a new torch must not reuse
            "-DATTNSOLVE_TORCH_" + re.sub(r"\W", "_", torch.__version__),
            *py, f"-I{inc}", f"-I{inc / 'torch' / 'csrc' / 'api' / 'include'}", f"-L{lib}", f"-Wl,-rpath,{lib}",
            "-Wl,--no-as-needed", "-ltorch_python", "-ltorch_cpu", "-lc10")


def python_module(path: str, module: str):
    """The CPython module ``module`` that the shared object at ``path`` holds, or None for a build without one
    (no ``PyInit_<module>``, or a library it needs is missing)."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.ExtensionFileLoader(module, path)
    spec = importlib.util.spec_from_file_location(module, path, loader=loader)
    try:
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
    except ImportError:
        return None
    return mod


def python_entry(path: str, module: str, name: str):
    """Function ``name`` of the CPython module ``module`` that a build with ``python_ext_flags`` holds, or None
    for a build without one (its shared object has no ``PyInit_<module>``): the caller keeps ctypes then."""
    return getattr(python_module(path, module), name, None)


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


def cache_dir() -> Path:
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


_FALLBACKS: dict[str, str] = {}


def fallbacks() -> dict[str, str]:
    """Sources built with a later flag set than the first, and why the earlier ones failed.

    Why it is kept: a failed ``-march=native`` build falls back to portable loops that still give right
    answers, only 4 to 40 times slower (session 26: a source that compiled only with AMX made every
    AVX-512 CPU without it, AMD Zen 4 for one, run the portable decode, fp16 at 0.3 GB/s)."""
    return dict(_FALLBACKS)


def build(name: str, flag_sets: tuple[tuple[str, ...], ...] = (FLAGS,), csrc: Path = CSRC) -> Path:
    """The shared object of ``<csrc>/<name>.cpp`` (default: this package's ``csrc/``), compiled with the
    first flag set that works (the benchmarks build their own helper sources the same way)."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (g++/c++ not on PATH, CXX unset)")
    source = (csrc / f"{name}.cpp").read_text(encoding="utf-8")
    header = (CSRC / HEADER).read_text(encoding="utf-8")
    errors = []
    for flags in flag_sets:
        key = hashlib.sha256("\0".join([source, header, " ".join(flags), cxx, _cpu_signature()]).encode()).hexdigest()[:16]
        out = cache_dir() / f"{name}_{key}.so"
        if out.exists():
            if errors:
                _note_fallback(name, flags, errors)
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            src = Path(tmp) / f"{name}.cpp"
            src.write_text(source)
            (Path(tmp) / HEADER).write_text(header)
            so = Path(tmp) / f"{name}.so"
            proc = subprocess.run([cxx, *flags, "-o", str(so), str(src)], capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-1000:]}")
                continue
            os.replace(so, out)  # atomic: concurrent builders race harmlessly
            if errors:
                _note_fallback(name, flags, errors)
            return out
    raise RuntimeError(f"compiling {csrc.name}/{name}.cpp failed: " + " | ".join(errors))


def _note_fallback(name: str, flags: tuple[str, ...], errors: list[str]) -> None:
    """Record (and warn once about) a build that lost ``-march=native``; a build that only lost the CPython
    entry (no Python headers here: the ctypes entry is used, the same loops) is not a slower build."""
    if "-march=native" in flags or not any(e.startswith(" ".join(FLAGS)) or "-march=native" in e.split(":")[0]
                                             for e in errors):
        return
    if name not in _FALLBACKS:
        _FALLBACKS[name] = " | ".join(errors)
        warnings.warn(f"attnsolve: {name}.cpp built with the fallback flags {' '.join(flags)} (slower loops): "
                      + _FALLBACKS[name], RuntimeWarning, stacklevel=3)
