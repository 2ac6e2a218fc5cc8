"""GPU names are looked up in the GPU table of the release asked; tool spellings of Intel GPUs
(`xpu-smi`, torch.xpu.get_device_name()) reduce to the table names; a GPU that only a newer
release knows is an error naming that release."""

from __future__ import annotations

import pytest

from attnsolve import Config, vllm_versions
from attnsolve.errors import ConfigError


@pytest.mark.parametrize("spelling, name", [
    ("Intel(R) Arc(TM) B580 Graphics", "Arc B580"),
    ("Intel(R) Data Center GPU Max 1550", "Data Center GPU Max 1550"),
    ("arc a770", "Arc A770"),
])
def test_intel_spellings_on_a_release_with_xpu(spelling, name):
    cfg = Config(vllm="0.33", gpu=spelling, dtype="bfloat16", head_size=128)
    assert cfg.platform == "xpu"
    assert Config(vllm="0.33", gpu=name, dtype="bfloat16", head_size=128) == cfg


def test_a_gpu_only_a_newer_release_knows_names_that_release():
    with pytest.raises(ConfigError) as e:
        Config(vllm="0.17", gpu="AMD_Radeon_890M", dtype="bfloat16")  # (0.17 knows the Intel names since session 40)
    newest = vllm_versions()[-1]  # the newest release that knows the name (0.33 and later have the Radeon 890M)
    assert e.value.field == "gpu" and f"vLLM {newest} knows it (--vllm {newest})" in str(e.value)


def test_suggestions_stay_with_the_vendor():
    with pytest.raises(ConfigError) as e:
        Config(vllm="0.33", gpu="Arc B570", dtype="bfloat16")
    assert "closest known Intel name is Arc B580" in str(e.value)


@pytest.mark.parametrize("spelling, name, arch", [
    ("AMD_Instinct_MI308X", "MI308X", "gfx942"), ("AMD_Radeon_890M", "Radeon 890M", "gfx1150"),
    ("AMD_Radeon_8060S", "Radeon 8060S", "gfx1151"), ("AMD_Radeon_RX9070XT", "RX 9070 XT", "gfx1201"),
    ("AMD Radeon RX 9070 XT", "RX 9070 XT", "gfx1201"),
])
def test_the_rocm_names_vllm_033_prints(spelling, name, arch):
    """vLLM 0.33's ROCm platform names these parts (platforms/rocm.py _ROCM_DEVICE_ID_NAME_MAP); each is one
    gfx arch, so the name alone answers."""
    cfg = Config(vllm="0.33", gpu=spelling, dtype="bfloat16", head_size=128)
    assert (cfg.platform, cfg.rocm_arch) == ("rocm", arch)
    assert Config(vllm="0.33", gpu=name, dtype="bfloat16", head_size=128) == cfg
