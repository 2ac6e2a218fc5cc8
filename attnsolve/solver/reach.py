"""Fast reachability over the compiled bitsets: can some completion of a partial config make a
candidate valid? The explanation asks this dozens of times per answer, so it must cost
microseconds, not a CSP build.

Each candidate's checks, its list's conditions and "no earlier list applies" become clause bits.
Free fields (and groups of fields tied together by derived facts or platform coupling) offer the
sets of clauses their values can satisfy; a depth-first search picks one option per free unit until
every needed clause is covered. Options dominated by another option are dropped first, so the
search stays tiny. The CSP remains the reference; tests check the two agree.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any, Mapping

from ..config import ANY
from ..rules.model import RuleSet
from .compiled import CompiledRules
from .domains import representatives

# Largest product of free values one unit enumerates exactly (see Reach._options).
_MAX_COMBOS = 1_024

# Fields always enumerated together: hardware facts are coupled to the platform, sparse to MLA,
# and the role to MLA.
_COUPLED = (("platform", "compute_capability", "rocm_arch"), ("use_mla", "use_sparse", "role"))


def _derived_in_cases(rules: RuleSet) -> set[str]:
    return {lit.field for d in rules.derived.values() for c in d.cases for lit in c.when if lit.field in rules.derived}


class Reach:
    def __init__(self, comp: CompiledRules):
        self.comp = comp
        rules = comp.rules
        self.rules = rules
        # only derived facts some clause tests couple fields (a derived fact that only names a variant,
        # e.g. the FA version a kernel runs with, cannot change validity)
        self._derived = {n: d for n, d in rules.derived.items() if n in comp.fields or n in _derived_in_cases(rules)}
        # derived facts may read derived facts: pull those in, and couple each one's base fields
        todo = list(self._derived)
        while todo:
            for f in rules.derived[todo.pop()].inputs:
                if f in rules.derived and f not in self._derived:
                    self._derived[f] = rules.derived[f]
                    todo.append(f)
        self._derived = {n: d for n, d in rules.derived.items() if n in self._derived}  # dependency order
        self._base: dict[str, frozenset[str]] = {}
        for n, d in self._derived.items():
            self._base[n] = frozenset(x for f in d.inputs for x in (self._base.get(f, ()) if f in rules.derived else (f,)))
        fields = set(comp.fields) | {"platform", "role", "use_mla", "use_sparse", "compute_capability", "rocm_arch"}
        for n in self._derived:
            fields |= self._base[n]
        fields -= set(self._derived)
        # groups: union-find over derived inputs and coupled fields
        parent = {f: f for f in fields}

        def find(x: str) -> str:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        def union(a: str, b: str) -> None:
            parent[find(a)] = find(b)

        for n in self._derived:
            ins = [f for f in sorted(self._base[n]) if f in parent]
            for a, b in zip(ins, ins[1:]):
                union(a, b)
        for grp in _COUPLED:
            ins = [f for f in grp if f in parent]
            for a, b in zip(ins, ins[1:]):
                union(a, b)
        groups: dict[str, list[str]] = {}
        for f in sorted(fields):
            groups.setdefault(find(f), []).append(f)
        self.groups = [tuple(g) for g in groups.values()]
        self._group_derived = {g: tuple(d for n, d in self._derived.items() if self._base[n] & set(g))
                               for g in self.groups}
        self._reps = {f: tuple(representatives(rules, f)) for f in fields}
        self._opt_cache: dict[Any, tuple[int, ...]] = {}
        self._dmemo: dict[tuple[Any, ...], tuple[Any]] = {}  # derived values by their inputs' values

    def _options(self, group: tuple[str, ...], facts: Mapping[str, Any]) -> tuple[int, ...]:
        key = (group, tuple(facts.get(f, ANY) for f in group))
        got = self._opt_cache.get(key)
        if got is not None:
            return got
        doms = [self._reps[f] if facts.get(f, ANY) is ANY else (facts[f],) for f in group]
        masks: set[int] = set()
        derived = self._group_derived[group]
        size = 1
        for d in doms:
            size *= len(d)
        if size > _MAX_COMBOS:
            # too many value combinations (vLLM >= 0.18's FA facts couple a dozen fields): answer with one
            # permissive option (every clause some value of the group could satisfy). It over-approximates
            # reachability, never under: explanations stay answerable; fixes are re-verified by solving.
            m = 0
            for f, dom in zip(group, doms):
                for v in dom:
                    m |= self.comp.satisfied_partial({f: v})
            for d in derived:
                for v in d.values:
                    m |= self.comp.satisfied_partial({d.name: v})
            self._opt_cache[key] = (m,)
            return (m,)
        for combo in itertools.product(*doms):
            vals = dict(zip(group, combo))
            if not _coupling_ok(vals):
                continue
            if derived:
                full = dict(vals)
                memo = self._dmemo
                for d in derived:  # dependency order: a derived fact after those it reads
                    if self._base[d.name] <= vals.keys():
                        k = (d.name, *(full.get(f) for f in d.inputs))
                        got = memo.get(k)
                        if got is None:
                            got = memo[k] = (d.evaluate(full)[0],)
                        full[d.name] = got[0]
                    else:
                        full[d.name] = None
                vals = full
            masks.add(self.comp.satisfied_partial(vals))
        opts = _maximal(masks)
        if len(self._opt_cache) > 4096:
            self._opt_cache.clear()
        self._opt_cache[key] = opts
        return opts

    def units(self, facts: Mapping[str, Any]) -> tuple[int, int, list[tuple[int, ...]]] | None:
        """(clauses fixed facts satisfy, clauses any completion could satisfy, free units' options);
        None when some unit has no legal value."""
        acc = 0
        union = 0
        free = []
        for g in self.groups:
            opts = self._options(g, facts)
            if not opts:
                return None
            if len(opts) == 1:
                acc |= opts[0]
            else:
                free.append(opts)
                for o in opts:
                    union |= o
        return acc, acc | union, free

    def reachable(self, facts: Mapping[str, Any], need: int,
                  units: tuple[int, int, list[tuple[int, ...]]] | None = None) -> bool:
        """Whether some completion of `facts` (ANY = free) satisfies every clause in `need`."""
        if need < 0:
            return False
        if units is None:
            units = self.units(facts)
            if units is None:
                return False
        acc, union, free_all = units
        if union & need != need:
            return False
        if acc & need == need:
            return True
        missing = need & ~acc
        free = []
        for opts in free_all:
            masked = {o & missing for o in opts}
            masked.discard(0)
            if masked:
                free.append(_maximal(masked) if len(masked) > 1 else tuple(masked))
        free.sort(key=len)
        reach_rest = [0] * (len(free) + 1)
        for i in range(len(free) - 1, -1, -1):
            u = 0
            for o in free[i]:
                u |= o
            reach_rest[i] = reach_rest[i + 1] | u
        return _dfs(free, 0, 0, missing, reach_rest)


def _dfs(free: list[tuple[int, ...]], i: int, acc: int, need: int, reach_rest: list[int]) -> bool:
    if acc & need == need:
        return True
    if i == len(free) or (acc | reach_rest[i]) & need != need:
        return False
    for o in free[i]:
        if _dfs(free, i + 1, acc | o, need, reach_rest):
            return True
    return False


def _maximal(masks: set[int]) -> tuple[int, ...]:
    ordered = sorted(masks, key=lambda m: -bin(m).count("1"))
    keep: list[int] = []
    for m in ordered:
        if not any(m | k == k for k in keep):
            keep.append(m)
    return tuple(keep)


def _coupling_ok(vals: Mapping[str, Any]) -> bool:
    plat = vals.get("platform", ANY)
    if plat is not ANY:
        if "compute_capability" in vals and (vals["compute_capability"] is not None) != (plat == "cuda"):
            return False
        if "rocm_arch" in vals and (vals["rocm_arch"] is not None) != (plat == "rocm"):
            return False
    if vals.get("use_sparse") is True and vals.get("use_mla") is False:
        return False
    if vals.get("role") == "mla_prefill" and vals.get("use_mla") is False:
        return False
    return True


_REACH: "weakref.WeakKeyDictionary[CompiledRules, Reach]" = weakref.WeakKeyDictionary()


def reach_for(comp: CompiledRules) -> Reach:
    """The reachability tables of one compiled rule set (built on first use, kept as long as it lives)."""
    got = _REACH.get(comp)
    if got is None:
        got = _REACH[comp] = Reach(comp)
    return got


def goal_reachable(reach: Reach, facts: Mapping[str, Any], requested: str | None = None,
                   available: frozenset[str] | None = None) -> bool | None:
    """Whether some completion of `facts` makes selection pick `requested` (any backend if None).

    The request in facts["backend"] is handled as vLLM does (validated, refused by a table, or
    ignored). None = this fast check cannot decide (an ignored request must win over earlier
    candidates, which needs "those are invalid"): ask the CSP.
    """
    rules: RuleSet = reach.rules
    comp = reach.comp
    plat = facts.get("platform", ANY)
    req = facts.get("backend")
    if req is ANY:
        return None
    units = reach.units(facts)
    if units is None:
        return False
    undecided = False
    for i, pl in enumerate(rules.lists):
        if plat is not ANY and pl.platform != plat:
            continue
        p, masks = comp.plan(pl, req)
        if requested is not None and p.mode == "auto" and any(c.backend == requested for c in p.candidates):
            undecided = True
            continue
        base = comp.list_need(i)
        for cand, m in zip(p.candidates, masks):
            if available is not None and cand.backend not in available:
                continue
            if requested is not None and cand.backend != requested:
                continue
            if reach.reachable(facts, base | m if base >= 0 else -1, units):
                return True
    return None if undecided else False
