"""Shared test set-up: hypothesis profiles (ci / dev / nightly) and the gpu / slow markers.

Select a profile with HYPOTHESIS_PROFILE=ci|dev|nightly (default dev); `.ci/run` uses ci.
The ci profile is derandomised so a failure reproduces exactly; --runslow enables slow tests.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("nightly", max_examples=3000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The release the suite's facts are written for when a test does not pass vllm=... itself.
# `ATTNSOLVE_VLLM=0.33 pytest` runs the rules-driven (property, structure, fuzz) tests against another
# release; fact tests that name a release pass it explicitly (tests/test_rules_v033.py, test_fidelity_v017.py).
os.environ.setdefault("ATTNSOLVE_VLLM", "0.17")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    # --runslow also runs the full grids and interpreter budgets (tests/sizes.py reads this at import)
    if config.getoption("--runslow"):
        os.environ["ATTNSOLVE_FULL_SIZES"] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--runslow") and os.environ.get("HYPOTHESIS_PROFILE") != "nightly":
        skip_slow = pytest.mark.skip(reason="slow: run with --runslow or HYPOTHESIS_PROFILE=nightly")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip_slow)
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if not has_cuda:
        skip_gpu = pytest.mark.skip(reason="no CUDA device on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture
def no_vllm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads vLLM's environment switches by default (as vLLM does): a test that must not
    see the shell's VLLM_* variables asks for this fixture (`pytestmark = usefixtures(...)`)."""
    for var in list(os.environ):
        if var.startswith("VLLM_"):
            monkeypatch.delenv(var)
