"""The vLLM 0.18 rule set (edits on 0.19's): what 0.19 changed, each fact naming the vLLM 0.18.0 file it comes
from and asked of 0.19 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

import pytest

from attnsolve import Config
from attnsolve.config.env_reading import read_variable
from attnsolve.rules import rules_for

from release_facts import answer as _answer, candidate_reasons

ROCM = dict(platform="rocm", rocm_arch="gfx942", dtype="bfloat16", head_size=128)
SPARSE_B200 = dict(gpu="B200", dtype="bfloat16", use_mla=True, use_sparse=True, head_size=576, qk_nope_head_dim=128,
                   qk_rope_head_dim=64, v_head_dim=128, index_topk=2048)


# platforms/rocm.py _get_backend_priorities (0.18.0): the standard list from VLLM_ROCM_USE_AITER (A),
# VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION (U), VLLM_ROCM_USE_AITER_MHA (M, default on) and the AttentionConfig flag
# use_prefill_decode_attention (P); TRITON_ATTN last. (A, U, M, P) -> the list's first valid backend on an MI300X.
@pytest.mark.parametrize("aiter, unified, mha, pda, want", [
    (False, False, True, False, "TRITON_ATTN"),
    (False, True, True, True, "ROCM_ATTN"),
    (True, False, True, False, "ROCM_AITER_FA"),
    (True, False, False, False, "TRITON_ATTN"),
    (True, False, False, True, "ROCM_ATTN"),
    (True, True, True, True, "ROCM_AITER_UNIFIED_ATTN"),
    (True, True, False, False, "ROCM_AITER_UNIFIED_ATTN"),
])
def test_018_rocm_list_comes_from_the_environment(aiter, unified, mha, pda, want):
    """0.19 lists ROCM_ATTN first whatever the switches (AITER MHA and unified follow when enabled/installed)."""
    kw = dict(ROCM, rocm_use_aiter=aiter, rocm_use_aiter_mha=mha, use_prefill_decode_attention=pda)
    assert _answer(vllm="0.18", rocm_use_aiter_unified_attention=unified, **kw)[0] == want
    assert _answer(vllm="0.19", **kw)[0] == "ROCM_ATTN"


def test_018_rocm_aiter_fa_listed_off_mi300_is_refused_by_its_own_check():
    """rocm_aiter_fa.py AiterFlashAttentionBackend.supports_compute_capability (0.18.0): MI3xx only; listed on an MI250
    by the environment alone, it is validated and refused, and TRITON_ATTN answers."""
    s = _answer(vllm="0.18", **dict(ROCM, rocm_arch="gfx90a"), rocm_use_aiter=True)
    assert s[0] == "TRITON_ATTN"
    assert "compute capability not supported" in candidate_reasons(
        "ROCM_AITER_FA", vllm="0.18", **dict(ROCM, rocm_arch="gfx90a"), rocm_use_aiter=True)


def test_018_rocm_selection_ignores_the_block_size():
    """platforms/rocm.py get_attn_backend_cls (0.18.0) replaces the block size by None first, for a request too: no
    "block_size not supported", and vLLM's message shows block_size=None; the block size fails at start-up only
    (v1/worker/utils.py). 0.19 validates it."""
    kw = dict(ROCM, block_size=8, backend="ROCM_ATTN")
    got = _answer(vllm="0.18", **kw)
    assert got[0] == "ROCM_ATTN" and got[4] == "No common block size for 8. "
    assert _answer(vllm="0.19", **kw) == ("ERR", "Selected backend AttentionBackendEnum.ROCM_ATTN is not valid for this "
                                                 "configuration. Reason: ['block_size not supported']")
    text = _answer(vllm="0.18", **dict(ROCM, head_size=20, block_size=16))[1]
    assert "block_size=None, use_mla=False" in text and "block_size=16" not in text


@pytest.mark.parametrize("aiter, unified, backend, want", [
    (True, True, None, 64), (True, True, "TRITON_ATTN", 64), (False, True, "ROCM_AITER_UNIFIED_ATTN", 16),
    (False, False, None, 16),
])
def test_018_rocm_start_up_block_size_from_the_environment(aiter, unified, backend, want):
    """platforms/rocm.py RocmPlatform.check_and_update_config (0.18.0): 64 when VLLM_ROCM_USE_AITER and
    VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION are on, with its warning, whatever the backend; else 16
    (update_block_size_for_backend does nothing). 0.19: ROCM_AITER_UNIFIED_ATTN's preferred size (64), else 16."""
    kw = dict(ROCM, rocm_use_aiter=aiter, backend=backend)
    got = _answer(vllm="0.18", rocm_use_aiter_unified_attention=unified, **kw)
    assert got[2] == want
    assert ("[ROCM_AITER_UNIFIED_ATTN]: Setting kv cache block size to 64." in got[3]) == (want == 64)
    if backend == "TRITON_ATTN":
        assert _answer(vllm="0.19", **kw)[2] == 16


def test_018_rocm_aiter_unified_has_no_preferred_block_size():
    """rocm_aiter_unified_attn.py (0.18.0) has no get_preferred_block_size: requested on CUDA (whose start-up asks the
    chosen backend), it runs with 16 and no warning; 0.19's returns 64 and logs it."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=128, backend="ROCM_AITER_UNIFIED_ATTN")
    assert _answer(vllm="0.18", **kw)[2:4] == (16, ())
    assert _answer(vllm="0.19", **kw)[2:4] == (64, ("[ROCM_AITER_UNIFIED_ATTN]: Setting kv cache block size to 64.",))


def test_018_rocm_logs():
    """platforms/rocm.py get_attn_backend_cls (0.18.0): a request logs "Using AttentionBackendEnum.X backend.", the
    automatic choice "Using X attention backend out of potential backends: [...]." (no "Found incompatible")."""
    assert _answer(vllm="0.18", **ROCM, backend="TRITON_ATTN")[5] == (
        "Using AttentionBackendEnum.TRITON_ATTN backend.",)
    assert _answer(vllm="0.18", **ROCM, rocm_use_aiter=True, use_prefill_decode_attention=True)[5] == (
        "Using ROCM_AITER_FA attention backend out of potential backends: ['ROCM_AITER_FA', 'ROCM_ATTN', "
        "'TRITON_ATTN'].",)
    assert _answer(vllm="0.19", **ROCM, backend="TRITON_ATTN")[5] == (
        "Using TRITON_ATTN backend (selected via --attention-backend).",)


def test_018_rocm_attention_takes_sinks_and_cross_attention():
    """rocm_attn.py RocmAttentionBackend (0.18.0): supports_sink True, every attention type; rocm_aiter_fa.py
    AiterFlashAttentionBackend: decoder and encoder-decoder. 0.19 refuses sinks and cross-attention there."""
    sink_cross = dict(ROCM, has_sink=True, attn_type="encoder_decoder", backend="ROCM_ATTN")
    assert _answer(vllm="0.18", **sink_cross)[0] == "ROCM_ATTN"
    assert _answer(vllm="0.19", **sink_cross) == (
        "ERR", "Selected backend AttentionBackendEnum.ROCM_ATTN is not valid for this configuration. Reason: "
               "['attention sinks not supported', 'attention type AttentionType.ENCODER_DECODER not supported']")
    cross = dict(ROCM, attn_type="encoder_decoder", rocm_use_aiter=True)
    assert _answer(vllm="0.18", **cross)[0] == "ROCM_AITER_FA"
    assert _answer(vllm="0.19", **cross)[0] != "ROCM_AITER_FA"


def test_018_aiter_mla_on_gfx90a():
    """_aiter_ops.py is_aiter_found_and_supported (0.18.0): any gfx9 GPU (on_gfx9), so an MI250 with
    VLLM_ROCM_USE_AITER=1 lists ROCM_AITER_MLA first for an MLA model (0.19: MI3xx only -> TRITON_MLA)."""
    kw = dict(platform="rocm", rocm_arch="gfx90a", dtype="bfloat16", use_mla=True, head_size=576, rocm_use_aiter=True)
    assert _answer(vllm="0.18", **kw)[0] == "ROCM_AITER_MLA"
    assert _answer(vllm="0.19", **kw)[0] == "TRITON_MLA"


@pytest.mark.parametrize("heads, want18", [(8, "FLASHINFER_MLA_SPARSE"), (128, "FLASHMLA_SPARSE")])
def test_018_sm100_sparse_order_by_heads_only(heads, want18):
    """platforms/cuda.py _get_backend_priorities (0.18.0) has no KV-dtype parameter: with an fp8 cache on a B200 the
    sparse tail is ordered by heads per GPU (<= 16: FlashInfer first); 0.19 puts FlashInfer first for any fp8 cache."""
    kw = dict(SPARSE_B200, kv_cache_dtype="fp8", num_heads=heads)
    assert _answer(vllm="0.18", **kw)[0] == want18
    assert _answer(vllm="0.19", **kw)[0] == "FLASHINFER_MLA_SPARSE"


def test_018_flashinfer_mla_qk_nope_texts():
    """mla/flashinfer_mla.py and mla/flashinfer_mla_sparse.py supports_combination (0.18.0): qk_nope_head_dim in
    [64, 128] for FlashInfer MLA and == 128 for its sparse twin (0.19: 192 too, texts "in [...]")."""
    kw = dict(gpu="B200", dtype="bfloat16", use_mla=True, head_size=576, qk_nope_head_dim=192, qk_rope_head_dim=64,
              v_head_dim=128)
    assert candidate_reasons("FLASHINFER_MLA", vllm="0.18", **kw) == (
        "FlashInfer MLA kernel requires qk_nope_head_dim in [64, 128], but got 192",)
    assert candidate_reasons("FLASHINFER_MLA", vllm="0.19", **kw) == ()
    sparse = dict(SPARSE_B200, qk_nope_head_dim=192)
    assert candidate_reasons("FLASHINFER_MLA_SPARSE", vllm="0.18", **sparse) == (
        "FlashInfer MLA Sparse kernel requires qk_nope_head_dim == 128, but got 192",)
    assert candidate_reasons("FLASHINFER_MLA_SPARSE", vllm="0.19", **sparse) == ()


def test_018_xpu_mla_prefill_has_no_flash_attention():
    """model_executor/layers/attention/mla_attention.py (0.18.0) imports flash_attn_varlen_func from vllm_flash_attn
    only (no XPU fallback: 0.19 added xpu_ops'), so MLACommonImpl.__init__ raises on XPU; the MLA branch of
    platforms/xpu.py check_and_update_config logs its INFO (read from the source, not run)."""
    kw = dict(platform="xpu", dtype="bfloat16", use_mla=True, head_size=576, qk_nope_head_dim=128,
              qk_rope_head_dim=64, v_head_dim=128)
    assert _answer("mla_prefill", vllm="0.18", **kw) == (
        "ERR", "MLA attention requires FlashAttention but it is not available. Please install flash_attn or use "
               "--attention-backend ROCM_AITER_MLA.")
    assert _answer("mla_prefill", vllm="0.19", **kw)[0] == "FLASH_ATTN_PREFILL"
    info = "MLA is enabled on a non-GPU platform; forcing chunked prefill and prefix caching to be disabled."
    assert any(w[0] == info for w in rules_for("0.18").lists_for("xpu")[0].startup_warnings)
    assert not any(w[0] == info for w in rules_for("0.19").lists_for("xpu")[0].startup_warnings)


@pytest.mark.parametrize("text, on", [("1", True), ("0", False), ("2", True), ("true", False), ("yes", False)])
def test_018_batch_invariant_text_never_stops_start_up(text, on):
    """model_executor/layers/batch_invariant.py _read_vllm_batch_invariant (0.18.0; not in envs.py): int(text) != 0,
    and a text int() refuses is off; 0.19's envs.py reads bool(int(text)) and stops at start-up on "true"."""
    decl = rules_for("0.18").fields["use_batch_invariant"]
    assert read_variable(decl.env, text, "use_batch_invariant", decl.env_reads).value is on
    assert rules_for("0.19").fields["use_batch_invariant"].env_reads == "int"


def test_018_is_its_own_release():
    assert Config(vllm="0.18", gpu="MI300X", dtype="bfloat16", head_size=128).vllm == "0.18"
    assert Config(vllm="v0.18.0", gpu="H100", dtype="bfloat16", head_size=128).vllm == "0.18"
