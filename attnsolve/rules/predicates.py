"""One field's predicate, from its TOML form (a value, a list or a table of predicate keys) to a Pred.

Why a module of its own: a predicate is the unit every condition, check and capability is made of;
its keys come from rules/schema.py ("predicate").
"""

from __future__ import annotations

from typing import Any, Iterable

from . import schema
from .model import Pred
from .toml_values import _bool, _cc_int, _int, _list


_PRED_KEYS = schema.keys("predicate")


def parse_pred(raw: Any, field: str) -> Pred:
    """Parse the TOML form of a predicate (scalar = equality, list = membership, table = parts)."""
    num = _cc_int if field == "compute_capability" else _int

    def split(values: Iterable[Any]) -> tuple[frozenset, tuple[str, ...]]:
        exact, prefixes = [], []
        for v in values:
            if isinstance(v, str) and v.endswith("*"):
                prefixes.append(v[:-1])
            else:
                exact.append(num(v) if field == "compute_capability" else v)
        return frozenset(exact), tuple(prefixes)

    if isinstance(raw, (bool, int, str)) and not isinstance(raw, dict):
        if isinstance(raw, str) and raw.endswith("*"):
            return Pred(prefixes=(raw[:-1],))
        return Pred(eq=num(raw) if field == "compute_capability" else raw)
    if isinstance(raw, list):
        exact, prefixes = split(raw)
        return Pred(in_=exact, prefixes=prefixes)
    if not isinstance(raw, dict):
        raise ValueError(f"expected a value, list or table, got {type(raw).__name__}")
    unknown = set(raw) - _PRED_KEYS
    if unknown:
        raise ValueError(f"unknown predicate key(s) {sorted(unknown)}; accepted: {sorted(_PRED_KEYS)}")
    kw: dict[str, Any] = {}
    if "in" in raw:
        kw["in_"], kw["prefixes"] = split(_list(raw["in"]))
    if "not_in" in raw:
        kw["not_in"], kw["not_prefixes"] = split(_list(raw["not_in"]))
    if "min" in raw:
        kw["min"] = num(raw["min"])
    if "max" in raw:
        kw["max"] = num(raw["max"])
    if "multiple_of" in raw:
        m = raw["multiple_of"]
        kw["multiple_of"] = tuple(_int(x) for x in (m if isinstance(m, list) else [m]))
        if any(x <= 0 for x in kw["multiple_of"]):
            raise ValueError("multiple_of needs positive integers")
    if "major_in" in raw:
        kw["major_in"] = frozenset(_int(x) for x in _list(raw["major_in"]))
    if "eq" in raw:
        kw["eq"] = num(raw["eq"]) if field == "compute_capability" else raw["eq"]
    if "none" in raw:
        kw["none"] = _bool(raw["none"])
    pred = Pred(**kw)
    if "present" in raw:
        present = _bool(raw["present"])
        if set(raw) != {"present"}:
            # `present = true` beside other keys: they already refuse an unset value (none = false)
            if not present or "none" in raw:
                raise ValueError("'present = false' cannot be combined with other predicate keys")
            return pred
        pred = Pred() if present else Pred().negated()
    return pred
