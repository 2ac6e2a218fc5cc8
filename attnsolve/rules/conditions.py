"""Conditions (`when` / `require` tables) lowered to single-field literals.

Why a module of its own: every rule that is conditional (a check, an entry, a message, a derived
case) reads its condition here. `any_of` / `not` become alternatives (DNF) where the first match
wins, or clauses (CNF) where every part must hold; a comparison of two fields becomes a synthesized
boolean derived fact, so the bitsets and the CSP only ever see one field per literal.
"""

from __future__ import annotations

from typing import Any, Iterable

from . import schema
from .model import Check, Derived, Literal, Pred
from .predicates import parse_pred
from .toml_values import _list


class _Known(set):
    """The field names a rule may test, plus the comparison facts synthesized while parsing
    (`{ eq_field = "x" }` becomes a boolean derived fact; see _field_literals)."""

    def __init__(self, names: Iterable[str] = ()):
        super().__init__(names)
        self.synth: dict[str, Derived] = {}

    def __sub__(self, other: Any) -> "_Known":  # keep .synth through the set algebra the loader does
        out = _Known(set(self) - set(other))
        out.synth = self.synth
        return out

    def __or__(self, other: Any) -> "_Known":
        out = _Known(set(self) | set(other))
        out.synth = self.synth
        return out


_COMPARE_KEYS = {"eq_field": "eq", "ne_field": "ne", "le_field": "le", "multiple_of_field": "multiple_of"}


def _field_literals(field: str, p: Any, known: set[str]) -> list[Literal]:
    """One field's predicate -> literals; a comparison with another field becomes a literal over a
    synthesized boolean derived fact `<field>_<op>_<other>` (computed like any derived fact, so the
    bitsets and the CSP see a single-field literal)."""
    if not (isinstance(p, dict) and set(p) & set(_COMPARE_KEYS)):
        return [Literal(field, parse_pred(p, field))]
    rest = {k: v for k, v in p.items() if k not in _COMPARE_KEYS}
    out = [Literal(field, parse_pred(rest, field))] if rest else []
    for key, op in _COMPARE_KEYS.items():
        if key not in p:
            continue
        other = p[key]
        if not isinstance(other, str) or other not in known:
            raise ValueError(f"{key} names no field: {other!r}")
        name = f"{field}_{op}_{other}"
        synth = getattr(known, "synth", None)
        if synth is None:
            raise ValueError(f"{key} is not accepted here")
        synth.setdefault(name, Derived(name, (False, True), (), doc=f"{field} {op} {other} (field comparison)",
                                       compute=(op, (field, other))))
        known.add(name)
        out.append(Literal(name, Pred(eq=True)))
    return out


def _formula(raw: Any, known: set[str]) -> tuple:
    """A `when` / `require` table -> ('and', [...]) over ('lit', Literal), ('or', [...]), ('not', f)."""
    if not isinstance(raw, dict):
        raise ValueError(f"expected a table of field = predicate, got {raw!r}")
    parts: list[tuple] = []
    for field, p in raw.items():
        if field == "any_of":
            if not isinstance(p, list) or not p:
                raise ValueError("any_of must be a non-empty list of tables")
            parts.append(("or", [_formula(x, known) for x in p]))
        elif field == "not":
            parts.append(("not", _formula(p, known)))
        elif field not in known:
            raise ValueError(f"unknown field {field!r}; known fields: {', '.join(sorted(known))}")
        else:
            parts.extend(("lit", lit) for lit in _field_literals(field, p, known))
    return ("and", parts)


def _nnf(f: tuple, neg: bool = False) -> tuple:
    tag = f[0]
    if tag == "lit":
        return ("lit", Literal(f[1].field, f[1].pred.negated())) if neg else f
    if tag == "not":
        return _nnf(f[1], not neg)
    kids = [_nnf(x, neg) for x in f[1]]
    return (("or" if tag == "and" else "and") if neg else tag, kids)


_MAX_TERMS = 4096


def _expand(f: tuple, outer: str) -> list[tuple[Literal, ...]]:
    """DNF (outer='or') or CNF (outer='and') of an NNF formula, as lists of literal tuples."""
    tag = f[0]
    if tag == "lit":
        return [(f[1],)]
    parts = [_expand(x, outer) for x in f[1]]
    if tag == outer:
        return [t for part in parts for t in part]
    terms: list[tuple[Literal, ...]] = [()]
    for part in parts:
        terms = [t + u for t in terms for u in part]
        if len(terms) > _MAX_TERMS:
            raise ValueError(f"any_of / not expand to more than {_MAX_TERMS} terms; simplify the condition")
    return terms


# Lowered conditions by the identity of their table: the releases' documents share every table an edit file does not
# touch (rules/overlay.py), so loading the 20 rule sets lowers most conditions once, not once per release. An entry
# keeps its table (the id stays that table's) and the fields it reads (a release that does not know one of them
# lowers it again, and raises as before); a condition comparing two fields synthesizes a derived fact in `known`
# as it is lowered, so it is not kept.
_DNF_MEMO: dict[int, tuple[Any, frozenset[str], tuple[tuple[Literal, ...], ...]]] = {}
_DNF_MEMO_LIMIT = 1 << 16


def _when_dnf(raw: Any, known: set[str]) -> list[tuple[Literal, ...]]:
    """A condition as alternatives, each a conjunction of single-field literals (first-match cases and
    message conditions become one entry per alternative, in order)."""
    if not raw or not isinstance(raw, dict):
        return _expand(_nnf(_formula(raw, known)), "or")
    hit = _DNF_MEMO.get(id(raw))
    if hit is not None and hit[0] is raw and hit[1] <= known:
        return list(hit[2])
    out = _expand(_nnf(_formula(raw, known)), "or")
    fields = frozenset(lit.field for alt in out for lit in alt)
    if not fields & getattr(known, "synth", {}).keys():
        if len(_DNF_MEMO) > _DNF_MEMO_LIMIT:
            _DNF_MEMO.clear()
        _DNF_MEMO[id(raw)] = (raw, fields, tuple(out))
    return out


def _literals(raw: Any, known_fields: set[str]) -> tuple[Literal, ...]:
    """A condition that must be one conjunction of literals (no any_of / not that needs alternatives)."""
    alts = _when_dnf(raw, known_fields)
    if len(alts) != 1:
        raise ValueError("any_of / not are not accepted here (the condition must be one conjunction)")
    return alts[0]


# A literal that never holds: a clause that is empty after lowering is an unconditional refusal.
_NEVER = Literal("backend", Pred(in_=frozenset()))


def _lower_check(reason: str, when: Any, require: Any, known: set[str], kind: str, group: int,
                 first: bool) -> list[Check]:
    """`not(when) or require` -> CNF clauses, each one Check (when = the negated other literals)."""
    f = ("or", [("not", _formula(when, known)), _formula(require, known)])
    out = []
    for clause in _expand(_nnf(f), "and"):
        if not clause:
            clause = (_NEVER,)
        when_lits = tuple(Literal(l.field, l.pred.negated()) for l in clause[:-1])
        out.append(Check(reason, clause[-1], when_lits, kind, group, first))
    return out


def _checks(raw: Any, known: set[str], kind: str = "combination", first: bool = False,
            group_base: int = 1) -> tuple[Check, ...]:
    out: list[Check] = []
    for i, c in enumerate(_list(raw)):
        if not isinstance(c, dict) or "reason" not in c or "require" not in c:
            raise ValueError(f"check #{i + 1} needs 'reason' and 'require' (and optional 'when')")
        extra = set(c) - schema.keys("check")
        if extra:
            raise ValueError(f"check #{i + 1}: unknown key(s) {sorted(extra)}")
        if not isinstance(c["reason"], str) or not c["reason"]:
            raise ValueError(f"check #{i + 1}: reason must be a non-empty string")
        if not c["require"]:
            raise ValueError(f"check #{i + 1}: require names no field")
        # a multi-field require is one clause per field, same reason (same group: reported once)
        # `at`: the check stands in for that generic check (its reason at that place; see _backend)
        at = c.get("at")
        out += _lower_check(c["reason"], c.get("when", {}), c["require"], known, at or kind, group_base + i,
                            first and not at)
    return tuple(out)


def _messages(raw: Any, known: set[str], key: str) -> tuple[tuple[str, tuple[Literal, ...]], ...]:
    """[{message, when}] -> ((message, literals), ...): warnings and start-up failures (an any_of / not
    condition becomes one entry per alternative; callers show a message once)."""
    out = []
    for i, w in enumerate(_list(raw)):
        if not isinstance(w, dict) or not isinstance(w.get("message"), str) or set(w) - {"message", "when"}:
            raise ValueError(f"{key} #{i + 1} needs 'message' (and optional 'when')")
        out += [(w["message"], alt) for alt in _when_dnf(w.get("when", {}), known)]
    return tuple(out)
