"""The vLLM 0.19 rule set (edits on 0.20's): what 0.20 changed, each fact naming the vLLM 0.19.0 file it comes
from and asked of 0.20 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

import pytest

from attnsolve import Config, explain

from release_facts import answer as _answer, candidate_reasons, only_newer_accepts

H100 = dict(gpu="H100", dtype="bfloat16", head_size=128)
MLA = dict(gpu="B200", dtype="bfloat16", use_mla=True, head_size=576, qk_nope_head_dim=128, qk_rope_head_dim=64,
           v_head_dim=128)
BI_REFUSAL = ("VLLM batch_invariant mode requires an attention backend in ['FLASH_ATTN', 'TRITON_ATTN', "
              "'FLASH_ATTN_MLA', 'TRITON_MLA'], but got '{}'. Please use --attention-backend or attention_config to "
              "set one of the supported backends before enabling batch_invariant.")


def test_019_selector_config_has_ten_fields():
    """v1/attention/selector.py AttentionSelectorConfig (0.19.0): head_size ... attn_type, its repr ending there (0.20
    added use_non_causal and use_batch_invariant); 0.19 has no non-causal input at all (no DFlash)."""
    kw = dict(gpu="H100", dtype="float32", head_size=100, use_mla=True)
    text = _answer(vllm="0.19", **kw)[1]
    assert "use_per_head_quant_scales=False, attn_type=AttentionType.DECODER). Reasons: {" in text
    assert "use_non_causal" not in text and "use_batch_invariant" not in text
    assert "attn_type=AttentionType.DECODER, use_non_causal=False, use_batch_invariant=False). Reasons:" in _answer(
        vllm="0.20", **kw)[1]
    only_newer_accepts("use_non_causal", True, "0.19", "0.20", **H100)


def test_019_has_no_non_causal_or_batch_invariance_reason():
    """v1/attention/backend.py validate_configuration (0.19.0): twelve checks, none about non-causal attention or
    batch invariance (0.20's FLEX_ATTENTION refuses batch invariance as a reason)."""
    assert candidate_reasons("FLEX_ATTENTION", vllm="0.19", use_batch_invariant=True, **H100) == ()
    assert candidate_reasons("FLEX_ATTENTION", vllm="0.20", use_batch_invariant=True, **H100) == (
        "batch invariance not supported",)


@pytest.mark.parametrize("where, request_, refused", [
    (H100, None, "None"), (H100, "FLASHINFER", "FLASHINFER"), (H100, "FLASH_ATTN", None), (H100, "TRITON_ATTN", None),
    (dict(platform="cpu", dtype="bfloat16", head_size=128), None, "None"),
    (dict(platform="cpu", dtype="bfloat16", head_size=128), "TRITON_ATTN", None),
    (dict(platform="xpu", dtype="float16", head_size=128), None, None),
    (dict(platform="rocm", rocm_arch="gfx942", dtype="bfloat16", head_size=128), None, "None"),
    (MLA, "TRITON_MLA", None), (MLA, "FLASHINFER_MLA", "FLASHINFER_MLA"),
], ids=lambda x: x if isinstance(x, str) or x is None else None)
def test_019_batch_invariance_is_a_start_up_gate_on_the_request(where, request_, refused):
    """model_executor/layers/batch_invariant.py override_envs_for_invariance (0.19.0), called by the worker before any
    layer: only a requested FLASH_ATTN, TRITON_ATTN, FLASH_ATTN_MLA or TRITON_MLA starts, no request prints 'None'
    (XPU's check_and_update_config requests FLASH_ATTN itself); 0.20 filters backends in selection instead."""
    got = _answer(vllm="0.19", use_batch_invariant=True, backend=request_, **where)
    assert got[0] != "ERR", got
    assert got[4] == (None if refused is None else BI_REFUSAL.format(refused))
    new = _answer(vllm="0.20", use_batch_invariant=True, backend=request_, **where)
    assert new[0] == "ERR" or new[4] is None or "batch_invariant mode requires" not in new[4]


def test_019_flash_attention_heads_stop_at_256():
    """v1/attention/backends/flash_attn.py FlashAttentionBackend.supports_head_size (0.19.0): head_size % 8 == 0 and
    head_size <= 256 (0.20 takes up to 512 where FA4 is supported)."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=512)
    assert candidate_reasons("FLASH_ATTN", vllm="0.19", **kw) == ("head_size not supported",)
    assert _answer(vllm="0.19", **kw)[0] == "TRITON_ATTN"
    assert _answer(vllm="0.20", **kw)[:2] == ("FLASH_ATTN", "FA2")


def test_019_sinks_only_with_fa3():
    """v1/attention/backends/fa_utils.py flash_attn_supports_sinks (0.19.0): True on XPU, else FA version == 3 (0.20:
    3 or 4). A gpt-oss layer on B200 (FA4) with TRT-LLM attention off: TRITON_ATTN in 0.19, FLASH_ATTN in 0.20."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=64, has_sink=True, use_trtllm_attention=False)
    assert "attention sinks not supported" in candidate_reasons("FLASH_ATTN", vllm="0.19", **kw)
    assert _answer(vllm="0.19", **kw)[0] == "TRITON_ATTN"
    assert _answer(vllm="0.20", **kw)[:2] == ("FLASH_ATTN", "FA4")
    assert _answer(vllm="0.19", gpu="H100", dtype="bfloat16", head_size=64, has_sink=True)[:2] == ("FLASH_ATTN", "FA3")


def test_019_fa4_with_paged_kv_fails_on_hopper():
    """vllm_flash_attn/flash_attn_interface.py flash_attn_varlen_func (0.19.0): FA4 with a block table on SM 9.x raises
    at the first forward pass (start-up's profiling run); 0.20 removed the refusal."""
    text = "FA4 with paged KV is not supported on SM90 (Hopper). Use FA3 or upgrade to Blackwell (SM100+)."
    assert _answer(vllm="0.19", flash_attn_version=4, **H100)[::4] == ("FLASH_ATTN", text)
    assert _answer(vllm="0.20", flash_attn_version=4, **H100)[4] is None
    assert _answer(vllm="0.19", flash_attn_version=4, gpu="B200", dtype="bfloat16", head_size=128)[4] is None


def test_019_no_turboquant_per_token_head_or_nvfp4():
    """config/cache.py CacheDType (0.19.0): eight values; backends/registry.py has no TURBOQUANT (0.20 added them)."""
    for kv in ("turboquant_k8v4", "fp8_per_token_head", "int8_per_token_head", "nvfp4"):
        only_newer_accepts("kv_cache_dtype", kv, "0.19", "0.20", **H100)
    only_newer_accepts("backend", "TURBOQUANT", "0.19", "0.20", **H100)
    assert [c.backend for c in explain(Config(vllm="0.19", **H100)).candidates] == [
        "FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION"]


def test_019_flashmla_sparse_takes_head_576_only_and_no_deepseek_v4():
    """v1/attention/backends/mla/flashmla_sparse.py FlashMLASparseBackend.get_supported_head_sizes (0.19.0): [576]
    (0.20 added 512 with DeepSeek-V4, whose model code 0.19 does not have)."""
    kw = dict(gpu="H100", dtype="bfloat16", use_mla=True, use_sparse=True, head_size=512, index_topk=2048)
    assert "head_size not supported" in candidate_reasons("FLASHMLA_SPARSE", vllm="0.19", **kw)
    assert "head_size not supported" not in candidate_reasons("FLASHMLA_SPARSE", vllm="0.20", **kw)
    only_newer_accepts("model_arch", "deepseek_v4", "0.19", "0.20", **MLA)


def test_019_xpu_block_size_64_for_every_backend_and_no_fp8_flash_attention():
    """platforms/xpu.py XPUPlatform.check_and_update_config (0.19.0) sets block size 64 unless given (0.20: 64 for
    FLASH_ATTN only); fa_utils.flash_attn_supports_fp8 is False on XPU, so FlashAttentionImpl refuses an fp8 cache."""
    kw = dict(platform="xpu", dtype="float32", head_size=128)
    assert _answer(vllm="0.19", **kw)[:3] == ("TRITON_ATTN", None, 64)
    assert _answer(vllm="0.20", **kw)[:3] == ("TRITON_ATTN", None, 16)
    fp8 = dict(platform="xpu", dtype="float16", head_size=128, kv_cache_dtype="fp8")
    assert _answer(vllm="0.19", **fp8)[4] == "FlashAttention does not support fp8 kv-cache on this device."
    assert _answer(vllm="0.20", **fp8)[4] is None


def test_019_mimo_v2_flash_has_no_diff_kv_route():
    """model_executor/models/mimo_v2_flash.py MiMoV2Attention (0.19.0) builds a plain Attention (V zero-padded): no
    architecture maps to the mimo_v2 route, and head_size_v is not read from the model (0.20 routes it to
    FLASH_ATTN_DIFFKV)."""
    from attnsolve.rules import rules_for
    assert "MiMoV2FlashForCausalLM" not in rules_for("0.19").fields["model_route"].architectures
    assert rules_for("0.20").fields["model_route"].architectures["MiMoV2FlashForCausalLM"] == "mimo_v2"
    assert "MiMoV2FlashForCausalLM" not in rules_for("0.19").fields["head_size_v"].architecture_keys
