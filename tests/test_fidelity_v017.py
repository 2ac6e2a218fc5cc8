"""vLLM 0.17.0's own answers for the eight classes where attnsolve used to disagree (issue #12).

Each expected value was read from vLLM 0.17.0's source (the file is named in each test) and checked
against its selector run by the differential harness. They guard the rules: a rules change that
brings an old disagreement back fails here.
"""

from __future__ import annotations

import json

import pytest

from attnsolve import Config, InvalidBackendError, NoValidBackendError, solve
from attnsolve.cli import main

# vLLM 0.17's facts (each expectation was read from vLLM 0.17.0's source): 0.17 answers what names no release.
pytestmark = pytest.mark.vllm("0.17")

INVALID = "Selected backend AttentionBackendEnum.{} is not valid for this configuration. Reason: {}"


def cuda(cc: str, **kw) -> Config:
    return Config(platform="cuda", compute_capability=cc, dtype=kw.pop("dtype", "bfloat16"), vllm="0.17", **kw)


def mla(cc: str, **kw) -> Config:
    return cuda(cc, use_mla=True, head_size=576, **kw)


# 1. vllm/platforms/cuda.py, CudaPlatform.get_attn_backend_cls: `attn_selector_config._replace(block_size=None)`
#    before a requested backend is validated and before automatic selection.
def test_1_cuda_selection_drops_the_block_size():
    sel = solve(mla("9.0", kv_cache_dtype="fp8", block_size=16))
    assert sel.backend == "FLASHMLA"
    # ... the start-up hook (check_and_update_config) then forces FlashMLA's block size 64
    assert sel.preferred_block_size == 64 and sel.startup_error is None
    sel = solve(cuda("8.0", block_size=8, backend="TRITON_ATTN"))
    assert sel.backend == "TRITON_ATTN" and sel.rejected == ()
    # the block size matters at start-up: vllm/v1/worker/utils.py select_common_block_size
    assert sel.startup_error == "No common block size for 8. "


# 2. vllm/platforms/cuda.py: a requested backend runs its own validate_configuration only, whatever
#    platform it was written for (vllm/v1/attention/backend.py AttentionBackend.validate_configuration).
def test_2_requested_backend_of_another_platform_is_validated_by_its_own_checks():
    sel = solve(cuda("7.5", dtype="float16", backend="CPU_ATTN"))
    assert sel.backend == "CPU_ATTN" and sel.manual
    with pytest.raises(InvalidBackendError) as info:
        solve(cuda("9.0", backend="ROCM_AITER_MLA"))
    assert str(info.value).splitlines()[0] == INVALID.format(
        "ROCM_AITER_MLA", "['head_size not supported', 'non-MLA not supported']")
    with pytest.raises(InvalidBackendError) as info:  # the class keeps the base is_mla() = False
        solve(mla("9.0", backend="ROCM_AITER_MLA_SPARSE"))
    assert info.value.reasons == {"ROCM_AITER_MLA_SPARSE": ("MLA not supported",)}


# 3. vllm/v1/attention/backend.py: supported_kv_cache_dtypes = ["auto", "bfloat16"] (TreeAttentionBackend
#    does not override it).
def test_3_tree_attn_accepts_a_bfloat16_kv_cache():
    assert solve(cuda("9.0", kv_cache_dtype="bfloat16", backend="TREE_ATTN")).backend == "TREE_ATTN"


# 4. vllm/v1/attention/backends/mla/flashinfer_mla_sparse.py supports_combination returns its first
#    failing test: index_topk is asked only once qk_nope_head_dim is 128.
def test_4_flashinfer_mla_sparse_reports_its_first_failing_combination_check():
    with pytest.raises(InvalidBackendError) as info:
        solve(mla("10.0", use_sparse=True, qk_nope_head_dim=64, backend="FLASHINFER_MLA_SPARSE"))
    assert str(info.value).splitlines()[0] == INVALID.format(
        "FLASHINFER_MLA_SPARSE", "['FlashInfer MLA Sparse kernel requires qk_nope_head_dim == 128, but got 64']")
    with pytest.raises(InvalidBackendError) as info:
        solve(mla("10.0", use_sparse=True, qk_nope_head_dim=128, backend="FLASHINFER_MLA_SPARSE"))
    assert info.value.reasons["FLASHINFER_MLA_SPARSE"] == ("FlashInfer MLA Sparse requires model with index_topk config",)


# 5. vllm/v1/attention/backends/fa_utils.py get_flash_attn_version (0.17): FA4 on SM 10.x for head <= 128,
#    FA3 forced on SM >= 10 -> FA4 where FA4 runs (10.x, 11.x) else FA2, and no version at all where the
#    GPU cannot run the resolved one (vllm/vllm_flash_attn/flash_attn_interface.py is_fa_version_supported).
@pytest.mark.parametrize("cc, head, fav, variant", [
    ("10.0", 128, None, "FA4"), ("10.3", 64, None, "FA4"), ("10.0", 256, None, "FA2"),
    ("11.0", 128, 3, "FA4"), ("11.0", 256, 3, "FA2"), ("12.0", 128, 3, "FA2"), ("10.0", 128, 3, "FA4"),
    ("9.0", 128, None, "FA3"), ("9.0", 128, 4, "FA4"), ("8.0", 128, None, "FA2"), ("8.6", 128, 3, "NONE"),
    ("12.0", 128, 4, "NONE"), ("12.0", 256, 4, "FA2"), ("12.1", 192, 4, "FA2"),
])
def test_5_flash_attn_version(cc, head, fav, variant):
    sel = solve(cuda(cc, head_size=head, flash_attn_version=fav, backend="FLASH_ATTN"))
    assert sel.variant == variant
    # vllm/v1/attention/backends/flash_attn.py: the forward pass asserts a detected version
    assert (sel.startup_error == "FlashAttention version not detected.") == (variant == "NONE")
    if (cc, head) == ("10.0", 256):
        assert ("FA4 on Blackwell does not support head_size=256 due to TMEM capacity limits, "
                "defaulting to FA version 2.") in sel.warnings


@pytest.mark.parametrize("cc, dims, fav, variant", [
    ("10.0", (64, 64, 64), None, "FA4"), ("10.0", (128, 64, 128), None, "FA2"), ("10.0", None, None, "FA4"),
    ("7.5", (128, 64, 128), None, "NONE"), ("8.0", (128, 64, 128), 3, "NONE"), ("11.0", (64, 64, 64), 3, "FA4"),
    ("12.0", (128, 64, 64), 4, "FA2"), ("12.0", (64, 64, 64), 4, "NONE"),
])
def test_5_flash_attn_version_in_mla_prefill(cc, dims, fav, variant):
    """vllm/model_executor/layers/attention/mla_attention.py: get_flash_attn_version(head_size=qk_nope+qk_rope)."""
    kw = dict(zip(("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"), dims)) if dims else {}
    sel = solve(mla(cc, flash_attn_version=fav, flashinfer_available=False, **kw), role="mla_prefill")
    assert (sel.backend, sel.variant) == ("FLASH_ATTN_PREFILL", variant)


# 6. vllm/platforms/cuda.py CudaPlatform.check_and_update_config runs before selection: on SM 10.x a dense
#    MLA model with qk_nope_head_dim 128 gets FLASHINFER_MLA *requested*, and each MLA backend its block size.
def test_6_startup_hook_requests_flashinfer_mla_and_sets_the_block_size():
    with pytest.raises(NoValidBackendError) as info:  # the selector alone: no backend
        solve(mla("10.0", kv_cache_dtype="fp8_e5m2", qk_nope_head_dim=128))
    assert info.value.startup_error == INVALID.format("FLASHINFER_MLA", "['kv_cache_dtype not supported']")
    r1 = dict(qk_nope_head_dim=128)
    assert (solve(mla("10.0", **r1)).backend, solve(mla("10.0", **r1)).preferred_block_size) == ("FLASHINFER_MLA", 64)
    assert solve(mla("10.0", **r1, block_size=32)).preferred_block_size == 32
    assert solve(mla("10.0", qk_nope_head_dim=64)).preferred_block_size == 128  # CUTLASS_MLA
    assert solve(mla("9.0", **r1)).backend == "FLASH_ATTN_MLA"
    assert solve(mla("9.0", **r1)).preferred_block_size == 64  # FlashMLA is what the hook expects on Hopper
    sparse = solve(mla("10.0", use_sparse=True, num_heads=16, qk_nope_head_dim=128, index_topk=2048))
    assert (sparse.backend, sparse.preferred_block_size) == ("FLASHINFER_MLA_SPARSE", 64)
    assert solve(mla("8.0")).preferred_block_size == 16


# 7. vllm/platforms/rocm.py RocmPlatform.get_attn_backend_cls: `assert block_size == 1` for sparse MLA;
#    None (no block size given) fails as well.
def test_7_rocm_sparse_mla_needs_block_size_1():
    base = dict(platform="rocm", rocm_arch="gfx942", dtype="bfloat16", use_mla=True, use_sparse=True, head_size=576)
    with pytest.raises(NoValidBackendError) as info:
        solve(Config(**base))
    assert str(info.value).splitlines()[0] == "Sparse MLA backend on ROCm only supports block size 1 for now."
    assert solve(Config(**base, block_size=1)).backend == "ROCM_AITER_MLA_SPARSE"


# 8. vllm/platforms/cuda.py: the messages vLLM raises, byte for byte (reasons unquoted in the no-valid
#    message, after vllm/v1/attention/selector.py AttentionSelectorConfig.__repr__).
def test_8_message_text_is_vllms():
    with pytest.raises(NoValidBackendError) as info:
        solve(mla("8.0", kv_cache_dtype="fp8_e5m2", block_size=64))
    assert str(info.value).splitlines()[0] == (
        "No valid attention backend found for cuda with AttentionSelectorConfig(head_size=576, "
        "dtype=torch.bfloat16, kv_cache_dtype=fp8_e5m2, block_size=None, use_mla=True, has_sink=False, "
        "use_sparse=False, use_mm_prefix=False, use_per_head_quant_scales=False, attn_type=decoder). "
        "Reasons: {FLASH_ATTN_MLA: [kv_cache_dtype not supported, compute capability not supported, "
        "FlashAttention MLA not supported on this device], FLASHMLA: [kv_cache_dtype not supported, compute "
        "capability not supported, FlashMLA Dense is only supported on Hopper devices.], FLASHINFER_MLA: "
        "[kv_cache_dtype not supported, compute capability not supported], TRITON_MLA: [kv_cache_dtype not "
        "supported], FLASHMLA_SPARSE: [kv_cache_dtype not supported, non-sparse not supported, compute "
        "capability not supported]}.")
    with pytest.raises(InvalidBackendError) as info:
        solve(cuda("9.0", head_size=96, kv_cache_dtype="fp8", backend="FLASHINFER"))
    assert str(info.value).splitlines()[0] == INVALID.format("FLASHINFER", "['head_size not supported']")


# The start-up failure policy (docs/user-guide.md, "When vLLM would not start"): the selector's answer
# stays, Selection.startup_error carries vLLM's text, and the CLI prints it and exits 1.
@pytest.mark.parametrize("config, text", [
    # vllm/v1/attention/backends/flashinfer.py FlashInferMetadataBuilder: SM 10.x, head 256, block 16
    (cuda("10.0", head_size=256), "There is a bug in FlashInfer block_size 16 head size 256 support. "
                                  "Please avoid this combination by passing --block-size 32 or --block-size 64."),
    # vllm/v1/attention/backends/triton_attn.py _forward_encoder_attention
    (cuda("8.0", attn_type="encoder_only", kv_cache_dtype="fp8", backend="TRITON_ATTN"),
     "quantization is not supported for encoder attention"),
    # vllm/v1/worker/utils.py: ROCm TRITON_ATTN's kernels take multiples of 16
    (Config(platform="rocm", dtype="bfloat16", block_size=8, vllm="0.17"), "No common block size for 8. "),
])
def test_startup_failures_keep_the_selection_and_carry_vllms_text(config, text):
    try:
        got = solve(config).startup_error
    except (NoValidBackendError, InvalidBackendError) as err:
        got = err.startup_error
    assert got is not None and got.startswith(text)


def test_startup_policy_in_the_cli(capsys):
    assert main(["select", "--gpu", "B200", "--head-size", "256"]) == 1
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    assert out.startswith("FLASHINFER (TRTLLM)") and "refuses to start: There is a bug in FlashInfer" in flat
    assert main(["select", "--json", "--gpu", "B200", "--head-size", "256", "--block-size", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["result"]["startup_error"] is None
    assert main(["explain", "--gpu", "A100", "--flash-attn-version", "3"]) == 1
    assert "vLLM refuses to start: FlashAttention version not detected." in " ".join(capsys.readouterr().out.split())


# Classes of the 3,992-configuration run (docs/fidelity.md), each fixed in the rules or listed with its cause.

# vllm/v1/attention/backends/fa_utils.py get_flash_attn_version: the TMEM fall-back to FA2 for a head size
# above 128 applies to FA4 on every `device_capability.major >= 10`, SM 12.x included, before the support
# check; FA4 forced on SM 12.0 with DeepSeek-like dims (qk 128 + 64) therefore runs FA2 in the MLA prefill
# (vllm/model_executor/layers/attention/mla_attention.py, get_flash_attn_version(head_size=qk_head_dim)),
# whatever the cuDNN / FlashInfer switches say once those predicates are off.
def test_mla_prefill_forced_fa4_on_sm12_falls_back_to_fa2_for_wide_heads():
    sel = solve(mla("12.0", flash_attn_version=4, flashinfer_available=False, use_cudnn_prefill=True,
                    trtllm_available=False, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=64),
                role="mla_prefill")
    assert (sel.backend, sel.variant) == ("FLASH_ATTN_PREFILL", "FA2")
    assert sel.warnings == ("FA4 on Blackwell does not support head_size=192 due to TMEM capacity limits, "
                            "defaulting to FA version 2.",)
    # the decode layer (vllm/v1/attention/backends/flash_attn.py FlashAttentionImpl asks with its head size):
    # it runs FA2, so no "FlashAttention version not detected." at the first forward pass
    sel = solve(cuda("12.0", head_size=256, flash_attn_version=4, backend="FLASH_ATTN"))
    assert sel.variant == "FA2" and sel.startup_error is None


# vllm/v1/attention/backends/mla/flashinfer_mla.py and flashinfer_mla_sparse.py supports_combination:
# with a model config (vLLM always has one when serving) a model without qk_nope_head_dim (any non-MLA
# model) reads as 1; attnsolve's non-MLA layer is such a model.
@pytest.mark.parametrize("backend, reason", [
    ("FLASHINFER_MLA", "FlashInfer MLA kernel requires qk_nope_head_dim == 128, but got 1"),
    ("FLASHINFER_MLA_SPARSE", "FlashInfer MLA Sparse kernel requires qk_nope_head_dim == 128, but got 1"),
])
def test_flashinfer_mla_requested_for_a_non_mla_model(backend, reason):
    with pytest.raises(InvalidBackendError) as info:
        solve(cuda("7.0", dtype="float32", head_size=112, num_heads=8, flash_attn_version=3, backend=backend))
    got = info.value.reasons[backend]
    assert got[-1] == reason and "non-MLA not supported" in got
    # an MLA layer whose dimensions were not given is not told apart from vLLM without a model config
    assert reason not in str(_invalid(mla("10.0", backend=backend, kv_cache_dtype="fp8_e5m2")))
    # a non-MLA layer of a model that has the field (MLA disabled) reports only the layer's own checks
    assert reason not in str(_invalid(cuda("10.0", backend=backend, qk_nope_head_dim=128)))


def _invalid(config: Config) -> InvalidBackendError:
    with pytest.raises(InvalidBackendError) as info:
        solve(config)
    return info.value


# vllm/platforms/cuda.py CudaPlatform.check_if_supports_dtype (run by the GPU worker before any layer
# selects) refuses an explicit bfloat16 below SM 8.0: a start-up failure of the rules (dtype_explicit);
# vllm/v1/attention/backends/fa_utils.py get_flash_attn_version's log lines for a losing FLASH_ATTN are a
# difference outside selection, listed in tools/vllm_oracle/known_differences.toml with its cause.
def test_explicit_bfloat16_refusal_is_predicted_and_losing_flash_attn_logs_are_known():
    from tools.vllm_oracle.attnsolve_side import answer
    from tools.vllm_oracle.known import explain, load_known

    known = load_known()
    bf16 = ("Bfloat16 is only supported on GPUs with compute capability of at least 8.0. Your CUDA GPU has "
            "compute capability 7.5. You can use float16 instead by explicitly setting the `dtype` flag in CLI, "
            "for example: --dtype=half.")
    cfg = dict(platform="cuda", compute_capability="7.5", dtype="bfloat16", head_size=128)
    assert answer(cfg, "startup", "0.17.0") == {"ok": False, "kind": "startup", "error": bf16, "reasons": {},
                                                 "startup": True}
    assert answer(cfg, "selector", "0.17.0")["ok"] is True  # the selector itself does not check the dtype
    assert solve(Config(**cfg, dtype_explicit=True)).startup_error == bf16
    assert solve(Config(**cfg)).startup_error is None  # --dtype auto falls back to float16 there
    outcome = f"outcome vllm=ERR:ValueError attnsolve=TRITON_ATTN ({bf16[:70]})"
    assert explain(known, "outcome", outcome, "0.17.0", "cuda", "startup") is None  # no longer excused
    blackwell = ("warnings vllm-only=['Cannot use FA version 3 on Blackwell platform, defaulting to FA version 4 "
                 "if supported, otherwise FA2.'] attnsolve-only=[]")
    hit = explain(known, "warnings", blackwell, "0.17.0", "cuda", "selector")
    assert hit is not None and hit.id == "fa-version-logs-for-losing-flash-attn"
    # a warning attnsolve gives that vLLM does not log is never excused by it
    assert explain(known, "warnings", blackwell.replace("vllm-only", "x").replace("attnsolve-only=[]",
                   "attnsolve-only=['x']"), "0.17.0", "cuda", "selector") is None
