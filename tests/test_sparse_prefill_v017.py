"""vLLM 0.16/0.17: a sparse MLA layer has no prefill path (every sparse decode impl is a SparseMLAAttentionImpl,
whose layer sends every token through forward_mqa), so its prefill question answers NO_PREFILL, by a `no_prefill`
list (the rules have no layer step there). Each path that answers a prefill question is asked: solve, the CSP,
explain, the sweep, the advice line, and the loader's checks of the new list key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attnsolve import ANY, Config, RulesError, explain, possible_backends, solve
from attnsolve.advice import Context, advise
from attnsolve.config import FIELD_NAMES
from attnsolve.rules import load_rules
from attnsolve.selection import NO_PREFILL, solve_csp
from attnsolve.sweep import sweep

RULES = Path(__file__).resolve().parents[1] / "attnsolve" / "rules"
DSV32 = dict(dtype="bfloat16", use_mla=True, use_sparse=True, head_size=576, index_topk=2048,
             qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
HARDWARE = {"H100": dict(platform="cuda", compute_capability="9.0"),
            "B200": dict(platform="cuda", compute_capability="10.0"),
            "MI300": dict(platform="rocm", rocm_arch="gfx942", block_size=1)}


@pytest.mark.parametrize("vllm", ["0.16", "0.17"])
@pytest.mark.parametrize("gpu", sorted(HARDWARE))
def test_a_sparse_layer_gets_no_prefill_backend_silently(vllm: str, gpu: str) -> None:
    cfg = Config(vllm=vllm, **HARDWARE[gpu], **DSV32)
    sel = solve(cfg, role="mla_prefill")
    assert (sel.backend, sel.variant, sel.warnings, sel.logs, sel.rejected) == \
        (NO_PREFILL, "top-k MQA path only", (), (), ())
    assert sel.priority_list.endswith("MLA prefill, sparse layers")
    assert solve_csp(cfg, role="mla_prefill") == NO_PREFILL
    # the layer's decode backend is a sparse one, and a dense layer still takes the prefill switches' choice
    assert "SPARSE" in solve(cfg).backend
    dense = solve(cfg.replace(use_sparse=False, index_topk=None), role="mla_prefill").backend
    assert dense != NO_PREFILL and dense.endswith(("PREFILL", "DEEPSEEK"))


@pytest.mark.parametrize("vllm", ["0.16", "0.17"])
def test_explain_and_the_advice_line_say_what_runs_instead(vllm: str) -> None:
    cfg = Config(vllm=vllm, **HARDWARE["H100"], **DSV32)
    e = explain(cfg, role="mla_prefill")
    assert (e.selected, e.candidates, e.conflict, e.fixes) == (NO_PREFILL, (), {}, ())
    hint = advise(Context.of(cfg, "mla_prefill")).hint
    assert "FLASHMLA_SPARSE's top-k MQA path" in hint and "vLLM logs nothing" in hint


def test_the_advice_line_names_a_decode_failure_the_prefill_answer_does_not_show() -> None:
    # 0.17 answers the prefill question alone; vLLM's layer fails at its decode backend first (ROCm sparse MLA
    # takes block size 1 only): the answer stays NO_PREFILL, and the line says the layer cannot start
    cfg = Config(vllm="0.17", **{**HARDWARE["MI300"], "block_size": 16}, **DSV32)
    assert solve(cfg, role="mla_prefill").backend == NO_PREFILL
    hint = advise(Context.of(cfg, "mla_prefill")).hint
    assert "decode selection fails" in hint and "Sparse MLA backend on ROCm only supports block size 1" in hint
    assert "--role decode" in hint


def test_the_sweep_counts_sparse_layers_as_no_prefill_without_materialising() -> None:
    cfg = Config(vllm="0.17", platform=ANY, compute_capability=ANY, rocm_arch=ANY, dtype=ANY, head_size=ANY,
                 kv_cache_dtype=ANY, use_mla=True, use_sparse=ANY)
    s = sweep(cfg, role="mla_prefill")
    counts = s.by_backend()
    assert counts.get(NO_PREFILL, 0) > 0 and sum(counts.values()) == len(s)
    rows = list(s)
    for a, b in rows[:: max(1, len(rows) // 400)]:
        assert (b == NO_PREFILL) == (a.get("use_sparse") is True and a.get("platform") in ("cuda", "rocm")), a
    # the whole space of every field still folds (no layer step to materialise 0.17's ~2.7e9 rows)
    whole = sweep(Config(vllm="0.17", **{f: ANY for f in FIELD_NAMES}), role=ANY)
    assert whole.by_backend().get(NO_PREFILL, 0) > 0
    assert set(possible_backends(Config(vllm="0.17", platform="cuda", compute_capability="9.0", dtype="bfloat16", use_mla=True,
                                        use_sparse=ANY, head_size=576), role="mla_prefill")) \
        >= {NO_PREFILL, "FLASH_ATTN_PREFILL"}


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    shutil.copytree(RULES / "vllm-0.17", d)
    return d


@pytest.mark.parametrize("old,new,problem", [
    ("no_prefill = true\n\n[[platforms.cuda.lists]]\nname = \"MLA prefill\"",
     "no_prefill = true\nentries = [\"FLASH_ATTN_PREFILL\"]\n\n[[platforms.cuda.lists]]\nname = \"MLA prefill\"",
     "takes no entries"),
    ('when = { role = "mla_prefill", use_mla = true, use_sparse = true }\nno_prefill = true\n\n[[platforms.cuda',
     'when = { role = "decode", use_mla = true, use_sparse = true }\nno_prefill = true\n\n[[platforms.cuda',
     "role = 'mla_prefill'"),
    ("no_prefill = true\n\n[[platforms.cuda.lists]]", 'no_prefill = "yes"\n\n[[platforms.cuda.lists]]', "no_prefill"),
])
def test_a_malformed_no_prefill_list_is_a_rules_error(tmp_path: Path, old: str, new: str, problem: str) -> None:
    d = _copy(tmp_path)
    text = (d / "mla.toml").read_text()
    assert old in text
    (d / "mla.toml").write_text(text.replace(old, new, 1))
    with pytest.raises(RulesError) as info:
        load_rules(d)
    assert problem in str(info.value) and "mla.toml" in str(info.value)


@pytest.mark.parametrize("vllm", ["0.16", "0.17"])
@pytest.mark.parametrize("request_", ["FLASH_ATTN_PREFILL", "FLASHMLA_SPARSE", "ROCM_AITER_MLA_SPARSE", "TORCH_SDPA"])
def test_a_request_does_not_reach_a_layer_without_a_prefill_path(vllm: str, request_: str) -> None:
    # regression: ROCm's no_prefill list first validated requests like CUDA's lists (an internal KeyError for a
    # registry name it has no backend for, and ROCm then counted as a validating platform for Config's names)
    cfg = Config(vllm=vllm, **HARDWARE["MI300"], **DSV32, backend=request_)
    sel = solve(cfg, role="mla_prefill")
    assert (sel.backend, sel.warnings) == (NO_PREFILL, ())
    if request_ != "TORCH_SDPA":  # CUDA refuses that registry name before any list (request_errors), as vLLM does
        sel = solve(Config(vllm=vllm, **HARDWARE["H100"], **DSV32, backend=request_), role="mla_prefill")
        assert (sel.backend, sel.warnings) == (NO_PREFILL, ())


def test_a_no_prefill_list_takes_no_manual(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    text = (d / "rocm.toml").read_text()
    old = "use_sparse = true }\nno_prefill = true\n"
    assert old in text
    (d / "rocm.toml").write_text(text.replace(old, old + 'manual = "validate"\n', 1))
    with pytest.raises(RulesError, match="reads no request"):
        load_rules(d)


@pytest.mark.parametrize("vllm", ["0.17", "0.34"])
def test_a_prefill_question_with_the_platform_free_is_explained(vllm: str) -> None:
    # regression (found here, older than the no_prefill lists): explain's conditions table solved the CPU row, which
    # has no MLA prefill list in 0.17 (Config takes it, the role does not), and raised ConfigError from explain()
    cfg = Config(vllm=vllm, platform=ANY, dtype="bfloat16", use_mla=True, use_sparse=ANY, head_size=576)
    e = explain(cfg, role="mla_prefill")
    assert {"FLASH_ATTN_PREFILL", NO_PREFILL} <= set(e.possible)  # 0.34: its layer step's skips
