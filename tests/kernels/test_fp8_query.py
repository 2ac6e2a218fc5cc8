"""An fp8 query with its descale (vLLM's quantized query): widened exactly to bfloat16, ``q_scale``
folded into the softmax scale, the output bfloat16 -- on every CPU-runnable kernel and the dispatch.

The check is independent of the folding: the float64 reference runs on the dequantized query
``q.double() * q_scale`` with the plain scale."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from attnsolve.kernels.adapters.sdpa_fallback import sdpa_paged  # noqa: E402
from attnsolve.kernels.cpu import cpu_attn  # noqa: E402
from attnsolve.kernels.dispatch import infer_config, paged_attention  # noqa: E402
from attnsolve.kernels.flex import flex_paged_attention  # noqa: E402
from attnsolve.kernels.reference import paged_attention_reference  # noqa: E402
from paged_cases import make_batch  # noqa: E402

FP8 = [torch.float8_e4m3fn, torch.float8_e5m2]
KERNELS = {"reference": paged_attention_reference, "CPU_ATTN": cpu_attn, "FLEX_ATTENTION": flex_paged_attention,
           "FLASH_ATTN (SDPA stand-in)": sdpa_paged}


def _problem(fp8, seed=0):
    q, kc, vc, md = make_batch([5, 1, 12], [9, 33, 40], 8, 2, 32, 16, dtype=torch.bfloat16, seed=seed)
    q8 = (q.float() * 4).to(fp8)  # values a quantizer would produce (scale 1/4)
    return q8, kc, vc, md


def _expected(q8, kc, vc, md, q_scale, **kw):
    qd = q8.double() * float(q_scale)  # the dequantized query, exactly
    ref = paged_attention_reference(qd, kc.double(), vc.double(), md, scale=32 ** -0.5, **kw)
    return ref.float()


@pytest.mark.parametrize("fp8", FP8, ids=["e4m3fn", "e5m2"])
@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("q_scale", [0.25, "tensor"])
def test_fp8_query_matches_the_dequantized_reference(name, fp8, q_scale):
    q8, kc, vc, md = _problem(fp8)
    qs = torch.tensor([0.25]) if q_scale == "tensor" else q_scale
    out = KERNELS[name](q8, kc, vc, md, q_scale=qs)
    assert out.dtype == torch.bfloat16 and out.shape == (q8.shape[0], 8, 32)
    torch.testing.assert_close(out.float(), _expected(q8, kc, vc, md, 0.25), atol=2e-2, rtol=2e-2)
    # the descale matters: without it the scores are 4x too large
    wrong = KERNELS[name](q8, kc, vc, md)
    assert not torch.allclose(wrong.float(), _expected(q8, kc, vc, md, 0.25), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("fp8", FP8, ids=["e4m3fn", "e5m2"])
def test_fp8_query_with_features_on_cpu_attn(fp8):
    """Soft-cap and ALiBi act on ``scale * q_scale * q . k``; sinks and lse as usual."""
    q8, kc, vc, md = _problem(fp8, seed=3)
    kw = dict(logits_soft_cap=3.0, sliding_window=7, sinks=torch.randn(8), alibi_slopes=torch.rand(8))
    out, lse = cpu_attn(q8, kc, vc, md, q_scale=0.25, return_lse=True, **kw)
    qd = q8.double() * 0.25
    ref, ref_lse = paged_attention_reference(qd, kc.double(), vc.double(), md, scale=32 ** -0.5, return_lse=True, **kw)
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-3)


def test_dispatch_takes_an_fp8_query_as_a_bfloat16_model_with_fp8_cache():
    q8, kc, vc, md = _problem(torch.float8_e4m3fn)
    k8, v8 = kc.to(torch.float8_e4m3fn), vc.to(torch.float8_e4m3fn)
    cfg = infer_config(q8, k8)
    assert (cfg.dtype, cfg.kv_cache_dtype) == ("bfloat16", "fp8")
    out = paged_attention(q8, k8, v8, md, q_scale=torch.tensor(0.25), k_scale=0.5, v_scale=2.0)
    assert out.dtype == torch.bfloat16
    qd = q8.double() * 0.25
    ref = paged_attention_reference(qd, k8, v8, md, scale=32 ** -0.5, k_scale=0.5, v_scale=2.0)
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
    op = torch.ops.attnsolve.paged_attention(q8, k8, v8, md.query_start_loc, md.seq_lens, md.block_table,
                                             k_scale=torch.tensor(0.5), v_scale=torch.tensor(2.0),
                                             q_scale=torch.tensor(0.25))
    assert torch.equal(op, out)


@pytest.mark.parametrize("bad,match", [
    (torch.ones(2), r"Expected q_scale a real number or a one-element tensor"),
    ("0.5", r"Expected q_scale a real number, but got str"),
    (True, r"Expected q_scale a real number, but got bool"),
])
def test_bad_q_scale_is_refused_by_name(bad, match):
    q8, kc, vc, md = _problem(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=match):
        cpu_attn(q8, kc, vc, md, q_scale=bad)


def test_mla_refuses_q_scale():
    q = torch.randn(2, 4, 40)
    kv = torch.randn(4, 16, 40)
    from attnsolve.kernels.metadata import AttentionMetadata

    md = AttentionMetadata(torch.tensor([0, 1, 2], dtype=torch.int32), torch.tensor([5, 9], dtype=torch.int32),
                           torch.tensor([[0], [1]], dtype=torch.int32))
    with pytest.raises(ValueError, match="q_scale"):
        paged_attention(q, kv, None, md, kv_lora_rank=32, q_scale=0.5, vllm="0.33")
