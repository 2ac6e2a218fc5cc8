"""``gpu_peer_grid.py``: the peers' grids at their own sizes on a CUDA device (``-m gpu``), and a
CPU smoke run of the same harness so that it cannot rot between GPU sessions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("gpu_peer_grid.py")
torch = pytest.importorskip("torch")


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiled Triton
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible to torch)")
def test_peer_grid_on_gpu():
    r = _run("--per-source", "1", timeout=1500)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]


def test_harness_smoke_on_cpu():
    """Three small cases through FLEX and dispatch on CPU: the harness builds, moves, checks and
    summarises (a wrong reference or a broken layout rebuild fails here, not on the GPU day)."""
    r = _run("--device", "cpu", "--per-source", "1", "--limit", "3", "--backends", "FLEX_ATTENTION",
             "--mla", "no", timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "| FLEX_ATTENTION | 3 | 3 | 0 | 0 | 0 |" in r.stdout, r.stdout
    assert "| dispatch->CPU_ATTN | 3 | 3 |" in r.stdout, r.stdout
