"""Folding the product of a sweep's units into distinct states: what makes a sweep fast.

Counts come from state weights without enumerating; every row's code comes from the per-unit transition
tables by array gathers; the rows the fold cannot decide are solved one at a time (`_Fold.materialise`).
"""

from __future__ import annotations

from typing import Any

from .sweep_bits import _Bits
from .sweep_plans import _PlanTable
from .sweep_rows import EXACT, EXCLUDED, NO_BACKEND, NO_PREFILL, _merged, _np
from .sweep_units import _Unit


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
        counted = keep & (plans >= 0)  # (a row no list applies to is EXCLUDED)
        if counted.any():
            # (plan, code) pairs counted through one integer key (a 2-D unique sorts columns: seconds at millions)
            lo = int(codes[counted].min())
            width = int(codes[counted].max()) - lo + 1
            key = plans[counted].astype(np.int64) * width + (codes[counted].astype(np.int64) - lo)
            n = np.bincount(key)
            for k in np.nonzero(n)[0].tolist():
                pid, code = divmod(k, width)
                code += lo
                name = (self.plans.list_name[pid], self.names[code] if code >= 0 else None)
                counts[name] = counts.get(name, 0) + int(n[k])
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
                skipped, undecided = self._skips(mp, d, here, codes.shape, owner, fixed)
                out[ok & skipped] = self.names.index(NO_PREFILL)
                ok &= ~skipped & ~undecided  # undecided: left EXACT (solved alone)
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

    def _skips(self, mp: Any, d: Any, here: Any, shape: tuple[int, ...], owner: dict[str, Any],
               fixed: dict[str, Any]) -> tuple[Any, Any]:
        """(skipped, undecided) for the layer rows `here` (their decode codes `d`): a skip whose literals read the
        decode backend and the row's own base fields is decided per row, the base fields as one vector per unit
        broadcast over the space (a sparse layer's skip reads only use_sparse, over every prefill row); a skip
        reading anything else leaves the rows whose decode backend it names undecided."""
        np = self.np
        names = self.names
        skipped = np.zeros(d.shape, dtype=bool)
        undecided = np.zeros(d.shape, dtype=bool)
        changed = self._changed_fields()
        for _, when in mp.skips:
            dec = [lit for lit in when if lit.field == "decode_backend"]
            rest = [lit for lit in when if lit.field != "decode_backend"]
            by_name = np.array([all(lit.pred(name) for lit in dec) for name in names], dtype=bool)
            named = by_name[np.maximum(d, 0)]
            if any(lit.field in changed for lit in rest):
                undecided |= named
                continue
            mask: Any = True
            for lit in rest:
                u = owner.get(lit.field)
                if u is None:
                    mask = mask & bool(lit.pred(fixed.get(lit.field)))
                    continue
                vec = np.array([bool(lit.pred(r.get(lit.field))) for r in u.rows], dtype=bool)
                axis_shape = [1] * len(shape)
                axis_shape[u.axis] = len(u.rows)
                mask = mask & vec.reshape(axis_shape)
            holds = np.broadcast_to(np.asarray(mask, dtype=bool), shape)[here]
            skipped |= named & holds
        return skipped, undecided & ~skipped

    def _changed_fields(self) -> set[str]:
        """Facts a layer row's base fields do not give as they are: the decode step's, the compute capability (its
        row values are shown as text), the request, derived facts and every field a rewrite or model route sets."""
        rules = self.plans.comp.rules
        changed = {"decode_backend", "compute_capability", "backend", *rules.derived}
        for pl in rules.lists:
            for rw in pl.rewrites:
                changed |= {k for k, _ in rw.set} | set(rw.unset)
            for kv in pl.model_route_kv:
                changed |= {k for k, _ in kv.set}
        return changed

    def _fallbacks(self, mp: Any, owner: dict[str, Any], fixed: dict[str, Any]) -> Any:
        """(fields, holds(values) -> whether a fallback swallows a failed prefill selection) when the fallbacks
        read only the row's own base fields (not the decode step's changes, not the compute capability, whose
        row values are shown as text), else None."""
        fields = tuple(dict.fromkeys(lit.field for _, when in mp.fallbacks for lit in when))
        if set(fields) & self._changed_fields():
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
