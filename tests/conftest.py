"""Shared test set-up: hypothesis profiles (ci / dev / nightly), the gpu / slow markers, and the releases.

Select a profile with HYPOTHESIS_PROFILE=ci|dev|nightly (default dev); `.ci/run` uses ci.
The ci profile is derandomised so a failure reproduces exactly; --runslow enables slow tests.

Releases (one rule set per vLLM release, attnsolve.vllm_versions(), drafts included). Every test module
says which release its expectations are for:
- `pytestmark = pytest.mark.every_release`: the test's expectations come from the rules (properties,
  round trips, structure): it runs once per packaged release (ids `[vllm0.17]`, `[vllm0.33]`), with
  that release as the default one (`$ATTNSOLVE_VLLM`); a test may take the label as `vllm_version`.
  Under the dev and ci profiles a hypothesis test shares its example budget between the releases
  (each gets 1/n of it, at least 10, at least 5 for an edit folder); nightly runs the full budget for each release.
- `pytestmark = pytest.mark.vllm("0.17")`: facts of one release (a fact test names that release's
  source files); the test runs with that release as the default, whatever the environment says.
  On a single test inside an every_release module it pins that test alone.
- neither: the test runs once, with `$ATTNSOLVE_VLLM` as the default release (unset: the newest, as
  for a user).
`ATTNSOLVE_VLLM=0.33 pytest` is a per-release run: the every-release tests run for 0.33 only.
"""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import HealthCheck, Phase, settings

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
# ci-child: what a ci run's child pytest processes (the kernels rerun with a switch flipped, tests/kernels/
# test_cpu_paths_without_amx.py) use: ci's determinism with a third of its examples (the parent ran them all once).
settings.register_profile("ci-child", max_examples=50, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("nightly", max_examples=3000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
# triage: a quick look at which properties fail (few examples, no shrinking); never for CI.
settings.register_profile("triage", max_examples=8, deadline=None, derandomize=True,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate],
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The releases the every-release tests run against: all packaged sets, or only the one the caller named.
_ASKED = os.environ.get("ATTNSOLVE_VLLM")
# Tests that name no release are answered by the newest release unless the caller names one, as a user's
# query is; fact modules pin theirs with pytest.mark.vllm(...) instead of relying on this.


def _releases() -> tuple[str, ...]:
    """Every packaged release; under dev / ci without the patch-release sets (0.18.1: one default away from 0.18,
    pinned by tests/test_patch_releases.py and compared by the harness in CI), which nightly and
    ATTNSOLVE_PATCH_RELEASES=1 include."""
    from attnsolve import vllm_versions
    from attnsolve.rules import release_for
    packaged = vllm_versions()
    asked = release_for(_ASKED) if _ASKED else None
    if asked in packaged:
        return (asked,)
    if os.environ.get("HYPOTHESIS_PROFILE") == "nightly" or os.environ.get("ATTNSOLVE_PATCH_RELEASES"):
        return packaged
    return tuple(v for v in packaged if v.count(".") == 1)


RELEASES: tuple[str, ...] = _releases()
# Under dev / ci an every-release hypothesis test runs this share of its examples per release (never
# fewer than MIN_EXAMPLES); nightly runs the full count for each release.
MIN_EXAMPLES = 10
# An edit folder (a release written as edits on another, strategies.is_edit_folder) has its base's constructs, so it
# shares the same examples with a lower floor under dev / ci; the two full sets (0.17, 0.33) keep MIN_EXAMPLES.
MIN_EXAMPLES_EDIT = int(os.environ.get("ATTNSOLVE_MIN_EXAMPLES_EDIT", "5"))
_SPLIT = os.environ.get("HYPOTHESIS_PROFILE", "dev") != "nightly" and len(RELEASES) > 1


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """every_release tests: one instance per packaged release (`vllm_version` is its label)."""
    if metafunc.definition.get_closest_marker("every_release") is None:
        return
    if any(m.name == "vllm" for m in metafunc.definition.own_markers):
        return  # a test pinned to one release inside an every_release module
    if "vllm_version" not in metafunc.fixturenames:
        metafunc.fixturenames.append("vllm_version")
    metafunc.parametrize("vllm_version", RELEASES, ids=[f"vllm{v}" for v in RELEASES], scope="session")


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
def vllm_version() -> str:
    """The release a test that is not parametrised over releases is answered by."""
    from attnsolve.rules import default_version
    return default_version()


@pytest.fixture(autouse=True)
def _release(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the test's release (every_release parameter, or vllm(...) marker) the default release;
    share a hypothesis test's examples between the releases (see the module docstring)."""
    callspec = getattr(request.node, "callspec", None)
    label = callspec.params.get("vllm_version") if callspec is not None else None
    if label is None:
        marker = request.node.get_closest_marker("vllm")
        if marker is None:
            return
        label = marker.args[0]
    monkeypatch.setenv("ATTNSOLVE_VLLM", label)
    fn = getattr(request.node, "obj", None)
    own = getattr(fn, "_hypothesis_internal_use_settings", None)
    if callspec is None or own is None or not _SPLIT or "vllm_version" not in callspec.params:
        return
    from strategies import is_edit_folder
    floor = MIN_EXAMPLES_EDIT if is_edit_folder(label) else MIN_EXAMPLES
    share = max(floor, math.ceil(own.max_examples / len(RELEASES)))
    if share < own.max_examples:
        monkeypatch.setattr(fn, "_hypothesis_internal_use_settings", settings(own, max_examples=share))


@pytest.fixture
def no_vllm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads vLLM's environment switches by default (as vLLM does): a test that must not
    see the shell's VLLM_* variables asks for this fixture (`pytestmark = usefixtures(...)`)."""
    for var in list(os.environ):
        if var.startswith("VLLM_"):
            monkeypatch.delenv(var)
