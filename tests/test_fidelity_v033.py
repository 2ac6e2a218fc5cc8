"""vLLM 0.33.0's own answers for the classes where attnsolve's 0.33 rules or the differential harness
used to disagree with it (the 0.33 harness work of issue #14).

Each expected value was read from vLLM 0.33.0's source (the file is named in each test) and checked
against its selector run by the differential harness (`python -m tools.vllm_oracle --vllm 0.33.0`).
They guard the rules and the harness's inputs: a change that brings an old disagreement back fails here.
"""

from __future__ import annotations

import pytest

from attnsolve import Config, InvalidBackendError, NoValidBackendError, solve

INVALID = "Selected backend AttentionBackendEnum.{} is not valid for this configuration. Reason: {}"
FLASHMLA_C = ("vllm._flashmla_C is not available, likely was not compiled due to insufficient nvcc version or a "
              "supported arch was not in the list of target arches to compile for.")


def cuda(cc: str, **kw) -> Config:
    return Config(vllm="0.33", platform="cuda", compute_capability=cc, dtype=kw.pop("dtype", "bfloat16"), **kw)


def mla(cc: str, **kw) -> Config:
    return cuda(cc, use_mla=True, head_size=kw.pop("head_size", 576), **kw)


def first_line(err: Exception) -> str:
    return str(err).splitlines()[0]


# 1. vllm/v1/attention/backend.py: AttentionType is a (str, Enum) and every layer passes a member
#    (model_executor/layers/attention/attention.py: attn_type=AttentionType.DECODER by default;
#    encoder_only_attention.py: AttentionType.ENCODER_ONLY); Python 3.11 formats it as
#    "AttentionType.ENCODER_ONLY" in validate_configuration's f-string and in
#    v1/attention/selector.py AttentionSelectorConfig.__repr__.
def test_1_attention_type_prints_as_the_enum_member():
    with pytest.raises(InvalidBackendError) as info:
        solve(cuda("9.0", head_size=128, attn_type="encoder_only", backend="FLASHINFER"))
    assert first_line(info.value) == INVALID.format(
        "FLASHINFER", "['attention type AttentionType.ENCODER_ONLY not supported']")
    with pytest.raises(NoValidBackendError) as info:
        solve(mla("9.0", attn_type="encoder_only"))
    text = first_line(info.value)
    assert "attn_type=AttentionType.ENCODER_ONLY," in text
    assert "TRITON_MLA: [attention type AttentionType.ENCODER_ONLY not supported]" in text
    with pytest.raises(NoValidBackendError) as info:
        solve(mla("9.0", use_per_head_quant_scales=True))
    assert "attn_type=AttentionType.DECODER," in first_line(info.value)


# 2. vllm/platforms/cpu.py and vllm/platforms/xpu.py get_attn_backend_cls: the pick is returned without
#    validation and nothing is logged about its capabilities (attnsolve's 0.17-era advisory
#    "... (vLLM's cpu path does not validate; the kernel may fail at runtime)" is not vLLM's).
def test_2_cpu_and_xpu_log_no_advisories_for_unvalidated_picks():
    cpu = solve(Config(vllm="0.33", platform="cpu", dtype="bfloat16", head_size=100, has_sink=True))
    assert cpu.backend == "CPU_ATTN"
    assert not [w for w in cpu.warnings if "does not validate" in w]
    xpu = solve(Config(vllm="0.33", platform="xpu", dtype="bfloat16", head_size=128,
                       kv_cache_dtype="turboquant_k3v4_nc"))
    assert xpu.backend == "TURBOQUANT"
    assert not [w for w in xpu.warnings if "does not validate" in w]


# 3. vllm/v1/attention/ops/flashmla.py: vllm._flashmla_C is imported only on CUDA, so elsewhere
#    is_flashmla_{dense,sparse}_supported answer "vllm._flashmla_C is not available, ..." whatever the
#    device (FlashMLABackend.supports_combination, v1/attention/backends/mla/flashmla.py).
@pytest.mark.parametrize("arch,generic", [("gfx942", ["sparse not supported"]),
                                          ("gfx1100", ["sparse not supported", "compute capability not supported"])])
def test_3_flashmla_requested_off_cuda_reports_the_missing_extension(arch, generic):
    with pytest.raises(InvalidBackendError) as info:
        solve(Config(vllm="0.33", platform="rocm", rocm_arch=arch, dtype="bfloat16", head_size=576, use_mla=True,
                     use_sparse=True, backend="FLASHMLA"))
    assert info.value.reasons == {"FLASHMLA": (*generic, FLASHMLA_C)}
    with pytest.raises(InvalidBackendError) as info:  # on CUDA the extension exists: the device decides
        solve(mla("8.0", backend="FLASHMLA"))
    assert info.value.reasons["FLASHMLA"][-1] == "FlashMLA Dense is only supported on Hopper devices."


# 4. A serving vLLM always has a model config; a non-MLA model's has no MLA fields.
#    v1/attention/backends/mla/flashinfer_mla.py: getattr(hf_text_config, "qk_nope_head_dim", 1) -> "but got 1";
#    v1/attention/backends/mla/tokenspeed_mla.py: getattr(..., 0) for all three dims -> "got (0, 0, 0)".
def test_4_a_non_mla_model_reads_its_missing_mla_fields():
    with pytest.raises(InvalidBackendError) as info:
        solve(cuda("10.0", head_size=128, backend="FLASHINFER_MLA"))
    assert info.value.reasons["FLASHINFER_MLA"][-1] == \
        "FlashInfer MLA kernel requires qk_nope_head_dim in [64, 128, 192], but got 1"
    with pytest.raises(InvalidBackendError) as info:
        solve(cuda("10.0", head_size=128, kv_cache_dtype="fp8", backend="TOKENSPEED_MLA"))
    assert info.value.reasons["TOKENSPEED_MLA"][-1] == (
        "tokenspeed_mla requires DeepSeek R1 MLA dimensions (qk_nope_head_dim=128, qk_rope_head_dim=64, "
        "v_head_dim=128), got (0, 0, 0)")
    # an MLA layer whose model dimensions were not given: no model config, vLLM skips the model checks
    assert solve(mla("10.0", kv_cache_dtype="fp8", backend="TOKENSPEED_MLA")).backend == "TOKENSPEED_MLA"


# 5. vllm/utils/flashinfer.py has_flashinfer_sm90_nope_mla(): FlashInfer >= 0.6.18 (the wheel pins
#    flashinfer-python==0.7.2.post1) has the keyword-only ckv_scale_arr, so on a GPU box with FlashInfer
#    FLASHINFER_MLA_SPARSE_SM90 passes its first test and goes on to "requires sparse MLA"
#    (v1/attention/backends/mla/flashinfer_mla_sparse_sm90.py supports_combination).
def test_5_flashinfer_sm90_sparse_mla_is_available_with_flashinfer():
    assert solve(mla("9.0", use_sparse=True, backend="FLASHINFER_MLA_SPARSE_SM90")).backend == \
        "FLASHINFER_MLA_SPARSE_SM90"
    with pytest.raises(InvalidBackendError) as info:
        solve(mla("9.0", backend="FLASHINFER_MLA_SPARSE_SM90"))
    assert info.value.reasons["FLASHINFER_MLA_SPARSE_SM90"] == (
        "non-sparse not supported", "FLASHINFER_MLA_SPARSE_SM90 requires sparse MLA")
    # the model's kv_lora_rank (an MLA layer's head size minus qk_rope_head_dim) is checked
    with pytest.raises(InvalidBackendError) as info:
        solve(mla("9.0", use_sparse=True, head_size=128, qk_nope_head_dim=64, qk_rope_head_dim=64,
                  v_head_dim=64, kv_lora_rank=64, index_topk=2048, backend="FLASHINFER_MLA_SPARSE_SM90"))
    assert info.value.reasons["FLASHINFER_MLA_SPARSE_SM90"][-1] == "FLASHINFER_MLA_SPARSE_SM90 requires kv_lora_rank=512"


# 6. The vllm 0.33.0 wheel requires tokenspeed-mla==2.0.3 on Linux, so `import tokenspeed_mla` succeeds on a
#    GPU box; without the package (tokenspeed_mla_available=false) TOKENSPEED_MLA names the install hint
#    (v1/attention/backends/mla/tokenspeed_mla.py supports_combination).
def test_6_tokenspeed_mla_is_installed_unless_said_otherwise():
    assert solve(mla("10.0", kv_cache_dtype="fp8", backend="TOKENSPEED_MLA")).backend == "TOKENSPEED_MLA"
    with pytest.raises(InvalidBackendError) as info:
        solve(mla("10.0", kv_cache_dtype="fp8", backend="TOKENSPEED_MLA", tokenspeed_mla_available=False))
    assert first_line(info.value) == INVALID.format(
        "TOKENSPEED_MLA", "['tokenspeed_mla package is not installed. Install it with: `uv pip install tokenspeed-mla`']")


# 7. models/deepseek_v41/nvidia/flash_mla_mega_attn.py is_flashmla_mega_attn_supported: the wheel's
#    vllm/_flashmla_C.abi3.so registers fused_norm_rope_attn_rope_cast_decode and permute_q_b_proj, so on
#    SM 10.x the DeepSeek-V4.1 mega-attention backend is usable.
def test_7_flashmla_mega_attention_on_blackwell():
    assert solve(mla("10.0", head_size=512, use_sparse=True, backend="FLASHMLA_MEGA_ATTN_DSV41")).backend == \
        "FLASHMLA_MEGA_ATTN_DSV41"
    with pytest.raises(InvalidBackendError) as info:
        solve(mla("9.0", head_size=512, use_sparse=True, backend="FLASHMLA_MEGA_ATTN_DSV41"))
    assert info.value.reasons["FLASHMLA_MEGA_ATTN_DSV41"][-1] == "FlashMLA mega attention requires sm_10x GPUs."


# 8. The harness asks vLLM what a deployment asks it (tools/vllm_oracle/configs.py): only registry names
#    are requested (v1/attention/backends/registry.py has no FLASH_ATTN_MLA_XPU: the XPU class is requested
#    as FLASH_ATTN_MLA, platforms/xpu.py), and an MLA layer of a model with known dimensions carries its
#    kv_lora_rank = head_size - qk_rope_head_dim (model_executor/layers/attention/mla_attention.py).
def test_8_harness_configs_are_deployments():
    from tools.vllm_oracle.configs import Domains, generate

    D = Domains.from_rules("0.33")
    assert "FLASH_ATTN_MLA_XPU" not in D.backends and "FLASH_ATTN_MLA" in D.backends
    items = generate(D, n_random=300, sample=200, modes=("selector", "startup"))
    ranked = [i.cfg for i in items if i.cfg.get("use_mla") and i.cfg.get("qk_rope_head_dim") is not None]
    assert ranked and all(c["kv_lora_rank"] == c["head_size"] - c["qk_rope_head_dim"] > 0 for c in ranked)


# 9. vllm/vllm_flash_attn/flash_attn_interface.py _is_fa4_supported asks the device capability family (9.x,
#    10.x, 11.x), which ROCm derives from the gfx arch (platforms/rocm.py _capability_from_gcn_arch), so on
#    gfx9 / gfx11 FLASH_ATTN.supports_head_size accepts up to 512 (v1/attention/backends/flash_attn.py).
@pytest.mark.parametrize("arch,ok", [("gfx942", True), ("gfx1100", True), ("gfx1200", False)])
def test_9_flash_attn_head_512_on_rocm_follows_the_fa4_capability_family(arch, ok):
    config = Config(vllm="0.33", platform="rocm", rocm_arch=arch, dtype="bfloat16", head_size=512, backend="FLASH_ATTN")
    if ok:
        assert solve(config).backend == "FLASH_ATTN"
    else:
        with pytest.raises(InvalidBackendError) as info:
            solve(config)
        assert info.value.reasons == {"FLASH_ATTN": ("head_size not supported",)}


# 10. vllm/config/attention.py AttentionConfig.__post_init__: --attention-backend CUTLASS_MSA / TRITON_MSA only
#     sets minimax_m3_msa_decode_backend and clears the backend, before any platform code, so every platform
#     selects as if nothing was requested (platforms/xpu.py then falls back from FLASH_ATTN_MLA to TRITON_MLA).
def test_10_msa_aliases_drop_the_request_on_every_platform():
    xpu = solve(Config(vllm="0.33", platform="xpu", dtype="float32", head_size=576, use_mla=True, backend="TRITON_MSA"))
    assert xpu.backend == "TRITON_MLA"
    mm = solve(Config(vllm="0.33", platform="xpu", dtype="bfloat16", head_size=512, use_mm_prefix=True,
                      backend="CUTLASS_MSA"))
    assert mm.backend == "TRITON_FLASH_ATTN"
    assert solve(Config(vllm="0.33", platform="rocm", dtype="bfloat16", head_size=128,
                        backend="CUTLASS_MSA")).backend == "ROCM_ATTN"


# 11. vllm/platforms/rocm.py get_attn_backend_cls: an encoder-decoder model (ModelConfig.attn_type, the model's
#     kind) leaves ROCM_ATTN out of the list; encoder and cross-attention layers exist only in such models.
def test_11_rocm_encoder_layers_belong_to_encoder_decoder_models():
    config = Config(vllm="0.33", platform="rocm", rocm_arch="gfx950", dtype="float16", head_size=128,
                    attn_type="encoder", rocm_use_aiter=True, rocm_use_aiter_unified_attention=True)
    assert solve(config).backend == "ROCM_AITER_UNIFIED_ATTN"
    assert solve(config.replace(attn_type="decoder")).backend == "ROCM_ATTN"


def test_a_chosen_flash_attn_logs_its_metadata_builders_fa_version_lines_as_a_deployment_does():
    """vllm/v1/attention/backends/flash_attn.py FlashAttentionMetadataBuilder.__init__ calls get_flash_attn_version()
    without a head size (fa_utils.py logs "Cannot use FA version 4 is not supported due to ..." on SM 12.x) and with
    the head and block size (FA4's head-256 fallbacks: R-SWA, a block size not a multiple of 128) once FLASH_ATTN
    is chosen; the harness stops before that. The known difference excuses exactly those lines, only for a
    selected FLASH_ATTN (seed-424242 and seed-20261205 draws: the configs left)."""
    from tools.vllm_oracle.known import explain, load_known

    known = load_known()
    sel = solve(cuda("12.1", dtype="bfloat16", kv_cache_dtype="bfloat16", block_size=256, head_size=160,
                     num_heads=128, flash_attn_version=4))
    line = ("Cannot use FA version 4 is not supported due to FA4 is only supported on devices with compute "
            "capability 9.x, 10.x, or 11.x")
    assert sel.backend == "FLASH_ATTN" and line in sel.warnings
    sig = f"warnings vllm-only=[] attnsolve-only=['{line}']"
    hit = explain(known, "warnings", sig, "0.33.0", "cuda", "selector", "FLASH_ATTN")
    assert hit is not None and hit.id == "fa-version-log-of-chosen-flash-attn"
    assert explain(known, "warnings", sig, "0.33.0", "cuda", "selector", "FLASHINFER") is None  # a losing one's
    other = explain(known, "warnings", f"warnings vllm-only=['{line}'] attnsolve-only=[]", "0.33.0", "cuda",
                    "selector", "FLASH_ATTN")
    assert other is None or other.id != "fa-version-log-of-chosen-flash-attn"
    assert explain(known, "warnings", sig.replace("']", "', 'x']"), "0.33.0", "cuda", "selector", "FLASH_ATTN") is None
    assert explain(known, "warnings", sig, "0.17.0", "cuda", "selector", "FLASH_ATTN") is None
    # the head-256 page lines of the builder's call: an R-SWA layer on SM 10.3 with block 16
    rswa = solve(cuda("10.3", dtype="float16", kv_cache_dtype="auto", block_size=16, head_size=256,
                      attn_type="encoder", use_rswa=True))
    pages = [w for w in rswa.warnings if w.startswith("FA4's Blackwell head_size=256")]
    assert rswa.backend == "FLASH_ATTN" and any("block size of 16" in w for w in pages), rswa.warnings
    sig = "warnings vllm-only=[] attnsolve-only=[" + ", ".join(f'"{w}"' for w in pages) + "]"
    hit = explain(known, "warnings", sig, "0.33.0", "cuda", "selector", "FLASH_ATTN")
    assert hit is not None and hit.id == "fa-version-log-of-chosen-flash-attn"


def test_a_losing_flash_attns_sink_check_computes_only_the_no_head_version():
    """vllm/v1/attention/backends/flash_attn.py supports_sink -> fa_utils.py flash_attn_supports_sinks():
    get_flash_attn_version() without a head size, not the head-256 page call its variant also depends on
    (checks.toml variant_reads): FLASHINFER chosen on B200 with sinks and an nvfp4 KV cache logs only the sink
    fallback of FLASH_ATTN's supports_combination (seed-20261205 draw), not the page call's KV-dtype line."""
    sel = solve(cuda("10.0", kv_cache_dtype="nvfp4_ds_mla", head_size=256, has_sink=True, num_heads=64))
    assert sel.backend == "FLASHINFER"
    assert sel.warnings == ("FA4's Blackwell head_size=256 kernel does not support attention sinks, defaulting to "
                            "FA version 2.",), sel.warnings


def test_a_requested_cpu_backend_on_cuda_gets_its_own_preferred_block_size():
    """vllm/v1/attention/backends/mla/amx_mla.py AMXMLABackend has no get_preferred_block_size of its own:
    backend.py's default gives the smallest kernel size (MultipleOf(32) -> 32) where CUDA's start-up asks it
    for a requested AMX_MLA; 128 is the CPU platform's start-up rule (cpu.py update_block_size_for_backend),
    not the backend's (seed-31337 start-up draw)."""
    sel = solve(mla("11.0", kv_cache_dtype="float16", num_heads=128, backend="AMX_MLA", qk_nope_head_dim=128,
                    qk_rope_head_dim=64, v_head_dim=64, kv_lora_rank=512))
    assert (sel.backend, sel.preferred_block_size) == ("AMX_MLA", 32)
    cpu = solve(Config(vllm="0.33", platform="cpu", dtype="bfloat16", use_mla=True, cpu_amx=True))
    assert (cpu.backend, cpu.preferred_block_size) == ("AMX_MLA", 128)
    assert solve(Config(vllm="0.33", platform="cpu", dtype="bfloat16")).preferred_block_size == 128  # CPU_ATTN
