"""The C++ kernel sources compile for every x86 feature set they branch on, and this machine gets the
native build.

Why: ``_cpp_build`` falls back to portable flags when ``-march=native`` fails, and the portable loops still
give right answers, so no accuracy test notices. Until session 26 ``cpu_attn.cpp`` called an AMX-only helper
outside its ``#if``: every AVX-512 CPU without AMX (AMD Zen 4, Intel Ice Lake / Cooper Lake) silently ran the
portable decode, bf16 4.5x and fp16 40x slower (fp16 went through libgcc's soft-float conversion)."""

from __future__ import annotations

import platform
import shutil
import subprocess

import pytest

from attnsolve.kernels import _cpp_build
from attnsolve.kernels._cpp_build import CSRC, FLAGS, TORCH_SOURCES

SOURCES = sorted(p.stem for p in CSRC.glob("*.cpp") if p.stem not in TORCH_SOURCES)  # the kernels
CXX = shutil.which("g++")
X86 = platform.machine().lower() in ("x86_64", "amd64")
pytestmark = pytest.mark.skipif(not (CXX and X86), reason="needs g++ on x86-64")

# One target per combination of the features the sources test with #if: none, AVX2 + F16C, AVX-512 without
# BF16, AVX-512 BF16 without AMX (what Zen 4 has), AMX (BF16 and FP16 arithmetic too).
TARGETS = ("x86-64", "haswell", "icelake-server", "cooperlake", "sapphirerapids")


@pytest.mark.parametrize("target", TARGETS)
def test_every_source_compiles_for_each_feature_set(target):
    for name in SOURCES:
        proc = subprocess.run([CXX, "-fsyntax-only", f"-march={target}", "-fopenmp", "-std=c++17",
                               str(CSRC / f"{name}.cpp")], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{name}.cpp with -march={target}:\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("name", SOURCES)
def test_this_machine_gets_the_native_build(name):
    assert "-march=native" in FLAGS
    path = _cpp_build.build(name, (FLAGS,))  # raises with the compiler's message if the native build fails
    assert path.exists()
    assert name not in _cpp_build.fallbacks()


@pytest.mark.parametrize("name", TORCH_SOURCES)
def test_the_torch_linked_sources_build_here(name):
    """Where the interpreter's and torch's headers are installed (torch's wheels carry theirs), the sources that
    read tensors in C++ build and load: the decode entry must not silently fall back to the Python path."""
    pytest.importorskip("torch")
    flags = _cpp_build.torch_ext_flags()
    if flags is None:
        pytest.skip("no Python headers here (a distribution Python without its -dev package)")
    path = _cpp_build.build(name, (flags,))  # raises with the compiler's message
    assert _cpp_build.python_module(str(path), f"attnsolve_{name}") is not None


def test_a_build_that_loses_march_native_is_recorded_and_warned(tmp_path, monkeypatch):
    """The portable fallback is recorded and warned once; a build that only loses the CPython entry (no
    Python headers: the ctypes entry, the same loops) is not."""
    monkeypatch.setenv("ATTNSOLVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_cpp_build, "_FALLBACKS", {})
    portable = tuple(f for f in FLAGS if f != "-march=native")
    (tmp_path / "native_only.cpp").write_text(
        '#if defined(__SSE4_2__)\n#error compiles only without -march=native\n#endif\nextern "C" int f() { return 1; }\n')
    with pytest.warns(RuntimeWarning, match="native_only.cpp built with the fallback flags"):
        _cpp_build.build("native_only", (FLAGS, portable), csrc=tmp_path)
    assert "native_only" in _cpp_build.fallbacks() and "-march=native" in _cpp_build.fallbacks()["native_only"]
    (tmp_path / "no_headers.cpp").write_text(
        '#if defined(NEEDS_HEADERS)\n#error no Python headers\n#endif\nextern "C" int f() { return 1; }\n')
    _cpp_build.build("no_headers", (FLAGS + ("-DNEEDS_HEADERS",), FLAGS), csrc=tmp_path)
    assert "no_headers" not in _cpp_build.fallbacks()


def _prefetches_per_function(asm: str) -> dict[str, int]:
    """Prefetch instructions in each function of a compiler's assembly output (mangled names)."""
    counts: dict[str, int] = {}
    name = None
    for line in asm.splitlines():
        s = line.strip()
        if s.startswith(".type") and s.endswith("@function"):
            name = s.split()[1].rstrip(",")
            counts[name] = 0
        elif s.startswith(".size"):
            name = None
        elif name is not None and s.startswith("prefetch"):
            counts[name] += 1
    return counts


def _optimized_asm(target: str, name: str) -> str:
    proc = subprocess.run([CXX, "-S", "-o", "-", f"-march={target}"]
                          + [f for f in FLAGS if f not in ("-march=native", "-shared")] + [str(CSRC / f"{name}.cpp")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_every_decode_tile_issues_its_prefetches():
    """GCC 12 at -O3 deleted the decode tile's _mm_prefetch calls (the scores' prefetch of the tile's V rows) in
    most head sizes' instantiations, D = 128 among them: nothing failed, decode just read a third slower (session
    31). Every tile instantiation of the AVX-512 BF16 build (Zen 4's feature set) must contain prefetches."""
    counts = _prefetches_per_function(_optimized_asm("cooperlake", "cpu_attn"))
    tiles = {n: c for n, c in counts.items() if "tile_avx" in n}
    assert len(tiles) >= 8, sorted(counts)
    assert all(c > 0 for c in tiles.values()), {n: c for n, c in tiles.items() if c == 0}


def test_the_amx_prefill_issues_its_prefetches():
    """The same deletion removed both prefetches of the AMX prefill kernel (prefetch_rows: the next chunk's K and
    V rows) from every build."""
    counts = _prefetches_per_function(_optimized_asm("sapphirerapids", "cpu_prefill"))
    assert sum(counts.values()) >= 2, counts
