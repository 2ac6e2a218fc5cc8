"""The vLLM 0.16 rule set (edits on 0.17's): what 0.17 changed, each fact naming the vLLM 0.16.0 file it comes
from and asked of 0.17 too, so an edit that loses the difference fails here.
"""

from __future__ import annotations

import pytest

from attnsolve import Config, ConfigError, solve
from attnsolve.rules import rules_for

from release_facts import answer as _answer

SPARSE_B200 = dict(gpu="B200", dtype="bfloat16", use_mla=True, use_sparse=True, head_size=576, qk_nope_head_dim=128,
                   qk_rope_head_dim=64, v_head_dim=128, index_topk=2048, num_heads=16)


# v1/attention/backends/registry.py (0.16.0): no FLASHINFER_MLA_SPARSE member; platforms/cuda.py
# _get_backend_priorities(use_mla, device_capability) takes no num_heads: the SM 10.x MLA list ends with
# FLASHMLA_SPARSE alone (0.17: FLASHINFER_MLA_SPARSE first for <= 16 heads per GPU).
def test_sparse_mla_on_blackwell_is_flashmla_sparse_and_flashinfer_sparse_does_not_exist() -> None:
    assert _answer(vllm="0.16", **SPARSE_B200)[0] == "FLASHMLA_SPARSE"
    assert _answer(vllm="0.17", **SPARSE_B200)[0] == "FLASHINFER_MLA_SPARSE"
    assert "FLASHINFER_MLA_SPARSE" not in rules_for("0.16").backends
    with pytest.raises(ConfigError) as e:
        Config(vllm="0.16", backend="FLASHINFER_MLA_SPARSE", **SPARSE_B200)
    assert "Unknown attention backend: 'FLASHINFER_MLA_SPARSE'" in str(e.value)


# config/attention.py (0.16.0): flash_attn_version: Literal[2, 3] | None (0.17 added 4)
def test_flash_attn_version_4_does_not_exist() -> None:
    with pytest.raises(ConfigError) as e:
        Config(vllm="0.16", gpu="B200", dtype="bfloat16", flash_attn_version=4)
    assert e.value.field == "flash_attn_version"
    assert Config(vllm="0.17", gpu="B200", dtype="bfloat16", flash_attn_version=4).flash_attn_version == 4


# v1/attention/backends/fa_utils.py get_flash_attn_version (0.16.0): FA3 on SM 9.x, FA2 elsewhere, never FA4; a
# forced FA3 on SM 10.x becomes FA2 with "defaulting to FA version 2."
@pytest.mark.parametrize("gpu, fa, want16, want17", [
    ("H100", None, "FA3", "FA3"), ("A100", None, "FA2", "FA2"), ("B200", None, "FA2", "FA4"),
])
def test_flash_attention_versions(gpu: str, fa: int | None, want16: str, want17: str) -> None:
    kw = dict(gpu=gpu, dtype="bfloat16", head_size=128, backend="FLASH_ATTN")
    assert _answer(vllm="0.16", **kw)[1] == want16
    assert _answer(vllm="0.17", **kw)[1] == want17


def test_forced_fa3_on_blackwell_falls_back_to_fa2_with_0_16s_line() -> None:
    got = _answer(vllm="0.16", gpu="B200", dtype="bfloat16", head_size=128, backend="FLASH_ATTN", flash_attn_version=3)
    assert got[1] == "FA2"
    assert "Cannot use FA version 3 on Blackwell platform, defaulting to FA version 2." in got[3]


# v1/attention/backends/flash_attn.py FlashAttentionImpl.__init__ (0.16.0) asks get_flash_attn_version() without
# requires_alibi: an ALiBi layer on Hopper keeps FA3, whose kernel asserts (0.17: FA2 with a log line).
def test_alibi_on_hopper_keeps_fa3_and_fails() -> None:
    got = _answer(vllm="0.16", gpu="H100", dtype="bfloat16", head_size=128, use_alibi=True)
    assert got[:2] == ("FLASH_ATTN", "FA3") and got[4] == "Alibi is not supported in FA3"
    assert _answer(vllm="0.17", gpu="H100", dtype="bfloat16", head_size=128, use_alibi=True)[1] == "FA2"


# v1/attention/backends/rocm_attn.py RocmAttentionBackend (0.16.0): head sizes without 80, decoder only
def test_rocm_attn_has_no_head_80_and_no_encoder() -> None:
    req = dict(gpu="H100", dtype="bfloat16", backend="ROCM_ATTN")
    assert _answer(vllm="0.16", head_size=80, **req) == ("ERR", "Selected backend AttentionBackendEnum.ROCM_ATTN is not "
                                                          "valid for this configuration. Reason: ['head_size not supported']")
    assert _answer(vllm="0.17", head_size=80, **req)[0] == "ROCM_ATTN"
    assert _answer(vllm="0.16", head_size=128, attn_type="encoder_only", **req)[0] == "ERR"


# v1/attention/selector.py AttentionSelectorConfig (0.16.0) has no use_per_head_quant_scales field: the error's repr
def test_no_valid_message_has_no_per_head_quant_field() -> None:
    got = _answer(vllm="0.16", gpu="A100", dtype="bfloat16", head_size=128, kv_cache_dtype="fp8_ds_mla")
    assert got[0] == "ERR" and "use_per_head_quant_scales" not in got[1] and "attn_type=decoder)" in got[1]
    assert "use_per_head_quant_scales=False" in _answer(vllm="0.17", gpu="A100", dtype="bfloat16", head_size=128,
                                                         kv_cache_dtype="fp8_ds_mla")[1]


def test_0_16_is_answered_and_is_the_oldest_release() -> None:
    from attnsolve import vllm_versions
    assert vllm_versions()[0] == "0.16"
    assert Config(vllm="0.16.0", gpu="H100", dtype="bfloat16").vllm == "0.16"


# v1/attention/backends/rocm_attn.py RocmAttentionImpl.__init__ (0.16.0 and 0.17.0; gone in 0.18.0) validates the head
# size when the layer is built: ROCm's decision tree picks ROCM_ATTN without validating, so start-up refuses.
@pytest.mark.parametrize("vllm, listed", [
    ("0.16", "[32, 64, 96, 128, 160, 192, 224, 256]"), ("0.17", "[32, 64, 80, 96, 128, 160, 192, 224, 256]"),
])
def test_rocm_attn_refuses_an_unsupported_head_size_at_start_up(vllm: str, listed: str) -> None:
    kw = dict(gpu="MI300X", dtype="bfloat16", head_size=72, use_prefill_decode_attention=True)
    got = _answer(vllm=vllm, **kw)
    assert got[0] == "ROCM_ATTN" and got[4] == (
        f"Head size 72 is not supported by RocmAttention. Supported head sizes are: {listed}. Set "
        "--attention-backend=FLEX_ATTENTION to use FlexAttention backend which supports all head sizes.")
    assert _answer(vllm="0.18", **kw)[4] is None
    assert _answer(vllm=vllm, **dict(kw, head_size=128))[4] is None


@pytest.mark.parametrize("vllm", ["0.16", "0.17"])
def test_the_layer_refuses_the_head_size_before_the_block_size_step(vllm: str) -> None:
    """vLLM builds the model (RocmAttentionImpl.__init__ refuses head 72) before it lays out the KV cache ("No common
    block size for 1."): where both refusals apply, the layer's comes first (`layer_failures`; harness: ROCm start-up
    mode, vLLM 0.16.0 and 0.17.0)."""
    rocm = dict(vllm=vllm, platform="rocm", rocm_arch="gfx942", dtype="bfloat16", use_prefill_decode_attention=True)
    both = solve(Config(**rocm, head_size=72, block_size=1))
    assert both.backend == "ROCM_ATTN" and both.startup_error.startswith("Head size 72 is not supported by RocmAttention")
    assert solve(Config(**rocm, head_size=128, block_size=1)).startup_error == "No common block size for 1. "
    assert solve(Config(**rocm, head_size=128, block_size=16)).startup_error is None


@pytest.mark.parametrize("vllm", ["0.16", "0.17", "0.20", "0.34"])
def test_tpu_is_refused_as_not_modelled_not_as_absent(vllm: str) -> None:
    """vllm/platforms/tpu.py only imports the external tpu_inference package (every release): the refusal says why
    attnsolve does not model it (`[ruleset] unmodelled_platforms`, inherited by edit folders), not just the accepted
    platforms; any other unknown name keeps the plain refusal with its closest match."""
    with pytest.raises(ConfigError) as info:
        Config(vllm=vllm, platform="TPU", dtype="bfloat16")
    e = info.value
    assert e.field == "platform" and tuple(e.accepted) == ("cuda", "rocm", "cpu", "xpu")
    assert f"vLLM {vllm} runs on tpu too, but attnsolve does not model that platform" in str(e)
    assert "tpu_inference" in str(e)
    with pytest.raises(ConfigError) as typo:
        Config(vllm=vllm, platform="rocn", dtype="bfloat16")
    assert "runs on" not in str(typo.value) and typo.value.suggestion == "rocm"


def test_a_malformed_unmodelled_platforms_table_is_a_rules_error(tmp_path) -> None:
    import shutil
    from pathlib import Path
    from attnsolve import RulesError
    from attnsolve.rules import load_rules
    d = tmp_path / "rules"
    shutil.copytree(Path(__file__).resolve().parents[1] / "attnsolve" / "rules" / "vllm-0.17", d)
    text = (d / "ruleset.toml").read_text()
    bad = "\n".join('unmodelled_platforms = { tpu = 3 }' if x.startswith("unmodelled_platforms") else x
                    for x in text.splitlines())
    assert bad != text
    (d / "ruleset.toml").write_text(bad + "\n")
    with pytest.raises(RulesError, match="unmodelled_platforms"):
        load_rules(d)
