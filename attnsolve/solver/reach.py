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
import operator
import weakref
from typing import Any, Mapping

from ..config import ANY
from ..rules.model import RuleSet
from ..rules.toml_values import cc_from_text
from .compiled import CompiledRules
from .domains import representatives
from .reach_search import BigPart, bigs_cover, or_masks

# Largest product of free values one unit enumerates exactly (see Reach._options).
_MAX_COMBOS = 1_024

# Fields always enumerated together come from the rule set's invariants (Invariant.fields: a platform
# field with the platform, a clause's fields): the coupling is the release's,
# so it never forbids a combination the release allows (0.33's XPU selects a sparse backend without MLA).
_ALWAYS = ("platform", "role", "use_mla", "use_sparse", "compute_capability", "rocm_arch")


_MISSING = object()
# A group's options in factored form: the clauses every completion satisfies, and the option tuples of its
# independent free parts (one option per part must be picked).
_Parts = tuple[int, tuple[tuple[int, ...], ...]]


def _derived_in_cases(rules: RuleSet) -> set[str]:
    return {lit.field for d in rules.derived.values() for c in d.cases for lit in c.when if lit.field in rules.derived}


def _root(parent: dict[str, str], x: str) -> str:
    """Union-find root of `x` (with path halving): the groups of fields that must be judged together."""
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


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
        fields = set(comp.fields) | set(_ALWAYS)
        for n in self._derived:
            fields |= self._base[n]
        fields -= set(self._derived)
        # the invariants tying a field the clauses read to others, judged together. Definitions (use_dcp =
        # dcp_size > 1) are left free: coupling them puts dcp_size into the largest group, whose size then
        # switches it to the permissive option (a worse over-approximation); free, they over-approximate only
        # the two sides' agreement (never under: conflicts stay sound)
        self._invariants = tuple(i for i in rules.invariants if set(i.fields) & fields and i.kind != "definition")
        for inv in self._invariants:
            fields |= set(inv.fields)
        # a platform whose device capability vLLM derives (ROCm: from the gfx arch): there the capability may be
        # that value (explain's search sets it, as vLLM's validation sees it), judged with the facts it comes from
        self._cc_from = {pl.platform: rules.derived[pl.compute_capability_from] for pl in rules.lists
                         if pl.compute_capability_from in rules.derived}
        cc_inputs: set[str] = set()
        for d in self._cc_from.values():
            cc_inputs |= {f for f in d.inputs if f not in rules.derived}
        self._coupled = tuple(inv.fields for inv in self._invariants)
        if self._cc_from and "compute_capability" in fields:
            self._coupled += (("platform", "compute_capability", *sorted(cc_inputs)),)
            fields |= cc_inputs
        self._coupled_fields = frozenset(f for g in self._coupled for f in g)
        # groups: union-find over derived inputs and coupled fields
        parent = {f: f for f in fields}

        def find(x: str) -> str:
            return _root(parent, x)

        def union(a: str, b: str) -> None:
            parent[find(a)] = find(b)

        for n in self._derived:
            ins = [f for f in sorted(self._base[n]) if f in parent]
            for a, b in zip(ins, ins[1:]):
                union(a, b)
        for grp in self._coupled:
            ins = [f for f in grp if f in parent]
            for a, b in zip(ins, ins[1:]):
                union(a, b)
        groups: dict[str, list[str]] = {}
        for f in sorted(fields):
            groups.setdefault(find(f), []).append(f)
        self.groups = [tuple(g) for g in groups.values()]
        self._group_derived = {g: tuple(d for n, d in self._derived.items() if self._base[n] & set(g))
                               for g in self.groups}
        # a derived fact that reads no field is a constant: no group's fields decide it, so the first group's fixed
        # part evaluates it (before, none did, and a list whose condition tests it was never reached)
        const = tuple(d for n, d in self._derived.items() if not self._base[n])
        if const and self.groups:
            self._group_derived[self.groups[0]] = (*const, *self._group_derived[self.groups[0]])
        self._reps = {f: tuple(representatives(rules, f)) for f in fields}
        self._opt_cache: dict[Any, _Parts | None] = {}  # per group and its fields' facts
        self._masked: dict[tuple[tuple[int, ...], int], tuple[int, ...]] = {}  # a part's options as one need sees them
        self._unit_cache: dict[Any, Any] = {}  # units(): per group index and its fields' facts, with the union
        self._part_cache: dict[Any, tuple[int, ...]] = {}  # per independent part and the fixed values it reads
        self._shapes: dict[Any, Any] = {}  # a large part's context-free tables (BigPart)
        self._legal: dict[Any, bool] = {}  # whether a large part has a legal value combination
        self._dmemo: dict[tuple[Any, ...], tuple[Any]] = {}  # derived values by their inputs' values
        self._getters = {g: operator.itemgetter(*g) for g in self.groups}
        # units() reads every group's values with one C-level lookup: the groups' fields side by side, each
        # group a slice of the result
        # the largest group first: the groups after it are mostly single fields whose values repeat across an
        # explanation's questions (vLLM 0.33: 98 questions, 16 distinct combinations of its 16 small groups, 70
        # of its 33-field group), so units() answers them together from one lookup (_rest_cache)
        spans, at = [], 0
        for g in sorted(self.groups, key=len, reverse=True):
            spans.append((g, at, at + len(g)))
            at += len(g)
        self._spans = tuple(spans)
        self._rest_at = spans[1][1] if len(spans) > 1 else at
        self._rest_cache: dict[tuple[Any, ...], Any] = {}  # the groups after the first, together, by their values
        self._all_getter = operator.itemgetter(*(f for g, _, _ in spans for f in g))
        # each platform's lists (with their index in the rule set), in priority order: goal_reachable's loop
        by_platform: dict[Any, list[tuple[int, Any]]] = {}
        for i, pl in enumerate(rules.lists):
            by_platform.setdefault(pl.platform, []).append((i, pl))
        self._lists_of = {k: tuple(v) for k, v in by_platform.items()}
        self._all_lists = tuple(enumerate(rules.lists))
        self._goal_lists: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # goal_lists(), per question

    def goal_lists(self, platform: Any, req: Any, requested: str | None,
                   available: frozenset[str] | None) -> tuple[tuple[int, Any, int, bool, tuple[int, ...]], ...]:
        """goal_reachable's loop, worked out once per question: (index, list, the clause bits that make the list
        apply, whether it ignores a request for `requested`, the clause bits each counted candidate needs) for
        the lists on `platform` that can apply at all."""
        key = (platform, req, requested, available)
        got = self._goal_lists.get(key)
        if got is None:
            comp = self.comp
            out = []
            for i, pl in self.lists_on(platform):
                base = comp.list_need(i)
                if base < 0:
                    continue  # the list never applies
                if pl.no_prefill:  # the layer gets no prefill backend wherever the list applies: an answer, no candidate
                    out.append((i, pl, base, False, (base,) if requested in (None, "NO_PREFILL") else ()))
                    continue
                p, masks = comp.plan(pl, req)
                ignored = requested is not None and p.mode == "auto" and any(c.backend == requested
                                                                              for c in p.candidates)
                # the clause bits each counted candidate (available; `requested` alone when given) needs to win
                needs = () if ignored else tuple(
                    base | m for cand, m in zip(p.candidates, masks)
                    if (available is None or cand.backend in available)
                    and (requested is None or cand.backend == requested))
                out.append((i, pl, base, ignored, needs))
            got = tuple(out)
            if len(self._goal_lists) > 4096:
                self._goal_lists.clear()
            self._goal_lists[key] = got
        return got

    def lists_on(self, platform: Any) -> tuple[tuple[int, Any], ...]:
        """(index, list) of the rule set's lists on `platform` (every list when it is ANY), in order."""
        return self._all_lists if platform is ANY else self._lists_of.get(platform, ())

    def _parts(self, group: tuple[str, ...], facts: Mapping[str, Any]) -> _Parts | None:
        """`group`'s options for `facts`, factored: the clauses its fixed fields (and the derived facts
        they alone decide) satisfy, and the option sets of its independent free parts; None when no
        value combination is legal.

        The free fields of a group are tied only through the derived facts that read two of them
        (and the platform/MLA coupling), so once the others are fixed the group falls apart into
        small independent parts. Enumerating each part alone (memoised on the fixed values it reads)
        answers exactly what enumerating the whole product answers, at a sum instead of a product.
        """
        try:  # the facts usually name every field: one C-level lookup of the group's values
            vals = self._getters[group](facts)
            if len(group) == 1:
                vals = (vals,)
        except KeyError:
            vals = tuple(facts.get(f, ANY) for f in group)
        key = (group, vals)
        got = self._opt_cache.get(key, _MISSING)
        if got is not _MISSING:
            return got
        got = self._factored(group, facts)
        if len(self._opt_cache) > 1 << 16:
            self._opt_cache.clear()
        self._opt_cache[key] = got
        return got

    def _factored(self, group: tuple[str, ...], facts: Mapping[str, Any]) -> _Parts | None:
        free = [f for f in group if facts.get(f, ANY) is ANY]
        fixed_vals = {f: facts[f] for f in group if facts.get(f, ANY) is not ANY}
        if not self._coupling_ok(fixed_vals):
            return None
        free_set = set(free)
        parent = {f: f for f in free}

        def find(x: str) -> str:
            return _root(parent, x)

        fixed_derived = []
        part_derived: list[tuple[Any, frozenset[str]]] = []
        for d in self._group_derived[group]:
            fb = self._base[d.name] & free_set
            if not fb:
                fixed_derived.append(d)
                continue
            part_derived.append((d, fb))
            ins = sorted(fb)
            for a in ins[1:]:
                parent[find(a)] = find(ins[0])
        for grp in self._coupled:
            ins = [f for f in grp if f in free_set]
            for a in ins[1:]:
                parent[find(a)] = find(ins[0])
        # the fixed part: fixed fields and the derived facts they alone decide
        full = dict(fixed_vals)
        for d in fixed_derived:
            full[d.name] = self._derive(d, full)
        fixed = self.comp.satisfied_partial(full)
        parts: list[tuple[int, ...]] = []
        members: dict[str, list[str]] = {}
        for f in free:
            members.setdefault(find(f), []).append(f)
        for fields in members.values():
            fs = frozenset(fields)
            derived = tuple(d for d, fb in part_derived if fb <= fs)
            if _product(len(self._reps[f]) for f in fields) > _MAX_COMBOS:
                big = self._big(tuple(fields), derived, full)
                # a legal value combination exists? only the invariants over its fields can say no
                lkey = (big.order, tuple(full.get(f, _MISSING) for inv in big.invariants for f in inv.fields))
                legal = self._legal.get(lkey)
                if legal is None:
                    if len(self._legal) > 16384:
                        self._legal.clear()
                    legal = self._legal[lkey] = big.covers(0)
                if not legal:
                    return None
                parts.append(big)
                continue
            opts = self._part(tuple(fields), derived, fixed_vals, full)
            if not opts:
                return None
            if len(opts) == 1:
                fixed |= opts[0]
            else:
                parts.append(opts)
        return fixed, tuple(parts)

    def _part_key(self, fields: tuple[str, ...], derived: tuple[Any, ...],
                  full: Mapping[str, Any]) -> tuple[Any, ...]:
        """A part's memo key: its fields, its derived facts and the fixed values those derived facts and the
        coupling read (a derived fact reads its inputs only; fixed derived facts stand for their inputs)."""
        reads: set[str] = set()
        for d in derived:
            reads.update(d.inputs)
        for grp in self._coupled:
            if any(f in grp for f in fields):
                reads.update(grp)
        reads -= set(fields)
        reads -= {d.name for d in derived}
        ctx = tuple(sorted((f, full[f]) for f in reads if f in full))
        return fields, tuple(d.name for d in derived), ctx

    def _big(self, fields: tuple[str, ...], derived: tuple[Any, ...], full: Mapping[str, Any]) -> "BigPart":
        """A part too large to enumerate (vLLM >= 0.18's FA facts read a dozen free fields together):
        searched per question instead (`BigPart.covers`), memoised on the fixed values it reads."""
        key = ("big", *self._part_key(fields, derived, full))
        got = self._part_cache.get(key)
        if got is None:
            if len(self._part_cache) > 16384:
                self._part_cache.clear()
            here = tuple(i for i in self._invariants if set(i.fields) & set(fields))
            got = self._part_cache[key] = BigPart(self, fields, derived, dict(full), here)
        return got  # type: ignore[return-value]

    def _part(self, fields: tuple[str, ...], derived: tuple[Any, ...], fixed_vals: Mapping[str, Any],
              full: Mapping[str, Any]) -> tuple[int, ...]:
        """The maximal clause sets of one independent part: its free fields' values with its derived facts
        (memoised on the fixed values those derived facts and the coupling read)."""
        key = self._part_key(fields, derived, full)
        got = self._part_cache.get(key)
        if got is not None:
            return got
        masks: set[int] = set()
        sat = self.comp.satisfied_partial
        # only the invariants over this part's fields can break (the fixed ones were judged in _factored)
        here = tuple(i for i in self._invariants if set(i.fields) & set(fields))
        # within this part only its own fields and derived facts vary: memoise each derived fact on those
        varying = set(fields) | {d.name for d in derived}
        local = [(d, tuple(f for f in d.inputs if f in varying), {}) for d in derived]
        pools = [tuple((v, sat({f: v})) for v in self._reps[f]) for f in fields]
        env = dict(full)  # every combination sets all of this part's fields and derived facts again
        for combo in itertools.product(*pools):
            m = 0
            for f, (v, mv) in zip(fields, combo):
                env[f] = v
                m |= mv
            if here and not self._coupling_ok(env, here):
                continue
            for d, ins, memo in local:  # dependency order: a derived fact after those it reads
                k = tuple([env[f] for f in ins])
                got = memo.get(k)
                if got is None:
                    v = self._derive(d, env)
                    got = memo[k] = (v, sat({d.name: v}))
                env[d.name] = got[0]
                m |= got[1]
            masks.add(m)
        opts = _maximal(masks)
        if len(self._part_cache) > 16384:
            self._part_cache.clear()
        self._part_cache[key] = opts
        return opts

    def _derive(self, d: Any, env: Mapping[str, Any]) -> Any:
        k = (d.name, *(env.get(f) for f in d.inputs))
        got = self._dmemo.get(k)
        if got is None:
            got = self._dmemo[k] = (d.evaluate(env)[0],)
        return got[0]

    def _coupling_ok(self, vals: Mapping[str, Any], invariants: tuple[Any, ...] | None = None) -> bool:
        """Whether the values set in `vals` (fields absent or ANY are free) break none of the rule set's
        invariants (default: all; config.invariants judges a Config the same way)."""
        for inv in self._invariants if invariants is None else invariants:
            kind = inv.kind
            if kind == "platform_field":
                plat, v = vals.get("platform", ANY), vals.get(inv.field, _MISSING)
                if plat is not ANY and v is not _MISSING and v is not ANY and (v is not None) != (plat in inv.platforms):
                    if not (v is not None and inv.field == "compute_capability" and self._derived_cc(plat, vals, v)):
                        return False
            elif kind == "definition":  # judged only when asked for (Reach leaves definitions free)
                a, b = vals.get(inv.field, ANY), vals.get(inv.equals.field, ANY)
                if a is not ANY and b is not ANY and bool(a) != inv.equals({inv.equals.field: b}):
                    return False
            else:
                for c in inv.checks:
                    facts = {}
                    for f in c.fields:
                        v = vals.get(f, ANY)
                        if v is ANY:
                            break
                        facts[f] = v
                    else:
                        if c.fires(facts):
                            return False
        return True

    def _derived_cc(self, plat: Any, vals: Mapping[str, Any], v: Any) -> bool:
        """Whether capability `v` is the one `plat` derives from the facts in `vals` (explain's search sets it so,
        with those facts fixed; with them free a capability on such a platform is refused, as a Config's is)."""
        try:
            d = self._cc_from.get(plat)
        except TypeError:
            return False
        if d is None or any(vals.get(f, ANY) is ANY for f in d.inputs):
            return False
        return cc_from_text(self._derive(d, vals)) == v

    def invariants_hold(self, vals: Mapping[str, Any], invariants: tuple[Any, ...]) -> bool:
        """Whether the values set in `vals` break none of `invariants` (free or absent fields: unjudged)."""
        return self._coupling_ok(vals, invariants)

    def units(self, facts: Mapping[str, Any]) -> tuple[int, int, list[tuple[int, ...]]] | None:
        """(clauses fixed facts satisfy, clauses any completion could satisfy, free units' options);
        None when some unit has no legal value."""
        try:  # the facts usually name every field: one lookup, then each group's slice
            vals = self._all_getter(facts)
        except KeyError:
            vals = None
        if vals is None or len(self._spans) < 2:
            return self._units_of(self._spans, 0, facts, vals)
        first = self._units_of(self._spans[:1], 0, facts, vals)
        if first is None:
            return None
        rest_key = vals[self._rest_at:]
        rest = self._rest_cache.get(rest_key, _MISSING)
        if rest is _MISSING:
            rest = self._units_of(self._spans[1:], 1, facts, vals)
            if rest is not None:
                rest = (rest[0], rest[1], tuple(rest[2]))
            if len(self._rest_cache) > 1 << 14:
                self._rest_cache.clear()
            self._rest_cache[rest_key] = rest
        if rest is None:
            return None
        acc = first[0] | rest[0]
        free = first[2]
        free.extend(rest[2])
        return acc, first[1] | rest[1], free

    def _units_of(self, spans: tuple[Any, ...], index0: int, facts: Mapping[str, Any],
                  vals: tuple[Any, ...] | None) -> tuple[int, int, list[Any]] | None:
        """units() over `spans` (numbered from `index0` in the per-group cache's keys)."""
        acc = 0
        union = 0
        free: list[Any] = []
        cache = self._unit_cache
        for i, (g, a, b) in enumerate(spans, index0):
            key = (i, vals[a:b]) if vals is not None else None
            got = cache.get(key, _MISSING) if key is not None else _MISSING
            if got is _MISSING:
                got = self._unit(g, facts)
                if key is not None:
                    if len(cache) > 1 << 16:
                        cache.clear()
                    cache[key] = got
            if got is None:
                return None
            acc |= got[0]
            union |= got[2]
            free.extend(got[1])
        return acc, acc | union, free

    def _unit(self, group: tuple[str, ...], facts: Mapping[str, Any]) -> tuple[int, tuple[Any, ...], int] | None:
        """`_parts` of `group` with the union of every clause its free parts can satisfy (what units() adds up)."""
        got = self._parts(group, facts)
        if got is None:
            return None
        union = 0
        for opts in got[1]:
            if isinstance(opts, BigPart):
                union |= opts.union
                continue
            for o in opts:
                union |= o
        return got[0], got[1], union

    def fields_by_group(self) -> tuple[str, ...]:
        """Every field reachability judges, the largest coupled group's first (fixing those first
        shrinks the costliest part soonest)."""
        return tuple(f for g in sorted(self.groups, key=len, reverse=True) for f in g)

    def values(self, field: str) -> tuple[Any, ...]:
        """One representative value per class of `field`'s values (all the clauses can tell apart)."""
        return self._reps[field]

    def exact(self, facts: Mapping[str, Any]) -> bool:
        """Whether the answers about `facts` so far were exact: no large part ran past its search budget
        (it then answers "reachable", an over-approximation) and no clause needed two large parts."""
        for g in self.groups:
            got = self._parts(g, facts)
            if got is not None and any(isinstance(p, BigPart) and p.inexact for p in got[1]):
                return False
        return True

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
        bigs: list[BigPart] = []
        memo = self._masked
        for opts in free_all:
            if isinstance(opts, BigPart):
                if opts.union & missing:
                    bigs.append(opts)
                continue
            key = (opts, missing)
            got = memo.get(key)
            if got is None:
                masked = {o & missing for o in opts}
                masked.discard(0)
                got = (_maximal(masked) if len(masked) > 1 else tuple(masked)) if masked else ()
                if len(memo) > 1 << 16:
                    memo.clear()
                memo[key] = got
            if got:
                free.append(got)
        free.sort(key=len)
        big_union = or_masks(b.union for b in bigs)
        reach_rest = [0] * (len(free) + 1)
        reach_rest[len(free)] = big_union
        for i in range(len(free) - 1, -1, -1):
            u = 0
            for o in free[i]:
                u |= o
            reach_rest[i] = reach_rest[i + 1] | u
        return _dfs(free, 0, 0, missing, reach_rest, bigs)


def _dfs(free: list[tuple[int, ...]], i: int, acc: int, need: int, reach_rest: list[int],
         bigs: list["BigPart"]) -> bool:
    if acc & need == need:
        return True
    if (acc | reach_rest[i]) & need != need:
        return False
    if i == len(free):
        return bigs_cover(bigs, need & ~acc)
    for o in free[i]:
        if _dfs(free, i + 1, acc | o, need, reach_rest, bigs):
            return True
    return False



def _product(xs: Any) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


def _maximal(masks: set[int]) -> tuple[int, ...]:
    ordered = sorted(masks, key=lambda m: -m.bit_count())
    keep: list[int] = []
    for m in ordered:
        if not any(m | k == k for k in keep):
            keep.append(m)
    return tuple(keep)


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
    comp = reach.comp
    plat = facts.get("platform", ANY)
    req = facts.get("backend")
    if req is ANY:
        return None
    units = reach.units(facts)
    if units is None:
        return False
    undecided = False
    exact: bool | None = None
    union = units[1]
    for _, pl, base, ignored, needs in reach.goal_lists(plat, req, requested, available):
        if union & base != base:
            continue  # the list does not apply to any completion of these facts
        if not ignored:
            for need in needs:
                if union & need == need and reach.reachable(facts, need, units):  # (the first test inline: cheap)
                    return True
            continue
        p, masks = comp.plan(pl, req)
        # the request is ignored by this list: `requested` wins only where every available candidate
        # before it is invalid, a negation the clause cover cannot state. Decided here when no
        # completion makes it valid under this list (reachability never under-approximates), or when
        # the answer is exact and nothing available comes before it; otherwise the CSP decides.
        for k, (cand, m) in enumerate(zip(p.candidates, masks)):
            if cand.backend != requested or (available is not None and cand.backend not in available):
                continue
            if not reach.reachable(facts, base | m, units):
                continue
            if exact is None:
                exact = reach.exact(facts)
            if exact and not any(available is None or c.backend in available for c in p.candidates[:k]):
                return True
            undecided = True
    return None if undecided else False
