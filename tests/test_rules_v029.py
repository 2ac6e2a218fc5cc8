"""The vLLM 0.29 rule set (edits on 0.30's): what 0.30 changed, each fact naming the vLLM 0.29.0 file it comes
from and asked of 0.30 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

import pytest

from release_facts import answer as _answer, candidate_reasons as _reasons, only_newer_accepts


@pytest.mark.parametrize("field, value", [
    ("backend", "TRITON_FLASH_ATTN"), ("backend", "TRITON_FLASHINFER"), ("backend", "B12X"),
    ("backend", "FLASHINFER_MLA_SPARSE_SM90"), ("backend", "FLASHMLA_SPARSE_DSV41"),
    ("kv_cache_dtype", "nvfp4_ds_mla"), ("model_arch", "deepseek_v41"), ("model_arch", "glm5_next"),
])
def test_029_lacks_what_030_added(field, value):
    """v1/attention/backends/registry.py, config/cache.py CacheDType and models/ (0.29.0): no multimodal
    composites, no B12X, no FlashInfer SM90 sparse MLA, no DeepSeek-V4.1 (its backends, model, NVFP4 cache), no
    GLM-5-Next (vllm/models/glm5next/ is 0.30's)."""
    only_newer_accepts(field, value, "0.29", "0.30", gpu="H100", dtype="bfloat16", head_size=576, use_mla=True)


def test_029_no_rswa_or_dcp_generic_checks():
    """v1/attention/backend.py validate_configuration (0.29.0): no "R-SWA not supported" and no "DCP not
    supported" (0.30 added supports_rswa() and supports_dcp()); the selector config has no use_rswa, so
    vLLM's message ends at use_dcp."""
    kw = dict(gpu="A100", dtype="bfloat16", head_size=128, use_rswa=True, use_dcp=True, dcp_size=2)
    assert "R-SWA not supported" not in _reasons("FLASHINFER", vllm="0.29", **kw)
    assert "DCP not supported" not in _reasons("TRITON_ATTN", vllm="0.29", **kw)
    assert "DCP not supported" in _reasons("TRITON_ATTN", vllm="0.30", **kw)
    none = dict(gpu="H100", dtype="bfloat16", head_size=64, kv_cache_dtype="turboquant_4bit_nc", has_sink=True)
    err = _answer(vllm="0.29", **none)
    assert err[0] == "ERR" and "use_rswa" not in err[1] and "use_dcp=False)" in err[1]
    assert "use_rswa=False)" in _answer(vllm="0.30", **none)[1]


def test_029_multimodal_prefix_lm_on_hopper_takes_flash_attention():
    """platforms/cuda.py _get_backend_priorities (0.29.0): no TRITON_FLASH_ATTN first for use_mm_prefix on SM 9.x."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=256, use_mm_prefix=True, flash_attn_version=4)
    assert _answer(vllm="0.30", **kw)[0] == "TRITON_FLASH_ATTN"
    assert _answer(vllm="0.29", **kw)[0] != "TRITON_FLASH_ATTN"


def test_029_flashinfer_sinks_not_on_hopper():
    """v1/attention/backends/flashinfer.py FlashInferBackend.supports_sink (0.29.0): SM 12.x XQA or SM 10.x
    TRT-LLM only (0.30 added SM 9.0's XQA)."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=64, has_sink=True, kv_cache_dtype="fp8", flash_attn_version=2)
    assert "attention sinks not supported" in _reasons("FLASHINFER", vllm="0.29", **kw)
    assert "attention sinks not supported" not in _reasons("FLASHINFER", vllm="0.30", **kw)


def test_029_mla_head_512_and_sparse_lists():
    """model_executor/layers/attention/mla_attention.py MLACommonBackend.get_supported_head_sizes (0.29.0):
    [320, 576]; flashinfer_mla_sparse.py: head 576 only; platforms/cuda.py: FLASH_ATTN_MLA_SPARSE,
    FLASHMLA_SPARSE as the sparse tail on SM 8.x/9.x."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=512, use_mla=True)
    assert "head_size not supported" in _reasons("FLASH_ATTN_MLA", vllm="0.29", **kw)
    assert "head_size not supported" not in _reasons("FLASH_ATTN_MLA", vllm="0.30", **kw)
    b = dict(gpu="B200", dtype="bfloat16", head_size=512, use_mla=True, use_sparse=True, index_topk=2048)
    assert "head_size not supported" in _reasons("FLASHINFER_MLA_SPARSE", vllm="0.29", **b)
    sparse = dict(gpu="H100", dtype="bfloat16", head_size=576, use_mla=True, use_sparse=True)
    assert _answer(vllm="0.29", **sparse)[0] == "FLASH_ATTN_MLA_SPARSE"


def test_029_rocm_aiter_backends():
    """v1/attention/backends/rocm_aiter_unified_attn.py (0.29.0): RocmAiterUnifiedAttentionBackend inherits ROCM_ATTN's
    supports_kv_connector (False); mla/rocm_aiter_mla_sparse.py: no supports_sink (0.30: MI3xx)."""
    kw = dict(platform="rocm", rocm_arch="gfx1200", dtype="float16", head_size=80, rocm_use_aiter=True,
              rocm_use_aiter_mha=False, use_kv_connector=True)
    assert "KV connector not supported" in _reasons("ROCM_AITER_UNIFIED_ATTN", vllm="0.29", **kw)
    assert _answer(vllm="0.30", **kw)[0] == "ROCM_AITER_UNIFIED_ATTN"
    mla = dict(platform="rocm", rocm_arch="gfx942", dtype="bfloat16", head_size=576, use_mla=True, use_sparse=True,
               has_sink=True)
    assert _answer(vllm="0.29", **mla)[0] == "ERR"
    assert _answer(vllm="0.30", **mla)[0] == "ROCM_AITER_MLA_SPARSE"


def test_029_deepseek_v4_cpu_runs_the_cuda_model_code():
    """models/deepseek_v4/__init__.py (0.29.0) has no CPU branch: the NVIDIA model's _select_dsv4_attn_cls picks
    FlashMLA, and platforms/cpu.py treats it as any MLA model (reference path: block size 16)."""
    kw = dict(platform="cpu", dtype="bfloat16", head_size=512, use_mla=True, use_sparse=True,
              model_arch="deepseek_v4", kv_cache_dtype="fp8")
    a29, a30 = _answer(vllm="0.29", **kw), _answer(vllm="0.30", **kw)
    assert (a29[0], a29[2]) == ("FLASHMLA_SPARSE_DSV4", 16)
    assert (a30[0], a30[2]) == ("CPU_V4_MLA_SPARSE", 256)


def test_029_deepseek_v4_kv_auto_is_refused():
    """models/deepseek_v4/attention.py _resolve_dsv4_kv_cache_dtype (0.29.0) asserts an fp8 dtype for the
    fp8_ds_mla layout (0.30 reads auto as fp8)."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=512, use_mla=True, use_sparse=True, model_arch="deepseek_v4")
    assert _answer(vllm="0.29", **kw) == ("ERR", "DeepseekV4 fp8_ds_mla layout only supports fp8 kv-cache, got auto")
    assert _answer(vllm="0.30", **kw)[0] == "FLASHMLA_SPARSE_DSV4"


def test_029_mla_prefill_has_no_norope_shape():
    """v1/attention/backends/mla/prefill/flash_attn.py supports_mla_dimensions (0.29.0): no (256, 0, 256)."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=512, use_mla=True, qk_nope_head_dim=256, qk_rope_head_dim=0,
              v_head_dim=256, kv_lora_rank=512)
    assert _answer("mla_prefill", vllm="0.30", **kw)[0] == "FLASH_ATTN_PREFILL"
    assert _answer("mla_prefill", vllm="0.29", **kw)[0] != "FLASH_ATTN_PREFILL"


def test_029_deepseek_v4_kv_auto_is_refused_on_xpu_too():
    """models/deepseek_v4/attention.py _resolve_dsv4_kv_cache_dtype (0.29.0) asserts an fp8 dtype on XPU as elsewhere."""
    kw = dict(platform="xpu", dtype="bfloat16", head_size=512, use_mla=True, use_sparse=True, model_arch="deepseek_v4")
    assert _answer(vllm="0.29", **kw) == ("ERR", "DeepseekV4 fp8_ds_mla layout only supports fp8 kv-cache, got auto")
    assert _answer(vllm="0.30", **kw)[0] == "XPU_V4_MLA_SPARSE"


def test_029_model_reader_knows_only_029s_architectures(tmp_path):
    """model_executor/models/registry.py (0.29.0) has no DeepseekV4ForConditionalGeneration (0.30's), and 0.28.0's
    granite.py passes no sinks (0.29's granite_layer_attn_params reads attention_sinks / layer_types): `--model`
    reads neither for the releases before (found by the message check's registry lookup)."""
    import json

    from attnsolve.modelconfig import declared_model_fields, read_model_config
    from attnsolve.rules import rules_for

    def fields(release: str, cfg: dict) -> dict:
        f = tmp_path / f"{release}.json"
        f.write_text(json.dumps({"hidden_size": 2048, "num_attention_heads": 32, **cfg}))
        return declared_model_fields(read_model_config(f), rules_for(release))[0]

    v4 = {"architectures": ["DeepseekV4ForConditionalGeneration"], "model_type": "deepseek_v4"}
    assert fields("0.30", v4).get("model_arch") == "deepseek_v4"
    assert fields("0.29", v4).get("model_arch") is None
    granite = {"architectures": ["GraniteForCausalLM"], "model_type": "granite", "layer_types": ["full_attention"]}
    assert fields("0.29", granite).get("has_sink") is True
    assert fields("0.28", granite).get("has_sink") is None
