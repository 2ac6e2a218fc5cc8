"""Import triton (and one of our Triton kernel modules) in interpreter mode for CPU tests.

Triton decides between compiling and interpreting when it is first imported, so the variable is
set while importing and restored afterwards (other tests see the environment they expect). If
triton was already imported in compile mode, nothing is forced: the caller re-runs its tests in
a subprocess with the variable set.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

import pytest


def import_interpreted(module: str) -> tuple[ModuleType, ModuleType, bool]:
    """(torch, the kernel module, whether this process runs triton in interpreter mode)."""
    old = os.environ.get("TRITON_INTERPRET")
    set_env = "triton.language" not in sys.modules or (
        type(sys.modules["triton.language"].zeros).__name__ == "InterpretedFunction"
    )
    if set_env:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        pytest.importorskip("triton")
        torch = pytest.importorskip("torch")
        import triton.language  # noqa: F401  (decides interpret-or-compile now)
        import triton.experimental.gluon  # noqa: F401  (imported lazily at launch; asserts the same mode)

        kernel = importlib.import_module(module)
    finally:
        if set_env:
            if old is None:
                os.environ.pop("TRITON_INTERPRET", None)
            else:
                os.environ["TRITON_INTERPRET"] = old
    return torch, kernel, set_env


def rerun_in_interpreter(test_file: str) -> None:
    """Run a whole Triton test module in a subprocess with TRITON_INTERPRET=1 (used when this
    process already imported triton in compile mode) and fail with its output if it fails."""
    import subprocess

    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def rerun_compiled(test_file: str, test_name: str) -> None:
    """Run one GPU test in a subprocess without TRITON_INTERPRET (used when this process has triton in
    interpreter mode, which inductor's compiled kernels cannot use) and fail with its output if it fails."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-rA",
                        f"{test_file}::{test_name}"], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and " passed" in r.stdout, r.stdout[-4000:] + r.stderr[-2000:]
