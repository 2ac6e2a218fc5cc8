"""vLLM 0.16/0.17: the MLA layer selects its decode backend before its implementation exists (MLAAttention.__init__),
and that implementation chooses the prefill path. So a layer whose decode selection fails has no prefill answer (vLLM
cannot start), and a sparse layer (every sparse decode impl is a SparseMLAAttentionImpl, which sends every token
through forward_mqa) has no prefill path: the platforms' `mla_prefill` layer step, as in 0.18 to 0.20. Each path that
answers a prefill question is asked: solve, the CSP, explain, the sweep, the advice line. The `no_prefill` list key
(a branch that gives no prefill backend, reading no decode step) stays a rules feature: its tests use a copy of 0.17
that says so by a list."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attnsolve import ANY, Config, ConfigError, NoValidBackendError, RulesError, explain, possible_backends, solve
from attnsolve import use_rules
from attnsolve.advice import Context, advise
from attnsolve.config import FIELD_NAMES
from attnsolve.coverage import coverage_report
from attnsolve.rules import load_rules
from attnsolve.selection import NO_PREFILL, solve_csp
from attnsolve.sweep import sweep

RULES = Path(__file__).resolve().parents[1] / "attnsolve" / "rules"
DSV32 = dict(dtype="bfloat16", use_mla=True, use_sparse=True, head_size=576, index_topk=2048,
             qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
DSV3 = {**DSV32, "use_sparse": False, "index_topk": None}
HARDWARE = {"H100": dict(platform="cuda", compute_capability="9.0"),
            "B200": dict(platform="cuda", compute_capability="10.0"),
            "MI300": dict(platform="rocm", rocm_arch="gfx942", block_size=1)}
RELEASES = ["0.16", "0.17"]


@pytest.mark.parametrize("vllm", RELEASES)
@pytest.mark.parametrize("gpu", sorted(HARDWARE))
def test_a_sparse_layer_gets_no_prefill_backend_silently(vllm: str, gpu: str) -> None:
    cfg = Config(vllm=vllm, **HARDWARE[gpu], **DSV32)
    sel = solve(cfg, role="mla_prefill")
    assert (sel.backend, sel.variant, sel.warnings, sel.logs, sel.rejected) == \
        (NO_PREFILL, "top-k MQA path only", (), (), ())
    assert sel.priority_list == "MLA prefill skipped"
    assert solve_csp(cfg, role="mla_prefill") == NO_PREFILL
    # the layer's decode backend is a sparse one, and a dense layer still takes the prefill switches' choice
    assert "SPARSE" in solve(cfg).backend
    dense = solve(Config(vllm=vllm, **HARDWARE[gpu], **DSV3), role="mla_prefill").backend
    assert dense != NO_PREFILL and dense.endswith(("PREFILL", "DEEPSEEK"))


@pytest.mark.parametrize("vllm", RELEASES)
@pytest.mark.parametrize("case", [
    # a sparse layer on a GPU no sparse decode backend runs on (the answer was NO_PREFILL until session 41)
    dict(platform="cuda", compute_capability="8.0", **DSV32),
    # a dense layer whose decode selection fails (fp8 KV below SM 9.0: the prefill switches' FA2 until session 41)
    dict(platform="cuda", compute_capability="8.0", **{**DSV3, "kv_cache_dtype": "fp8"}),
    # ROCm's sparse MLA takes block size 1 only
    dict(platform="rocm", rocm_arch="gfx942", block_size=16, **DSV32),
])
def test_a_layer_whose_decode_selection_fails_has_no_prefill_answer(vllm: str, case: dict) -> None:
    cfg = Config(vllm=vllm, **case)
    with pytest.raises(NoValidBackendError) as decode:
        solve(cfg)
    with pytest.raises(NoValidBackendError) as prefill:
        solve(cfg, role="mla_prefill")
    # vLLM's own text and reasons: the layer's decode selection's
    assert (prefill.value.args[0], prefill.value.reasons) == (decode.value.args[0], decode.value.reasons)
    assert solve_csp(cfg, role="mla_prefill") is None
    e = explain(cfg, role="mla_prefill")
    assert e.selected is None and e.fixes  # and what makes the layer start


@pytest.mark.parametrize("vllm", RELEASES)
def test_explain_and_the_advice_line_say_what_runs_instead(vllm: str) -> None:
    cfg = Config(vllm=vllm, **HARDWARE["H100"], **DSV32)
    e = explain(cfg, role="mla_prefill")
    assert (e.selected, e.candidates, e.conflict, e.fixes) == (NO_PREFILL, (), {}, ())
    hint = advise(Context.of(cfg, "mla_prefill")).hint
    assert "FLASHMLA_SPARSE's top-k MQA path" in hint and "vLLM logs nothing" in hint


def test_the_sweep_reads_each_prefill_row_s_decode_twin() -> None:
    cfg = Config(vllm="0.17", platform="cuda", compute_capability=ANY, dtype="bfloat16", head_size=576,
                 kv_cache_dtype=ANY, use_mla=True, use_sparse=ANY)
    s = sweep(cfg, role=ANY)
    rows = list(s)
    assert rows and sum(s.by_backend().values()) == len(s)
    decode = {tuple(sorted((k, v) for k, v in a.items() if k != "role")): b for a, b in rows if a["role"] == "decode"}
    seen = set()
    for a, b in rows:
        if a["role"] != "mla_prefill":
            continue
        twin = decode[tuple(sorted((k, v) for k, v in a.items() if k != "role"))]
        if twin is None:
            assert b is None, a  # the layer fails at its decode backend
        elif a["use_sparse"]:
            assert b == NO_PREFILL, a
        else:
            assert b not in (None, NO_PREFILL), a
        seen.add((twin is None, a["use_sparse"]))
    assert seen == {(True, True), (True, False), (False, True), (False, False)}
    # the role fixed: each prefill row is solved with its own decode step
    p = sweep(cfg, role="mla_prefill")
    assert p.by_backend() == {b: n for b, n in _count(r for r in rows if r[0]["role"] == "mla_prefill").items()}


def _count(rows) -> dict:
    out: dict = {}
    for _, b in rows:
        out[b] = out.get(b, 0) + 1
    return out


def test_the_whole_space_is_too_large_to_lay_out_and_coverage_witnesses_instead() -> None:
    whole = Config(vllm="0.17", **{f: ANY for f in FIELD_NAMES if f != "backend"}, backend=None)  # coverage's
    with pytest.raises(ConfigError, match="sweep too large: .* combinations of the free fields"):
        sweep(whole, role=ANY)
    report = coverage_report(Config(vllm="0.17", platform="cuda", compute_capability="9.0", dtype="bfloat16"))
    assert report.groups  # the dead-rule search falls back to witnessed lists, as for 0.18 on
    assert set(possible_backends(Config(vllm="0.17", platform="cuda", compute_capability="9.0", dtype="bfloat16",
                                        use_mla=True, use_sparse=ANY, head_size=576), role="mla_prefill")) \
        >= {NO_PREFILL, "FLASH_ATTN_PREFILL"}


@pytest.mark.parametrize("vllm", RELEASES)
@pytest.mark.parametrize("request_", ["FLASHMLA_SPARSE", "ROCM_AITER_MLA_SPARSE", "TORCH_SDPA"])
def test_a_request_is_the_layer_s_decode_request(vllm: str, request_: str) -> None:
    # ROCm's sparse branch returns ROCM_AITER_MLA_SPARSE before it reads a request (rocm.py); CUDA validates it, as
    # the layer's decode selection does
    rocm = Config(vllm=vllm, **HARDWARE["MI300"], **DSV32, backend=request_)
    assert solve(rocm, role="mla_prefill").backend == NO_PREFILL
    cuda = Config(vllm=vllm, **HARDWARE["H100"], **DSV32, backend=request_)
    try:
        decode = solve(cuda).backend
    except Exception as err:  # noqa: BLE001 - the request refused: the layer's failure
        with pytest.raises(type(err)):
            solve(cuda, role="mla_prefill")
    else:
        assert decode == request_ and solve(cuda, role="mla_prefill").backend == NO_PREFILL


@pytest.mark.parametrize("vllm", ["0.17", "0.34"])
def test_a_prefill_question_with_the_platform_free_is_explained(vllm: str) -> None:
    # regression: explain's conditions table solved the CPU row, which has no MLA prefill list in 0.17 (Config takes
    # it, the role does not), and raised ConfigError from explain()
    cfg = Config(vllm=vllm, platform=ANY, dtype="bfloat16", use_mla=True, use_sparse=ANY, head_size=576)
    e = explain(cfg, role="mla_prefill")
    # 0.17: no sparse layer starts without a compute capability or ROCm's block size 1 (its decode selection fails);
    # 0.34: its layer step's skips give sparse layers no prefill backend
    assert set(e.possible) >= ({"FLASH_ATTN_PREFILL"} if vllm == "0.17" else {"FLASH_ATTN_PREFILL", NO_PREFILL})


# ---- the `no_prefill` list key, on a copy of 0.17 that gives sparse CUDA layers no prefill backend by a list ----

SKIP_BLOCK = '[platforms.cuda.mla_prefill]\nskips = [{ when = { use_sparse = true }, warning = "" }]\n'
NO_PREFILL_LIST = ('[[platforms.cuda.lists]]\nname = "MLA prefill, sparse layers"\n'
                   'when = { role = "mla_prefill", use_mla = true, use_sparse = true }\nno_prefill = true\n')


def _with_list(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    shutil.copytree(RULES / "vllm-0.17", d)
    text = (d / "mla.toml").read_text()
    assert SKIP_BLOCK in text
    (d / "mla.toml").write_text(text.replace(SKIP_BLOCK, NO_PREFILL_LIST, 1))
    return d


def test_a_no_prefill_list_answers_without_the_decode_step(tmp_path: Path) -> None:
    with use_rules(_with_list(tmp_path)):
        for cc in ("9.0", "8.0"):  # 8.0: the decode selection fails, which the list does not read
            cfg = Config(platform="cuda", compute_capability=cc, **DSV32)
            sel = solve(cfg, role="mla_prefill")
            assert (sel.backend, sel.warnings, sel.priority_list) == (NO_PREFILL, (), "MLA prefill, sparse layers")
            assert solve_csp(cfg, role="mla_prefill") == NO_PREFILL
            assert explain(cfg, role="mla_prefill").selected == NO_PREFILL
        hint = advise(Context.of(Config(platform="cuda", compute_capability="8.0", **DSV32), "mla_prefill")).hint
        assert "decode selection fails" in hint and "--role decode" in hint
        s = sweep(Config(platform="cuda", compute_capability=ANY, dtype="bfloat16", head_size=576, use_mla=True,
                         use_sparse=ANY), role="mla_prefill")
        for a, b in s:
            assert (b == NO_PREFILL) == (a["use_sparse"] is True), a
        with pytest.raises(NoValidBackendError):
            solve(Config(platform="rocm", rocm_arch="gfx942", block_size=16, **DSV32), role="mla_prefill")


@pytest.mark.parametrize("old,new,problem", [
    ("no_prefill = true\n", "no_prefill = true\nentries = [\"FLASH_ATTN_PREFILL\"]\n", "takes no entries"),
    ('when = { role = "mla_prefill", use_mla = true, use_sparse = true }\nno_prefill = true\n',
     'when = { role = "decode", use_mla = true, use_sparse = true }\nno_prefill = true\n', "role = 'mla_prefill'"),
    ("no_prefill = true\n", 'no_prefill = "yes"\n', "no_prefill"),
    ("no_prefill = true\n", 'no_prefill = true\nmanual = "validate"\n', "reads no request"),
])
def test_a_malformed_no_prefill_list_is_a_rules_error(tmp_path: Path, old: str, new: str, problem: str) -> None:
    d = _with_list(tmp_path)
    text = (d / "mla.toml").read_text()
    assert old in text
    (d / "mla.toml").write_text(text.replace(old, new, 1))
    with pytest.raises(RulesError) as info:
        load_rules(d)
    assert problem in str(info.value) and "mla.toml" in str(info.value)


# ---- ROCm's dense MLA layer without upstream flash_attn (mla_attention.py imports flash_attn_varlen_func from
# vllm_flash_attn, CUDA's, or flash_attn on ROCm; MLACommonImpl.__init__ raises when neither is there)

ROCM_FA_TEXT = ("MLA attention requires FlashAttention but it is not available. Please install flash_attn or use "
                "--attention-backend ROCM_AITER_MLA.")


@pytest.mark.parametrize("vllm", ["0.16", "0.17", "0.18", "0.19", "0.20"])
def test_a_rocm_dense_layer_without_flash_attn_raises_the_impl_s_error(vllm: str) -> None:
    dense = dict(platform="rocm", rocm_arch="gfx942", **DSV3)
    assert solve(Config(vllm=vllm, **dense), role="mla_prefill").backend == "FLASH_ATTN_PREFILL"  # installed: default
    cfg = Config(vllm=vllm, **dense, rocm_flash_attn_found=False)
    with pytest.raises(NoValidBackendError) as err:
        solve(cfg, role="mla_prefill")
    # vLLM's RuntimeError text, not the decode selector's "No valid attention backend found for rocm ..." (0.18 to
    # 0.20 gave that until session 41: the platform's mla_prefill_no_valid_message was read by nothing)
    assert err.value.args[0] == ROCM_FA_TEXT
    assert solve_csp(cfg, role="mla_prefill") is None
    assert solve(cfg).backend  # the decode backend is fine: only the prefill path needs flash_attn
    sparse = Config(vllm=vllm, platform="rocm", rocm_arch="gfx942", block_size=1, **DSV32, rocm_flash_attn_found=False)
    assert solve(sparse, role="mla_prefill").backend == NO_PREFILL  # no prefill path to need it
