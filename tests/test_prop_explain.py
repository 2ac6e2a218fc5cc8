"""Laws of explain() and possible_backends(), checked with the independent oracle.

- explain() agrees with the oracle on the selected backend and on every candidate's verdict;
- conflicts are sound: random completions that keep a conflict's facts never reach the goal (oracle);
- conflicts are minimal: dropping any one fact admits a completion that reaches the goal (a CSP witness,
  re-checked by the oracle, so the CSP cannot vouch for itself);
- fixes work (the oracle selects what the fix promises) and are minimal (no proper subset of the changed
  fields works with any value from the rules' value pools, searched exhaustively with the oracle);
- hardware_only means the conflict is made of hardware facts alone;
- possible_backends(partial) is the union of the oracle's selections over the completions.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import oracle
from attnsolve import ANY, Config, ConfigError, InvalidBackendError, solve
from attnsolve.goal import GoalCheck, background_fields
from attnsolve.rules import default_rules
from attnsolve.selection import csp_solver
from attnsolve.selection.steps import platform_settings
import sizes
from strategies import budget, HARDWARE, completions, config_kwargs, field_pool, partial_configs, queries

# Compares with the oracle, which knows every release (oracle.KNOWS): every law runs for every release, except
# conflict minimality, except for an MLA layer's prefill question on a release with an MLA prefill step
# (vLLM >= 0.18): the conflict search checks the prefill lists without requiring the layer's decode selection
# to succeed (a deliberate over-approximation, goal.GoalCheck._prefill_layer), so such a conflict may keep a
# fact only the decode selection needs. Reachability is exact for every other question (its large parts are
# searched, not approximated: solver/reach_search.py BigPart). Conflict soundness runs for every release: the
# conflict search runs the platform's steps before the lists (goal.py) and holds the model's identity (model
# route, architecture...: the facts no list reads) as background, as the law's draws do.
# 0.33's pools are larger: under ci its exhaustive fix-minimality search thins each pool (SMALL, _pool), and
# possible_backends draws one free field instead of two; nightly / full sizes run every value.
pytestmark = oracle.ORACLE_RELEASES


def SMALL() -> bool:
    """ci-sized searches for a release larger than 0.17 (the full sizes search everything)."""
    return not sizes.FULL and default_rules().vllm != "0.17"


def _pool(rules: Any, name: str, keep: int = 6) -> list[Any]:
    """The field's pool (strategies.field_pool), thinned evenly to `keep` values when SMALL()."""
    pool = field_pool(rules, name)
    if not SMALL() or len(pool) <= keep:
        return pool
    step = len(pool) / keep
    return [pool[int(i * step)] for i in range(keep)]

explain_mod = pytest.importorskip("attnsolve.explain")
explain = explain_mod.explain
possible_backends = explain_mod.possible_backends

FAST = settings(max_examples=budget(40), suppress_health_check=[HealthCheck.too_slow], deadline=None)


def _goal(ans: oracle.Answer, requested: str | None) -> bool:
    """The goal of an explanation: some backend (automatic) or the requested one (manual)."""
    if ans.backend is None:
        return False
    return requested is None or ans.backend == requested


def _requested(config: Config, exp: Any) -> str | None:
    return exp.requested


def _cc_tuple(v: Any) -> Any:
    if isinstance(v, str) and "." in v:
        a, _, b = v.partition(".")
        return (int(a), int(b))
    return v


@settings(max_examples=budget(60), suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(queries())
def test_explain_agrees_with_oracle(q):
    config, role = q
    rules = default_rules()
    ans = oracle.select(rules, config, role)
    if ans.error is not None:
        with pytest.raises(ConfigError):
            explain(config, role=role)
        return
    exp = explain(config, role=role)
    assert exp.selected == ans.backend
    if ans.decode_failed:
        pass  # the MLA layer's decode selection failed first: its candidates are not the prefill question's
    elif ans.mode == "auto":
        assert [(v.backend, v.valid) for v in exp.candidates] == [(b, not r) for b, r in ans.tried]
        for v, (b, r) in zip(exp.candidates, ans.tried):
            assert tuple(v.reasons) == r
    else:
        if role == "decode":  # (an MLA prefill request is another field's)
            assert exp.requested == config.backend
        assert [v.backend for v in exp.candidates] == [b for b, _ in ans.tried]  # an alias resolved
        assert exp.candidates[0].valid == (ans.backend is not None)
    if exp.selected is None:
        assert exp.conflicts, "a failing config has a conflict"
        assert exp.conflict == exp.conflicts[0]
    else:
        assert not exp.conflicts and not exp.fixes
    assert exp.hardware_only == (bool(exp.conflict) and all(f in HARDWARE for f in exp.conflict))
    d = exp.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert str(exp)


failing_queries = queries().filter(lambda q: oracle.select(default_rules(), q[0], q[1]).backend is None
                                   and oracle.select(default_rules(), q[0], q[1]).error is None)


@FAST
@given(failing_queries, st.data())
def test_conflicts_are_sound(q, data):
    """Keep a conflict's facts, draw everything else at random: the goal is never reached."""
    config, role = q
    rules = default_rules()
    exp = explain(config, role=role)
    requested = exp.requested
    held = {f: getattr(config, f) for f in background_fields(config)}
    for conflict in exp.conflicts:
        pinned = {k: _cc_tuple(v) for k, v in conflict.items()}
        plat = pinned.get("platform")
        if "compute_capability" in pinned and pinned["compute_capability"] is not None:
            plat = "cuda"
        if "rocm_arch" in pinned and pinned["rocm_arch"] is not None:
            plat = "rocm"
        for _ in range(8):
            kw = data.draw(config_kwargs(platform=plat, use_mla=True if role == "mla_prefill" else None,
                                         backend=config.backend, manual=False if config.backend is None else None))
            kw.update(pinned)
            kw.update(held)  # the model's identity is background: a conflict is among the other facts
            kw["backend"] = config.backend
            try:
                other = Config(**kw)
            except ConfigError:
                continue
            ans = oracle.select(rules, other, role)
            assert not _goal(ans, requested), (
                f"conflict {conflict} of {config!r} is not a conflict: {other!r} selects {ans.backend}")


def _witness_config(config: Config, sol: dict[str, Any]) -> Config:
    """The config with a witness's values (every field of its release; the invariants' platform fields)."""
    rules = default_rules()
    data = {f: getattr(config, f) for f in config.field_names}
    for f in config.field_names:
        if f in sol:
            data[f] = sol[f]
    cc = data["compute_capability"]
    if isinstance(cc, int):
        data["compute_capability"] = (cc // 10, cc % 10)
    for f in config.field_names:  # a setting of other platforms keeps its default (cpu_amx off the CPU)
        decl = rules.fields.get(f)
        if decl is not None and decl.platforms and data["platform"] not in decl.platforms:
            data[f] = decl.default
    for inv in rules.invariants:  # a platform field off its platforms is None (ROCm's capability
        if inv.kind == "platform_field" and data["platform"] not in inv.platforms:  # comes from the gfx arch)
            data[inv.field] = None
        # a definition (use_dcp = dcp_size > 1) whose defined side the witness set while the defining side is no
        # selection input of this release (vLLM 0.24 reads no dcp_size): the size is unknown, as use_dcp alone gives
        if inv.kind == "definition" and inv.fields[0] in sol and inv.fields[1] not in sol:
            data[inv.fields[1]] = None
    return Config(vllm=config.vllm, **data)


@FAST
@given(failing_queries)
def test_conflicts_are_minimal(q):
    """Drop one fact of a conflict: a completion reaching the goal exists, and the oracle confirms it."""
    config, role = q
    rules = default_rules()
    assume(not (role == "mla_prefill" and any(getattr(platform_settings(rules, p), "mla_prefill", None) is not None
                                              for p in rules.platforms)))
    exp = explain(config, role=role)
    requested = exp.requested
    if exp.message and not exp.candidates:  # stopped before the lists: the goal is any backend, request kept
        requested = None
    for conflict in exp.conflicts:
        check = GoalCheck(config, role, None, requested)
        for f in conflict:
            sol = check.witness(frozenset(conflict) - {f})
            if sol is None:  # the CSP found none: is there one the oracle can see (dropped fact + hardware moved)?
                found = _some_values_work(config, role, (f,), requested, hardware=True)
                assert found is None, f"the CSP misses a completion of {conflict} minus {f}: {found} reaches the goal"
                raise AssertionError(f"conflict {conflict} is not minimal: without {f} it still fails")
            witness = _witness_config(config, sol)
            assert _goal(oracle.select(rules, witness, role), requested), (
                f"CSP witness {witness!r} (for {conflict} minus {f}) does not reach the goal by the oracle")


@FAST
@given(failing_queries)
def test_fixes_work(q):
    config, role = q
    rules = default_rules()
    exp = explain(config, role=role)
    for fix in exp.fixes:
        changes = {k: _cc_tuple(v) for k, v in fix.changes.items()}
        fixed = config.replace(**changes)
        ans = oracle.select(rules, fixed, role)
        assert ans.backend == fix.selects, f"fix {fix} of {config!r}: oracle selects {ans.backend}"
        if exp.requested is not None and "backend" not in fix.changes:
            assert ans.backend == exp.requested


def _hardware_combos(rules: Any) -> list[dict[str, Any]]:
    """Every platform with each of its own hardware facts (cc only on cuda, gfx arch only on rocm)."""
    out = []
    for plat in field_pool(rules, "platform"):
        ccs = _pool(rules, "compute_capability") if plat == "cuda" else [None]
        archs = _pool(rules, "rocm_arch") if plat == "rocm" else [None]
        out += [{"platform": plat, "compute_capability": c, "rocm_arch": a} for c in ccs for a in archs]
    return out


def _some_values_work(config: Config, role: str, fields: tuple[str, ...], requested: str | None,
                      hardware: bool = False) -> dict | None:
    """Values for `fields` (from the rules' pools; hardware=True also moves the hardware) reaching the goal."""
    rules = default_rules()
    soft = [f for f in fields if not (hardware and f in HARDWARE)]
    pools = [[v for v in _pool(rules, f) if v != getattr(config, f)] for f in soft]
    hw = _hardware_combos(rules) if hardware else [{}]
    for values in itertools.product(*pools):
        for h in hw:
            changes = {**dict(zip(soft, values)), **h}
            try:
                cfg = config.replace(**changes)
            except ConfigError:
                continue
            if _goal(oracle.select(rules, cfg, role), requested):
                return changes
    return None


@FAST
@given(failing_queries)
def test_fixes_are_minimal(q):
    """No proper subset of a fix's fields works with any value the rules distinguish (exhaustive, oracle)."""
    config, role = q
    exp = explain(config, role=role)
    for fix in exp.fixes:
        fields = tuple(fix.changes)
        if "backend" in fields:
            continue
        for k in range(1, len(fields)):
            for sub in itertools.combinations(fields, k):
                found = _some_values_work(config, role, sub, exp.requested)
                assert found is None, f"fix {fix} of {config!r} is not minimal: {found} alone works"


@FAST
@given(failing_queries)
def test_a_single_field_fix_is_found_when_one_exists(q):
    """If changing one non-hardware field can reach the goal, explain() offers a fix of size 1."""
    config, role = q
    exp = explain(config, role=role)
    if exp.requested is not None:
        return
    relevant = [f for f in ("dtype", "kv_cache_dtype", "block_size", "head_size", "has_sink", "use_mm_prefix",
                            "attn_type", "flash_attn_version", "use_trtllm_attention") if f in csp_solver().fields
                or f in ("flash_attn_version", "use_trtllm_attention")]
    single = [f for f in relevant if _some_values_work(config, role, (f,), None)]
    if single:
        assert any(len(fx.changes) == 1 for fx in exp.fixes), (
            f"{config!r}: changing {single} alone works, but the fixes are {exp.fixes}")


# ---------------------------------------------------------------------------------------------------
# partial configs
# ---------------------------------------------------------------------------------------------------
@settings(max_examples=budget(40), deadline=None)
@given(st.data(), st.sampled_from(["decode", "mla_prefill"]))
def test_possible_backends_is_the_union_over_completions(data, role):
    config = data.draw(partial_configs(max_free=1 if SMALL() else 2), label="config")
    assume(role == "decode" or config.use_mla is not False)
    rules = default_rules()
    union: set[str] = set()
    for full in completions(config):
        if role == "mla_prefill" and full.use_mla is not True:
            continue
        ans = oracle.select(rules, full, role)
        if ans.backend is not None:
            union.add(ans.backend)
    got = possible_backends(config, role=role)
    assert len(got) == len(set(got))
    assert tuple(explain(config, role=role).possible) == tuple(got)
    assert set(got) == union, (f"{config!r} role={role}: possible_backends={sorted(got)}, "
                               f"union of completions={sorted(union)}")


# ---------------------------------------------------------------------------------------------------
# regressions: bugs the properties above found (fixed; kept as plain examples)
# ---------------------------------------------------------------------------------------------------
# Value classes were built from the predicates only: no predicate mentions 'cpu' or a backend name, so
# 'rocm'/'cpu' shared one class and all backend names another, and the CSP never tried platform='cpu' or most
# requested backends (possible_backends missed CPU_ATTN; explain gave unsound conflicts for a CPU_ATTN request).


@pytest.mark.vllm("0.17")
def test_regression_possible_backends_free_platform_includes_cpu():
    cfg = Config(platform=ANY, compute_capability=ANY, rocm_arch=ANY, dtype="bfloat16")
    assert "CPU_ATTN" in possible_backends(cfg)  # platform='cpu' selects CPU_ATTN


@pytest.mark.vllm("0.17")
def test_regression_possible_backends_free_backend_includes_requests():
    cfg = Config(platform="cuda", compute_capability="9.0", dtype="bfloat16", backend=ANY)
    assert {"FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION", "TREE_ATTN"} <= set(possible_backends(cfg))


@pytest.mark.vllm("0.17")
def test_regression_conflict_for_cpu_request_is_sound():
    cfg = Config(platform="cuda", compute_capability="7.0", dtype="bfloat16", head_size=64, backend="CPU_ATTN")
    exp = explain(cfg)
    # every conflict must pin the hardware: with platform free, platform='cpu' selects CPU_ATTN
    assert all(set(c) & set(HARDWARE) for c in exp.conflicts), exp.conflicts


@pytest.mark.vllm("0.17")
def test_regression_conflict_for_impossible_request_is_empty():
    cfg = Config(platform="cuda", compute_capability="9.0", dtype="bfloat16", backend="CUDNN_PREFILL")
    exp = explain(cfg, role="decode")
    assert exp.conflict == {} and not exp.hardware_only, (exp.conflict, exp.hardware_only)


# On vLLM 0.33 (found by the properties above once they ran for that release):
# - an MLA prefill request field (mla_prefill_backend) names the backend it asks for, and the model routes
#   name one model_arch each, but value classes came from the backends' checks and list conditions only: all
#   requests (and all model architectures) shared one class, so possible_backends() of an MLA prefill question
#   never tried a CPU prefill request and left out what solve() answers for it;
# - a platform-scoped declared field (hpc_available, cuda only) had a representative (False) Config refuses
#   off its platform: a sweep on CPU with it free had no row at all;
# - reach's hard-coded coupling refused use_sparse=True with use_mla=False, which vLLM answers (0.33's XPU
#   selects XPU_MLA_SPARSE without MLA; 0.17's ROCm selects ROCM_AITER_MLA_SPARSE at block size 1): conflicts
#   left out use_sparse. The coupling now comes from the rule set's invariants.


@pytest.mark.vllm("0.33")
def test_regression_possible_backends_tries_every_mla_prefill_request():
    cfg = Config(platform="cuda", compute_capability="10.4", dtype="bfloat16", head_size=576, use_mla=True,
                 qk_nope_head_dim=512, v_head_dim=8, mla_prefill_backend=ANY, model_arch=ANY)
    want = solve(cfg.replace(mla_prefill_backend="CPU", model_arch="deepseek_v32"), role="mla_prefill").backend
    assert want == "CPU_SDPA_MLA_PREFILL"
    assert want in possible_backends(cfg, role="mla_prefill")


@pytest.mark.vllm("0.33")
def test_regression_model_arch_and_route_values_are_told_apart():
    from attnsolve.solver.domains import representatives
    rules = default_rules()
    for f in ("model_arch", "model_route", "mla_prefill_backend"):
        assert set(representatives(rules, f)) == {None, *rules.domains[f]} - ({None} if f == "model_route" else set())


@pytest.mark.vllm("0.33")
def test_regression_possible_backends_with_a_cuda_only_field_free_on_cpu():
    cfg = Config(platform="cpu", dtype="float32", head_size=576, use_mla=True, hpc_available=ANY)
    assert solve(cfg.replace(hpc_available=True), role="mla_prefill").backend == "CPU_SDPA_MLA_PREFILL"
    assert possible_backends(cfg, role="mla_prefill") == ("CPU_SDPA_MLA_PREFILL",)


@pytest.mark.vllm("0.33")
def test_regression_xpu_conflicts_keep_use_sparse():
    cfg = Config(platform="xpu", dtype="bfloat16", use_mla=False, backend="XPU_MLA_SPARSE")
    assert solve(cfg.replace(use_sparse=True)).backend == "XPU_MLA_SPARSE"  # sparse without MLA on XPU
    exp = explain(cfg)
    assert exp.selected is None and exp.conflicts
    assert all("use_sparse" in c for c in exp.conflicts), exp.conflicts
    assert any(dict(f.changes) == {"use_sparse": True} and f.selects == "XPU_MLA_SPARSE" for f in exp.fixes)


@pytest.mark.vllm("0.17")
def test_regression_rocm_sparse_without_mla_conflicts_keep_block_size():
    cfg = Config(platform="rocm", dtype="bfloat16", use_mla=False, use_sparse=True)
    assert solve(cfg.replace(block_size=1)).backend == "ROCM_AITER_MLA_SPARSE"  # vLLM 0.17 rocm.py: sparse first
    exp = explain(cfg)
    assert exp.conflicts and all("block_size" in c for c in exp.conflicts), exp.conflicts


@oracle.ORACLE_RELEASES
def test_reach_coupling_is_the_releases_invariants():
    """Reachability judges combinations by the rule set's invariants, no more (it prunes conflicts and fixes:
    forbidding a combination the release allows would make a conflict unsound)."""
    from attnsolve.selection import compiled_rules
    from attnsolve.solver.reach import reach_for
    reach = reach_for(compiled_rules())
    ok = reach._coupling_ok
    assert ok({"use_mla": False, "use_sparse": True})
    assert not ok({"role": "mla_prefill", "use_mla": False})
    assert ok({"platform": "cuda", "compute_capability": 90}) and not ok({"platform": "cpu", "compute_capability": 90})
    assert not ok({"platform": "cuda", "rocm_arch": "gfx942"}) and ok({"platform": "rocm", "rocm_arch": "gfx942"})
    # a definition (0.33: use_dcp = dcp_size > 1) is left unjudged: an over-approximation, never an under one
    assert ok({"use_dcp": True, "dcp_size": 4}) and ok({"use_dcp": True, "dcp_size": None})


# Found by the nightly profile on 5 Dec (0.33):
# - a CUDA backend requested on ROCm is judged by its own checks with the capability ROCm derives from the gfx
#   arch (platforms/rocm.py _capability_from_gcn_arch; request_platform_check = false), but the conflict search
#   saw the Config's none: "platform=rocm alone rules out FLASH_ATTN" on an MI300X with head_size 1, no fix;
# - the hitting-set tree removed one side of a definition (use_dcp) and kept the other (dcp_size), which the
#   consistency test leaves free, so a later conflict carried a redundant fact (index_topk).


@pytest.mark.vllm("0.33")
def test_regression_a_cuda_request_on_rocm_sees_the_derived_capability():
    cfg = Config(gpu="MI300X", dtype="bfloat16", head_size=1, backend="FLASH_ATTN")
    assert solve(cfg.replace(head_size=128)).backend == "FLASH_ATTN"  # validated with capability 9.4
    exp = explain(cfg)
    assert {"platform": "rocm"} not in exp.conflicts and all("head_size" in c for c in exp.conflicts), exp.conflicts
    assert any(set(f.changes) == {"head_size"} and f.selects == "FLASH_ATTN" for f in exp.fixes), exp.fixes
    # FlashAttention MLA is CUDA-only whatever the capability (vLLM's flash_attn_supports_mla() asks is_cuda(); the
    # harness found the rules reading gfx90a's 9.0 alone, session 43): the platform is part of every conflict
    mla = Config(platform="rocm", rocm_arch="gfx90a", dtype="bfloat16", head_size=576, use_mla=True,
                 backend="FLASH_ATTN_MLA")
    with pytest.raises(InvalidBackendError) as e:
        solve(mla)
    assert "FlashAttention MLA not supported on this device" in str(e.value)
    conflicts = explain(mla).conflicts
    assert conflicts and all(set(c) & {"platform", "rocm_arch"} for c in conflicts), conflicts
    # reachability takes a capability on ROCm only as the one its gfx arch gives (a Config there has none)
    from attnsolve.selection import compiled_rules
    from attnsolve.solver.reach import reach_for
    ok = reach_for(compiled_rules()).invariants_hold
    invs = default_rules().invariants
    assert ok({"platform": "rocm", "rocm_arch": "gfx942", "compute_capability": 94}, invs)
    assert not ok({"platform": "rocm", "rocm_arch": "gfx942", "compute_capability": 90}, invs)
    assert not ok({"platform": "rocm", "compute_capability": 94}, invs)  # the arch free: no capability


@pytest.mark.vllm("0.33")
def test_regression_conflicts_treat_a_definition_as_one_fact():
    cfg = Config(platform="cuda", compute_capability="7.0", dtype="bfloat16", head_size=1, use_mla=True,
                 use_sparse=True, index_topk=1, dcp_size=2)
    conflicts = explain(cfg).conflicts
    assert conflicts and all(not ({"use_dcp", "dcp_size"} <= set(c) or {"dcp_size", "index_topk"} <= set(c))
                             for c in conflicts), conflicts


# - reachability's large-part search (reach_search.BigPart) took a derived fact as decided when the clause
#   filter left one of its possible values, before the assigned facts decided it: with flash_attn_version free
#   it fixed fa_head_version = 4 (the value the mm_prefix check wants) where the facts give 2, so a conflict
#   kept flash_attn_version=None beside four facts that already rule every backend out (and three 20-fact ones).


@pytest.mark.vllm("0.33")
def test_regression_a_derived_fact_is_decided_by_the_facts_not_by_the_filter():
    from attnsolve.goal import GoalCheck
    cfg = Config(platform="cuda", compute_capability="10.9", dtype="float16", head_size=256, use_mm_prefix=True,
                 num_heads=32, v_head_dim=100, index_topk=495, dcp_size=2)
    kept = frozenset({"compute_capability", "head_size", "use_mm_prefix", "use_dcp"})
    check = GoalCheck(cfg, "decode", None, None)
    assert not check.reachable(kept) and check.witness(kept) is None
    conflicts = explain(cfg).conflicts
    assert conflicts[0] == {"compute_capability": "10.9", "head_size": 256, "use_mm_prefix": True, "use_dcp": True}
    assert all(len(c) <= 8 for c in conflicts), conflicts
