"""The vLLM 0.27 rule set (edits on 0.28's): what 0.28 changed, each fact naming the vLLM 0.27.0 file it comes
from and asked of 0.28 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

import pytest

from release_facts import answer as _answer, candidate_reasons as _reasons, only_newer_accepts


@pytest.mark.parametrize("field, value", [
    ("backend", "CPU_MLA"), ("kv_cache_dtype", "nvfp4_4over6"), ("use_adaptive_verification", True),
])
def test_027_lacks_what_028_added(field, value):
    """v1/attention/backends/registry.py, config/cache.py CacheDType and v1/attention/selector.py (0.27.0): no CPU
    MLA backend, no nvfp4_4over6 cache, no adaptive-verification input."""
    only_newer_accepts(field, value, "0.27", "0.28", gpu="B200", dtype="bfloat16", head_size=128)


def test_027_selector_config_ends_at_pcp():
    """v1/attention/selector.py AttentionSelectorConfig.__repr__ (0.27.0): no use_adaptive_verification."""
    none = dict(gpu="H100", dtype="bfloat16", head_size=64, kv_cache_dtype="turboquant_4bit_nc", has_sink=True)
    err = _answer(vllm="0.27", **none)
    assert err[0] == "ERR" and "use_adaptive_verification" not in err[1] and "use_pcp=False)" in err[1]
    assert "use_adaptive_verification=False" in _answer(vllm="0.28", **none)[1]


def test_027_mla_is_refused_on_cpu():
    """platforms/cpu.py get_attn_backend_cls (0.27.0): NotImplementedError("MLA is not supported on CPU."), before
    the sparse refusal; the MLA layer's prefill question never comes."""
    kw = dict(platform="cpu", dtype="bfloat16", head_size=576, use_mla=True)
    assert _answer(vllm="0.27", **kw) == ("ERR", "MLA is not supported on CPU.")
    assert _answer(vllm="0.27", use_sparse=True, **kw) == ("ERR", "MLA is not supported on CPU.")
    assert _answer("mla_prefill", vllm="0.27", **kw) == ("ERR", "MLA is not supported on CPU.")
    assert _answer(vllm="0.28", **kw)[0] == "CPU_MLA"


def test_027_fa4_runs_head_256_on_blackwell_without_a_window():
    """v1/attention/backends/fa_utils.py get_flash_attn_version (0.27.0): the TMEM rule spares head 256, and only a
    layer with a sliding window (requires_local_attention) falls back to FA2 (0.28: FA2 for every head-256 layer)."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=256, backend="FLASH_ATTN")
    assert _answer(vllm="0.27", **kw)[:2] == ("FLASH_ATTN", "FA4")
    assert _answer(vllm="0.27", has_sliding_window=True, **kw)[:4] == (
        "FLASH_ATTN", "FA2", 16,
        ("FA4 on Blackwell does not support local attention with head_size=256, defaulting to FA version 2.",))
    assert _answer(vllm="0.28", **kw)[:2] == ("FLASH_ATTN", "FA2")


def test_027_flashinfer_has_no_xqa_on_sm120():
    """utils/flashinfer.py supports_trtllm_attention and flashinfer.py supports_sink (0.27.0): SM 12.x has no XQA
    decode, so FlashInfer there takes no sinks (0.28 added both)."""
    kw = dict(gpu="RTX 5090", dtype="bfloat16", head_size=64, has_sink=True, backend="FLASHINFER")
    assert _answer(vllm="0.27", **kw)[0] == "ERR"
    assert _answer(vllm="0.28", **kw)[:2] == ("FLASHINFER", "TRTLLM")


def test_027_hpc_attention_from_sm90_up():
    """v1/attention/backends/hpc_attn.py supports_compute_capability (0.27.0): capability >= 9.0 (0.28: exactly 9.0)."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=128, backend="HPC_ATTN")
    assert _answer(vllm="0.27", **kw)[0] == "HPC_ATTN"
    assert _answer(vllm="0.28", **kw)[0] == "ERR"


def test_027_rocm_lists_and_requests():
    """platforms/rocm.py (0.27.0): no RDNA4 AITER list (0.28 put AITER unified attention first on gfx12), and an
    invalid request raises even on a turboquant layer (0.28 fell back to automatic selection)."""
    rdna4 = dict(platform="rocm", rocm_arch="gfx1201", dtype="bfloat16", head_size=128, rocm_use_aiter=True)
    assert _answer(vllm="0.27", **rdna4)[0] == "ROCM_ATTN"
    assert _answer(vllm="0.28", **rdna4)[0] == "ROCM_AITER_UNIFIED_ATTN"
    tq = dict(platform="rocm", rocm_arch="gfx942", dtype="bfloat16", head_size=128, kv_cache_dtype="turboquant_k8v4",
              backend="ROCM_AITER_FA")
    assert _answer(vllm="0.27", **tq)[0] == "ERR"
    assert _answer(vllm="0.28", **tq)[0] == "TURBOQUANT"


def test_027_tokenspeed_mla_is_causal_only():
    """v1/attention/backends/mla/tokenspeed_mla.py (0.27.0): no supports_non_causal (0.28 added it)."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=576, use_mla=True, use_non_causal=True)
    assert "non-causal attention not supported" in _reasons("TOKENSPEED_MLA", vllm="0.27", **kw)
    assert "non-causal attention not supported" not in _reasons("TOKENSPEED_MLA", vllm="0.28", **kw)


def test_027_diff_kv_layers_run_fa4_at_head_256():
    """v1/attention/backends/flash_attn_diffkv.py and fa_utils.py (0.27.0): the diff-KV layer's version call keeps FA4
    at head 256 on SM 10.x (the TMEM rule spares it; no local-attention flag there). Found by the nightly harness run."""
    kw = dict(gpu="B200", dtype="bfloat16", kv_cache_dtype="fp8", block_size=32, head_size=256, has_sink=True,
              backend="FLASH_ATTN_DIFFKV")
    assert _answer(vllm="0.27", **kw)[:2] == ("FLASH_ATTN_DIFFKV", "FA4")
    assert _answer(vllm="0.28", **kw)[:2] != ("FLASH_ATTN_DIFFKV", "FA4")  # FA2 there, which reads no fp8 KV


@pytest.mark.parametrize("vllm", ["0.27", "0.28", "0.33"])
def test_mla_prefill_fa4_under_batch_invariance_below_sm80_warns_twice(vllm):
    """v1/attention/backends/fa_utils.py get_flash_attn_version (0.27.0 to 0.33.0): FA4 forced, batch invariance and
    SM 7.0 log both steps (FA4 -> FA2, then FA2 unsupported) for the MLA prefill's call too. Found by the 0.27
    nightly harness run; the rule had no warning there in any release."""
    kw = dict(compute_capability="7.0", dtype="float16", kv_cache_dtype="fp8_e4m3", head_size=576, use_mla=True,
              num_heads=64, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, flash_attn_version=4,
              use_batch_invariant=True)
    assert _answer("mla_prefill", vllm=vllm, **kw)[3] == (
        "Cannot use FA version 4 with batch invariance, defaulting to FA version 2.",
        "Cannot use FA version 2 is not supported due to FA2 is only supported on devices with compute capability >= 8")
