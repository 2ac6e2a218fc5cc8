"""Units: the free fields a sweep enumerates together, the values each takes, and tables over a unit's product.

Fields tied by a derived fact, a validity rule or the platform's steps must be enumerated together for the
fact, rule or step to be judged; the product of the units is then folded (sweep_fold), never enumerated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .config import ANY
from .errors import ConfigError
from .solver.facts import ROLES


@dataclass
class _Unit:
    fields: tuple[str, ...]  # free fields enumerated together
    owns: tuple[str, ...]  # fact fields whose clause bits / list verdicts this unit contributes
    rows: Any  # _Rows: assignment per valid local row (Config-acceptable values)
    words: Any  # (n, W) uint64: satisfied clause bits | ruled-out list bits
    req: Any  # (n,) int32 requested-backend index, -1 if the unit does not own 'backend'
    outer: bool  # decides the priority list or the request
    forced: Any = None  # (n,) int32 forced-outcome id per row (the steps before the lists decided), -1 none
    axis: int = 0


def _sweep_values(rules: Any, field: str) -> tuple[Any, ...]:
    from .solver.domains import representatives
    if field == "platform":
        return tuple(rules.domains["platform"])
    if field == "backend":  # the names a request may carry (not the MLA prefill kernels)
        from .config import requestable_backends
        return (None, *(b for b in rules.backends if b in requestable_backends(rules)))
    if field == "role":
        return ROLES
    vals = representatives(rules, field)
    if not vals:
        raise ConfigError(field, ANY, "a concrete value: the rules give this field no value classes")
    return tuple(vals)


def _derived_closure(rules: Any, name: str) -> set[str]:
    """The derived facts `name` reads, directly or through others."""
    out: set[str] = set()
    todo = [name]
    while todo:
        for x in rules.derived[todo.pop()].inputs:
            if x in rules.derived and x not in out:
                out.add(x)
                todo.append(x)
    return out


def _broadcast(np: Any, table: Any, fields: tuple[str, ...], ufields: list[str], sizes: list[int]) -> Any:
    """A table over the combinations of `fields` (C order) as an array over the unit's product."""
    shape = [len_ if f in fields else 1 for f, len_ in zip(ufields, sizes)]
    order = [f for f in ufields if f in fields]
    assert order == list(fields)
    return np.broadcast_to(table.reshape(shape), sizes)


def _derive(d: Any, facts: dict[str, Any], memo: dict[str, dict[Any, Any]]) -> Any:
    """A derived fact's value, computed once per combination of its inputs (a unit's rows repeat them)."""
    vals = tuple(facts.get(f) for f in d.inputs)
    key = (vals, tuple(map(type, vals)))  # True and 1 hash alike; arithmetic tells them apart
    m = memo.setdefault(d.name, {})
    try:
        got = m.get(key, m)
    except TypeError:
        return d.evaluate(facts)[0]
    if got is m:
        got = m[key] = d.evaluate(facts)[0]
    return got


class _UnionFind:
    def __init__(self, items: Iterable[str]):
        self.parent = {x: x for x in items}

    def find(self, x: str) -> str:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, *xs: str) -> None:
        xs = [x for x in xs if x in self.parent]
        for a, b in zip(xs, xs[1:]):
            ra, rb = self.find(a), self.find(b)
            if ra != rb:
                self.parent[rb] = ra
