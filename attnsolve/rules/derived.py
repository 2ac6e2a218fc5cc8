"""[derived.NAME] tables: facts computed from the fields (first matching case), in dependency order.

Why a module of its own: a derived fact may read other derived facts, so besides parsing its cases
the rule set's facts are ordered so that one pass in order evaluates them all (a cycle is a problem).
"""

from __future__ import annotations

from .conditions import _when_dnf
from .model import Derived, DerivedCase
from .problems import _Collector
from .toml_values import _list, _str_list


def _derived_facts(raw_derived: dict[str, tuple[str, dict]], known: set[str], col: _Collector) -> dict[str, Derived]:
    """[derived.NAME] tables -> Derived, in file order; a malformed one is a problem naming it."""
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
    return derived


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
