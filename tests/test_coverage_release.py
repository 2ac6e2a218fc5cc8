"""coverage_report / `matrix --all` answer for the release asked, and refuse up front (exit 2, no
hang) where a release's sweep would solve too many rows one at a time (vLLM 0.33's steps before the
lists read the model facts; 0.17 has none and folds its whole space)."""

from __future__ import annotations

import io
import time

import pytest

from attnsolve import ANY, Config, ConfigError
from attnsolve.cli import run
from attnsolve.coverage import MAX_STEP_ROWS, coverage_report


@pytest.mark.vllm("0.33")
def test_whole_space_on_033_is_refused_before_any_work():
    start = time.process_time()
    with pytest.raises(ConfigError) as err:
        coverage_report()
    assert time.process_time() - start < 30  # refused by the size estimate, not after sweeping
    assert err.value.field == "vllm" and err.value.value == "0.33"
    assert "solved one at a time" in str(err.value) and f"{MAX_STEP_ROWS:,}" in str(err.value)


@pytest.mark.vllm("0.33")
def test_matrix_all_on_033_exits_2_with_the_reason():
    out, err = io.StringIO(), io.StringIO()
    assert run(["matrix", "--all"], out, err) == 2
    assert "coverage over vLLM 0.33's whole space is not available" in " ".join(err.getvalue().split())
    assert "Traceback" not in err.getvalue()


@pytest.mark.vllm("0.33")
def test_the_release_asked_answers_not_the_default():
    """A narrow 0.33 question is refused too: the dead-rule part always sweeps the whole space.
    (0.17's answers: tests/test_coverage.py.)"""
    with pytest.raises(ConfigError) as err:
        coverage_report(Config(vllm="0.33", gpu="H100", dtype=ANY, head_size=ANY), role="decode")
    assert err.value.field == "vllm"
