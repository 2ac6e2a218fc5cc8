"""The compiled rules: complete and immutable after construction, and their value-class memo exact.

- nothing can be set on a CompiledRules once built, and its clause layout does not move while solve(),
  explain() and sweep() run over both packaged releases side by side;
- no module but solver/compiled.py reads a CompiledRules' private fields;
- two values a field's classifier puts in one class answer every predicate the rules apply to it alike;
- the generated memo key equals the field-by-field key, and what validating a plan's other candidates
  evaluates (one union built at compile time) equals the walk over them;
- `complete()` (memoised on value classes) gives the facts, clause bits, condition truth, list and derived
  log lines of the case-by-case reference evaluation, for values drawn fresh (memo misses) and repeated
  within a class (memo hits).
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnsolve import ANY, Config, ConfigError, solve, sweep
from attnsolve.engine import engine_for
from attnsolve.errors import SelectionError
from attnsolve.rules import versions
from attnsolve.selection import solve_uncached
from attnsolve.solver.compiled import CompiledRules, classifier
from attnsolve.solver.domains import field_preds, representatives
from attnsolve.solver.facts import base_facts
from attnsolve.solver.reach import goal_reachable, reach_for
from attnsolve.solver.semantics import select_list
from strategies import config_kwargs, roles_for

RELEASES = tuple(versions())
ROOT = Path(__file__).resolve().parents[1] / "attnsolve"


def _comp(version: str) -> CompiledRules:
    return engine_for(version).compiled


@pytest.mark.parametrize("version", RELEASES)
def test_compiled_rules_refuse_any_attribute_write(version: str) -> None:
    comp = _comp(version)
    for name in ("rules", "fields", "_field_lits", "_plans", "anything_new"):
        with pytest.raises(AttributeError):
            setattr(comp, name, None)
    assert not hasattr(comp, "_clause")  # no way to add a clause after construction


def test_clause_layout_is_fixed_while_both_releases_answer() -> None:
    comps = {v: _comp(v) for v in RELEASES}
    layout = {v: (c.clause_count, tuple((f, c.field_literals(f)) for f in c.fields)) for v, c in comps.items()}
    for v in RELEASES:
        for head, cc, backend in ((80, "8.0", None), (1001, "9.0", "FLASH_ATTN"), (128, "10.0", "FLASHINFER"),
                                  (64, "9.0", "TRITON_ATTN"), (256, "8.0", "FLASH_ATTN")):
            config = Config(platform="cuda", compute_capability=cc, dtype="bfloat16", head_size=head,
                            backend=backend, vllm=v)
            try:
                solve(config)
            except SelectionError:
                pass
            facts = dict(base_facts(config, "decode"), head_size=ANY)  # the explanation's reachability question
            goal_reachable(reach_for(comps[v]), facts, backend)
        list(sweep(Config(platform="cuda", compute_capability="9.0", dtype=ANY, head_size=128, vllm=v)))
    assert {v: (c.clause_count, tuple((f, c.field_literals(f)) for f in c.fields))
            for v, c in comps.items()} == layout


def _private_names() -> set[str]:
    return {n for n in CompiledRules.__slots__ if n.startswith("_") and not n.startswith("__")}


def test_no_module_reads_compiled_rules_private_fields() -> None:
    """Only solver/compiled.py may touch a CompiledRules' private state (its public accessors are the API)."""
    private = _private_names()
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.name == "compiled.py" and path.parent.name == "solver":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in private
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: .{node.attr}")
    assert not offenders, offenders


def _classified(version: str) -> list[str]:
    rules = engine_for(version).rules
    return [f for f in sorted({f for f in _comp(version).fields} | set(rules.derived))
            if classifier(field_preds(rules, f)) is not None]


@pytest.mark.parametrize("version", RELEASES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_value_class_answers_every_predicate_alike(version: str, data: st.DataObject) -> None:
    rules = engine_for(version).rules
    fields = _classified(version)
    field = data.draw(st.sampled_from(fields))
    preds = field_preds(rules, field)
    key = classifier(preds)
    assert key is not None
    mentioned = sorted({n for p in preds for n in p.mentioned_numbers()})
    near = st.sampled_from([m + d for m in mentioned for d in (-1, 0, 1)]) if mentioned else st.nothing()
    ints = st.one_of(st.integers(-3, 5000), near, st.integers(0, 1 << 40))
    a, b = data.draw(ints), data.draw(ints)
    if key(a) == key(b):
        assert [p(a) for p in preds] == [p(b) for p in preds], (field, a, b)


def _facts(version: str) -> st.SearchStrategy[dict[str, Any]]:
    comp = _comp(version)
    rules = comp.rules
    numeric = set(_classified(version))
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for f in comp.key_fields:
        if f in numeric:
            mentioned = sorted({n for p in field_preds(rules, f) for n in p.mentioned_numbers()})
            parts[f] = st.one_of(st.none(), st.integers(1, 4096),
                                 st.sampled_from(mentioned) if mentioned else st.none())
        else:
            values = [v for v in representatives(rules, f) if v is not ANY] or [None]
            if f in rules.domains:
                values += list(rules.domains[f])
            if f == "backend":
                values += [None, *rules.backends]
            parts[f] = st.sampled_from(list(dict.fromkeys([None, *values])))
    return st.fixed_dictionaries(parts)


def _reference(comp: CompiledRules, facts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """The derived facts case by case (Derived.evaluate), in dependency order, locals published."""
    ref = dict(facts)
    logs: dict[str, tuple[str, ...]] = {}
    for d in comp.rules.derived.values():
        value, w = d.evaluate(ref)
        ref[d.name] = value
        if w:
            logs[d.name] = (w,) if isinstance(w, str) else tuple(w)
        for name, v in d.local_values(ref).items():
            ref.setdefault(name, v)
    return ref, logs


@pytest.mark.parametrize("version", RELEASES)
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_generated_memo_key_equals_the_field_by_field_key(version: str, data: st.DataObject) -> None:
    comp = _comp(version)
    facts = data.draw(_facts(version))
    drop = data.draw(st.sets(st.sampled_from(comp.key_fields), max_size=3))  # missing fields read as None
    facts = {k: v for k, v in facts.items() if k not in drop}
    ref = comp.reference_key(facts)
    assert comp.keyed(facts) == ref
    assert comp.keyed(MappingProxyType(facts)) == ref  # a mapping that is not a dict: read with get()
    assert comp.class_key(facts) == ref[0]
    assert comp.keyed(dict(facts, not_a_key_field=1)) is None  # a fact the key does not cover: no key
    if drop:  # a missing key field and an extra fact: as many facts as the given fields, still no key
        assert comp.keyed(dict(facts, **{f"extra{i}": 1 for i in range(len(drop))})) is None


@pytest.mark.parametrize("version", RELEASES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_evaluated_by_others_is_the_union_over_the_other_candidates(version: str, data: st.DataObject) -> None:
    comp = _comp(version)
    facts = data.draw(_facts(version))
    done = comp.complete(facts)
    for pl in comp.rules.lists:
        p, _ = comp.plan(pl, None)
        for chosen in {c.backend for c in p.candidates}:
            union: set[str] = set()
            for c in p.candidates:
                if c.validated and c.backend != chosen:
                    union |= comp.evaluated_derived(c, facts, done.t)
            assert comp.evaluated_by_others(p, chosen, facts, done.t) == union, (pl.name, chosen)



@pytest.mark.parametrize("version", RELEASES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_evaluated_reads_from_the_clause_bitset_agree_with_evaluating_the_checks(version: str,
                                                                                 data: st.DataObject) -> None:
    """solve() decides which `first` checks stop a read from the satisfied-clause bitset and asks only about the
    facts with log lines; that must be what evaluating every blocking check on the facts answers."""
    comp = _comp(version)
    facts = data.draw(_facts(version))
    done = comp.complete(facts)
    names = sorted(comp.rules.derived)
    wanted = frozenset(data.draw(st.sets(st.sampled_from(names), max_size=4))) if names else frozenset()
    for pl in comp.rules.lists:
        p, _ = comp.plan(pl, None)
        for chosen in {c.backend for c in p.candidates}:
            full = comp.evaluated_by_others(p, chosen, facts, done.t)
            assert comp.evaluated_by_others(p, chosen, facts, done.t, done.sat) == full, (pl.name, chosen)
            asked = comp.evaluated_by_others(p, chosen, facts, done.t, done.sat, wanted)
            assert asked is not None and asked & wanted == full & wanted, (pl.name, chosen, wanted)
            for c in p.candidates:
                got = comp.evaluated_derived(c, facts, done.t, done.sat, wanted)
                assert got & wanted == comp.evaluated_derived(c, facts, done.t) & wanted, (pl.name, c.backend)

@pytest.mark.parametrize("version", RELEASES)
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_complete_equals_the_case_by_case_evaluation(version: str, data: st.DataObject) -> None:
    comp = _comp(version)
    facts = data.draw(_facts(version))
    for attempt in range(2):  # the second call hits the memo the first one filled
        fast = dict(facts)
        done = comp.complete(fast)
        ref, logs = _reference(comp, facts)
        assert fast == ref
        assert done.sat == comp.satisfied(ref)
        assert done.t == comp.truth(ref)
        assert done.plist is select_list(comp.rules, ref)
        assert done.logs(fast) == logs


def _answer(fn: Any) -> Any:
    try:
        return fn()
    except (SelectionError, ConfigError) as err:
        return type(err).__name__, str(err.args[0]) if err.args else None


def _same_class_value(comp: CompiledRules, field: str, value: int) -> int | None:
    """Another value `field`'s classifier puts in `value`'s class, if a small search finds one."""
    key = classifier(field_preds(comp.rules, field))
    if key is None:
        return None
    for other in (value + 1, value + 2, value + 3, value + 7, value + 64, value + 1000, value * 3, value + 4096):
        if other != value and key(other) == key(value):
            return other
    return None


@pytest.mark.parametrize("version", RELEASES)
def test_an_answer_reused_for_a_value_class_is_the_answer_solved_afresh(version: str) -> None:
    """solve() answers a never-seen value from another value of its class only when that answer names no fact."""
    for cc in ("8.0", "9.0", "10.0"):
        for head in (72, 200, 300, 1001, 4100):
            for extra in ({}, {"block_size": 48}, {"has_sink": True}, {"backend": "FLASH_ATTN"}):
                try:
                    a = Config(platform="cuda", compute_capability=cc, dtype="bfloat16", head_size=head,
                               vllm=version, **extra)
                    b = a.replace(head_size=head + 1)
                except Exception:  # noqa: BLE001 - a field this release does not take
                    continue
                _answer(lambda: solve(a))
                assert _answer(lambda: solve(b)) == _answer(lambda: solve_uncached(b)), (a, b)
    assert engine_for(version).by_class  # some answers were kept for their value classes


@pytest.mark.parametrize("version", RELEASES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_class_reuse_agrees_with_solving_afresh(version: str, data: st.DataObject) -> None:
    comp = _comp(version)
    kw = data.draw(config_kwargs(comp.rules))
    try:
        a = Config(**kw, vllm=version)
    except ConfigError:
        return
    role = data.draw(st.sampled_from(roles_for(a)))
    numeric = [f for f in a.field_names if isinstance(getattr(a, f), int) and not isinstance(getattr(a, f), bool)
               and f in comp.key_fields]
    if not numeric:
        return
    f = data.draw(st.sampled_from(numeric))
    other = _same_class_value(comp, f, getattr(a, f))
    if other is None:
        return
    try:
        b = a.replace(**{f: other})
    except ConfigError:
        return
    _answer(lambda: solve(a, role=role))
    assert _answer(lambda: solve(b, role=role)) == _answer(lambda: solve_uncached(b, role)), (a, b, role)
