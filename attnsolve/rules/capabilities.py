"""Generic checks (vLLM's validate_configuration, in its order) and the capabilities that feed them.

Why a module of its own: a backend declares what it supports (dtypes, head sizes, ...); the rule set's
[[generic_checks]] say how each capability becomes vLLM's reason. Keeping both here means a backend's
checks come out in vLLM's order with vLLM's text, whatever order its file lists them in.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .conditions import _literals
from .model import GENERIC_FORMS, Capabilities, Check, GenericCheck, Literal, Pred
from .predicates import parse_pred
from .problems import _Collector
from .toml_values import _bool, _int, _list


def _generic_checks(raw: list[tuple[str, Any]], known: set[str], col: _Collector) -> tuple[GenericCheck, ...]:
    """[[generic_checks]] -> GenericCheck, in file order (vLLM's order); each key once."""
    out: list[GenericCheck] = []
    seen: dict[str, str] = {}
    for fname, g in raw:
        loc = f"generic_checks.{g.get('key', '?')}"
        key, form, fld = g.get("key"), g.get("form"), g.get("field")
        if not isinstance(key, str) or form not in GENERIC_FORMS:
            col.add(fname, loc, f"needs a key and a form ({', '.join(GENERIC_FORMS)}), got form {form!r}")
            continue
        if key in seen:
            col.add(fname, loc, f"declared twice (also in {seen[key]})")
            continue
        seen[key] = fname
        if form != "flag" and fld not in known:
            col.add(fname, f"{loc}.field", f"{fld!r} is not a known field")
            continue
        if form == "matches" and not (g.get("reason_true") and g.get("reason_false")):
            col.add(fname, loc, "form 'matches' needs reason_true and reason_false")
            continue
        if form not in ("matches", "flag") and not g.get("reason"):
            col.add(fname, loc, f"form {form!r} needs a reason (vLLM's text)")
            continue
        try:
            when = _literals(g.get("when", {}), known)
        except ValueError as e:
            col.add(fname, f"{loc}.when", str(e))
            continue
        reads = g.get("variant_read_when")
        try:
            variant_reads = None if reads is None else tuple(_literals(alt, known) for alt in reads)
        except (ValueError, TypeError, AttributeError) as e:
            col.add(fname, f"{loc}.variant_read_when", f"expected a list of conditions: {e}")
            continue
        only = tuple(g.get("variant_reads", ()))
        unknown = [n for n in only if n not in known]
        if unknown or (only and reads is None):
            col.add(fname, f"{loc}.variant_reads", f"{unknown[0]!r} is not a known field or derived fact" if unknown
                    else "names what a variant_read_when consultation computes: give variant_read_when too")
            continue
        out.append(GenericCheck(key=key, field=fld or "", form=form, reason=g.get("reason", ""),
                                reason_true=g.get("reason_true", ""), reason_false=g.get("reason_false", ""),
                                default=_generic_default(g.get("default"), form),
                                unset_passes=bool(g.get("unset_passes", False)),
                                roles=tuple(g.get("roles", ())), when=when, exact_key=g.get("exact_key", ""),
                                variant_read_when=variant_reads, variant_reads=only))
    return tuple(out)


def _generic_default(v: Any, form: str) -> Any:
    """A generic check's default (the base class's value): a list becomes a tuple like a declared one."""
    if isinstance(v, list):
        if form not in ("values", "multiple_of", "predicate"):
            raise ValueError(f"a list default needs form values / multiple_of / predicate, not {form!r}")
        return tuple(v)
    return v


def _caps(raw: dict, generic: tuple[GenericCheck, ...]) -> Capabilities:
    """A backend's (or variant's) capability keys, parsed by the form of the generic check they feed."""
    items: list[tuple[str, Any]] = []
    for g in generic:
        if g.unset_passes and g.key + "_unset_passes" in raw:
            items.append((g.key + "_unset_passes", _bool(raw[g.key + "_unset_passes"])))
        if g.exact_key and g.exact_key in raw:
            vals = _list(raw[g.exact_key])
            items.append((g.exact_key, tuple(_int(x) for x in vals) if g.form == "multiple_of" else tuple(vals)))
        if g.key not in raw:
            continue
        v = raw[g.key]
        if g.form == "predicate":
            items.append((g.key, parse_pred(v, g.field)))
        elif g.form == "values":
            vals = _list(v)
            if not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in vals):
                raise ValueError(f"{g.key} must be a list of values, got {v!r}")
            items.append((g.key, tuple(vals)))
        elif g.form == "multiple_of":
            sizes = tuple(_int(x) for x in _list(v))
            if any(x <= 0 for x in sizes):
                raise ValueError(f"{g.key} must be positive")
            items.append((g.key, sizes))
        else:
            items.append((g.key, _bool(v)))
    return Capabilities(tuple(items))


def expand_checks(caps: Capabilities, role: str, generic: tuple[GenericCheck, ...],
                  when: tuple[Literal, ...] = ()) -> list[Check]:
    """Declared capabilities -> vLLM's validate_configuration reasons, in the generic checks' order."""
    out: list[Check] = []
    for g in generic:
        if g.roles and role not in g.roles:
            continue
        value = caps.get(g.key)
        cond = (*when, *g.when)
        if g.form == "flag":
            continue
        unset_passes = caps.get(g.key + "_unset_passes", g.unset_passes)
        exact = caps.get(g.exact_key) if g.exact_key else None
        if exact is not None:  # an exact list replaces the capability (same place, same reason)
            out.append(Check(g.reason, Literal(g.field, Pred(in_=frozenset(exact), none=unset_passes)), cond, g.key))
            continue
        value = g.default if value is None else value
        if value is None:
            continue
        if g.form == "predicate":
            if isinstance(value, tuple):
                value = parse_pred(list(value), g.field)
            pred = value if not unset_passes else replace(value, none=True)
            out.append(Check(g.reason, Literal(g.field, pred), cond, g.key))
        elif g.form == "values":
            pred = parse_pred(list(value), g.field)
            out.append(Check(g.reason, Literal(g.field, replace(pred, none=True) if unset_passes else pred), cond, g.key))
        elif g.form == "multiple_of":
            out.append(Check(g.reason, Literal(g.field, Pred(multiple_of=value, none=unset_passes)), cond, g.key))
        elif g.form == "supports":
            if not value:
                out.append(Check(g.reason, Literal(g.field, Pred(eq=False)), cond, g.key))
        elif g.form == "matches":
            if value:
                out.append(Check(g.reason_false, Literal(g.field, Pred(eq=True)), cond, g.key))
            else:
                out.append(Check(g.reason_true, Literal(g.field, Pred(eq=False)), cond, g.key))
    return out
