"""The vLLM 0.21 rule set (edits on 0.22's): what 0.22 changed, each fact naming the vLLM 0.21.0 file it comes
from and asked of 0.22 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

import pytest

from attnsolve import Config, ConfigError

from release_facts import answer as _answer, candidate_reasons

QUANTIZED = ("fp8_e5m2", "fp8_inc", "int8_per_token_head", "fp8_per_token_head", "nvfp4")


@pytest.mark.parametrize("kv", QUANTIZED)
def test_021_flash_attention_takes_every_quantized_kv_dtype_on_fa3(kv):
    """v1/attention/backends/flash_attn.py FlashAttentionBackend.supports_kv_cache_dtype (0.21.0): any quantized dtype
    (utils/torch_utils.py is_quantized_kv_cache) where fa_utils.flash_attn_supports_fp8() holds, i.e. FA3 on SM 9.x;
    0.22 asks only for fp8 / fp8_e4m3."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=128, kv_cache_dtype=kv)
    assert _answer(vllm="0.21", backend="FLASH_ATTN", **kw)[:2] == ("FLASH_ATTN", "FA3")
    assert candidate_reasons("FLASH_ATTN", vllm="0.22", **kw) == ("kv_cache_dtype not supported",)


def test_021_flash_attention_refuses_a_quantized_kv_dtype_off_fa3():
    """The same check off SM 9.x (FA2 on an A100): flash_attn_supports_fp8() is false, every quantized dtype is refused."""
    kw = dict(gpu="A100", dtype="bfloat16", head_size=128, kv_cache_dtype="fp8_e5m2")
    assert candidate_reasons("FLASH_ATTN", vllm="0.21", **kw) == ("kv_cache_dtype not supported",)


def test_021_flashinfer_has_no_head_512():
    """v1/attention/backends/flashinfer.py FlashInferBackend.get_supported_head_sizes (0.21.0): [64, 128, 256]."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=512)
    assert "head_size not supported" in candidate_reasons("FLASHINFER", vllm="0.21", **kw)
    assert "head_size not supported" not in candidate_reasons("FLASHINFER", vllm="0.22", **kw)


def test_021_flashmla_sparse_takes_head_512():
    """v1/attention/backends/mla/flashmla_sparse.py FlashMLASparseBackend.get_supported_head_sizes (0.21.0): [512, 576]
    (DeepSeek-V4's 512 beside V3.2's 576); 0.22 keeps 576."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=512, use_mla=True, use_sparse=True, kv_cache_dtype="fp8_ds_mla")
    assert _answer(vllm="0.21", backend="FLASHMLA_SPARSE", **kw)[0] == "FLASHMLA_SPARSE"
    assert candidate_reasons("FLASHMLA_SPARSE", vllm="0.22", **kw) == ("head_size not supported",)


@pytest.mark.parametrize("where", [dict(gpu="H100"), dict(platform="rocm", rocm_arch="gfx942"), dict(platform="cpu"),
                                   dict(platform="xpu")])
def test_021_deepseek_v4_builds_the_same_flashmla_backend_everywhere(where):
    """model_executor/layers/deepseek_v4_attention.py DeepseekV4MLAAttention.get_attn_backend (0.21.0) returns
    flashmla_sparse.py DeepseekV4FlashMLASparseBackend (V4_FLASHMLA_SPARSE) on every platform, ROCm included (0.22's
    ROCm has its own class); an fp8 cache becomes fp8_ds_mla, anything else is refused."""
    kw = dict(dtype="bfloat16", head_size=512, use_mla=True, use_sparse=True, model_arch="deepseek_v4", **where)
    assert _answer(vllm="0.21", kv_cache_dtype="fp8", **kw)[0] == "V4_FLASHMLA_SPARSE"
    assert _answer(vllm="0.21", **kw) == ("ERR", "DeepseekV4 only supports fp8 kv-cache format for now, got auto")
    if where.get("platform") == "rocm":
        assert _answer(vllm="0.22", kv_cache_dtype="fp8", **kw)[0] == "ROCM_V4_FLASHMLA_SPARSE"


MLA = dict(gpu="B200", dtype="bfloat16", use_mla=True, head_size=576, qk_nope_head_dim=128, qk_rope_head_dim=64,
           v_head_dim=128)
W_TRT = ("use_trtllm_ragged_deepseek_prefill is deprecated and will be removed in v0.22. Use "
         "--attention-config.mla_prefill_backend=TRTLLM_RAGGED instead.")
W_DIS = ("disable_flashinfer_prefill is deprecated and will be removed in v0.22. Use "
         "--attention-config.mla_prefill_backend=FLASH_ATTN instead.")


@pytest.mark.parametrize("switches, prefill, warnings", [
    (dict(use_trtllm_ragged_deepseek_prefill=True), "TRTLLM_RAGGED_PREFILL", (W_TRT,)),
    (dict(disable_flashinfer_prefill=True), "FLASH_ATTN_PREFILL", (W_DIS,)),
    (dict(use_trtllm_ragged_deepseek_prefill=True, disable_flashinfer_prefill=True), "TRTLLM_RAGGED_PREFILL",
     (W_TRT, W_DIS)),
    (dict(disable_flashinfer_prefill=True, mla_prefill_backend="FLASHINFER"), "FLASHINFER_PREFILL", ()),
])
def test_021_deprecated_prefill_switches_name_the_prefill_backend(switches, prefill, warnings):
    """config/attention.py AttentionConfig._migrate_deprecated_mla_prefill_flags (0.21.0): with no mla_prefill_backend
    given, use_trtllm_ragged_deepseek_prefill means TRTLLM_RAGGED and disable_flashinfer_prefill FLASH_ATTN (the first
    wins), each switch found on logging its warning; a given mla_prefill_backend wins silently."""
    s = _answer(role="mla_prefill", vllm="0.21", **MLA, **switches)
    assert s[0] == prefill
    assert s[3] == warnings
    assert _answer(vllm="0.21", **MLA, **switches)[3] == warnings  # logged while the configuration is built


def test_021_refuses_the_removed_cudnn_prefill_switch():
    """The same method raises for use_cudnn_prefill (0.21.0: "The cuDNN MLA prefill backend has been removed. ...")
    before it reads the other switches, on any platform; a given mla_prefill_backend skips it."""
    text = ("The cuDNN MLA prefill backend has been removed. Use --attention-config.mla_prefill_backend=FLASH_ATTN or "
            "FLASHINFER or TRTLLM_RAGGED instead.")
    for kw in (MLA, dict(MLA, use_trtllm_ragged_deepseek_prefill=True), dict(platform="cpu", dtype="bfloat16")):
        with pytest.raises(ConfigError) as err:
            Config(vllm="0.21", use_cudnn_prefill=True, **{k: v for k, v in kw.items()})
        assert err.value.field == "use_cudnn_prefill" and err.value.vllm_text == text
        assert str(err.value).startswith(text)
    assert _answer(role="mla_prefill", vllm="0.21", use_cudnn_prefill=True, mla_prefill_backend="FLASHINFER",
                   **MLA)[0] == "FLASHINFER_PREFILL"
    # a given name wins even where a deprecated switch names the same one (the method returns before any switch;
    # found by the harness's pairs of switches and requests)
    assert _answer(role="mla_prefill", vllm="0.21", use_cudnn_prefill=True, use_trtllm_ragged_deepseek_prefill=True,
                   mla_prefill_backend="TRTLLM_RAGGED", **MLA)[0] == "TRTLLM_RAGGED_PREFILL"


def test_021_sweep_tells_the_deprecated_switches_apart():
    """Regression (0.21): no backend check reads the deprecated switches, only mla_prefill_backend's defaults do, so the
    sweep's value classes kept one value of each and a sweep with them free listed no row with a switch on; each row
    must also be solve()'s answer (a row whose switch fills the prefill name counts it as not given)."""
    from attnsolve import ANY, sweep
    free = dict(use_trtllm_ragged_deepseek_prefill=ANY, disable_flashinfer_prefill=ANY, mla_prefill_backend=ANY,
                use_cudnn_prefill=ANY)
    s = sweep(Config(vllm="0.21", **MLA, **free), role="mla_prefill")
    rows = list(s)
    assert {a["use_trtllm_ragged_deepseek_prefill"] for a, _ in rows} == {False, True}
    assert {a["disable_flashinfer_prefill"] for a, _ in rows} == {False, True}
    assert any(a["use_cudnn_prefill"] for a, _ in rows)
    assert not any(a["use_cudnn_prefill"] and a["mla_prefill_backend"] is None for a, _ in rows)  # vLLM refuses those
    for a, b in rows:
        assert _answer(role="mla_prefill", vllm="0.21", **{**MLA, **a})[0] == b, a
