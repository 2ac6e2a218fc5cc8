"""The vLLM 0.23 rule set (edits on 0.24's): what 0.24 changed, each fact naming the vLLM 0.23.0 file it comes
from and asked of 0.24 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

import pytest

from attnsolve import Config

from release_facts import answer as _answer, candidate_reasons, only_newer_accepts


@pytest.mark.parametrize("field, value", [("backend", "TRITON_ATTN_DIFFKV"), ("backend", "MINIMAX_M3_SPARSE"),
                                          ("backend", "FLASHINFER_MLA_SPARSE_SM120"), ("model_arch", "minimax_m3"),
                                          ("model_route", "minimax_m3"), ("is_diffusion", True)])
def test_023_lacks_what_024_added(field, value):
    """v1/attention/backends/registry.py (0.23.0): no TRITON_ATTN_DIFFKV, MINIMAX_M3_SPARSE or
    FLASHINFER_MLA_SPARSE_SM120; no vllm/models/minimax_m3/; config/model.py: no ModelConfig.is_diffusion."""
    only_newer_accepts(field, value, "0.23", "0.24", gpu="H100", dtype="bfloat16", head_size=128)


def test_023_flashinfer_runs_on_turing():
    """v1/attention/backends/flashinfer.py FlashInferBackend.supports_compute_capability (0.23.0): 7.5 <= cc <= 12.1,
    so a T4 gets FlashInfer's native kernels (0.24 starts at 8.0 and a T4 gets TRITON_ATTN)."""
    kw = dict(gpu="T4", dtype="float16", head_size=64)
    assert _answer(vllm="0.23", **kw)[:2] == ("FLASHINFER", "NATIVE")
    assert _answer(vllm="0.24", **kw)[0] == "TRITON_ATTN"


def test_023_flashinfer_and_triton_refuse_non_causal_attention():
    """flashinfer.py and triton_attn.py (0.23.0) have no supports_non_causal (0.24's True): both refuse a non-causal
    layer there, where 0.24's Triton takes it."""
    kw = dict(gpu="A100", dtype="bfloat16", head_size=72, use_non_causal=True)
    assert "non-causal attention not supported" in candidate_reasons("FLASHINFER", vllm="0.23", **kw)
    assert "non-causal attention not supported" in candidate_reasons("TRITON_ATTN", vllm="0.23", **kw)
    assert "non-causal attention not supported" not in candidate_reasons("TRITON_ATTN", vllm="0.24", **kw)


def test_023_flash_attention_never_takes_a_multimodal_prefix():
    """flash_attn.py (0.23.0): no FlashAttentionBackend.supports_mm_prefix, so the base class's False with vLLM's
    generic reason on every GPU, and no FA4 combination test (0.24: FA4 takes it)."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=128, use_mm_prefix=True)
    assert candidate_reasons("FLASH_ATTN", vllm="0.23", **kw) == ("partial multimodal token full attention not supported",)
    assert _answer(vllm="0.23", **kw)[0] == "TRITON_ATTN"


def test_023_triton_has_no_start_up_refusal_of_fp8_before_ada():
    """triton_attn.py TritonAttentionImpl.__init__ (0.23.0) does not refuse an fp8 cache below SM 8.9 (0.24's
    "FP8 KV cache is not supported by the Triton attention backend on ..." start-up error)."""
    kw = dict(gpu="A100", dtype="bfloat16", head_size=128, kv_cache_dtype="fp8", backend="TRITON_ATTN")
    assert _answer(vllm="0.23", **kw)[4] is None
    assert _answer(vllm="0.24", **kw)[4].startswith("FP8 KV cache is not supported by the Triton attention backend")


def test_023_sparse_mla_on_sm120_takes_the_generic_list():
    """platforms/cuda.py _get_backend_priorities (0.23.0) has no SM 12.x MLA branch: an RTX 5090 asks the "other GPUs"
    list (FLASH_ATTN_MLA ... FLASHMLA_SPARSE), where 0.24 lists TRITON_MLA and FLASHINFER_MLA_SPARSE_SM120."""
    kw = dict(gpu="RTX 5090", dtype="bfloat16", head_size=576, use_mla=True, use_sparse=True, index_topk=2048,
              qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, kv_lora_rank=512)
    tried23 = [c.backend for c in __import__("attnsolve").explain(Config(vllm="0.23", **kw)).candidates]
    assert "FLASHINFER_MLA_SPARSE_SM120" not in tried23 and "FLASHMLA_SPARSE" in tried23
    assert _answer(vllm="0.24", **kw)[0] == "FLASHINFER_MLA_SPARSE_SM120"


def test_023_mla_prefill_needs_deepseek_r1_dimensions():
    """mla/prefill/selector.py (0.23.0): MLAPrefillSelectorConfig(dtype, is_r1_compatible); TRT-LLM ragged (like
    FlashInfer and TokenSpeed) requires R1's (128, 64, 128), and the refusal prints the selector config's repr."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=576, use_mla=True, qk_nope_head_dim=192, qk_rope_head_dim=64,
              v_head_dim=256, kv_lora_rank=512, mla_prefill_backend="TRTLLM_RAGGED")
    assert _answer("mla_prefill", vllm="0.23", **kw) == (
        "ERR", "Selected MLA prefill backend TRTLLM_RAGGED is not valid for this configuration. Reason: ['model does not "
        "have DeepSeek R1 MLA dimensions (qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)']")
    assert _answer("mla_prefill", vllm="0.24", **kw)[0] == "TRTLLM_RAGGED_PREFILL"
    no_fa = dict(platform="rocm", rocm_arch="gfx942", rocm_flash_attn_found=False, dtype="bfloat16", head_size=576,
                 use_mla=True, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
    assert _answer("mla_prefill", vllm="0.23", **no_fa) == (
        "ERR", "No valid MLA prefill backend found with MLAPrefillSelectorConfig(dtype=torch.bfloat16, "
        "is_r1_compatible=True). Reasons: {FLASH_ATTN: [required dependencies not available]}.")


def test_023_flashmla_sparse_rewrites_the_kv_dtype_in_its_own_words():
    """model_executor/layers/attention/mla_attention.py MLAAttention.__init__ (0.23.0): FLASHMLA_SPARSE turns an fp8
    cache into fp8_ds_mla with "Using DeepSeek's fp8_ds_mla KV cache format. To use standard fp8 kv-cache format, ..."
    (0.24: "Using fp8_ds_mla KV cache format for FLASHMLA_SPARSE backend.")."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=576, use_mla=True, use_sparse=True, index_topk=2048,
              kv_cache_dtype="fp8")
    logs23, logs24 = _answer(vllm="0.23", **kw)[5], _answer(vllm="0.24", **kw)[5]
    assert any(line.startswith("Using DeepSeek's fp8_ds_mla KV cache format. To use standard") for line in logs23)
    assert "Using fp8_ds_mla KV cache format for FLASHMLA_SPARSE backend." in logs24


def test_023_deepseek_v4_takes_flashinfer_when_asked_and_flashmla_otherwise():
    """models/deepseek_v4/nvidia/model.py _select_dsv4_attn_cls (0.23.0): FLASHINFER_MLA_SPARSE_DSV4 when requested,
    else FlashMLA, on any GPU (0.24: the SM 12.x class, and a refusal of the generic sparse names);
    attention.py _resolve_dsv4_kv_cache_dtype asserts an fp8 cache in 0.23's words."""
    kw = dict(dtype="bfloat16", head_size=512, use_mla=True, use_sparse=True, model_arch="deepseek_v4",
              kv_cache_dtype="fp8")
    assert _answer(vllm="0.23", gpu="RTX 5090", **kw)[0] == "FLASHMLA_SPARSE_DSV4"
    assert _answer(vllm="0.24", gpu="RTX 5090", **kw)[0] == "FLASHINFER_MLA_SPARSE_DSV4"
    assert _answer(vllm="0.23", gpu="H100", backend="FLASHINFER_MLA_SPARSE", **kw)[0] == "FLASHMLA_SPARSE_DSV4"
    assert _answer(vllm="0.24", gpu="H100", backend="FLASHINFER_MLA_SPARSE", **kw)[0] == "ERR"
    auto = dict(kw, kv_cache_dtype="auto")
    assert _answer(vllm="0.23", gpu="H100", **auto) == (
        "ERR", "DeepseekV4 FlashMLA fp8 layout only supports fp8 kv-cache, got auto")


def test_023_mimo_v2_always_takes_flash_attention_diffkv():
    """model_executor/models/mimo_v2.py MiMoV2Attention (0.23.0): a V head unlike K gets FlashAttentionDiffKVBackend
    unconditionally (0.24 falls back to TRITON_ATTN_DIFFKV where FA3/FA4 does not resolve, e.g. on an A100)."""
    kw = dict(gpu="A100", dtype="bfloat16", head_size=192, head_size_v=128, model_route="mimo_v2")
    assert _answer(vllm="0.23", **kw)[0] == "FLASH_ATTN_DIFFKV"
    assert _answer(vllm="0.24", **kw)[0] == "TRITON_ATTN_DIFFKV"
