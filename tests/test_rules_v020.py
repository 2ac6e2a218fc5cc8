"""The vLLM 0.20 rule set (edits on 0.21's): what 0.21 changed, each fact naming the vLLM 0.20.0 file it comes
from and asked of 0.21 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

import pytest

from attnsolve import Config, ConfigError

from release_facts import answer as _answer, candidate_reasons, only_newer_accepts

MLA = dict(gpu="B200", dtype="bfloat16", use_mla=True, head_size=576, qk_nope_head_dim=128, qk_rope_head_dim=64,
           v_head_dim=128)


@pytest.mark.parametrize("switches, prefill", [
    ({}, "FLASH_ATTN_PREFILL"),
    (dict(use_trtllm_ragged_deepseek_prefill=True), "TRTLLM_RAGGED_DEEPSEEK"),
    (dict(disable_flashinfer_prefill=False), "FLASHINFER_PREFILL"),
    (dict(use_cudnn_prefill=True), "CUDNN_PREFILL"),
    (dict(use_cudnn_prefill=True, disable_flashinfer_prefill=False), "CUDNN_PREFILL"),
    (dict(use_trtllm_ragged_deepseek_prefill=True, use_cudnn_prefill=True), "TRTLLM_RAGGED_DEEPSEEK"),
])
def test_020_prefill_switches_pick_the_prefill_path(switches, prefill):
    """model_executor/layers/attention/mla_attention.py MLACommonImpl.__init__ (0.20.0): TRT-LLM ragged, FlashInfer,
    cuDNN, the first whose function holds, else FlashAttention; config/attention.py AttentionConfig's defaults are
    use_trtllm_ragged_deepseek_prefill=False, disable_flashinfer_prefill=True, use_cudnn_prefill=False. No warning:
    nothing is deprecated yet (0.21 migrates the switches with warnings and refuses use_cudnn_prefill)."""
    s = _answer(role="mla_prefill", vllm="0.20", **MLA, **switches)
    assert s[0] == prefill and s[3] == ()


def test_020_flash_attention_prefill_runs_fa4_for_r1_dims_on_sm100():
    """fa_utils.get_flash_attn_version(head_size=qk_nope+qk_rope) (0.20.0): FA4 on SM 10.x keeps head size 192."""
    assert _answer(role="mla_prefill", vllm="0.20", **MLA)[:2] == ("FLASH_ATTN_PREFILL", "FA4")


def test_020_has_no_prefill_registry_and_no_cudnn_refusal():
    """0.20.0 has no v1/attention/backends/mla/prefill/ and no AttentionConfig.mla_prefill_backend (0.21 added both)."""
    only_newer_accepts("mla_prefill_backend", "FLASH_ATTN", "0.20", "0.21", **MLA)
    Config(vllm="0.20", use_cudnn_prefill=True, **MLA)
    with pytest.raises(ConfigError):
        Config(vllm="0.21", use_cudnn_prefill=True, **MLA)


def test_020_tree_attention_exists_tokenspeed_does_not():
    """v1/attention/backends/registry.py AttentionBackendEnum (0.20.0): TREE_ATTN (tree_attn.py, request only: in no
    priority list), no TOKENSPEED_MLA (0.21 swapped them)."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=128)
    assert _answer(vllm="0.20", backend="TREE_ATTN", **kw)[0] == "TREE_ATTN"
    assert _answer(vllm="0.20", **kw)[0] == "FLASH_ATTN"
    assert _answer(vllm="0.20", backend="TREE_ATTN", gpu="H100", dtype="float32", head_size=80)[1].endswith(
        "Reason: ['head_size not supported', 'dtype not supported']")
    only_newer_accepts("backend", "TOKENSPEED_MLA", "0.20", "0.21", **MLA)
    only_newer_accepts("backend", "TREE_ATTN", "0.21", "0.20", **kw)


def test_020_sm100_mla_list_has_no_tokenspeed():
    """platforms/cuda.py _get_backend_priorities (0.20.0), MLA on SM 10.x: FLASHINFER_MLA, CUTLASS_MLA, FLASH_ATTN_MLA,
    FLASHMLA, TRITON_MLA, then the sparse pair (0.21 put TOKENSPEED_MLA second)."""
    from attnsolve import explain
    names = [c.backend for c in explain(Config(vllm="0.20", kv_cache_dtype="fp8", **MLA)).candidates]
    assert "TOKENSPEED_MLA" not in names and names[:2] == ["FLASHINFER_MLA", "CUTLASS_MLA"]
    names21 = [c.backend for c in explain(Config(vllm="0.21", kv_cache_dtype="fp8", **MLA)).candidates]
    assert names21[:2] == ["FLASHINFER_MLA", "TOKENSPEED_MLA"]


def test_020_flashinfer_takes_no_nvfp4_cache():
    """v1/attention/backends/flashinfer.py FlashInferBackend.supported_kv_cache_dtypes (0.20.0): no nvfp4."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=128, kv_cache_dtype="nvfp4")
    assert candidate_reasons("FLASHINFER", vllm="0.20", **kw) == ("kv_cache_dtype not supported",)
    assert candidate_reasons("FLASHINFER", vllm="0.21", **kw) == ()


def test_020_flex_attention_has_no_batch_invariance_and_any_block_size():
    """v1/attention/backends/flex_attention.py FlexAttentionBackend (0.20.0) defines neither supports_batch_invariance
    nor get_supported_kernel_block_sizes: the base class's False and MultipleOf(1)."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=128)
    assert candidate_reasons("FLEX_ATTENTION", vllm="0.20", use_batch_invariant=True, **kw) == (
        "batch invariance not supported",)
    assert candidate_reasons("FLEX_ATTENTION", vllm="0.21", use_batch_invariant=True, **kw) == ()
    assert candidate_reasons("FLEX_ATTENTION", vllm="0.20", block_size=8, **kw) == ()
    assert candidate_reasons("FLEX_ATTENTION", vllm="0.21", block_size=8, **kw) == ("block_size not supported",)


def test_020_cpu_refuses_a_quantized_kv_cache_at_start_up():
    """platforms/cpu.py CpuPlatform.check_and_update_config (0.20.0): a quantized KV cache with chunked prefill or
    prefix caching on (vLLM's defaults) is refused before anything is selected; 0.21's CPU_ATTN runs fp8."""
    text = "Chunked-prefill and prefix-cache on the CPU backend is not compatible with FP8 KV cache."
    s = _answer(vllm="0.20", platform="cpu", dtype="bfloat16", head_size=128, kv_cache_dtype="fp8")
    assert text in (s[1] if s[0] == "ERR" else s[4])
    assert _answer(vllm="0.21", platform="cpu", dtype="bfloat16", head_size=128, kv_cache_dtype="fp8")[4] is None


def test_020_cpu_takes_any_block_size():
    """v1/attention/backends/cpu_attn.py CPUAttentionBackend (0.20.0) keeps the base class's MultipleOf(1) kernel
    block sizes: no "No common block size" for a block of 8 (0.21: MultipleOf(16))."""
    kw = dict(platform="cpu", dtype="bfloat16", head_size=128, block_size=8)
    assert _answer(vllm="0.20", **kw)[4] is None
    assert _answer(vllm="0.21", **kw)[4].startswith("No common block size for 8")


def test_020_rocm_sparse_mla_takes_no_fp8_cache():
    """v1/attention/backends/mla/rocm_aiter_mla_sparse.py ROCMAiterMLASparseBackend (0.20.0): KV auto, float16,
    bfloat16 (0.21 added fp8 and fp8_e4m3)."""
    kw = dict(platform="rocm", rocm_arch="gfx942", dtype="bfloat16", head_size=576, use_mla=True, use_sparse=True,
              kv_cache_dtype="fp8", block_size=1)
    assert "kv_cache_dtype not supported" in candidate_reasons("ROCM_AITER_MLA_SPARSE", vllm="0.20", **kw)
    assert candidate_reasons("ROCM_AITER_MLA_SPARSE", vllm="0.21", **kw) == ()


def test_020_head_512_on_sm90_runs_fa4_even_batch_invariant():
    """v1/attention/backends/flash_attn.py FlashAttentionImpl.__init__ (0.20.0) moves FA3 to FA4 for head_size > 256
    on SM 9.x after get_flash_attn_version, silently and past batch invariance; 0.21's get_flash_attn_version does it
    inside, with a log line, before the batch-invariance step (FA2)."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=512, use_batch_invariant=True)
    assert _answer(vllm="0.20", **kw)[:2] == ("FLASH_ATTN", "FA4")
    assert _answer(vllm="0.21", **kw)[:2] == ("FLASH_ATTN", "FA2")


@pytest.mark.parametrize("vllm", ["0.18", "0.19", "0.20"])
def test_020_sparse_mla_layer_has_no_prefill_path(vllm):
    """model_executor/layers/attention/mla_attention.py (0.20.0, and 0.18/0.19): the layer's decode backend first; every
    sparse one's impl (flashmla_sparse.py FlashMLASparseImpl, ...) is a v1/attention/backend.py SparseMLAAttentionImpl,
    forward_mqa only, so a DeepSeek-V3.2 layer has no prefill backend and the prefill switches are never read; a
    failing decode backend is the layer's failure. 0.21's MLAAttention asks its prefill registry for every layer."""
    v32 = dict(gpu="H100", dtype="bfloat16", use_mla=True, use_sparse=True, head_size=576, qk_nope_head_dim=128,
               qk_rope_head_dim=64, v_head_dim=128, index_topk=2048)
    assert _answer("mla_prefill", vllm=vllm, **v32)[:4] == ("NO_PREFILL", "top-k MQA path only", None, ())
    assert _answer("mla_prefill", vllm="0.21", **v32)[0] == "FLASH_ATTN_PREFILL"
    dense = dict(v32, use_sparse=False)
    assert _answer("mla_prefill", vllm=vllm, **dense)[0] == "FLASH_ATTN_PREFILL"
    failing = dict(v32, gpu="A100")  # no sparse MLA decode backend below SM 9.0: the layer fails there
    assert _answer(vllm=vllm, **failing)[0] == "ERR"
    assert _answer("mla_prefill", vllm=vllm, **failing)[0] == "ERR"
