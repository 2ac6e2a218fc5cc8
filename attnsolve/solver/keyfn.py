"""complete()'s memo key as one function generated per rule set, instead of a loop over field tuples.

Why: every cold solve computes the key (about 70 fields on vLLM 0.33): the plain fields, each numeric field's
value class, the local arithmetic and the field comparisons. Generated straight-line code reads each field
once, tests a value the rules name without calling its classifier, and builds the key tuple in one go; it
computes exactly what the loop computed (`reference_key`, which the tests compare it with).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from ..rules.model import _compare, _local_value

# The memo key of some facts and the values of the derived facts' local arithmetic.
Keyed = tuple[tuple[Any, ...], list[Any]]
Classifier = Callable[[Any], Any]
KeyFunction = Callable[..., Keyed | None]


def _getter(fields: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A function reading `fields` of a mapping as a tuple (KeyError for a missing one), in one C call."""
    if len(fields) >= 2:
        return operator.itemgetter(*fields)
    return lambda facts: tuple(facts[f] for f in fields)


def reference_key(facts: Mapping[str, Any], plain: tuple[str, ...], class_fields: tuple[str, ...],
                  classes: tuple[Classifier, ...], locals_: tuple[tuple[str, str, tuple[str, ...], Any], ...],
                  compares: tuple[tuple[str, str, str], ...]) -> Keyed:
    """The key as a loop over the fields: what the generated function must equal."""
    get = facts.get
    out = [None if v is None else cls(v) for cls, v in zip(classes, map(get, class_fields))]
    lvals = []
    for _, op, parts, cls in locals_:
        vals = [get(f) for f in parts]
        v = None if None in vals else _local_value(op, vals)
        lvals.append(v)
        out.append(v if v is None or cls is None else cls(v))
    for op, a, b in compares:
        out.append(_compare(op, get(a), get(b)))
    return (tuple(map(get, plain)), tuple(out)), lvals


def key_function(plain: tuple[str, ...], given: frozenset[str], key_set: frozenset[str],
                 class_fields: tuple[str, ...], classes: tuple[Classifier, ...],
                 locals_: tuple[tuple[str, str, tuple[str, ...], Any], ...],
                 compares: tuple[tuple[str, str, str], ...]) -> KeyFunction:
    """The generated key function: key(facts) = reference_key(facts); key(facts, True) is None unless every fact is
    a key field. plain: the fields keyed by value, those in `given` first. The key fields in `given` (every
    Config's facts hold them) are read from a dict by one itemgetter; a dict holding exactly those is a subset
    of the key fields without testing each of its keys."""
    n_plain = sum(1 for f in plain if f in given)
    assert all(f in given for f in plain[:n_plain]), "the given fields come first"
    class_given = tuple(f for f in class_fields if f in given)
    fields_given = (*plain[:n_plain], *class_given)
    env: dict[str, Any] = {"PLAIN": plain, "GIVEN": _getter(fields_given), "KEYS": key_set, "LV": _local_value,
                           "CMP": _compare, "dict": dict, "tuple": tuple, "type": type, "map": map, "len": len,
                           "int": int, "KeyError": KeyError}
    rest = "".join(f"get({f!r}), " for f in plain[n_plain:])
    lines = ["def key(facts, check=False):",
             "    get = facts.get",
             "    g = None",
             "    if type(facts) is dict:",
             "        try:",
             "            g = GIVEN(facts)",
             "        except KeyError:",
             "            pass",
             f"    if check and not (g is not None and len(facts) == {len(fields_given)}) and not facts.keys() <= KEYS:",
             "        return None",
             "    if g is not None:",
             f"        plain = g[:{n_plain}] + ({rest})"]
    lines += [f"        v{i} = g[{n_plain + class_given.index(f)}]" if f in class_given else f"        v{i} = get({f!r})"
              for i, f in enumerate(class_fields)]
    lines += ["    else:",
              "        plain = tuple(map(get, PLAIN))"]
    lines += [f"        v{i} = get({f!r})" for i, f in enumerate(class_fields)]
    parts: list[str] = []

    def classed(var: str, cls: Any, k: str) -> str:
        """The class of the value in `var` (None stays None; a value the rules name is its own class)."""
        if cls is None:
            return var
        env[f"C{k}"] = cls
        named = getattr(cls, "named", None)
        if named is None:
            return f"(None if {var} is None else C{k}({var}))"
        env[f"E{k}"] = named
        return f"({var} if {var} is None or type({var}) is not int or {var} in E{k} else C{k}({var}))"

    for i, cls in enumerate(classes):
        parts.append(classed(f"v{i}", cls, f"v{i}"))
    lvals = []
    for i, (_, op, fields, cls) in enumerate(locals_):
        args = ", ".join(f"get({f!r})" for f in fields)
        lines.append(f"    a{i} = [{args}]")
        lines.append(f"    l{i} = None if None in a{i} else LV({op!r}, a{i})")
        lvals.append(f"l{i}")
        parts.append(classed(f"l{i}", cls, f"l{i}"))
    for op, a, b in compares:
        if op == "eq":
            parts.append(f"get({a!r}) == get({b!r})")
        elif op == "ne":
            parts.append(f"get({a!r}) != get({b!r})")
        else:
            parts.append(f"CMP({op!r}, get({a!r}), get({b!r}))")
    lines.append(f"    return (plain, ({''.join(p + ', ' for p in parts)})), [{', '.join(lvals)}]")
    exec("\n".join(lines), env)  # noqa: S102 - source built above from the rule set's field names (repr'd)
    return env["key"]
