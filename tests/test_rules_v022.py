"""The vLLM 0.22 rule set (edits on 0.23's): what 0.23 changed, each fact naming the vLLM 0.22.0 file it comes
from and asked of 0.23 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

import pytest

from attnsolve import Config, ConfigError

from release_facts import answer as _answer, candidate_reasons, only_newer_accepts


@pytest.mark.parametrize("field, value", [("use_kv_connector", True), ("backend", "FLASHMLA_SPARSE_DSV4"),
                                          ("backend", "FLASHINFER_MLA_SPARSE_DSV4")])
def test_022_lacks_what_023_added(field, value):
    """v1/attention/selector.py AttentionSelectorConfig (0.22.0): no use_kv_connector; v1/attention/backends/registry.py:
    no DeepSeek-V4 names (the model code builds its backend itself)."""
    only_newer_accepts(field, value, "0.22", "0.23", gpu="H100", dtype="bfloat16", head_size=512, use_mla=True,
                       use_sparse=True)


def test_022_rocm_attention_serves_a_kv_connector_run():
    """platforms/rocm.py _get_backend_priorities(use_mla, use_sparse) (0.22.0) lists ROCM_ATTN always and no backend
    refuses a KV connector (0.23 leaves ROCM_ATTN out and refuses it with "KV connector not supported"): the release
    has no such input, so a default ROCm layer gets ROCM_ATTN."""
    kw = dict(platform="rocm", rocm_arch="gfx942", dtype="bfloat16", head_size=128)
    assert _answer(vllm="0.22", **kw)[0] == "ROCM_ATTN"
    assert _answer(vllm="0.23", use_kv_connector=True, **kw)[0] != "ROCM_ATTN"


def test_022_aiter_flash_attention_has_no_sinks():
    """v1/attention/backends/rocm_aiter_fa.py AiterFlashAttentionBackend (0.22.0) has no supports_sink (0.23's True)."""
    kw = dict(platform="rocm", rocm_arch="gfx942", rocm_use_aiter=True, dtype="bfloat16", head_size=128,
              has_sink=True, backend="ROCM_AITER_FA")
    assert _answer(vllm="0.22", **kw)[1].endswith("Reason: ['attention sinks not supported']")
    assert _answer(vllm="0.23", **kw)[0] == "ROCM_AITER_FA"


def test_022_aiter_unified_attention_warns_when_it_sets_the_block_size():
    """rocm_aiter_unified_attn.py RocmAiterUnifiedAttentionBackend.get_preferred_block_size (0.22.0) logs
    "[ROCM_AITER_UNIFIED_ATTN]: Setting kv cache block size to 64." when the platform asks it (no --block-size)."""
    kw = dict(platform="rocm", rocm_arch="gfx942", rocm_use_aiter=True, dtype="bfloat16", head_size=128,
              backend="ROCM_AITER_UNIFIED_ATTN")
    line = "[ROCM_AITER_UNIFIED_ATTN]: Setting kv cache block size to 64."
    assert line in _answer(vllm="0.22", **kw)[3]
    assert line not in _answer(vllm="0.23", **kw)[3]
    assert line not in _answer(vllm="0.22", block_size=16, **kw)[3]


@pytest.mark.parametrize("where, backend", [(dict(gpu="H100"), "V4_FLASHMLA_SPARSE"),
                                            (dict(platform="cpu"), "V4_FLASHMLA_SPARSE"),
                                            (dict(platform="xpu"), "V4_FLASHMLA_SPARSE"),
                                            (dict(platform="rocm", rocm_arch="gfx942"), "ROCM_V4_FLASHMLA_SPARSE")])
def test_022_deepseek_v4_builds_its_flashmla_backend_itself(where, backend):
    """models/deepseek_v4/attention.py DeepseekV4MLAAttention (0.22.0): _select_v4_sparse_impl() takes ROCm's AITER
    impl on ROCm and the FlashMLA one elsewhere, whatever is requested; its backend names itself V4_FLASHMLA_SPARSE
    (ROCM_V4_FLASHMLA_SPARSE), with no registry entry; an fp8 cache becomes fp8_ds_mla, anything else is refused in
    0.22's words."""
    kw = dict(dtype="bfloat16", head_size=512, use_mla=True, use_sparse=True, model_arch="deepseek_v4", **where)
    assert _answer(vllm="0.22", kv_cache_dtype="fp8", **kw)[0] == backend
    assert _answer(vllm="0.22", **kw) == ("ERR", "DeepseekV4 only supports fp8 kv-cache format for now, got auto")


def test_022_an_unknown_prefill_backend_lists_no_plugin_slot():
    """v1/attention/backends/mla/prefill/registry.py MLAPrefillBackendEnum (0.22.0) has no CUSTOM member (0.23's), so
    vLLM's refusal lists the four backends alone."""
    with pytest.raises(ConfigError) as err:
        Config(vllm="0.22", gpu="B200", dtype="bfloat16", use_mla=True, head_size=576, mla_prefill_backend="cudnn")
    assert str(err.value).startswith("Unknown MLA prefill backend: 'CUDNN'. Valid options are: FLASH_ATTN, FLASHINFER, "
                                     "TRTLLM_RAGGED, TOKENSPEED_MLA (field mla_prefill_backend")
    with pytest.raises(ConfigError) as err:
        Config(vllm="0.23", gpu="B200", dtype="bfloat16", use_mla=True, head_size=576, mla_prefill_backend="cudnn")
    assert "TOKENSPEED_MLA, CUSTOM (field" in str(err.value)


def test_022_no_valid_message_has_no_kv_connector():
    """v1/attention/selector.py AttentionSelectorConfig.__repr__ (0.22.0) ends at use_batch_invariant."""
    kw = dict(gpu="A100", dtype="float32", head_size=7, use_mla=True)
    assert _answer(vllm="0.22", **kw)[1].split(". Reasons")[0].endswith("use_batch_invariant=False)")
    assert _answer(vllm="0.23", **kw)[1].split(". Reasons")[0].endswith("use_kv_connector=False)")
    assert candidate_reasons("TRITON_MLA", vllm="0.22", **kw) == ("dtype not supported",)


def test_022_flashinfer_takes_nvfp4_off_blackwell():
    """flashinfer.py FlashInferMetadataBuilder.__init__ (0.22.0) has no sm100f refusal of an NVFP4 cache (0.23's)."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=128, kv_cache_dtype="nvfp4", backend="FLASHINFER")
    assert _answer(vllm="0.22", **kw)[4] is None
    assert _answer(vllm="0.23", **kw)[4].startswith("--kv-cache-dtype nvfp4 requires sm100f")
