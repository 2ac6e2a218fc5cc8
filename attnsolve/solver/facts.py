"""Config -> facts: the flat field -> value mapping the rules are written against.

Compute capability becomes vLLM's integer form (9.0 -> 90); the role of the query is added. Derived
facts (FA version, TRTLLM usability, R1 dims) are added by the compiled rules (CompiledRules.complete).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from ..config import ANY, FIELD_NAMES, Config, cc_int
from ..config.invariants import Plan, check_clauses, plan_of
from ..config.normalise import NUMERIC_FIELDS
from ..errors import ConfigError
from ..rules import RuleSet, rules_for
from ..rules._fields import CONFIG_FIELDS
from ..rules.model import _NO_EQ, Check, Literal
from ..rules.sets import per_rules_limit

ROLES = ("decode", "mla_prefill")
_ROLE_ALIASES = {"decode": "decode", "attention": "decode", "standard": "decode", "mla_decode": "decode",
                 "mla_prefill": "mla_prefill", "prefill": "mla_prefill"}


def parse_role(role: Any) -> str:
    if role is None:
        return "decode"
    if isinstance(role, str) and role.strip().lower() in _ROLE_ALIASES:
        return _ROLE_ALIASES[role.strip().lower()]
    from ..errors import closest
    raise ConfigError("role", role, ROLES, suggestion=closest(role, _ROLE_ALIASES) if isinstance(role, str) else None)


_FIELDS_OF = operator.attrgetter(*FIELD_NAMES)  # one C call reads every common field
_FIELDS_IN = operator.itemgetter(*FIELD_NAMES)  # the same from the instance dict: no attribute lookups
_NUMERIC_IN = operator.itemgetter(*NUMERIC_FIELDS)  # the fields a shared facts layout does not hold


def base_facts(config: Config, role: str) -> dict[str, Any]:
    """Config fields (ANY kept as ANY) plus the role; no derived facts."""
    d = getattr(config, "__dict__", None)
    layout = None if d is None else d.get("_facts")
    if layout is not None:  # laid out when the Config was built (config/facts.py): copied, its numbers set
        facts = layout.copy()
        facts.update(zip(NUMERIC_FIELDS, _NUMERIC_IN(d)))
    else:
        try:
            values = _FIELDS_IN(config.__dict__)
        except (AttributeError, KeyError):  # not a plain Config instance: read the attributes
            values = _FIELDS_OF(config)
        facts = dict(zip(FIELD_NAMES, values))
        facts.update(config._extra)  # the fields this release's rules declare beyond the common ones
        cc = facts["compute_capability"]
        if cc is not ANY:
            facts["compute_capability"] = cc_int(cc)
    facts["role"] = role
    _check_role(config, facts)
    return facts


def for_role(facts: dict[str, Any], config: Config, role: str) -> dict[str, Any]:
    """base_facts(config, role), from `facts` = base_facts(config, another role) (copied, not changed): the MLA
    layer asks for its decode and prefill backends with one config."""
    out = dict(facts)
    out["role"] = role
    _check_role(config, out)
    return out


def _check_role(config: Config, facts: dict[str, Any]) -> None:
    """The release's invariants over the role (MLA prefill only for MLA layers): their ConfigError."""
    plan, checks = _query_checks(rules_for(config.vllm))
    for clause, fires in checks:
        try:
            fired = fires(facts)
        except TypeError:  # a field left ANY compared with a number: not judged
            continue
        if fired:  # the error (fields left ANY are not judged there either)
            check_clauses(plan, facts, (clause,))


QueryChecks = tuple[tuple[Any, Callable[[Mapping[str, Any]], bool]], ...]
_QUERY: dict[int, tuple[RuleSet, Plan, QueryChecks]] = {}


def _query_checks(rules: RuleSet) -> tuple[Plan, QueryChecks]:
    """The rule set's invariant plan and its query clauses, each with its Check.fires compiled (once per rule set):
    every solve judges them."""
    got = _QUERY.get(id(rules))
    if got is None or got[0] is not rules:
        if len(_QUERY) > per_rules_limit():
            _QUERY.clear()
        plan = plan_of(rules, _COMMON)
        got = _QUERY[id(rules)] = (rules, plan, tuple((clause, _fires(clause[1])) for clause in plan.query_clauses))
    return got[1], got[2]


def _fires(check: Check) -> Callable[[Mapping[str, Any]], bool]:
    """check.fires as a closure over literals compiled by `_literal`: the same answers, fewer calls."""
    whens = tuple(_literal(w) for w in check.when)
    require = _literal(check.require)

    def fires(facts: Mapping[str, Any]) -> bool:
        for w in whens:
            if not w(facts):
                return False
        return not require(facts)
    return fires


def _literal(lit: Literal) -> Callable[[Mapping[str, Any]], bool]:
    """`lit` itself, or for an equality (the role, a flag) a closure computing what Pred answers."""
    p = lit.pred
    if (p.eq is _NO_EQ or p.in_ is not None or p.prefixes or p.not_in is not None or p.not_prefixes
            or p.min is not None or p.max is not None or p.multiple_of is not None or p.major_in is not None):
        return lit
    field, eq, none, negate = lit.field, p.eq, p.none, p.negate

    def holds(facts: Mapping[str, Any]) -> bool:
        v = facts.get(field)
        return (none if v is None else not (v != eq)) != negate  # noqa: SIM202 - Pred tests `value != eq`
    return holds


_COMMON = frozenset(CONFIG_FIELDS)
