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
        # A failure names every backend that was tried (as vLLM prints it), each with at least one reason;
        # a failure before any validation (a request vLLM cannot load, a model's own refusal, a decision
        # tree that raises) is vLLM's whole text.
        assert set(out.reasons) == {ans.name(b) for b, _ in ans.tried}
        if ans.message is not None:
            assert out.args[0] == ans.message, (out.args[0], ans.message)
        else:
            assert all(out.reasons[b] for b in out.reasons)
        if ans.mode == "manual":
            assert isinstance(out, InvalidBackendError) and out.backend == ans.requested
        else:
            assert isinstance(out, NoValidBackendError)
            for b, reasons in ans.tried:
                assert tuple(out.reasons[ans.name(b)]) == reasons
        return
    assert out.variant == ans.variant
    assert out.manual == (ans.mode == "manual")
    assert out.priority_list == ans.list_name
    assert out.config_changes == tuple(ans.changes)
    if ans.mode == "auto":
        assert [(r.backend, tuple(r.reasons)) for r in out.rejected] == ans.rejected
    assert out.preferred_block_size == oracle.preferred_block_size(rules, out.backend, config.block_size,
                                                                   ans.list_name, ans.facts)
    backend = rules.backends.get(out.backend)
    if backend is None or ans.model_route is not None:
        return  # no backend (the MLA layer without a prefill backend), or the model's own pick: nothing validated
    for w in oracle.derived_warnings(rules, ans.facts, backend):
        assert w in out.warnings
    declared = getattr(backend, "warnings", ())  # declared runtime pitfalls (a condition may have alternatives)
    for message, _ in declared:
        shown = f"{out.backend}: {message}" in out.warnings
        assert shown == any(oracle.all_hold(when, ans.facts) for m, when in declared if m == message), (message, out.warnings)
    if rules.lists_for(config.platform) and ans.mode == "auto":
        plist = next(pl for pl in rules.lists if pl.name == ans.list_name and pl.platform == config.platform)
        if plist.warn_unvalidated and not plist.validate:  # an unvalidated pick: its failing checks are warnings
            for r in oracle.own_reasons(backend, ans.facts):
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
    ans = oracle.select(rules, config, role)  # the facts after the platform's steps, and the list they chose
    plist = next((pl for pl in rules.lists if pl.platform == config.platform and pl.name == sel.priority_list), None)
    if plist is None:
        assert ans.model_route is not None or got == oracle.NO_PREFILL, sel.priority_list
        return  # the model's own pick, or the MLA layer without a prefill backend: no list was walked
    if plist.no_prefill:  # a branch giving the layer no prefill backend (0.16/0.17's sparse MLA): nothing walked
        assert got == oracle.NO_PREFILL and ans.backend == oracle.NO_PREFILL and not plist.entries
        return
    facts = dict(ans.facts, **{f: None for f in plist.drops})
    entries = [e for e in plist.entries if not rules.backends[e.backend].explicit_only
               and (not e.when or any(oracle.all_hold(alt, facts) for alt in e.when))]
    names = [e.backend for e in entries]
    assert got in names
    entry = {e.backend: e for e in entries}

    def reasons(name: str) -> tuple[str, ...]:
        validate = plist.validate if entry[name].validate is None else entry[name].validate
        own = oracle.own_reasons(rules.backends[name], facts) if validate else ()
        return own + oracle.guard_reasons(entry[name].guards, facts)

    assert reasons(got) == ()  # sound
    for earlier in names[: names.index(got)]:  # optimal
        assert reasons(earlier), f"{earlier} is valid and precedes {got}"


@oracle.ORACLE_RELEASES
@given(queries(manual=True))
def test_manual_selection_never_falls_back(q):
    """A request is honoured or refused, never silently replaced; the rules declare where vLLM does
    otherwise (a platform that ignores requests or lets them pick the list, a request dropped or refused
    for exactly the reasons a fallback names, a model's own pick), and the oracle follows those."""
    config, role = q
    rules = default_rules()
    ans = oracle.select(rules, config, role)
    got, out = _solve(config, role)
    if got == "ConfigError":
        assert ans.error is not None
        return
    if ans.mode != "manual":
        return  # the request was ignored, steered the list, or was dropped (see the docstring)
    requested = ans.tried[0][0]  # an alias resolved, the prefill registry's name mapped
    if got is None:
        assert isinstance(out, InvalidBackendError)
        assert out.backend == ans.requested
        plist = next((pl for pl in rules.lists if pl.name == ans.list_name and pl.platform == config.platform), None)
        text = out.args[0]  # vLLM's text (str() would add the explanation, which takes long on some releases)
        assert "Selected" in text or ans.message is not None or plist.manual == "table"
    else:
        assert got == requested
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
