"""Which combinations of a unit's fields are configurations (the rule set's invariants, as Config judges them).

A sweep leaves out what Config or solve() would reject (attnsolve.sweep.EXCLUSIONS); each rule reads a few
fields, which are tied into one unit so the rule can be judged on its rows.
"""

from __future__ import annotations

from typing import Any, Iterable

from .config import ANY, FIELD_NAMES


def _valid_fields(rules: Any, ufields: list[str]) -> tuple[str, ...]:
    """The unit's fields `_valid` reads for it (the invariants touching the unit, scoped fields, the platform)."""
    loc = set(ufields)
    read: set[str] = set()
    for inv in rules.invariants:
        if loc & set(inv.fields):
            read |= set(inv.fields)
            if inv.kind == "platform_field":
                read.add("platform")
    scoped = _scoped(rules)
    if "platform" in loc:
        read |= set(scoped) | {"platform"}
    for name in loc & scoped.keys():
        read |= {name, "platform"}
    for name, fills in _filled(rules).items():
        if name in loc:
            read |= {name, *fills}
    if any(inv.kind == "platform_field" and inv.default is not None for inv in rules.invariants):
        read.add("platform")  # normalise: a value Config fills in from the platform
    return tuple(f for f in ufields if f in read)


def _pairs(rules: Any) -> list[tuple[str, ...]]:
    """Fields an invariant ties together (enumerated in one unit so the invariant can be judged); a declared
    field scoped to some platforms (cpu_amx) is tied to the platform, whose value decides whether it may be set."""
    return [*(inv.fields for inv in rules.invariants), *((name, "platform") for name in _scoped(rules)),
            *((name, *fills) for name, fills in _filled(rules).items())]


def _filled(rules: Any) -> dict[str, tuple[str, ...]]:
    """The rule-declared fields (not the common ones) whose unset value `defaults` cases read off other fields, with
    those fields (0.21's mla_prefill_backend, filled by the deprecated prefill switches): tied into one unit, where the
    field left None while a case fills it is the filled row again."""
    return {name: decl.default_reads for name, decl in rules.fields.items() if decl.defaults and name not in FIELD_NAMES}


def _scoped(rules: Any) -> dict[str, Any]:
    """The rule-declared fields (not the common ones) scoped to some platforms: Config refuses a value other
    than the declared default off them (cpu_amx=True on cuda)."""
    return {name: decl for name, decl in rules.fields.items() if decl.platforms and name not in FIELD_NAMES}


def _valid(rules: Any, facts: dict[str, Any], local: Iterable[str], free: Iterable[str]) -> bool:
    """The rule set's invariants (Config's and solve's validity rules), for those that involve a field of
    this unit. A field with an assumed value (rocm_arch) left None on its platform is a duplicate when the
    field is free."""
    loc = set(local)
    for inv in rules.invariants:
        if not loc & set(inv.fields):
            continue
        if inv.kind == "definition":
            b, v = facts.get(inv.field), facts.get(inv.equals.field)
            if v is not None and b is not None and b != inv.equals.pred(v):
                return False
        elif inv.field:
            v, on = facts.get(inv.field), facts["platform"] in inv.platforms
            if v is not None and not on:
                return False
            if v is None and on and (inv.required or (inv.default is not None and inv.field in free)):
                return False
        elif any(c.fires(facts) for c in inv.checks if all(f in facts for f in c.fields)):
            return False
    free_ = set(free)
    for name, fills in _filled(rules).items():  # None where a case fills it: Config takes the filled value
        if name in loc and name in free_ and facts.get(name) is None and all(f in facts for f in fills) \
                and rules.fields[name].unset_value(facts) is not None:
            return False
    scoped = _scoped(rules)
    for name in (scoped if "platform" in loc else loc & scoped.keys()):  # set off its platforms: Config refuses it
        decl = scoped[name]
        if facts.get(name) not in (decl.default, ANY) and facts.get("platform") not in decl.platforms:
            return False
    return True
