"""Whole-space sweeps: the selection for every combination of a partial config's free fields.

>>> from attnsolve import ANY, Config
>>> s = sweep(Config(platform="cuda", compute_capability="9.0", dtype=ANY, head_size=128))
>>> len(s), s.by_backend()
(3, {'FLASH_ATTN': 2, 'TRITON_ATTN': 1})

Free fields are those set to `ANY`; each takes one representative per value class (values every
rule treats alike, `attnsolve.solver.domains`), except `platform` and `backend`, which take every
value (the priority-list choice and the requested backend are not predicates the classes see).
Compute capability is swept as strings like "9.0"; `role=ANY` also sweeps the query role. A free
platform keeps the hardware fields as given: free `compute_capability` and `rocm_arch` too to
cover CUDA and every ROCm arch (a CUDA config needs a compute capability).

Combinations `Config` itself rejects are not configurations and are left out (counted in
`Sweep.excluded`, reasons in `EXCLUSIONS`): compute capability without CUDA or CUDA without one,
a ROCm arch off ROCm (and rocm_arch=None on ROCm when the arch is free: it means gfx942, a
duplicate), role mla_prefill without use_mla (the rule set's [[invariants]]), and a role the
platform has no priority list for (CPU has no MLA prefill).

How it is fast: nothing is solved per configuration. The free fields are grouped into units (fields
tied by a derived fact or a validity rule are enumerated together, each unit small), and every unit
row becomes the bitset of clauses it satisfies (the compiled solver's per-field masks) plus the
priority lists it rules out. The product of the units is folded one unit at a time as an OR
monoid over *distinct states*: once the priority list is known, a state keeps only the clause bits
that can still change the answer (candidates that can no longer become valid and candidates behind
one already valid are dropped), so the number of states stays small however large the space is.
Counts (`len`, `by_backend`) come from state weights without enumerating; rows come from the
per-unit transition tables by array gathers (numpy), in the order of the free fields.

The platform's steps before the lists (vLLM >= 0.18: requests refused outright, rewrites, requests
dropped, model code choosing the backend, ROCm's compute capability from the arch) read a few fields:
those are enumerated in one unit, and selection's own `before_selection` runs once per combination of
the fields it reads, so each row carries the facts selection sees and, where a step decides, a forced
outcome (its own constant plan). A unit's rows are built from small tables (validity, the steps, each
fact's clause bits once per combination of the fields it depends on), so a unit of millions of rows costs
seconds; one beyond 2^25 combinations is a ConfigError. Requests refused by their name alone (0.17) are
decided with the plan. The MLA prefill layer is read from the same assignment's decode row (role swept):
its failure, a skip, the prefill lists' own answer, a fallback. What the fold still cannot see (a prefill
row a skip may name; a refused ROCm request vLLM replaces by automatic selection for its exact reasons)
is solved one row at a time, which materialises the sweep's codes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from .config import ANY, FIELD_NAMES, Config, format_cc
from .errors import ConfigError, InvalidBackendError, NoValidBackendError
from .solver.facts import ROLES, base_facts, parse_role

NO_PREFILL = "NO_PREFILL"  # selection.NO_PREFILL: an MLA layer that gets no prefill backend

__all__ = ["sweep", "Sweep", "EXCLUSIONS"]

EXCLUSIONS: tuple[str, ...] = (
    "a platform field set on a platform not its own ([[invariants]] of the rule set: compute_capability "
    "off cuda, rocm_arch off rocm; a declared field scoped to some platforms, cpu_amx, set off them; Config "
    "rejects it)",
    "a required platform field unset on its platform (compute_capability on cuda; Config rejects it)",
    "a platform field with an assumed value left None on its platform while the field is free (rocm_arch "
    "None means gfx942 there: the same configuration twice)",
    "a clause of [[invariants]] broken (role mla_prefill with use_mla=False: solve() rejects it)",
    "a role the platform has no priority list for (solve() raises ConfigError, e.g. CPU MLA prefill)",
)

EXCLUDED = -2  # row code: not a configuration (see EXCLUSIONS)
NO_BACKEND = -1  # row code: no valid backend (solve raises NoValidBackendError / InvalidBackendError)
_CHUNK = 1 << 20  # rows materialised at a time while iterating
_TAIL = 4096  # innermost combinations whose assignments are merged once
_GRID_MAX = 1 << 26  # largest grid() materialised
_UNIT_MAX = 1 << 25  # most combinations one unit (fields read together) enumerates


def _np() -> Any:
    try:
        import numpy
    except ImportError as e:  # pragma: no cover - numpy ships with the bench extra and the test set-up
        raise ImportError("attnsolve.sweep needs numpy (pip install numpy)") from e
    return numpy


# ---------------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------------
class Sweep:
    """The selection for every configuration of a partial config's free fields.

    `len(s)`: configurations covered; iterating yields `(assignment, backend)` with `assignment` a
    dict of the free fields (Config field names, values Config accepts; "role" too when swept) and
    `backend` the name solve() selects, or None when it raises NoValidBackendError /
    InvalidBackendError. `by_backend()` and `by_list()` count without materialising rows.
    """

    def __init__(self, config: Config, role: Any, available: frozenset[str] | None, fields: tuple[str, ...],
                 values: dict[str, tuple[Any, ...]], units: list["_Unit"], plan: "_Fold"):
        self.config = config
        self._fold = plan
        self.role = role
        self.available = available
        self.fields = fields
        self.values = values
        self._units = units
        self._fold = plan
        self.raw_size = math.prod(len(v) for v in values.values())
        if plan.needs_exact:
            try:
                fixed = base_facts(config, "mla_prefill")
            except ConfigError:  # no MLA: no prefill layer row either
                fixed = {}
            plan.materialise(self._solve_row, fixed)
        self._len = plan.total - plan.excluded_weight

    def _solve_row(self, assignment: dict[str, Any]) -> int:
        """One row solved alone (a step the fold does not model decides it): its backend code."""
        from .selection import solve_uncached
        try:
            full = self.completion(assignment)
            backend = solve_uncached(full, assignment.get("role", self.role), self.available).backend
        except (NoValidBackendError, InvalidBackendError):
            return NO_BACKEND
        except ConfigError:
            return EXCLUDED
        return self._fold.names.index(backend)

    def __len__(self) -> int:
        return self._len

    @property
    def excluded(self) -> int:
        """Combinations of the free fields' classes that are not configurations (see EXCLUSIONS)."""
        return self.raw_size - self._len

    @property
    def backends(self) -> tuple[str, ...]:
        """Backend names indexed by the codes of `codes()` (-1: no backend, -2: excluded)."""
        return self._fold.names

    def by_backend(self) -> dict[str | None, int]:
        """backend (None: no valid backend) -> number of configurations selecting it; largest first."""
        out: dict[str | None, int] = {}
        for (_, b), n in self._fold.counts.items():
            out[b] = out.get(b, 0) + n
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], str(kv[0]))))

    def by(self, *fields: str) -> dict[tuple[Any, ...], dict[str | None, int]]:
        """(values of `fields`) -> by_backend() of the configurations with those values; each group is
        counted by its own sweep, so no row is materialised. Groups with no configuration are left out."""
        for f in fields:
            if f not in self.values:
                raise ConfigError(f, ANY, "one of the swept fields: " + ", ".join(self.values))
        out: dict[tuple[Any, ...], dict[str | None, int]] = {}
        for combo in itertools.product(*(self.values[f] for f in fields)):
            fixed = dict(zip(fields, combo))
            role = fixed.pop("role", self.role)
            try:
                cfg = self.config.replace(**fixed)
                sub = sweep(cfg, role=role, available=self.available)
            except ConfigError:
                continue
            # Config fills some values in (rocm_arch None -> gfx942 on rocm): such a combination is
            # not one the sweep's rows ever have, so it is no group of them
            if any(_shown(f, getattr(cfg, f)) != _shown(f, v) for f, v in fixed.items()):
                continue
            if len(sub):
                out[combo] = sub.by_backend()
        return out

    def by_list(self) -> dict[tuple[str, str | None], int]:
        """(priority list name, backend) -> count: which entries of which list are ever reached."""
        return dict(sorted(self._fold.counts.items(), key=lambda kv: (kv[0][0], -kv[1], str(kv[0][1]))))

    def codes(self) -> Any:
        """Backend code of every row of the product (numpy int array, row order of iteration, -2 rows
        excluded, -1 no backend, else an index into `backends`)."""
        return self._fold.codes(None)

    def __iter__(self) -> Iterator[tuple[dict[str, Any], str | None]]:
        names = [*self._fold.names, None]  # code -1 -> None
        units = self._fold.order_units
        if not units:
            code = int(self._fold.codes(None)[0])
            if code != EXCLUDED:
                yield {}, names[code]
            return
        sizes = [len(u.rows) for u in units]
        # Fix leading units until the remaining block is at most _CHUNK rows; merge the innermost
        # units' assignments once (at most _TAIL of them) so a row costs one small dict build.
        lead, rest = 0, math.prod(sizes)
        while lead < len(units) - 1 and rest > _CHUNK:
            rest //= sizes[lead]
            lead += 1
        tail, tsize = len(units), 1
        while tail > lead and tsize * sizes[tail - 1] <= _TAIL:
            tail -= 1
            tsize *= sizes[tail]
        tails = [_merged(parts) for parts in itertools.product(*(u.rows for u in units[tail:]))]
        mids = itertools.product(*(u.rows for u in units[lead:tail]))
        mids_list = list(mids) if rest // max(tsize, 1) <= _CHUNK else None
        for prefix in itertools.product(*(range(n) for n in sizes[:lead])):
            block = self._fold.codes(prefix).ravel().tolist()
            head = _merged(u.rows[i] for u, i in zip(units, prefix))
            pos = 0
            for mid in (mids_list if mids_list is not None else itertools.product(*(u.rows for u in units[lead:tail]))):
                base = dict(head)
                for p in mid:
                    base.update(p)
                for code, t in zip(block[pos:pos + tsize], tails):
                    if code != EXCLUDED:
                        yield {**base, **t}, names[code]
                pos += tsize

    def rows(self, backend: Any = ANY, limit: int | None = None) -> list[tuple[dict[str, Any], str | None]]:
        """The rows (optionally only those selecting `backend`, None = no backend), at most `limit`.

        With a backend given, rows are found by scanning the codes block by block (fast even when
        they are rare in a large sweep)."""
        if backend is ANY:
            return list(itertools.islice(self, limit))
        names = self._fold.names
        want = NO_BACKEND if backend is None else (names.index(backend) if backend in names else None)
        if want is None:
            return []
        units = self._fold.order_units
        if not units:
            return [r for r in self if r[1] == backend][:limit]
        sizes = [len(u.rows) for u in units]
        lead, rest = 0, math.prod(sizes)
        while lead < len(units) - 1 and rest > _CHUNK:
            rest //= sizes[lead]
            lead += 1
        np = _np()
        out: list[tuple[dict[str, Any], str | None]] = []
        for prefix in itertools.product(*(range(n) for n in sizes[:lead])):
            block = self._fold.codes(prefix)
            for flat in np.flatnonzero(block.ravel() == want).tolist():
                idx = np.unravel_index(flat, block.shape)
                row = _merged(u.rows[prefix[u.axis] if u.axis < lead else int(idx[u.axis])] for u in units)
                out.append((row, backend))
                if limit is not None and len(out) >= limit:
                    return out
        return out

    def grid(self) -> tuple[tuple[str, ...], Any]:
        """(fields, array): the codes on one axis per free field (`values[f]` order), -2 where the
        combination is excluded. Materialises every combination: for sweeps of moderate size."""
        np = _np()
        if self.raw_size > _GRID_MAX:
            raise ValueError(f"grid() of {self.raw_size:,} combinations: more than {_GRID_MAX:,}; use by_backend(), "
                             "codes() or iterate")
        fields = tuple(self.values)
        shape = [len(self.values[f]) for f in fields]
        strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
        out = np.full(math.prod(shape), EXCLUDED, dtype=np.int32)
        units = self._fold.order_units
        if not units:
            return fields, out.reshape(shape)
        flat: Any = np.zeros([1] * len(units), dtype=np.int64)
        pos = {f: i for i, f in enumerate(fields)}
        for u in units:
            offs = np.array([sum(self.values[f].index(r[f]) * strides[pos[f]] for f in u.fields) for r in u.rows],
                            dtype=np.int64)
            sh = [1] * len(units)
            sh[u.axis] = len(u.rows)
            flat = flat + offs.reshape(sh)
        codes = np.asarray(self._fold.codes(None))
        out[np.broadcast_to(flat, codes.shape).ravel()] = codes.ravel()
        return fields, out.reshape(shape)

    def completion(self, assignment: dict[str, Any]) -> Config:
        """The full Config a row stands for."""
        changes = {k: v for k, v in assignment.items() if k != "role"}
        return self.config.replace(**changes)

    def __repr__(self) -> str:
        top = ", ".join(f"{b}: {n}" for b, n in list(self.by_backend().items())[:4])
        return f"<Sweep over {', '.join(self.fields) or 'nothing'}: {len(self)} configurations ({top})>"


def _merged(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in parts:
        out.update(p)
    return out


# ---------------------------------------------------------------------------------------------------
# Building units
# ---------------------------------------------------------------------------------------------------
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


def _shown(field: str, value: Any) -> Any:
    if field == "compute_capability" and value is not None:
        return format_cc(value)  # facts carry 90, configs ComputeCapability(9, 0): both print "9.0"
    return value


def evaluated_force(sfields: tuple[str, ...], combo: tuple[Any, ...], facts_for: Any,
                    step_at: dict[tuple[Any, ...], tuple[int, dict[str, Any]]], run_steps: Any) -> int:
    """The forced outcome the steps give one combination of the fields they read."""
    facts = facts_for(sfields, combo)
    key = tuple(facts[f] for f in sfields)
    got = step_at.get(key)
    if got is None:
        got = step_at[key] = run_steps(dict(facts))
    return got[0]


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


def _valid_fields(rules: Any, ufields: list[str]) -> tuple[str, ...]:
    """The unit's fields `_valid` reads for it (the invariants touching the unit, scoped fields, the platform)."""
    loc = set(ufields)
    read: set[str] = set()
    for inv in rules.invariants:
        if loc & set(inv.fields):
            read |= set(inv.fields)
            if inv.kind == "platform_field":
                read.add("platform")
    scoped = _scoped(rules)
    if "platform" in loc:
        read |= set(scoped) | {"platform"}
    for name in loc & scoped.keys():
        read |= {name, "platform"}
    if any(inv.kind == "platform_field" and inv.default is not None for inv in rules.invariants):
        read.add("platform")  # normalise: a value Config fills in from the platform
    return tuple(f for f in ufields if f in read)


def _broadcast(np: Any, table: Any, fields: tuple[str, ...], ufields: list[str], sizes: list[int]) -> Any:
    """A table over the combinations of `fields` (C order) as an array over the unit's product."""
    shape = [len_ if f in fields else 1 for f, len_ in zip(ufields, sizes)]
    order = [f for f in ufields if f in fields]
    assert order == list(fields)
    return np.broadcast_to(table.reshape(shape), sizes)


class _Rows:
    """A unit's valid rows as assignments (Config values), built when read: a unit may hold millions."""

    def __init__(self, fields: tuple[str, ...], shown: tuple[tuple[Any, ...], ...], multi: Any):
        self.fields = fields
        self.shown = shown
        self.multi = [m.tolist() for m in multi] if len(fields) else []
        self._n = len(self.multi[0]) if self.multi else 0

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return {f: sh[m[i]] for f, sh, m in zip(self.fields, self.shown, self.multi)}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self._n):
            yield {f: sh[m[i]] for f, sh, m in zip(self.fields, self.shown, self.multi)}


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


def _pairs(rules: Any) -> list[tuple[str, ...]]:
    """Fields an invariant ties together (enumerated in one unit so the invariant can be judged); a declared
    field scoped to some platforms (cpu_amx) is tied to the platform, whose value decides whether it may be set."""
    return [*(inv.fields for inv in rules.invariants), *((name, "platform") for name in _scoped(rules))]


def _scoped(rules: Any) -> dict[str, Any]:
    """The rule-declared fields (not the common ones) scoped to some platforms: Config refuses a value other
    than the declared default off them (cpu_amx=True on cuda)."""
    return {name: decl for name, decl in rules.fields.items() if decl.platforms and name not in FIELD_NAMES}


def _valid(rules: Any, facts: dict[str, Any], local: Iterable[str], free: Iterable[str]) -> bool:
    """The rule set's invariants (Config's and solve's validity rules), for those that involve a field of
    this unit. A field with an assumed value (rocm_arch) left None on its platform is a duplicate when the
    field is free."""
    loc = set(local)
    for inv in rules.invariants:
        if not loc & set(inv.fields):
            continue
        if inv.kind == "definition":
            b, v = facts.get(inv.field), facts.get(inv.equals.field)
            if v is not None and b is not None and b != inv.equals.pred(v):
                return False
        elif inv.field:
            v, on = facts.get(inv.field), facts["platform"] in inv.platforms
            if v is not None and not on:
                return False
            if v is None and on and (inv.required or (inv.default is not None and inv.field in free)):
                return False
        elif any(c.fires(facts) for c in inv.checks if all(f in facts for f in c.fields)):
            return False
    scoped = _scoped(rules)
    for name in (scoped if "platform" in loc else loc & scoped.keys()):  # set off its platforms: Config refuses it
        decl = scoped[name]
        if facts.get(name) not in (decl.default, ANY) and facts.get("platform") not in decl.platforms:
            return False
    return True


# ---------------------------------------------------------------------------------------------------
# The platform's steps around the priority lists (vLLM >= 0.18)
# ---------------------------------------------------------------------------------------------------
FORCE_NONE = -10  # forced-outcome code: the lists decide
EXACT = -3  # result code: a step the fold does not model decides; the row is solved on its own


def _platform_steps(rules: Any, platform: str) -> Any:
    """The platform-wide settings (every list of a platform carries them) when they hold a step around the
    lists, else None (as selection's own test: no step, straight to the lists)."""
    pl = next((pl for pl in rules.lists if pl.platform == platform), None)
    if pl is None:
        return None
    steps = (pl.request_errors or pl.rewrites or pl.request_fallbacks or pl.model_backend or pl.model_routes
             or pl.mla_prefill is not None or pl.compute_capability_from)
    return pl if steps else None


def _refused_by_name_only(ps: Any) -> bool:
    """A platform whose only step before the lists refuses some requests by their name (vLLM 0.17)."""
    return not (ps.rewrites or ps.request_fallbacks or ps.model_backend or ps.model_routes or ps.model_route_kv
                or ps.mla_prefill is not None or ps.compute_capability_from) \
        and all(lit.field == "backend" for _, when in ps.request_errors for lit in when)


def _step_fields(rules: Any, settings: list[Any]) -> tuple[set[str], set[str]]:
    """(fields the steps before selection read, fields they may change), derived facts expanded to their
    base fields. Everything read is enumerated in one unit so each of its rows knows the steps' outcome."""
    reads: set[str] = {"platform", "role", "backend"}
    writes: set[str] = {"backend"}
    for ps in settings:
        conds = [c for _, c in ps.request_errors]
        conds += [rw.when for rw in ps.rewrites if rw.stage == "before_selection"]
        conds += [c for _, c, only, _ in ps.request_fallbacks if not only]
        conds += [c.when for c in ps.model_backend] + [r.when for r in ps.model_routes]
        conds += [k.when for k in ps.model_route_kv]
        for c in conds:
            reads |= {lit.field for lit in c}
        for rw in ps.rewrites:
            if rw.stage == "before_selection":
                writes |= {k for k, _ in rw.set} | set(rw.unset)
        if ps.compute_capability_from:
            reads.add(ps.compute_capability_from)
            writes.add("compute_capability")
        if ps.mla_prefill is not None and ps.mla_prefill.request_field:
            reads.add(ps.mla_prefill.request_field)
    reads.discard("route_variant")  # the route's own variant, not a fact
    base: set[str] = set()
    todo = list(reads | writes)
    while todo:
        f = todo.pop()
        if f in base:
            continue
        base.add(f)
        d = rules.derived.get(f)
        if d is not None:
            todo.extend(d.inputs)
    derived = set(rules.derived)
    return base - derived, writes


def _prefill_list(pl: Any) -> bool:
    """A list only the MLA prefill role reaches."""
    return any(lit.field == "role" and lit.pred("mla_prefill") and not lit.pred("decode") for lit in pl.when)


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


def sweep(config: Config, *, role: Any = None, available: Iterable[str] | None = None) -> Sweep:
    """Select a backend for every combination of the value classes of `config`'s free (ANY) fields.

    role: None/'decode', 'mla_prefill' or ANY (sweep both). available: backend names runnable here
    (others are invalid, as in solve()). Raises ConfigError for a config solve() would reject.
    """
    from .selection import before_selection, compiled_rules
    from .guards import available_set, require_config
    require_config(config)
    available = available_set(available, config)
    comp = compiled_rules(config)
    rules = comp.rules
    role_free = role is ANY
    fixed_role = "decode" if role_free else parse_role(role)
    facts0 = base_facts(config, fixed_role)  # raises ConfigError for mla_prefill without MLA
    free = list(config.free_fields) + (["role"] if role_free else [])
    if role_free:
        facts0["role"] = ANY
    values = {f: _sweep_values(rules, f) for f in free}
    shown = {f: tuple(_shown(f, v) for v in vals) for f, vals in values.items()}
    avail = None if available is None else frozenset(available)

    # The platform's steps before the lists (vLLM >= 0.18): every free field they read is enumerated in one
    # unit (the steps unit), whose rows run them; the fields they change become that unit's too.
    scope = values["platform"] if "platform" in values else (facts0["platform"],)
    settings = [ps for p in scope if (ps := _platform_steps(rules, p)) is not None]
    # Steps that are only requests refused by name (0.17's NO_ATTENTION / TORCH_SDPA / CUSTOM) depend on no
    # other field: the fold decides them with the plan, so `backend` joins no unit of other fields.
    # (A request that names no backend of the rules, e.g. TORCH_SDPA, is answered per platform by the steps.)
    by_name = bool(settings) and all(_refused_by_name_only(ps) for ps in settings) \
        and (facts0.get("backend") in (None, ANY) or facts0.get("backend") in rules.backends)
    if by_name:
        settings = []
    reads, writes = _step_fields(rules, settings) if settings else (set(), set())
    step_free = [f for f in free if f in reads]
    moved = sorted(w for w in writes if w not in free) if step_free else []

    # Units: free fields tied by a derived fact or a validity rule are enumerated together.
    uf = _UnionFind([*free, *moved])
    if step_free:
        uf.union(*step_free, *moved, *(w for w in sorted(writes) if w in free))
    base_inputs: dict[str, set[str]] = {}
    for d in rules.derived.values():  # a derived fact may read another: tie the base fields underneath
        base_inputs[d.name] = set()
        for x in d.inputs:
            base_inputs[d.name] |= base_inputs.get(x, {x})
        uf.union(*sorted(base_inputs[d.name]))
    for tied in _pairs(rules):
        uf.union(*tied)
    groups: dict[str, list[str]] = {}
    for f in free:
        groups.setdefault(uf.find(f), []).append(f)
    owner: dict[str, str | None] = {f: uf.find(f) for f in (*free, *moved)}
    for d in rules.derived.values():
        ins = sorted(x for x in base_inputs[d.name] if x in free or x in moved)
        owner[d.name] = owner[ins[0]] if ins else None
    defaulted = [inv for inv in rules.invariants if inv.kind == "platform_field" and inv.default is not None]
    for inv in defaulted:  # None on rocm means gfx942: the value depends on the platform row
        if "platform" in owner and inv.field not in owner and facts0.get(inv.field) is None:
            owner[inv.field] = owner["platform"]
    fact_fields = (*config.field_names, "role", *rules.derived)  # the release's declared fields too
    steps_root = uf.find(step_free[0]) if step_free else None

    bits = _bits_for(comp)
    np = _np()
    backend_index = {b: i for i, b in enumerate(rules.backends)}
    plan_fields = {"platform", "backend", "role", *bits.list_fields}
    placeholder = {f: vals[0] for f, vals in values.items() if vals}
    outcomes: list[tuple[int, str]] = []  # forced outcomes: (backend code, what decided it)
    outcome_ids: dict[tuple[int, str], int] = {}

    def normalise(facts: dict[str, Any]) -> None:
        for inv in defaulted:  # what Config makes of rocm_arch=None on ROCm
            if facts.get(inv.field) is None and inv.field not in free and facts["platform"] in inv.platforms:
                facts[inv.field] = inv.default

    def forced(code: int, why: str) -> int:
        key = (code, why)
        if key not in outcome_ids:
            outcome_ids[key] = len(outcomes)
            outcomes.append(key)
        return outcome_ids[key]

    step_keys = tuple(sorted(reads))
    step_memo: dict[Any, tuple[int, tuple[tuple[str, Any], ...]]] = {}

    def run_steps(facts: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The platform's steps before selection on these facts (selection.before_selection itself):
        (forced outcome id or -1, the facts with the fields they change). The steps decide on the fields
        they read (`reads`, derived facts expanded), so their outcome is computed once per combination."""
        if _platform_steps(rules, facts["platform"]) is None:
            return -1, facts
        key = tuple(facts.get(f) for f in step_keys)
        try:
            got = step_memo.get(key)
        except TypeError:
            key, got = None, None
        if got is None:
            got = steps_outcome(facts)
            if key is not None:
                step_memo[key] = got
        force, changes = got
        if not changes:
            return force, facts
        out = dict(facts)
        out.update(changes)
        return force, out

    def steps_outcome(facts: dict[str, Any]) -> tuple[int, tuple[tuple[str, Any], ...]]:
        local = {k: (placeholder[k] if v is ANY else v) for k, v in facts.items() if k not in rules.derived}
        try:
            pre = before_selection(comp, config, local["role"], local)
        except (NoValidBackendError, InvalidBackendError):
            return forced(NO_BACKEND, "refused before selection"), ()
        except ConfigError:
            return forced(EXACT, "solved alone"), ()
        if pre.model is not None:
            name, _, route = pre.model
            return forced(backend_index.get(name, NO_BACKEND) if name else NO_BACKEND, f"model: {route}"), ()
        changes = tuple((w, pre.facts.get(w)) for w in sorted(writes))
        b = dict(changes).get("backend")
        if b is not None and b not in backend_index:
            return forced(EXACT, "solved alone"), ()
        return -1, changes

    # The fixed part: one row owning every fact no unit owns.
    fixed_facts = dict(facts0)
    fixed_forced = -1
    if settings and not step_free:  # the steps read only fixed fields: one outcome for the whole sweep
        fixed_forced, fixed_facts = run_steps(fixed_facts)
    for d in rules.derived.values():
        if owner.get(d.name) is None:
            fixed_facts[d.name] = d.evaluate(fixed_facts)[0]
    fixed_owns = [f for f in fact_fields if owner.get(f) is None]
    fixed_int = 0
    for f in fixed_owns:
        fixed_int |= bits.field_bits(f, fixed_facts.get(f))
    fixed_b = fixed_facts.get("backend")
    fixed_req = backend_index.get(fixed_b, -1) if "backend" not in owner and fixed_b is not None else -1
    if fixed_req < 0 and fixed_b is not None and "backend" not in owner and fixed_forced < 0:
        fixed_forced = forced(EXACT, "solved alone")  # a request by a name the rules lack, no step refused it

    units: list[_Unit] = []
    derive_memo: dict[str, dict[Any, Any]] = {}
    step_reads = set(reads)
    chains = {name: [d for d in rules.derived.values() if d.name == name or d.name in _derived_closure(rules, name)]
              for name in rules.derived}
    for root, ufields in groups.items():
        owns = tuple(f for f in fact_fields if owner.get(f) == root)
        is_steps = root == steps_root
        sizes = [len(values[f]) for f in ufields]
        total = math.prod(sizes)
        if total > _UNIT_MAX:
            raise ConfigError(ufields[0], ANY, "fewer free fields tied to it", message=(
                f"sweep too large: the free fields {', '.join(ufields)} are read together (by derived facts or "
                f"the platform's steps before the priority lists), {total:,} combinations to enumerate (the limit "
                f"is {_UNIT_MAX:,}); fix some of them"))
        axis_of = {f: i for i, f in enumerate(ufields)}

        def facts_for(fields: tuple[str, ...], combo: tuple[Any, ...]) -> dict[str, Any]:
            facts = dict(fixed_facts)
            facts.update(zip(fields, combo))
            normalise(facts)
            return facts

        # 1. which combinations are configurations: each validity rule reads a few of the unit's fields
        vfields = _valid_fields(rules, ufields)
        vtable = np.array([_valid(rules, facts_for(vfields, c), ufields, free)
                           for c in itertools.product(*(values[f] for f in vfields))], dtype=bool)
        valid_idx = np.flatnonzero(_broadcast(np, vtable, vfields, ufields, sizes).ravel())
        multi = np.unravel_index(valid_idx, sizes) if len(ufields) else ()

        def projected(fields: tuple[str, ...]) -> tuple[Any, int]:
            """Each valid row's index into the combinations of `fields` (C order), and their number."""
            if not fields:
                return np.zeros(len(valid_idx), dtype=np.int64), 1
            sub = [len(values[f]) for f in fields]
            return np.ravel_multi_index(tuple(multi[axis_of[f]] for f in fields), sub), math.prod(sub)

        # 2. the steps before the lists: once per combination of the fields they read
        sfields = tuple(f for f in ufields if f in step_reads or f == "platform") if is_steps else ()
        step_at: dict[tuple[Any, ...], tuple[int, dict[str, Any]]] = {}

        def evaluated(fields: tuple[str, ...], combo: tuple[Any, ...]) -> dict[str, Any]:
            facts = facts_for(fields, combo)
            if is_steps and set(sfields) <= set(fields):
                key = tuple(facts[f] for f in sfields)
                got = step_at.get(key)
                if got is None:
                    got = step_at[key] = run_steps(dict(facts))
                facts = dict(got[1], **{f: facts[f] for f in fields if f not in writes})
            return facts

        def deps(f: str) -> set[str]:
            if f in rules.derived:
                out: set[str] = set()
                for b in base_inputs[f]:
                    out |= deps(b)
                return out
            if is_steps and f in writes:
                return {*sfields, *({f} & set(ufields))}
            if f in ufields:
                return {f}
            return {"platform"} & set(ufields)  # a value Config fills in from the platform (rocm_arch)

        # every owned fact's clause bits (and the request), grouped by the fields they depend on
        words = np.zeros((len(valid_idx), bits.W), dtype=np.uint64)
        reqs = np.full(len(valid_idx), -1, dtype=np.int32)
        by_deps: dict[tuple[str, ...], list[str]] = {}
        for f in (*owns, *(("backend",) if "backend" in owns else ())):
            by_deps.setdefault(tuple(x for x in ufields if x in deps(f)), []).append(f)
        for fields, fs in by_deps.items():
            pidx, n = projected(fields)
            used = np.zeros(n, dtype=bool)
            used[pidx] = True
            combos = list(itertools.product(*(values[x] for x in fields)))
            need = [d for d in rules.derived.values() if any(d in chains[f] for f in fs if f in rules.derived)]
            ints = [0] * n
            rq = np.full(n, -1, dtype=np.int32)
            for k in np.flatnonzero(used).tolist():
                facts = evaluated(fields, combos[k])
                for d in need:
                    facts[d.name] = _derive(d, facts, derive_memo)
                x = 0
                for f in fs:
                    x |= bits.field_bits(f, facts.get(f))
                ints[k] = x
                b = facts.get("backend")
                if "backend" in fs and b is not None:
                    rq[k] = backend_index.get(b, -1)  # a name the rules lack: the steps decided the row
            words |= bits.words(ints)[pidx]
            if "backend" in fs:
                reqs = rq[pidx]
        forces = np.full(len(valid_idx), -1, dtype=np.int32)
        if is_steps:
            pidx, n = projected(sfields)
            used = np.zeros(n, dtype=bool)
            used[pidx] = True
            combos = list(itertools.product(*(values[x] for x in sfields)))
            ftab = np.full(n, -1, dtype=np.int32)
            for k in np.flatnonzero(used).tolist():
                ftab[k] = evaluated_force(sfields, combos[k], facts_for, step_at, run_steps)
            forces = ftab[pidx]
        rows = _Rows(tuple(ufields), tuple(tuple(_shown(f, v) for v in values[f]) for f in ufields), multi)
        outer = bool(set(owns) & plan_fields) or is_steps
        units.append(_Unit(tuple(ufields), owns, rows, words, reqs, outer, forces))

    names = (*config.field_names, "role")  # the release's fields: declared ones (dtype_explicit...) too
    order = sorted(units, key=lambda u: min(names.index(f) for f in u.fields))
    for i, u in enumerate(order):
        u.axis = i
    fold = _Fold(comp, bits, fixed_int, fixed_req, units, order, avail, fixed_forced, outcomes, by_name)
    return Sweep(config, ANY if role_free else fixed_role, avail, tuple(f for u in order for f in u.fields),
                 shown, units, fold)


# ---------------------------------------------------------------------------------------------------
# Folding the product of units
# ---------------------------------------------------------------------------------------------------
def _unique_rows(np: Any, keys: Any) -> tuple[Any, Any]:
    """Unique rows of a 2-D uint64 array: (unique rows, inverse index)."""
    keys = np.ascontiguousarray(keys)
    if keys.shape[1] == 1:
        u, inv = np.unique(keys[:, 0], return_inverse=True)
        return u.reshape(-1, 1), inv.reshape(-1)
    v = keys.view(np.dtype((np.void, keys.dtype.itemsize * keys.shape[1]))).reshape(-1)
    u, idx, inv = np.unique(v, return_index=True, return_inverse=True)
    return keys[idx], inv.reshape(-1)


def _sum_weights(np: Any, inv: Any, w: Any, n: int) -> Any:
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    total = int(w.sum()) if len(w) else 0
    if total < (1 << 52):
        return np.rint(np.bincount(inv, weights=w.astype(np.float64), minlength=n)).astype(np.int64)
    out = np.zeros(n, dtype=np.int64)
    np.add.at(out, inv, w)
    return out


class _PlanTable:
    """Candidates of each (priority list, requested backend) as clause-bit arrays; plans with a constant
    result (an outcome the steps before the lists forced, a decision-tree branch that raises) and plans whose
    rows a step the fold does not model decides (the MLA prefill layer, a refused request vLLM replaces by
    automatic selection) are marked."""

    def __init__(self, comp: Any, bits: _Bits, avail: frozenset[str] | None, by_name: bool = False):
        self.comp = comp
        self.by_name = by_name  # the platforms' request_errors are decided here (they read the request alone)
        self.bits = bits
        self.avail = avail
        self.keys: list[tuple[int, int]] = []
        self.index: dict[Any, int] = {}
        self.masks: list[Any] = []
        self.allowed: list[Any] = []
        self.cands: list[Any] = []  # backend index per candidate
        self.list_name: list[str] = []
        self.const: dict[int, int] = {}  # plan -> its result code
        self.exact_on_fail: set[int] = set()  # plans whose failing rows are solved alone
        self.layer: dict[int, Any] = {}  # MLA prefill plans -> the platform's layer step (mla_prefill settings)
        self.names = (*comp.rules.backends, NO_PREFILL)
        self._bidx = {b: i for i, b in enumerate(self.names)}
        self._platforms: dict[str, Any] = {}

    def _new(self, key: Any, name: str, masks: Any, allowed: Any, cands: Any) -> int:
        pid = self.index[key] = len(self.keys)
        self.keys.append(key)
        self.list_name.append(name)
        self.masks.append(masks)
        self.allowed.append(allowed)
        self.cands.append(cands)
        return pid

    def constant(self, code: int, name: str) -> int:
        """A plan with no candidate whose every row answers `code`."""
        key = ("const", code, name)
        pid = self.index.get(key)
        if pid is None:
            np = _np()
            pid = self._new(key, name, np.zeros((0, self.bits.W), dtype=np.uint64), np.zeros(0, dtype=bool),
                            np.zeros(0, dtype=np.int32))
            self.const[pid] = code
        return pid

    def get(self, list_idx: int, req: int) -> int:
        key = (list_idx, req)
        pid = self.index.get(key)
        if pid is None:
            np = _np()
            pl = self.comp.rules.lists[list_idx]
            if self.by_name and req >= 0 and any(all(lit({"backend": self.names[req]}) for lit in when)
                                                 for _, when in pl.request_errors):
                pid = self.constant(NO_BACKEND, "refused before selection")
                self.index[key] = pid
                return pid
            if pl.error:  # a decision-tree branch that raises: nothing is selected
                pid = self.constant(NO_BACKEND, pl.name)
                self.index[key] = pid
                return pid
            p, masks = self.comp.plan(pl, None if req < 0 else self.names[req])
            pid = self._new(key, pl.name, self.bits.plan_words(key, masks),
                            np.array([self.avail is None or c.backend in self.avail for c in p.candidates], dtype=bool),
                            np.array([self._bidx[c.backend] for c in p.candidates], dtype=np.int32))
            ps = _platform_steps(self.comp.rules, pl.platform)
            if ps is not None and ps.mla_prefill is not None and _prefill_list(pl):
                self.layer[pid] = ps.mla_prefill  # the layer's decode selection, skips and fallbacks come first
            elif req >= 0 and any(only for _, _, only, _ in pl.request_fallbacks):
                self.exact_on_fail.add(pid)  # the refusal's reasons decide whether vLLM selects automatically
        return pid


class _Fold:
    """The product of the units folded into distinct states; transition tables give every row."""

    def __init__(self, comp: Any, bits: _Bits, fixed_int: int, fixed_req: int, units: list[_Unit],
                 order: list[_Unit], avail: frozenset[str] | None, fixed_forced: int = -1,
                 outcomes: list[tuple[int, str]] | None = None, by_name: bool = False):
        np = _np()
        self.np = np
        self.bits = bits
        self.order_units = order
        self.plans = _PlanTable(comp, bits, avail, by_name)
        self.names = self.plans.names
        W = bits.W
        outer = [u for u in units if u.outer]
        inner = sorted((u for u in units if not u.outer), key=lambda u: len(u.rows))
        self.steps: list[tuple[_Unit, Any]] = []  # (unit, table: prev state -> row -> next state)

        # Outer phase: full bits + requested backend + forced outcome, deduplicated.
        words = bits.words([fixed_int]).reshape(1, W)
        req = np.array([fixed_req], dtype=np.int32)
        force = np.array([fixed_forced], dtype=np.int32)
        weight = np.ones(1, dtype=np.int64)
        for u in outer:
            n = len(u.rows)
            S = len(words)
            pw = (words[:, None, :] | u.words[None, :, :]).reshape(S * n, W)
            pr = np.maximum(req[:, None], u.req[None, :]).reshape(S * n)
            uf_ = u.forced if u.forced is not None else np.full(n, -1, dtype=np.int32)
            pf = np.maximum(force[:, None], uf_[None, :]).reshape(S * n)
            keys = np.concatenate([pr.astype(np.int64).view(np.uint64).reshape(-1, 1),
                                   pf.astype(np.int64).view(np.uint64).reshape(-1, 1), pw], axis=1)
            uk, inv = _unique_rows(np, keys)
            self.steps.append((u, inv.reshape(S, n).astype(np.int32)))
            weight = _sum_weights(np, inv, np.repeat(weight, n), len(uk))
            words = uk[:, 2:]
            req = uk[:, 0].view(np.int64).astype(np.int32)
            force = uk[:, 1].view(np.int64).astype(np.int32)

        # Priority list: the first one not ruled out; plan = (list, requested); or the forced outcome.
        nc, L = bits.nclauses, len(bits.lists)
        plan_ids = np.full(len(words), -1, dtype=np.int64)
        open_ = np.zeros((len(words), max(L, 1)), dtype=bool)  # list li not ruled out
        for li in range(L):
            b = nc + li
            open_[:, li] = ((words[:, b // 64] >> np.uint64(b % 64)) & np.uint64(1)) == 0
        any_open = open_[:, :L].any(axis=1) if L else np.zeros(len(words), dtype=bool)
        first = open_.argmax(axis=1)
        forced_rows = (force >= 0) if outcomes else np.zeros(len(words), dtype=bool)
        # an invalid row (no list applies) stays excluded whatever the steps said
        keys = np.stack([np.where(forced_rows, -1, first), np.where(forced_rows, force, req)], axis=1)
        live = any_open
        if live.any():
            uk, inv = np.unique(keys[live].astype(np.int64), axis=0, return_inverse=True)
            # (first open list, request) -> its plan; (-1, forced outcome) -> that outcome's constant plan
            pids = np.array([self.plans.constant(*outcomes[v]) if li < 0 else self.plans.get(li, v)
                             for li, v in uk.tolist()], dtype=np.int64)
            plan_ids[live] = pids[inv.reshape(-1)]
        clause_mask = bits.words([(1 << nc) - 1]).reshape(W)
        sat = words & clause_mask

        # Remaining bits each inner step could still add (suffix ORs).
        remaining = [np.zeros(W, dtype=np.uint64) for _ in range(len(inner) + 1)]
        for k in range(len(inner) - 1, -1, -1):
            remaining[k] = remaining[k + 1] | np.bitwise_or.reduce(inner[k].words, axis=0) & clause_mask \
                if len(inner[k].rows) else remaining[k + 1]
        sat = self._canon(plan_ids, sat, remaining[0])
        keys = np.concatenate([plan_ids.view(np.uint64).reshape(-1, 1), sat], axis=1)
        uk, inv = _unique_rows(np, keys)
        self.to_plan = inv.astype(np.int32)
        weight = _sum_weights(np, inv, weight, len(uk))
        plan_ids, sat = uk[:, 0].view(np.int64), uk[:, 1:]

        # Inner phase: per-plan canonical states.
        for k, u in enumerate(inner):
            n = len(u.rows)
            S = len(sat)
            pw = (sat[:, None, :] | (u.words[None, :, :] & clause_mask)).reshape(S * n, W)
            pp = np.repeat(plan_ids, n)
            pw = self._canon(pp, pw, remaining[k + 1])
            keys = np.concatenate([pp.view(np.uint64).reshape(-1, 1), pw], axis=1)
            uk, inv = _unique_rows(np, keys)
            self.steps.append((u, inv.reshape(S, n).astype(np.int32)))
            weight = _sum_weights(np, inv, np.repeat(weight, n), len(uk))
            plan_ids, sat = uk[:, 0].view(np.int64), uk[:, 1:]

        # Outcome of every final state.
        self.plain = self._first_valid(plan_ids, sat)  # the prefill lists' own answer, before the layer
        layer = np.isin(plan_ids, np.array(sorted(self.plans.layer), dtype=np.int64))
        self.result = np.where(layer, np.int32(EXACT), self.plain).astype(np.int32)
        self.total = int(weight.sum())
        self.excluded_weight = int(weight[plan_ids < 0].sum())
        counts: dict[tuple[str, str | None], int] = {}
        for pid, code, w in zip(plan_ids.tolist(), self.result.tolist(), weight.tolist()):
            if pid < 0 or w == 0:
                continue
            key = (self.plans.list_name[pid], self.names[code] if code >= 0 else None)
            counts[key] = counts.get(key, 0) + w
        self.counts = counts
        self.final_plan = plan_ids
        self.needs_exact = bool(((self.result == EXACT) & (weight > 0)).any())
        self._full: Any = None

    def materialise(self, solve_row: Any, fixed: dict[str, Any] | None = None) -> None:
        """Every row's code, the rows a step the fold does not model decides (EXACT) solved one by one by
        `solve_row(assignment) -> code` (EXCLUDED when Config or solve refuses the row); counts recomputed.

        MLA prefill rows (the layer step) are decided from the same assignment's decode row when the role is
        swept: a decode failure is the layer's, a decode backend no skip names leaves the prefill lists' own
        answer, and a failed prefill selection is swallowed where a fallback's condition (read on the row's
        own fields) holds; only rows a skip may name, or whose fallback reads what decode changes, are solved
        alone. `fixed`: the sweep's fixed fields (Config values), for those conditions."""
        np = self.np
        codes = np.array(self._gather(None, self.result))
        plans = np.array(self._gather(None, self.final_plan))
        units = self.order_units
        exact = codes == EXACT
        layer_pids = np.array(sorted(self.plans.layer), dtype=np.int64)
        in_layer = exact & np.isin(plans, layer_pids)
        for idx in np.argwhere(exact & ~in_layer).tolist():  # decode rows first: the layer reads them
            codes[tuple(idx)] = solve_row(_merged(u.rows[idx[u.axis]] for u in units))
        if in_layer.any():
            self._layer_rows(codes, plans, in_layer, solve_row, fixed or {})
        self._full = codes
        keep = codes != EXCLUDED
        self.excluded_weight = int(codes.size - keep.sum())
        counts: dict[tuple[str, str | None], int] = {}
        if keep.any():
            pairs, n = np.unique(np.stack([plans[keep].astype(np.int64), codes[keep].astype(np.int64)]), axis=1,
                                 return_counts=True)
            for (pid, code), w in zip(pairs.T.tolist(), n.tolist()):
                key = (self.plans.list_name[pid], self.names[code] if code >= 0 else None)
                counts[key] = counts.get(key, 0) + w
        self.counts = counts

    def _layer_rows(self, codes: Any, plans: Any, in_layer: Any, solve_row: Any, fixed: dict[str, Any]) -> None:
        """Codes of the MLA prefill rows (see materialise), in place."""
        np = self.np
        units = self.order_units
        ru = next((u for u in units if "role" in u.fields), None)
        alone = np.zeros_like(in_layer)
        if ru is None:  # the role is fixed: no decode row to read
            alone = in_layer
        else:
            index = {tuple(sorted((k, v) for k, v in r.items() if k != "role")): i
                     for i, r in enumerate(ru.rows) if r["role"] == "decode"}
            twin = np.array([index.get(tuple(sorted((k, v) for k, v in r.items() if k != "role")), -1)
                             for r in ru.rows], dtype=np.int64)
            decode = np.take(codes, np.maximum(twin, 0), axis=ru.axis)
            shape = [1] * codes.ndim
            shape[ru.axis] = len(ru.rows)
            decode = np.where((twin < 0).reshape(shape), np.int32(EXACT), decode)
            plain = np.array(self._gather(None, self.plain))
            owner = {f: u for u in units for f in u.fields}
            for pid, mp in self.plans.layer.items():
                here = in_layer & (plans == pid)
                if not here.any():
                    continue
                d = decode[here]
                out = np.full(d.shape, EXACT, dtype=np.int32)
                out[d == NO_BACKEND] = NO_BACKEND  # the layer's decode selection fails: the row fails
                ok = d >= 0
                names = self.names
                skippable = np.zeros(len(names), dtype=bool)
                for _, when in mp.skips:
                    lits = [lit for lit in when if lit.field == "decode_backend"]
                    for c, name in enumerate(names):
                        if all(lit.pred(name) for lit in lits):
                            skippable[c] = True
                ok &= ~skippable[np.maximum(d, 0)]
                pl = plain[here]
                out[ok & (pl >= 0)] = pl[ok & (pl >= 0)]
                failed = ok & (pl == NO_BACKEND)
                if failed.any():
                    verdict = self._fallbacks(mp, owner, fixed)
                    if verdict is None:
                        continue  # left EXACT: solved alone
                    fields, holds = verdict
                    where = np.argwhere(here)[failed]
                    memo: dict[tuple[Any, ...], bool] = {}
                    vals = out[failed]
                    for k, idx in enumerate(where.tolist()):
                        key = tuple(owner[f].rows[idx[owner[f].axis]][f] if f in owner else fixed.get(f)
                                    for f in fields)
                        h = memo.get(key)
                        if h is None:
                            h = memo[key] = holds(dict(zip(fields, key)))
                        vals[k] = self.names.index(NO_PREFILL) if h else NO_BACKEND
                    out[failed] = vals
                codes[here] = out
            alone = in_layer & (codes == EXACT)
        for idx in np.argwhere(alone).tolist():
            codes[tuple(idx)] = solve_row(_merged(u.rows[idx[u.axis]] for u in units))

    def _fallbacks(self, mp: Any, owner: dict[str, Any], fixed: dict[str, Any]) -> Any:
        """(fields, holds(values) -> whether a fallback swallows a failed prefill selection) when the fallbacks
        read only the row's own base fields (not the decode step's changes, not the compute capability, whose
        row values are shown as text), else None."""
        fields = tuple(dict.fromkeys(lit.field for _, when in mp.fallbacks for lit in when))
        rules = self.plans.comp.rules
        changed = {"decode_backend", "compute_capability", "backend", *rules.derived}
        for pl in rules.lists:
            for rw in pl.rewrites:
                changed |= {k for k, _ in rw.set} | set(rw.unset)
            for kv in pl.model_route_kv:
                changed |= {k for k, _ in kv.set}
        if set(fields) & changed:
            return None

        def holds(facts: dict[str, Any]) -> bool:
            return any(all(lit(facts) for lit in when) for _, when in mp.fallbacks)
        return fields, holds

    def _canon(self, plan_ids: Any, sat: Any, remaining: Any) -> Any:
        """Keep only the clause bits that can still change the outcome under each state's plan."""
        np = self.np
        out = np.zeros_like(sat)
        for pid in np.unique(plan_ids).tolist():
            if pid < 0:
                continue
            sel = np.nonzero(plan_ids == pid)[0]
            C, allowed = self.plans.masks[pid], self.plans.allowed[pid]
            s = sat[sel]
            need = C[None, :, :] & ~s[:, None, :]
            valid = ~need.any(axis=2) & allowed[None, :]
            dead = (need & ~remaining).any(axis=2) | ~allowed[None, :]
            nc = C.shape[0]
            # a plan with no candidate (a request no list accepts): nothing can be first
            first = np.where(valid.any(axis=1), valid.argmax(axis=1), nc) if nc else np.zeros(len(sel), dtype=np.int64)
            relevant = ~dead & (np.arange(nc)[None, :] <= first[:, None])
            keep = np.bitwise_or.reduce(np.where(relevant[:, :, None], C[None, :, :], np.uint64(0)), axis=1) \
                if nc else np.zeros_like(s)
            out[sel] = s & keep
        return out

    def _first_valid(self, plan_ids: Any, sat: Any) -> Any:
        np = self.np
        res = np.full(len(sat), EXCLUDED, dtype=np.int32)
        for pid in np.unique(plan_ids).tolist():
            if pid < 0:
                continue
            sel = np.nonzero(plan_ids == pid)[0]
            if pid in self.plans.const:
                res[sel] = self.plans.const[pid]
                continue
            C, allowed = self.plans.masks[pid], self.plans.allowed[pid]
            valid = ((sat[sel][:, None, :] & C[None, :, :]) == C[None, :, :]).all(axis=2) & allowed[None, :]
            hit = valid.any(axis=1)
            idx = valid.argmax(axis=1) if C.shape[0] else np.zeros(len(sel), dtype=np.int64)
            cands = self.plans.cands[pid]
            failed = EXACT if pid in self.plans.exact_on_fail else NO_BACKEND
            res[sel] = np.where(hit, cands[idx] if len(cands) else failed, failed)
        return res

    def codes(self, prefix: tuple[int, ...] | None) -> Any:
        """Row codes over the product in iteration order; leading units fixed to `prefix` rows."""
        if self._full is not None:
            return self._full if not prefix else self._full[tuple(slice(p, p + 1) for p in prefix)]
        return self._gather(prefix, self.result)

    def _gather(self, prefix: tuple[int, ...] | None, table: Any) -> Any:
        """`table` (one value per final state) over the product in iteration order."""
        np = self.np
        nd = len(self.order_units)
        if nd == 0:
            return table[self.to_plan[np.zeros(1, dtype=np.int64)]]
        idx = {}
        for u in self.order_units:
            shape = [1] * nd
            if prefix is not None and u.axis < len(prefix):
                ar = np.array([prefix[u.axis]], dtype=np.int64)
            else:
                ar = np.arange(len(u.rows), dtype=np.int64)
                shape[u.axis] = len(u.rows)
            idx[id(u)] = ar.reshape(shape)
        state: Any = np.zeros([1] * nd, dtype=np.int64)
        outer_done = False
        for u, step in self.steps:
            if not u.outer and not outer_done:
                state = self.to_plan[state]
                outer_done = True
            state = step[state, idx[id(u)]]
        if not outer_done:
            state = self.to_plan[state]
        out = table[state]
        full = [1] * nd
        for u in self.order_units:
            if not (prefix is not None and u.axis < len(prefix)):
                full[u.axis] = len(u.rows)
        return np.broadcast_to(out, full)
