"""The vLLM 0.32 rule set (edits on 0.33's, `[ruleset] base`): what 0.33 changed, each fact naming the vLLM
0.32.0 file it comes from and asked of 0.33 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from attnsolve import Config, ConfigError, solve
from attnsolve.errors import SelectionError
from attnsolve.rules import rules_for


def _answer(**kw: Any) -> tuple[Any, ...]:
    """(backend, variant, start-up block size, warnings, start-up error) or ("ERR", vLLM's first line)."""
    try:
        s = solve(Config(**kw))
    except SelectionError as e:
        return ("ERR", str(e).splitlines()[0])
    return (s.backend, s.variant, s.preferred_block_size, s.warnings, s.startup_error)


def _reasons(backend: str, **kw: Any) -> tuple[str, ...]:
    s = solve(Config(**kw))
    return next(r.reasons for r in s.rejected if r.backend == backend)


def test_032_is_written_as_edits_on_033():
    """The folder holds only 0.32's differences: everything else is read from vllm-0.33."""
    sources = rules_for("0.32").sources
    assert any(s.endswith("vllm-0.33/cuda.toml") for s in sources)
    assert any(s.endswith("vllm-0.32/cuda.toml") for s in sources)
    assert rules_for("0.32").vllm == "0.32"


def test_032_turboquant_is_not_a_quantized_kv_cache():
    """vllm/utils/torch_utils.py is_quantized_kv_cache (0.32): fp8*, nvfp4*, *_per_token_head only; 0.33's
    kv_cache_interface.get_kv_quant_mode also counts turboquant_*, so FlashAttention's fp8 test runs there."""
    kw = dict(gpu="T4", dtype="float16", head_size=64, kv_cache_dtype="turboquant_3bit_nc")
    fp8 = "FP8 KV cache requires FA3 on SM90, FA4 with head_size=512 on SM90, or FA4 on SM100"
    assert fp8 not in _reasons("FLASH_ATTN", vllm="0.32", **kw)
    assert fp8 in _reasons("FLASH_ATTN", vllm="0.33", **kw)
    assert rules_for("0.32").derived["kv_quantized"] != rules_for("0.33").derived["kv_quantized"]


@pytest.mark.parametrize("field, value", [("backend", "STEP5_DSA"), ("backend", "FLASH_ATTN_MLA_SPARSE_FA4"),
                                          ("backend", "ROCM_OCTAVE"), ("kv_cache_dtype", "octave_k3v4"),
                                          ("model_route", "step5")])
def test_032_lacks_what_033_added(field, value):
    """v1/attention/backends/registry.py (0.32.0): no STEP5_DSA, FLASH_ATTN_MLA_SPARSE_FA4, ROCM_OCTAVE;
    config/cache.py CacheDType: no octave_*; no models/step5."""
    with pytest.raises(ConfigError) as e:
        Config(vllm="0.32", gpu="H100", dtype="bfloat16", head_size=128, **{field: value})
    assert e.value.field == field
    Config(vllm="0.33", gpu="H100", dtype="bfloat16", head_size=128, **{field: value})


def test_032_sparse_mla_on_b200_without_fa4():
    """platforms/cuda.py _get_backend_priorities (0.32.0): SM 10.x bf16 sparse MLA at <= 16 heads lists
    FLASHINFER_MLA_SPARSE, FLASHMLA_SPARSE (0.33 put FLASH_ATTN_MLA_SPARSE_FA4 first)."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=576, use_mla=True, use_sparse=True, num_heads=16,
              kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, index_topk=2048)
    assert _answer(vllm="0.32", **kw)[0] == "FLASHINFER_MLA_SPARSE"
    assert _answer(vllm="0.33", **kw)[0] == "FLASH_ATTN_MLA_SPARSE_FA4"


def test_032_cpu_path_does_not_test_the_kv_dtype():
    """platforms/cpu.py CpuPlatform.get_attn_backend_cls (0.32.0) returns CPU_MLA / CPU_ATTN without testing
    the KV-cache dtype; a host without AVX-512 or AMX fails at start-up instead
    (v1/attention/backends/cpu_attn.py _get_attn_isa)."""
    mla = dict(platform="cpu", dtype="bfloat16", head_size=576, use_mla=True, kv_cache_dtype="fp8")
    assert _answer(vllm="0.32", **mla)[0] == "CPU_MLA"
    assert _answer(vllm="0.33", **mla) == ("ERR", "--kv-cache-dtype fp8 is not supported by MLA attention on CPU.")
    old = dict(platform="cpu", dtype="bfloat16", head_size=128, kv_cache_dtype="fp8", cpu_avx512=False,
               cpu_amx=False)
    assert _answer(vllm="0.32", **old)[0::4] == ("CPU_ATTN", "FP8 KV cache on CPU requires x86 with AVX-512 or AMX.")
    assert _answer(vllm="0.33", **old)[0] == "ERR"


def test_032_xpu_multimodal_prefix_falls_back_to_triton():
    """platforms/xpu.py XPUPlatform.get_attn_backend_cls (0.32.0): a multimodal-prefix layer without a
    FLASH_ATTN request runs TRITON_ATTN (0.33: the Triton/FlashAttention composite at head 256/512)."""
    kw = dict(platform="xpu", dtype="float16", head_size=256, use_mm_prefix=True)
    assert _answer(vllm="0.32", **kw)[0::3] == ("TRITON_ATTN", (
        "Flash Attention on XPU does not support multimodal prefix-LM attention. Falling back to Triton "
        "Attention backend.",))
    assert _answer(vllm="0.33", **kw)[0] == "TRITON_FLASH_ATTN"
    xpu = {v.name: v for v in rules_for("0.32").backends["FLASH_ATTN"].variants}["XPU"]
    assert dict(xpu.caps.items)["head_sizes"].max == 256  # no XPU case in supports_head_size: FA4's test decides


def test_032_deepseek_v41_on_rocm():
    """models/deepseek_v41/amd/model.py _select_dsv4_attn_cls (0.32.0): only ROCM_FLASHMLA_SPARSE_DSV4 may be
    requested, no PCP refusal, no deprecation warning; amd/rocm.py's class calls itself ROCM_FLASHMLA_SPARSE_DSV4
    and pages 64/128 (0.33 registered it as ROCM_FLASHMLA_SPARSE_DSV41)."""
    kw = dict(gpu="MI300X", dtype="bfloat16", head_size=512, use_mla=True, use_sparse=True, model_arch="deepseek_v41")
    backend = rules_for("0.32").backends["ROCM_FLASHMLA_SPARSE_DSV41"]
    assert backend.model_built and backend.get_name == "ROCM_FLASHMLA_SPARSE_DSV4"
    assert _answer(vllm="0.32", **kw, use_pcp=True)[:3] == ("ROCM_FLASHMLA_SPARSE_DSV41", "AITER", 64)
    assert _answer(vllm="0.33", **kw, use_pcp=True) == ("ERR", "DeepSeek-V4.1 PCP currently supports NVIDIA CUDA only.")
    assert _answer(vllm="0.32", **kw, backend="ROCM_FLASHMLA_SPARSE_DSV4")[3] == ()
    assert _answer(vllm="0.32", **kw, backend="TRITON_MLA") == (
        "ERR", "TRITON_MLA is not supported for DeepSeek V4.1 on ROCm; use ROCM_FLASHMLA_SPARSE_DSV4.")
    with pytest.raises(ConfigError):
        Config(vllm="0.32", **kw, backend="ROCM_FLASHMLA_SPARSE_DSV41")


def test_032_flashmla_dsv41_without_pcp():
    """models/deepseek_v41/sparse_mla.py DeepseekV4FlashMLABackend (0.32.0) has no supports_pcp override."""
    assert dict(rules_for("0.32").backends["FLASHMLA_SPARSE_DSV41"].caps.items)["pcp"] is False
    assert dict(rules_for("0.33").backends["FLASHMLA_SPARSE_DSV41"].caps.items)["pcp"] is True


def test_032_glm5_next_keeps_an_auto_kv_cache():
    """model_executor/models/config.py MODELS_CONFIG_MAP (0.32.0) has no Glm5NextModelConfig: GLM-5.3-Flash keeps an
    auto KV cache on SM 10.x (0.33 turns it into fp8, "Using fp8 KV cache for GLM-5.3-Flash"; found when the
    message check learned to look up texts of short words and values as a whole)."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=576, use_mla=True, model_arch="glm5_next", index_topk=2048)
    s32, s33 = solve(Config(vllm="0.32", **kw)), solve(Config(vllm="0.33", **kw))
    assert (s32.config_changes, s32.logs) == ((), ())
    assert (s33.config_changes, s33.logs) == ((("kv_cache_dtype", "fp8"),), ("Using fp8 KV cache for GLM-5.3-Flash",))
