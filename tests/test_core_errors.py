"""Error classes and messages: vLLM's wording first, structured data on the exception.

ConfigError names the field, the bad value, the accepted values and the closest match;
NoValidBackendError lists every candidate with its reasons; InvalidBackendError names the backend.
"""

from __future__ import annotations

import re

import pytest

from attnsolve import Config, ConfigError, InvalidBackendError, NoValidBackendError, solve
from attnsolve.errors import SelectionError
from attnsolve.rules import rules_for

# vLLM 0.17's facts (vLLM 0.17's error and reason wording): 0.17 answers what names no release.
pytestmark = pytest.mark.vllm("0.17")

RULES = rules_for("0.17")
BASE = dict(platform="cuda", compute_capability="9.0", dtype="bfloat16")


def bad(**kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Config(**{**BASE, **kw})
    return info.value


def test_error_classes_are_value_errors():
    for cls in (ConfigError, NoValidBackendError, InvalidBackendError, SelectionError):
        assert issubclass(cls, ValueError)
    assert issubclass(NoValidBackendError, SelectionError) and issubclass(InvalidBackendError, SelectionError)


# -- NoValidBackendError ---------------------------------------------------------------------------

def test_no_valid_backend_lists_every_candidate_with_reasons():
    cfg = Config(**{**BASE, "compute_capability": "9.0"}, use_mla=True, use_sparse=True, kv_cache_dtype="fp8")
    with pytest.raises(NoValidBackendError) as info:
        solve(cfg)
    err = info.value
    msg = str(err)
    assert msg.startswith("No valid attention backend found")
    expected = ["FLASH_ATTN_MLA", "FLASHMLA", "FLASHINFER_MLA", "TRITON_MLA", "FLASHMLA_SPARSE"]
    assert list(err.reasons) == expected  # priority order, every candidate
    for name, reasons in err.reasons.items():
        assert reasons, name
        assert all(isinstance(r, str) for r in reasons)
        assert f"{name}: [{', '.join(reasons)}]" in msg  # vLLM's unquoted "{NAME: [r1, r2], ...}" rendering
    assert err.reasons["FLASHMLA_SPARSE"] == ("kv_cache_dtype not supported",)


def test_no_valid_backend_standard_attention():
    # Sinks on SM 8.0 need TRITON_ATTN, which refuses head size 16; FLEX_ATTENTION has no sinks.
    cfg = Config(platform="cuda", compute_capability="8.0", dtype="float16", head_size=16, has_sink=True)
    with pytest.raises(NoValidBackendError) as info:
        solve(cfg)
    err = info.value
    assert str(err).startswith("No valid attention backend found for cuda")
    assert list(err.reasons) == ["FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION"]
    assert err.reasons == {
        "FLASH_ATTN": ("sink setting not supported", "sink not supported on compute capability < 9.0"),
        "FLASHINFER": ("head_size not supported", "sink setting not supported"),
        "TRITON_ATTN": ("head_size not supported",),
        "FLEX_ATTENTION": ("sink setting not supported",),
    }


def test_reason_matching_is_whole_string():
    # "MLA not supported" is a substring of "non-MLA not supported": the tuples hold whole reasons.
    cfg = Config(**BASE, head_size=576, backend="FLASHMLA")
    with pytest.raises(InvalidBackendError) as info:
        solve(cfg)
    reasons = info.value.reasons["FLASHMLA"]
    assert "non-MLA not supported" in reasons and "MLA not supported" not in reasons
    cfg = Config(**BASE, use_mla=True, backend="FLASH_ATTN")
    with pytest.raises(InvalidBackendError) as info:
        solve(cfg)
    reasons = info.value.reasons["FLASH_ATTN"]
    assert "MLA not supported" in reasons and "non-MLA not supported" not in reasons


# -- InvalidBackendError ---------------------------------------------------------------------------

def test_invalid_backend_message_is_vllms():
    cfg = Config(platform="cuda", compute_capability="10.0", dtype="bfloat16", use_mla=True, backend="FLASHMLA")
    with pytest.raises(InvalidBackendError) as info:
        solve(cfg)
    err = info.value
    assert err.backend == "FLASHMLA"
    assert err.reasons == {"FLASHMLA": ("FlashMLA Dense is only supported on Hopper devices.",)}
    first_line = str(err).splitlines()[0]
    assert first_line == ("Selected backend AttentionBackendEnum.FLASHMLA is not valid for this configuration. "
                          "Reason: ['FlashMLA Dense is only supported on Hopper devices.']")


def test_invalid_backend_never_falls_back():
    cfg = Config(**{**BASE, "dtype": "float32"}, head_size=16, backend="TRITON_ATTN")
    with pytest.raises(InvalidBackendError) as info:
        solve(cfg)
    assert list(info.value.reasons) == ["TRITON_ATTN"]
    assert re.match(r"Selected backend AttentionBackendEnum\.TRITON_ATTN is not valid for this configuration\. "
                    r"Reason: \['head_size not supported'\]", str(info.value))


def test_invalid_backend_several_reasons_in_vllm_order():
    cfg = Config(platform="cuda", compute_capability="7.5", dtype="float32", head_size=100, kv_cache_dtype="fp8",
                 block_size=8, backend="FLASH_ATTN", attn_type="encoder")
    with pytest.raises(InvalidBackendError) as info:
        solve(cfg)
    # no "block_size not supported": vLLM 0.17's CUDA selector drops the block size before validating
    assert info.value.reasons["FLASH_ATTN"] == (
        "head_size not supported", "dtype not supported", "kv_cache_dtype not supported",
        "compute capability not supported")


def test_backend_for_another_platform_or_role():
    # vLLM 0.17 runs a requested backend's own checks only: ROCM_ATTN's pass for this CUDA config
    assert solve(Config(**BASE, backend="ROCM_ATTN")).backend == "ROCM_ATTN"
    with pytest.raises(InvalidBackendError):
        solve(Config(**BASE, backend="ROCM_AITER_MLA"))
    with pytest.raises(InvalidBackendError):
        solve(Config(**BASE, backend="TRTLLM_RAGGED_DEEPSEEK", use_mla=True))


# -- ConfigError per field kind --------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "suggestion"), [
    ("kv_cache_dtype", "fp8e4m3", "fp8_e4m3"),
    ("kv_cache_dtype", "fp8-e5m2", "fp8_e5m2"),
    ("kv_cache_dtype", "bfloat61", "bfloat16"),
    ("dtype", "bfloat61", "bfloat16"),
    ("dtype", "flaot32", "float32"),
    ("attn_type", "decoders", "decoder"),
    ("attn_type", "encoderonly", "encoder_only"),
    ("platform", "cdua", "cuda"),
])
def test_config_error_enum_fields(field, value, suggestion):
    err = bad(**{field: value})
    msg = str(err)
    assert err.field == field and err.value == value and err.suggestion == suggestion
    assert field in msg and repr(value) in msg
    for accepted in RULES.domains[field]:
        assert accepted in msg
        assert accepted in err.accepted
    assert f"Did you mean {suggestion!r}?" in msg


def test_config_error_rocm_arch():
    with pytest.raises(ConfigError) as info:
        Config(platform="rocm", dtype="bfloat16", rocm_arch="gfx943")
    err = info.value
    assert err.field == "rocm_arch" and err.suggestion in ("gfx942", "gfx950", "gfx90a")
    assert "gfx942" in str(err) and "'gfx943'" in str(err)


@pytest.mark.parametrize(("value", "suggestion"), [(48, "32"), (100, "128"), (512, "256"), (2, "1")])
def test_config_error_block_size(value, suggestion):
    err = bad(block_size=value)
    assert err.field == "block_size" and err.value == value
    msg = str(err)
    assert "block_size" in msg and str(value) in msg
    for size in RULES.domains["block_size"]:
        assert str(size) in msg
    assert err.suggestion == suggestion


@pytest.mark.parametrize("field", ["use_mla", "has_sink", "use_mm_prefix", "rocm_use_aiter", "use_cudnn_prefill"])
def test_config_error_bool_fields(field):
    err = bad(**{field: "maybe"})
    assert err.field == field and err.value == "maybe"
    assert field in str(err) and "'maybe'" in str(err)
    assert "true" in str(err) and "false" in str(err)


@pytest.mark.parametrize("field", ["head_size", "num_heads", "qk_nope_head_dim", "index_topk"])
@pytest.mark.parametrize("value", [0, -3, "abc", 1.5, True])
def test_config_error_int_fields(field, value):
    err = bad(**{field: value})
    assert err.field == field
    assert field in str(err) and repr(value) in str(err)
    assert "integer" in str(err)


@pytest.mark.parametrize("value", ["9.x", "abc", (9,), (9, 0, 1), 0, -1.0, True, "99.0", object()])
def test_config_error_compute_capability(value):
    err = bad(compute_capability=value)
    assert err.field == "compute_capability"
    assert "compute_capability" in str(err) and "'9.0'" in str(err)


@pytest.mark.parametrize("value", ["9.0", (9, 0), [9, 0], 9.0, 9, "sm_90", "90", 90])
def test_compute_capability_forms(value):
    assert Config(**{**BASE, "compute_capability": value}).compute_capability == (9, 0)


@pytest.mark.parametrize(("value", "cc"), [("12.1", (12, 1)), (12.1, (12, 1)), ((10, 3), (10, 3)), ("8.6", (8, 6))])
def test_compute_capability_minor(value, cc):
    assert Config(**{**BASE, "compute_capability": value}).compute_capability == cc


def test_config_error_flash_attn_version():
    err = bad(flash_attn_version=5)  # vLLM 0.17 accepts 2, 3 and 4
    assert err.field == "flash_attn_version" and all(v in str(err) for v in ("2", "3", "4"))


def test_config_error_unknown_field():
    with pytest.raises(ConfigError) as info:
        Config(platform="cuda", compute_capability="9.0", dtype="bfloat16", unknown_field=1)
    err = info.value
    assert err.field == "unknown_field"
    assert "unknown_field" in str(err) and "head_size" in str(err)
    with pytest.raises(ConfigError) as info:
        Config(platform="cuda", compute_capability="9.0", dtype="bfloat16", head_sizes=128)
    assert info.value.suggestion == "head_size"


def test_config_error_positional_arguments():
    with pytest.raises(ConfigError):
        Config("cuda")


def test_missing_platform_and_dtype():
    with pytest.raises(ConfigError) as info:
        Config(dtype="bfloat16")
    assert info.value.field == "platform"
    with pytest.raises(ConfigError) as info:
        Config(platform="cuda", compute_capability="9.0")
    assert info.value.field == "dtype"
    with pytest.raises(ConfigError) as info:
        Config(platform="cuda", dtype="bfloat16")
    assert info.value.field == "compute_capability"


def test_hardware_facts_belong_to_their_platform():
    assert bad(rocm_arch="gfx942").field == "rocm_arch"
    with pytest.raises(ConfigError) as info:
        Config(platform="cpu", dtype="bfloat16", compute_capability="9.0")
    assert info.value.field == "compute_capability"


# -- GPU names -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("gpu", "cc"), [
    ("A100", (8, 0)), ("A10G", (8, 6)), ("L4", (8, 9)), ("L40S", (8, 9)), ("H100", (9, 0)), ("H200", (9, 0)),
    ("B200", (10, 0)), ("GB200", (10, 0)), ("RTX 4090", (8, 9)), ("RTX 5090", (12, 0)), ("rtx-4090", (8, 9)),
    ("h100", (9, 0)), ("T4", (7, 5)),
])
def test_gpu_names(gpu, cc):
    cfg = Config(gpu=gpu, dtype="bfloat16")
    assert cfg.platform == "cuda" and cfg.compute_capability == cc
    assert Config(platform="cuda", gpu=gpu, dtype="bfloat16") == cfg


@pytest.mark.parametrize(("gpu", "arch"), [("MI300X", "gfx942"), ("MI250", "gfx90a"), ("MI355X", "gfx950")])
def test_rocm_gpu_names(gpu, arch):
    cfg = Config(gpu=gpu, dtype="bfloat16")
    assert cfg.platform == "rocm" and cfg.rocm_arch == arch and cfg.compute_capability is None


def test_gpu_errors():
    with pytest.raises(ConfigError) as info:
        Config(gpu="H1000", dtype="bfloat16")
    err = info.value
    assert err.field == "gpu" and err.suggestion == "H100" and "H100" in str(err) and "'H1000'" in str(err)
    with pytest.raises(ConfigError) as info:
        Config(gpu="H100", compute_capability="8.0", dtype="bfloat16")
    assert info.value.field == "compute_capability"
    with pytest.raises(ConfigError):
        Config(gpu="MI300X", platform="cuda", dtype="bfloat16")


def test_gpu_answer_matches_compute_capability():
    assert solve(Config(gpu="H100", dtype="bf16")).backend == "FLASH_ATTN"
    assert solve(Config(gpu="B200", dtype="bf16")).backend == "FLASHINFER"
    assert solve(Config(gpu="B200", dtype="bf16", use_mla=True)).backend == "FLASHINFER_MLA"


# -- role --------------------------------------------------------------------------------------------

def test_unknown_role_is_config_error():
    with pytest.raises(ConfigError) as info:
        solve(Config(**BASE), role="prefil")
    assert info.value.field == "role"
