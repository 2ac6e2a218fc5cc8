"""[[invariants]]: facts about the fields that hold whatever backend is chosen.

Why a module of its own: an invariant is not a backend's check but a property of the question itself
(a platform field, a definition, or a clause that must never fire); each of its three forms has its
own refusals, reported here with the key that names it.
"""

from __future__ import annotations

from typing import Any

from . import schema
from .conditions import _literals, _lower_check
from .model import Invariant
from .problems import _Collector


def _invariants(raw: list[tuple[str, Any]], known: set[str], domains: dict[str, tuple[Any, ...]],
                col: _Collector) -> tuple[Invariant, ...]:
    """[[invariants]] -> Invariant, in file order; each key once. A platform field names a known field and
    known platforms; a clause is lowered like a backend check (its checks must never fire)."""
    out: list[Invariant] = []
    seen: dict[str, str] = {}
    platforms = set(domains.get("platform", ()))
    for i, (fname, g) in enumerate(raw):
        key, reason = g.get("key"), g.get("reason")
        loc = f"invariants.{key if isinstance(key, str) else '#' + str(i + 1)}"
        if not isinstance(key, str) or not key or not isinstance(reason, str) or not reason:
            col.add(fname, loc, "needs a key and a reason (why the invariant holds)")
            continue
        if key in seen:
            col.add(fname, loc, f"declared twice (also in {seen[key]})")
            continue
        seen[key] = fname
        if ("field" in g) == ("require" in g):
            col.add(fname, loc, "needs either field + platforms (a platform field), field + equals (a definition) "
                    "or require (a clause)")
            continue
        if "equals" in g:
            fld = g["field"]
            extra = sorted(set(g) & {"platforms", "unset", "implies_platform", "when"})
            try:
                lits = _literals(g["equals"], known)
            except ValueError as e:
                col.add(fname, f"{loc}.equals", str(e))
                continue
            if fld not in known or fld in ("platform", "role"):
                col.add(fname, f"{loc}.field", f"{fld!r} is not a field")
            elif extra or len(lits) != 1 or lits[0].field == fld:
                col.add(fname, loc, "a definition is field (a bool) + equals (one literal over another field) only")
            else:
                out.append(Invariant(key=key, reason=reason, field=fld, equals=lits[0]))
            continue
        if "field" in g:
            fld, plats = g["field"], tuple(g.get("platforms", ()))
            extra = sorted(set(g) & {"when", "require"})
            bad_plat = [p for p in plats if p not in platforms]
            if fld not in known or fld in ("platform", "role"):
                hit = schema.closest(fld, known)
                col.add(fname, f"{loc}.field", f"{fld!r} is not a field" + (f"; did you mean {hit!r}?" if hit else ""))
            elif not plats or bad_plat:
                col.add(fname, f"{loc}.platforms", f"needs known platforms ({', '.join(sorted(platforms))}), got {list(plats)}")
            elif extra:
                col.add(fname, loc, f"a platform field takes no {', '.join(extra)}")
            else:
                unset = g.get("unset")
                dom = domains.get(fld)
                if unset not in (None, "required") and dom is not None and unset not in dom:
                    col.add(fname, f"{loc}.unset", f"{unset!r} is not a value of {fld} {list(dom)}")
                    continue
                out.append(Invariant(key=key, reason=reason, field=fld, platforms=plats, required=unset == "required",
                                     default=None if unset == "required" else unset,
                                     implies_platform=bool(g.get("implies_platform", False))))
            continue
        extra = sorted(set(g) & {"platforms", "unset", "implies_platform"})
        if extra:
            col.add(fname, loc, f"a clause takes no {', '.join(extra)}")
            continue
        message = g.get("message", "")
        if not isinstance(message, str):
            col.add(fname, f"{loc}.message", "vLLM's refusal, a string")
            continue
        try:
            checks = tuple(_lower_check(reason, g.get("when", {}), g["require"], known, "invariant", i + 1, False))
        except ValueError as e:
            col.add(fname, loc, str(e))
            continue
        out.append(Invariant(key=key, reason=reason, checks=checks, message=message))
    return tuple(out)
