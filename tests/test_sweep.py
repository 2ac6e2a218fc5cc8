"""sweep(config) agrees with solve() on every configuration it covers, counts what it iterates, and
leaves out exactly the combinations that are not configurations."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from attnsolve import ANY, Config, ConfigError, InvalidBackendError, NoValidBackendError, solve
from attnsolve.config import FIELD_NAMES
from attnsolve.rules import default_rules
from attnsolve.selection import solve_uncached
from attnsolve.sweep import EXCLUSIONS, Sweep, sweep

from strategies import budget, config_kwargs, is_edit_folder

# The laws hold for every release: the rows of a drawn partial config are what solve() selects (the 0.33
# steps around the lists included: model routes, rewrites, refused requests, the MLA prefill layer). Tests
# with one release's numbers say which.
pytestmark = pytest.mark.every_release

MAX_ROWS = 1500  # raw product size of a drawn sweep: every row is checked against solve


def selected(config: Config, role: Any, available: frozenset[str] | None) -> str | None:
    """solve()'s answer without the explanation attached to failures (same selection path)."""
    try:
        return solve_uncached(config, role or "decode", available).backend
    except (NoValidBackendError, InvalidBackendError):
        return None


@st.composite
def sweeps(draw: Any) -> tuple[Config, Any, frozenset[str] | None]:
    """A valid config with 1-4 fields (any of them) set free, a role (maybe free) and maybe `available`."""
    kw = draw(config_kwargs())
    free = draw(st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=4, unique=True))
    for f in free:
        kw[f] = ANY
    role = draw(st.sampled_from([None, "decode", ANY, ANY, "mla_prefill"]))
    if role == "mla_prefill" and kw.get("use_mla") is False:
        role = ANY
    available = None
    if draw(st.integers(0, 3)) == 0:
        available = frozenset(draw(st.lists(st.sampled_from(sorted(default_rules().backends)), max_size=8)))
    try:
        config = Config(**kw)
    except ConfigError:
        assume(False)
    return config, role, available


def _sweep(config: Config, role: Any, available: frozenset[str] | None) -> Sweep:
    s = sweep(config, role=role, available=available)
    assume(s.raw_size <= MAX_ROWS)
    return s


@given(sweeps())
def test_every_row_is_what_solve_selects(case: tuple[Config, Any, frozenset[str] | None]) -> None:
    config, role, available = case
    s = _sweep(config, role, available)
    for assignment, backend in s:
        assert set(assignment) <= {*config.free_fields, "role"}
        full = s.completion(assignment)  # Config accepts every assignment as given
        assert not full.is_partial
        r = assignment.get("role", role)
        assert backend == selected(full, r, available), (assignment, backend)


@given(sweeps())
@settings(max_examples=20)
def test_rows_agree_with_solve_itself(case: tuple[Config, Any, frozenset[str] | None]) -> None:
    config, role, available = case
    s = _sweep(config, role, available)
    for assignment, backend in itertools.islice(s, 3):
        r = assignment.get("role", role)
        try:
            got = solve(s.completion(assignment), role=r, available=available).backend
        except (NoValidBackendError, InvalidBackendError):
            got = None
        assert backend == got


@given(sweeps())
@settings(max_examples=budget(60))  # bookkeeping, not the selection law: fewer examples
def test_len_counts_and_codes_match_iteration(case: tuple[Config, Any, frozenset[str] | None]) -> None:
    config, role, available = case
    s = _sweep(config, role, available)
    rows = list(s)
    assert len(rows) == len(s)
    assert len(s) + s.excluded == s.raw_size
    counts: dict[str | None, int] = {}
    for _, b in rows:
        counts[b] = counts.get(b, 0) + 1
    assert counts == s.by_backend()
    per_list: dict[str | None, int] = {}
    for (_, b), n in s.by_list().items():
        per_list[b] = per_list.get(b, 0) + n
    assert per_list == counts
    codes = [int(c) for c in s.codes().ravel() if c != -2]
    assert [s.backends[c] if c >= 0 else None for c in codes] == [b for _, b in rows]


def _duplicate(combo: dict[str, Any], config: Config) -> bool:
    """rocm_arch=None on rocm with the arch free: Config reads it as gfx942, already in the sweep; a declared field
    None where its defaults fill it (0.21's mla_prefill_backend under a deprecated switch): the filled row."""
    plat = combo.get("platform", config.platform)
    if "rocm_arch" in combo and combo["rocm_arch"] is None and plat == "rocm":
        return True
    from attnsolve.config import FIELD_NAMES
    from attnsolve.rules import rules_for
    for name, decl in rules_for(config.vllm).fields.items():
        if name in combo and combo[name] is None and decl.defaults and name not in FIELD_NAMES:
            if decl.unset_value({**{f: getattr(config, f) for f in decl.default_reads}, **combo}) is not None:
                return True
    return False


@given(sweeps())
def test_exactly_the_non_configurations_are_excluded(case: tuple[Config, Any, frozenset[str] | None]) -> None:
    config, role, available = case
    s = _sweep(config, role, available)
    fields = list(s.values)
    keys = {tuple(sorted(a.items(), key=lambda kv: kv[0])) for a, _ in s}
    excluded = 0
    for combo in itertools.product(*(s.values[f] for f in fields)):
        a = dict(zip(fields, combo))
        key = tuple(sorted(((k, v) for k, v in a.items()), key=lambda kv: kv[0]))
        if key in keys:
            continue
        excluded += 1
        if _duplicate(a, config):
            continue
        with pytest.raises(ConfigError):  # Config or solve rejects it (solve() validates before selecting)
            solve(s.completion(a), role=a.get("role", role) or "decode", available=available)
    assert excluded == s.excluded


@pytest.mark.vllm("0.17")
def test_example_and_no_free_field() -> None:
    s = sweep(Config(platform="cuda", compute_capability="9.0", dtype=ANY, head_size=128))
    assert len(s) == 3 and s.by_backend() == {"FLASH_ATTN": 2, "TRITON_ATTN": 1}
    assert [a for a, _ in s] == [{"dtype": "float16"}, {"dtype": "bfloat16"}, {"dtype": "float32"}]
    one = sweep(Config(platform="cuda", gpu="H100", dtype="bf16"))
    assert len(one) == 1 and list(one) == [({}, "FLASH_ATTN")]
    assert sweep(Config(platform="cpu", dtype="bf16", use_mla=True), role="mla_prefill").by_backend() == {}


def test_assignments_use_config_values() -> None:
    s = sweep(Config(platform=ANY, compute_capability=ANY, rocm_arch=ANY, dtype="bf16"))
    plats = {(a["platform"], a["compute_capability"], a["rocm_arch"]) for a, _ in s}
    assert all(isinstance(cc, str) for p, cc, _ in plats if p == "cuda")
    assert ("cpu", None, None) in plats and ("cuda", "9.0", None) in plats
    assert all(arch is not None for p, _, arch in plats if p == "rocm")


def test_whole_space_counts(vllm_version: str) -> None:
    """Every field free, the request too: counted, never enumerated (0.17's decode role: seconds). From 0.18 on (the
    0.33 and 0.34 sets) the steps before the lists read most fields together (~5e14 combinations), and since session
    41 every release's MLA prefill rows read their decode twin (the layer step), which the fold lays out row by row:
    with the role free too, refused at once with a ConfigError, no hang."""
    everything = Config(**{f: ANY for f in FIELD_NAMES})
    with pytest.raises(ConfigError, match="sweep too large"):
        sweep(everything, role=ANY)
    if tuple(map(int, vllm_version.split("."))) >= (0, 18):
        return
    s = sweep(everything, role="decode")
    assert len(s) + s.excluded == s.raw_size
    assert sum(s.by_backend().values()) == len(s)
    assert len(s) > 10 ** 11  # counted, never enumerated
    assert len(EXCLUSIONS) == 6
    requested = sweep(Config(**{f: ANY for f in FIELD_NAMES if f != "backend"}, backend="TORCH_SDPA"), role="decode")
    # refused by name before any list on CUDA (0.17's request_errors), ignored on CPU
    assert requested.by_backend().get(None, 0) > 0 and "CPU_ATTN" in requested.by_backend()


def test_free_role_needs_no_mla_prefill_on_a_non_mla_model() -> None:
    s = sweep(Config(platform="cuda", gpu="H100", dtype="bf16", use_mla=False), role=ANY)
    assert [a for a, _ in s] == [{"role": "decode"}]
    with pytest.raises(ConfigError):
        sweep(Config(platform="cuda", gpu="H100", dtype="bf16", use_mla=False), role="mla_prefill")


_CLASSED = tuple(f for f in FIELD_NAMES if f not in ("platform", "backend"))  # see test_prop_explain's known bug


@given(config_kwargs(), st.lists(st.sampled_from(_CLASSED), min_size=1, max_size=3, unique=True),
       st.sampled_from(["decode", "mla_prefill"]))
def test_possible_backends_are_the_backends_some_row_selects(kw: dict[str, Any], free: list[str], role: str) -> None:
    possible_backends = pytest.importorskip("attnsolve.explain").possible_backends
    for f in free:
        kw[f] = ANY
    try:
        config = Config(**kw)
        s = sweep(config, role=role)
    except ConfigError:
        assume(False)
    assume(s.raw_size <= MAX_ROWS)
    assert set(possible_backends(config, role=role)) == set(s.by_backend()) - {None}


def test_module_doctest() -> None:
    import doctest

    import importlib
    mod = importlib.import_module("attnsolve.sweep")
    assert doctest.testmod(mod).failed == 0


@given(sweeps(), st.integers(0, 2))
@settings(max_examples=40)
def test_by_groups_partition_the_rows(case: tuple[Config, Any, frozenset[str] | None], k: int) -> None:
    config, role, available = case
    s = _sweep(config, role, available)
    fields = list(s.values)[:k]
    groups = s.by(*fields)
    want: dict[tuple[Any, ...], dict[str | None, int]] = {}
    for a, b in s:
        key = tuple(a[f] for f in fields)
        want.setdefault(key, {})
        want[key][b] = want[key].get(b, 0) + 1
    assert {key: dict(v) for key, v in groups.items()} == want


def test_performance_doc_examples() -> None:
    """The pycon blocks of docs/performance.md run as written."""
    import doctest
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "performance.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```pycon\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        test = doctest.DocTestParser().get_doctest(block, {}, "performance", "docs/performance.md", 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert runner.failures == 0


def test_every_platform_gpu_and_model_class_agrees_with_solve(vllm_version: str) -> None:
    """Exhaustive over the hardware classes and the main model facts (both roles): ~20k rows on 0.17, every one
    checked; ~92k on 0.33, a spread sample of 4,000 under ci/dev (1,500 on an edit folder; every row under the
    nightly profile)."""
    from hypothesis import settings as _settings
    cfg = Config(platform=ANY, compute_capability=ANY, rocm_arch=ANY, dtype=ANY, head_size=ANY, kv_cache_dtype=ANY,
                 use_mla=ANY, use_sparse=ANY)
    s = sweep(cfg, role=ANY)
    assert 5_000 < len(s) < 200_000
    rows = list(s)
    assert len(rows) == len(s) and sum(s.by_backend().values()) == len(s)
    every = vllm_version == "0.17" or _settings.default.max_examples >= 1000
    spread = 1500 if is_edit_folder(vllm_version) else 4000  # an edit folder: its base's constructs (strategies.py)
    for a, b in rows if every else rows[:: max(1, len(rows) // spread)]:
        assert b == selected(s.completion(a), a["role"], None), a


def test_a_request_no_list_accepts_sweeps_to_no_backend() -> None:
    """Regression (found running the sweep laws on the 0.33 set): an XPU MLA query that requests a
    CUDA-only backend has a plan with no candidate; the sweep raised numpy's 'argmax of an empty
    sequence' instead of answering 'no backend' for every row, as solve() does."""
    c = Config(vllm="0.33", platform="xpu", dtype="bfloat16", use_mla=True, head_size=ANY,
               backend="FLASH_ATTN_MLA_SPARSE")
    s = sweep(c)
    assert set(s.by_backend()) == {None} and len(s) > 0
    for assignment, backend in list(s)[:3]:
        assert backend is None
        with pytest.raises((NoValidBackendError, InvalidBackendError)):
            solve(c.replace(**assignment))


@pytest.mark.parametrize("free", [["platform"], ["platform", "dtype"], ["platform", "rocm_use_aiter_mla"]])
def test_regression_an_unset_rocm_arch_is_the_platform_rows_default(free: list[str]) -> None:
    """A free platform with rocm_arch unset: on the ROCm row Config makes it gfx942 (an MI300), so the AITER facts that
    read the arch must be evaluated per platform row.  The sweep evaluated them once, with no arch, and answered
    TRITON_MLA where solve() on the completed config answers ROCM_AITER_MLA (every release from 0.25; found by the
    every-row law with 0.25's whole example budget)."""
    kw: dict[str, Any] = dict(dtype="bfloat16", head_size=576, use_mla=True, rocm_use_aiter=True, rocm_use_aiter_mla=True)
    s = sweep(Config(**{**kw, **{f: ANY for f in free}}))
    rows = list(s)
    assert any(a.get("platform") == "rocm" for a, _ in rows)
    for assignment, backend in rows:
        assert backend == selected(s.completion(assignment), "decode", None), (assignment, backend)
