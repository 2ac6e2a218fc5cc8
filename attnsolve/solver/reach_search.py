"""Reachability's large parts: free fields whose value product is too large to enumerate, searched
exactly per question (see ``BigPart``). ``reach.Reach`` keeps the small parts, enumerated once, and
asks these only for the clauses the small parts leave open.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping

_MISSING = object()

def bigs_cover(bigs: list["BigPart"], rest: int) -> bool:
    """Whether the large parts together satisfy the clauses `rest`. Each part is asked for the clauses
    only it can satisfy; a clause two of them could satisfy is counted as satisfied (over-approximation,
    recorded on the parts: never under, so conflicts stay sound)."""
    if len(bigs) == 1:
        return bigs[0].covers(rest)
    shared = 0
    for a, b in itertools.combinations(bigs, 2):
        shared |= a.union & b.union
    if rest & shared:
        for b in bigs:
            b.inexact = True
    return all(b.covers(rest & b.union & ~shared) for b in bigs)


class BigPart:
    """One independent part of free fields whose value product is too large to enumerate: asked per
    question whether some legal combination of its values satisfies a set of clauses.

    Per question: a clause only one field (or derived fact) of the part can satisfy filters that one's
    values first; then a depth-first search over the fields (those most derived facts read first)
    evaluates each derived fact as soon as the assigned fields decide it (a first-match list is decided
    by a prefix of its cases), prunes where the clauses still possible cannot cover the question, and
    remembers failed states by what the rest of the search can still see (depth, clauses covered, the
    assigned values an undecided derived fact or invariant reads). Exact, like the enumeration it
    replaces for small parts; past its node budget it answers True and marks itself inexact
    (reachability may over-approximate, never under)."""

    _BUDGET = 20_000

    def __init__(self, reach: Any, fields: tuple[str, ...], derived: tuple[Any, ...], full: dict[str, Any],
                 invariants: tuple[Any, ...]):
        # what depends on the part's fields alone is built once per part shape and shared
        key = (fields, tuple(d.name for d in derived))
        shape = reach._shapes.get(key)
        if shape is None:
            sat = reach.comp.satisfied_partial
            weight = {f: sum(f in reach._base[d.name] for d in derived) for f in fields}
            order = tuple(sorted(fields, key=lambda f: (-weight[f], len(reach._reps[f]), f)))
            pools = [tuple((v, sat({f: v})) for v in reach._reps[f]) for f in order]
            dsat = [{v: sat({d.name: v}) for v in d.values} for d in derived]
            funion = [or_masks(m for _, m in pool) for pool in pools]
            dunion = [or_masks(ds.values()) for ds in dsat]
            pos = {f: k for k, f in enumerate(order)}
            # the assigned fields an invariant still waiting for another field reads
            ibase = [tuple(sorted(pos[f] for f in inv.fields if f in pos)) for inv in invariants]
            # a derived fact's possible values and state by its inputs' values (the same in every context)
            pmemo: dict[tuple[Any, ...], Any] = {}
            shape = reach._shapes[key] = (order, pools, dsat, funion, dunion, or_masks(funion) | or_masks(dunion), ibase, pmemo)
        self.order, self.pools, self.dsat, self.funion, self.dunion, self.union, self.ibase, self._pmemo = shape
        self.derived = derived
        self.full = full
        self.invariants = invariants
        self.reach = reach
        self.inexact = False
        self._memo: dict[int, bool] = {}
        self._nodes = 0

    def covers(self, need: int) -> bool:
        memo = self._memo
        got = memo.get(need)
        if got is None:
            # monotone in the question: a covered superset answers yes, an uncoverable subset answers no
            for n, ok in memo.items():
                if ok and need & n == need or not ok and n & need == n:
                    got = ok
                    break
            else:
                got = self._covers(need)
            memo[need] = got
        return got

    def _covers(self, need: int) -> bool:
        if self.union & need != need:
            return False
        owners = [*self.funion, *self.dunion]
        # clauses only one field / derived fact can satisfy: that one's values must
        solo = []
        for k, u in enumerate(owners):
            others = 0
            for k2, u2 in enumerate(owners):
                if k2 != k:
                    others |= u2
            solo.append(need & u & ~others)
        nf = len(self.order)
        pools = []
        for k, pool in enumerate(self.pools):
            must = solo[k]
            kept = tuple((v, m) for v, m in pool if m & must == must) if must else pool
            if not kept:
                return False
            pools.append(kept)
        allowed: list[frozenset[Any] | None] = []
        for k, ds in enumerate(self.dsat):
            must = solo[nf + k]
            if must:
                ok = frozenset(v for v, m in ds.items() if m & must == must)
                if not ok:
                    return False
                allowed.append(ok)
            else:
                allowed.append(None)
        rest = [0] * (nf + 1)
        for k in range(nf - 1, -1, -1):
            rest[k] = rest[k + 1] | or_masks(m for _, m in pools[k])
        self._nodes = 0
        try:
            return self._search(0, dict(self.full), 0, need, pools, allowed, rest, set())
        except _OverBudget:
            self.inexact = True
            return True

    def _search(self, i: int, env: dict[str, Any], acc: int, need: int, pools: list[Any],
                allowed: list[frozenset[Any] | None], rest: list[int], failed: set[Any]) -> bool:
        self._nodes += 1
        if self._nodes > self._BUDGET:
            raise _OverBudget
        if self.invariants and not self.reach._coupling_ok(env, self.invariants):
            return False
        bound = acc | rest[i]
        decided: list[str] = []
        states: list[tuple[int, Any]] = []  # the undecided derived facts' states
        try:
            pmemo = self._pmemo
            for k, (d, ds) in enumerate(zip(self.derived, self.dsat)):
                if d.name in env:  # decided above (counted in acc there)
                    continue
                pk = (k, *[env.get(f, _MISSING) for f in d.inputs])
                got = pmemo.get(pk)
                if got is None:
                    got = pmemo[pk] = _possible(d, env)
                vals, state = got
                ok = allowed[k]
                kept = vals if ok is None else tuple(v for v in vals if v in ok)
                if not kept:
                    return False
                if len(vals) == 1:  # decided by the assigned facts (a value the filter left alone is not:
                    (v,) = vals     # the cases still open may yet give another, which the filter then refuses)
                    env[d.name] = v
                    decided.append(d.name)
                    acc |= ds[v]
                    bound |= ds[v]
                else:
                    states.append((k, state))
                    for v in kept:
                        bound |= ds[v]
            if bound & need != need:
                return False
            if i == len(self.order):
                return acc & need == need
            # the state the rest of the search sees: a failure here fails every equal state
            # the state the rest of the search sees: the undecided derived facts' states, the assigned values
            # an invariant still waiting for another field reads, the decided derived values
            seen = set()
            for ib in self.ibase:
                if any(p >= i for p in ib):
                    seen.update(p for p in ib if p < i)
            key = (i, acc & need, tuple(states), tuple((p, env[self.order[p]]) for p in sorted(seen)),
                   tuple(env.get(d.name, _MISSING) for d in self.derived))
            if key in failed:
                return False
            f = self.order[i]
            missing = need & ~acc
            # values satisfying more of what is still missing first: a witness is found early
            for v, m in sorted(pools[i], key=lambda vm: -bin(vm[1] & missing).count("1")):
                env[f] = v
                if self._search(i + 1, env, acc | m, need, pools, allowed, rest, failed):
                    return True
            del env[f]
            failed.add(key)
            return False
        finally:
            for name in decided:
                del env[name]


class _OverBudget(Exception):
    pass


def _possible(d: Any, env: Mapping[str, Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The values first-match derived fact `d` can still take when only the facts in `env` are known, and
    its state: what its future depends on (the cases still possible, whose known literals all hold, and
    the known parts of a local sum not yet complete). Two assignments with equal states decide `d`
    alike for every completion: the search's failure memo keys on states, not on every value read."""
    if d.compute is not None:
        a, b = d.compute[1]
        if a in env and b in env:
            return (d.evaluate(env)[0],), ()
        return tuple(d.values), (env.get(a, _MISSING), env.get(b, _MISSING))
    local: dict[str, Any] = {}
    names: set[str] = set()
    partial: list[Any] = []
    if d.locals:
        values = d.local_values(env)
        for name, _, parts in d.locals:
            names.add(name)
            if all(p in env for p in parts):
                local[name] = values[name]
            else:
                partial.append(tuple(env.get(p, _MISSING) for p in parts))
    out: list[Any] = []
    cases: list[int] = []
    for ci, case in enumerate(d.cases):
        status: bool | None = True
        for lit in case.when:
            f = lit.field
            if f in local:
                v = local[f]
            elif f in env and f not in names:
                v = env[f]
            else:
                status = None
                continue
            if not lit.pred(v):
                status = False
                break
        if status is False:
            continue
        cases.append(ci)
        if case.value not in out:
            out.append(case.value)
        if status is True:
            break
    return tuple(out), (tuple(cases), *partial)



def or_masks(masks: Any) -> int:
    m = 0
    for x in masks:
        m |= x
    return m
