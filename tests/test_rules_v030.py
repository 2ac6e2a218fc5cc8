"""The vLLM 0.30 rule set (edits on 0.31's): what 0.31 changed, each fact naming the vLLM 0.30.0 file it comes
from and asked of 0.31 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

import pytest

from attnsolve import Config, ConfigError
from attnsolve.rules import rules_for

from release_facts import answer as _answer, rejected_reasons as _reasons


def test_030_flash_attention_fp8_text_and_fa4_on_hopper():
    """v1/attention/backends/flash_attn.py supports_combination (0.30.0): "FP8 KV cache requires FA3 on SM90 or
    FA4 on SM100"; fa_utils.flash_attn_supports_kv_cache_dtype: FA4 on SM 9.x reads no fp8 KV (0.31: at head 512),
    so FA4 on an H100 also fails the generic KV-dtype test."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=128, kv_cache_dtype="fp8", flash_attn_version=4)
    assert _reasons("FLASH_ATTN", vllm="0.30", **kw) == (
        "kv_cache_dtype not supported", "FP8 KV cache requires FA3 on SM90 or FA4 on SM100")
    assert _reasons("FLASH_ATTN", vllm="0.31", **kw) == (
        "FP8 KV cache requires FA3 on SM90, FA4 with head_size=512 on SM90, or FA4 on SM100",)
    assert _answer(vllm="0.30", gpu="H100", dtype="bfloat16", head_size=128, kv_cache_dtype="fp8")[:2] == (
        "FLASH_ATTN", "FA3")  # FA3, the Hopper default, still reads fp8


def test_030_composite_needs_fa4():
    """v1/attention/backends/triton_flash_attn.py (0.30.0): the causal child is _FA4Backend ("causal route
    requires FlashAttention v4"; 0.31's _FABackend takes FA3 too), so an H100 multimodal prefix-LM at head 256
    runs FLASH_ATTN's next choice."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=256, use_mm_prefix=True)
    assert _answer(vllm="0.31", **kw)[0] == "TRITON_FLASH_ATTN"
    assert _answer(vllm="0.30", **kw)[0] != "TRITON_FLASH_ATTN"
    assert "FLASH_ATTN: causal route requires FlashAttention v4" in _reasons("TRITON_FLASH_ATTN", vllm="0.30", **kw)


@pytest.mark.parametrize("field, value", [("backend", "FLASHMLA_MEGA_ATTN_DSV41"), ("mla_prefill_backend", "ZEN_CPU")])
def test_030_lacks_what_031_added(field, value):
    """v1/attention/backends/registry.py and mla/prefill/registry.py (0.30.0): no FLASHMLA_MEGA_ATTN_DSV41, no
    ZEN_CPU prefill."""
    with pytest.raises(ConfigError) as e:
        Config(vllm="0.30", gpu="B200", dtype="bfloat16", head_size=576, use_mla=True, **{field: value})
    assert e.value.field == field
    Config(vllm="0.31", gpu="B200", dtype="bfloat16", head_size=576, use_mla=True, **{field: value})


def test_030_cpu_mla_prefill_log():
    """v1/attention/backends/mla/prefill/selector.py (0.30.0): on CPU, "Using CPU SDPA MLA prefill backend."."""
    kw = dict(platform="cpu", dtype="bfloat16", head_size=576, use_mla=True)
    assert "Using CPU SDPA MLA prefill backend." in _answer("mla_prefill", vllm="0.30", **kw)[5]
    assert "Using CPU MLA prefill backend." in _answer("mla_prefill", vllm="0.31", **kw)[5]


def test_030_xpu_has_no_batch_invariance_branch():
    """platforms/xpu.py XPUPlatform.get_attn_backend_cls (0.30.0): no VLLM_BATCH_INVARIANT case, and
    check_and_update_config does not refuse a quantized KV cache with it (both 0.31)."""
    kw = dict(platform="xpu", dtype="float16", head_size=128, use_batch_invariant=True)
    assert _answer(vllm="0.30", **kw)[0] == "FLASH_ATTN"
    assert _answer(vllm="0.31", **kw)[0] == "TRITON_ATTN"


def test_030_rocm_turboquant_request_and_aiter_mla():
    """platforms/rocm.py get_attn_backend_cls (0.30.0): any refusal of a requested backend on a turboquant_*
    layer falls back, with "... incompatible with this turboquant layer ..."; rocm_aiter_mla.py: its builder does
    not declare non-causal multi-token DCP (0.31 does)."""
    assert dict(rules_for("0.30").backends["ROCM_AITER_MLA"].caps.items)["non_causal_dcp"] is False
    assert dict(rules_for("0.31").backends["ROCM_AITER_MLA"].caps.items)["non_causal_dcp"] is True
    kw = dict(gpu="MI300X", dtype="bfloat16", head_size=128, kv_cache_dtype="turboquant_4bit_nc",
              backend="ROCM_AITER_UNIFIED_ATTN", rocm_use_aiter=True)
    ans = _answer(vllm="0.30", **kw)
    assert ans[0] != "ERR"
    assert any("is incompatible with this turboquant layer" in line for line in (*ans[3], *ans[5])), ans
    assert not any("turboquant layer" in line for line in (*_answer(vllm="0.31", **kw)[3], *_answer(vllm="0.31", **kw)[5]))


def test_030_deepseek_v41_kv_dtype_is_deepseek_v4s():
    """models/deepseek_v41/attention.py _resolve_dsv4_kv_cache_dtype (0.30.0) is DeepSeek-V4's: a non-fp8 dtype is
    refused with DeepSeek-V4's fp8_ds_mla text, and the plain-row FlashInfer class takes fp8_ds_mla (0.31 added V4.1's
    packed records and refuses a packed dtype there)."""
    kw = dict(dtype="bfloat16", head_size=512, use_mla=True, use_sparse=True, model_arch="deepseek_v41")
    assert _answer(vllm="0.30", gpu="H100", kv_cache_dtype="bfloat16", **kw)[1].startswith(
        "DeepseekV4 fp8_ds_mla layout only supports fp8 kv-cache, got bfloat16.")
    assert _answer(vllm="0.31", gpu="H100", kv_cache_dtype="bfloat16", **kw)[1].startswith(
        "DeepseekV4 packed KV layouts only support fp8 kv-cache, got bfloat16.")
    fi = dict(gpu="B200", kv_cache_dtype="fp8_ds_mla", backend="FLASHINFER_MLA_SPARSE_DSV41", **kw)
    assert _answer(vllm="0.30", **fi)[0] == "FLASHINFER_MLA_SPARSE_DSV41"
    assert _answer(vllm="0.31", **fi)[0] == "ERR"
