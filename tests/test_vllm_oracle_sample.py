"""vLLM's own selector vs attnsolve on a sample (marked slow: it provisions vLLM 0.17.0, a
download and a venv in ~/.cache/attnsolve-oracle, then a few minutes of comparison).

`.ci/run` runs the same comparison as its own step; here it runs with --runslow (ci profile) or
HYPOTHESIS_PROFILE=nightly (the full comparison).  Deselect with `-m "not slow"`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_vllm_0_17_agrees_except_known_differences(tmp_path: Path) -> None:
    profile = "nightly" if os.environ.get("HYPOTHESIS_PROFILE") == "nightly" else "ci"
    proc = subprocess.run([sys.executable, "-m", "tools.vllm_oracle", "--vllm", "0.17.0", "--profile", profile,
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert (tmp_path / "summary.json").exists()
