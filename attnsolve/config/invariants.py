"""Platform invariants applied to a Config, read from the rule set (`[[invariants]]`, model.Invariant).

Why: which fields belong to which platform, and which facts only exist together, changes between vLLM
releases; the rules say it once and Config (here) and the CSP (solver/csp.py) both follow the data.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..cc import ComputeCapability
from ..errors import ConfigError
from ..rules import RuleSet
from ..rules.loader import EXTRA_FIELDS
from ..rules.model import Check, Invariant
from .values import ANY
from ..rules.sets import per_rules_limit


class Plan:
    """One rule set's invariants, sorted for Config: platform fields by field, the fields that name their
    platform when given alone, and the clause checks over Config fields (role-only ones are the CSP's)."""

    __slots__ = ("placed", "implying", "definitions", "unknowable", "defined", "clauses", "query_clauses", "examples")

    def __init__(self, rules: RuleSet, config_fields: frozenset[str]):
        self.placed: dict[str, Invariant] = {i.field: i for i in rules.invariants if i.kind == "platform_field"}
        self.implying: tuple[tuple[str, frozenset[str]], ...] = tuple(
            (i.field, frozenset(i.platforms)) for i in self.placed.values() if i.implies_platform)
        self.definitions: tuple[Invariant, ...] = tuple(
            i for i in rules.invariants if i.kind == "definition" and all(f in config_fields for f in i.fields))
        # fields a definition may leave unknown (None): use_dcp=True with no dcp_size says "some size > 1"
        self.unknowable: frozenset[str] = frozenset(i.equals.field for i in self.definitions)
        self.defined: frozenset[str] = frozenset(f for i in self.definitions for f in i.fields)
        self.clauses: tuple[tuple[Invariant, Check], ...] = tuple(
            (i, c) for i in rules.invariants for c in i.checks if all(f in config_fields for f in c.fields))
        # the clauses that also read the query's own facts (the role): judged on the facts (solver.facts)
        query = config_fields | frozenset(EXTRA_FIELDS)
        self.query_clauses: tuple[tuple[Invariant, Check], ...] = tuple(
            (i, c) for i in rules.invariants for c in i.checks
            if all(f in query for f in c.fields) and not all(f in config_fields for f in c.fields))
        # (field, platform) -> (GPU name, value): an example for the "required" error
        self.examples: dict[tuple[str, str], tuple[str, Any]] = {}
        for name, g in rules.gpus.items():
            for f in self.placed:
                if f in g:
                    self.examples.setdefault((f, g.get("platform")), (name, g[f]))


_PLANS: dict[int, tuple[RuleSet, Plan]] = {}


def plan_of(rules: RuleSet, config_fields: frozenset[str]) -> Plan:
    hit = _PLANS.get(id(rules))
    if hit is None or hit[0] is not rules:  # the rules object is kept: an id is reused after GC
        if len(_PLANS) > per_rules_limit():
            _PLANS.clear()
        hit = _PLANS[id(rules)] = (rules, Plan(rules, config_fields | frozenset(rules.fields)))
    return hit[1]


def implied_platform(plan: Plan, given: Mapping[str, Any]) -> Any:
    """The one platform the given platform fields agree on (a compute capability alone: cuda), or None."""
    common: frozenset[str] | None = None
    for name, platforms in plan.implying:
        v = given.get(name)
        if v is not None and v is not ANY:
            common = platforms if common is None else common & platforms
    if common is not None and len(common) == 1:
        return next(iter(common))
    return None


def place(plan: Plan, name: str, value: Any, platform: Any) -> Any:
    """A platform field's value on `platform`: refused off its platforms, required or defaulted on them."""
    inv = plan.placed.get(name)
    if inv is None or platform is ANY or value is ANY:
        return value
    if value is not None:
        if platform not in inv.platforms:
            raise ConfigError(name, _shown(value), f"None on platform {platform} ({inv.reason})")
        return value
    if platform in inv.platforms:
        if inv.required:
            example = plan.examples.get((name, platform))
            hint = f" like {_shown(example[1])!r} (or gpu={example[0]!r})" if example else " (or gpu=...)"
            raise ConfigError(name, None, f"a {name}{hint} on platform {platform} ({inv.reason})")
        return inv.default
    return value


def check_clauses(plan: Plan, values: Mapping[str, Any],
                  clauses: tuple[tuple[Invariant, Check], ...] | None = None) -> None:
    """Refuse a configuration where a clause invariant's check fires (fields left ANY are not judged).
    clauses: those to judge (default: the ones over Config fields; plan.query_clauses for a query's facts)."""
    for inv, check in plan.clauses if clauses is None else clauses:
        facts = {}
        for f in check.fields:
            v = values[f]
            if v is ANY:
                break
            facts[f] = v.as_int() if v.__class__ is ComputeCapability else v
        else:
            if check.fires(facts):
                named = [lit.field for lit in check.when] or [check.require.field]
                first = named[0]
                others = ", ".join(f"{f}={_shown(values[f])!r}" for f in check.fields if f != first)
                need = f"{check.require.field} {check.require.pred.describe(check.require.field)}"
                if inv.message:  # vLLM's own words first, then which fields decided it
                    text = f"{inv.message} (field {first}, value {_shown(values[first])!r} with {others}; needs {need})"
                else:
                    text = f"Invalid {first}: {_shown(values[first])!r} with {others}: {inv.reason} (needs {need})."
                raise ConfigError(first, values[first], f"a value consistent with {others} (needs {need})", message=text,
                                  vllm_text=inv.message or None)


def apply_definitions(plan: Plan, values: Mapping[str, Any], given: frozenset[str]) -> dict[str, Any]:
    """The changes the definitions make (field -> value): the side not given follows the one given (the
    defining field unknown, None, when the bool says true but its default says false); both given and
    disagreeing is a ConfigError naming both."""
    out: dict[str, Any] = {}
    for inv in plan.definitions:
        lit = inv.equals
        name, other = inv.field, lit.field
        b, v = values[name], values[other]
        if b is ANY or v is ANY:
            continue
        holds = v is not None and lit.pred(v)
        if name in given and other in given:
            if v is not None and b != holds:
                raise ConfigError(name, b, f"{holds} with {other}={_shown(v)!r} ({inv.reason})", message=(
                    f"Invalid {name}: {b!r} with {other}={_shown(v)!r}: {inv.reason} "
                    f"({name} is true exactly when {other} {lit.pred.describe(other)})."))
        elif other in given:
            if v is not None and b != holds:
                out[name] = holds
        elif name in given and v is not None and b != holds:
            out[other] = None
    return out


def _shown(value: Any) -> Any:
    return str(value) if value.__class__ is ComputeCapability else value
