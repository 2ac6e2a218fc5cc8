"""vLLM 0.16/0.17 on Intel XPU (vllm/platforms/xpu.py of each wheel; harness: `--platform xpu`, selector and
start-up modes, 1,540/1,540 each in session 40). Until session 40 these rule sets refused --platform xpu."""

from __future__ import annotations

import pytest

from attnsolve import Config, NoValidBackendError, solve
from attnsolve.selection import NO_PREFILL

RELEASES = ["0.16", "0.17"]


def _xpu(vllm: str, **kw):
    return Config(vllm=vllm, platform="xpu", **{"dtype": "bfloat16", **kw})


@pytest.mark.parametrize("vllm", RELEASES)
def test_the_decision_tree(vllm: str) -> None:
    sel = solve(_xpu(vllm))
    assert (sel.backend, sel.variant, sel.preferred_block_size, sel.startup_error) == ("FLASH_ATTN", "FA2", 64, None)
    f32 = solve(_xpu(vllm, dtype="float32"))
    assert f32.backend == "TRITON_ATTN" and f32.warnings == (
        "Flash Attention on XPU does not support float32 dtype. Falling back to Triton Attention backend.",)
    assert solve(_xpu(vllm, backend="TRITON_ATTN")).backend == "TRITON_ATTN"
    assert solve(_xpu(vllm, dtype="float32", backend="FLASH_ATTN")).backend == "TRITON_ATTN"  # float32 first
    with pytest.raises(NoValidBackendError, match="^Invalid attention backend for xpu, with use_mla: False"):
        solve(_xpu(vllm, backend="FLASHINFER"))
    mla = dict(use_mla=True, head_size=576)
    assert solve(_xpu(vllm, **mla)).backend == "TRITON_MLA"
    assert solve(_xpu(vllm, **mla, backend="FLASHMLA")).backend == "TRITON_MLA"  # the request is not read
    with pytest.raises(NoValidBackendError, match="^Sparse Attention is not supported on XPU."):
        solve(_xpu(vllm, **mla, use_sparse=True))


@pytest.mark.parametrize("vllm", RELEASES)
def test_start_up(vllm: str) -> None:
    # FlashAttentionImpl refuses an fp8 cache on XPU as the layer is built (FA2 there), before the block-size step
    fp8 = solve(_xpu(vllm, kv_cache_dtype="fp8", block_size=8))
    assert fp8.startup_error == "FlashAttention does not support fp8 kv-cache on this device."
    assert solve(_xpu(vllm, block_size=8)).startup_error == "No common block size for 8. "
    assert solve(_xpu(vllm, block_size=32)).startup_error is None
    a770 = Config(vllm=vllm, gpu="Arc A770", dtype="bfloat16")
    assert a770.xpu_device == "Arc A770"
    assert solve(a770).startup_error.startswith("Intel Arc A770 have bfloat16 accuracy known issue.")
    assert solve(a770.replace(dtype="float16")).startup_error is None


@pytest.mark.parametrize("vllm", ["0.18", "0.25", "0.33", "0.34"])
def test_a_gpu_name_sets_the_xpu_device(vllm: str) -> None:
    """Regression (every release with XPU until session 40): --gpu "Arc A770" left xpu_device unset, so the worker's
    bfloat16 refusal on that card was never given; the GPU table's entries now carry their device name."""
    a770 = Config(vllm=vllm, gpu="Arc A770", dtype="bfloat16")
    assert a770.xpu_device == "Arc A770"
    assert solve(a770).startup_error.startswith("Intel Arc A770 have bfloat16 accuracy known issue.")


@pytest.mark.parametrize("vllm", RELEASES)
def test_mla_prefill(vllm: str) -> None:
    # a dense layer's MLACommonImpl finds no flash_attn_varlen_func on XPU (mla_attention.py imports it from
    # vllm.vllm_flash_attn only); a sparse layer fails at its decode backend (XPU raises for sparse attention) before
    # any prefill question, as vLLM's layer does
    with pytest.raises(NoValidBackendError, match="^MLA attention requires FlashAttention but it is not available"):
        solve(_xpu(vllm, use_mla=True, head_size=576), role="mla_prefill")
    with pytest.raises(NoValidBackendError, match="^Sparse Attention is not supported on XPU"):
        solve(_xpu(vllm, use_mla=True, use_sparse=True, head_size=576), role="mla_prefill")
