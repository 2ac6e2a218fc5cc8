"""Config -> facts: the flat field -> value mapping the rules are written against.

Compute capability becomes vLLM's integer form (9.0 -> 90); the role of the query is added. Derived
facts (FA version, TRTLLM usability, R1 dims) are added by the compiled rules (CompiledRules.complete).
"""

from __future__ import annotations

import operator
from typing import Any

from ..config import ANY, FIELD_NAMES, Config, cc_int
from ..config.invariants import check_clauses, plan_of
from ..errors import ConfigError
from ..rules import rules_for
from ..rules._fields import CONFIG_FIELDS

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


def base_facts(config: Config, role: str) -> dict[str, Any]:
    """Config fields (ANY kept as ANY) plus the role; no derived facts."""
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
    plan = plan_of(rules_for(config.vllm), _COMMON)
    for clause in plan.query_clauses:  # the release's invariants over the role (MLA prefill only for MLA layers)
        try:
            fired = clause[1].fires(facts)
        except TypeError:  # a field left ANY compared with a number: not judged
            continue
        if fired:  # the error (fields left ANY are not judged there either)
            check_clauses(plan, facts, (clause,))
    return facts


_COMMON = frozenset(CONFIG_FIELDS)
