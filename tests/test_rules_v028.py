"""The vLLM 0.28 rule set (edits on 0.29's): what 0.29 changed, each fact naming the vLLM 0.28.0 file it comes
from and asked of 0.29 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

import pytest

from release_facts import answer as _answer, candidate_reasons as _reasons, only_newer_accepts


@pytest.mark.parametrize("field, value", [("backend", "AMX_MLA"), ("mla_prefill_backend", "CPU")])
def test_028_lacks_what_029_added(field, value):
    """v1/attention/backends/registry.py and mla/prefill/registry.py (0.28.0): no AMX_MLA, no CPU MLA prefill."""
    only_newer_accepts(field, value, "0.28", "0.29", platform="cpu", dtype="bfloat16", head_size=576, use_mla=True)


def test_028_selector_config_has_no_dcp():
    """v1/attention/selector.py AttentionSelectorConfig and backend.py validate_configuration (0.28.0): no use_dcp,
    so no "non-causal MLA attention with DCP not supported", and vLLM's message ends at use_pcp."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=576, use_mla=True, use_non_causal=True, use_dcp=True, dcp_size=2)
    assert "non-causal MLA attention with DCP not supported" not in _reasons("TRITON_MLA", vllm="0.28", **kw)
    assert "non-causal MLA attention with DCP not supported" in _reasons("TRITON_MLA", vllm="0.29", **kw)
    none = dict(gpu="H100", dtype="bfloat16", head_size=64, kv_cache_dtype="turboquant_4bit_nc", has_sink=True)
    err = _answer(vllm="0.28", **none)
    assert err[0] == "ERR" and "use_dcp" not in err[1] and "use_pcp=False)" in err[1]
    assert "use_dcp=False)" in _answer(vllm="0.29", **none)[1]


def test_028_cpu_mla_is_always_the_reference_path():
    """platforms/cpu.py get_attn_backend_cls and check_and_update_config (0.28.0): CPU_MLA for every MLA model,
    AMX or not, without a selection log line, at block size 16 (0.29: AMX_MLA on AMX hosts, block 128); the start-up
    hook's INFO line about chunked prefill is logged for every MLA model."""
    kw = dict(platform="cpu", dtype="bfloat16", head_size=576, use_mla=True, cpu_amx=True)
    info = "MLA is enabled on a non-GPU platform; forcing chunked prefill and prefix caching to be disabled."
    assert _answer(vllm="0.28", **kw) == ("CPU_MLA", None, 16, (), None, (info,))
    a29 = _answer(vllm="0.29", **kw)
    assert (a29[0], a29[2], a29[5]) == ("AMX_MLA", 128, ("Using AMX_MLA backend.",))


def test_028_cpu_mla_prefill_fails_to_import():
    """v1/attention/backends/mla/prefill/selector.py get_mla_prefill_backend (0.28.0): no device capability on CPU,
    so FLASH_ATTN's prefill class, whose import fails there (fa_utils.py defines compile_flash_attn_varlen_func_from_specs
    only on CUDA, ROCm and XPU); a requested prefill backend does not change that."""
    kw = dict(platform="cpu", dtype="bfloat16", head_size=576, use_mla=True, qk_nope_head_dim=128, qk_rope_head_dim=64,
              v_head_dim=128)
    want = ("ERR", "cannot import name 'compile_flash_attn_varlen_func_from_specs' from "
                   "'vllm.v1.attention.backends.fa_utils'")
    assert _answer("mla_prefill", vllm="0.28", **kw) == want
    assert _answer("mla_prefill", vllm="0.28", mla_prefill_backend="FLASHINFER", **kw) == want
    assert _answer("mla_prefill", vllm="0.29", **kw)[0] == "CPU_SDPA_MLA_PREFILL"


def test_028_cpu_attention_pages_of_16():
    """v1/attention/backends/cpu_attn.py get_supported_kernel_block_sizes (0.28.0): MultipleOf(16) (0.29: 32)."""
    kw = dict(platform="cpu", dtype="bfloat16", head_size=128, block_size=48)
    assert _answer(vllm="0.28", **kw)[4] is None
    assert _answer(vllm="0.29", **kw)[4] == "No common block size for 48. "  # v1/worker/utils.py (0.29.0)


def test_028_fa4_head_256_is_off_on_blackwell():
    """v1/attention/backends/fa_utils.py get_flash_attn_version (0.28.0): no FA4 head-256 kernel; FA2 with a
    warning (0.29: FA4's head-256 kernel and its 128-token page)."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=256, backend="FLASH_ATTN")
    assert _answer(vllm="0.28", **kw)[:4] == (
        "FLASH_ATTN", "FA2", 16, ("FA4 on Blackwell is temporarily disabled for head_size=256, defaulting to FA version 2.",))
    assert _answer(vllm="0.29", **kw)[:3] == ("FLASH_ATTN", "FA4", 128)


def test_028_flashinfer_refuses_adaptive_verification():
    """v1/attention/backends/flashinfer.py supports_device_cpu_query_lens_mismatch (0.28.0): False on every GPU
    (0.29: SM 10.x trtllm-gen decode without DCP)."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=128, use_adaptive_verification=True)
    reason = "device-cpu query lens mismatch not supported, this is needed for adaptive verification"
    assert reason in _reasons("FLASHINFER", vllm="0.28", **kw)
    assert reason not in _reasons("FLASHINFER", vllm="0.29", **kw)


def test_028_requested_import_error_is_one_reason():
    """platforms/cuda.py get_attn_backend_cls (0.28.0): a requested backend that fails to import has the reason
    'ImportError' (0.29 names the exception)."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=128, backend="NO_ATTENTION")
    assert _answer(vllm="0.28", **kw) == ("ERR", "Selected backend AttentionBackendEnum.NO_ATTENTION is not valid for "
                                                 "this configuration. Reason: ['ImportError']")
    assert "ModuleNotFoundError" in _answer(vllm="0.29", **kw)[1]


def test_028_sparse_mla_prefill_skip():
    """model_executor/layers/attention/mla_attention.py MLAAttention.__init__ (0.28.0): only an impl without a
    dense-MHA prefill path skips the prefill backend (ROCm's AITER sparse MLA; FlashInfer's SM120 sparse impl has
    one in 0.28), and the warning says "impl"."""
    dims = dict(dtype="bfloat16", head_size=576, use_mla=True, use_sparse=True, qk_nope_head_dim=128,
                qk_rope_head_dim=64, v_head_dim=128, index_topk=2048, kv_lora_rank=512)
    sm120 = dict(gpu="RTX 5090", **dims)
    assert _answer("mla_prefill", vllm="0.28", **sm120)[0] == "FLASH_ATTN_PREFILL"
    assert _answer("mla_prefill", vllm="0.29", **sm120)[0] == "NO_PREFILL"
    rocm = dict(platform="rocm", rocm_arch="gfx942", rocm_use_aiter=True, **dims)
    assert _answer("mla_prefill", vllm="0.28", **rocm)[3] == (
        "Sparse MLA impl has no dense-MHA prefill path; using the top-k MQA path only.",)


def test_028_deepseek_v32_refuses_xpu():
    """models/deepseek_v32/__init__.py (0.28.0): NotImplementedError on XPU (0.29: the generic DeepSeek-V3 code)."""
    kw = dict(platform="xpu", dtype="bfloat16", head_size=576, use_mla=True, use_sparse=True, model_arch="deepseek_v32")
    assert _answer(vllm="0.28", **kw) == ("ERR", "deepseek_v32 does not yet support XPU.")
    assert _answer(vllm="0.29", **kw)[0] == "XPU_MLA_SPARSE"
