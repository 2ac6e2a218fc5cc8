"""vLLM 0.33's MLA prefill: the validated prefill registry and what the MLA layer does around it.

Regression cases from the differential harness (`python -m tools.vllm_oracle --vllm 0.33.0 --mode
mla_prefill`), each naming the vLLM 0.33.0 file the fact comes from; vLLM's texts are as vLLM printed
them there. The engine side applies `[platforms.cuda.mla_prefill]` (mla.toml): requests, messages,
`skips` and `fallbacks` as data; 0.17's prefill (no registry, no decode step) stays as it was.
"""

from __future__ import annotations

import pytest

from attnsolve import Config, InvalidBackendError, NoValidBackendError, explain
from attnsolve.advice import prefill_dict, prefill_for, prefill_text, Context
from attnsolve.selection import NO_PREFILL, solve_csp, solve_uncached

R1 = dict(qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)  # DeepSeek-V3 / R1
V32_K2 = dict(qk_nope_head_dim=192, qk_rope_head_dim=64, v_head_dim=256)
ODD = dict(qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=64)  # no prefill backend serves it

SKIP = "Sparse MLA layer has no dense-MHA prefill path; using the top-k MQA path only."
FALLBACK = ("No MLA prefill backend supports this model; sparse MLA will use the top-k MQA path only "
            "(no dense-MHA prefill).")
ODD_FA = "Model does not have supported MLA dimensions (got (qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=64))"


def _mla(cc: str, **kw) -> Config:
    base = dict(vllm="0.33", platform="cuda", compute_capability=cc, dtype="bfloat16", use_mla=True, head_size=576,
                tokenspeed_mla_available=False)
    base.update(kw)
    return Config(**base)


def _sparse(cc: str, dims=R1, **kw) -> Config:
    return _mla(cc, use_sparse=True, index_topk=2048, **dims, **kw)


def _prefill(cfg: Config):
    sel = solve_uncached(cfg, role="mla_prefill")
    assert solve_csp(cfg, role="mla_prefill") == sel.backend, "bitsets and CSP disagree"
    return sel


# ------------------------------------------------------------------------------------------ the registry
def test_blackwell_puts_flash_attn_first_for_r1_dims_with_fa4():
    # platforms/interface.py Platform.get_mla_prefill_backend_cls (SM 10.x, dims other than 192/64/256);
    # prefill/flash_attn.py FlashAttnPrefillBackend.__init__: get_flash_attn_version(head_size=192, head_size_v=128)
    sel = _prefill(_mla("10.0", **R1))
    assert (sel.backend, sel.variant, sel.rejected) == ("FLASH_ATTN_PREFILL", "FA4", ())
    assert sel.logs == ("Using FLASH_ATTN MLA prefill backend.",)  # prefill/selector.py, INFO


def test_blackwell_puts_trtllm_ragged_first_for_192_64_256():
    # platforms/interface.py: dims (192, 64, 256) on SM 10.x -> TRTLLM_RAGGED, FLASH_ATTN, FLASHINFER, TOKENSPEED_MLA
    sel = _prefill(_mla("10.0", **V32_K2))
    assert sel.backend == "TRTLLM_RAGGED_PREFILL" and sel.logs == ("Using TRTLLM_RAGGED MLA prefill backend.",)


def test_hopper_has_flash_attn_only_with_fa3():
    # platforms/interface.py: every GPU but SM 10.x has FLASH_ATTN only; fa_utils.get_flash_attn_version: FA3 on SM 9.x
    sel = _prefill(_mla("9.0", **R1))
    assert (sel.backend, sel.variant) == ("FLASH_ATTN_PREFILL", "FA3")


def test_no_valid_prefill_backend_lists_every_one_under_vllm_names():
    # platforms/interface.py get_mla_prefill_backend_cls: its ValueError, reasons under MLAPrefillBackendEnum names
    with pytest.raises(NoValidBackendError) as info:
        solve_uncached(_mla("10.0", **ODD), role="mla_prefill")
    assert list(info.value.reasons) == ["FLASH_ATTN", "TRTLLM_RAGGED", "FLASHINFER", "TOKENSPEED_MLA"]
    assert str(info.value).startswith(
        "No valid MLA prefill backend found with MLAPrefillSelectorConfig(dtype=torch.bfloat16, mla_dimensions="
        "(qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=64)). Reasons: {FLASH_ATTN: [" + ODD_FA + "], "
        "TRTLLM_RAGGED: [Model does not have supported MLA dimensions (got (qk_nope_head_dim=128, qk_rope_head_dim=64, "
        "v_head_dim=64); supported: (qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128), (qk_nope_head_dim=192, "
        "qk_rope_head_dim=64, v_head_dim=256))], FLASHINFER: [")
    # prefill/tokenspeed_mla.py validate_configuration: the install hint replaces the generic dependency reason
    assert info.value.reasons["TOKENSPEED_MLA"][0] == \
        "tokenspeed_mla package is not installed. Install it with: `uv pip install tokenspeed-mla`"


def test_a_requested_prefill_backend_lists_every_failing_reason():
    # prefill/base.py MLAPrefillBackend.validate_configuration appends every failing check (not the first only,
    # unlike 0.33's decode supports_combination); prefill/selector.py get_mla_prefill_backend: its ValueError
    with pytest.raises(InvalidBackendError) as info:
        solve_uncached(_mla("7.5", kv_cache_dtype="fp8", mla_prefill_backend="FLASHINFER"), role="mla_prefill")
    assert str(info.value).split("\n", 1)[0] == (
        "Selected MLA prefill backend FLASHINFER is not valid for this configuration. Reason: ['compute capability 7.5 "
        "not supported', 'Model does not have supported MLA dimensions (got (qk_nope_head_dim=0, qk_rope_head_dim=0, "
        "v_head_dim=0); supported: (qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128))']")


def test_a_requested_prefill_backend_that_fits_is_used():
    # prefill/selector.py: a valid request is used as is (validated alone, no priority list)
    sel = _prefill(_mla("10.0", mla_prefill_backend="FLASHINFER", **R1))
    assert sel.backend == "FLASHINFER_PREFILL" and sel.manual and sel.logs == ("Using FLASHINFER MLA prefill backend.",)


# ------------------------------------------------------------------------------------------ the MLA layer
def test_sparse_sm120_layer_has_no_prefill_backend():
    # model_executor/layers/attention/mla_attention.py MLAAttention.__init__: a sparse impl without a dense-MHA
    # prefill path (v1/attention/backends/mla/flashinfer_mla_sparse_sm120.py: supports_dense_mha_prefill = False)
    cfg = _sparse("12.0")
    assert solve_uncached(cfg).backend == "FLASHINFER_MLA_SPARSE_SM120"
    sel = _prefill(cfg)
    assert (sel.backend, sel.variant, sel.warnings, sel.rejected) == (NO_PREFILL, "top-k MQA path only", (SKIP,), ())
    # ... whatever prefill backend was requested: the layer never asks
    assert _prefill(_sparse("12.0", mla_prefill_backend="FLASH_ATTN")).backend == NO_PREFILL


def test_sparse_layer_swallows_a_failed_automatic_prefill_selection():
    # mla_attention.py MLAAttention.__init__: `except ValueError` for a sparse impl and no requested prefill backend
    sel = _prefill(_sparse("9.0", ODD, dtype="float16"))
    assert sel.backend == NO_PREFILL and sel.warnings == (FALLBACK,)
    assert [(r.backend, r.reasons) for r in sel.rejected] == [("FLASH_ATTN_PREFILL", (ODD_FA,))]
    on_b200 = _prefill(_sparse("10.0", ODD))
    assert [r.backend for r in on_b200.rejected] == ["FLASH_ATTN_PREFILL", "TRTLLM_RAGGED_PREFILL", "FLASHINFER_PREFILL",
                                                     "TOKENSPEED_MLA_PREFILL"]


def test_a_requested_prefill_backend_or_a_dense_layer_keeps_the_error():
    # mla_attention.py: the ValueError is re-raised for a requested prefill backend or a dense impl
    with pytest.raises(InvalidBackendError):
        solve_uncached(_sparse("9.0", ODD, mla_prefill_backend="FLASH_ATTN"), role="mla_prefill")
    assert solve_csp(_sparse("9.0", ODD, mla_prefill_backend="FLASH_ATTN"), role="mla_prefill") is None
    with pytest.raises(NoValidBackendError, match="^No valid MLA prefill backend found"):
        solve_uncached(_mla("9.0", **ODD), role="mla_prefill")
    assert solve_csp(_mla("9.0", **ODD), role="mla_prefill") is None


def test_the_layer_fails_at_its_decode_backend_first():
    # mla_attention.py MLAAttention.__init__ selects the decode backend (get_attn_backend) before the prefill one:
    # sparse MLA on an A100 fails there (v1/attention/selector.py's "No valid attention backend found" text)
    cfg = _sparse("8.0")
    with pytest.raises(NoValidBackendError, match="^No valid attention backend found for cuda"):
        solve_uncached(cfg, role="mla_prefill")
    assert solve_csp(cfg, role="mla_prefill") is None
    e = explain(cfg, role="mla_prefill")
    assert e.selected is None and e.message.startswith("No valid attention backend found for cuda")
    assert "Error     No valid attention backend found" in str(e)


def test_explain_and_select_show_the_layers_prefill_answer():
    # the decode question's Prefill line: the prefill Selection, vLLM's registry name where it differs,
    # NO_PREFILL with its path, or vLLM's error when none fits (mla_attention.py raises it at start-up)
    fa = prefill_for(Context.of(_mla("10.0", **R1), None))
    assert prefill_text(fa) == "FLASH_ATTN_PREFILL (FA4) (vLLM: FLASH_ATTN)"
    assert prefill_dict(fa)["selected"] == "FLASH_ATTN_PREFILL"
    skipped = prefill_for(Context.of(_sparse("12.0"), None))
    assert prefill_text(skipped) == "NO_PREFILL (top-k MQA path only)"
    failed = prefill_for(Context.of(_mla("9.0", **ODD), None))
    assert prefill_text(failed).startswith("none fits, vLLM refuses to build the layer: No valid MLA prefill backend")
    assert prefill_dict(failed) is None  # JSON: no prefill Selection (docs/attnsolve-output.schema.json)
    assert "Prefill   none fits" in str(explain(_mla("9.0", **ODD)))
    e = explain(_sparse("9.0", ODD), role="mla_prefill")
    assert e.selected == NO_PREFILL and e.warnings == (FALLBACK,) and not e.candidates[0].valid


def test_rocm_sparse_layer_without_flash_attn_has_no_prefill_backend():
    # platforms/rocm.py RocmPlatform.get_mla_prefill_backend_cls (ROCM_AITER_FA, then FLASH_ATTN, each validated);
    # v1/attention/backends/fa_utils.py is_flash_attn_varlen_func_available (ROCm: flash-attn imported);
    # mla_attention.py: a sparse layer's failure is swallowed with its WARNING
    rocm = dict(vllm="0.33", platform="rocm", rocm_arch="gfx942", dtype="bfloat16", use_mla=True, head_size=576,
                rocm_flash_attn_found=False, **R1)
    with pytest.raises(NoValidBackendError) as info:
        solve_uncached(Config(**rocm), role="mla_prefill")
    assert str(info.value).split("\n", 1)[0] == (
        "No valid MLA prefill backend found with MLAPrefillSelectorConfig(dtype=torch.bfloat16, mla_dimensions="
        "(qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)). Reasons: {ROCM_AITER_FA: [required "
        "dependencies not available], FLASH_ATTN: [required dependencies not available]}.")
    sel = _prefill(Config(**rocm, use_sparse=True, index_topk=2048))
    assert sel.backend == NO_PREFILL and sel.warnings == (FALLBACK,)
    aiter = _prefill(Config(**rocm, rocm_use_aiter=True))
    assert aiter.backend == "ROCM_AITER_FA_PREFILL" and aiter.logs == ("Using ROCM_AITER_FA MLA prefill backend.",)


def test_cpu_prefill_ignores_requests_and_logs_the_class_name():
    # platforms/cpu.py CpuPlatform.get_mla_prefill_backend_cls; prefill/selector.py auto-selects on CPU and logs
    # get_name() (prefill/cpu_sdpa.py: CPU_SDPA_MLA)
    cfg = Config(vllm="0.33", platform="cpu", dtype="bfloat16", use_mla=True, head_size=576,
                 mla_prefill_backend="FLASHINFER", **R1)
    sel = _prefill(cfg)
    assert (sel.backend, sel.manual, sel.logs) == ("CPU_SDPA_MLA_PREFILL", False,
                                                   ("Using CPU_SDPA_MLA MLA prefill backend.",))


def test_xpu_prefill_is_flash_attn_unvalidated():
    # platforms/interface.py Platform.get_mla_prefill_backend_cls: device capability None -> FLASH_ATTN as is
    sel = _prefill(Config(vllm="0.33", platform="xpu", dtype="bfloat16", use_mla=True, head_size=576, **ODD))
    assert sel.backend == "FLASH_ATTN_PREFILL" and sel.logs == ("Using FLASH_ATTN MLA prefill backend.",)
    # prefill/selector.py: a requested prefill backend is validated alone, on XPU too
    with pytest.raises(InvalidBackendError, match=r"Reason: \['Model does not have supported MLA dimensions"):
        solve_uncached(Config(vllm="0.33", platform="xpu", dtype="bfloat16", use_mla=True, head_size=576,
                              mla_prefill_backend="FLASH_ATTN", **ODD), role="mla_prefill")


def test_017_prefill_is_unchanged():
    # vLLM 0.17 has no prefill registry: the predicates of 0.17's MLACommonImpl for a dense layer, after the layer's
    # decode backend (its layer step); a sparse layer's impl (a SparseMLAAttentionImpl) has no prefill path, silently,
    # and on SM 12.0 no sparse decode backend runs, so that layer fails before any prefill question
    cfg = Config(vllm="0.17", platform="cuda", compute_capability="12.0", dtype="bfloat16", use_mla=True,
                 use_sparse=False, head_size=576, **R1)
    sel = solve_uncached(cfg, role="mla_prefill")
    assert sel.backend != NO_PREFILL and sel.logs == ()
    with pytest.raises(NoValidBackendError):
        solve_uncached(cfg.replace(use_sparse=True), role="mla_prefill")
    hopper = cfg.replace(use_sparse=True, compute_capability="9.0")
    sparse = solve_uncached(hopper, role="mla_prefill")
    assert (sparse.backend, sparse.variant, sparse.warnings, sparse.logs) == (NO_PREFILL, "top-k MQA path only", (), ())
    assert sparse.priority_list == "MLA prefill skipped"
    assert solve_csp(hopper, role="mla_prefill") == NO_PREFILL
    assert prefill_text(prefill_for(Context.of(Config(vllm="0.17", platform="cuda", compute_capability="10.0",
                                                      dtype="bfloat16", use_mla=True, head_size=576, **R1), None))) \
        == "TRTLLM_RAGGED_DEEPSEEK"


# ------------------------------------------------------------------------------------------ the harness
def test_harness_draws_prefill_requests_only_where_the_rule_set_has_the_registry():
    from tools.vllm_oracle.configs import Domains, generate
    d33, d17 = Domains.from_rules("0.33.0"), Domains.from_rules("0.17.0")
    assert d33.prefill_requests == ("FLASHINFER", "FLASH_ATTN", "TOKENSPEED_MLA", "TRTLLM_RAGGED")
    assert d17.prefill_requests == ()
    items = generate(d33, n_random=60, modes=("mla_prefill",), sample=40)
    assert items and all(it.mode == "mla_prefill" for it in items)
    for it in items:
        cfg = Config(vllm="0.33", **{k: v for k, v in it.cfg.items() if k != "backend_per_kind"})  # (not a field)
        assert cfg.use_mla and (not cfg.use_sparse or cfg.qk_nope_head_dim is not None)
    old = generate(d17, n_random=40, modes=("mla_prefill",), sample=5)
    assert not any("mla_prefill_backend" in it.cfg for it in old)  # 0.17 has the switches, not the registry
    assert any("use_cudnn_prefill" in it.cfg for it in old)
    # a switch left unset: both sides take the release's own default (0.18.1 moved one; session 39)
    assert any("use_cudnn_prefill" not in it.cfg for it in old)


def test_harness_compares_prefill_logs_and_leaves_decode_failures_to_selector_mode():
    from tools.vllm_oracle.compare import compare
    v = {"ok": True, "backend": "FLASH_ATTN", "fa_version": 4, "priority": ["FLASH_ATTN"], "reasons": {"FLASH_ATTN": []},
         "warnings": [], "logged": ["Using FLASH_ATTN MLA prefill backend."]}
    a = {"ok": True, "backend": "FLASH_ATTN", "variant": "FA4", "rejected": {}, "warnings": [],
         "logs": ["Using FLASH_ATTN MLA prefill backend."]}
    got = {c.category: c.agree for c in compare("mla_prefill", "cuda", v, a)}
    assert got == {"outcome": True, "variant": True, "reasons": True, "warnings": True, "logs": True}
    got = {c.category: c.agree for c in compare("mla_prefill", "cuda", v, dict(a, logs=[]))}
    assert got["logs"] is False
    dec = {"ok": False, "kind": "no_valid", "error": "No valid attention backend found ...", "stage": "decode"}
    assert [(c.category, c.agree) for c in compare("mla_prefill", "cuda", dec, {"ok": False, "kind": "no_valid",
                                                                               "error": "other"})] == [("outcome", True)]


def test_cpu_prefill_entry_without_zentorch_is_not_a_candidate():
    """vllm/platforms/cpu.py get_mla_prefill_backend_cls: ZEN_CPU only where zentorch is installed; otherwise
    vLLM never tries it. explain() listed it as a rejected candidate ("entry skipped") while solve() left it out
    of its rejected backends (found by the nightly profile: explain's candidates against the oracle's tries)."""
    base = dict(vllm="0.33", platform="cpu", dtype="bfloat16", head_size=576, use_mla=True)
    plain = explain(Config(**base), role="mla_prefill")
    assert [(v.backend, v.valid) for v in plain.candidates] == [("CPU_SDPA_MLA_PREFILL", True)]
    assert solve_uncached(Config(**base), "mla_prefill").rejected == ()
    zen = explain(Config(**base, cpu_zentorch=True), role="mla_prefill")
    assert zen.selected == "ZEN_CPU_SDPA_MLA_PREFILL"
    assert [v.backend for v in zen.candidates] == ["ZEN_CPU_SDPA_MLA_PREFILL", "CPU_SDPA_MLA_PREFILL"]
