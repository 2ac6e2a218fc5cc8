"""The vLLM 0.26 rule set (edits on 0.27's): what 0.27 changed, each fact naming the vLLM 0.26.0 file it comes
from and asked of 0.27 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

import pytest

from attnsolve import Config, solve

from release_facts import answer as _answer, candidate_reasons as _reasons, only_newer_accepts


@pytest.mark.parametrize("field, value", [("backend", "CUTLASS_MSA"), ("backend", "TRITON_MSA"),
                                          ("minimax_m3_msa_decode_backend", "cutlass")])
def test_026_lacks_what_027_added(field, value):
    """v1/attention/backends/registry.py and config/attention.py (0.26.0): no MSA aliases, no MSA decode switch."""
    only_newer_accepts(field, value, "0.26", "0.27", gpu="B200", dtype="bfloat16", head_size=128)


def test_026_flash_attention_reads_fp8_with_fa3_only():
    """v1/attention/backends/flash_attn.py supports_kv_cache_dtype (0.26.0): fp8 / fp8_e4m3 with FA3 on SM 9.x only
    (0.27: FA4 on SM 10.x too, through fa_utils.flash_attn_supports_kv_cache_dtype)."""
    b200 = dict(gpu="B200", dtype="bfloat16", head_size=128, kv_cache_dtype="fp8", backend="FLASH_ATTN")
    assert _answer(vllm="0.26", **b200) == ("ERR", "Selected backend AttentionBackendEnum.FLASH_ATTN is not valid for "
                                                   "this configuration. Reason: ['kv_cache_dtype not supported']")
    assert _answer(vllm="0.27", **b200)[:2] == ("FLASH_ATTN", "FA4")
    assert _answer(vllm="0.26", **dict(b200, gpu="H100"))[:2] == ("FLASH_ATTN", "FA3")


def test_026_tmem_rule_spares_192_not_256():
    """v1/attention/backends/fa_utils.py get_flash_attn_version (0.26.0): FA4 on SM >= 10 keeps heads up to 128 and
    192 (any V), so 256 falls back to FA2 (0.27: 256 spared, 192 only with V 128)."""
    kw = dict(gpu="B200", dtype="bfloat16", backend="FLASH_ATTN")
    assert _answer(vllm="0.26", head_size=192, **kw)[:2] == ("FLASH_ATTN", "FA4")
    assert _answer(vllm="0.26", head_size=256, **kw)[:4] == (
        "FLASH_ATTN", "FA2", 16,
        ("FA4 on Blackwell does not support head_size=256 due to TMEM capacity limits, defaulting to FA version 2.",))
    assert _answer(vllm="0.27", head_size=192, **kw)[:2] == ("FLASH_ATTN", "FA2")
    assert _answer(vllm="0.27", head_size=256, **kw)[:2] == ("FLASH_ATTN", "FA4")


@pytest.mark.parametrize("backend", ["TRITON_MLA", "FLASHINFER_MLA"])
def test_026_mla_backends_are_causal_only(backend):
    """v1/attention/backends/mla/triton_mla.py and flashinfer_mla.py (0.26.0): no supports_non_causal (0.27 added)."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=576, use_mla=True, use_non_causal=True)
    assert "non-causal attention not supported" in _reasons(backend, vllm="0.26", **kw)
    assert "non-causal attention not supported" not in _reasons(backend, vllm="0.27", **kw)


def test_026_aiter_runs_on_mi300_series_only():
    """_aiter_ops.py and rocm_aiter_fa.py (0.26.0): on_mi3xx() (gfx942, gfx950), not CDNA > 2 (0.27 adds gfx1250)."""
    kw = dict(platform="rocm", rocm_arch="gfx1250", dtype="bfloat16", head_size=128, rocm_use_aiter=True,
              rocm_use_aiter_mha=True, backend="ROCM_AITER_FA")
    assert "compute capability not supported" in _answer(vllm="0.26", **kw)[1]
    assert _answer(vllm="0.27", **kw)[0] == "ROCM_AITER_FA"


def test_026_mla_prefill():
    """model_executor/layers/attention/mla_attention.py and v1/attention/backends/mla/prefill/ (0.26.0): every MLA layer
    asks for a prefill backend (no dense-MHA skip: ROCm's AITER sparse MLA gets one); SM 10.x lists FLASH_ATTN first
    for GLM's dims too, and FA4's prefill refuses them (0.27: TRT-LLM ragged first for them)."""
    dims = dict(dtype="bfloat16", head_size=576, use_mla=True, use_sparse=True, qk_nope_head_dim=128, qk_rope_head_dim=64,
                v_head_dim=128, index_topk=2048)
    rocm = dict(platform="rocm", rocm_arch="gfx942", rocm_use_aiter=True, **dims)
    assert _answer("mla_prefill", vllm="0.26", **rocm)[0] == "ROCM_AITER_FA_PREFILL"
    assert _answer("mla_prefill", vllm="0.27", **rocm)[0] == "NO_PREFILL"
    glm = dict(gpu="B200", dtype="bfloat16", head_size=576, use_mla=True, qk_nope_head_dim=192, qk_rope_head_dim=64,
               v_head_dim=256)
    sel = solve(Config(vllm="0.26", **glm), role="mla_prefill")
    assert sel.backend == "TRTLLM_RAGGED_PREFILL"
    assert [r.backend for r in sel.rejected] == ["FLASH_ATTN_PREFILL"]
    assert not solve(Config(vllm="0.27", **glm), role="mla_prefill").rejected
