"""Laws of selection on the packaged rules, checked against the independent oracle (tests/oracle.py).

- soundness: the selected backend has no reason against it;
- optimality: every candidate before it in the applicable priority list has a reason against it;
- the evidence (rejected backends and their reasons, variant, preferred block size) is the oracle's;
- a manual request is honoured or refused, never silently replaced (except where the platform ignores requests);
- the compiled (bitset) path, the CSP path and the oracle pick the same backend;
- failures are the right exception, carrying every tried backend with its reasons.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import oracle
from attnsolve import Config, ConfigError, InvalidBackendError, NoValidBackendError, solve
from attnsolve.rules import default_rules
from attnsolve.selection import solve_csp
from strategies import budget, configs, queries, roles_for

pytestmark = pytest.mark.every_release


def _solve(config: Config, role: str, available=None):
    """solve() as (backend or None, Selection or exception)."""
    try:
        sel = solve(config, role=role, available=available)
    except (NoValidBackendError, InvalidBackendError) as e:
        return None, e
    except ConfigError as e:
        return "ConfigError", e
    return sel.backend, sel


def _expect(ans: oracle.Answer) -> str | None:
    return "ConfigError" if ans.error is not None else ans.backend


@oracle.ORACLE_RELEASES
@given(queries())
def test_solve_agrees_with_oracle(q):
    config, role = q
    rules = default_rules()
    ans = oracle.select(rules, config, role)
    got, out = _solve(config, role)
    assert got == _expect(ans), f"solve={got!r} oracle={_expect(ans)!r} tried={ans.tried}"
    if ans.error is not None:
        return
    if ans.backend is None:
        # A failure names every backend that was tried, each with at least one reason.
        assert set(out.reasons) == {b for b, _ in ans.tried}
        assert all(out.reasons[b] for b in out.reasons)
        if ans.mode == "manual":
            assert isinstance(out, InvalidBackendError) and out.backend == config.backend
        else:
            assert isinstance(out, NoValidBackendError)
            for b, reasons in ans.tried:
                assert tuple(out.reasons[b]) == reasons
        return
    assert out.variant == ans.variant
    assert out.manual == (ans.mode == "manual")
    assert out.priority_list == ans.list_name
    if ans.mode == "auto":
        assert [(r.backend, tuple(r.reasons)) for r in out.rejected] == ans.rejected
    assert out.preferred_block_size == oracle.preferred_block_size(rules, out.backend, config.block_size,
                                                                   ans.list_name, ans.facts)
    for w in oracle.derived_warnings(rules, ans.facts, rules.backends[out.backend]):
        assert w in out.warnings
    for message, when in getattr(rules.backends[out.backend], "warnings", ()):  # declared runtime pitfalls
        shown = f"{out.backend}: {message}" in out.warnings
        assert shown == oracle.all_hold(when, ans.facts), (message, out.warnings)
    if rules.lists_for(config.platform) and ans.mode == "auto":
        plist = next(pl for pl in rules.lists if pl.name == ans.list_name and pl.platform == config.platform)
        if plist.warn_unvalidated and not plist.validate:  # an unvalidated pick: its failing checks are warnings
            for r in oracle.own_reasons(rules.backends[out.backend], ans.facts):
                assert any(r in w for w in out.warnings), (r, out.warnings)


@oracle.ORACLE_RELEASES
@given(queries(manual=False))
def test_selection_is_sound_and_optimal(q):
    """Automatic selection: the pick passes all its checks, and every earlier candidate fails one."""
    config, role = q
    rules = default_rules()
    got, sel = _solve(config, role)
    if got is None or got == "ConfigError":
        return
    facts = oracle.facts_of(rules, config, role)
    plist = next(pl for pl in rules.lists if pl.platform == config.platform and oracle.all_hold(pl.when, facts))
    names = [e.backend for e in plist.entries if not rules.backends[e.backend].explicit_only]
    assert got in names
    entry = {e.backend: e for e in plist.entries}

    def reasons(name: str) -> tuple[str, ...]:
        own = oracle.own_reasons(rules.backends[name], facts) if plist.validate else ()
        return own + oracle.guard_reasons(entry[name].guards, facts)

    assert reasons(got) == ()  # sound
    for earlier in names[: names.index(got)]:  # optimal
        assert reasons(earlier), f"{earlier} is valid and precedes {got}"


@oracle.ORACLE_RELEASES
@given(queries(manual=True))
def test_manual_selection_never_falls_back(q):
    config, role = q
    rules = default_rules()
    ans = oracle.select(rules, config, role)
    got, out = _solve(config, role)
    if got == "ConfigError":
        assert ans.error is not None
        return
    facts = oracle.facts_of(rules, config, role)
    plist = next(pl for pl in rules.lists if pl.platform == config.platform and oracle.all_hold(pl.when, facts))
    if plist.manual == "ignore":
        return  # the platform ignores requests (CPU, ROCm sparse): automatic selection, with a warning
    if got is None:
        assert isinstance(out, InvalidBackendError)
        assert out.backend == config.backend
        assert "Selected backend" in str(out) or plist.manual == "table"
    else:
        assert got == config.backend
        assert out.manual


@oracle.ORACLE_RELEASES
@settings(max_examples=budget(60))
@given(queries())
def test_compiled_equals_csp_equals_oracle(q):
    config, role = q
    rules = default_rules()
    got, _ = _solve(config, role)
    want = _expect(oracle.select(rules, config, role))
    if want == "ConfigError":
        assert got == "ConfigError"
        return
    assert got == want
    assert solve_csp(config, role=role) == want


@oracle.ORACLE_RELEASES
@settings(max_examples=budget(60))
@given(queries(), st.data())
def test_available_subset_agrees(q, data):
    """Restricting the runnable backends: solve, the CSP and the oracle still agree."""
    config, role = q
    rules = default_rules()
    avail = frozenset(data.draw(st.lists(st.sampled_from(sorted(rules.backends)), unique=True), label="available"))
    got, _ = _solve(config, role, available=avail)
    want = _expect(oracle.select(rules, config, role, available=avail))
    assert got == want
    if want != "ConfigError":
        assert solve_csp(config, role=role, available=avail) == want


@settings(max_examples=budget(60))
@given(queries())
def test_compiled_equals_csp(q):
    """Every release: the bitset solver and the CSP pick the same backend (no oracle needed)."""
    config, role = q
    got, _ = _solve(config, role)
    if got == "ConfigError":
        return
    assert solve_csp(config, role=role) == got


@given(queries())
def test_selection_is_deterministic_and_json_ready(q):
    config, role = q
    got, out = _solve(config, role)
    got2, out2 = _solve(config, role)
    assert got == got2
    if got is not None and got != "ConfigError":
        d = out.to_dict()
        assert json.loads(json.dumps(d)) == d
        assert d["selected"] == got
        assert Config(**d["config"]) == config
