"""The CPU kernels under ``torch.set_default_device``: every tensor they make names its device.

Why: an inference script that sets ``torch.set_default_device("cuda")`` made CPU_ATTN's output (a factory call
without a device) a CUDA tensor, whose pointer the C++ kernel then wrote through: a segfault (shown here with
"meta", which needs no GPU: before the fix this module crashed the test process)."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

from attnsolve.kernels import _cpu_ext  # noqa: E402
from attnsolve.kernels.cpu import cpu_attn, cpu_attn_impl  # noqa: E402
from attnsolve.kernels.cpu_mla import cpu_mla  # noqa: E402
from paged_cases import make_batch  # noqa: E402
from test_cpu_mla import make_mla, random_topk  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _under_meta(fn):
    torch.set_default_device("meta")
    try:
        return fn()
    finally:
        torch.set_default_device(None)


@pytest.mark.parametrize("entry", [True, False])
@pytest.mark.parametrize("case", [
    dict(q_lens=[1, 1], opts={}),  # a plain decode: the C++ entry, or the Python fast path
    dict(q_lens=[1, 5], opts={}),  # several rows: the full path
    dict(q_lens=[1, 30], opts={}),  # a prefill run (the AMX kernel or torch's)
    dict(q_lens=[1, 1], opts={"sliding_window": 7, "logits_soft_cap": 20.0, "return_lse": True}),
    dict(q_lens=[3, 2], opts={"causal": False, "alibi_slopes": [0.5, 0.25, 0.1, 0.05, 0.5, 0.25, 0.1, 0.05]}),
])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cpu_attn_answers_on_the_cpu(case, dtype, entry, monkeypatch):
    q, kc, vc, md = make_batch(case["q_lens"], [40, 33], 8, 2, 64, 16, dtype=dtype, seed=5)
    opts = dict(case["opts"])
    if "alibi_slopes" in opts:
        opts["alibi_slopes"] = torch.tensor(opts["alibi_slopes"])
    want = cpu_attn_impl(q, kc, vc, md, **opts)
    if not entry:
        monkeypatch.setitem(_cpu_ext._state, "entry", None)
    got = _under_meta(lambda: cpu_attn(q, kc, vc, md, **opts))
    pairs = zip(got, want) if isinstance(want, tuple) else [(got, want)]
    for g, w in pairs:
        assert g.device.type == "cpu"
        assert torch.equal(g, w)


def test_the_torch_paths_answer_on_the_cpu(monkeypatch):
    """Without the C++ extension (the pure-torch paths)."""
    q, kc, vc, md = make_batch([1, 9], [40, 33], 8, 2, 64, 16, dtype=torch.float32, seed=6)
    want = cpu_attn_impl(q, kc, vc, md, use_ext=False)
    got = _under_meta(lambda: cpu_attn_impl(q, kc, vc, md, use_ext=False))
    assert got.device.type == "cpu" and torch.equal(got, want)


@pytest.mark.parametrize("sparse", [False, True])
def test_cpu_mla_answers_on_the_cpu(sparse):
    q, kv, md = make_mla([1, 2], [40, 23], 16, 64, 16, 16, dtype=torch.bfloat16, seed=4)
    topk = random_topk(md, 8, 4) if sparse else None
    want = cpu_mla(q, kv, md, kv_lora_rank=64, scale=0.1, topk_indices=topk)
    got = _under_meta(lambda: cpu_mla(q, kv, md, kv_lora_rank=64, scale=0.1, topk_indices=topk))
    assert got.device.type == "cpu"
    assert torch.equal(got, want)



@pytest.mark.parametrize("via", ["kernel", "dispatch"])
@pytest.mark.parametrize("opts", [
    {}, {"k_scale": 0.5, "v_scale": 2.0}, {"mm_prefix_ranges": [[(0, 4)], []]}, {"sliding_window": 9},
])
@pytest.mark.parametrize("backend", ["CPU_ATTN", "FLEX_ATTENTION", "TRITON_ATTN"])
def test_every_cpu_runnable_kernel_answers_on_the_cpu(backend, opts, via):
    """Host-side tensors the kernels and the dispatch layer make (scales, multimodal ranges, masks, index lists)
    stay host tensors: before, FLEX's multimodal ranges were made on the default device."""
    from attnsolve.kernels import KernelUnavailableError, kernel_for, paged_attention

    try:
        fn = kernel_for(backend)
    except KernelUnavailableError as e:  # TRITON_ATTN without TRITON_INTERPRET=1
        pytest.skip(str(e))
    q, kc, vc, md = make_batch([1, 3], [40, 33], 8, 2, 64, 16, dtype=torch.float32, seed=7)

    def call():
        if via == "kernel":
            return fn(q, kc, vc, md, **opts)
        with warnings.catch_warnings():  # the rules' lines for this request (block size, platform): not tested here
            warnings.simplefilter("ignore")
            return paged_attention(q, kc, vc, md, backend=backend, **opts)

    want = call()
    got = _under_meta(call)
    assert got.device.type == "cpu" and torch.equal(got, want)
