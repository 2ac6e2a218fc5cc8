"""The fast path: rules compiled into per-field clause bitsets, complete and immutable once built.

Every check is a clause (a disjunction of single-field literals) and gets one bit. For each field
value we memoise the set of clauses one of its literals satisfies; OR-ing those over the config's
fields gives every satisfied clause at once, and a candidate is valid iff all its clause bits are
in that set. Cost: one dict lookup per relevant field plus one AND per candidate.

A never-seen value (a head size no rule names) must not cost a walk over every predicate: each
numeric field gets a classifier built from the predicates the rules apply to it (boundaries,
divisors, majors), and two values in one class answer every predicate alike. `complete(facts)`
therefore memoises the derived facts, the satisfied clauses and the priority list on the tuple of
the facts' classes, so a new value in a known class costs one classification and a dict lookup.
Derived facts' log lines are chosen with the case and rendered only when a caller reads them.

Everything the bit layout depends on (every plan, every list condition) is compiled in the
constructor; afterwards the object refuses attribute writes, and its only mutable parts are memos.
"""

from __future__ import annotations

import string
from bisect import bisect_left
from typing import Any, Callable, Mapping

from ..rules.model import _NO_EQ, Backend, Check, Literal, Pred, PriorityList, RuleSet, report
from ..config import FIELD_NAMES
from .keyfn import Keyed, key_function, reference_key
from .semantics import Candidate, Plan, plan, reasons_of, select_list

# Largest memo before it is emptied (a process asking about millions of distinct raw values).
_MEMO_LIMIT = 1 << 14


# The step lists of a PriorityList whose items carry a condition (see CompiledRules.first_holding).
_STEPS = ("request_errors", "rewrites", "request_fallbacks", "model_backend", "model_routes", "model_route_kv",
          "startup_failures", "start_backend", "start_block_size", "notes", "startup_warnings")


class _ClassKey(tuple):
    """A value class of one numeric field (no config value can equal one)."""

    __slots__ = ()


Classifier = Callable[[Any], Any]


def classifier(preds: tuple[Pred, ...]) -> Classifier | None:
    """A function mapping a value to a key that is equal for two values only if every one of `preds`
    answers them alike; None when the value itself is the best key (no order or divisibility tests).

    Values a predicate names (members, bounds, equalities) and non-ints are their own keys; any other
    int is keyed by its position among the bounds, its divisibility by each divisor and its majors."""
    exact: set[Any] = set()
    bounds: set[int] = set()
    divisors: set[int] = set()
    majors: list[frozenset[int]] = []
    for p in preds:
        for coll in (p.in_, p.not_in):
            if coll:
                exact.update(coll)
        if p.eq is not _NO_EQ:
            exact.add(p.eq)
        for b in (p.min, p.max):
            if b is not None:
                bounds.add(b)
        if p.multiple_of:
            divisors.update(p.multiple_of)
        if p.major_in is not None:
            majors.append(p.major_in)
    if not (bounds or divisors or majors):
        return None
    if not all(type(x) is int for x in (*bounds, *divisors)) or 0 in divisors:
        return None
    exact |= bounds
    ordered = sorted(bounds)
    divs = tuple(sorted(divisors))
    maj = tuple(majors)

    def key(value: Any) -> Any:
        if type(value) is not int or value in exact:
            return value
        return _ClassKey((bisect_left(ordered, value), tuple(value % d == 0 for d in divs),
                          tuple(value // 10 in m for m in maj)))
    key.named = frozenset(exact)  # type: ignore[attr-defined]  # its own keys: tested inline by keyfn
    return key


def _placeholders(template: str) -> set[str]:
    out = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name:
            out.add(name.partition("|")[0])
    return out


# a check that no earlier `first` check can stop: (checks, their clause bits)
_NOT_BLOCKED: tuple[tuple[Check, ...], int] = ((), 0)


class CompiledRules:
    """Bitset form of one RuleSet; `complete(facts)` answers derived facts, satisfied clauses and the list."""

    __slots__ = ("rules", "fields", "_clause_bits", "_field_lits", "_memo", "_plans", "_cand_bits",
                 "_list_index", "_list_need", "_list_fields", "_list_memo", "_derived",
                 "_classifiers", "_key_fields", "_key_set", "_plain_fields", "_key", "_local_names", "_class_fields", "_classes", "_locals", "_compares",
                 "_class_memo", "_eager_logs", "_memo_ok", "_names", "_cand_derived", "_backend_reads", "_others",
                 "_reads_ctx", "_plan_ids",
                 "_conds", "_cond_lits", "_cond_field_mask", "_cond_memo", "_item_masks", "_first_memo", "_reason_memo", "_case_memo", "_frozen", "__weakref__")

    def __init__(self, rules: RuleSet):
        self.rules = rules
        clause_bits: dict[tuple[Literal, ...], int] = {}
        field_lits: dict[str, dict[Pred, int]] = {}

        def bit(clause: tuple[Literal, ...]) -> int:
            b = clause_bits.get(clause)
            if b is None:
                b = clause_bits[clause] = 1 << len(clause_bits)
                for lit in clause:
                    lits = field_lits.setdefault(lit.field, {})
                    lits[lit.pred] = lits.get(lit.pred, 0) | b
            return b

        # every plan up front (every list x no request / each backend), so the layout is fixed here
        self._list_index = {id(pl): i for i, pl in enumerate(rules.lists)}
        self._plans: dict[tuple[int, str | None], tuple[Plan, tuple[int, ...]]] = {}
        self._cand_bits: dict[int, tuple[Candidate, tuple[tuple[int, Check], ...]]] = {}
        by_check: dict[int, tuple[Check, int]] = {}  # a Check object shared by many plans: its clause once

        def check_bit(ch: Check) -> int:
            got = by_check.get(id(ch))
            if got is None or got[0] is not ch:
                got = by_check[id(ch)] = (ch, bit(ch.clause()))
            return got[1]

        # candidates with the same checks (a backend's entry in every list and for every request) share one
        # layout; ids are safe keys here: every plan, so every check, is kept in self._plans
        by_checks: dict[tuple[int, ...], tuple[tuple[tuple[int, Check], ...], int]] = {}
        for i, pl in enumerate(rules.lists):
            for req in (None, *rules.backends):
                p = plan(rules, pl, req)
                bits = []
                for c in p.candidates:
                    key = tuple(map(id, c.checks))
                    got = by_checks.get(key)
                    if got is None:
                        cb = tuple((check_bit(ch), ch) for ch in c.checks)
                        m = 0
                        for b, _ in cb:
                            m |= b
                        got = by_checks[key] = (cb, m)
                    self._cand_bits[id(c)] = (c, got[0])
                    bits.append(got[1])
                self._plans[(i, req)] = (p, tuple(bits))
        # the list conditions as clauses ("this list applies": its literals, and no earlier list of its
        # platform applies), for reachability questions over partial facts
        self._list_need: tuple[int, ...] = tuple(self._need(rules, i, bit) for i in range(len(rules.lists)))
        self.fields: tuple[str, ...] = tuple(field_lits)
        self._clause_bits = clause_bits
        self._field_lits = {f: tuple(lits.items()) for f, lits in field_lits.items()}
        self._memo: dict[str, dict[Any, int]] = {f: {} for f in field_lits}
        list_fields: dict[str, None] = {"platform": None}
        for pl in rules.lists:
            list_fields.update(dict.fromkeys(l.field for l in pl.when))
        self._list_fields = tuple(list_fields)
        self._list_memo: dict[tuple[Any, ...], Any] = {}
        self._derived = tuple(rules.derived.values())  # dependency order (the loader sorts them)
        self._names = tuple(rules.derived)
        # per derived fact: its input values -> (chosen case, value); a sweep completes facts that differ
        # in fields most derived facts do not read, so each one is decided once per input combination
        self._case_memo: tuple[dict[Any, tuple[int, Any]], ...] = tuple({} for _ in self._derived)
        self._compile_conditions(rules)
        self._reason_memo: dict[tuple[int, int], tuple[str, ...]] = {}
        self._compile_keys(rules)
        self._compile_reads(rules)
        self._frozen = True

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"CompiledRules is immutable after construction (cannot set {name!r})")
        object.__setattr__(self, name, value)

    @staticmethod
    def _need(rules: RuleSet, index: int, bit: Callable[[tuple[Literal, ...]], int]) -> int:
        pl = rules.lists[index]
        m = 0
        for lit in pl.when:
            m |= bit((lit,))
        for q in rules.lists[:index]:
            if q.platform != pl.platform:
                continue
            if not q.when:
                return -1  # an earlier list of the platform always applies: this one never does
            lits = list(q.when)
            neg = Check("", Literal(lits[-1].field, lits[-1].pred.negated()), tuple(lits[:-1]), "list")
            m |= bit(neg.clause())
        return m | bit((Literal("platform", Pred(eq=pl.platform)),))

    # -- the per-config memo keyed by value classes ------------------------------------------------

    def _compile_keys(self, rules: RuleSet) -> None:
        derived = rules.derived
        preds: dict[str, dict[Pred, None]] = {}
        for f, lits in self._field_lits.items():
            preds.setdefault(f, {}).update(dict.fromkeys(p for p, _ in lits))
        for d in self._derived:
            for case in d.cases:
                for lit in case.when:
                    preds.setdefault(lit.field, {})[lit.pred] = None
        for pl in rules.lists:
            for lit in pl.when:
                preds.setdefault(lit.field, {})[lit.pred] = None
        for f, lits in self._cond_lits.items():
            preds.setdefault(f, {}).update(dict.fromkeys(p for p, _ in lits))
        locals_: list[tuple[str, str, tuple[str, ...]]] = []
        compares: list[tuple[str, str, str]] = []
        raw_only: set[str] = set()  # fields whose raw value the memo must see (inputs of arithmetic)
        for d in self._derived:
            for name, op, parts in d.locals:
                locals_.append((name, op, parts))
                raw_only.update(p for p in parts if p in derived)
            if d.compute is not None:
                op, (a, b) = d.compute
                compares.append((op, a, b))
                raw_only.update(x for x in (a, b) if x in derived)
        key_fields: dict[str, None] = {}
        for f in preds:
            if f not in derived:
                key_fields[f] = None
        for _, _, parts in locals_:
            key_fields.update(dict.fromkeys(p for p in parts if p not in derived))
        for _, a, b in compares:
            key_fields.update(dict.fromkeys(x for x in (a, b) if x not in derived))
        key_fields.update(dict.fromkeys(f for f in self._list_fields if f not in derived))
        key_fields["backend"] = None  # the request picks the plan
        # and every input a Config gives, so that the key covers all of a query's facts (class_key)
        key_fields.update(dict.fromkeys(f for f in (*FIELD_NAMES, *rules.fields, "role") if f not in derived))
        self._key_fields = tuple(key_fields)
        self._key_set = frozenset(key_fields)
        classifiers = {f: classifier(tuple(ps)) for f, ps in preds.items()}
        self._classifiers = {f: c for f, c in classifiers.items() if c is not None}
        # the fields every Config's facts hold first (read by one itemgetter), then those a step adds
        given = frozenset((*FIELD_NAMES, *rules.fields, "role"))
        plain = [f for f in self._key_fields if f not in self._classifiers]
        self._plain_fields = tuple(sorted(plain, key=lambda f: f not in given))
        self._class_fields = tuple(f for f in self._key_fields if f in self._classifiers)
        self._classes = tuple(self._classifiers[f] for f in self._class_fields)
        self._locals = tuple((name, op, parts, self._classifiers.get(name)) for name, op, parts in locals_)
        self._local_names = tuple(name for name, _, _ in locals_)
        self._compares = tuple(compares)
        self._key = key_function(self._plain_fields, given, self._key_set, self._class_fields, self._classes,
                                 self._locals, self._compares)
        self._class_memo: dict[tuple[Any, ...], Completion] = {}
        # a derived fact whose log line names a fact computed after it renders when evaluated
        order = {d.name: i for i, d in enumerate(self._derived)}
        eager = set()
        for i, d in enumerate(self._derived):
            for case in d.cases:
                lines = (case.warning,) if isinstance(case.warning, str) else (case.warning or ())
                for line in lines:
                    if any(order.get(n, -1) >= i for n in _placeholders(line)):
                        eager.add(d.name)
        self._eager_logs = frozenset(eager)
        # arithmetic over a derived fact's value needs that value before the derived facts are known, and
        # a log line naming a later derived fact must be rendered as it is chosen: such a rule set is
        # evaluated case by case on every call (exact, slower)
        self._memo_ok = not raw_only and not eager

    def complete(self, facts: dict[str, Any], keyed: Keyed | None = None) -> "Completion":
        """Fill in the derived facts (and their published locals) and return what selection needs:
        the satisfied-clause bitset, the applicable list and each derived fact's chosen case.
        keyed: `self.keyed(facts)` when the caller computed it for these same facts (not recomputed)."""
        if not self._memo_ok:
            return self._evaluate(facts)
        key, lvals = keyed if keyed is not None else self._key(facts)
        try:
            got = self._class_memo.get(key)
        except TypeError:  # an unhashable value: no rule names one; evaluate without memo
            return self._evaluate(facts)
        if got is None:
            got = self._evaluate(dict(facts))  # a Completion is never changed: the memo shares it
            if len(self._class_memo) > _MEMO_LIMIT:
                self._class_memo.clear()
            self._class_memo[key] = got
        facts.update(got.entry[6])  # the derived facts as a dict: one C-level merge
        for name, v in zip(self._local_names, lvals):
            facts.setdefault(name, v)  # local arithmetic (q_per_kv) is shown by messages: publish it
        return got

    def reference_key(self, facts: Mapping[str, Any]) -> Keyed:
        """The memo key of `facts` (plain fields as they are, numeric ones by value class, the local arithmetic's
        classes, the field comparisons) and the local arithmetic's values, computed field by field: what the
        generated `_key` computes."""
        return reference_key(facts, self._plain_fields, self._class_fields, self._classes, self._locals,
                             self._compares)

    def class_key(self, facts: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """A key equal for two sets of facts that every rule answers alike (numeric values by class, all others
        as they are), or None when there is none (a fact the memo does not cover). It may hold an unhashable
        value (no rule names one): a dict lookup with it raises TypeError."""
        got = self.keyed(facts)
        return None if got is None else got[0]

    def keyed(self, facts: Mapping[str, Any]) -> Keyed | None:
        """`class_key(facts)` with the local arithmetic's values, or None: solve() hands it on to `complete()`
        for the same facts, so the key (the costliest part of a cold solve) is computed once."""
        if not self._memo_ok:
            return None
        return self._key(facts, True)  # None unless facts.keys() <= self._key_set

    def named(self, field: str, value: Any) -> bool:
        """Whether `value` is its own class for `field` (a value some rule names, or a non-numeric one)."""
        cls = self._classifiers.get(field)
        return value is None or cls is None or cls(value) is value

    def _evaluate(self, facts: dict[str, Any]) -> "Completion":
        """The reference evaluation: each derived fact's first matching case, in dependency order."""
        values, cases = [], []
        eager = self._eager_logs
        get = facts.get
        for d, memo in zip(self._derived, self._case_memo):
            vals = tuple(map(get, d.input_fields))
            key = (vals, tuple(map(type, vals)))  # True and 1 hash alike; arithmetic tells them apart
            try:
                i, value = memo[key]
            except KeyError:
                i = d.case_index(facts)
                value = d.cases[i].value if i >= 0 else d.evaluate(facts)[0]
                if len(memo) > _MEMO_LIMIT:
                    memo.clear()
                memo[key] = (i, value)
            except TypeError:  # an unhashable value: no rule names one
                i = d.case_index(facts)
                value = d.cases[i].value if i >= 0 else d.evaluate(facts)[0]
            cases.append((i, d.case_warning(i, facts)) if d.name in eager else i)
            facts[d.name] = value
            values.append(value)
            if d.locals:
                for name, value in d.local_values(facts).items():
                    facts.setdefault(name, value)
        pl = select_list(self.rules, facts)
        logging = tuple(d.name for d, c in zip(self._derived, cases)
                        if isinstance(c, tuple) or (c >= 0 and d.cases[c].warning))
        entry = (tuple(values), tuple(cases), self.satisfied(facts), pl, self.truth(facts), logging,
                 dict(zip(self._names, values)))
        return Completion(self, entry, tuple(cases))

    # -- conditions of the steps around the lists (rewrites, notes, start-up rules...) ------------

    def _compile_conditions(self, rules: RuleSet) -> None:
        """Every condition (a conjunction of literals) on the platforms' steps and the backends' warnings and
        start-up failures gets a mask over literal bits, so that it is decided by one AND against the truth
        bitset `complete()` memoises with the facts."""
        conds: dict[int, int] = {id(()): 0}
        lit_bits: dict[Literal, int] = {}
        by_field: dict[str, dict[Pred, int]] = {}
        keep: list[Any] = []

        def visit(x: Any) -> None:
            if isinstance(x, tuple):
                if x and all(isinstance(e, Literal) for e in x):
                    m = 0
                    for lit in x:
                        b = lit_bits.get(lit)
                        if b is None:
                            b = lit_bits[lit] = 1 << len(lit_bits)
                            f = by_field.setdefault(lit.field, {})
                            f[lit.pred] = f.get(lit.pred, 0) | b
                        m |= b
                    conds[id(x)] = m
                    keep.append(x)
                else:
                    for e in x:
                        visit(e)
            elif hasattr(x, "__dataclass_fields__") and not isinstance(x, (Check, Literal)):
                for name in x.__dataclass_fields__:
                    if name not in ("entries", "manual_accept", "when") or not isinstance(x, PriorityList):
                        visit(getattr(x, name))

        for pl in rules.lists:
            visit(pl)
        for b in rules.backends.values():
            visit(b.warnings)
            visit(b.startup_failures)
            visit(b.layer_failures)
        seen: set[int] = set()
        for c, _ in self._cand_bits.values():  # the checks' conditions (which derived facts vLLM computes)
            for ch in c.checks:
                if ch.when and id(ch.when) not in seen:
                    seen.add(id(ch.when))
                    visit(ch.when)
        # the steps' item lists (each item a dataclass with `when` or a (text, when, ...) tuple): their masks,
        # for the lists whose every condition has one (the others are evaluated on the facts)
        items: dict[int, tuple[int, ...]] = {}
        seqs = [getattr(pl, name) for pl in rules.lists for name in _STEPS]
        seqs += [seq for b in rules.backends.values() for seq in (b.warnings, b.startup_failures, b.layer_failures)]
        for seq in seqs:
            if seq:
                masks = tuple(conds.get(id(getattr(x, "when", None) if not isinstance(x, tuple) else x[1]))
                              for x in seq)
                if None not in masks:
                    items[id(seq)] = masks  # type: ignore[assignment]
                keep.append(seq)
        self._item_masks = items
        self._first_memo: dict[tuple[int, int, int], int] = {}
        self._conds = conds
        self._cond_lits = {f: tuple(lits.items()) for f, lits in by_field.items()}
        self._cond_field_mask = {f: _or(m for _, m in lits) for f, lits in self._cond_lits.items()}
        self._cond_memo: dict[str, dict[Any, int]] = {f: {} for f in by_field}

    def truth(self, facts: Mapping[str, Any]) -> int:
        """Bitset of the condition literals the facts make true."""
        t = 0
        for field in self._cond_lits:
            t |= self._cond_bits(field, facts.get(field))
        return t

    def _cond_bits(self, field: str, value: Any) -> int:
        memo = self._cond_memo[field]
        try:
            return memo[value]
        except KeyError:
            pass
        except TypeError:  # unhashable: no rule names such a value
            return _or(m for p, m in self._cond_lits[field] if p(value))
        t = _or(m for p, m in self._cond_lits[field] if p(value))
        if len(memo) > _MEMO_LIMIT:
            memo.clear()
        memo[value] = t
        return t

    def with_value(self, t: int, field: str, value: Any) -> int:
        """The truth bitset `t` of some facts, for those facts with `field` set to `value`."""
        fm = self._cond_field_mask.get(field)
        if fm is None:
            return t
        return (t & ~fm) | self._cond_bits(field, value)

    def first_holding(self, items: tuple[Any, ...], t: int | None, facts: Mapping[str, Any], start: int = 0) -> int:
        """The index of the first of `items` (a step's list: rewrites, notes, model routes, start-up cases...)
        from `start` whose condition holds, or -1; read off the truth bitset `t` of `facts`."""
        if not items:
            return -1
        masks = self._item_masks.get(id(items)) if t is not None else None
        if masks is None:
            for i in range(start, len(items)):
                x = items[i]
                if self.holds(x[1] if isinstance(x, tuple) else x.when, t, facts):
                    return i
            return -1
        if len(masks) - start <= 3:  # a short list: testing its masks costs less than the memo's key
            for i in range(start, len(masks)):
                m = masks[i]
                if m & t == m:
                    return i
            return -1
        key = (id(items), start, t)
        got = self._first_memo.get(key)
        if got is None:
            got = -1
            for i in range(start, len(masks)):
                m = masks[i]
                if m & t == m:
                    got = i
                    break
            if len(self._first_memo) > _MEMO_LIMIT:
                self._first_memo.clear()
            self._first_memo[key] = got
        return got

    def holds(self, cond: tuple[Literal, ...], t: int | None, facts: Mapping[str, Any]) -> bool:
        """Whether the conjunction `cond` holds: read off the truth bitset `t` of `facts` when `cond` is one of
        the rule set's conditions, else evaluated on the facts."""
        m = self._conds.get(id(cond)) if t is not None else None
        if m is None:
            return all(lit(facts) for lit in cond)
        return m & t == m

    # -- derived facts' log lines, and which derived facts a step reads -------------------------

    def _compile_reads(self, rules: RuleSet) -> None:
        """What each candidate, plan and backend makes vLLM compute, kept per item as it is first asked for: only
        a solve whose derived facts have log lines asks (session 42: computing all of it for every list and
        request was half of compiling a rule set, and `explain` compiles every release for its version fixes)."""
        derived = rules.derived
        deps: dict[str, frozenset[str]] = {}
        for name, d in derived.items():  # dependency order: inputs first
            out = {name}
            for f in d.inputs:
                out |= deps.get(f, {f})
            deps[name] = frozenset(out)
        self._reads_ctx = (deps, {}, {g.key: (g.variant_read_when, g.variant_reads) for g in rules.generic_checks
                                      if g.variant_read_when is not None}, {})
        self._plan_ids = {id(p): p for p, _ in self._plans.values()}
        self._cand_derived = {}
        self._others = {}
        self._backend_reads = {}

    def _of(self, field: str) -> frozenset[str]:
        """The derived facts that computing `field` computes (itself included, when derived)."""
        deps, of_field, _, _ = self._reads_ctx
        got = of_field.get(field)
        if got is None:
            derived = self.rules.derived
            got = of_field[field] = frozenset(x for x in deps.get(field, (field,)) if x in derived)
        return got

    def _cand_reads(self, c: Candidate) -> tuple[frozenset[str], tuple[Any, ...]]:
        """(facts validating `c` always computes, (condition, facts, blockers) entries computed when they hold)."""
        got = self._cand_derived.get(id(c))
        if got is not None:
            return got
        _, _, variant_reads, per_check = self._reads_ctx
        of = self._of
        clause_bits = self._clause_bits
        always: set[str] = set()
        conditional: list[Any] = []
        vfield = getattr(self.rules.backends.get(c.backend), "variant_field", None)
        earlier_first: list[Check] = []
        for ch in c.checks:
            chk = per_check.get(id(ch))
            if chk is None or chk[0] is not ch:
                when: frozenset[str] = frozenset().union(*(of(w.field) for w in ch.when))
                chk = per_check[id(ch)] = (ch, when, of(ch.require.field))
            # vLLM's supports_combination stops at its first failing entry: a later entry is not evaluated
            blockers = ((tuple(earlier_first), _or(clause_bits[e.clause()] for e in earlier_first)) if ch.first
                        else _NOT_BLOCKED)
            consult = variant_reads.get(ch.kind) if vfield else None
            if consult is not None and any(w.field == vfield for w in ch.when):
                # a variant's capability: what the variant depends on is computed only where vLLM asks, and
                # only the facts its supports_* call computes (variant_reads) where the rules say which
                alts, only = consult
                facts = chk[1] if not only else chk[1] & frozenset().union(*(of(n) for n in only))
                for alt in alts:
                    conditional.append((alt, facts, _NOT_BLOCKED))
            elif blockers[0] and chk[1]:
                conditional.append(((), chk[1], blockers))
            else:
                always |= chk[1]
            if chk[2]:
                conditional.append((ch.when, chk[2], blockers))
            if ch.first:
                earlier_first.append(ch)
        got = self._cand_derived[id(c)] = (frozenset(always), tuple(x for x in conditional if not x[1] <= always))
        return got

    def derived_read_by(self, backend: Backend) -> frozenset[str]:
        """The derived facts vLLM computes when `backend` is selected (its variant, checks and start-up
        failures read them, directly or through other derived facts)."""
        if self.rules.backends.get(backend.name) is not backend:
            return frozenset()
        got = self._backend_reads.get(backend.name)
        if got is None:
            b = backend
            direct = {b.variant_field, b.variant_shown_by}
            direct.update(f for c in b.checks for f in c.fields)
            direct.update(lit.field for _, when in (*b.layer_failures, *b.startup_failures) for lit in when)
            got = self._backend_reads[b.name] = frozenset(x for f in direct if f for x in self._of(f))
        return got

    def evaluated_derived(self, cand: Candidate, facts: Mapping[str, Any], t: int | None = None,
                          sat: int | None = None, wanted: frozenset[str] | None = None) -> frozenset[str]:
        """The derived facts vLLM computes while validating `cand`: those a condition reads, and those a
        requirement reads when its condition holds (vLLM tests the condition first). t: the truth bitset
        of `facts` (decides the conditions without evaluating them); sat: their satisfied-clause bitset
        (decides which checks fire); wanted: the facts the caller asks about (others may be left out)."""
        bits = self._cand_bits.get(id(cand))
        if bits is None or bits[0] is not cand:
            raise KeyError(f"{cand.backend}: not a candidate of these compiled rules")
        always, conditional = self._cand_reads(cand)
        return self._with_holding(always, conditional, t, facts, sat, wanted)

    def evaluated_by_others(self, p: Plan, chosen: str, facts: Mapping[str, Any], t: int | None = None,
                            sat: int | None = None, wanted: frozenset[str] | None = None) -> frozenset[str] | None:
        """The union of `evaluated_derived` over `p`'s validated candidates other than `chosen`'s (vLLM >= 0.18
        validates every list entry: one union per plan and choice, not a walk per candidate); None when `p`
        is not a plan of these compiled rules."""
        key = (id(p), chosen)
        got = self._others.get(key)
        if got is None or got[0] is not p:
            if self._plan_ids.get(id(p)) is not p or all(c.backend != chosen for c in p.candidates):
                return None
            parts = [self._cand_reads(c) for c in p.candidates if c.validated and c.backend != chosen]
            always_: frozenset[str] = frozenset().union(*(a for a, _ in parts))
            cond = tuple(x for _, conditional in parts for x in conditional if not x[1] <= always_)
            got = self._others[key] = (p, always_, cond)
        _, always, conditional = got
        return self._with_holding(always, conditional, t, facts, sat, wanted)

    def _with_holding(self, always: frozenset[str], conditional, t: int | None, facts: Mapping[str, Any],
                      sat: int | None, wanted: frozenset[str] | None) -> frozenset[str]:
        """`always` plus the fact sets of `conditional`'s (condition, facts, blockers) entries whose condition
        holds and none of whose blockers fires; with `wanted`, only entries that add a wanted fact are decided
        (a solve asks about the few facts with log lines, not all of them)."""
        if not conditional:
            return always
        out = set(always)
        left = None if wanted is None else wanted - always
        for when, req, (blockers, bmask) in conditional:
            if left is not None:
                if not left:
                    break
                if left.isdisjoint(req):
                    continue
            if not self.holds(when, t, facts):
                continue
            if blockers and (bmask & sat != bmask if sat is not None else any(b.fires(facts) for b in blockers)):
                continue
            out |= req
            if left is not None:
                left = left - req
        return frozenset(out)

    # -- plans, clauses and bitsets ------------------------------------------------------------

    @property
    def key_fields(self) -> tuple[str, ...]:
        """The facts `complete()` reads (its memo key): every field a clause, condition or derived fact tests."""
        return self._key_fields

    @property
    def clause_count(self) -> int:
        return len(self._clause_bits)

    def field_literals(self, field: str) -> tuple[tuple[Pred, int], ...]:
        """The predicates the clauses apply to `field`, each with the clause bits it satisfies."""
        return self._field_lits.get(field, ())

    def list_need(self, index: int) -> int:
        """The clause bits that say "list `index` is the one that applies" (-1: it never does)."""
        return self._list_need[index]

    def plan(self, pl: PriorityList, requested: str | None) -> tuple[Plan, tuple[int, ...]]:
        """The candidates of list `pl` for `requested` (or automatic selection) and their clause masks."""
        got = self._plans.get((self._list_index[id(pl)], requested))
        if got is None:  # a name that is not a backend of this rule set
            p = plan(self.rules, pl, requested)
            try:
                masks = tuple(_or(self._clause_bits[ch.clause()] for ch in c.checks) for c in p.candidates)
            except KeyError:
                raise KeyError(f"{requested!r}: a request these compiled rules have no clauses for") from None
            got = (p, masks)
        return got

    def reasons(self, cand: Candidate, facts: Mapping[str, Any], sat: int) -> tuple[str, ...]:
        """vLLM's reasons against `cand`, in check order, read off the satisfied-clause bitset."""
        got = self._cand_bits.get(id(cand))
        if got is None or got[0] is not cand:
            return reasons_of(cand, facts)
        key = (id(cand), sat)
        out = self._reason_memo.get(key)
        if out is None:
            fired = tuple(check for bit, check in got[1] if not sat & bit)
            out = report(fired, facts)
            if any("{" in c.reason for c in fired):  # rendered with the facts: not memoised
                return out
            if len(self._reason_memo) > _MEMO_LIMIT:
                self._reason_memo.clear()
            self._reason_memo[key] = out
        return out

    def plan_for(self, facts: Mapping[str, Any]) -> tuple[Plan, tuple[int, ...]] | None:
        key = tuple(map(facts.get, self._list_fields))
        try:
            pl = self._list_memo[key]
        except KeyError:
            pl = select_list(self.rules, facts)
            if len(self._list_memo) > _MEMO_LIMIT:
                self._list_memo.clear()
            self._list_memo[key] = pl
        except TypeError:
            pl = select_list(self.rules, facts)
        if pl is None:
            return None
        return self.plan(pl, facts.get("backend"))

    def satisfied(self, facts: Mapping[str, Any]) -> int:
        """Bitset of the clauses the facts satisfy."""
        sat = 0
        get = facts.get
        memo = self._memo
        for field, lits in self._field_lits.items():
            value = get(field)
            m_ = memo[field]
            try:
                m = m_[value]
            except KeyError:
                m = 0
                for pred, mask in lits:
                    if pred(value):
                        m |= mask
                if len(m_) > _MEMO_LIMIT:
                    m_.clear()
                m_[value] = m
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
            memo = self._memo[field]
            m = memo.get(value)
            if m is None:
                m = 0
                for pred, mask in lits:
                    if pred(value):
                        m |= mask
                if len(memo) > _MEMO_LIMIT:
                    memo.clear()
                memo[value] = m
            sat |= m
        return sat

    @staticmethod
    def first_valid(masks: tuple[int, ...], sat: int, allowed: tuple[bool, ...] | None = None) -> int | None:
        for i, m in enumerate(masks):
            if m & sat == m and (allowed is None or allowed[i]):
                return i
        return None


class Completion:
    """What `complete()` found for one set of facts: satisfied clauses, the list, each derived fact's case.
    Never changed once built: complete() hands the same one to every query of a value class."""

    # sat: the satisfied clauses; plist: the list that applies; t: the truth bitset of the condition literals
    # (see CompiledRules.holds); logging: the derived facts whose chosen case has log lines (rendered by
    # `lines`). Plain slots, not properties over `entry`: selection reads them several times per solve.
    __slots__ = ("comp", "entry", "cases", "sat", "plist", "t", "logging")

    def __init__(self, comp: CompiledRules, entry: tuple[Any, ...], cases: tuple[Any, ...]):
        self.comp = comp
        self.entry = entry
        self.cases = cases
        self.sat: int = entry[2]
        self.plist: PriorityList | None = entry[3]
        self.t: int = entry[4]
        self.logging: tuple[str, ...] = entry[5]

    def log_of(self, k: int, facts: Mapping[str, Any]) -> Any:
        """The k-th derived fact's log line(s) for the chosen case, rendered with `facts`."""
        c = self.cases[k]
        if isinstance(c, tuple):  # rendered when it was evaluated
            return c[1]
        return self.comp._derived[k].case_warning(c, facts)

    def lines(self, name: str, facts: Mapping[str, Any]) -> tuple[str, ...]:
        """The log lines of derived fact `name`'s chosen case, rendered with `facts`."""
        w = self.log_of(self.comp._names.index(name), facts)
        return () if not w else (w,) if isinstance(w, str) else tuple(w)

    def logs(self, facts: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
        """Derived name -> its log lines, for the derived facts whose chosen case logs something."""
        out: dict[str, tuple[str, ...]] = {}
        for name in self.entry[5]:
            lines = self.lines(name, facts)
            if lines:
                out[name] = lines
        return out


def _or(masks: Any) -> int:
    m = 0
    for x in masks:
        m |= x
    return m


