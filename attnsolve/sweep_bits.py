"""The bit layout a sweep's states are made of: the compiled clauses, then one bit per priority list ruled out.

A row's facts become the OR of per-value masks, cached per (field, value) and per compiled rule set, so the
fold works on uint64 words instead of facts.
"""

from __future__ import annotations

from typing import Any

from .sweep_rows import _np


class _Bits:
    """Bit layout: the compiled clauses, then one bit per priority list ('ruled out')."""

    def __init__(self, comp: Any):
        self.comp = comp
        rules = comp.rules
        self.lists = rules.lists
        self.nclauses = comp.clause_count
        self.nbits = self.nclauses + len(self.lists)
        self.W = max(1, (self.nbits + 63) // 64)
        self._cache: dict[tuple[str, Any], int] = {}
        self._plan_words: dict[tuple[int, int], Any] = {}
        self.list_fields: dict[str, list[tuple[int, Any]]] = {}
        for i, pl in enumerate(self.lists):
            for lit in pl.when:
                self.list_fields.setdefault(lit.field, []).append((i, lit.pred))

    def field_bits(self, field: str, value: Any) -> int:
        key = (field, value)
        got = self._cache.get(key)
        if got is None:
            got = 0
            for pred, mask in self.comp.field_literals(field):
                if pred(value):
                    got |= mask
            for i, pred in self.list_fields.get(field, ()):
                if not pred(value):
                    got |= 1 << (self.nclauses + i)
            if field == "platform":
                for i, pl in enumerate(self.lists):
                    if pl.platform != value:
                        got |= 1 << (self.nclauses + i)
            self._cache[key] = got
        return got

    def plan_words(self, key: tuple[int, int], masks: tuple[int, ...]) -> Any:
        got = self._plan_words.get(key)
        if got is None:
            clause_only = [m & ((1 << self.nclauses) - 1) for m in masks]
            got = self._plan_words[key] = self.words(clause_only).reshape(len(masks), self.W)
        return got

    def words(self, ints: list[int]) -> Any:
        np = _np()
        W = self.W
        arr = np.zeros((len(ints), W), dtype=np.uint64)
        m = (1 << 64) - 1
        for j in range(W):
            arr[:, j] = [(x >> (64 * j)) & m for x in ints]
        return arr


_BITS: list[tuple[Any, _Bits]] = []


def _bits_for(comp: Any) -> _Bits:
    """One bit layout (and its per-value caches) per compiled rule set."""
    if _BITS and _BITS[0][0] is comp:
        return _BITS[0][1]
    b = _Bits(comp)
    _BITS[:] = [(comp, b)]
    return b
