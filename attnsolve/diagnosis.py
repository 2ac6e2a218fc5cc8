"""Diagnosis: minimal conflicts and smallest fixes for a configuration that selects nothing (or not
the requested backend).

A *conflict* is a smallest set of the user's facts (field = value) that on its own, with every
other field free, already rules out the goal; the model's identity (model route, architecture: the facts
no priority list reads) is background, held as given (goal.py), and never part of a conflict. QuickXplain finds a preferred one over the facts
ordered hardware > model > tunables; a bounded hitting-set tree finds more. A *fix* is a minimal
hitting set of the conflicts (Reiter: sets that hit every known conflict yet fail teach a new
one), with values nearest the current ones, verified by re-solving a real Config.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from .config import ANY, FIELD_NAMES, Config, format_cc
from .render import show as _show
from .errors import ConfigError, SelectionError
from .rules.loader import EXTRA_FIELDS
from .selection import compiled_rules, csp_solver, solve_uncached
from .selection.per_rules import per_rules
from .solver.domains import class_of, representatives, value_classes
from .solver.facts import base_facts
from .goal import GoalCheck, goal_consistency

HARDWARE = ("platform", "compute_capability", "rocm_arch")
MODEL = ("dtype", "head_size", "use_mla", "use_sparse", "has_sink", "use_mm_prefix", "attn_type", "num_heads",
         "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_topk")
# Everything else is a tunable (KV dtype, block size, requested backend, FA version, switches, environment).
_COST = {**{f: 2 for f in HARDWARE}, **{f: 1 for f in MODEL}}
# Within the model, some facts are cheap to change (run in fp16, split heads differently) and
# some change the architecture itself; fixes are ranked accordingly.
_MODEL_WEIGHT = {"dtype": 1.0, "num_heads": 1.1, "has_sink": 1.3, "use_mm_prefix": 1.3, "attn_type": 1.5,
                 "head_size": 1.5, "use_mla": 1.6, "use_sparse": 1.6, "qk_nope_head_dim": 1.5,
                 "qk_rope_head_dim": 1.5, "v_head_dim": 1.5, "index_topk": 1.5}
_NEVER_CHANGE = {"platform", "backend"}  # a fix never moves you to another platform; "backend" has its own fix


def category(field_name: str) -> str:
    return {2: "hardware", 1: "model"}.get(_COST.get(field_name, 0), "tunable")


def _cost(field_name: str, config: Config) -> int:
    """2 hardware, 1 model, 0 tunable: the common fields by table, a rule-declared one by its category."""
    if field_name in _COST or field_name in FIELD_NAMES:
        return _COST.get(field_name, 0)
    decl = compiled_rules(config).rules.fields.get(field_name)
    return {"hardware": 2, "model": 1}.get(decl.category, 0) if decl is not None else 0


@dataclass(frozen=True)
class Fix:
    """A smallest change: set `changes` (Config field -> value) and `selects` is chosen."""

    changes: Mapping[str, Any]
    selects: str
    hardware: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"changes": dict(self.changes), "selects": self.selects}

    def __str__(self) -> str:
        parts = [("backend=auto (automatic selection)" if k == "backend" and v is None else f"{k}={_show(v)}")
                 for k, v in self.changes.items()]
        return " and ".join(parts) + f" \u2192 {self.selects}"



def _solver_facts(config: Config, role: str) -> dict[str, Any]:
    return base_facts(config, role)


def _fact_order(config: Config, hold: frozenset[str] = frozenset()) -> list[str]:
    """The user's facts, most preferred in a conflict first: hardware, then model, then tunables."""
    relevant, rank = per_rules(_ORDER, compiled_rules(config).rules, lambda rules: _order_table(config))
    names = [f for f in rank if f in relevant and f not in hold and getattr(config, f) is not ANY]
    # "no compute capability" / "no gfx arch" only restate the platform: not facts of their own
    return [f for f in names if not (f in ("compute_capability", "rocm_arch") and getattr(config, f) is None)]


_ORDER: dict[int, Any] = {}


def _order_table(config: Config) -> tuple[frozenset[str], tuple[str, ...]]:
    """The release's fields a conflict may name (those its lists read), and every field in preference order
    (cost, then the Config's order): the part of the fact order that depends on the release alone."""
    relevant = frozenset(csp_solver(config).fields) - set(EXTRA_FIELDS) - {"backend"}
    where = {f: i for i, f in enumerate(config.field_names)}
    return relevant, tuple(sorted(config.field_names, key=lambda f: (-_cost(f, config), where[f])))


@dataclass(frozen=True)
class Question:
    """One explain question's shared parts, built once for both searches (find_conflicts, then find_fixes):
    the consistency test with its answers so far, the facts in conflict-preference order, and the goal check
    behind the test (the fix search's screen is its quick twin)."""

    consistent: Callable[[frozenset[str]], bool]
    order: tuple[str, ...]
    check: GoalCheck


def question(config: Config, role: str, available: frozenset[str] | None, requested: str | None,
             hold: frozenset[str] = frozenset()) -> Question:
    """kept-fields -> whether some completion (all other facts free, the model's identity held) reaches
    the goal, through the platform's steps before the lists too (goal.GoalCheck); with the fact order."""
    check = GoalCheck(config, role, available, requested, hold=hold)
    return Question(goal_consistency(check), tuple(_fact_order(config, hold)), check)


def _quickxplain(background: list[str], constraints: list[str], consistent: Callable[[frozenset[str]], bool]) -> list[str] | None:
    """Junker's QuickXplain: a minimal conflict among `constraints`, preferring earlier ones."""
    if consistent(frozenset(background + constraints)):
        return None
    if not constraints:
        return []

    def qx(b: list[str], delta: list[str], c: list[str]) -> list[str]:
        if delta and not consistent(frozenset(b)):
            return []
        if len(c) == 1:
            return list(c)
        k = len(c) // 2
        c1, c2 = c[:k], c[k:]
        d2 = qx(b + c1, c1, c2)
        d1 = qx(b + d2, d2, c1)
        return d1 + d2

    return qx(list(background), [], list(constraints))


def find_conflicts(config: Config, role: str, available: frozenset[str] | None, requested: str | None,
                   max_conflicts: int = 4, hold: frozenset[str] = frozenset(),
                   asked: Question | None = None) -> list[dict[str, Any]]:
    """Minimal conflicts (as field -> Config value), the preferred one first (bounded hitting-set tree).
    `hold`: facts held as given, never part of a conflict. `asked`: this question's `question(...)` when
    the caller shares it with find_fixes."""
    if asked is None:
        asked = question(config, role, available, requested, hold)
    consistent = asked.consistent
    order = list(asked.order)
    rules = compiled_rules(config).rules
    if not consistent(frozenset()):
        return [{}]  # no completion at all reaches the goal: the minimal conflict is empty
    first = _quickxplain([], order, consistent)
    if first is None:
        return []
    found: list[list[str]] = [first]
    queue: list[frozenset[str]] = [frozenset()]
    seen_paths: set[frozenset[str]] = {frozenset()}
    while queue and len(found) < max_conflicts:
        path = queue.pop(0)
        # the conflict for this node: one that avoids every removed fact
        conflict = next((c for c in found if not (set(c) & path)), None)
        if conflict is None:
            rest = [f for f in order if f not in path]
            conflict = _quickxplain([], rest, consistent)
            if conflict is None:
                continue  # removing `path` restores consistency: a diagnosis, a leaf
            if conflict not in found:
                found.append(conflict)
                if len(found) >= max_conflicts:
                    break
        for f in conflict:
            # a definition's sides go together (use_dcp is dcp_size > 1): removing one alone leaves the other to
            # stand for it, and the consistency test, which leaves definitions free, then pads that conflict
            child = path | _with_partners(rules, (f,))
            if child not in seen_paths:
                seen_paths.add(child)
                queue.append(child)
    return [_config_form(config, c) for c in found]


def _config_form(config: Config, names: Iterable[str]) -> dict[str, Any]:
    out = {}
    for f in names:
        v = getattr(config, f)
        out[f] = format_cc(v) if f == "compute_capability" and isinstance(v, tuple) else v
    return out


# ---------------------------------------------------------------------------------------------
# Fixes


def _candidate_values(rules: Any, field_name: str, current: Any) -> list[Any]:
    """Values to try for `field_name`, nearest to `current` first (Config-acceptable forms)."""
    if field_name == "compute_capability":
        vals = [tuple(map(int, g.split("."))) for g in rules.generations]
        for c in value_classes(rules, field_name):
            if c.representative is not None:
                vals.append((c.representative // 10, c.representative % 10))
    elif field_name in rules.domains:
        vals = list(rules.domains[field_name])
        decl = rules.fields.get(field_name)
        if decl is not None and decl.default is None and decl.unset:
            vals = [None, *vals]  # an optional field: unsetting it (vLLM's own choice) is a fix too
    else:
        reps = list(representatives(rules, field_name))
        vals = reps
        if isinstance(current, int) and not isinstance(current, bool):
            # the member of each class nearest to the current value
            scan = range(max(1, current // 4), current * 4 + 2)
            best: dict[Any, int] = {}
            for v in scan:
                key = class_of(rules, field_name, v)
                if key not in best or abs(v - current) < abs(best[key] - current):
                    best[key] = v
            vals = list(dict.fromkeys([*best.values(), *reps]))
    vals = [v for v in dict.fromkeys(vals) if v != current]
    return sorted(vals, key=lambda v: _distance(field_name, current, v, rules))


def _distance(field_name: str, old: Any, new: Any, rules: Any) -> float:
    if old is None or new is None:
        return 2.0
    if isinstance(old, bool) or isinstance(new, bool):
        return 1.0
    if isinstance(old, tuple) and isinstance(new, tuple):
        return abs((old[0] * 10 + old[1]) - (new[0] * 10 + new[1])) / 10
    if isinstance(old, int) and isinstance(new, int) and old > 0 and new > 0:
        return abs(math.log2(new / old))
    if field_name == "kv_cache_dtype":
        return 0.5 if new == "auto" else 1.0  # "auto" (the model dtype) is the natural first fix
    dom = list(rules.domains.get(field_name, ()))
    if old in dom and new in dom:
        return abs(dom.index(old) - dom.index(new)) * 0.5 + 0.5
    return 1.0


# The fix search examines at most this many hitting sets (vLLM 0.33 configurations with many disjoint
# conflicts reach fixes of 8 fields over a pool of 30: millions of sets). Far above what any configuration of
# benchmarks/explain_answers.py's sample uses (their answers are unchanged).
_MAX_VISITS = 5_000
# Candidate fixes re-checked per search (each a screen on the compiled rules or a re-solve, ~0.05 to 0.3 ms):
# a bound on explain's time where many hitting sets pass the goal screen yet none of their nearest values
# works (an MLA layer whose decode request fails, on a release with many coupled fields). The searches of
# benchmarks/explain_answers.py's sample stay far below it.
_MAX_TRIES = 16_000


def find_fixes(config: Config, role: str, available: frozenset[str] | None, requested: str | None,
               conflicts: Sequence[Mapping[str, Any]], max_fixes: int = 8, max_size: int = 3,
               hold: frozenset[str] = frozenset(), asked: Question | None = None) -> list[Fix]:
    """Smallest sets of field changes that make the goal reachable, verified by re-solving.
    `hold`: facts never changed. `asked`: as for find_conflicts (the same question's parts)."""
    rules = compiled_rules(config).rules
    fixes: list[tuple[tuple, Fix]] = []
    if requested is not None:
        auto = config.replace(backend=None)
        try:
            sel = solve_uncached(auto, role, available)
            fixes.append(((0, 1, 0.0), Fix({"backend": None}, sel.backend)))
        except (SelectionError, ConfigError):
            if not any(conflicts):
                # the request can never fit: the fixes are automatic selection plus what that needs
                auto_conflicts = find_conflicts(auto, role, available, None, hold=hold)
                for f in find_fixes(auto, role, available, None, auto_conflicts, max_fixes, max_size, hold):
                    fixes.append(((0, 1 + len(f.changes), 0.0), Fix({"backend": None, **f.changes}, f.selects, f.hardware)))
    if not any(conflicts):
        return [f for _, f in fixes]
    # a fix changing one side of a definition moves the other (Config): it hits a conflict naming either side
    known = [set(_with_partners(rules, c)) for c in conflicts]
    worked: list[frozenset[str]] = []
    if asked is None:
        asked = question(config, role, available, requested, hold)
    consistent = asked.consistent
    screen = asked.check.quick_twin()
    order = list(asked.order)
    all_facts = frozenset(order)
    new_conflicts = 0
    visited = 0
    budget = [_MAX_TRIES]
    size = 1
    while size <= max_size:
        # a fix must touch every conflict, so it is at least as large as a set of disjoint conflicts
        disjoint: list[set[str]] = []
        for c in sorted(known, key=len):
            if all(not (c & d) for d in disjoint):
                disjoint.append(c)
        max_size = min(max(max_size, len(disjoint)), 8)
        where = {f: i for i, f in enumerate(config.field_names)}
        pool = sorted({f for c in known for f in c if f not in _NEVER_CHANGE and f not in hold},
                      key=lambda f: (_cost(f, config), where[f]))
        grew = False
        for combo in _hitting_sets(pool, size, known):  # each touches every known conflict
            visited += 1
            if visited > _MAX_VISITS or budget[0] <= 0:
                break  # a bounded search: the hitting sets of a large conflict family grow combinatorially
            fs = frozenset(combo)
            if any(w <= fs for w in worked):
                continue  # a subset already works: not minimal
            if not consistent(all_facts - _with_partners(rules, fs)):
                # Reiter's hitting-set tree: this set hits every known conflict yet fails, so
                # there is another conflict among the remaining facts; learn it and re-plan.
                if new_conflicts < 32:
                    more = _quickxplain([], [f for f in order if f not in fs], consistent)
                    if more and set(_with_partners(rules, more)) not in known:
                        known.append(set(_with_partners(rules, more)))
                        new_conflicts += 1
                        grew = True
                        break
                continue
            fix = _best_values(config, role, available, requested, combo, rules, screen, budget)
            if fix is None:
                continue
            worked.append(fs)
            cost = (max(_MODEL_WEIGHT.get(f, _COST.get(f, 0)) for f in combo), size,
                    sum(_distance(f, getattr(config, f), fix.changes[f] if f != "compute_capability" else _cc(fix.changes[f]), rules) for f in combo))
            fixes.append((cost, fix))
        if grew:
            continue  # same size again with the larger conflict family
        if len(fixes) >= max_fixes:
            break
        if size == max_size and not worked and max_size < 8:
            max_size += 1  # nothing smaller works: a fix needs more changes
        size += 1
    fixes.sort(key=lambda t: t[0])
    return [f for _, f in fixes[:max_fixes]]


def _with_partners(rules: Any, fields: Iterable[str]) -> frozenset[str]:
    """`fields` plus the other side of each definition invariant they touch (use_dcp <-> dcp_size): Config
    makes the side not changed follow the one changed, so a fix changing one side moves both."""
    out = set(fields)
    for inv in rules.invariants:
        if inv.kind == "definition" and out & set(inv.fields):
            out |= set(inv.fields)
    return frozenset(out)


def _hitting_sets(pool: Sequence[str], size: int, known: Sequence[set[str]]) -> Iterable[tuple[str, ...]]:
    """The `size`-combinations of `pool` that touch every set in `known`, in itertools.combinations'
    order (the same sequence as filtering it, without visiting the combinations that miss a set)."""
    index = {f: i for i, f in enumerate(pool)}
    last = []
    for c in known:
        at = [index[f] for f in c if f in index]
        if not at:
            return  # a set nothing in the pool touches: no combination does
        last.append(max(at))
    n = len(pool)
    chosen: list[str] = []

    def rec(start: int, unhit: list[int]) -> Iterable[tuple[str, ...]]:
        if len(chosen) == size:
            if not unhit:
                yield tuple(chosen)
            return
        bound = min((last[k] for k in unhit), default=n)
        for i in range(start, n - (size - len(chosen)) + 1):
            if i > bound:
                break  # a set not yet touched has no member left at or after i
            f = pool[i]
            chosen.append(f)
            yield from rec(i + 1, [k for k in unhit if f not in known[k]])
            chosen.pop()

    yield from rec(0, list(range(len(known))))


def _cc(text: Any) -> Any:
    if isinstance(text, str) and "." in text:
        a, _, b = text.partition(".")
        return (int(a), int(b))
    return text


def _best_values(config: Config, role: str, available: frozenset[str] | None, requested: str | None,
                 combo: Sequence[str], rules: Any, reachable: GoalCheck, budget: list[int] | None = None) -> Fix | None:
    """The nearest values for the fields in `combo` that make the goal hold, or None.

    Candidates are screened on the compiled rules in fact space (no Config built); the winner is
    then re-solved through a real Config, so a reported fix always really works.
    """
    comp = compiled_rules(config)
    base = _solver_facts(config, role)
    # No value of `combo` can pass the screen below when no completion of exactly these fields reaches the
    # goal (goal.GoalCheck: the steps before the lists included; it never under-approximates): skip the
    # nearest-value search outright. (The search's consistency test frees every fact outside the conflict
    # order too, so it can say yes here.)
    moved = _with_partners(rules, combo)
    if not reachable.reachable(frozenset(f for f in base if f not in moved)):
        return None
    options = [_candidate_values(rules, f, getattr(config, f))[:12] for f in combo]
    # the screen reads the priority lists alone: exact only where no step before them (a request refused,
    # a model route) and no MLA layer around them can change the answer on this platform
    screened = len(moved) == len(combo) and not reachable.steps_matter(config.platform)
    tried = 0
    for values in _nearest_first(options, lambda vs: sum(_distance(f, getattr(config, f), v, rules)
                                                         for f, v in zip(combo, vs))):
        tried += 1
        if budget is not None:
            budget[0] -= 1
        if tried > 400 or (budget is not None and budget[0] < 0):
            break
        changes = dict(zip(combo, values))
        if screened and _screen(comp, base, changes, available) is None:
            continue
        try:
            cfg = config.replace(**changes)
            sel = solve_uncached(cfg, role, available)
        except (ConfigError, SelectionError):
            continue
        if requested is not None and sel.backend != requested:
            continue
        shown = {f: (format_cc(v) if f == "compute_capability" and isinstance(v, tuple) else v) for f, v in changes.items()}
        return Fix(shown, sel.backend, hardware=any(category(f) == "hardware" for f in combo))
    return None


def _nearest_first(options: Sequence[Sequence[Any]], cost: Callable[[tuple[Any, ...]], float]) -> Iterable[tuple[Any, ...]]:
    """The combinations of `options` in the order sorted(itertools.product(*options), key=cost) gives, lazily:
    each option list is sorted nearest first (cost never falls along one list), so a best-first walk over the
    index tuples, ties broken by the tuple (the product's own order), yields that order without building the
    product (12 values for each of 8 fields is 4e8 combinations; the search tries the nearest 400)."""
    if not options or any(not o for o in options):
        return
    start = (0,) * len(options)

    def key(idx: tuple[int, ...]) -> tuple[float, tuple[int, ...]]:
        return (cost(tuple(o[i] for o, i in zip(options, idx))), idx)

    heap = [key(start)]
    seen = {start}
    while heap:
        _, idx = heapq.heappop(heap)
        yield tuple(o[i] for o, i in zip(options, idx))
        for k in range(len(idx)):
            if idx[k] + 1 < len(options[k]):
                nxt = idx[:k] + (idx[k] + 1,) + idx[k + 1:]
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, key(nxt))


def _screen(comp: Any, base: Mapping[str, Any], changes: Mapping[str, Any],
            available: frozenset[str] | None) -> str | None:
    """Cheap pre-check of a candidate fix on the compiled rules: the backend it would select, or None."""
    facts = dict(base)
    for f, v in changes.items():
        facts[f] = (v[0] * 10 + v[1]) if f == "compute_capability" and isinstance(v, tuple) else v
    comp.complete(facts)
    got = comp.plan_for(facts)
    if got is None:
        return None
    p, masks = got
    allowed = None if available is None else tuple(c.backend in available for c in p.candidates)
    idx = comp.first_valid(masks, comp.satisfied(facts), allowed)
    return None if idx is None else p.candidates[idx].backend


