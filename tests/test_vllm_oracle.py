"""The differential harness's pure parts (no vLLM needed): version data, config generation,
comparison, grouping/shrinking, known differences, report."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from attnsolve import Config
from tools.vllm_oracle import cli
from tools.vllm_oracle.compare import compare, message_signature, same_outcome, vllm_rejected, vllm_variant
from tools.vllm_oracle.configs import MODES, PLATFORMS, Domains, generate, random_cpu, random_cuda, random_mla_prefill, random_rocm
from tools.vllm_oracle.known import Known, load_known
from tools.vllm_oracle.report import Tally, render, write
from tools.vllm_oracle.shrink import candidates, distance, group
from tools.vllm_oracle.versions import known_versions, load_version, version_key

PKG = Path(__file__).resolve().parents[1] / "tools" / "vllm_oracle"
# The harness's own machinery, exercised on the 0.17 set's domains (its fixtures are 0.17 configurations;
# tests/test_fidelity_v033.py covers the 0.33 run).
pytestmark = pytest.mark.vllm("0.17")
D = Domains.from_rules("0.17")


# -- version data ------------------------------------------------------------------------------
def test_version_key_and_inherit() -> None:
    assert version_key("0.17.0") == "0.17" and version_key("0.33.1") == "0.33"
    v17, v33 = load_version("0.17.0"), load_version("0.33.0")
    assert "vllm._C" in v17.stub_modules and "vllm._C" in v33.stub_modules  # inherited
    assert "vllm._deepselect_C" in v33.stub_modules and "vllm._deepselect_C" not in v17.stub_modules
    assert any(d.startswith("transformers<5") for d in v17.deps)
    assert any(d.startswith("transformers>=5") for d in v33.deps)
    assert {"0.17", "0.33"} <= set(known_versions())


def test_unknown_version_names_known_ones() -> None:
    with pytest.raises(ValueError, match=r"0\.99.*Known: (0\.\d+, )*0\.17, (0\.\d+, )*0\.33"):
        load_version("0.99.0")
    with pytest.raises(ValueError, match="Invalid vLLM version"):
        version_key("latest")


def test_every_patch_applied_in_code_is_listed_and_every_listed_one_is_applied() -> None:
    """The --patches list and the code cannot drift: ids marked in vllm_side == ids in versions.toml."""
    src = "".join(p.read_text() for p in (PKG / "vllm_side").glob("*.py"))
    marked = set(re.findall(r'_mark\("([^"]+)"', src))
    listed = set().union(*(load_version(v).patches for v in known_versions()))
    assert marked == listed
    # a release's own additions are applied only where listed (0.17 boots without 0.33's)
    for pid in set(load_version("0.33.0").patches) - set(load_version("0.17.0").patches):
        assert f'"{pid}" in data.patches' in src or f'"{pid}" not in data.patches' in src \
            or pid.startswith("xpu."), pid
    for why in load_version("0.33.0").patch_lines():
        assert ": " in why and len(why.split(": ", 1)[1]) > 10  # each entry says why


# -- configs -----------------------------------------------------------------------------------
def test_domains_come_from_the_rules() -> None:
    from attnsolve import load_rules

    rules = load_rules()
    assert D.kv_cache_dtypes == tuple(rules.domains["kv_cache_dtype"])
    assert D.rocm_archs == tuple(rules.domains["rocm_arch"])
    assert set(rules.generations) <= set(D.ccs)
    assert "FLASH_ATTN_PREFILL" not in D.backends and "FLASH_ATTN" in D.backends


def test_generate_is_deterministic_and_filtered() -> None:
    a = generate(D, n_random=40, sample=60, seed=7)
    b = generate(D, n_random=40, sample=60, seed=7)
    assert [i.to_json() for i in a] == [i.to_json() for i in b]
    assert len({i.id for i in a}) == len(a)
    assert {i.platform for i in a} == set(D.platforms) and {i.mode for i in a} == set(MODES)
    assert {i.cfg.get("rocm_arch") for i in a if i.platform == "rocm"} >= set(D.rocm_archs)
    only = generate(D, n_random=20, sample=30, platforms=("cpu",), modes=("selector",))
    assert only and {(i.platform, i.mode) for i in only} == {("cpu", "selector")}


def test_new_selector_inputs_and_xpu_are_drawn_only_where_the_rule_set_has_them() -> None:
    """vLLM 0.33's selector inputs and XPU: generated once attnsolve's Config takes them."""
    from dataclasses import replace

    from tools.vllm_oracle.configs import SELECTOR_INPUTS

    assert "xpu" not in D.platforms or "xpu" in load_rules_domain("platform")
    plain = generate(D, n_random=200, sample=60, seed=3)
    assert not any((set(SELECTOR_INPUTS) - set(D.inputs)) & set(i.cfg) for i in plain)
    wide = replace(D, platforms=PLATFORMS, inputs=SELECTOR_INPUTS,
                   valued=(("num_kv_heads", (1, 2, 4, 8)), ("dcp_size", (2, 4)), ("xpu_device", ("Arc A770",))))
    items = generate(wide, n_random=400, sample=200, seed=3)
    assert {i.platform for i in items} == set(PLATFORMS)
    drawn = {f for i in items for f in SELECTOR_INPUTS if i.cfg.get(f)}
    assert drawn == set(SELECTOR_INPUTS)
    kv = [i.cfg for i in items if i.cfg.get("num_kv_heads")]
    assert kv and all(c["num_heads"] % c["num_kv_heads"] == 0 for c in kv)
    assert all(i.cfg.get("dcp_size") in (2, 4) for i in items if i.cfg.get("use_dcp") and i.category.startswith("random"))
    assert any(i.cfg.get("xpu_device") == "Arc A770" for i in items)
    assert any(i.category == "inputs" for i in items) and any(i.category == "random_xpu" for i in items)


def load_rules_domain(name: str) -> tuple:
    from attnsolve.rules import rules_for

    return tuple(rules_for("0.17").domains.get(name, ()))


def test_stand_in_model_config() -> None:
    """A non-MLA layer is a model without MLA fields; an MLA layer without dimensions has none."""
    from tools.vllm_oracle.vllm_side.worker import model_facts

    m = model_facts({"use_mla": False, "num_heads": 32})
    assert m is not None and not hasattr(m.hf_text_config, "qk_nope_head_dim")
    assert (m.get_num_attention_heads(None), m.get_num_kv_heads(None), m.rswa_window) == (32, 32, None)
    assert model_facts({"use_mla": True}) is None
    assert model_facts({"use_mla": True}, always=True) is not None
    mla = model_facts({"use_mla": True, "head_size": 576, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64})
    assert mla.hf_text_config.kv_lora_rank == 512  # head size = kv_lora_rank + qk_rope_head_dim
    assert model_facts({"use_rswa": True, "num_kv_heads": 8, "num_heads": 32}).rswa_window is not None


def _attnsolve_config(cfg: dict) -> Config:
    """The Config the harness's attnsolve side builds (a backend_per_kind draw is resolved into the request)."""
    from tools.vllm_oracle.attnsolve_side import make_config
    config = make_config(cfg)
    if cfg.get("backend_per_kind"):
        from attnsolve.per_kind import HookReadsRequest, apply_backend_per_kind
        try:
            config = apply_backend_per_kind(config, cfg["backend_per_kind"]).config
        except HookReadsRequest:
            pass  # refused on purpose (the harness's not_modelled class)
    return config


def test_every_grid_sample_config_is_a_valid_attnsolve_config() -> None:
    for it in generate(D, n_random=0, sample=400):
        _attnsolve_config(dict(it.cfg))


@given(st.integers(0, 2**32 - 1))
def test_random_configs_are_valid_attnsolve_configs(seed: int) -> None:
    rng = random.Random(seed)
    for draw in (random_cuda, random_mla_prefill, random_rocm, random_cpu):
        _attnsolve_config(draw(D, rng))
    _attnsolve_config(random_cuda(D, rng, startup=True))


# -- comparison --------------------------------------------------------------------------------
OK_V = {"ok": True, "backend": "FLASH_ATTN", "fa_version": 3, "priority": ["FLASHINFER", "FLASH_ATTN", "TRITON_ATTN"],
        "reasons": {"FLASHINFER": ["kv_cache_dtype not supported"], "TRITON_ATTN": ["x"]}, "warnings": [], "logged": []}
OK_A = {"ok": True, "backend": "FLASH_ATTN", "variant": "FA3", "rejected": {"FLASHINFER": ["kv_cache_dtype not supported"]},
        "warnings": [], "preferred_block_size": 16}


def cats(checks: list) -> dict[str, bool]:
    return {c.category: c.agree for c in checks}


def test_agreeing_success() -> None:
    assert cats(compare("selector", "cuda", OK_V, OK_A)) == {"outcome": True, "variant": True, "reasons": True,
                                                             "warnings": True}
    assert vllm_rejected(OK_V) == {"FLASHINFER": ["kv_cache_dtype not supported"]}  # only before the winner


def test_variant_reasons_warnings_and_block_size_disagreements() -> None:
    v = dict(OK_V, fa_version=4, warnings=["w1"], startup_block_size=64)
    a = dict(OK_A, rejected={"FLASHINFER": ["kv_cache_dtype not supported", "block_size not supported"]},
             warnings=["mine"])
    got = {c.category: c for c in compare("startup", "cuda", v, a)}
    assert not got["variant"].agree and "vllm=FA4 attnsolve=FA3" in got["variant"].signature
    assert not got["reasons"].agree and "attnsolve-only=['block_size not supported']" in got["reasons"].signature
    assert not got["warnings"].agree and "vllm-only=['w1'] attnsolve-only=['mine']" in got["warnings"].signature
    assert not got["block_size"].agree and "vllm=64 attnsolve=16" in got["block_size"].signature


def test_attnsolve_warning_that_vllm_logs_at_info_agrees() -> None:
    v = dict(OK_V, logged=["Cannot use X backend on CPU."])
    a = dict(OK_A, warnings=["Cannot use X backend on CPU."])
    assert cats(compare("selector", "cuda", v, a))["warnings"]


def test_variant_mapping() -> None:
    assert vllm_variant({"fa_version": 2}) == "FA2" and vllm_variant({"fa_version": None}) == "NONE"
    assert vllm_variant({"trtllm": True}) == "TRTLLM" and vllm_variant({"trtllm": False}) == "NATIVE"
    assert vllm_variant({}) is None


def test_errors_compare_kind_reasons_and_exact_message() -> None:
    v = {"ok": False, "kind": "no_valid", "error": "No valid. Reasons: {A: [x]}.", "reasons": {"A": ["x"]}}
    a = {"ok": False, "kind": "no_valid", "error": "No valid. Reasons: {A: [x]}.", "reasons": {"A": ["x"]}}
    assert cats(compare("selector", "cuda", v, a)) == {"outcome": True, "reasons": True, "message": True}
    bad = dict(a, error="No valid. Reasons: {A: ['x']}.")
    got = {c.category: c for c in compare("selector", "cuda", v, bad)}
    assert not got["message"].agree and "reasons quoted" in got["message"].signature
    other = dict(a, kind="invalid_backend")
    assert cats(compare("selector", "cuda", v, other)) == {"outcome": False}


def test_error_vs_error_across_exception_types() -> None:
    assert same_outcome("ERR:AssertionError", "ERR:no_valid")
    assert same_outcome("ERR:RuntimeError", "ERR:invalid_backend")
    assert same_outcome("ERR:ValueError", "ERR:invalid_backend")  # a ROCm/CPU refusal: the text decides
    assert not same_outcome("ERR:no_valid", "ERR:invalid_backend")
    assert not same_outcome("TRITON_ATTN", "ERR:no_valid")


def test_message_classes_name_the_reasons_and_a_refusal_outside_selection() -> None:
    inv = "Selected backend AttentionBackendEnum.X is not valid for this configuration. Reason: "
    sig = message_signature(inv + "['a', 'b']", inv + "['a']")
    assert sig == "reason list differs: vllm-only=['b'] attnsolve-only=[]"
    v = {"ok": False, "kind": "ValueError", "error": "Bfloat16 is only supported on GPUs with compute capability of at least 8.0."}
    a = {"ok": False, "kind": "no_valid", "error": "No valid attention backend found for cuda", "reasons": {}}
    msg = [c for c in compare("startup", "cuda", v, a) if c.category == "message"][0]
    assert not msg.agree and "(vllm: Bfloat16 is only supported" in msg.signature


def test_message_signatures() -> None:
    assert message_signature("Selected backend AttentionBackendEnum.X is bad", "Selected backend X is bad").startswith("backend names")
    assert message_signature("with C(a). Reasons: {A: [x]}", "with Config(b). Reasons: {A: [x]}") == "config repr differs"
    assert message_signature("abc", "xyz") == "text differs"


# -- grouping and shrinking --------------------------------------------------------------------
def record(cid: str, cfg: dict, sig: str = "s") -> dict:
    return {"category": "outcome", "signature": sig, "item": {"id": cid, "category": "random", "mode": "selector",
            "platform": cfg["platform"], "cfg": cfg}, "vllm": {"ok": True, "backend": "A"}, "attnsolve": {"ok": False}}


def test_group_picks_the_smallest_member() -> None:
    big = dict(platform="cuda", compute_capability="9.0", dtype="bfloat16", has_sink=True, block_size=16)
    small = dict(platform="cuda", compute_capability="9.0", dtype="bfloat16", has_sink=True)
    classes = group([record("b", big), record("a", small), record("c", small, sig="t")])
    assert len(classes) == 2
    k = classes[("outcome", "s")]
    assert len(k.members) == 2 and k.example["item"]["id"] == "a"
    assert distance(small) == 1 and distance(big) == 2


def test_candidates_move_one_field_toward_the_defaults() -> None:
    cfg = dict(platform="cuda", compute_capability="9.0", dtype="bfloat16", use_mla=True, use_sparse=True,
               head_size=576, block_size=64, qk_nope_head_dim=128)
    cs = candidates(cfg)
    assert all(distance(c) < distance(cfg) for c in cs)
    assert any("qk_nope_head_dim" not in c for c in cs)
    assert any(c["block_size"] is None for c in cs)
    assert all(c["use_mla"] or not c["use_sparse"] for c in cs)
    for c in cs:
        Config(**c)


# -- known differences -------------------------------------------------------------------------
def test_known_differences_file_loads_and_matches(tmp_path: Path) -> None:
    load_known()  # the shipped file is well-formed
    k = Known("x", ("message",), r"reasons quoted", "why", versions=("0.17",), platforms=("cuda",))
    assert k.matches("message", "message ERR:no_valid reasons quoted", "0.17.0", "cuda", "selector")
    assert not k.matches("message", "message ERR:no_valid reasons quoted", "0.33.0", "cuda", "selector")
    assert not k.matches("reasons", "reasons quoted", "0.17.0", "cuda", "selector")
    bad = tmp_path / "k.toml"
    bad.write_text('[[difference]]\nid = "a"\ncategory = "message"\n')
    with pytest.raises(ValueError, match="lacks match, cause"):
        load_known(bad)
    both = tmp_path / "b.toml"
    both.write_text('[[difference]]\nid = "a"\ncategory = ["outcome", "message"]\nmatch = "x"\ncause = "why"\n')
    (k2,) = load_known(both)
    assert k2.matches("message", "x", "0.17.0", "cuda", "startup") and k2.matches("outcome", "x", "0.17.0", "cuda", "s")
    assert not k2.matches("warnings", "x", "0.17.0", "cuda", "startup")
    both.write_text('[[difference]]\nid = "a"\ncategory = "mesage"\nmatch = "x"\ncause = "why"\n')
    with pytest.raises(ValueError, match="unknown category 'mesage'"):
        load_known(both)


def test_warning_lines_of_two_known_classes_are_known_line_by_line() -> None:
    """A configuration that meets two known warnings classes lists both lines in one signature (found with 0.21: a
    deprecated prefill switch's line beside a layer's prefix-caching line); each line alone is known, so the pair is,
    and a line no entry accepts keeps the pair unexplained."""
    from tools.vllm_oracle.known import explain
    known = (Known("a", ("warnings",), r"attnsolve-only=\['line a'\]$", "why"),
             Known("b", ("warnings",), r"attnsolve-only=\['line b'\]$", "why", versions=("0.21",)))
    pair = "warnings vllm-only=[] attnsolve-only=['line a', 'line b']"
    assert explain(known, "warnings", pair, "0.21.0", "cuda", "selector").id == "a"
    assert explain(known, "warnings", pair, "0.22.0", "cuda", "selector") is None  # b is 0.21's only
    assert explain(known, "warnings", "warnings vllm-only=[] attnsolve-only=['line a', 'line c']", "0.21.0", "cuda",
                   "selector") is None
    assert explain(known, "message", pair, "0.21.0", "cuda", "selector") is None


def test_a_line_only_vllm_logs_beside_one_only_attnsolve_gives_is_known_line_by_line() -> None:
    """Found with 0.21 on XPU in start-up mode: the hook's graph-mode line (only vLLM) beside a deprecated switch's
    line (only attnsolve), each a known class of its own side."""
    from tools.vllm_oracle.known import explain
    known = (Known("graph", ("warnings",), r"^warnings vllm-only=\['graph'\] attnsolve-only=\[\]$", "why"),
             Known("switch", ("warnings",), r"^warnings vllm-only=\[\] attnsolve-only=\['switch'\]$", "why"))
    both = "warnings vllm-only=['graph'] attnsolve-only=['switch']"
    assert explain(known, "warnings", both, "0.21.0", "xpu", "startup").id == "graph"
    assert explain(known, "warnings", "warnings vllm-only=['graph', 'other'] attnsolve-only=['switch']", "0.21.0",
                   "xpu", "startup") is None


# -- report and CLI ----------------------------------------------------------------------------
def test_report_counts_and_files(tmp_path: Path) -> None:
    items = generate(D, n_random=0, sample=30, platforms=("cuda",), modes=("selector",))
    t = Tally()
    t.add(items[0], compare("selector", "cuda", OK_V, OK_A), set())
    t.add(items[1], compare("selector", "cuda", OK_V, dict(OK_A, variant="FA2")), set())
    assert t.configs["all"] == 2 and t.configs_agree["all"] == 1
    assert t.compared[("all", "variant")] == 2 and t.agree[("all", "variant")] == 1
    classes = group([record("a", dict(items[1].cfg))])
    text = render("0.17.0", t, classes)
    assert "variant 1/2 (50.00%)" in text and "1 unexplained" in text and "minimal:" in text
    write(tmp_path, "0.17.0", text, t, [record("a", dict(items[1].cfg))], classes)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["figures"]["all"]["variant"] == {"compared": 2, "agree": 1}
    assert (tmp_path / "disagreements.jsonl").read_text().count("\n") == 1


def test_cli_profiles_and_bad_arguments(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    a = cli.parse(["--vllm", "0.17.0", "--profile", "ci"])
    assert (a.n, a.sample, a.shrink_rounds) == (150, 300, 0)
    a = cli.parse(["--vllm", "0.17.0"])
    assert (a.n, a.sample, a.shrink_rounds) == (20000, None, 2)
    with pytest.raises(SystemExit) as e:
        cli.parse(["--vllm", "0.17.0", "--platform", "tpu"])
    assert e.value.code == 2
    assert cli.main(["--vllm", "0.99.0"]) == 2
    assert "Invalid vLLM version" in capsys.readouterr().err
    # the rule set compared with: one attnsolve lacks is named with the ones it has, before provisioning
    assert cli.main(["--vllm", "0.17.0", "--attnsolve-vllm", "0.99"]) == 2
    err = capsys.readouterr().err
    assert "no rule set for vLLM 0.99" in err and "0.17" in err
    # a platform the rule set lacks is refused before provisioning (every packaged set has XPU since session 40, when
    # 0.16/0.17's was added): a rule set's domains without it
    import dataclasses
    real = cli.Domains.from_rules
    monkeypatch.setattr(cli.Domains, "from_rules", classmethod(
        lambda c, v=None: dataclasses.replace(real(v), platforms=("cuda", "rocm", "cpu"))))
    assert cli.main(["--vllm", "0.17.0", "--platform", "xpu"]) == 2
    assert "has no xpu platform" in capsys.readouterr().err


def test_questions_name_the_release_compared_with() -> None:
    from tools.vllm_oracle.attnsolve_side import PASS_VLLM_VERSION, answer, make_config

    assert PASS_VLLM_VERSION  # attnsolve's Config takes vllm=
    assert make_config({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16"}, "0.17.0").vllm == "0.17"
    got = answer({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "head_size": 128},
                 "selector", "0.17.0")
    assert got["ok"] and got["backend"] == "FLASH_ATTN"


def test_vllm_answers_are_reused_from_the_cache(tmp_path: Path) -> None:
    from tools.vllm_oracle.runner import _question, answer_cache, run_vllm

    items = generate(D, n_random=0, sample=12, platforms=("cuda",), modes=("selector",))
    cache = answer_cache(tmp_path, "0.17.0")
    assert cache.parent == tmp_path / "answers" and cache.name.startswith("0.17.0-")
    cache.parent.mkdir(parents=True)
    cache.write_text("".join(json.dumps([_question(it), {"ok": True, "backend": f"B{n}"}]) + "\n"
                             for n, it in enumerate(items)))
    # every answer is cached: no vLLM process is started (the python path does not exist)
    got = run_vllm(tmp_path / "no-python", "0.17.0", items, workdir=tmp_path, cache=cache, log=False)
    assert [got[it.id]["backend"] for it in items] == [f"B{n}" for n in range(len(items))]
    assert all(got[it.id]["id"] == it.id for it in items)


# -- a crash of vLLM's worker on an import ------------------------------------------------------
def test_an_import_error_is_compared_without_the_worker_s_path() -> None:
    """vLLM 0.28 on CPU: the FlashAttention prefill module does not import; the worker reports the exception with
    its type and the file of the module it imported from (the oracle's venv), the rules state vLLM's text."""
    text = "cannot import name 'f' from 'vllm.v1.attention.backends.fa_utils'"
    v = {"ok": False, "kind": "crash",
         "error": f"ImportError: {text} (/root/.cache/attnsolve-oracle/venv-0.28.0/lib/python3.11/site-packages/"
                  "vllm/v1/attention/backends/fa_utils.py)"}
    a = {"ok": False, "kind": "no_valid", "error": text, "reasons": {}}
    assert cats(compare("mla_prefill", "cpu", v, a)) == {"outcome": True, "message": True}
    other = dict(a, error="cannot import name 'g' from 'vllm.v1.attention.backends.fa_utils'")
    assert cats(compare("mla_prefill", "cpu", v, other)) == {"outcome": True, "message": False}


# -- every quoted text looked up in the release's source (tools/vllm_oracle/messages.py) --------------
def test_quoted_texts_are_looked_up_in_the_source_as_vllm_composes_them() -> None:
    from tools.vllm_oracle.messages import missing
    corpus = "\n".join([
        "FA4's Blackwell head_size=%d kernel does not support %s, defaulting to FA version 2.",  # %-template
        "Selected backend {selected_backend} is not valid for this configuration. ",               # f-string part
        "Your ", " GPU ", "has compute capability ",                                              # joined literals
        "logits soft capping",
    ])
    docs = {"cuda.toml": {"derived": {"x": {"cases": [
        {"warning": "FA4's Blackwell head_size=256 kernel does not support logits soft capping, defaulting to FA version 2."},
        {"warning": "Selected backend AttentionBackendEnum.FLASH_ATTN is not valid for this configuration. Reason: {r}"},
        {"warning": "Your {gpu} GPU has compute capability {cc}"},
        # what session 27 found: a text the release after this one added, inherited by an edit folder
        {"warning": "The DCP prefill wrapper cannot read NVFP4 block scales."},
        {"warning": "FA4's Blackwell head_size=256 kernel does not support a long list of things nobody wrote"},
    ]}}}, "invariants.toml": {"invariants": [{"reason": "attnsolve's own explanation of the space"}]}}
    lost = [text for _, text, _ in missing(docs, corpus)]
    assert lost == ["The DCP prefill wrapper cannot read NVFP4 block scales.",
                    "FA4's Blackwell head_size=256 kernel does not support a long list of things nobody wrote"]


def test_a_text_of_short_words_and_values_is_looked_up_whole() -> None:
    """A text whose every literal piece is short or value-like ("Using fp8 KV cache for GLM-5.3-Flash") left nothing to
    look up and passed unseen (it was 0.33's, inherited by 0.32 to 0.24): it must now be what one of the release's
    messages prints, a template's own words making most of it."""
    from tools.vllm_oracle.messages import missing
    corpus = "\n".join([
        "Using %s.",                                     # too little of its own to stand for any "Using ..." text
        "Using %s KV cache format for %s backend.",      # a %-template
        "FA4 sparse MLA requires (kv_lora_rank, qk_rope_head_dim) ", "== (512, 64), got ",  # an f-string's parts
    ])
    docs = {"mla.toml": {"x": [
        {"log": "Using fp8 KV cache for GLM-5.3-Flash"},
        {"log": "Using fp8_ds_mla KV cache format for FLASHMLA_SPARSE backend."},
        {"reason": "FA4 sparse MLA requires (kv_lora_rank, qk_rope_head_dim) == (512, 64), got ({a}, {b})"},
    ]}}
    assert [text for _, text, _ in missing(docs, corpus)] == ["Using fp8 KV cache for GLM-5.3-Flash"]


def test_a_backend_enum_member_is_one_value() -> None:
    """vLLM 0.18's ROCm logs "Using %s backend." with the enum member, which prints "AttentionBackendEnum.X": the
    rule text "Using AttentionBackendEnum.{backend} backend." is that template, not a text the release lacks."""
    from tools.vllm_oracle.messages import missing
    corpus = "\n".join(["Using %s backend.", "Using %s KV cache layout for %s backend."])
    docs = {"rocm.toml": {"platforms": {"rocm": {"manual_log": "Using AttentionBackendEnum.{backend} backend."}},
                          "x": [{"log": "Using AttentionBackendEnum.{backend} attention backend."}]}}
    assert [text for _, text, _ in missing(docs, corpus)] == ["Using {backend} attention backend."]


def test_a_text_whose_looked_up_phrase_is_the_smaller_part_is_looked_up_whole() -> None:
    """Regression (session 35): "deepseek_v32 does not yet support XPU." (0.27/0.28's) passed for 0.20 to 0.26 because
    its one piece long enough to look up, " does not yet support ", is in other messages; a text without placeholders
    whose looked-up pieces are under about half of it must now be one of the release's messages whole (and a template
    with a value-like field still composes it)."""
    from tools.vllm_oracle.messages import missing
    corpus = "\n".join(["vLLM does not yet support DoRA.", "Using %s KV cache format for %s backend."])
    docs = {"xpu.toml": {"x": [
        {"error": "deepseek_v32 does not yet support XPU."},
        {"log": "Using fp8_ds_mla KV cache format for FLASHINFER_MLA_SPARSE_SM120 backend."},
    ]}}
    assert [text for _, text, _ in missing(docs, corpus)] == ["deepseek_v32 does not yet support XPU."]


def test_an_architecture_the_release_does_not_register_is_reported() -> None:
    """The --model reader's architecture tables are release facts too: one the release's model registry lacks is
    reported with where it is read."""
    from tools.vllm_oracle.messages import unregistered_architectures
    registry = '_TEXT_GENERATION_MODELS = {\n    "GraniteForCausalLM": ("granite", "GraniteForCausalLM"),\n}'
    docs = {"fields.toml": {"fields": {"has_sink": {"architecture_keys": {
        "GraniteForCausalLM": [], "GraniteSWAForCausalLM": []}}}}}
    assert unregistered_architectures(docs, registry) == [
        ("fields.toml.fields.has_sink.architecture_keys", "GraniteSWAForCausalLM")]


def test_an_environment_failure_is_never_memoised() -> None:
    """Regression (session 35): a harness venv whose borrowed torch was gone answered every question "No module named
    'torch'", and the answer cache kept those answers after the venv was mended."""
    from tools.vllm_oracle.runner import environment_failure
    assert environment_failure({"ok": False, "kind": "crash", "error": "ModuleNotFoundError: No module named 'torch'"})
    assert not environment_failure({"ok": False, "kind": "crash", "error": "AssertionError: DeepseekV4 only supports fp8"})
    assert not environment_failure({"ok": False, "kind": "no_valid", "error": "ImportError"})


# -- envcheck: declared environment variables against a release's envs.py lambdas ------------------------------

_ENVS_PY = '''
import os
environment_variables: dict = {
    "VLLM_ROCM_USE_AITER": lambda: (os.getenv("VLLM_ROCM_USE_AITER", "False").lower() in ("true", "1")),
    "VLLM_ROCM_USE_AITER_MHA": lambda: (os.getenv("VLLM_ROCM_USE_AITER_MHA", "True").lower() in ("true", "1")),
    "VLLM_ROCM_USE_AITER_MLA": lambda: (os.getenv("VLLM_ROCM_USE_AITER_MLA", "True").lower() in ("true", "1")),
    "VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION": lambda: bool(int(os.getenv("VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION", "0"))),
}
'''


def test_envcheck_reads_a_variable_with_the_module_function_that_reads_it():
    """vLLM 0.18 reads VLLM_BATCH_INVARIANT in model_executor/layers/batch_invariant.py (not envs.py): envcheck runs
    that function alone, from the module's source, with the stand-in os (int(text) != 0, a non-number off)."""
    from tools.vllm_oracle.envcheck import module_readers

    source = (
        "import os\nimport torch\n\n"
        "def _read_vllm_batch_invariant() -> bool:\n"
        "    val = os.getenv(\"VLLM_BATCH_INVARIANT\", \"0\")\n"
        "    try:\n        return int(val) != 0\n    except ValueError:\n        return False\n\n"
        "VLLM_BATCH_INVARIANT: bool = _read_vllm_batch_invariant()\n")
    files = {"vllm/model_executor/layers/batch_invariant.py": source}
    read = module_readers(files.get)["VLLM_BATCH_INVARIANT"]
    assert [read({"VLLM_BATCH_INVARIANT": x}) for x in ("1", "0", "true", "2")] == [True, False, False, True]
    assert read({}) is False
    assert module_readers({}.get) == {}  # a release without the module (or the function) reads nothing there


def test_envcheck_finds_a_variable_the_release_lacks_and_a_text_read_differently():
    """A stand-in envs.py: VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION read with int() (0.17 reads it as true/1), and no
    VLLM_ATTENTION_BACKEND, which an older 0.17 set declared."""
    import dataclasses

    from attnsolve.rules import rules_for
    from tools.vllm_oracle.envcheck import differences, envs_lambdas

    lambdas = envs_lambdas(_ENVS_PY)
    assert lambdas["VLLM_ROCM_USE_AITER"]({"VLLM_ROCM_USE_AITER": "yes"}) is False
    rules = rules_for("0.17")
    backend = dataclasses.replace(rules.fields["backend"], env="VLLM_ATTENTION_BACKEND", env_reads="true_or_1")
    stale = dataclasses.replace(rules, fields={**rules.fields, "backend": backend})
    found = differences(stale, lambdas)
    assert ("VLLM_ATTENTION_BACKEND (fields.backend): not in this release's envs.py (nor read by a module READERS "
            "names)") in found
    assert any(line.startswith("VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION='true': vLLM reads \"ValueError: invalid literal") for line in found)
    assert not any(line.startswith("VLLM_ROCM_USE_AITER=") for line in found)  # read alike
