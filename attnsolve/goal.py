"""Whether a goal (some backend, or the requested one) is reachable from some of a config's facts, with the
platform's steps before the lists (vLLM >= 0.18) taken into account.

The conflict search asks "with these facts kept and every other fact free, can selection reach the goal?".
Reachability and the CSP answer it for the priority lists alone. The steps before the lists (requests
refused or dropped, rewrites, model code that picks the backend itself) read a few more facts: the model's
identity (model route, architecture, ...), which no list reads, is *background*: held as given, never part
of a conflict, never freed. The steps that may fire under the background are run exactly, once per
combination of the free facts they read (their value classes); each combination either ends in a
model-chosen backend or hands its (rewritten) facts to the lists' check, with the step-read facts fixed.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any, Callable, Mapping

from .config import ANY, Config
from .errors import InvalidBackendError, NoValidBackendError
from .rules.model import RuleSet
from .rules.toml_values import cc_from_text
from .selection import compiled_rules, csp_solver
from .selection.per_rules import per_rules
from .selection.steps import before_selection, platform_settings, prefill_backend
from .solver.domains import representatives
from .solver.facts import base_facts
from .solver.reach import goal_reachable, reach_for

_FIXED = ("role", "backend")
# A combination count past which the steps' facts are not enumerated: the lists' check alone then answers
# (it ignores the steps, so it may say "reachable" where a step would stop it: conflicts stay sound).
MAX_COMBINATIONS = 4096


def role_pinned(rules: RuleSet, role: str) -> frozenset[str]:
    """The fields the release's invariants require a value of for `role` (MLA prefill: use_mla = true)."""
    out: set[str] = set()
    for inv in rules.invariants:
        for check in inv.checks:
            on_role = [w for w in check.when if w.field == "role"]
            if on_role and all(w({"role": role}) for w in on_role):
                out.add(check.require.field)
    return frozenset(out)


def background_fields(config: Config) -> tuple[str, ...]:
    """The config's facts no priority list reads (model identity, device names...): held in a conflict."""
    lists_read = set(csp_solver(config).fields)
    return tuple(f for f in base_facts(config, "decode") if f not in lists_read and f not in _FIXED)


def _step_conditions(rules: RuleSet, platform: Any, role: str) -> list[tuple[Any, ...]]:
    """The conditions of the steps that can change what the lists see or replace them, on `platform`
    (kept per rule set: every explanation asks for each platform)."""
    memo = per_rules(_STEPS, rules, lambda r: {})
    try:
        return memo[(platform, role)]
    except KeyError:
        got = memo[(platform, role)] = _step_conditions_of(rules, platform, role)
        return got
    except TypeError:  # an unhashable platform value: no memo
        return _step_conditions_of(rules, platform, role)


_STEPS: dict[int, Any] = {}


def _step_conditions_of(rules: RuleSet, platform: Any, role: str) -> list[tuple[Any, ...]]:
    ps = platform_settings(rules, platform)
    if ps is None:
        return []
    conds: list[tuple[Any, ...]] = [c for _, c in ps.request_errors]
    conds += [rw.when for rw in ps.rewrites if rw.stage == "before_selection"]
    conds += [c for _, c, only, _ in ps.request_fallbacks if not only]
    if role == "decode":
        conds += [c.when for c in ps.model_backend]
        conds += [r.when for r in ps.model_routes] + [k.when for k in ps.model_route_kv]
    return conds


def _inputs(rules: RuleSet, name: str, out: set[str]) -> None:
    """A field read by a condition, or the given fields a derived fact is computed from."""
    d = rules.derived.get(name)
    if d is None:
        out.add(name)
        return
    for f in d.inputs:
        if f not in out:
            _inputs(rules, f, out)


class GoalCheck:
    """kept-facts -> whether some completion reaches the goal, and a witness completion for one."""

    def __init__(self, config: Config, role: str, available: frozenset[str] | None, requested: str | None,
                 quick: bool = False, hold: frozenset[str] = frozenset()):
        """quick: a question reachability alone cannot decide counts as reachable (no CSP): a screen.
        hold: more facts held as given (an MLA layer's decode question keeps use_mla, which its prefill
        question pins)."""
        self.hold = hold
        self.quick = quick
        self.config = config
        self.role = role
        self.available = available
        self.requested = requested
        self.comp = compiled_rules(config)
        self.rules = self.comp.rules
        self.csp = csp_solver(config)
        self.reach = reach_for(self.comp)
        self.full = base_facts(config, role)
        self.background = frozenset(background_fields(config))
        self.held = {f: self.full[f] for f in (*self.background, *_FIXED, *hold) if f in self.full}
        self._free = dict.fromkeys(self.full, ANY)
        self._free.update(self.held)
        self._live = self._live_conditions()
        self._subchecks: dict[Any, GoalCheck] = {}
        self._complete_memo: dict[tuple[tuple[str, Any], ...], bool] = {}

    def quick_twin(self) -> "GoalCheck":
        """This check as a screen (quick=True: what reachability cannot decide counts as reachable), sharing
        everything computed from the config; its own memos start empty."""
        twin = copy.copy(self)
        twin.quick = True
        twin._subchecks = {}
        twin._complete_memo = {}
        return twin

    def _live_conditions(self) -> dict[Any, list[tuple[Any, ...]]]:
        """Per platform, the step conditions no held fact rules out (literals on held facts evaluated)."""
        plats = representatives(self.rules, "platform")
        # an MLA prefill question's request is the prefill registry's (set per platform below), not the decode one
        held = {f: v for f, v in self.held.items() if not (self.role == "mla_prefill" and f == "backend")}
        out: dict[Any, list[tuple[Any, ...]]] = {}
        for plat in plats:
            live = []
            for cond in _step_conditions(self.rules, plat, self.role):
                if all(lit(held) for lit in cond if lit.field in held and held[lit.field] is not ANY):
                    live.append(cond)
            if live:
                out[plat] = live
        return out

    def steps_matter(self, platform: Any) -> bool:
        """Whether a step before the lists, or the MLA layer around a prefill question, may decide on
        `platform` (where not, the priority lists alone give the answer)."""
        if platform in self._live:
            return True
        ps = platform_settings(self.rules, platform)
        if ps is not None and ps.compute_capability_from:
            return True  # the lists see the capability the platform derives (ROCm's gfx arch), not the Config's none
        return self.role == "mla_prefill" and ps is not None and ps.mla_prefill is not None

    # -- the question --------------------------------------------------------------------------------
    def facts_for(self, kept: frozenset[str]) -> dict[str, Any]:
        full = self.full
        facts = self._free.copy()  # every fact free but the held ones
        for f in kept:
            if f in full:
                facts[f] = full[f]
        return facts

    def reachable(self, kept: frozenset[str]) -> bool:
        return self._search(self.facts_for(kept), witness=False) is not None

    def witness(self, kept: frozenset[str]) -> dict[str, Any] | None:
        """A completion (field -> value, vLLM's integer compute capability) reaching the goal, or None."""
        return self._search(self.facts_for(kept), witness=True)

    # -- search --------------------------------------------------------------------------------------
    def _search(self, facts: dict[str, Any], witness: bool) -> dict[str, Any] | None:
        plat = facts.get("platform", ANY)
        if plat is not ANY:  # (facts_for's dict is this question's own: no copy)
            return self._search_platform(facts, witness)
        plats = list(representatives(self.rules, "platform"))
        for p in plats:
            pfacts = dict(facts, platform=p)
            found = self._search_platform(pfacts, witness)
            if found is not None:
                return found
        return None

    def _search_platform(self, facts: dict[str, Any], witness: bool) -> dict[str, Any] | None:
        ps = platform_settings(self.rules, facts["platform"])
        if ps is not None and ps.compute_capability_from and facts.get("compute_capability") in (None, ANY):
            return self._derived_capability(facts, ps.compute_capability_from, witness)
        if self.role == "mla_prefill" and ps is not None and ps.mla_prefill is not None:
            return self._prefill_layer(facts, ps.mla_prefill, witness)
        return self._steps_then_lists(facts, witness)

    def _derived_capability(self, facts: dict[str, Any], source: str, witness: bool) -> dict[str, Any] | None:
        """A platform whose device capability vLLM derives (ROCm: from the gfx arch, the `source` derived fact):
        every validate_configuration there sees that capability, so each value of the facts it is derived from
        is searched with its capability (a Config on that platform has none: a witness carries None)."""
        read: set[str] = set()
        _inputs(self.rules, source, read)
        free = tuple(sorted(f for f in read if facts.get(f, ANY) is ANY))
        pools = [representatives(self.rules, f) for f in free]
        d = self.rules.derived[source]
        for combo in itertools.product(*pools):
            cfacts = dict(facts)
            cfacts.update(zip(free, combo))
            cfacts["compute_capability"] = cc_from_text(d.evaluate(self._filled(cfacts))[0])
            found = self._search_platform(cfacts, witness)
            if found is not None:
                if witness:
                    found = dict(found, compute_capability=None)
                    found.update(zip(free, combo))
                return found
        return None

    def _prefill_layer(self, facts: dict[str, Any], mp: Any, witness: bool) -> dict[str, Any] | None:
        """vLLM >= 0.21's MLA layer: its prefill registry's own request; a layer a skip or fallback covers
        gets no prefill backend (an answer for automatic selection) once its decode selection succeeds.
        The prefill lists are checked without requiring the decode selection to succeed first, and a skip's
        or fallback's literals on facts the decode selection rewrites are not imposed: both only widen
        what counts as reachable, so a conflict found stays a conflict."""
        field = mp.request_field
        wanted = facts.get(field, None) if field else None
        # a free request: each request value the rules tell apart (one reachability check each is far
        # cheaper than one CSP over every request)
        for value in (representatives(self.rules, field) if wanted is ANY else (wanted,)):
            pf = dict(facts)
            if field:
                pf[field] = value
            pf["backend"] = None if value is None else prefill_backend(self.rules, value)
            found = self._steps_then_lists(pf, witness)
            if found is not None:
                return dict(found, backend=facts.get("backend")) if witness else found
        if self.requested is not None:
            return None  # a skip or fallback gives no prefill backend: never the one asked for
        rewritten = {k for pl in self.rules.lists for rw in pl.rewrites if rw.stage == "after_selection"
                     for k, _ in rw.set}
        for _, cond in (*mp.skips, *mp.fallbacks):
            decode_goal = None
            per_field: dict[str, list[Any]] = {}
            for lit in cond:
                if lit.field == "decode_backend":
                    decode_goal = next((b for b in self.rules.backends if lit({"decode_backend": b})), None)
                    continue
                if lit.field in rewritten:
                    continue
                per_field.setdefault(lit.field, []).append(lit)
            pools = []
            names = list(per_field)
            for name in names:
                have = facts.get(name, ANY)
                cands = representatives(self.rules, name) if have is ANY else (have,)
                pools.append([v for v in cands if all(lit({name: v}) for lit in per_field[name])])
            for combo in itertools.product(*pools):
                dfacts = dict(facts, role="decode", backend=self.full.get("backend"))
                dfacts.update(zip(names, combo))
                found = self._decode_check(decode_goal)._search(dfacts, witness)
                if found is not None:
                    if witness:
                        found = dict(found, backend=self.full.get("backend"))
                        found.update(zip(names, combo))
                    return found
        return None

    def _decode_check(self, goal: str | None) -> "GoalCheck":
        key = ("decode", goal)
        check = self._subchecks.get(key)
        if check is None:
            check = self._subchecks[key] = GoalCheck(self.config, "decode", self.available, goal, self.quick,
                                                     self.hold)
        return check

    def _steps_then_lists(self, facts: dict[str, Any], witness: bool) -> dict[str, Any] | None:
        # the live steps less those a fact of this question rules out (a kept head_size_v of None closes MiMo-V2's
        # route, whose derived FA version would otherwise have every FA input enumerated)
        conds = [c for c in self._live.get(facts["platform"], [])
                 if all(lit(facts) for lit in c if facts.get(lit.field, ANY) is not ANY)]
        if not conds:
            return self._lists(facts, witness)
        free, pools = self._free_read(conds, facts)
        if math.prod(max(1, len(p)) for p in pools) > MAX_COMBINATIONS:
            # too many combinations of every step's fields: each step condition on its own fields (a model route
            # opens on its own: mimo_v2 on head_size != head_size_v), then the lists alone. Skipping the steps
            # outright missed the routes, an under-approximation that made unsound conflicts.
            return self._each_condition(conds, facts, witness)
        return self._through_each(free, pools, facts, witness)

    def _free_read(self, conds: list[tuple[Any, ...]], facts: dict[str, Any]) -> tuple[tuple[str, ...], list[Any]]:
        """The free facts `conds` read (derived facts by their inputs) and each one's representative values. A fact
        the steps set themselves (a model route's variant) is no input: no values to enumerate."""
        read: set[str] = set()
        for cond in conds:
            for lit in cond:
                _inputs(self.rules, lit.field, read)
        free = tuple(sorted(f for f in read if f in facts and facts[f] is ANY and representatives(self.rules, f)))
        return free, [representatives(self.rules, f) for f in free]

    def _through_each(self, free: tuple[str, ...], pools: list[Any], facts: dict[str, Any],
                      witness: bool) -> dict[str, Any] | None:
        """The first answer the steps give over every combination of `free`'s values, or None."""
        for combo in itertools.product(*pools):
            cfacts = dict(facts)
            cfacts.update(zip(free, combo))
            found = self._through_steps(cfacts, witness)
            if found is not None:
                return found
        return None

    def _each_condition(self, conds: list[tuple[Any, ...]], facts: dict[str, Any], witness: bool) -> dict[str, Any] | None:
        """The steps run for every combination of one condition's free fields at a time (the others as
        `_filled` gives them), then the lists alone: each answer found is one the steps give for those facts."""
        seen: set[tuple[str, ...]] = set()
        for cond in conds:
            free, pools = self._free_read([cond], facts)
            if not free or free in seen or math.prod(max(1, len(p)) for p in pools) > MAX_COMBINATIONS:
                continue
            seen.add(free)
            found = self._through_each(free, pools, facts, witness)
            if found is not None:
                return found
        if witness:  # a witness of the lists alone keeps the steps quiet where the lists do not care
            quiet = self._quiet(conds, facts)
            if quiet:
                found = self._lists(dict(facts, **quiet), witness)
                if found is not None:
                    return found
        return self._lists(facts, witness)

    def _quiet(self, conds: list[tuple[Any, ...]], facts: dict[str, Any]) -> dict[str, Any]:
        """The free facts the steps read and no list does (model identity), at their defaults: the lists' answer
        is the same whatever they are, and a witness with them at rest is not stopped by a model route the
        lists never saw (a free model_arch of deepseek_v4 refusing a bfloat16 KV cache)."""
        out = {}
        for f in self._free_read(conds, facts)[0]:
            if f in self.csp.fields:
                continue
            decl = self.rules.fields.get(f)
            pool = representatives(self.rules, f)
            out[f] = decl.default if decl is not None and decl.default in pool else pool[0]
        return out

    def _filled(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        """Concrete facts for running the steps: the free facts the live steps do not read take any value
        (the config's own where it has one)."""
        out = {}
        for f, v in facts.items():
            if v is ANY:
                v = self.full.get(f, ANY)
                if v is ANY:
                    pool = representatives(self.rules, f)
                    v = pool[0] if pool else None
            out[f] = v
        return out

    def _through_steps(self, facts: dict[str, Any], witness: bool) -> dict[str, Any] | None:
        filled = self._filled(facts)
        try:
            before = before_selection(self.comp, self.config, self.role, dict(filled))
        except (InvalidBackendError, NoValidBackendError):
            return None  # refused before the lists, whatever the other facts
        if before.model is not None:
            chosen = before.model[0]
            if chosen is None or (self.requested is not None and chosen != self.requested):
                return None
            if self.available is not None and chosen not in self.available:
                return None
            # the model picks it without validation: any completion the platform's invariants allow
            if not witness:
                return {} if self._completable(facts) else None
            return self.csp.complete(facts)
        after = dict(facts)
        after["backend"] = before.facts.get("backend")
        for k, v in before.changes:
            after[k] = v
        found = self._lists(after, witness)
        if found is not None and witness:
            found = dict(found, backend=facts.get("backend"))  # what the user sets, before the steps
            for k, _ in before.changes:
                found[k] = filled[k]
            for f in self.held:
                if f in facts and facts[f] is not ANY:
                    found.setdefault(f, facts[f])
        return found

    def _completable(self, facts: dict[str, Any]) -> bool:
        """Whether the invariants allow some completion of `facts`: reachability's units answer when they
        are exact (a unit with no legal value: none; every unit legal: one), the CSP otherwise (cached:
        the conflict search asks the same facts many times)."""
        units = self.reach.units(facts)
        if units is None:
            return False
        if self.reach.exact(facts) or self.quick:
            return True
        key = tuple(facts.items())
        ok = self._complete_memo.get(key)
        if ok is None:
            ok = self._complete_memo[key] = self.csp.complete(facts) is not None
        return ok

    def _lists(self, facts: dict[str, Any], witness: bool) -> dict[str, Any] | None:
        if not witness:
            ok = goal_reachable(self.reach, facts, self.requested, self.available)
            if ok is not None:
                return {} if ok else None
            if self.quick:
                return {}
        else:
            if goal_reachable(self.reach, facts, self.requested, self.available) is False:
                return None  # reachability's "no" is exact: no completion to find
            found = self._reach_witness(facts)
            if found is not None:
                return found
        sol = self.csp.find(facts, backend=self.requested, available=self.available)
        if sol is None:
            return None
        for f, v in facts.items():  # the step-read facts fixed above are part of the witness
            if v is not ANY:
                sol.setdefault(f, v)
        return sol


    def _reach_witness(self, facts: dict[str, Any]) -> dict[str, Any] | None:
        """A completion reaching the goal built by reachability alone: fix one free field at a time to a
        value that keeps the goal reachable, then check the complete facts (where reachability is exact).
        None: reachability could not lead there (an undecided or over-approximated answer); the CSP
        searches instead (on vLLM >= 0.18 it can take minutes where this takes milliseconds)."""
        reach, requested, available = self.reach, self.requested, self.available
        invariants = self.rules.invariants  # definitions too (use_dcp = dcp_size > 1): reachability leaves
        cur = dict(facts)                   # those free, a witness must keep them
        for f in reach.fields_by_group():
            if cur.get(f, ANY) is not ANY:
                continue
            for v in reach.values(f):
                cur[f] = v
                if reach.invariants_hold(cur, invariants) and goal_reachable(reach, cur, requested, available) is True:
                    break
            else:
                return None
        if goal_reachable(reach, cur, requested, available) is not True or not reach.exact(cur):
            return None
        return {f: v for f, v in cur.items() if v is not ANY}


def goal_consistency(check: GoalCheck) -> Callable[[frozenset[str]], bool]:
    """kept-fields -> whether some completion (every other non-background fact free) reaches `check`'s goal,
    each kept set answered once."""
    cache: dict[frozenset[str], bool] = {}

    def consistent(kept: frozenset[str]) -> bool:
        ok = cache.get(kept)
        if ok is None:
            ok = cache[kept] = check.reachable(kept)
        return ok

    return consistent
