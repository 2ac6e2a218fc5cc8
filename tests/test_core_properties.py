"""Hypothesis properties of the core (issue 3):

1. a selected backend has no firing check (its own checks where the platform validates, and its list guards);
2. no earlier candidate in the priority list was valid, and `rejected` is exactly those candidates with reasons;
3. the compiled path equals the CSP path (`solve` vs `solve_csp`) over configs drawn from the rules' domains;
4. `Config(...)` with arbitrary field values either succeeds or raises ConfigError, never another exception.

The strategies here are deliberately simple and local (tests/strategies.py is issue 8's).
"""

from __future__ import annotations

import pytest

from typing import Any

from hypothesis import HealthCheck, assume, given, settings, strategies as st

from attnsolve import ANY, Config, ConfigError, InvalidBackendError, NoValidBackendError, solve
from attnsolve.config import FIELD_NAMES
from attnsolve.errors import SelectionError
from attnsolve import vllm_versions
from attnsolve.rules import default_version, rules_for
from attnsolve.rules.loader import cc_from_text
from attnsolve.selection import solve_csp
from attnsolve.solver.domains import representatives
from strategies import requests
from attnsolve.solver.facts import base_facts

# Every release: the local strategies read the rules of the release the test runs for (the default release
# the every_release fixture sets), when they draw.
pytestmark = pytest.mark.every_release


def _rules() -> Any:
    return rules_for(default_version())


# Fields drawn from their value classes (one representative per class the rules can tell apart).
_CLASS_FIELDS = (
    "dtype", "head_size", "kv_cache_dtype", "block_size", "has_sink", "use_mm_prefix", "attn_type", "num_heads",
    "flash_attn_version", "use_trtllm_attention", "trtllm_available", "qk_nope_head_dim", "qk_rope_head_dim",
    "v_head_dim", "index_topk", "rocm_use_aiter", "rocm_use_aiter_mha", "rocm_use_aiter_mla",
    "rocm_use_aiter_unified_attention", "use_prefill_decode_attention", "use_trtllm_ragged_deepseek_prefill",
    "disable_flashinfer_prefill", "use_cudnn_prefill", "flashinfer_available",
)
_EXTRA = {  # a few real-world values besides the representatives
    "head_size": (64, 96, 100, 128, 256, 260, 576, 16), "num_heads": (8, 16, 17, 128),
    "qk_nope_head_dim": (64, 128), "qk_rope_head_dim": (64,), "v_head_dim": (128,), "index_topk": (2048,),
}

def _prefill_platforms() -> set[str]:
    """Platforms with an MLA prefill list (0.17's CPU has none: asking it for the prefill role is a ConfigError)."""
    return {pl.platform for pl in _rules().lists if any(lit.field == "role" and lit.pred("mla_prefill") for lit in pl.when)}


def _values(field: str) -> st.SearchStrategy[Any]:
    vals = list(dict.fromkeys((*representatives(_rules(), field), *_EXTRA.get(field, ()))))
    if field in _rules().domains and field not in ("flash_attn_version",):
        vals = list(dict.fromkeys((*vals, *_rules().domains[field])))
    return st.sampled_from(vals)


@st.composite
def configs(draw: st.DrawFn, *, with_backend: bool = True) -> tuple[Config, str]:
    """(config, role) over the rules' domains; the backend is usually automatic."""
    platform = draw(st.sampled_from(_rules().platforms))
    data: dict[str, Any] = {"platform": platform}
    if platform == "cuda":
        ccs = [c for c in representatives(_rules(), "compute_capability") if c is not None]
        ccs += [int(g.replace(".", "")) for g in _rules().generations]
        data["compute_capability"] = draw(st.sampled_from(sorted(set(ccs))))
    elif platform == "rocm":
        data["rocm_arch"] = draw(st.sampled_from(_rules().domains["rocm_arch"]))
    mla = draw(st.booleans())
    data["use_mla"] = mla
    data["use_sparse"] = draw(st.booleans()) if mla else False
    for f in _CLASS_FIELDS:
        if draw(st.integers(0, 2)) == 0:  # leave a third of the fields at vLLM's defaults
            continue
        data[f] = draw(_values(f))
    if "head_size" not in data and draw(st.booleans()):
        data["head_size"] = None
    if with_backend and draw(st.integers(0, 3)) == 0:
        data["backend"] = draw(st.sampled_from(requests(_rules())))
    role = draw(st.sampled_from(["decode", "mla_prefill"])) if mla and platform in _prefill_platforms() else "decode"
    cc = data.get("compute_capability")
    if isinstance(cc, int):
        data["compute_capability"] = (cc // 10, cc % 10)
    try:
        cfg = Config(**data)
    except ConfigError:
        assume(False)
        raise
    return cfg, role


def _facts(cfg: Config, role: str) -> dict[str, Any]:
    facts = base_facts(cfg, role)
    head = next((p for p in _rules().lists if p.platform == facts["platform"]), None)
    if head is not None and head.compute_capability_from and facts.get("compute_capability") is None:
        # the device capability the platform's checks see (0.33's ROCm: from the gfx arch), once derived
        for name, d in _rules().derived.items():
            facts[name] = d.evaluate(facts)[0]
        facts["compute_capability"] = cc_from_text(facts.get(head.compute_capability_from))
    for name, d in _rules().derived.items():  # the derived facts case by case, in dependency order
        facts[name] = d.evaluate(facts)[0]
    return facts


def _list_for(facts: dict[str, Any]):
    for pl in _rules().lists:
        if pl.platform == facts["platform"] and all(lit(facts) for lit in pl.when):
            return pl
    return None


def _fired(checks, facts) -> tuple[str, ...]:
    seen: dict[tuple[int, str], None] = {}
    first = None  # vLLM's single-string supports_combination (0.33, `first` checks): its first failure only
    for c in checks:
        if c.first and c.fires(facts):
            if first is not None and c.group != first:
                continue
            first = c.group
        if c.fires(facts):
            seen.setdefault((c.group, r := c.render(facts)), None)
    # once per (source check, text): the clauses one rule check lowers to report it once, two checks with the same
    # text both (vLLM lists both: 0.33's SM120 sparse MLA repeats its dtype test); group 0 groups by text
    return tuple(r for _, r in seen)


def _seen(pl, facts) -> dict[str, Any]:
    """The facts as the platform's selector sees them (vLLM 0.17's CUDA selector drops the block size)."""
    return dict(facts, **{f: None for f in pl.drops})


def _auto_reasons(pl, entry, facts) -> tuple[str, ...]:
    validate = pl.validate if entry.validate is None else entry.validate  # 0.33: an entry may say
    own = _rules().backends[entry.backend].checks if validate else ()
    return _fired((*own, *entry.guards), _seen(pl, facts))


def _select(cfg: Config, role: str):
    try:
        return solve(cfg, role=role), None
    except (NoValidBackendError, InvalidBackendError) as e:
        return None, e


@given(configs())
# the steps before the lists answer most of a newer release's draws (0.33: the assume below filters about 5 in 6),
# which hypothesis's dev profile (not derandomised) sometimes reports as a failed health check
@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
def test_selected_backend_has_no_firing_check(case):
    cfg, role = case
    sel, err = _select(cfg, role)
    assume(sel is not None)
    facts = _facts(cfg, role)
    # a step before the lists may answer instead (0.33's MLA prefill layer: NO_PREFILL, not a backend): this
    # lists-only re-reading leaves those to the oracle comparisons, as test_no_earlier_candidate_was_valid does
    assume(not _steps_apply(cfg, role, facts))
    pl = _list_for(facts)
    assert pl is not None
    backend = _rules().backends[sel.backend]
    if sel.manual:
        if pl.manual == "validate":
            assert _fired(backend.checks, _seen(pl, facts)) == ()
        else:
            entry = next(e for e in pl.manual_accept if e.backend == sel.backend)
            assert _fired(entry.guards, _seen(pl, facts)) == ()
    else:
        entry = next(e for e in pl.entries if e.backend == sel.backend)
        assert _auto_reasons(pl, entry, facts) == ()
        if not pl.validate and pl.warn_unvalidated:
            # unvalidated platforms (CPU) report the backend's own failing checks as warnings
            for r in _fired(backend.checks, facts):
                assert any(r in w for w in sel.warnings), (r, sel.warnings)
    assert not backend.explicit_only or sel.manual


def _steps_apply(cfg: Config, role: str, facts: dict[str, Any]) -> bool:
    """True when a platform step before the lists (vLLM >= 0.18, `[platforms.X]` settings) touches this query:
    the MLA prefill layer's own step (decode selection first), a request error, a rewrite, a request dropped
    for automatic selection or replaced after a refusal, model code choosing the backend, or a decision-tree
    list that raises or gives no prefill backend (0.16/0.17's sparse MLA layers: NO_PREFILL). 0.17 has only that; this lists-only re-reading leaves those queries to the oracle
    comparisons (test_prop_selection.py), which model every step."""
    pl = _list_for(facts)
    head = next((p for p in _rules().lists if p.platform == facts["platform"]), None)
    if pl is None or head is None:
        return pl is None
    if pl.error or pl.no_prefill or (role == "mla_prefill" and head.mla_prefill is not None):
        return True
    holds = lambda when: all(lit(facts) for lit in when)  # noqa: E731
    if cfg.backend is not None and any(holds(when) for _, when in head.request_errors):
        return True
    if any(rw.stage == "before_selection" and holds(rw.when) for rw in head.rewrites):
        return True
    if cfg.backend is not None and any(holds(when) for _, when, _only, _ in head.request_fallbacks):
        return True
    if role == "decode" and (any(holds(c.when) for c in head.model_backend)
                             or any(holds(r.when) for r in head.model_routes)):
        return True
    return False


def _tried(pl, facts) -> list[Any]:
    """The entries automatic selection tries: not explicit-only, and their own `when` (0.33) holding."""
    seen = _seen(pl, facts)
    return [e for e in pl.entries if not _rules().backends[e.backend].explicit_only
            and (not e.when or any(all(lit(seen) for lit in alt) for alt in e.when))]


# Every release. On 0.17 every query; on a release with steps before the lists (0.33) the queries none of them
# touches (_steps_apply: about seven in ten of 0.33's draws here), with 0.33's list features read as the rule
# language defines them (entry `when`, an entry's own `validate`, the `manual = "list"` mode, the capability
# from the gfx arch, one reason of the `first` combination checks). Reasons must be exactly the firing
# checks' texts, in check order.
@given(configs())
def test_no_earlier_candidate_was_valid(case):
    cfg, role = case
    sel, err = _select(cfg, role)
    facts = _facts(cfg, role)
    assume(not _steps_apply(cfg, role, facts))
    pl = _list_for(facts)
    assert pl is not None

    auto = cfg.backend is None or pl.manual in ("ignore", "list")
    entries = _tried(pl, facts)
    if sel is None:
        if auto:
            assert isinstance(err, NoValidBackendError)
            assert list(err.reasons) == [e.backend for e in entries]
            for e in entries:
                fired = _auto_reasons(pl, e, facts)
                assert err.reasons[e.backend] == fired != (), (e.backend, err.reasons[e.backend], fired)
        else:
            assert isinstance(err, InvalidBackendError) and list(err.reasons) == [cfg.backend]
            assert err.reasons[cfg.backend]
        return
    if not auto:
        assert sel.manual and sel.backend == cfg.backend and sel.rejected == ()
        return
    assert not sel.manual
    names = [e.backend for e in entries]
    idx = names.index(sel.backend)
    assert [r.backend for r in sel.rejected] == names[:idx]
    for r, e in zip(sel.rejected, entries[:idx]):
        fired = _auto_reasons(pl, e, facts)
        assert r.reasons == fired != (), (r.backend, r.reasons, fired)


@given(configs())
def test_compiled_path_equals_csp_path(case):
    cfg, role = case
    sel, _ = _select(cfg, role)
    assert solve_csp(cfg, role=role) == (sel.backend if sel is not None else None)


@given(configs(), st.sets(st.sampled_from(sorted({b for v in vllm_versions() for b in rules_for(v).backends})),
                         max_size=6))
def test_compiled_path_equals_csp_path_with_unavailable_kernels(case, missing):
    cfg, role = case
    available = set(_rules().backends) - missing
    try:
        got = solve(cfg, role=role, available=available).backend
    except (NoValidBackendError, InvalidBackendError):
        got = None
    assert solve_csp(cfg, role=role, available=available) == got


_ARBITRARY = st.one_of(
    st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=True),
    st.text(max_size=12), st.binary(max_size=4), st.tuples(st.integers(-3, 30), st.integers(-3, 30)),
    st.lists(st.integers(-3, 30), max_size=3), st.sampled_from([ANY, object(), 1j, (9, 0), "9.0", "H100", "auto"]),
    st.sampled_from(sorted({x for v in vllm_versions() for f in rules_for(v).domains.values() for x in f}, key=repr)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_KEYS = st.sampled_from([*FIELD_NAMES, "gpu", "bogus", "headsize", ""])


@given(st.dictionaries(_KEYS, _ARBITRARY, max_size=6))
def test_config_construction_only_raises_config_error(data):
    try:
        Config(**data)
    except ConfigError:
        pass


@given(configs(with_backend=False), st.dictionaries(_KEYS, _ARBITRARY, max_size=3))
def test_config_changes_only_raise_config_error_and_solve_only_selection_errors(case, changes):
    cfg, role = case
    data = {f: getattr(cfg, f) for f in FIELD_NAMES}
    data.update(changes)
    try:
        new = Config(**data)
    except ConfigError:
        return
    try:
        solve(new, role=role)
    except (ConfigError, SelectionError):
        pass
