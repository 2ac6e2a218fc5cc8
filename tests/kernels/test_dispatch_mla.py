"""MLA through dispatch: ``paged_attention(query, latent_cache, None, md, vllm=...)`` on CPU.

vLLM 0.33 selects CPU_MLA for an MLA model on a CPU without AMX (0.17 has no CPU MLA backend);
these tests name the release (``vllm="0.33"``) or set the default through ``$ATTNSOLVE_VLLM``, as a
user would, so they hold whatever release the suite runs with.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from attnsolve import SelectionError  # noqa: E402
from attnsolve.kernels import paged_attention  # noqa: E402
from attnsolve.kernels.dispatch import _host_cpu_facts, clear_cache, infer_config, resolve  # noqa: E402
from attnsolve.kernels.reference import mla_decode_reference  # noqa: E402

from test_cpu_mla import TOL, check, make_mla, random_topk  # noqa: E402

SCALE = 192 ** -0.5  # DeepSeek: (qk_nope 128 + rope 64) ** -0.5


def _deepseek(dtype, seed=3):
    """A DeepSeek-style decode batch: kv_lora_rank 512 + rope 64, 16 heads (a TP-8 shard), blocks of 16."""
    return make_mla([1, 1, 1, 2], [70, 5, 33, 130], 16, 512, 64, 16, dtype=dtype, seed=seed, repeats=False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_deepseek_decode_runs_cpu_mla_through_dispatch(dtype):
    q, kv, md = _deepseek(dtype)
    sel, fn = resolve(q, kv, vllm="0.33", mla=True, kv_lora_rank=512)
    # vLLM 0.33 picks AMX_MLA on an x86 host with AMX tiles (torch.cpu._is_amx_tile_supported), CPU_MLA elsewhere;
    # AMX_MLA takes bf16 queries only (as vLLM's), so an fp32 model there runs CPU_MLA only when asked for
    amx = bool(_host_cpu_facts().get("cpu_amx"))
    assert sel.backend == ("AMX_MLA" if amx else "CPU_MLA")
    backend = None
    if amx and dtype != torch.bfloat16:
        with pytest.raises(ValueError, match="AMX_MLA"):
            paged_attention(q, kv, None, md, vllm="0.33", scale=SCALE)
        backend = "CPU_MLA"
        assert resolve(q, kv, backend=backend, vllm="0.33", mla=True, kv_lora_rank=512)[0].backend == "CPU_MLA"
    out = paged_attention(q, kv, None, md, backend=backend, vllm="0.33", scale=SCALE)
    assert out.shape == (q.shape[0], 16, 512) and out.dtype == dtype
    check(out, mla_decode_reference(q, kv.nan_to_num(0.0), md, scale=SCALE), dtype)


def test_latent_cache_with_a_head_dim_and_default_rank():
    q, kv, md = make_mla([1, 1], [40, 17], 8, 512, 64, 16, dtype=torch.bfloat16, seed=5, head_dim=True)
    out = paged_attention(q, kv, None, md, vllm="0.33")  # kv_lora_rank 512, scale 576 ** -0.5: the kernel's defaults
    check(out, mla_decode_reference(q, kv.nan_to_num(0.0), md), torch.bfloat16)


def test_default_release_from_the_environment(monkeypatch):
    q, kv, md = _deepseek(torch.bfloat16)
    monkeypatch.setenv("ATTNSOLVE_VLLM", "0.33")
    out = paged_attention(q, kv, None, md, scale=SCALE)  # no vllm=...: $ATTNSOLVE_VLLM picks 0.33
    check(out, mla_decode_reference(q, kv.nan_to_num(0.0), md, scale=SCALE), torch.bfloat16)
    monkeypatch.setenv("ATTNSOLVE_VLLM", "0.17")  # the cached selection must not leak across releases
    with pytest.raises(SelectionError, match="MLA is not supported on CPU"):
        paged_attention(q, kv, None, md, scale=SCALE)


def test_release_017_has_no_cpu_mla():
    q, kv, md = _deepseek(torch.float32)
    with pytest.raises(SelectionError, match="MLA is not supported on CPU"):
        paged_attention(q, kv, None, md, vllm="0.17")


def test_sparse_mla_is_refused_on_cpu_like_vllm():
    """vLLM 0.33 refuses sparse attention on CPU; the kernel itself (kernel_for) runs it (test_cpu_mla)."""
    q, kv, md = _deepseek(torch.bfloat16)
    with pytest.raises(SelectionError, match="Sparse Attention is not supported on CPU"):
        paged_attention(q, kv, None, md, vllm="0.33", topk_indices=random_topk(md, 16, 1))


def test_config_from_tensors():
    q, kv, _ = _deepseek(torch.bfloat16)
    cfg = infer_config(q, kv, vllm="0.33", mla=True, kv_lora_rank=512)
    assert cfg.vllm == "0.33" and cfg.use_mla and cfg.head_size == 576 and cfg.platform == "cpu"
    assert cfg.kv_lora_rank == 512


def test_mla_refuses_what_mla_kernels_do_not_take():
    q, kv, md = _deepseek(torch.bfloat16)
    with pytest.raises(ValueError, match="sliding_window"):
        paged_attention(q, kv, None, md, vllm="0.33", sliding_window=8)
    with pytest.raises(ValueError, match="value_cache=None"):
        paged_attention(q, kv.unsqueeze(2), kv.unsqueeze(2), md, vllm="0.33", kv_lora_rank=512)
    with pytest.raises(ValueError, match="latent"):
        paged_attention(q, kv.unsqueeze(2).expand(-1, -1, 2, -1), None, md, vllm="0.33")


def test_bad_release_name_is_a_config_error():
    from attnsolve import ConfigError

    q, kv, md = _deepseek(torch.bfloat16)
    clear_cache()
    with pytest.raises(ConfigError, match="Unsupported vLLM version: '0.99'"):
        paged_attention(q, kv, None, md, vllm="0.99")


assert TOL  # imported for the tolerances check() applies


def test_unrunnable_selection_ignores_kernels_of_another_release():
    """CPU_MLA is registered (a 0.33 backend) but unknown to 0.17: the alternative search of a
    KernelUnavailableError must not hand it to 0.17's solver (which refuses unknown names)."""
    from attnsolve.kernels import KernelUnavailableError, registry
    from paged_cases import make_batch

    q, kc, vc, md = make_batch([1], [20], 4, 2, 64, 16)

    def fake(*a, **k):
        raise AssertionError("not runnable: must not be called")

    clear_cache()
    try:
        with registry.override_kernel("CPU_ATTN", fake, devices=("cpu",), requires=("attnsolve_no_such_package",)):
            assert "CPU_MLA" in registry.runnable_backends("cpu")
            with pytest.raises(KernelUnavailableError) as ei:
                paged_attention(q, kc, vc, md, vllm="0.17")
            assert ei.value.backend == "CPU_ATTN"
    finally:
        clear_cache()
