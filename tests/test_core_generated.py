"""Per-backend tests generated from the rules, not from hand-written lists.

For every backend in the active rules and every platform it is declared for, a search over the
rules' value classes (`attnsolve.solver.domains.representatives`) finds a configuration that
requests it and that selection must accept. For every check of a backend that a platform
validates (CUDA's validate_configuration, ROCm's manual table guards), the search finds a
configuration that violates that check (and, where the rules allow it, nothing else) and the
InvalidBackendError must carry exactly that reason. A backend added to the TOML files adds
tests here with no change to this file.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Any, Callable

import pytest

from attnsolve import Config, vllm_versions, ConfigError, InvalidBackendError, NoValidBackendError, solve
from attnsolve.errors import SelectionError
from attnsolve.config import FIELD_NAMES, requestable_backends
from attnsolve.rules import rules_for
from attnsolve.rules.loader import cc_from_text
from attnsolve.rules.model import Check
from attnsolve.solver.domains import representatives
from attnsolve.solver.facts import base_facts
from attnsolve.solver.semantics import AUTO, plan, select_list, without_dropped

import sizes

# Every release: the cases are generated at import from each release's rule set and run with that release
# as the default one (pytest.param(..., marks=pytest.mark.vllm(v)), ids prefixed with the release).
INF = 10 ** 6


class Release:
    """The generated cases of one release's rule set (each release's own value classes and lists)."""

    def __init__(self, version: str):
        self.version = version
        self.rules = rules_for(version)
        self._config_cache: dict[tuple, Config | None] = {}

    # -- what the rules say must hold ------------------------------------------------------------------

    def _config_fields(self, field: str) -> tuple[str, ...]:
        """Config fields a rule field depends on (a derived fact -> its inputs, recursively)."""
        if field in self.rules.derived:
            return tuple(dict.fromkeys(x for inp in self.rules.derived[field].inputs for x in self._config_fields(inp)))
        # the release's declared fields too (0.33: cpu_amx, head_size_v...): Config takes them by name
        return (field,) if field in FIELD_NAMES or field in self.rules.fields else ()

    def _facts(self, cfg: Config, role: str) -> dict[str, Any]:
        facts = base_facts(cfg, role)
        for name, d in self.rules.derived.items():  # the derived facts case by case, in dependency order
            facts[name] = d.evaluate(facts)[0]
        lists = self.rules.lists_for(cfg.platform)
        src = lists[0].compute_capability_from if lists else ""
        if src and facts.get("compute_capability") is None:  # 0.33's ROCm: the capability of the gfx arch
            facts["compute_capability"] = cc_from_text(facts.get(src))
            for name, d in self.rules.derived.items():
                facts[name] = d.evaluate(facts)[0]
        return facts

    def _own_checks(self, backend: str, platform: str) -> tuple[Check, ...]:
        """The checks selection runs for a manual request of `backend` on `platform` (empty: none validated)."""
        checks: list[Check] = []
        role = self.rules.backends[backend].role
        for pl in self.rules.lists_for(platform):
            if not all(lit.pred(role) for lit in pl.when if lit.field == "role"):
                continue  # another role's list (0.33's XPU validates only its MLA prefill requests)
            if pl.manual == "validate":  # as the platform's selector sees them (vLLM 0.17 CUDA drops the block size)
                return without_dropped(self.rules.backends[backend].checks, pl.drops)
            for e in pl.manual_accept:
                if e.backend == backend:
                    checks += [g for g in e.guards if g not in checks]
        return tuple(checks)

    def _relevant_fields(self, backend: str, platform: str, *, others: bool = False) -> tuple[str, ...]:
        """Config fields the search may change: the backend's checks, the lists and their guards, and
        (others=True, for automatic selection) the checks of the candidates that must lose first."""
        fields: dict[str, None] = {}
        b = self.rules.backends[backend]
        lits = [lit for c in b.checks for lit in c.clause()]
        for pl in self.rules.lists_for(platform):
            lits += list(pl.when)
            for e in (*pl.entries, *pl.manual_accept):
                lits += [lit for g in e.guards for lit in g.clause()]
                if others and pl.validate:  # the candidates before it must be ruled out by their own checks
                    lits += [lit for c in self.rules.backends[e.backend].checks for lit in c.clause()]
        for lit in lits:
            for f in self._config_fields(lit.field):
                fields[f] = None
        for f in ("platform", "backend", "compute_capability", "rocm_arch"):
            fields.pop(f, None)
        return tuple(fields)

    @lru_cache(maxsize=None)
    def _reps(self, field: str) -> tuple[Any, ...]:
        return representatives(self.rules, field)



    def _make(self, data: dict[str, Any]) -> Config | None:
        key = tuple(sorted(data.items(), key=lambda kv: kv[0]))
        if key not in self._config_cache:
            try:
                self._config_cache[key] = Config(**data, vllm=self.version)
            except ConfigError:
                self._config_cache[key] = None
        return self._config_cache[key]

    def _evaluate(self, cfg: Config, backend: str, role: str) -> tuple[str | None, tuple[Check, ...] | None]:
        """(backend the rules select, checks of `backend` that fire when it was requested) by the plan alone."""
        try:
            facts = self._facts(cfg, role)
        except ConfigError:  # e.g. the MLA prefill role asked of a non-MLA config
            return None, None
        pl = select_list(self.rules, facts)
        if pl is None:
            return None, None
        p = plan(self.rules, pl, cfg.backend)
        winner = None
        for cand in p.candidates:
            if not any(c.fires(facts) for c in cand.checks):
                winner = cand.backend
                break
        mine = [c for c in p.candidates if c.backend == backend]
        fired = tuple(c for c in mine[0].checks if c.fires(facts)) if mine else None
        return winner, fired

    def _search(self, start: dict[str, Any], fields: tuple[str, ...], score: Callable[[Config], int],
                groups: tuple[tuple[str, ...], ...] = (), loose: tuple[str, ...] = ()) -> tuple[dict, int]:
        """Hill-climb over the fields' value classes: single-field moves, then joint moves over the
        fields of one check (a check such as "DeepSeek R1 dims" needs three fields at once), then pairs."""
        cur = dict(start)
        cfg = self._make(cur)
        best = score(cfg) if cfg is not None else INF

        def moves():
            for f in fields:
                for v in self._reps(f):
                    yield {f: v}
            yield None  # a checkpoint: stop here if something improved
            for group in groups:
                if len(group) > 1:
                    for values in itertools.product(*(self._reps(f) for f in group)):
                        yield dict(zip(group, values))
            yield None
            for f, g in itertools.combinations(fields, 2):
                for v, w in itertools.product(self._reps(f), self._reps(g)):
                    yield {f: v, g: w}

        while best > 0:
            improved = False
            for change in moves():
                if change is None:
                    if improved:
                        break
                    continue
                cand = {**cur, **change}
                c = self._make(cand)
                if c is None and loose:  # the move with Config's own values for the loose fields it does not set
                    cand = {k: v for k, v in cand.items() if k not in loose or k in change}
                    c = self._make(cand)
                s = score(c) if c is not None else INF
                if s < best:
                    cur, best, improved = cand, s, True
            if not improved:
                break
        return cur, best

    def _groups(self, backend: str, platform: str) -> tuple[tuple[str, ...], ...]:
        """Config fields of each check (derived facts expanded to their inputs), for joint moves."""
        checks = [*self.rules.backends[backend].checks, *self._own_checks(backend, platform)]
        out: dict[tuple[str, ...], None] = {}
        for c in checks:
            fs = tuple(dict.fromkeys(x for f in c.fields for x in self._config_fields(f)))
            fs = tuple(f for f in fs if f not in ("platform", "backend"))
            if 1 < len(fs) <= 4:
                out[fs] = None
        return tuple(out)

    def _possible_on(self, lit: Any, platform: str) -> bool:
        """False for a condition no config of `platform` meets: on the platform itself, or on a derived fact whose
        cases for this platform never give a value it accepts (0.33's FLASH_ATTN head sizes when fa_caps = XPU)."""
        if lit.field == "platform":
            return lit.pred(platform)
        d = self.rules.derived.get(lit.field)
        if d is None or not d.cases:
            return True
        values = [c.value for c in d.cases if all(x.pred(platform) for x in c.when if x.field == "platform")]
        return any(lit.pred(v) for v in values)

    def _can_fire(self, check: Check) -> bool:
        """False for a check no value of its field can violate (e.g. FLASH_ATTN's attention types list all four)."""
        field = check.require.field
        if field not in FIELD_NAMES:
            return True
        return any(not check.require.pred(v) for v in self._reps(field))

    def _start(self, backend: str, platform: str) -> dict[str, Any]:
        b = self.rules.backends[backend]
        data: dict[str, Any] = {"platform": platform, "dtype": self.rules.domains["dtype"][0], "backend": backend}
        if platform == "cuda":
            data["compute_capability"] = "9.0"
        sparse_list = any(lit.field == "use_sparse" for pl in self.rules.lists_for(platform) for lit in pl.when
                          if any(e.backend == backend for e in pl.entries))
        if b.role != "decode" or b.caps.mla or sparse_list:  # (ROCm's sparse MLA class declares no MLA)
            data["use_mla"] = True
        return data

    def _cc_and_arch_moves(self, platform: str) -> tuple[str, ...]:
        return ("compute_capability",) if platform == "cuda" else ("rocm_arch",) if platform == "rocm" else ()

    @lru_cache(maxsize=None)
    def valid_config(self, backend: str, platform: str) -> Config | None:
        """A config that requests `backend` on `platform` and that the rules say selection accepts."""
        role = self.rules.backends[backend].role
        fields = (*self._cc_and_arch_moves(platform), *self._relevant_fields(backend, platform))

        def score(cfg: Config) -> int:
            winner, fired = self._evaluate(cfg, backend, role)
            if fired is None:
                return INF
            return len(fired) + (0 if winner == backend else 1)

        data, s = self._search(self._start(backend, platform), fields, score, self._groups(backend, platform))
        return self._make(data) if s == 0 else None

    @lru_cache(maxsize=None)
    def violating_config(self, backend: str, platform: str, index: int) -> tuple[Config | None, int]:
        """A config requesting `backend` where check #index fires, with as few other checks firing as possible."""
        role = self.rules.backends[backend].role
        target = self._own_checks(backend, platform)[index]
        base = self.valid_config(backend, platform)
        assert base is not None
        fields = tuple(dict.fromkeys((*(x for f in target.fields for x in self._config_fields(f)),
                                      *self._cc_and_arch_moves(platform), *self._relevant_fields(backend, platform))))
        fields = tuple(f for f in fields if f not in ("platform", "backend"))

        scores: dict[Config, int] = {}  # the hill-climb meets the same configurations again on every pass

        def score(cfg: Config) -> int:
            if cfg in scores:
                return scores[cfg]
            _, fired = self._evaluate(cfg, backend, role)
            scores[cfg] = INF if fired is None or target not in fired else len({c.reason for c in fired} - {target.reason})
            return scores[cfg]

        start = {f: getattr(base, f) for f in dict.fromkeys((*FIELD_NAMES, *self.rules.fields)) if getattr(base, f) is not None}
        start["compute_capability"] = base.compute_capability
        # values Config fills in by itself: a move that Config refuses with them (use_dcp = true beside the default
        # dcp_size 1: every DCP check was unreachable) is tried again with them left to Config
        loose = tuple(f for f in start if f not in ("platform", "backend", "compute_capability")
                      and (rest := self._make({k: v for k, v in start.items() if k != f})) is not None
                      and getattr(rest, f) == start[f])
        # the target's own conditions met first where a value class of a config field meets them (a check behind
        # five conditions, FA4 sparse MLA's gathered-heads test, is out of reach of moves of up to four fields)
        seeded = dict(start)
        for lit in target.when:
            if lit.field in ("platform", "backend", "compute_capability") or lit.field not in (*FIELD_NAMES, *self.rules.fields):
                continue
            if lit.field in seeded and lit.pred(seeded[lit.field]):
                continue
            for v in self._reps(lit.field):
                if v is not None and lit.pred(v):
                    trial = {**seeded, lit.field: v}
                    if self._make(trial) is None and loose:
                        trial = {k: x for k, x in trial.items() if k not in loose or k == lit.field}
                    if self._make(trial) is not None:
                        seeded = trial
                        break
        data, s = self._search(start, fields, score, self._groups(backend, platform), loose)
        if s == INF and seeded != start and self._make(seeded) is not None:
            data, s = self._search(seeded, fields, score, self._groups(backend, platform), loose)
        return (self._make(data) if s < INF else None), s

    def _requestable(self, backend: str, platform: str) -> bool:
        """Some list of the platform takes a request of `backend`: one validating any request, or one naming it
        (0.33's XPU tree takes only the backends its branches name; FLASH_ATTN_DIFFKV / TRITON_ATTN_DIFFKV
        reach XPU through model code alone, the platform's model_backend), and not one the platform drops."""
        lists = self.rules.lists_for(platform)
        if backend not in requestable_backends(self.rules, platform):
            return False  # a class requested under another name (0.33's FLASH_ATTN_MLA_XPU: FLASH_ATTN_MLA)
        mp = lists[0].mla_prefill if lists else None
        if self.rules.backends[backend].role == "mla_prefill" and mp is not None:
            # requested through its own field under vLLM's prefill name, its errors naming it so (vLLM >= 0.21):
            # not the `backend` request this generator makes (tests/test_mla_prefill_v033.py pins those); a layer
            # without such a field (0.18-0.20, 0.33's CPU) ignores the `backend` request for its prefill path
            return False
        if lists and any(not only and c and all(lit.field == "backend" and lit({"backend": backend}) for lit in c)
                         for _, c, only, _ in lists[0].request_fallbacks):
            return False  # a request vLLM drops before selection (0.33: CUTLASS_MSA / TRITON_MSA pick a kernel)
        role = self.rules.backends[backend].role
        return any(pl.manual == "validate" or any(e.backend == backend for e in (*pl.entries, *pl.manual_accept))
                   for pl in lists if all(lit.pred(role) for lit in pl.when if lit.field == "role"))

    def _backend_platforms(self) -> list[tuple[str, str]]:
        return [(name, plat) for name, b in self.rules.backends.items() for plat in b.platforms
                if self._requestable(name, plat)]

    def _checks_to_violate(self) -> list[tuple[str, str, int]]:
        out = []
        for name, b in self.rules.backends.items():
            for plat in b.platforms:
                if not self._requestable(name, plat):
                    continue
                for i, check in enumerate(self._own_checks(name, plat)):
                    if check.require.field == "platform" and check.require.pred(plat):
                        continue  # a platform test this platform passes (FlashAttention MLA off CUDA): fires elsewhere
                    if self._can_fire(check) and all(self._possible_on(lit, plat) for lit in check.when):
                        out.append((name, plat, i))
        return out

    def _auto_backends(self) -> list[tuple[str, str]]:
        out: dict[tuple[str, str], None] = {}
        for pl in self.rules.lists:
            for e in pl.entries:
                if not self.rules.backends[e.backend].explicit_only:
                    out[(e.backend, pl.platform)] = None
        return list(out)

    @lru_cache(maxsize=None)
    def auto_config(self, backend: str, platform: str) -> Config | None:
        """A config with no backend requested for which automatic selection picks `backend`."""
        role = self.rules.backends[backend].role

        def score(cfg: Config) -> int:
            try:
                facts = self._facts(cfg, role)
            except ConfigError:
                return INF
            pl = select_list(self.rules, facts)
            if pl is None:
                return INF
            p = plan(self.rules, pl, None)
            names = [c.backend for c in p.candidates]
            if backend not in names:
                return INF
            idx = names.index(backend)
            mine = sum(1 for c in p.candidates[idx].checks if c.fires(facts))
            earlier_valid = sum(1 for c in p.candidates[:idx] if not any(k.fires(facts) for k in c.checks))
            return 4 * mine + earlier_valid  # fix the backend's own checks first, then rule out the earlier ones

        start = {k: v for k, v in self._start(backend, platform).items() if k != "backend"}
        fields = (*self._cc_and_arch_moves(platform), *self._relevant_fields(backend, platform, others=True))
        data, s = self._search(start, fields, score, self._groups(backend, platform))
        return self._make(data) if s == 0 else None

    def _auto_guards(self) -> list[tuple[int, int, int]]:
        out = []
        for li, pl in enumerate(self.rules.lists):
            for ei, e in enumerate(pl.entries):
                for gi, g in enumerate(e.guards):
                    if self._can_fire(g):
                        out.append((li, ei, gi))
        return out

    def _guard_id(self, li: int, ei: int, gi: int) -> str:
        pl = self.rules.lists[li]
        return f"{pl.platform}-{pl.entries[ei].backend}-guard{gi}"


# -- parametrisation from the rules ----------------------------------------------------------------

RELEASES = {v: Release(v) for v in vllm_versions()}


# Every case of 0.17; under ci every `step`-th case of the later releases: the hill-climbing searches over
# 0.33's larger value classes take up to minutes each (violated checks, automatic selection, guards), so ci
# runs a sample of each class and the full sizes (tests/sizes.py: nightly or --runslow) run them all.
SAMPLED = ("0.17",)


# Cases the generator's search cannot build on a release (found with the full sizes; strict xfails, so each is
# reported until the search or the rules change). 0.33's TRITON_FLASH_ATTN (the composite FlashAttention route
# for multimodal prefix-LMs, SM 9.x only) carries FLASH_ATTN's per-bucket capability checks: a bucket its own
# field decides (FA3_P64 / FA4_P64 / FA4_P128 pages come from head size 512 or 256) cannot hold with that
# field outside the check, and the FA2 / NONE / P128 buckets are never reached on SM 9.x; its DCP checks
# are not reached by the search either.
_UNBUILT = "no config the search builds violates this check (a capability bucket of FLASH_ATTN's that " \
           "TRITON_FLASH_ATTN cannot be in with the check's field violated, or DCP on the composite route)"
KNOWN = {f"0.33-TRITON_FLASH_ATTN-cuda-{k}": _UNBUILT for k in (
    "head_sizes3", "head_sizes4", "head_sizes5", "kv_cache_dtypes7", "kv_cache_dtypes10", "kv_cache_dtypes11",
    "kv_cache_dtypes12", "kernel_block_sizes16", "kernel_block_sizes18", "non_causal_dcp26", "dcp29")}
# Listed by vLLM >= 0.30 but never picked automatically: an earlier entry of every list that names them accepts
# whatever they accept (facts of the rules, not a search limit). TOKENSPEED_MLA follows FLASHINFER_MLA, which
# refuses only a qk_nope_head_dim outside [64, 128, 192] (or none), where TOKENSPEED_MLA needs R1's 128;
# FLASHINFER_PREFILL follows TRTLLM_RAGGED_PREFILL, whose checks are the same. Reached by request only.
# ROCM_AITER_TRITON_MLA is ROCM_AITER_MLA's child with no capability of its own, listed after it (and after
# TRITON_MLA) in ROCm's AITER MLA list: whatever it accepts its parent accepted first.
_SHADOWED = {
    ("TOKENSPEED_MLA", "cuda"): "shadowed by FLASHINFER_MLA in every SM 10.x MLA list (reached by request only)",
    ("FLASHINFER_PREFILL", "cuda"): "shadowed by TRTLLM_RAGGED_PREFILL in every SM 10.x MLA prefill list (reached by request only)",
    ("ROCM_AITER_TRITON_MLA", "rocm"): "shadowed by ROCM_AITER_MLA, its parent with the same capabilities, in the AITER MLA list (reached by request only)",
}
SHADOWED = {f"{v}-{b}-{p}": why for v in RELEASES if v not in ("0.16", "0.17") for (b, p), why in _SHADOWED.items()
            if b in RELEASES[v].rules.backends}


def _params(cases: Any, ident: Callable[..., str], step: int, known: dict[str, str] | None = None) -> list[Any]:
    """One pytest.param per (release, case), pinned to that release; under ci every `step`-th case of the
    later releases (`step` = 0: none)."""
    out = []
    for v, r in RELEASES.items():
        every = cases(r)
        if v not in SAMPLED:
            step_ = sizes.pick(step, 1)
            every = every[::step_] if step_ else []
        for case in every:
            name = f"{v}-{ident(r, *case)}"
            marks = [pytest.mark.vllm(v)]
            why = (KNOWN if known is None else known).get(name)
            if why is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=why))
            out.append(pytest.param(v, *case, marks=marks, id=name))
    return out


# ci samples of 0.33 (its hill-climbing searches take seconds to minutes each on the 2-core box): every other
# manual-request case, and a few of each other class so that every class runs on every release in CI (5 of
# the 881 violated checks: some searches take minutes, e.g. ROCm's sparse DSV4.1 table guard over the archs).
BACKEND_PLATFORMS = _params(lambda r: r._backend_platforms(), lambda r, b, p: f"{b}-{p}", 2)
CHECKS = _params(lambda r: r._checks_to_violate(), lambda r, b, p, i: f"{b}-{p}-{r._own_checks(b, p)[i].kind}{i}", 194)
AUTO_BACKENDS = _params(lambda r: r._auto_backends(), lambda r, b, p: f"{b}-{p}", 12, {**KNOWN, **SHADOWED})
AUTO_GUARDS = _params(lambda r: r._auto_guards(), lambda r, li, ei, gi: r._guard_id(li, ei, gi), 4)


@pytest.mark.parametrize("v", [pytest.param(v, marks=pytest.mark.vllm(v)) for v in RELEASES])
def test_every_backend_has_generated_tests(v):
    r = RELEASES[v]
    unrequestable = {b for b, x in r.rules.backends.items() for p in x.platforms if not r._requestable(b, p)}
    assert {b for b, _ in r._backend_platforms()} | unrequestable == set(r.rules.backends)
    validated = {b for b, p, _ in r._checks_to_violate()}
    for name, b in r.rules.backends.items():
        if "cuda" in b.platforms and b.checks and r._requestable(name, "cuda"):  # every CUDA backend's checks
            assert name in validated, name


@pytest.mark.parametrize(("v", "backend", "platform"), BACKEND_PLATFORMS)
def test_manual_selection_accepts_a_config_satisfying_every_check(v, backend, platform):
    r = RELEASES[v]
    cfg = r.valid_config(backend, platform)
    assert cfg is not None, f"no config in the rules' value classes satisfies every check of {backend} on {platform}"
    role = r.rules.backends[backend].role
    sel = solve(cfg, role=role)
    assert sel.backend == backend
    assert sel.role == role
    # the selected backend has no firing checks the platform runs
    facts = r._facts(cfg, role)
    assert not [c.reason for c in r._own_checks(backend, platform) if c.fires(facts)]


def _outcome(cfg: Config, role: str) -> tuple[str, ...]:
    """The backend chosen, or the error's kind and first line."""
    try:
        sel = solve(cfg, role=role)
    except SelectionError as e:
        return (type(e).__name__, str(e).splitlines()[0])
    return (sel.backend, str(sel.variant))


@pytest.mark.parametrize(("v", "backend", "platform", "index"), CHECKS)
def test_violating_one_check_gives_exactly_its_reason(v, backend, platform, index):
    r = RELEASES[v]
    check = r._own_checks(backend, platform)[index]
    cfg, others = r.violating_config(backend, platform, index)
    assert cfg is not None, f"no config violates {check.reason!r} of {backend}"
    role = r.rules.backends[backend].role
    lists = r.rules.lists_for(platform)
    facts = r._facts(cfg, role)
    if lists and any(not only and all(lit(facts) for lit in c) for _, c, only, _ in lists[0].request_fallbacks):
        # the platform does not judge this request (vLLM 0.29/0.30's ROCm turboquant_* layers: any refusal falls
        # back): automatic selection answers, as for the same config without the request
        assert _outcome(cfg, role) == _outcome(cfg.replace(backend=None), role), cfg
        return
    with pytest.raises(InvalidBackendError) as info:
        solve(cfg, role=role)
    err = info.value
    assert err.backend == backend
    reasons = err.reasons[backend]
    facts = r._facts(cfg, role)
    expected = check.render(facts)
    assert expected in reasons
    if others == 0:  # (a text may come twice: a capability and vLLM's own combination check, 0.27's DSV4 KV dtype)
        assert set(reasons) == {expected}, cfg
    else:
        # The rules make this check fire only together with others (e.g. FA's sink-on-CC<9 check also
        # trips FA2's "sink setting not supported"): every reason shown must come from a firing check.
        fired = {c.render(facts) for c in r._own_checks(backend, platform) if c.fires(facts)}
        assert set(reasons) <= fired | {expected}
        if any(c.first for c in r._own_checks(backend, platform)):
            # 0.33: two checks may give one text (a capability and vLLM's own check), and of the `first`
            # combination checks only the first that fires is reported: each text once, all from firing checks
            assert len(reasons) == len(set(reasons)) and len(reasons) <= others + 1
        else:
            assert len(reasons) == others + 1
    if err.args and r.rules.lists_for(platform)[0].manual == "validate":
        assert str(err).startswith(f"Selected backend AttentionBackendEnum.{backend} is not valid for this "
                                   "configuration. Reason: [")


# -- automatic selection reaches every listed backend -----------------------------------------------

@pytest.mark.parametrize(("v", "backend", "platform"), AUTO_BACKENDS)
def test_automatic_selection_reaches_every_listed_backend(v, backend, platform):
    r = RELEASES[v]
    cfg = r.auto_config(backend, platform)
    assert cfg is not None, f"no config in the rules' value classes makes automatic selection pick {backend}"
    sel = solve(cfg, role=r.rules.backends[backend].role)
    assert sel.backend == backend and not sel.manual
    assert all(x.reasons for x in sel.rejected)


# -- the guards of automatic lists (decision trees: ROCm, CPU) -------------------------------------

@pytest.mark.parametrize(("v", "li", "ei", "gi"), AUTO_GUARDS)
def test_automatic_list_guard_reason_is_reported(v, li, ei, gi):
    r = RELEASES[v]
    pl = r.rules.lists[li]
    entry = pl.entries[ei]
    guard = entry.guards[gi]
    backend = r.rules.backends[entry.backend]
    role = backend.role

    def score(cfg: Config) -> int:
        try:
            facts = r._facts(cfg, role)
        except ConfigError:
            return INF
        if select_list(r.rules, facts) is not pl or not guard.fires(facts):
            return INF
        return sum(1 for g in entry.guards if g is not guard and g.fires(facts))

    start = {k: v_ for k, v_ in r._start(entry.backend, pl.platform).items() if k != "backend"}
    fields = (*r._cc_and_arch_moves(pl.platform), *r._relevant_fields(entry.backend, pl.platform, others=True))
    data, s = r._search(start, fields, score, r._groups(entry.backend, pl.platform))
    assert s < INF, f"no config makes {guard.reason!r} fire for {entry.backend}"
    cfg = r._make(data)
    reason = guard.render(r._facts(cfg, role))
    try:
        sel = solve(cfg, role=role)
    except NoValidBackendError as e:  # nothing left in the list: the tree's own error text
        assert reason in e.reasons[entry.backend]
        return
    assert sel.backend != entry.backend
    assert reason in dict((x.backend, x.reasons) for x in sel.rejected)[entry.backend]
