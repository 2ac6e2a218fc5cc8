"""The vLLM 0.25 rule set (edits on 0.26's): what 0.26 changed, each fact naming the vLLM 0.25.0 file it comes
from and asked of 0.26 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

from attnsolve import Config, solve

from release_facts import answer as _answer, candidate_reasons as _reasons


def test_025_sm10_lists_flashinfer_first_for_non_causal_layers_too():
    """platforms/cuda.py _get_backend_priorities (0.25.0): no use_non_causal argument, so a non-causal standard layer on
    SM 10.x gets the FLASHINFER-first list (0.26 gives it the FLASH_ATTN-first one)."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=128, use_non_causal=True)
    assert _answer(vllm="0.25", **kw)[0] == "FLASHINFER"
    assert _answer(vllm="0.26", **kw)[0] == "FLASH_ATTN"
    assert _answer(vllm="0.25", **dict(kw, use_non_causal=False))[0] == "FLASHINFER"


def test_025_validate_configuration_has_no_pcp_or_sliding_window_check():
    """v1/attention/backend.py validate_configuration and selector.py AttentionSelectorConfig (0.25.0): no use_pcp and
    no has_sliding_window (0.26 added both, with "PCP not supported" / "sliding window not supported")."""
    pcp = dict(gpu="A100", dtype="bfloat16", head_size=128, use_pcp=True)
    assert _answer(vllm="0.25", **pcp)[:2] == ("FLASH_ATTN", "FA2")
    assert _answer(vllm="0.26", **pcp)[0] == "ERR"
    mla = dict(gpu="B200", dtype="bfloat16", head_size=576, use_mla=True, has_sliding_window=True)
    assert "sliding window not supported" not in _reasons("FLASHINFER_MLA", vllm="0.25", **mla)
    assert "sliding window not supported" in _reasons("FLASHINFER_MLA", vllm="0.26", **mla)


def test_025_no_valid_message_prints_the_025_selector_config():
    """v1/attention/selector.py AttentionSelectorConfig.__repr__ (0.25.0): ends at use_kv_connector, no
    has_sliding_window (0.26 prints both new inputs)."""
    kw = dict(gpu="T4", dtype="bfloat16", head_size=128, use_per_head_quant_scales=True)
    err = _answer(vllm="0.25", **kw)
    assert err[0] == "ERR" and "attn_type=AttentionType.DECODER, use_non_causal=False" in err[1]
    assert "use_kv_connector=False). Reasons:" in err[1] and "use_pcp" not in err[1]
    assert "has_sliding_window=False" in _answer(vllm="0.26", **kw)[1]


def test_025_aiter_unified_attention_takes_bf16_only():
    """v1/attention/backends/rocm_aiter_unified_attn.py (0.25.0): supported_dtypes [bfloat16], KV caches auto, bfloat16,
    fp8, fp8_e4m3 (0.26 adds float16 and fp8_e5m2)."""
    kw = dict(platform="rocm", rocm_arch="gfx942", dtype="float16", head_size=128, rocm_use_aiter=True,
              backend="ROCM_AITER_UNIFIED_ATTN")
    assert "dtype not supported" in _answer(vllm="0.25", **kw)[1]
    assert _answer(vllm="0.26", **kw)[0] == "ROCM_AITER_UNIFIED_ATTN"
    e5m2 = dict(kw, dtype="bfloat16", kv_cache_dtype="fp8_e5m2")
    assert "kv_cache_dtype not supported" in _answer(vllm="0.25", **e5m2)[1]


def test_025_flash_attn_prefill_takes_every_mla_shape():
    """v1/attention/backends/mla/prefill/flash_attn.py (0.25.0): no supports_mla_dimensions (0.26: DeepSeek, GLM and
    Mistral shapes only, GLM's not with FA4), so any dimensions pass."""
    odd = dict(gpu="H100", dtype="bfloat16", head_size=576, use_mla=True, qk_nope_head_dim=96, qk_rope_head_dim=32,
               v_head_dim=96)
    assert solve(Config(vllm="0.25", **odd), role="mla_prefill").backend == "FLASH_ATTN_PREFILL"
    assert _answer("mla_prefill", vllm="0.26", **odd)[0] == "ERR"


def test_025_a_sparse_layer_without_a_prefill_backend_fails():
    """model_executor/layers/attention/mla_attention.py MLAAttention.__init__ (0.25.0): get_mla_prefill_backend with no
    try, so its ValueError is the layer's (0.26 keeps a sparse layer on the top-k MQA path with a warning).  On CUDA
    0.25's FlashAttention prefill takes every bf16/fp16 shape, so a sparse layer there always has one (the 0.26
    fallback is reached where 0.26's shape test refuses)."""
    kw = dict(platform="rocm", rocm_arch="gfx1100", rocm_flash_attn_found=False, dtype="bfloat16", head_size=576,
              use_mla=True, use_sparse=True, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, index_topk=2048)
    old, new = _answer("mla_prefill", vllm="0.25", **kw), _answer("mla_prefill", vllm="0.26", **kw)
    assert old[0] == "ERR" and old[1].startswith("No valid MLA prefill backend found")
    assert new[0] == "NO_PREFILL"
    cuda = dict(kw, platform="cuda", gpu="RTX 5090", qk_nope_head_dim=64, qk_rope_head_dim=64, v_head_dim=64)
    for key in ("rocm_arch", "rocm_flash_attn_found"):
        del cuda[key]
    del cuda["platform"]
    assert _answer("mla_prefill", vllm="0.25", **cuda)[0] == "FLASH_ATTN_PREFILL"
    assert _answer("mla_prefill", vllm="0.26", **cuda)[0] == "NO_PREFILL"


def test_025_xpu_multimodal_prefix_ignores_a_flash_attn_request():
    """platforms/xpu.py XPUPlatform.get_attn_backend_cls (0.25.0): a multimodal prefix-LM layer goes to TRITON_ATTN even
    when FLASH_ATTN is requested (0.26 honours the request with a warning)."""
    kw = dict(platform="xpu", dtype="bfloat16", head_size=128, use_mm_prefix=True, backend="FLASH_ATTN")
    assert _answer(vllm="0.25", **kw)[0] == "TRITON_ATTN"
    assert _answer(vllm="0.26", **kw)[0] == "FLASH_ATTN"
