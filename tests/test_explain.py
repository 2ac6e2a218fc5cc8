"""Laws of explain(): conflicts are sound and minimal, fixes work and are minimal, the fast
reachability agrees with the CSP, and on small synthetic rule sets the conflicts found are exactly
the brute-force minimal conflicts."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from attnsolve import ANY, Config, InvalidBackendError, NoValidBackendError, explain, possible_backends, selection_table, solve
from attnsolve.config import FIELD_NAMES
from attnsolve.errors import ConfigError, SelectionError
from attnsolve.explain import category, find_conflicts
from attnsolve.rules import default_rules, load_rules, use_rules
from attnsolve.selection import csp_solver
from attnsolve.solver.domains import representatives
from attnsolve.solver.facts import base_facts
from strategies import requests

# The laws run for every release; the hand-picked failing configurations and the exact answers below are
# vLLM 0.17 facts (each such test is pinned to 0.17 on its own).
pytestmark = pytest.mark.every_release
V017 = pytest.mark.vllm("0.17")

FAILING = [
    dict(platform="cuda", compute_capability="8.0", dtype="bfloat16", backend="FLASHMLA", use_mla=True),
    dict(platform="cuda", gpu="H100", dtype="bfloat16", kv_cache_dtype="fp8", use_mla=True, use_sparse=True),
    # (vLLM 0.17's CUDA selector drops the block size: a given block size no longer makes a conflict)
    dict(platform="cuda", gpu="H100", dtype="bfloat16", kv_cache_dtype="fp8", head_size=20),
    dict(platform="cpu", dtype="bfloat16", use_mla=True),
    dict(platform="rocm", dtype="bfloat16", use_mla=True, use_sparse=True, kv_cache_dtype="fp8"),
    dict(platform="cuda", gpu="B200", dtype="float32", use_mla=True, kv_cache_dtype="fp8_e5m2", block_size=8),
    dict(platform="cuda", gpu="B200", dtype="bfloat16", use_mla=True, backend="FLASHINFER_MLA", qk_nope_head_dim=64),
    dict(platform="cuda", gpu="L4", dtype="float32", head_size=16, kv_cache_dtype="fp8"),
    dict(platform="rocm", dtype="bfloat16", backend="ROCM_AITER_FA", rocm_arch="gfx1100"),
    dict(platform="cuda", gpu="A100", dtype="bfloat16", backend="TREE_ATTN", head_size=80),
]


def _goal_ok(cfg: Config, requested: str | None) -> bool:
    """Independent check through the CSP: does some completion of cfg reach the goal?"""
    facts = base_facts(cfg, "decode")  # the request stays in facts["backend"], handled as vLLM does
    return csp_solver().find(facts, backend=requested) is not None


def _partial(cfg: Config, keep: set[str]) -> Config:
    data = {f: (getattr(cfg, f) if f in keep or f == "backend" else ANY) for f in FIELD_NAMES}
    # the hardware facts that merely restate the platform stay as they are
    for f in ("compute_capability", "rocm_arch"):
        if getattr(cfg, f) is None:
            data[f] = None if "platform" in keep else ANY
    return Config(**data)


@V017
@pytest.mark.parametrize("fields", FAILING, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_conflicts_are_sound_and_minimal(fields: dict) -> None:
    cfg = Config(**fields)
    exp = explain(cfg)
    assert exp.selected is None
    assert exp.conflicts, "a failing config has at least one conflict"
    assert exp.conflict == exp.conflicts[0]
    requested = cfg.backend
    requested = exp.requested  # None when the platform ignores the request (CPU, ROCm sparse)
    for conflict in exp.conflicts:
        keep = set(conflict)
        assert not _goal_ok(_partial(cfg, keep), requested), f"conflict {conflict} is not a conflict"
        for f in keep:
            assert _goal_ok(_partial(cfg, keep - {f}), requested), f"conflict {conflict} is not minimal ({f})"


@V017
@pytest.mark.parametrize("fields", FAILING, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_fixes_work_and_are_minimal(fields: dict) -> None:
    cfg = Config(**fields)
    exp = explain(cfg)
    hardware_only = exp.hardware_only
    assert exp.fixes or hardware_only
    base = cfg.to_dict()
    for fix in exp.fixes:
        fixed = Config(**{**base, **fix.changes})
        sel = solve(fixed)
        assert sel.backend == fix.selects
        if cfg.backend is not None and "backend" not in fix.changes and sel.manual:
            assert sel.backend == cfg.backend, "a fix for a requested backend keeps that backend"
        # minimal: no proper subset of the changed fields works with any values of its class
        for k in range(1, len(fix.changes)):
            for sub in itertools.combinations(fix.changes, k):
                free = {f: ANY for f in sub}
                if "backend" in sub:
                    continue
                try:
                    partial = Config(**{**base, **free})
                except ConfigError:
                    continue
                assert not _goal_ok(partial, exp.requested), f"fix {fix} is not minimal: {sub} alone suffices"


@V017
def test_fix_ranking_prefers_tunables_and_near_values() -> None:
    exp = explain(Config(platform="cuda", gpu="H100", dtype="bfloat16", kv_cache_dtype="fp8", head_size=20))
    first = exp.fixes[0]
    assert all(category(f) == "tunable" for f in first.changes)
    head = [f for f in exp.fixes if set(f.changes) == {"head_size"}]
    assert head and head[0].changes["head_size"] == 16  # 20 -> 16 (FA3's multiple of 8), not 20 -> 256


@V017
def test_requested_backend_offers_automatic_selection() -> None:
    exp = explain(Config(platform="cuda", gpu="A100", dtype="bfloat16", backend="FLASHMLA", use_mla=True))
    assert exp.requested == "FLASHMLA"
    assert any(f.changes == {"backend": None} for f in exp.fixes)
    assert exp.hardware_only and exp.conflict == {"compute_capability": "8.0"}
    hw = [f for f in exp.fixes if f.hardware]
    assert hw and solve(Config(**{**exp.config.to_dict(), **hw[0].changes})).backend == "FLASHMLA"


@V017
def test_error_carries_conflict_fixes_and_hint() -> None:
    with pytest.raises(NoValidBackendError) as info:
        solve(Config(platform="cuda", gpu="H100", dtype="bfloat16", kv_cache_dtype="fp8", head_size=20))
    err = info.value
    assert str(err).startswith("No valid attention backend found")
    assert err.conflict and err.fixes
    assert str(err).splitlines()[-1].startswith("Conflict:")
    assert "Smallest fix:" in str(err).splitlines()[-1]
    with pytest.raises(InvalidBackendError) as info2:
        solve(Config(platform="cuda", gpu="A100", dtype="bfloat16", backend="FLASHMLA", use_mla=True))
    assert str(info2.value).startswith(
        "Selected backend AttentionBackendEnum.FLASHMLA is not valid for this configuration. Reason: [")


@V017
def test_explain_selected_lists_every_candidate_in_order() -> None:
    exp = explain(Config(platform="cuda", gpu="A100", dtype="bfloat16", kv_cache_dtype="fp8"))
    assert exp.selected == "FLASHINFER"
    assert [c.backend for c in exp.candidates] == ["FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION"]
    assert exp.candidates[0].reasons == ("kv_cache_dtype not supported",)
    assert exp.conflict == {} and exp.fixes == ()
    assert "  FLASH_ATTN: kv_cache_dtype not supported\n" in str(exp)  # the advice text, as the CLI prints it


@V017
def test_to_dict_is_json_and_fixes_resolve() -> None:
    exp = explain(Config(platform="cuda", compute_capability="8.0", dtype="bfloat16", kv_cache_dtype="fp8_e5m2",
                         has_sink=True, head_size=100))
    d = json.loads(json.dumps(exp.to_dict()))
    assert set(d) >= {"selected", "variant", "candidates", "conflict", "conflicts", "fixes", "warnings"}
    for fix in d["fixes"]:
        assert solve(Config(**{**d["config"], **fix["changes"]})).backend == fix["selects"]


@V017
def test_partial_config_possible_backends_and_table() -> None:
    cfg = Config(platform="cuda", gpu="H100", dtype="bfloat16", head_size=128, kv_cache_dtype=ANY, block_size=ANY)
    poss = possible_backends(cfg)
    rows = selection_table(cfg)
    from_rows = {b for _, b in rows if b is not None}
    assert set(poss) == from_rows
    assert "FLASH_ATTN" in poss
    exp = explain(cfg)
    assert exp.possible == poss and "possible backends" in str(exp)


@V017
def test_partial_config_with_no_completion_has_conflict() -> None:
    cfg = Config(platform="cpu", dtype=ANY, use_mla=True, head_size=ANY)
    exp = explain(cfg)
    assert exp.possible == ()
    assert exp.conflict == {"platform": "cpu", "use_mla": True}


@settings(max_examples=40)
@given(st.data())
def test_fast_reachability_agrees_with_csp(data: st.DataObject) -> None:
    """The bitset reachability used by explain equals the CSP on random partial facts."""
    from attnsolve.selection import compiled_rules
    from attnsolve.solver.reach import goal_reachable, reach_for

    rules = default_rules()
    plat = data.draw(st.sampled_from(rules.domains["platform"]))
    fields = {"platform": plat, "dtype": data.draw(st.sampled_from(rules.domains["dtype"]))}
    if plat == "cuda":
        fields["compute_capability"] = data.draw(st.sampled_from(sorted(rules.generations)))
    fields["kv_cache_dtype"] = data.draw(st.sampled_from(rules.domains["kv_cache_dtype"]))
    fields["block_size"] = data.draw(st.sampled_from([None, *rules.domains["block_size"]]))
    mla = data.draw(st.booleans())
    fields["use_mla"] = mla
    fields["use_sparse"] = mla and data.draw(st.booleans())
    fields["has_sink"] = data.draw(st.booleans())
    fields["head_size"] = data.draw(st.sampled_from([16, 64, 72, 128, 256, 576]))
    try:
        cfg = Config(**fields)
    except ConfigError:
        return
    free = data.draw(st.sets(st.sampled_from(sorted(fields))))
    facts = base_facts(cfg, "decode")
    for f in free:
        facts[f] = ANY
        if f == "platform":
            facts["compute_capability"] = ANY
            facts["rocm_arch"] = ANY
    fast = goal_reachable(reach_for(compiled_rules()), facts, None, None)
    slow = csp_solver().find(facts, backend=None) is not None
    assert fast == slow, (facts, fast, slow)


# ---------------------------------------------------------------------------------------------
# Completeness on small synthetic rule sets: conflicts found == brute-force minimal conflicts.

_SYN_DTYPES = ["float16", "bfloat16", "float32"]
_SYN_KV = ["auto", "bfloat16", "fp8"]


def _write_synthetic(tmp: Path, backends: list[dict]) -> None:
    from benchmarks.bench_scaling import packaged_domains_text  # the packaged domains, checks it can read
    (tmp / "domains.toml").write_text(packaged_domains_text())
    lines = []
    names = []
    for i, b in enumerate(backends):
        name = f"SYN_{i}"
        names.append(name)
        lines.append(f"[backends.{name}]")
        lines.append('platforms = ["cuda"]\nrole = "decode"')
        lines.append("dtypes = [" + ", ".join(f'"{d}"' for d in b["dtypes"]) + "]")
        lines.append("kv_cache_dtypes = [" + ", ".join(f'"{k}"' for k in b["kv"]) + "]")
        lines.append(f"kernel_block_sizes = [{b['block']}]")
        lines.append(f'compute_capability = {{ min = "{b["cc"]}" }}')
        lines.append("")
    lines.append("[platforms.cuda]\nvalidate = true\nmanual = \"validate\"\n[[platforms.cuda.lists]]")
    lines.append('name = "synthetic"\nwhen = { role = "decode" }')
    lines.append("entries = [" + ", ".join(f'"{n}"' for n in names) + "]")
    (tmp / "syn.toml").write_text("\n".join(lines) + "\n")


synthetic_backend = st.fixed_dictionaries({
    "dtypes": st.lists(st.sampled_from(_SYN_DTYPES), min_size=1, max_size=3, unique=True),
    "kv": st.lists(st.sampled_from(_SYN_KV), min_size=1, max_size=3, unique=True),
    "block": st.sampled_from([16, 32, 64]),
    "cc": st.sampled_from(["8.0", "9.0", "10.0"]),
})


@V017  # builds its rule sets on 0.17's domains.toml (0.33's names fields the other files declare)
@settings(max_examples=15, deadline=None)
@given(backends=st.lists(synthetic_backend, min_size=1, max_size=3),
       dtype=st.sampled_from(_SYN_DTYPES), kv=st.sampled_from(_SYN_KV), block=st.sampled_from([16, 32, 64]),
       cc=st.sampled_from(["8.0", "9.0", "10.0"]))
def test_conflicts_complete_on_synthetic_rules(tmp_path_factory: pytest.TempPathFactory, backends: list[dict],
                                               dtype: str, kv: str, block: int, cc: str) -> None:
    tmp = tmp_path_factory.mktemp("syn")
    _write_synthetic(tmp, backends)
    rules = load_rules(tmp)
    with use_rules(rules):
        # head_size given: a set without fields.toml declares no head-size default (the rules' [fields.head_size])
        cfg = Config(platform="cuda", compute_capability=cc, dtype=dtype, kv_cache_dtype=kv, block_size=block,
                     head_size=128)
        try:
            solve(cfg)
            return
        except SelectionError:
            pass
        facts_order = ["compute_capability", "dtype", "kv_cache_dtype", "block_size"]
        values = {"compute_capability": [(8, 0), (9, 0), (10, 0)], "dtype": _SYN_DTYPES, "kv_cache_dtype": _SYN_KV,
                  "block_size": [None, 1, 8, 16, 32, 64, 128, 256]}

        def consistent(keep: set[str]) -> bool:
            free = [f for f in facts_order if f not in keep]
            for combo in itertools.product(*(values[f] for f in free)):
                try:
                    solve(cfg.replace(**dict(zip(free, combo))))
                    return True
                except SelectionError:
                    continue
            return False

        brute = []
        for k in range(0, len(facts_order) + 1):
            for sub in itertools.combinations(facts_order, k):
                s = set(sub)
                if any(set(b) <= s for b in brute):
                    continue
                if not consistent(s):
                    brute.append(sub)
        got = find_conflicts(cfg, "decode", None, None, max_conflicts=64)
        got_sets = {frozenset(c) - {"platform"} for c in got}
        assert got_sets == {frozenset(b) for b in brute}


@st.composite
def full_configs(draw: st.DrawFn) -> Config:
    """Full configs drawn from the rules' own domains and value classes."""
    rules = default_rules()
    plat = draw(st.sampled_from(rules.domains["platform"]))
    fields: dict = {"platform": plat}
    for f in ("dtype", "kv_cache_dtype", "attn_type"):
        fields[f] = draw(st.sampled_from(rules.domains[f]))
    fields["block_size"] = draw(st.sampled_from([None, *rules.domains["block_size"]]))
    fields["head_size"] = draw(st.sampled_from([r for r in representatives(rules, "head_size") if r is not None]))
    fields["use_mla"] = draw(st.booleans())
    fields["use_sparse"] = fields["use_mla"] and draw(st.booleans())
    fields["has_sink"] = draw(st.booleans())
    fields["use_mm_prefix"] = draw(st.booleans())
    fields["num_heads"] = draw(st.sampled_from([None, 8, 16, 128]))
    if plat == "cuda":
        fields["compute_capability"] = draw(st.sampled_from(sorted(rules.generations)))
        fields["flash_attn_version"] = draw(st.sampled_from([None, 2, 3]))
    if plat == "rocm":
        fields["rocm_arch"] = draw(st.sampled_from(["gfx942", "gfx90a", "gfx1100"]))
        fields["rocm_use_aiter"] = draw(st.booleans())
    if draw(st.booleans()):
        fields["backend"] = draw(st.sampled_from(requests(rules)))
    return Config(**fields)


@settings(max_examples=60)
@given(cfg=full_configs())
@example(cfg=Config(platform="cuda", dtype="float16", compute_capability="10.0", head_size=8, kv_cache_dtype="fp8",
                    backend="TRITON_MLA"))
@example(cfg=Config(platform="cuda", dtype="float16", compute_capability="10.0", head_size=1, block_size=1,
                    backend="AMX_MLA", vllm="0.33"))
@example(cfg=Config(platform="cuda", dtype="float16", compute_capability="10.0", head_size=264, block_size=1,
                    backend="MINIMAX_M3_SPARSE", vllm="0.33"))
def test_every_failure_has_a_working_fix_or_is_hardware_only(cfg: Config) -> None:
    try:
        solve(cfg)
        return
    except SelectionError:
        pass
    exp = explain(cfg)
    assert exp.selected is None
    base = cfg.to_dict()
    if not exp.fixes and not exp.hardware_only:
        # e.g. TRITON_MLA requested for a non-MLA head-8 fp8 layer: three facts would have to move.
        # Then no single change may reach explain()'s goal either (checked over the rules' own values):
        # the requested backend, or any backend when none is requested or the change drops the request.
        # (A change that selects another backend while the request stays, e.g. model_route=
        # 'openpangu_sink' on 0.33 whose layer takes FLASH_ATTN_DIFFKV whatever is asked, misses the goal.)
        # The model's identity (model_arch, model_route...: goal.background_fields) is held as given: a
        # different model is not a fix (MINIMAX_M3_SPARSE requested for another model's layer).
        from attnsolve.diagnosis import _candidate_values
        from attnsolve.goal import background_fields
        from attnsolve.selection import compiled_rules
        rules = compiled_rules(cfg).rules
        held = background_fields(cfg)
        for name in cfg.field_names:
            if name in held:
                continue
            for value in _candidate_values(rules, name, getattr(cfg, name)):
                try:
                    changed = Config(**{**base, name: value})
                    sel = solve(changed)
                except (ConfigError, SelectionError):
                    continue
                if cfg.backend is not None and name != "backend" and sel.backend != cfg.backend:
                    continue
                assert sel is None, f"{name}={value!r} selects {sel.backend} but explain offered no fix:\n{exp}"
        return
    for fix in exp.fixes:
        sel = solve(Config(**{**base, **fix.changes}))
        assert sel.backend == fix.selects


@settings(max_examples=60)
@given(pool=st.lists(st.sampled_from("abcdefghij"), unique=True, max_size=9),
       known=st.lists(st.sets(st.sampled_from("abcdefghijxy"), min_size=1, max_size=4), max_size=4),
       size=st.integers(1, 5))
def test_fix_search_visits_exactly_the_hitting_combinations_in_order(pool: list[str], known: list[set[str]],
                                                                      size: int) -> None:
    """The fix search's enumeration = itertools.combinations filtered by "touches every known conflict"."""
    from attnsolve.diagnosis import _hitting_sets
    expected = [c for c in itertools.combinations(pool, size) if all(set(c) & k for k in known)]
    assert list(_hitting_sets(pool, size, known)) == expected


# vLLM 0.33 regressions of the MLA layer (its decode selection runs first; its prefill registry's request).
V033 = pytest.mark.vllm("0.33")


@V033
def test_prefill_request_refused_on_its_platform_is_a_conflict_with_a_drop_fix():
    """XPU refuses an MLA prefill request for the CPU's ZEN_CPU kernel before its lists: the conflict names
    the request, and unsetting it (the registry's automatic choice) is the fix."""
    cfg = Config(platform="xpu", dtype="bfloat16", use_mla=True, mla_prefill_backend="ZEN_CPU", vllm="0.33")
    exp = explain(cfg, role="mla_prefill")
    assert exp.selected is None
    assert "mla_prefill_backend" in exp.conflict and exp.conflict["platform"] == "xpu"
    assert any(f.changes == {"mla_prefill_backend": None} for f in exp.fixes)
    fixed = cfg.replace(mla_prefill_backend=None)
    assert solve(fixed, role="mla_prefill").backend == next(
        f.selects for f in exp.fixes if f.changes == {"mla_prefill_backend": None})


@V033
def test_layer_whose_decode_request_fails_first_gets_a_conflict_and_a_fix_for_the_whole_layer():
    """The MLA layer selects its decode backend before its prefill one: a decode request that cannot fit
    (FLASH_ATTN for an MLA model on CUDA) stops the layer. The conflict keeps the request and the MLA
    layer (use_mla is the question's, never a conflict or a fix); a fix is re-solved for the prefill
    question, so `selects` is the prefill answer the layer then gets."""
    cfg = Config(platform="cuda", dtype="bfloat16", compute_capability="10.0", head_size=576, use_mla=True,
                 num_heads=16, backend="FLASH_ATTN", kv_lora_rank=512, qk_rope_head_dim=64,
                 qk_nope_head_dim=128, v_head_dim=128, vllm="0.33")
    with pytest.raises(SelectionError):
        solve(cfg)  # the decode question
    exp = explain(cfg, role="mla_prefill")
    assert exp.selected is None and "FLASH_ATTN" in exp.message
    assert exp.conflicts and exp.conflict == exp.conflicts[0]
    assert exp.conflict == {"platform": "cuda"}  # with the request and the MLA layer kept
    assert all("use_mla" not in c for c in exp.conflicts)
    assert exp.fixes and all("use_mla" not in f.changes for f in exp.fixes)
    for fix in exp.fixes:
        assert solve(cfg.replace(**fix.changes), role="mla_prefill").backend == fix.selects
    drop = next(f for f in exp.fixes if f.changes == {"backend": None})
    assert drop.selects == solve(cfg.replace(backend=None), role="mla_prefill").backend
    # the CPU ignores a decode request: the same layer there goes on to its prefill answer
    cpu = Config(platform="cpu", dtype="bfloat16", head_size=576, use_mla=True, num_heads=16, backend="FLASH_ATTN",
                 kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128, vllm="0.33")
    assert explain(cpu, role="mla_prefill").selected is not None


@V033
def test_request_refused_for_a_fallbacks_reasons_is_explained_as_the_automatic_selection_vllm_makes():
    """ROCm in an ultraquant run: a request refused only for the KV dtype is replaced by automatic selection
    (vLLM logs it and goes on). explain() answers what solve() does: the automatic selection, its candidates."""
    cfg = Config(platform="rocm", dtype="bfloat16", head_size=33, kv_cache_dtype="ultraquant_4bit",
                 backend="TRITON_ATTN", rocm_arch="gfx90a", vllm="0.33")
    sel = solve(cfg)
    assert any("auto-selected per-layer backend" in line for line in sel.logs)
    # the answer is for the config asked about, request included (it echoed the config without it, so
    # --json showed "backend": null; found by the nightly profile's JSON round trip)
    assert sel.config == cfg and Config(**sel.to_dict()["config"]) == cfg and not sel.manual
    exp = explain(cfg)
    auto = explain(cfg.replace(backend=None))
    assert exp.selected == sel.backend == auto.selected
    assert exp.candidates == auto.candidates and not exp.conflicts and not exp.fixes
    assert exp.config == cfg


@V033
def test_dropped_request_whose_automatic_selection_also_fails_lists_the_automatic_candidates():
    """The same fallback when automatic selection then finds nothing (sinks on ROCm): vLLM's error is the
    automatic selection's, its candidates are the ones listed; the conflicts still answer "why not the
    backend I asked for"."""
    cfg = Config(platform="rocm", dtype="float16", head_size=128, kv_cache_dtype="ultraquant_4bit", has_sink=True,
                 backend="TRITON_ATTN", rocm_arch="gfx942", vllm="0.33")
    with pytest.raises(NoValidBackendError) as err:
        solve(cfg)
    exp = explain(cfg)
    assert exp.selected is None and str(err.value).startswith(exp.message)  # (the error adds the explanation)
    auto = explain(cfg.replace(backend=None))
    assert [v.backend for v in exp.candidates] == [v.backend for v in auto.candidates]
    assert exp.requested == "TRITON_ATTN" and exp.conflicts
    for fix in exp.fixes:
        assert solve(cfg.replace(**fix.changes)).backend == fix.selects


@V033
def test_a_model_route_opened_by_a_free_fact_is_seen_by_the_conflict_search():
    """With most facts free, the steps before the lists read more field combinations than the check enumerates;
    it then checked the lists alone and missed the model routes, so explain reported a conflict that freeing
    head_size breaks (mimo_v2's route opens once head_size != head_size_v) and a 3-field fix where one does
    (found by the nightly profile: test_fixes_are_minimal, 0.33)."""
    cfg = Config(vllm="0.33", platform="cuda", compute_capability="12.1", dtype="float16", head_size=1,
                 kv_cache_dtype="fp8", use_mla=True, use_sparse=True, head_size_v=1, use_rswa=True, use_alibi=True,
                 use_non_causal=True, model_route="mimo_v2", model_arch="deepseek_v32")
    assert solve(cfg.replace(head_size=8)).backend == "TRITON_ATTN_DIFFKV"
    exp = explain(cfg)
    assert all("head_size" in c for c in exp.conflicts), exp.conflicts
    single = [f for f in exp.fixes if set(f.changes) == {"head_size"}]
    assert single and single[0].selects == "TRITON_ATTN_DIFFKV", exp.fixes


@pytest.mark.vllm("0.22")
def test_a_derived_fact_that_reads_no_field_is_evaluated_by_the_fast_reachability(tmp_path) -> None:
    """Regression (0.22 draft): a derived fact whose one case has no condition (`rocm_attn_listed = true`) belonged
    to no field group, so the bitset reachability never evaluated it and the ROCm lists testing it were unreachable:
    fast reachability said no where the CSP and solve() select ROCM_ATTN, and explain's conflict left out the head
    size that decides. A constant is now evaluated with the first group's fixed facts."""
    import shutil

    from attnsolve.rules.sets import info
    from attnsolve.selection import compiled_rules
    from attnsolve.solver.reach import goal_reachable, reach_for

    for v in ("0.23", "0.24", "0.25", "0.26", "0.27", "0.28", "0.29", "0.30", "0.31", "0.32", "0.33"):
        shutil.copytree(info(v).path, tmp_path / f"vllm-{v}")
    folder = tmp_path / "vllm-0.22"
    shutil.copytree(info("0.22").path, folder)
    rocm = folder / "rocm.toml"
    text = rocm.read_text()
    start = text.index("[derived.rocm_attn_listed]")
    end = text.index('name = "ROCm standard, no ROCM_ATTN"\n_remove = true\n') + len(
        'name = "ROCm standard, no ROCM_ATTN"\n_remove = true\n')
    rocm.write_text(text[:start] + '[derived.rocm_attn_listed]\ncases = [{ value = true }]\n' + text[end:])
    with use_rules(folder):
        facts = base_facts(Config(platform="rocm", dtype="float16", head_size=64), "decode")
        assert goal_reachable(reach_for(compiled_rules()), facts, None, None)
        assert csp_solver().find(facts, backend=None) is not None
        conflict = explain(Config(platform="rocm", dtype="bfloat16", head_size=1, rocm_arch="gfx90a")).conflict
        assert "head_size" in conflict, conflict


@pytest.mark.vllm("0.20")
def test_a_backend_asked_for_the_other_role_is_refused_naming_both_roles():
    """A decode backend requested for MLA prefill is "not an MLA prefill backend" (it once read "not a decode
    backend: it is selected for the decode (attention) role"), and a prefill backend requested for decode the reverse."""
    mla = dict(gpu="H100", dtype="bfloat16", use_mla=True, head_size=576, qk_nope_head_dim=128, qk_rope_head_dim=64,
               v_head_dim=128, vllm="0.20")
    # 0.16 to 0.20 model the MLA layer (0.16/0.17 since session 41; their prefill lists took the request before): the
    # request is its decode backend's, and the prefill path ignores it
    for v in ("0.17", "0.20"):
        assert solve(Config(**dict(mla, vllm=v), backend="FLASHMLA"), role="mla_prefill").backend == "FLASH_ATTN_PREFILL"
    with pytest.raises(InvalidBackendError) as err:
        solve(Config(**mla, backend="FLASH_ATTN_PREFILL"))
    assert err.value.reasons["FLASH_ATTN_PREFILL"] == ("not a decode backend: it is selected for the MLA prefill role",)
