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

One idea per module, each importing only those below it:
  sweep           sweep() and the Sweep it returns (this module)
  sweep_fold      the product of the units folded into distinct states
  sweep_plans     each priority list's candidates as clause masks
  sweep_bits      the bit layout: compiled clauses, then the lists ruled out
  sweep_steps     the platform's steps around the priority lists (vLLM >= 0.18)
  sweep_validity  which combinations are configurations (the rule set's invariants)
  sweep_units     free fields enumerated together, the values each takes
  sweep_rows      what a row carries: its backend code and its assignment
`import attnsolve` loads sweep and sweep_rows only (the CLI's start-up); sweep() imports the rest when it
runs.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from .config import ANY, Config
from .errors import ConfigError, InvalidBackendError, NoValidBackendError
from .solver.facts import base_facts, parse_role
from .sweep_rows import EXACT, EXCLUDED, NO_BACKEND, _merged, _np, _Rows, _shown

if TYPE_CHECKING:  # imported by sweep() when it runs (see there)
    from .sweep_fold import _Fold
    from .sweep_units import _Unit

__all__ = ["sweep", "Sweep", "EXCLUSIONS"]

EXCLUSIONS: tuple[str, ...] = (
    "a platform field set on a platform not its own ([[invariants]] of the rule set: compute_capability "
    "off cuda, rocm_arch off rocm; a declared field scoped to some platforms, cpu_amx, set off them; Config "
    "rejects it)",
    "a required platform field unset on its platform (compute_capability on cuda; Config rejects it)",
    "a platform field with an assumed value left None on its platform while the field is free (rocm_arch "
    "None means gfx942 there: the same configuration twice)",
    "a clause of [[invariants]] broken (role mla_prefill with use_mla=False: solve() rejects it)",
    "a declared field left None where its defaults fill it while the field is free (0.21's mla_prefill_backend with "
    "a deprecated prefill switch on: Config takes the name the switch gives, the same configuration twice)",
    "a role the platform has no priority list for (solve() raises ConfigError, e.g. CPU MLA prefill)",
)

_CHUNK = 1 << 20  # rows materialised at a time while iterating
_TAIL = 4096  # innermost combinations whose assignments are merged once
_GRID_MAX = 1 << 26  # largest grid() materialised
_UNIT_MAX = 1 << 25  # most combinations one unit (fields read together) enumerates


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
            rows = math.prod(len(u.rows) for u in units)  # the codes materialise() lays out, one per row
            if rows > _GRID_MAX:
                free = ", ".join(fields)
                raise ConfigError(fields[0] if fields else "role", ANY, "fewer free fields", message=(
                    f"sweep too large: {rows:,} combinations of the free fields ({free}) include rows the fold "
                    f"cannot decide (the MLA layer's decode backend first, or a step it does not model), so every "
                    f"row would be laid out (the limit is {_GRID_MAX:,}); fix some of them"))
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


def sweep(config: Config, *, role: Any = None, available: Iterable[str] | None = None) -> Sweep:
    """Select a backend for every combination of the value classes of `config`'s free (ANY) fields.

    role: None/'decode', 'mla_prefill' or ANY (sweep both). available: backend names runnable here
    (others are invalid, as in solve()). Raises ConfigError for a config solve() would reject.
    """
    from .selection import before_selection, compiled_rules
    from .guards import available_set, require_config
    # the building machinery: loaded by the first sweep, not by `import attnsolve` (the CLI's start-up)
    from .sweep_bits import _bits_for
    from .sweep_fold import _Fold
    from .sweep_steps import _refused_by_name_only, _step_fields, _steps_before_lists, evaluated_force
    from .sweep_units import _broadcast, _derive, _derived_closure, _sweep_values, _UnionFind, _Unit
    from .sweep_validity import _pairs, _valid, _valid_fields
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
    settings = [ps for p in scope if (ps := _steps_before_lists(rules, p)) is not None]
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

    # Units: free fields tied by a derived fact or a validity rule are enumerated together.  A platform field
    # Config fills in from the platform (rocm_arch None -> gfx942 on ROCm) takes its value from the platform row:
    # it, and every derived fact that reads it, belong to the platform's unit.
    defaulted = [inv for inv in rules.invariants if inv.kind == "platform_field" and inv.default is not None]
    by_platform = [inv.field for inv in defaulted
                   if "platform" in free and inv.field not in free and inv.field not in moved
                   and facts0.get(inv.field) is None]
    uf = _UnionFind([*free, *moved, *by_platform])
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
    for f in by_platform:
        uf.union("platform", f)
    groups: dict[str, list[str]] = {}
    for f in free:
        groups.setdefault(uf.find(f), []).append(f)
    owner: dict[str, str | None] = {f: uf.find(f) for f in (*free, *moved, *by_platform)}
    for d in rules.derived.values():
        ins = sorted(x for x in base_inputs[d.name] if x in free or x in moved or x in by_platform)
        owner[d.name] = owner[ins[0]] if ins else None
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
        if _steps_before_lists(rules, facts["platform"]) is None:
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
