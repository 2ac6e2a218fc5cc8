"""The vLLM 0.24 rule set (edits on 0.25's): what 0.25 changed, each fact naming the vLLM 0.24.0 file it comes
from and asked of 0.25 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

import pytest

from attnsolve import Config, ConfigError

from release_facts import answer as _answer, only_newer_accepts


@pytest.mark.parametrize("field, value", [("backend", "HPC_ATTN"), ("backend", "FLASH_ATTN_MLA_SPARSE"),
                                          ("kv_cache_dtype", "int4_per_token_head"), ("hpc_available", False),
                                          ("mla_prefill_backend", "ROCM_AITER_FA")])
def test_024_lacks_what_025_added(field, value):
    """v1/attention/backends/registry.py and config/cache.py (0.24.0): no HPC_ATTN (Tencent hpc-ops) or
    FLASH_ATTN_MLA_SPARSE backend, no int4_per_token_head KV cache; mla/prefill/registry.py: no ROCM_AITER_FA prefill."""
    only_newer_accepts(field, value, "0.24", "0.25", gpu="H100", dtype="bfloat16", head_size=128)


def test_024_sparse_mla_on_hopper_is_flashmla_sparse():
    """platforms/cuda.py _get_backend_priorities (0.24.0): FLASHMLA_SPARSE alone after TRITON_MLA on GPUs other than
    SM 10.x / 12.x (0.25 puts FLASH_ATTN_MLA_SPARSE before it)."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=576, use_mla=True, use_sparse=True, index_topk=2048)
    assert _answer(vllm="0.24", **kw)[0] == "FLASHMLA_SPARSE"
    assert _answer(vllm="0.25", **kw)[0] == "FLASH_ATTN_MLA_SPARSE"


def test_024_rocm_mla_prefill_is_flash_attention_alone():
    """v1/attention/backends/mla/prefill/selector.py _get_mla_prefill_backend_priorities (0.24.0): no ROCm branch and no
    AITER prefill backend (0.25: ROCM_AITER_FA first on ROCm)."""
    kw = dict(platform="rocm", rocm_arch="gfx942", rocm_use_aiter=True, dtype="bfloat16", head_size=576, use_mla=True,
              qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
    assert _answer("mla_prefill", vllm="0.24", **kw)[0] == "FLASH_ATTN_PREFILL"
    assert _answer("mla_prefill", vllm="0.25", **kw)[0] == "ROCM_AITER_FA_PREFILL"


def test_024_aiter_unified_attention_inherits_rocm_attention_dtypes():
    """v1/attention/backends/rocm_aiter_unified_attn.py (0.24.0): no dtype lists of its own, so RocmAttentionBackend's
    (float16, bfloat16, float32) answer (0.25: bfloat16 only)."""
    kw = dict(platform="rocm", rocm_arch="gfx942", rocm_use_aiter=True, dtype="float16", head_size=128,
              backend="ROCM_AITER_UNIFIED_ATTN")
    assert _answer(vllm="0.24", **kw)[0] == "ROCM_AITER_UNIFIED_ATTN"
    assert _answer(vllm="0.25", **kw)[1].endswith("Reason: ['dtype not supported']")


def test_024_xpu_has_no_multimodal_prefix_fallback():
    """platforms/xpu.py XPUPlatform.get_attn_backend_cls (0.24.0): no multimodal prefix-LM branch, so such a layer gets
    FLASH_ATTN with no warning (0.25: TRITON_ATTN with one)."""
    kw = dict(platform="xpu", dtype="bfloat16", head_size=128, use_mm_prefix=True)
    assert _answer(vllm="0.24", **kw)[0] == "FLASH_ATTN" and _answer(vllm="0.24", **kw)[3] == ()
    assert _answer(vllm="0.25", **kw)[0] == "TRITON_ATTN"


def test_024_flashinfer_reads_nvfp4_everywhere_and_has_no_hopper_xqa():
    """v1/attention/backends/flashinfer.py and utils/flashinfer.py (0.24.0): no supports_kv_cache_dtype (the class list,
    nvfp4 included, answers on every GPU; 0.25: SM 10.x TRT-LLM only) and no SM 9.0 XQA decode (0.25's
    supports_trtllm_attention(is_prefill=False) on Hopper): FlashInfer on an H100 runs its native kernels."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=128, backend="FLASHINFER")
    assert _answer(vllm="0.24", kv_cache_dtype="nvfp4", **kw)[:2] == ("FLASHINFER", "NATIVE")
    assert _answer(vllm="0.25", kv_cache_dtype="nvfp4", **kw)[1].endswith("Reason: ['kv_cache_dtype not supported']")
    assert _answer(vllm="0.24", **kw)[:2] == ("FLASHINFER", "NATIVE")
    assert _answer(vllm="0.25", **kw)[:2] == ("FLASHINFER", "TRTLLM")


def test_024_an_unknown_prefill_backend_is_refused_in_vllms_words():
    """config/attention.py parses mla_prefill_backend with MLAPrefillBackendEnum[value.upper()] (0.24.0: no
    ROCM_AITER_FA); its refusal text comes first (the field's `unknown_message`: every member, the plugin slot CUSTOM
    last), then the field, the value and the closest name."""
    with pytest.raises(ConfigError) as err:
        Config(vllm="0.24", platform="rocm", dtype="bfloat16", use_mla=True, head_size=576,
               mla_prefill_backend="rocm_aiter_fa")
    assert err.value.field == "mla_prefill_backend"
    assert str(err.value).startswith("Unknown MLA prefill backend: 'ROCM_AITER_FA'. Valid options are: FLASH_ATTN, "
                                     "FLASHINFER, TRTLLM_RAGGED, TOKENSPEED_MLA, CUSTOM (field mla_prefill_backend")
    with pytest.raises(ConfigError) as err:
        Config(vllm="0.25", platform="rocm", dtype="bfloat16", use_mla=True, head_size=576,
               mla_prefill_backend="flash_atn")
    assert err.value.suggestion == "FLASH_ATTN" and "did you mean 'FLASH_ATTN'?" in str(err.value)


def test_an_unknown_message_with_a_bad_placeholder_is_refused_by_the_loader(tmp_path):
    """A typo in `unknown_message` would crash the refusal it words: the loader names the field and the placeholder."""
    import shutil

    from attnsolve.rules import RulesError, load_rules
    from attnsolve.rules.sets import info

    folder = tmp_path / "vllm-0.33"
    shutil.copytree(info("0.33").path, folder)
    mla = folder / "mla.toml"
    mla.write_text(mla.read_text().replace("Valid options are: {values}", "Valid options are: {valid}"))
    with pytest.raises(RulesError) as err:
        load_rules(folder)
    assert "fields.mla_prefill_backend.unknown_message" in str(err.value) and "'valid'" in str(err.value)


def test_a_free_dcp_size_with_dcp_on_keeps_its_completions():
    """0.24 reads no dcp_size (no FLASH_ATTN_MLA_SPARSE, whose FA4 check multiplies heads by it), so no backend check
    told its values apart and the CSP's one class for them was size 1, which the definition use_dcp <-> dcp_size > 1
    rules out with use_dcp on: possible_backends said none where every completion selects FLEX_ATTENTION (found by
    the every-release property run for 0.23). The invariants' literals now split a field's values too."""
    from attnsolve import ANY, possible_backends, solve

    kw = dict(platform="cuda", dtype="bfloat16", compute_capability="7.0", head_size=1, use_dcp=True)
    for release in ("0.24", "0.25"):
        assert solve(Config(vllm=release, dcp_size=4, **kw)).backend == "FLEX_ATTENTION"
        assert possible_backends(Config(vllm=release, dcp_size=ANY, **kw)) == ("FLEX_ATTENTION",)
