"""The reference path: selection as a constraint satisfaction problem (python-constraint2).

Variables are the fields the rules mention (finite domains of value classes for free fields, one
value for given ones) plus the derived facts; constraints are the checks. "Backend B is selected"
is: B's list applies and no earlier list does, B's checks hold, and every earlier candidate has a
check that fires. The same encoding answers full configs (it must agree with the bitsets),
partial configs (which backends some completion selects) and the explanation's consistency test.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from constraint import FunctionConstraint, Problem

from ..config import ANY
from ..rules.model import Check, Literal, PriorityList, RuleSet
from .domains import representatives
from .semantics import Plan, plan

Facts = Mapping[str, Any]


class CSP:
    """Builds and solves selection problems over one RuleSet."""

    def __init__(self, rules: RuleSet):
        self.rules = rules
        fields: dict[str, None] = {"platform": None, "role": None, "backend": None}
        for lit in _all_literals(rules):
            fields[lit.field] = None
        # a derived fact no rule tests (one that only names a variant) cannot change the selection;
        # the ones tested pull in their inputs, which may be derived facts again (closure)
        self.derived = {}
        todo = [n for n in fields if n in rules.derived]
        while todo:
            name = todo.pop()
            if name in self.derived:
                continue
            self.derived[name] = rules.derived[name]
            for f in self.derived[name].inputs:
                fields.setdefault(f, None)
                if f in rules.derived and f not in self.derived:
                    todo.append(f)
        self.derived = {n: d for n, d in rules.derived.items() if n in self.derived}  # rules' order
        self.fields = tuple(f for f in fields if f not in self.derived)
        self.invariants = _invariant_constraints(rules, {*self.fields, *self.derived})

    # -- building blocks -------------------------------------------------------------------------
    def _problem(self, facts: Facts, domains: Mapping[str, Sequence[Any]] | None = None) -> Problem:
        p = Problem()
        for f in self.fields:
            v = facts.get(f, ANY)
            if domains and f in domains:
                dom = list(domains[f])
            elif v is ANY:
                dom = list(representatives(self.rules, f))
            else:
                dom = [v]
            p.addVariable(f, dom)
        for d in self.derived.values():
            p.addVariable(d.name, list(d.values))
            names = [*d.inputs, d.name]
            p.addConstraint(FunctionConstraint(_derived_fn(d, names)), names)
        # The platform invariants (rules data: [[invariants]]).
        for fn, names in self.invariants:
            p.addConstraint(FunctionConstraint(fn), names)
        return p

    def _require_checks(self, p: Problem, checks: Iterable[Check]) -> None:
        for c in checks:
            names = list(c.fields)
            p.addConstraint(FunctionConstraint(_holds_fn(c, names)), names)

    def _require_some_fires(self, p: Problem, checks: Sequence[Check]) -> None:
        names = list(dict.fromkeys(f for c in checks for f in c.fields))
        if not names:  # no checks: can never fail
            p.addConstraint(FunctionConstraint(lambda *a: False), ["platform"])
            return
        p.addConstraint(FunctionConstraint(_fires_fn(checks, names)), names)

    def _require_list(self, p: Problem, pl: PriorityList) -> None:
        earlier = [q for q in self.rules.lists if q.platform == pl.platform]
        earlier = earlier[: earlier.index(pl)]
        p.addConstraint(FunctionConstraint(lambda plat, _n=pl.platform: plat == _n), ["platform"])
        lits = list(pl.when)
        if lits:
            names = list(dict.fromkeys(l.field for l in lits))
            p.addConstraint(FunctionConstraint(_all_fn(lits, names)), names)
        for q in earlier:
            qlits = list(q.when)
            if not qlits:
                p.addConstraint(FunctionConstraint(lambda *a: False), ["platform"])
                continue
            names = list(dict.fromkeys(l.field for l in qlits))
            p.addConstraint(FunctionConstraint(_not_all_fn(qlits, names)), names)

    # -- questions -------------------------------------------------------------------------------
    def plans(self, facts: Facts) -> list[tuple[PriorityList, Plan, Any]]:
        """Every (list, plan, requested) the facts could lead to (one per requested value if backend is free)."""
        free_backend = facts.get("backend", None) is ANY
        requested = list(representatives(self.rules, "backend")) if free_backend else [facts.get("backend")]
        plat = facts.get("platform", ANY)
        out = []
        for pl in self.rules.lists:
            if plat is not ANY and pl.platform != plat:
                continue
            for req in requested:
                out.append((pl, plan(self.rules, pl, req), req))
        return out

    def selected_problem(self, facts: Facts, pl: PriorityList, pn: Plan, index: int, requested: Any = None,
                         available: frozenset[str] | None = None,
                         domains: Mapping[str, Sequence[Any]] | None = None) -> Problem | None:
        """The problem whose solutions are the completions that select candidate `index` of `pn`."""
        cand = pn.candidates[index]
        if available is not None and cand.backend not in available:
            return None
        p = self._problem(facts, domains)
        if facts.get("backend", None) is ANY:
            p.addConstraint(FunctionConstraint(lambda b, _r=requested: b == _r), ["backend"])
        self._require_list(p, pl)
        self._require_checks(p, cand.checks)
        for prev in pn.candidates[:index]:
            if available is not None and prev.backend not in available:
                continue
            self._require_some_fires(p, prev.checks)
        return p

    def find(self, facts: Facts, backend: str | None = None, available: frozenset[str] | None = None,
             domains: Mapping[str, Sequence[Any]] | None = None) -> dict[str, Any] | None:
        """A completion of `facts` that selects `backend` (any backend if None), or None."""
        for pl, pn, req in self.plans(facts):
            for i, cand in enumerate(pn.candidates):
                if backend is not None and cand.backend != backend:
                    continue
                prob = self.selected_problem(facts, pl, pn, i, req, available, domains)
                if prob is None:
                    continue
                sol = prob.getSolution()
                if sol:
                    return sol
        return None

    def complete(self, facts: Facts) -> dict[str, Any] | None:
        """A completion of `facts` the rule set's invariants allow (no selection asked), or None."""
        sol = self._problem(facts).getSolution()
        return sol or None

    def possible(self, facts: Facts, available: frozenset[str] | None = None) -> dict[str, dict[str, Any]]:
        """backend -> one completion selecting it, for every backend some completion selects."""
        out: dict[str, dict[str, Any]] = {}
        for pl, pn, req in self.plans(facts):
            for i, cand in enumerate(pn.candidates):
                if cand.backend in out:
                    continue
                prob = self.selected_problem(facts, pl, pn, i, req, available)
                if prob is None:
                    continue
                sol = prob.getSolution()
                if sol:
                    out[cand.backend] = sol
        return out

    def select(self, facts: Facts, available: frozenset[str] | None = None) -> tuple[str | None, Plan | None]:
        """Full facts -> the selected backend (or None) by the CSP alone."""
        for pl, pn, req in self.plans(facts):
            applies = self._problem(facts)
            self._require_list(applies, pl)
            if not applies.getSolution():
                continue
            for i in range(len(pn.candidates)):
                prob = self.selected_problem(facts, pl, pn, i, req, available)
                if prob is not None and prob.getSolution():
                    return pn.candidates[i].backend, pn
            return None, pn
        return None, None


def _invariant_constraints(rules: RuleSet, variables: set[str]) -> tuple[tuple[Any, list[str]], ...]:
    """The rule set's invariants as constraints over the variables this CSP has (an invariant over a field no
    rule reads cannot change a selection). A platform field has a value exactly on its platforms when it is
    required or defaulted there, else at most there; a platform whose lists derive the compute capability
    (ROCm's from its gfx arch) has one too."""
    out: list[tuple[Any, list[str]]] = []
    for inv in rules.invariants:
        if inv.kind == "definition":
            if all(f in variables for f in inv.fields):  # unknown (None) on the defining side: either
                out.append((lambda b, v, _lit=inv.equals: v is None or b == _lit.pred(v), list(inv.fields)))
            continue
        if inv.field:
            if inv.field not in variables:
                continue
            on = frozenset(inv.platforms)
            if inv.field == "compute_capability":
                on |= {pl.platform for pl in rules.lists if pl.compute_capability_from}
                exempt = on - frozenset(inv.platforms)
            else:
                exempt = frozenset()
            if inv.required or inv.default is not None:
                fn = (lambda plat, v, _on=on, _ex=exempt: plat in _ex or (v is not None) == (plat in _on))
            else:
                fn = (lambda plat, v, _on=on: plat in _on or v is None)
            out.append((fn, ["platform", inv.field]))
            continue
        for c in inv.checks:
            if all(f in variables for f in c.fields):
                names = list(c.fields)
                out.append((_holds_fn(c, names), names))
    return tuple(out)


def _all_literals(rules: RuleSet) -> Iterable[Literal]:
    for b in rules.backends.values():
        for c in b.checks:
            yield from c.clause()
    for pl in rules.lists:
        yield from pl.when
        for e in (*pl.entries, *pl.manual_accept):
            for c in e.guards:
                yield from c.clause()
    for d in rules.derived.values():
        for case in d.cases:
            yield from (lit for lit in case.when if lit.field in rules.derived)


def _derived_fn(d: Any, names: list[str]):
    inputs = names[:-1]

    def fn(*vals: Any) -> bool:
        return d.evaluate(dict(zip(inputs, vals)))[0] == vals[-1]
    return fn


def _holds_fn(c: Check, names: list[str]):
    def fn(*vals: Any) -> bool:
        return not c.fires(dict(zip(names, vals)))
    return fn


def _fires_fn(checks: Sequence[Check], names: list[str]):
    def fn(*vals: Any) -> bool:
        facts = dict(zip(names, vals))
        return any(c.fires(facts) for c in checks)
    return fn


def _all_fn(lits: Sequence[Literal], names: list[str]):
    def fn(*vals: Any) -> bool:
        facts = dict(zip(names, vals))
        return all(l(facts) for l in lits)
    return fn


def _not_all_fn(lits: Sequence[Literal], names: list[str]):
    def fn(*vals: Any) -> bool:
        facts = dict(zip(names, vals))
        return not all(l(facts) for l in lits)
    return fn
