"""An explicit dtype is recorded (dtype_explicit, a field the rules declare) and vLLM's start-up checks it.

vLLM's GPU worker (platforms/cuda.py check_if_supports_dtype, vLLM 0.17.0 and 0.33.0) refuses an
explicit bfloat16 below SM 8.0; `--dtype auto` falls back to float16 there and never reaches it.
"""

from __future__ import annotations

import pytest

from attnsolve import Config, solve
from attnsolve.cli import main

BF16_TEXT = ("Bfloat16 is only supported on GPUs with compute capability of at least 8.0. Your V100 GPU has "
             "compute capability 7.0. You can use float16 instead by explicitly setting the `dtype` flag in CLI, "
             "for example: --dtype=half.")


@pytest.mark.parametrize("version", ["0.17", "0.33"])
def test_explicit_bfloat16_below_sm80_is_vllms_startup_failure(version):
    explicit = solve(Config(vllm=version, gpu="V100", dtype="bfloat16", dtype_explicit=True))
    assert explicit.startup_error == BF16_TEXT
    assert solve(Config(vllm=version, gpu="V100", dtype="bfloat16")).startup_error is None
    assert solve(Config(vllm=version, gpu="V100", dtype="float16", dtype_explicit=True)).startup_error is None
    assert solve(Config(vllm=version, gpu="A100", dtype="bfloat16", dtype_explicit=True)).startup_error is None


def test_the_dtype_flag_is_explicit_and_auto_is_not(capsys):
    assert main(["select", "--gpu", "V100", "--dtype", "bfloat16"]) == 1
    out = " ".join(capsys.readouterr().out.split())  # the text is wrapped to 80 columns
    assert "Bfloat16 is only supported on GPUs with compute capability of at least 8.0." in out
    assert main(["select", "--gpu", "V100", "--dtype", "auto"]) == 0
    assert main(["select", "--gpu", "V100", "--dtype", "float16"]) == 0
    assert main(["select", "--gpu", "V100", "--model", "examples/llama3-8b.json"]) == 0  # auto: float16 there
    capsys.readouterr()
    assert main(["explain", "--gpu", "V100", "--dtype", "bfloat16"]) == 1
    assert "--dtype float16" in capsys.readouterr().out  # the fix that starts
