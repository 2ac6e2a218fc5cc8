"""What the platforms' start-up hooks log and refuse before any layer selects, on ROCm, CPU and XPU.

Facts read from each release's wheel (platforms/rocm.py, cpu.py, xpu.py check_and_update_config; the worker's
batch-invariance gate) and compared by the oracle's start-up mode on those platforms (session 38): the rules'
`startup_warnings` were loaded and never printed until then, so a ROCm run with prefill context parallelism, or a
CPU run with a 48-token block, missed the lines vLLM logs first.
"""

from __future__ import annotations

import pytest

from attnsolve import Config, NoValidBackendError, solve
from release_facts import answer as _answer

PCP = ("Prefill context parallel (PCP) is enabled, which is incompatible with full CUDA graphs. "
       "Overriding cudagraph_mode to PIECEWISE.")
CPU_32 = "CPU backend prefers block_size is multiples of 32, otherwise the performance is not optimized."
CPU_MLA_INFO = "MLA is enabled on a non-GPU platform; forcing chunked prefill and prefix caching to be disabled."
MLA_DIMS = dict(use_mla=True, head_size=576, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)


@pytest.mark.parametrize("version", ["0.29", "0.33", "0.34"])
def test_rocm_pcp_line_comes_first(version):
    """RocmPlatform.check_and_update_config overrides the CUDA-graph mode for prefill context parallelism and says
    so (WARNING) before any layer exists: the first of the selection's warnings."""
    got = _answer(vllm=version, platform="rocm", rocm_arch="gfx942", dtype="float16", use_pcp=True,
                  rocm_use_aiter=False, **MLA_DIMS)
    assert got[0] == "TRITON_MLA"
    assert got[3][:1] == (PCP,)


def test_rocm_without_pcp_logs_no_such_line():
    got = _answer(vllm="0.34", platform="rocm", rocm_arch="gfx942", dtype="float16", rocm_use_aiter=False, **MLA_DIMS)
    assert PCP not in got[3]


@pytest.mark.parametrize("block, warned", [(8, True), (48, True), (32, False), (128, False), (None, False)])
def test_cpu_block_size_advice(block, warned):
    """CpuPlatform.check_and_update_config: a user block size that is not a multiple of 32 is logged (0.34); an
    unset one is the platform's own (128)."""
    got = _answer(vllm="0.34", platform="cpu", dtype="bfloat16", head_size=128, block_size=block)
    assert got[0] == "CPU_ATTN"
    assert (CPU_32 in got[3]) is warned


def test_cpu_reference_mla_overrides_the_user_block_size():
    """The reference CPU MLA path forces 16 and says so (WARNING), then the INFO line about chunked prefill; the
    INFO line is a log line, not a warning."""
    got = _answer(vllm="0.34", platform="cpu", dtype="bfloat16", block_size=48, backend="CPU_MLA", **MLA_DIMS)
    assert got[0] == "CPU_MLA" and got[2] == 16
    assert got[3][0] == "CPU MLA backend requires block_size=16, overriding user-specified block_size=48."
    assert CPU_32 not in got[3]
    assert got[5][0] == CPU_MLA_INFO and CPU_MLA_INFO not in got[3]


def test_prefill_question_has_no_start_up_lines():
    """The hook runs once per engine: the decode answer carries its lines, the MLA prefill question does not."""
    cfg = dict(vllm="0.34", platform="cpu", dtype="bfloat16", block_size=48, backend="CPU_MLA", **MLA_DIMS)
    prefill = _answer(role="mla_prefill", **cfg)
    assert not any("block_size=16" in w for w in prefill[3])


def test_xpu_batch_invariance_refusal_comes_before_the_decision_tree():
    """XPUPlatform.check_and_update_config refuses batch invariance with a quantized KV cache before any layer asks
    its decision tree, which would refuse this MLA layer anyway (a ROCm backend requested on XPU): start-up prints
    the hook's text."""
    cfg = Config(vllm="0.34", platform="xpu", dtype="float32", kv_cache_dtype="nvfp4_4over6", use_batch_invariant=True,
                 backend="ROCM_OCTAVE", **dict(MLA_DIMS, qk_nope_head_dim=64, v_head_dim=64))
    with pytest.raises(NoValidBackendError) as e:
        solve(cfg)
    assert str(e.value).startswith("Invalid attention backend for xpu, with use_mla: True")
    assert e.value.startup_error == (
        "XPU batch invariance currently does not support quantized KV caches; got kv_cache_dtype='nvfp4_4over6'. "
        "Use an unquantized KV cache dtype or disable VLLM_BATCH_INVARIANT.")


@pytest.mark.parametrize("version", ["0.31", "0.33", "0.34"])
def test_exact_kernel_sizes_print_as_python_prints_them(version):
    """TurboQuant's get_supported_kernel_block_sizes() is [16, 32, 64, 128] (plain ints, each one exact): the
    worker's select_common_block_size prints that list, not MultipleOf(...)."""
    got = _answer(vllm=version, platform="xpu", dtype="float32", kv_cache_dtype="turboquant_k8v4", head_size=128,
                  block_size=8)
    assert got[0] == "TURBOQUANT"
    assert got[4] == "No common block size for 8 (TURBOQUANT: [16, 32, 64, 128])."
