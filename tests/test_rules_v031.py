"""The vLLM 0.31 rule set (edits on 0.32's, itself edits on 0.33's): what 0.32 changed, each fact naming the vLLM
0.31.0 file it comes from and asked of 0.32 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

import pytest

from attnsolve import Config, ConfigError
from attnsolve.rules import rules_for

from release_facts import answer as _answer


def test_031_is_a_chain_of_edits():
    """0.31's folder edits 0.32's, which edits 0.33's: the loader reads all three."""
    sources = rules_for("0.31").sources
    for folder in ("vllm-0.31", "vllm-0.32", "vllm-0.33"):
        assert any(f"{folder}/" in s for s in sources), folder


@pytest.mark.parametrize("field, value", [("kv_cache_dtype", "ultraquant_4bit"), ("backend", "ULTRAQUANT"),
                                          ("backend", "ROCM_SEGMENTED_ATTN")])
def test_031_lacks_what_032_added(field, value):
    """config/cache.py CacheDType and v1/attention/backends/registry.py (0.31.0): no ultraquant_4bit, no
    ULTRAQUANT, no ROCM_SEGMENTED_ATTN."""
    with pytest.raises(ConfigError) as e:
        Config(vllm="0.31", gpu="MI300X", dtype="bfloat16", head_size=128, **{field: value})
    assert e.value.field == field
    Config(vllm="0.32", gpu="MI300X", dtype="bfloat16", head_size=128, **{field: value})


def test_031_xpu_mla_is_always_triton():
    """platforms/xpu.py XPUPlatform.get_attn_backend_cls (0.31.0): every dense MLA layer gets TRITON_MLA (0.32
    added the XPU FlashAttention MLA class, FLASH_ATTN_MLA_XPU)."""
    kw = dict(platform="xpu", dtype="bfloat16", head_size=576, use_mla=True)
    assert _answer(vllm="0.31", **kw)[0::5] == ("TRITON_MLA", ("Using Triton MLA backend on V1 engine.",))
    assert _answer(vllm="0.32", **kw)[0] == "FLASH_ATTN_MLA_XPU"
    assert _answer(vllm="0.31", **kw, backend="FLASH_ATTN_MLA")[0] == "TRITON_MLA"  # the request is not read


def test_031_flashinfer_reads_nvfp4_only_with_trtllm():
    """v1/attention/backends/flashinfer.py FlashInferBackend.supports_kv_cache_dtype (0.31.0): an NVFP4 cache only
    on SM 10.x with both TRT-LLM phases (0.32 also through its FA2 path on SM 8.x/9.x/12.x)."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=128, kv_cache_dtype="nvfp4")
    assert _answer(vllm="0.31", **kw)[0] == "ERR"
    assert _answer(vllm="0.32", **kw)[0] == "FLASHINFER"
    nvfp4 = {"fa2 prefill misreads an NVFP4 KV cache at head_size 64", "the sink prefill wrapper cannot read an NVFP4 KV cache"}
    assert not nvfp4 & {c.reason for c in rules_for("0.31").backends["FLASHINFER"].checks}
    assert nvfp4 <= {c.reason for c in rules_for("0.32").backends["FLASHINFER"].checks}


def test_031_rocm_attention_takes_multimodal_prefix():
    """v1/attention/backends/rocm_attn.py / rocm_aiter_unified_attn.py (0.31.0): supports_mm_prefix is True
    (0.32: False), so ROCM_ATTN stays first for a multimodal prefix-LM."""
    kw = dict(gpu="MI300X", dtype="bfloat16", head_size=128, use_mm_prefix=True)
    assert _answer(vllm="0.31", **kw)[0] == "ROCM_ATTN"
    assert _answer(vllm="0.32", **kw)[0] == "TRITON_ATTN"


def test_031_mla_prefill_before_the_platform():
    """v1/attention/backends/mla/prefill/selector.py get_mla_prefill_backend (0.31.0): CPU logs the enum name;
    a device without a capability (XPU) gets FLASH_ATTN whatever was requested."""
    cpu = dict(platform="cpu", dtype="bfloat16", head_size=576, use_mla=True, role="mla_prefill")
    assert "Using CPU MLA prefill backend." in _answer(vllm="0.31", **cpu)[5]
    assert "Using CPU_SDPA_MLA MLA prefill backend." in _answer(vllm="0.32", **cpu)[5]
    xpu = dict(platform="xpu", dtype="bfloat16", head_size=576, use_mla=True, role="mla_prefill",
               qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
    assert "Device capability not available, using FlashAttention MLA prefill backend." in _answer(vllm="0.31", **xpu)[5]
    requested = dict(xpu, mla_prefill_backend="FLASHINFER")
    assert _answer(vllm="0.31", **requested)[0] == "FLASH_ATTN_PREFILL"


def test_031_kernel_pages_and_kv_dtypes():
    """flashinfer_mla_sparse.py / flashattn_mla_sparse.py / flashmla_sparse.py (0.31.0): fixed page lists, printed
    as such at start-up; triton_attn_diffkv.py: no fp8 KV; deepseek_v41/amd/rocm.py: DeepseekV4SparseMLABackend's
    pages (256); models/minimax_m3: no NVFP4 refusals."""
    r31, r32 = rules_for("0.31"), rules_for("0.32")
    assert r31.backends["FLASHINFER_MLA_SPARSE"].kernel_block_sizes_text == "[32, 64]"
    assert r32.backends["FLASHINFER_MLA_SPARSE"].kernel_block_sizes_text == ""
    assert dict(r31.backends["TRITON_ATTN_DIFFKV"].caps.items)["kv_cache_dtypes"] == ("auto", "bfloat16")
    assert dict(r31.backends["ROCM_FLASHMLA_SPARSE_DSV41"].caps.items)["kernel_block_sizes"] == (256,)
    assert r31.backends["MINIMAX_M3_SPARSE"].startup_failures == ()
    assert r32.backends["MINIMAX_M3_SPARSE"].startup_failures != ()


def test_031_glm_moe_dsa_keeps_its_kv_dtype():
    """model_executor/models/config.py (0.31.0) has no GlmMoeDsaForCausalLM entry: no auto -> fp8_e4m3 KV rewrite on
    SM 10.x (0.32's "Using fp8 kv-cache for GlmMoeDsaForCausalLM on SM10x")."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=576, use_mla=True, use_sparse=True, model_arch="glm_moe_dsa",
              index_topk=2048, qk_nope_head_dim=192, qk_rope_head_dim=64, v_head_dim=256, kv_lora_rank=512)
    assert "Using fp8 kv-cache for GlmMoeDsaForCausalLM on SM10x" in _answer(vllm="0.32", **kw)[5]
    assert "Using fp8 kv-cache for GlmMoeDsaForCausalLM on SM10x" not in _answer(vllm="0.31", **kw)[5]
