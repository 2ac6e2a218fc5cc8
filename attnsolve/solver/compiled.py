"""The fast path: rules compiled into per-field clause bitsets.

Every check is a clause (a disjunction of single-field literals) and gets one bit. For each field
value we memoise the set of clauses one of its literals satisfies; OR-ing those over the config's
fields gives every satisfied clause at once, and a candidate is valid iff all its clause bits are
in that set. Cost: one dict lookup per relevant field plus one AND per candidate.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..rules.model import Check, Pred, RuleSet, report
from .semantics import Candidate, Plan, plan, select_list


class CompiledRules:
    """Bitset form of one RuleSet; `valid_mask(facts)` answers all candidates' checks together."""

    def __init__(self, rules: RuleSet):
        self.rules = rules
        self._clause_ids: dict[Check, int] = {}
        self._tables: list[tuple[str, list[tuple[Pred, int]], dict[Any, int]]] | None = None
        self._field_lits: dict[str, list[tuple[Pred, int]]] = {}
        self._memo: dict[str, dict[Any, int]] = {}
        self._plans: dict[tuple[int, str | None], tuple[Plan, tuple[int, ...]]] = {}
        self._list_index = {id(pl): i for i, pl in enumerate(rules.lists)}
        self._cand_bits: dict[int, tuple[Candidate, tuple[tuple[int, Check], ...]]] = {}
        for pl in rules.lists:  # every plan up front, so the clause layout is fixed after construction
            for req in (None, *rules.backends):
                self._plan(pl, req)
        self.fields: tuple[str, ...] = tuple(self._field_lits)
        # list choice and derived facts depend on a few fields: memoise them on those fields' values
        list_fields: dict[str, None] = {"platform": None}
        for pl in rules.lists:
            list_fields.update(dict.fromkeys(l.field for l in pl.when))
        self._list_fields = tuple(list_fields)
        self._list_memo: dict[tuple[Any, ...], Any] = {}
        self._derived = tuple((d, d.inputs, d.locals) for d in rules.derived.values())
        self._derived_memo: dict[tuple[Any, ...], tuple[Any, str | None]] = {}

    @property
    def clause_count(self) -> int:
        return len(self._clause_ids)

    def _clause(self, check: Check) -> int:
        cid = self._clause_ids.get(check)
        if cid is None:
            cid = self._clause_ids[check] = len(self._clause_ids)
            bit = 1 << cid
            for lit in check.clause():
                lits = self._field_lits.setdefault(lit.field, [])
                for i, (pred, mask) in enumerate(lits):
                    if pred == lit.pred:
                        lits[i] = (pred, mask | bit)
                        break
                else:
                    lits.append((lit.pred, bit))
                self._memo.pop(lit.field, None)
                self._tables = None
        return cid

    def _mask(self, cand: Candidate) -> int:
        m = 0
        for c in cand.checks:
            m |= 1 << self._clause(c)
        return m

    def _plan(self, pl: Any, requested: str | None) -> tuple[Plan, tuple[int, ...]]:
        key = (self._list_index[id(pl)], requested)
        got = self._plans.get(key)
        if got is None:
            p = plan(self.rules, pl, requested)
            got = self._plans[key] = (p, tuple(self._mask(c) for c in p.candidates))
            for c in p.candidates:
                self._cand_bits[id(c)] = (c, tuple((1 << self._clause(ch), ch) for ch in c.checks))
        return got

    def reasons(self, cand: Candidate, facts: Mapping[str, Any], sat: int) -> tuple[str, ...]:
        """vLLM's reasons against `cand`, in check order, read off the satisfied-clause bitset."""
        got = self._cand_bits.get(id(cand))
        if got is None or got[0] is not cand:
            from .semantics import reasons_of
            return reasons_of(cand, facts)
        return report((check for bit, check in got[1] if not sat & bit), facts)

    def plan_for(self, facts: Mapping[str, Any]) -> tuple[Plan, tuple[int, ...]] | None:
        key = tuple(facts.get(f) for f in self._list_fields)
        try:
            pl = self._list_memo[key]
        except KeyError:
            pl = self._list_memo[key] = select_list(self.rules, facts)
        except TypeError:
            pl = select_list(self.rules, facts)
        if pl is None:
            return None
        return self._plan(pl, facts.get("backend"))

    def add_derived(self, facts: dict[str, Any]) -> list[str]:
        """Fill in the derived facts (memoised on their inputs); return their warnings."""
        warnings: list[str] = []
        for w in self.add_derived_by_name(facts).values():
            if w:
                warnings.extend((w,) if isinstance(w, str) else w)
        return warnings

    def add_derived_by_name(self, facts: dict[str, Any]) -> dict[str, Any]:
        """Fill in the derived facts; return derived name -> its case's warning (None, a line or lines)."""
        out: dict[str, Any] = {}
        memo = self._derived_memo
        for d, inputs, local in self._derived:  # dependency order (the loader sorts them)
            key = (d.name, *(facts.get(f) for f in inputs))
            got = memo.get(key)
            if got is None:
                got = memo[key] = d.evaluate(facts)
            facts[d.name] = got[0]
            out[d.name] = got[1]
            if local:  # local arithmetic (q_per_kv) is shown by messages: publish it
                for name, value in d.local_values(facts).items():
                    facts.setdefault(name, value)
        return out

    def satisfied(self, facts: Mapping[str, Any]) -> int:
        """Bitset of the clauses the facts satisfy."""
        tables = self._tables
        if tables is None:
            tables = self._tables = [(f, lits, self._memo.setdefault(f, {})) for f, lits in self._field_lits.items()]
        sat = 0
        get = facts.get
        for field, lits, memo in tables:
            value = get(field)
            try:
                m = memo[value]
            except KeyError:
                m = 0
                for pred, mask in lits:
                    if pred(value):
                        m |= mask
                memo[value] = m
            except TypeError:  # unhashable: not a value any rule can mention
                m = 0
                for pred, mask in lits:
                    if pred(value):
                        m |= mask
            sat |= m
        return sat

    def satisfied_partial(self, facts: Mapping[str, Any]) -> int:
        """Clauses satisfied by the fields present in `facts` alone (absent fields add nothing)."""
        sat = 0
        for field, value in facts.items():
            lits = self._field_lits.get(field)
            if lits is None:
                continue
            memo = self._memo.setdefault(field, {})
            m = memo.get(value)
            if m is None:
                m = 0
                for pred, mask in lits:
                    if pred(value):
                        m |= mask
                memo[value] = m
            sat |= m
        return sat

    def first_valid(self, masks: tuple[int, ...], sat: int, allowed: tuple[bool, ...] | None = None) -> int | None:
        for i, m in enumerate(masks):
            if m & sat == m and (allowed is None or allowed[i]):
                return i
        return None
