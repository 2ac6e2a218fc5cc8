"""Load the TOML rules into a validated RuleSet.

Loading collects every problem into one RulesError (file, backend, key) instead of stopping at the
first, and expands each backend's declared capabilities into vLLM's reasons in vLLM's order.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

from . import schema
from .model import (
    MlaPrefill, ModelRoute, Note, Rewrite, RouteKV,
    FIELD_CATEGORIES, FIELD_KINDS, GENERIC_FORMS, FieldDecl, GenericCheck, Invariant, Backend, Capabilities, Check, Derived, DerivedCase, Entry, Literal, Pred, PriorityList, RuleSet, Variant,
)

# One folder per vLLM release modelled: attnsolve/rules/vllm-<major.minor>/ (see rule_set_dirs()).
RULES_ROOT = Path(__file__).parent
RULES_DIR = RULES_ROOT / "vllm-0.17"

# Fields that exist besides the Config fields: the role of the query.
EXTRA_FIELDS = {"role": ("decode", "mla_prefill")}
# Facts that exist only while a platform step runs (never Config fields): the variant a model route
# chose (model_route_kv) and the decode backend an MLA prefill step follows (mla_prefill.skips).
CONTEXT_FIELDS = ("route_variant", "decode_backend", "selected")

# Key sets come from the one table of known keys, rules/schema.py KEYS.
_BACKEND_KEYS = schema.keys("backend")
# Platform-level keys ([platforms.X], shared by all of X's lists).
_PLATFORM_KEYS = schema.keys("platform")
_PRED_KEYS = schema.keys("predicate")
_ROLES = ("decode", "mla_prefill")


class RulesError(ValueError):
    """The rules are malformed; `.problems` lists every (file, location, message) found."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = tuple(problems)
        lines = [f"{len(problems)} problem(s) in the attention rules:"]
        lines += [f"  {f}: {loc}: {msg}" for f, loc, msg in problems]
        super().__init__("\n".join(lines))


class _Collector:
    def __init__(self) -> None:
        self.problems: list[tuple[str, str, str]] = []

    def add(self, file: str, loc: str, msg: str) -> None:
        self.problems.append((file, loc, msg))


def _cc_int(value: Any) -> int:
    """'9.0' / 9.0 / '12.1' -> 90 / 121."""
    if isinstance(value, bool):
        raise ValueError(f"expected a compute capability like '9.0', got {value!r}")
    if isinstance(value, int):
        return value * 10 if value < 20 else value
    text = str(value)
    major, _, minor = text.partition(".")
    if not major.isdigit() or (minor and not minor.isdigit()) or len(minor) > 1:
        raise ValueError(f"expected a compute capability like '9.0', got {value!r}")
    return int(major) * 10 + (int(minor) if minor else 0)


def cc_from_text(value: Any) -> int | None:
    """A capability fact ("9.4", 9.4, 94) -> vLLM's integer form; None when unset or not a capability."""
    if value is None:
        return None
    try:
        return _cc_int(value)
    except ValueError:
        return None


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


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected an integer, got {v!r}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _list(v: Any) -> list:
    if not isinstance(v, list):
        raise ValueError(f"expected a list, got {v!r}")
    return v


def _str_list(v: Any) -> tuple[str, ...]:
    items = _list(v)
    if not all(isinstance(x, str) for x in items):
        raise ValueError(f"expected a list of strings, got {v!r}")
    return tuple(items)


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


_COMPARE_KEYS = {"eq_field": "eq", "ne_field": "ne", "multiple_of_field": "multiple_of"}


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


def _when_dnf(raw: Any, known: set[str]) -> list[tuple[Literal, ...]]:
    """A condition as alternatives, each a conjunction of single-field literals (first-match cases and
    message conditions become one entry per alternative, in order)."""
    return _expand(_nnf(_formula(raw, known)), "or")


def _literals(raw: Any, known_fields: set[str]) -> tuple[Literal, ...]:
    """A condition that must be one conjunction of literals (no any_of / not that needs alternatives)."""
    alts = _when_dnf(raw, known_fields)
    if len(alts) != 1:
        raise ValueError("any_of / not are not accepted here (the condition must be one conjunction)")
    return alts[0]


# The reason of an entry's `when` guard: a candidate it refuses is skipped silently (not reported as rejected).
SKIP_REASON = "(entry skipped: its condition does not hold)"

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
        out.append(GenericCheck(key=key, field=fld or "", form=form, reason=g.get("reason", ""),
                                reason_true=g.get("reason_true", ""), reason_false=g.get("reason_false", ""),
                                default=_generic_default(g.get("default"), form),
                                unset_passes=bool(g.get("unset_passes", False)),
                                roles=tuple(g.get("roles", ())), when=when, exact_key=g.get("exact_key", "")))
    return tuple(out)


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
        try:
            checks = tuple(_lower_check(reason, g.get("when", {}), g["require"], known, "invariant", i + 1, False))
        except ValueError as e:
            col.add(fname, loc, str(e))
            continue
        out.append(Invariant(key=key, reason=reason, checks=checks))
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


def load_rules(path: str | Path | None = None, *, check_structure: bool = True) -> RuleSet:
    """Load and validate the rules in directory `path` (default: the packaged rules).

    check_structure runs the networkx graph checks (inheritance cycles, dangling parents,
    priority entries naming no backend, backends in no list); the packaged rules are checked
    by the test suite, so the CLI can skip importing networkx on its fast start-up path.
    """
    from ..safe_io import RULES_FILE_MAX_BYTES, FileProblem, read_text
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise RulesError([(type(path).__name__, "-", "expected the path of a folder of rule files (*.toml)")])
    root = Path(path) if path is not None else RULES_DIR
    if not root.is_dir():
        raise RulesError([(str(root), "-", "not a directory of rule files (*.toml)")])
    try:
        files = sorted(root.glob("*.toml"))
    except OSError as e:
        raise RulesError([(str(root), "-", f"cannot list the folder: {e.strerror or e}")]) from None
    col = _Collector()
    docs: list[tuple[str, dict]] = []
    if not any(f.name == "domains.toml" for f in files):
        raise RulesError([(str(root), "-", "missing domains.toml (field domains and GPU table)")])
    for f in sorted(files, key=lambda p: (p.name != "domains.toml", p.name)):
        try:  # regular files only, size-capped, never blocking on a FIFO (safe_io)
            docs.append((f.name, tomllib.loads(read_text(f, max_bytes=RULES_FILE_MAX_BYTES))))
        except FileProblem as e:
            col.add(f.name, "-", f"cannot read {f}: {e.reason}")
        except tomllib.TOMLDecodeError as e:
            col.add(f.name, "-", f"not valid TOML: {e}")
        except RecursionError:
            col.add(f.name, "-", "not valid TOML: nested too deeply")
        except ValueError as e:  # an integer of more than 4,300 digits
            col.add(f.name, "-", "not valid TOML: " + ("a number of more than 4,300 digits" if "4300" in str(e) else str(e)))
    if col.problems:
        raise RulesError(col.problems)
    _check_shapes(docs, col)
    if col.problems:
        raise RulesError(col.problems)
    try:
        return _build(docs, col, check_structure, tuple(str(f) for f in files))
    except RulesError:
        raise
    except (TypeError, AttributeError, KeyError, ValueError, RecursionError) as e:
        # Every shape the loader knows is checked with a precise message above; this is the net for
        # a shape it does not know, so a malformed file never escapes as a traceback.
        raise RulesError([*col.problems, (", ".join(f.name for f in files), "-",
                                          f"malformed rules ({type(e).__name__}: {e})")]) from None


def _check_shapes(docs: list[tuple[str, dict]], col: _Collector) -> None:
    """Every key known and of its kind, in every file (schema.KEYS), before anything is built."""
    domains: dict[str, Any] = {}
    derived: dict[str, Any] = {}
    declared: dict[str, Any] = {}
    for _, doc in docs:
        if isinstance(doc.get("fields"), dict):
            for k, v in doc["fields"].items():
                if isinstance(v, dict):
                    declared[k] = v
                    if "values" in v:
                        domains[k] = v["values"]
                else:
                    domains[k] = v
        if isinstance(doc.get("derived"), dict):
            derived.update(doc["derived"])
    # a damaged file may hold any value here: only a list is read (the shape checker reports the rest)
    generic = [g for _, doc in docs if isinstance(doc.get("generic_checks"), list) for g in doc["generic_checks"]]
    checker = schema.ShapeChecker(col.add, schema.field_kinds(domains, derived, (*EXTRA_FIELDS, *CONTEXT_FIELDS), declared),
                                  schema.capability_kinds(generic))
    parents: dict[str, tuple[str, Any]] = {}
    for fname, doc in docs:
        checker.table(fname, "", doc, "top")
        checker.domains(fname, doc.get("fields"))
        checker.aliases(fname, doc.get("aliases"))
        for name, b in (doc.get("backends") or {}).items() if isinstance(doc.get("backends"), dict) else ():
            if isinstance(b, dict) and isinstance(b.get("parent"), str):
                parents[name] = (fname, b["parent"])
    for name, (fname, _) in parents.items():  # chain length, followed iteratively (cycles stop it)
        depth, cur, seen = 0, name, {name}
        while cur in parents and depth <= schema.MAX_PARENT_DEPTH:
            cur = parents[cur][1]
            depth += 1
            if cur in seen:
                break
            seen.add(cur)
        if depth == schema.MAX_PARENT_DEPTH + 1 and not any(p[1] == name for p in parents.values()):
            col.add(fname, f"backends.{name}.parent",
                    f"inheritance chain longer than {schema.MAX_PARENT_DEPTH} parents (the rules use at most 2)")


def _build(docs: list[tuple[str, dict]], col: _Collector, check_structure: bool, sources: tuple[str, ...]) -> RuleSet:
    from ._fields import CONFIG_FIELDS  # field names known to Config, kept beside the loader

    domains: dict[str, tuple[Any, ...]] = {}
    aliases: dict[str, dict[str, str]] = {}
    gpus: dict[str, dict[str, Any]] = {}
    generations: dict[str, str] = {}
    raw_backends: dict[str, tuple[str, dict]] = {}
    raw_derived: dict[str, tuple[str, dict]] = {}
    raw_platforms: dict[str, list[tuple[str, dict]]] = {}
    raw_fields: dict[str, tuple[str, dict]] = {}
    top_keys = schema.keys("top")

    def table(fname: str, where: str, value: Any) -> dict:
        """`value` if it is a table, else {} with a problem naming file and key."""
        if isinstance(value, dict):
            return value
        col.add(fname, where, f"must be a table, got {type(value).__name__}")
        return {}

    release: dict[str, str] = {}
    for fname, doc in docs:
        if isinstance(doc.get("ruleset"), dict):
            release.update({k: v for k, v in doc["ruleset"].items() if isinstance(v, str)})
        for key in set(doc) - top_keys:
            col.add(fname, key, f"unknown top-level table; accepted: {', '.join(sorted(top_keys))}")
        for k, v in table(fname, "fields", doc.get("fields", {})).items():
            if isinstance(v, dict):
                if k in raw_fields:
                    col.add(fname, f"fields.{k}", f"declared twice (also in {raw_fields[k][0]})")
                raw_fields[k] = (fname, v)
                if "values" not in v:
                    continue
                v = v["values"]
            if not isinstance(v, list) or not v:
                col.add(fname, f"fields.{k}", "must be a non-empty list")
            elif not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
                col.add(fname, f"fields.{k}", "values must be strings or integers")
            else:
                domains[k] = tuple(v)
        for k, v in table(fname, "aliases", doc.get("aliases", {})).items():
            v = table(fname, f"aliases.{k}", v)
            bad = [a for a, b in v.items() if not isinstance(b, str)]
            if bad:
                col.add(fname, f"aliases.{k}.{bad[0]}", "must be a string")
                continue
            aliases.setdefault(k, {}).update({str(a).lower(): b for a, b in v.items()})
        for k, v in table(fname, "gpus", doc.get("gpus", {})).items():
            v = table(fname, f"gpus.{k}", v)
            if v and not isinstance(v.get("platform"), str):
                col.add(fname, f"gpus.{k}.platform", "must be a platform name")
                continue
            if v:
                gpus[k] = v
        for k, v in table(fname, "generations", doc.get("generations", {})).items():
            try:
                _cc_int(k)
            except ValueError as e:
                col.add(fname, f"generations.{k}", str(e))
                continue
            generations[k] = str(v)
        for kind, raw in (("derived", raw_derived), ("backends", raw_backends)):
            for name, d in table(fname, kind, doc.get(kind, {})).items():
                if name in raw:
                    col.add(fname, f"{kind}.{name}", f"defined twice (also in {raw[name][0]})")
                if not isinstance(d, dict):
                    col.add(fname, f"{kind}.{name}", "must be a table")
                    continue
                raw[name] = (fname, d)
        for plat, p in table(fname, "platforms", doc.get("platforms", {})).items():
            if not isinstance(p, dict):
                col.add(fname, f"platforms.{plat}", "must be a table")
                continue
            if not isinstance(p.get("lists", []), list) or not all(isinstance(x, dict) for x in p.get("lists", [])):
                col.add(fname, f"platforms.{plat}.lists", "must be an array of tables ([[platforms.X.lists]])")
                continue
            raw_platforms.setdefault(plat, []).append((fname, p))

    for required in ("dtype", "kv_cache_dtype", "block_size", "attn_type", "platform", "flash_attn_version", "rocm_arch"):
        if required not in domains:
            col.add("domains.toml", f"fields.{required}", "missing")
    for fld, table_ in aliases.items():
        for a, target in table_.items():
            if fld in domains and target not in domains[fld]:
                col.add("domains.toml", f"aliases.{fld}.{a}", f"target {target!r} not in fields.{fld} {list(domains[fld])}")
    for gname, g in gpus.items():
        if g.get("platform") not in domains.get("platform", ()):
            col.add("domains.toml", f"gpus.{gname}.platform", f"{g.get('platform')!r} not in fields.platform {list(domains.get('platform', ()))}")
        if "compute_capability" in g:
            try:
                _cc_int(g["compute_capability"])
            except ValueError as e:
                col.add("domains.toml", f"gpus.{gname}.compute_capability", str(e))
        if "rocm_arch" in g and g["rocm_arch"] not in domains.get("rocm_arch", ()):
            col.add("domains.toml", f"gpus.{gname}.rocm_arch", f"{g['rocm_arch']!r} not in fields.rocm_arch")
    known: set[str] = _Known(set(CONFIG_FIELDS) | set(raw_derived) | set(EXTRA_FIELDS) | set(CONTEXT_FIELDS)
                             | set(raw_fields))
    field_decls = _field_decls(raw_fields, domains, col, known)
    generic = _generic_checks([(fname, g) for fname, doc in docs for g in (doc.get("generic_checks") or [])
                               if isinstance(g, dict)], known, col)
    invariants = _invariants([(fname, g) for fname, doc in docs for g in (doc.get("invariants") or [])
                              if isinstance(g, dict)], known, domains, col)
    if not generic:
        col.add("domains.toml", "generic_checks", "missing: the rule set declares no [[generic_checks]] "
                "(vLLM's validate_configuration checks, in order)")

    derived: dict[str, Derived] = {}
    for name, (fname, d) in raw_derived.items():
        try:
            local_tables: dict[str, dict] = {}
            for key in ("sums", "quotients", "products"):
                t = d.get(key, {})
                if not isinstance(t, dict) or not all(
                        isinstance(v, list) and v and all(f in known for f in v) for v in t.values()):
                    raise ValueError(f"{key} must map a name to a list of known fields")
                if key == "quotients" and not all(len(v) == 2 for v in t.values()):
                    raise ValueError("quotients must map a name to [dividend, divisor]")
                local_tables[key] = t
            local_names = {n for t in local_tables.values() for n in t}
            cases = []
            for c in _list(d.get("cases")):
                w = c.get("warning")
                if isinstance(w, list):
                    w = _str_list(w)
                elif w is not None and not isinstance(w, str):
                    raise ValueError("a case warning is a string or a list of strings")
                # an any_of / not condition becomes one case per alternative, in order (first match wins)
                for alt in _when_dnf(c.get("when", {}), (known - {name}) | local_names):
                    cases.append(DerivedCase(alt, c["value"], w))
            if not cases or cases[-1].when:
                raise ValueError("the last case must have no 'when' (the default)")
            values = tuple(_list(d.get("values")))
            bad = [c.value for c in cases if c.value not in values]
            if bad:
                raise ValueError(f"case value(s) {bad} not in values {list(values)}")
            derived[name] = Derived(name, values, tuple(cases), d.get("doc", ""),
                                    *(tuple((k, tuple(v)) for k, v in local_tables[t].items())
                                      for t in ("sums", "quotients", "products")))
        except (ValueError, KeyError, TypeError) as e:
            col.add(fname, f"derived.{name}", str(e))

    # Inheritance: resolve parents first (a cycle or a dangling parent is reported, not looped on).
    resolved: dict[str, dict] = {}

    def resolve(name: str, trail: tuple[str, ...]) -> dict | None:
        if name in resolved:
            return resolved[name]
        fname, b = raw_backends[name]
        parent = b.get("parent")
        if parent is None:
            resolved[name] = dict(b)
            return resolved[name]
        if len(trail) > schema.MAX_PARENT_DEPTH:
            col.add(fname, f"backends.{name}.parent", f"inheritance chain deeper than {schema.MAX_PARENT_DEPTH} "
                    f"({' -> '.join(trail[:3])} -> ...)")
            return None
        if parent in trail:
            col.add(fname, f"backends.{name}.parent", "inheritance cycle: " + " -> ".join((*trail, parent)))
            return None
        if parent not in raw_backends:
            col.add(fname, f"backends.{name}.parent", f"names no backend: {parent!r}")
            return None
        base = resolve(parent, (*trail, parent))
        if base is None:
            return None
        merged = {k: v for k, v in base.items() if k not in ("abstract", "summary", "explicit_only")}
        for k, v in b.items():
            if k == "checks":
                merged["checks"] = list(base.get("checks", [])) + list(v)
            elif k == "variants" and isinstance(v, dict) and isinstance(base.get("variants"), dict):
                merged["variants"] = {**base["variants"], **v}  # a child overrides its parent's variants by name
            else:
                merged[k] = v
        resolved[name] = merged
        return merged

    backends: dict[str, Backend] = {}
    abstract: set[str] = set()
    # the rule set's own capability keys (its generic checks), accepted on backends and variants
    cap_keys = {k for g in generic for k in (g.key, g.key + "_unset_passes" if g.unset_passes else "", g.exact_key) if k}
    for name, (fname, b) in raw_backends.items():
        loc = f"backends.{name}"
        unknown = set(b) - _BACKEND_KEYS - cap_keys
        if unknown:
            col.add(fname, loc, f"unknown key(s) {sorted(unknown)}; accepted: {', '.join(sorted(_BACKEND_KEYS))}")
            continue
        if "alias_of" in b:  # built after the loop, from its target
            if set(b) - {"alias_of", "summary"}:
                col.add(fname, loc, "an alias (alias_of) takes no other keys besides summary")
            continue
        full = resolve(name, (name,))
        if full is None:
            continue
        if full.get("abstract"):
            abstract.add(name)
            continue
        try:
            # an MLA prefill backend's validate_configuration lists every failing check (its own registry)
            backends[name] = _backend(name, full, fname, known, domains, derived, generic,
                                      first=release.get("combination_reasons") == "first"
                                      and full.get("role") != "mla_prefill")
        except (ValueError, KeyError, TypeError) as e:
            col.add(fname, loc, str(e))

    lists: list[PriorityList] = []
    for plat, parts in raw_platforms.items():
        settings: dict[str, Any] = {}
        for fname, p in parts:
            for k, v in p.items():
                if k == "lists":
                    continue
                if k not in _PLATFORM_KEYS:
                    col.add(fname, f"platforms.{plat}.{k}", f"unknown key; accepted: {', '.join(sorted(_PLATFORM_KEYS))}")
                    continue
                if k in _LIST_SETTINGS:  # lists of rules: concatenated across files, in file order
                    settings[k] = [*settings.get(k, []), *v] if isinstance(v, list) else v
                    continue
                if k in settings and settings[k] != v:
                    col.add(fname, f"platforms.{plat}.{k}", f"conflicts with an earlier value {settings[k]!r}")
                settings[k] = v
        for fname, p in parts:
            for i, raw_list in enumerate(p.get("lists", [])):
                loc = f"platforms.{plat}.lists[{i}]"
                try:
                    lists.append(replace(_priority_list(plat, raw_list, settings, known), source=fname))
                except (ValueError, KeyError, TypeError) as e:
                    col.add(fname, loc, str(e))
        if plat not in domains.get("platform", ()):
            col.add(parts[0][0], f"platforms.{plat}", f"platform not in fields.platform {list(domains.get('platform', ()))}")

    for name, d in getattr(known, "synth", {}).items():  # field comparisons found while parsing
        derived.setdefault(name, d)
    derived = _ordered_derived(derived, col)
    # an alias resolves to its target: same capabilities, reported under the target's name
    for name, (fname, b) in raw_backends.items():
        target = b.get("alias_of")
        if target is None:
            continue
        if target not in backends or backends[target].alias_of:
            col.add(fname, f"backends.{name}.alias_of", f"names no (non-alias) backend: {target!r}")
            continue
        backends[name] = replace(backends[target], name=name, alias_of=target, source=fname, explicit_only=True,
                                 summary=str(b.get("summary", f"alias of {target}")))
    rules = RuleSet(domains=domains, aliases=aliases, gpus=gpus, generations=generations, derived=derived,
                    backends=backends, lists=tuple(lists), sources=sources, fields=field_decls, generic_checks=generic,
                    invariants=invariants,
                    vllm=release.get("vllm", ""), read_from=release.get("read_from", ""),
                    summary=release.get("summary", ""), settings=dict(release))
    _check_references(rules, abstract, col)
    if field_decls:  # a set that declares its fields must declare every common field its rules read
        from ._fields import CONFIG_FIELDS as _COMMON
        used: dict[str, None] = {}
        for b in backends.values():
            for c in b.checks:
                used.update(dict.fromkeys(c.fields))
        for pl in lists:
            used.update(dict.fromkeys(lit.field for lit in pl.when))
            for case in (*pl.start_block_size, *pl.start_backend):  # start-up rules read fields too
                used.update(dict.fromkeys(lit.field for lit in case.when))
            for _, when in (*pl.startup_failures, *pl.request_errors):
                used.update(dict.fromkeys(lit.field for lit in when))
        for d in derived.values():
            used.update(dict.fromkeys(d.inputs))
        for f in used:
            if f in _COMMON and f not in field_decls:
                hit = schema.closest(f, [n for n in field_decls if n not in used])
                col.add(next((fn for fn, _ in raw_fields.values()), "fields.toml"), f"fields.{f}",
                        "not declared, but the rules read it (a release that declares its fields declares them all)"
                        + (f"; {hit!r} is declared and read by nothing: a typo?" if hit else ""))
    if check_structure and not col.problems:
        from .structure import check_structure as _graph_check
        for problem in _graph_check(rules, {n: b.get("parent") for n, (_, b) in raw_backends.items()},
                                    {n: f for n, (f, _) in raw_backends.items()}, abstract):
            col.add(*problem)
    if col.problems:
        raise RulesError(col.problems)
    return rules


def _ordered_derived(derived: dict[str, Derived], col: _Collector) -> dict[str, Derived]:
    """Derived facts in dependency order (a fact after every derived fact it reads), so one pass in
    order evaluates derived facts that read derived facts; a cycle is a problem."""
    out: dict[str, Derived] = {}
    state: dict[str, int] = {}

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            col.add("-", f"derived.{name}", "derived facts read each other in a cycle: " + " -> ".join((*trail, name)))
            return
        state[name] = 1
        for f in derived[name].inputs:
            if f in derived:
                visit(f, (*trail, name))
        state[name] = 2
        out[name] = derived[name]

    for name in derived:
        visit(name, ())
    return out


def _field_decls(raw: dict[str, tuple[str, dict]], domains: dict[str, tuple[Any, ...]],
                 col: _Collector, known: set[str]) -> dict[str, FieldDecl]:
    """[fields.NAME] tables -> FieldDecl, each checked against its kind (an enum needs its values)."""
    out: dict[str, FieldDecl] = {}
    for name, (fname, d) in raw.items():
        kind = d.get("kind")
        if kind not in FIELD_KINDS:
            col.add(fname, f"fields.{name}.kind", f"{kind!r} is not a field kind; accepted: {', '.join(FIELD_KINDS)}")
            continue
        category = d.get("category", "setting")
        if category not in FIELD_CATEGORIES:
            col.add(fname, f"fields.{name}.category", f"{category!r}; accepted: {', '.join(FIELD_CATEGORIES)}")
            continue
        if kind == "enum" and name not in domains:
            col.add(fname, f"fields.{name}", "an enum field needs its values (values = [...] here or in [fields] of domains.toml)")
            continue
        default = d.get("default")
        if kind == "bool" and default is not None and not isinstance(default, bool):
            col.add(fname, f"fields.{name}.default", f"a bool field's default is true or false, got {default!r}")
            continue
        if kind == "enum" and default is not None and default not in domains.get(name, ()):
            col.add(fname, f"fields.{name}.default", f"{default!r} not in its values {list(domains.get(name, ()))}")
            continue
        flags = tuple(d.get("flags", ()))
        if isinstance(d.get("flag"), str) and d["flag"] not in flags:  # `flag`: attnsolve's own flag, first
            flags = (d["flag"], *flags)
        bad = [f for f in flags if not f.startswith("-") or " " in f]
        if bad:
            col.add(fname, f"fields.{name}.flags", f"{bad[0]!r} is not a command-line flag (like --{name.replace('_', '-')})")
            continue
        try:
            defaults = _field_defaults(name, d.get("defaults", []), known, domains)
        except ValueError as e:
            col.add(fname, f"fields.{name}.defaults", str(e))
            continue
        out[name] = FieldDecl(name=name, kind=kind, default=default, unset=d.get("unset", ""), category=category,
                              selector=bool(d.get("selector", False)), flags=flags, metavar=d.get("metavar", "VALUE"),
                              env=d.get("env"), vllm=d.get("vllm", ""), help=d.get("help", ""),
                              platforms=tuple(d.get("platforms", ())), min=d.get("min"),
                              model_keys=tuple(d.get("model_keys", ())), architectures=dict(d.get("architectures", {})),
                              defaults=defaults)
    return out


def _field_defaults(name: str, raw: Any, known: set[str], domains: dict[str, tuple[Any, ...]]) -> tuple[DerivedCase, ...]:
    """`defaults = [{ when, value }, ..., { value }]`: first match; the last case has no `when`."""
    cases = []
    for i, c in enumerate(_list(raw)):
        if not isinstance(c, dict) or set(c) - schema.keys("field_default") or "value" not in c:
            raise ValueError(f"case #{i + 1} needs a 'value' (and optional 'when')")
        when = _literals(c.get("when", {}), known)
        if any(lit.field == name for lit in when):
            raise ValueError(f"case #{i + 1}: its 'when' reads {name} itself")
        if name in domains and c["value"] not in domains[name]:
            raise ValueError(f"case #{i + 1}: {c['value']!r} not in its values {list(domains[name])}")
        cases.append(DerivedCase(when, c["value"]))
    if cases and cases[-1].when:
        raise ValueError("the last case must have no 'when' (the value otherwise)")
    return tuple(cases)


def _backend(name: str, full: dict, fname: str, known: set[str], domains: dict, derived: dict,
             generic: tuple[GenericCheck, ...], first: bool = False) -> Backend:
    role = full.get("role", "decode")
    if role not in _ROLES:
        raise ValueError(f"role {role!r} not one of {list(_ROLES)}")
    platforms = _str_list(full.get("platforms", []))
    if not platforms:
        raise ValueError("platforms is missing or empty")
    caps = _caps(full, generic)
    _check_domain(caps.dtypes, domains.get("dtype", ()), "dtypes")
    _check_domain(caps.attn_types, domains.get("attn_type", ()), "attn_types")
    if caps.kv_cache_dtypes:
        exact = [k for k in caps.kv_cache_dtypes if not k.endswith("*")]
        _check_domain(tuple(exact), domains.get("kv_cache_dtype", ()), "kv_cache_dtypes")
    variant_field = full.get("variant_field")
    variants: list[Variant] = []
    raw_variants = full.get("variants", {})
    if raw_variants and variant_field is None:
        raise ValueError("variants need a variant_field")
    if variant_field is not None and variant_field not in known:
        raise ValueError(f"variant_field {variant_field!r} is not a known field")
    shown_by = full.get("variant_shown_by")
    if shown_by is not None and (variant_field is None or shown_by not in derived):
        raise ValueError(f"variant_shown_by {shown_by!r} needs a variant_field and must name a derived fact")
    for vname, v in raw_variants.items():
        if "values" not in v:
            raise ValueError(f"variant {vname} needs 'values'")
        extra = set(v) - schema.keys("variant") - {k for g in generic for k in (g.key, g.exact_key) if k}
        if extra:
            raise ValueError(f"variant {vname}: unknown key(s) {sorted(extra)}")
        variants.append(Variant(vname, tuple(_list(v["values"])), _caps(v, generic)))
    if variant_field in derived:
        covered = {x for v in variants for x in v.values}
        missing = [x for x in derived[variant_field].values if x not in covered]
        if missing:
            raise ValueError(f"variants do not cover {variant_field} value(s) {missing}")
    checks: list[Check] = []
    if not variants:
        checks += expand_checks(caps, role, generic)
    else:
        # Capabilities a variant overrides are checked per variant; the rest once, in vLLM's order.
        overridden = {k for v in variants for k in v.caps.keys()}
        per_kind: dict[str, list[Check]] = {}
        for c in expand_checks(caps, role, generic):
            if c.kind not in overridden:
                per_kind.setdefault(c.kind, []).append(c)
        for v in variants:
            when = (Literal(variant_field, Pred(in_=frozenset(v.values))),)
            only = caps.merged(v.caps).only(overridden)
            for c in expand_checks(only, role, generic, when):
                if c.kind in overridden:
                    per_kind.setdefault(c.kind, []).append(c)
        for g in generic:
            checks += per_kind.get(g.key, [])
    own = list(_checks(full.get("checks", []), known, first=first))
    generic_keys = {g.key for g in generic}
    at = {c.kind for c in own if c.kind in generic_keys}
    if at:  # a check with `at = KEY` replaces that generic check, at its place
        by_kind: dict[str, list[Check]] = {}
        for c in checks:
            by_kind.setdefault(c.kind, []).append(c)
        for c in own:
            if c.kind in at:
                by_kind.setdefault("__at__" + c.kind, []).append(c)
        checks = [c for g in generic for c in by_kind.get("__at__" + g.key if g.key in at else g.key, [])]
        own = [c for c in own if c.kind not in at]
    checks += own
    warns = _messages(full.get("warnings", []), known, "warnings")
    pbs = full.get("preferred_block_size")
    if pbs is not None and (isinstance(pbs, bool) or not isinstance(pbs, int) or pbs not in domains.get("block_size", ())):
        raise ValueError(f"preferred_block_size {pbs!r} not in the block_size domain {list(domains.get('block_size', ()))}")
    if shown_by is not None and not all(isinstance(x, str) for x in derived[shown_by].values):
        # a string-valued fact is the variant name shown as is; any other must select a variant
        covered = {x for v in variants for x in v.values}
        missing = [x for x in derived[shown_by].values if x not in covered]
        if missing:
            raise ValueError(f"variants do not cover {shown_by} value(s) {missing}")
    return Backend(warnings=warns, preferred_block_size=pbs, variant_shown_by=shown_by,
                   startup_failures=_messages(full.get("startup_failures", []), known, "startup_failures"), name=name, platforms=platforms, role=role, caps=caps, checks=tuple(checks),
                   variant_field=variant_field, variants=tuple(variants),
                   explicit_only=bool(full.get("explicit_only", False)), parent=full.get("parent"),
                   summary=str(full.get("summary", "")), source=fname,
                   composite=_str_list(full.get("composite", [])), vllm_name=str(full.get("vllm_name", "")),
                   alias_of=full.get("alias_of"), get_name=str(full.get("get_name", "")),
                   kernel_block_sizes_text=str(full.get("kernel_block_sizes_text", "")),
                   kv_cache_dtypes_text=_str_list(full.get("kv_cache_dtypes_text", [])),
                   kv_cache_layouts=full.get("kv_cache_layouts"), requested_as=str(full.get("requested_as", "")))


def _messages(raw: Any, known: set[str], key: str) -> tuple[tuple[str, tuple[Literal, ...]], ...]:
    """[{message, when}] -> ((message, literals), ...): warnings and start-up failures (an any_of / not
    condition becomes one entry per alternative; callers show a message once)."""
    out = []
    for i, w in enumerate(_list(raw)):
        if not isinstance(w, dict) or not isinstance(w.get("message"), str) or set(w) - {"message", "when"}:
            raise ValueError(f"{key} #{i + 1} needs 'message' (and optional 'when')")
        out += [(w["message"], alt) for alt in _when_dnf(w.get("when", {}), known)]
    return tuple(out)


def _check_domain(values: tuple[str, ...] | None, domain: tuple, key: str) -> None:
    if values is None:
        return
    bad = [v for v in values if v not in domain]
    if bad:
        raise ValueError(f"{key}: value(s) {bad} not in the domain {list(domain)} (domains.toml)")


def _entry(raw: Any, known: set[str]) -> Entry:
    if isinstance(raw, str):
        return Entry(raw)
    if not isinstance(raw, dict) or "backend" not in raw:
        raise ValueError(f"an entry is a backend name or a table with 'backend' (and 'checks'), got {raw!r}")
    extra = set(raw) - schema.keys("entry")
    if extra:
        raise ValueError(f"entry {raw.get('backend')}: unknown key(s) {sorted(extra)}")
    validate = raw.get("validate")
    guards = _checks(raw.get("checks", []), known, kind="guard")
    if "when" in raw:  # the entry is considered only when `when` holds: a guard whose failure skips it silently
        guards = (*_lower_check(SKIP_REASON, {}, raw["when"], known, "skip", 10_000, False), *guards)
    return Entry(raw["backend"], guards,
                 None if validate is None else _bool(validate),
                 tuple(_when_dnf(raw["when"], known)) if "when" in raw else ())


def _priority_list(plat: str, raw: dict, settings: dict, known: set[str]) -> PriorityList:
    allowed = schema.keys("list")
    extra = set(raw) - allowed
    if extra:
        raise ValueError(f"unknown key(s) {sorted(extra)}; accepted: {', '.join(sorted(allowed))}")
    validate = settings.get("validate", True)
    manual = raw.get("manual", settings.get("manual", "table" if "manual_accept" in raw or "manual_other" in raw
                                            else "validate"))
    if "manual_accept" in raw or "manual_other" in raw:
        manual = "table"
    if manual not in ("validate", "table", "ignore", "list"):
        raise ValueError(f"manual must be 'validate', 'table', 'ignore' or 'list', got {manual!r}")
    if not raw.get("entries") and not raw.get("error"):
        raise ValueError("a list needs entries (or an error: a branch that raises vLLM's text)")
    return PriorityList(
        platform=plat, name=str(raw.get("name", "")), when=_literals(raw.get("when", {}), known),
        entries=tuple(_entry(e, known) for e in _list(raw.get("entries", []))), validate=bool(validate),
        manual=manual, manual_accept=tuple(_entry(e, known) for e in raw.get("manual_accept", [])),
        manual_other=str(raw.get("manual_other", "")),
        ignore_warning=str(raw.get("ignore_warning", settings.get("ignore_warning", ""))),
        warn_unvalidated=bool(settings.get("warn_unvalidated", False)),
        start_block_size=_start_block_size(settings.get("start_block_size", []), known),
        drops=_str_list(settings.get("drops", [])),
        request_platform_check=_bool(settings.get("request_platform_check", True)),
        no_valid_message=_text(settings.get("no_valid_message", ""), "no_valid_message"),
        invalid_message=_text(settings.get("invalid_message", ""), "invalid_message"),
        start_backend=_start_backend(settings.get("start_backend", []), known),
        startup_failures=_messages(settings.get("startup_failures", []), known, "startup_failures"),
        block_size_failure=_text(settings.get("block_size_failure", ""), "block_size_failure"),
        precluded_warning=_text(settings.get("precluded_warning", ""), "precluded_warning"),
        request_fallbacks=tuple((str(r.get("warning", "")), alt,
                                 tuple(tuple(_str_list(x)) for x in _list(r.get("only_reasons", []))),
                                 str(r.get("level", "warning")))
                                for r in _list(settings.get("request_fallbacks", []))
                                for alt in _when_dnf(r.get("when", {}), known)),
        request_errors=_messages(settings.get("request_errors", []), known, "request_errors"),
        rewrites=tuple(Rewrite(alt, _sets(r.get("set", {}), known), _str_list(r.get("unset", [])),
                               r.get("stage", "after_selection"), str(r.get("log", "")))
                       for r in _list(settings.get("rewrites", [])) for alt in _when_dnf(r.get("when", {}), known)),
        notes=tuple(Note(alt, _text(n.get("log", ""), "notes.log"), n.get("level", "info"))
                    for n in _list(settings.get("notes", [])) for alt in _when_dnf(n.get("when", {}), known)),
        model_backend=_model_backend(settings.get("model_backend", []), known),
        model_routes=tuple(ModelRoute(str(r.get("name", "")), alt, str(r.get("result", "")), str(r.get("variant", "")),
                                      str(r.get("error", "")))
                           for r in _list(settings.get("model_routes", [])) for alt in _when_dnf(r.get("when", {}), known)),
        model_route_kv=tuple(RouteKV(alt, str(r.get("error", "")), _sets(r.get("set", {}), known), str(r.get("log", "")))
                             for r in _list(settings.get("model_route_kv", []))
                             for alt in _when_dnf(r.get("when", {}), known)),
        mla_prefill=_mla_prefill(settings.get("mla_prefill"), known),
        error=str(raw.get("error", "")), log=str(raw.get("log", "")), warning=str(raw.get("warning", "")),
        fallback_log=str(raw.get("fallback_log", "")), list_invalid_message=str(raw.get("invalid_message", "")),
        ignore_silent=_str_list(raw.get("ignore_silent", [])),
        hardware_field=str(settings.get("hardware_field", "")),
        compute_capability_from=_cc_source(settings, known),
        kv_cache_dtype_hint=str(settings.get("kv_cache_dtype_hint", "")),
        manual_log=str(settings.get("manual_log", "")), selected_log=str(settings.get("selected_log", "")),
        override_log=str(settings.get("override_log", "")),
        mla_prefill_no_valid_message=str(settings.get("mla_prefill_no_valid_message", "")),
        startup_warnings=tuple((str(w.get("message", "")), alt, str(w.get("level", "warning")))
                               for w in _list(settings.get("startup_warnings", []))
                               for alt in _when_dnf(w.get("when", {}), known)),
        ignore_level=str(settings.get("ignore_level", "warning")),
    )


def _cc_source(settings: dict, known: set[str]) -> str:
    src = settings.get("compute_capability_from", "")
    if src and src not in known:
        raise ValueError(f"compute_capability_from names no field or derived fact: {src!r}")
    return str(src)


_LIST_SETTINGS = ("request_fallbacks", "request_errors", "rewrites", "notes", "model_routes", "model_route_kv")


def _conds(raw: Any, known: set[str], key: str, allow_empty: bool = False) -> tuple[tuple[str, tuple[Literal, ...]], ...]:
    """[{when, <key>}] -> ((text, alternative), ...), one entry per alternative of `when`."""
    out = []
    for i, w in enumerate(_list(raw)):
        if not isinstance(w, dict) or not (allow_empty or isinstance(w.get(key), str)):
            raise ValueError(f"entry #{i + 1} needs '{key}' (and optional 'when')")
        out += [(str(w.get(key, "")), alt) for alt in _when_dnf(w.get("when", {}), known)]
    return tuple(out)


def _sets(raw: Any, known: set[str]) -> tuple[tuple[str, Any], ...]:
    if not isinstance(raw, dict):
        raise ValueError(f"set must be a table of field = value, got {raw!r}")
    bad = [k for k in raw if k not in known]
    if bad:
        raise ValueError(f"set names no field: {bad[0]!r}")
    return tuple(raw.items())


def _model_backend(raw: Any, known: set[str]) -> tuple[DerivedCase, ...]:
    cases = []
    for i, c in enumerate(_list(raw)):
        if not isinstance(c, dict) or set(c) - {"when", "value"} or not isinstance(c.get("value"), str):
            raise ValueError(f"model_backend #{i + 1} needs a backend name 'value' (\"backend\": the request as is)")
        cases += [DerivedCase(alt, c["value"]) for alt in _when_dnf(c.get("when", {}), known)]
    return tuple(cases)


def _mla_prefill(raw: Any, known: set[str]) -> MlaPrefill | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("mla_prefill must be a table")
    field = str(raw.get("request_field", ""))
    if field and field not in known:
        raise ValueError(f"mla_prefill.request_field names no field: {field!r}")
    return MlaPrefill(field, str(raw.get("no_valid_message", "")), str(raw.get("invalid_message", "")),
                      str(raw.get("chosen_log", "")), _conds(raw.get("skips", []), known, "warning"),
                      _conds(raw.get("fallbacks", []), known, "warning"))


def _text(v: Any, key: str) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{key} must be a string, got {v!r}")
    return v


def _start_backend(raw: Any, known: set[str]) -> tuple[DerivedCase, ...]:
    cases = []
    for i, c in enumerate(_list(raw)):
        if not isinstance(c, dict) or set(c) - {"when", "value"} or not isinstance(c.get("value"), str):
            raise ValueError(f"start_backend #{i + 1} needs a backend name 'value' (and optional 'when')")
        cases.append(DerivedCase(_literals(c.get("when", {}), known), c["value"]))
    return tuple(cases)


def _start_block_size(raw: Any, known: set[str]) -> tuple[DerivedCase, ...]:
    cases = []
    for i, c in enumerate(_list(raw)):
        v = c.get("value") if isinstance(c, dict) else None
        if (not isinstance(c, dict) or set(c) - schema.keys("start_block_size")
                or not ((isinstance(v, int) and not isinstance(v, bool)) or v == "block_size")):
            raise ValueError(f"start_block_size #{i + 1} needs an integer 'value' or \"block_size\" "
                             "(keep the user's) and optional 'when'")
        cases.append(DerivedCase(_literals(c.get("when", {}), known), c["value"]))
    if cases and cases[-1].when:
        raise ValueError("start_block_size: the last case must have no 'when' (the default)")
    return tuple(cases)


def _check_references(rules: RuleSet, abstract: set[str], col: _Collector) -> None:
    """Cheap reference checks that need no graph library (also run on the fast start-up path)."""
    for pl in rules.lists:
        for case in pl.start_backend:
            if case.value not in rules.backends:
                col.add(pl.source or pl.platform, f"platforms.{pl.platform}.start_backend", f"names no backend: {case.value!r}")
        for e in (*pl.entries, *pl.manual_accept):
            if e.backend not in rules.backends:
                why = "an abstract base" if e.backend in abstract else "no backend"
                col.add(pl.source or pl.platform, f"platforms.{pl.platform}.lists {pl.name!r}", f"entry {e.backend!r} names {why}")
            elif pl.platform not in rules.backends[e.backend].platforms:
                col.add(pl.source or pl.platform, f"platforms.{pl.platform}.lists {pl.name!r}",
                        f"entry {e.backend!r} is not declared for platform {pl.platform!r}")
