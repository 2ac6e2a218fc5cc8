"""#15 and #17 on TRITON_ATTN (Triton's interpreter, tiny shapes): validation, NaN, vLLM's window
conventions, per-(sequence, KV head) scales, cross-attention and the features against the reference.

Triton is imported in interpreter mode (``triton_import``); if this process imported it in compile
mode earlier, the module re-runs in a subprocess instead.
"""

from __future__ import annotations

import pytest

from triton_import import import_interpreted, rerun_in_interpreter  # noqa: E402

torch, triton_attn, _SET_ENV = import_interpreted("attnsolve.kernels.triton_attn")

from hypothesis import given, settings  # noqa: E402

from paged_cases import close, close_result, feature_problems, make_batch  # noqa: E402

from attnsolve.kernels.metadata import AttentionMetadata  # noqa: E402
from attnsolve.kernels.reference import paged_attention_reference  # noqa: E402
from attnsolve.kernels.triton_attn import triton_paged_attention  # noqa: E402

try:
    from strategies import budget
except ImportError:  # pragma: no cover
    def budget(n):
        return n

INTERPRETED = triton_attn.is_interpreted()
needs_interp = pytest.mark.skipif(not INTERPRETED, reason="triton compiled in this process: see the subprocess test")


def _md(md, **kw):
    return AttentionMetadata(kw.get("qsl", md.query_start_loc), kw.get("sl", md.seq_lens), kw.get("bt", md.block_table))


@needs_interp
def test_validation_before_any_pointer():
    q, kc, vc, md = make_batch([1, 5], [20, 9], 4, 2, 32, 16)
    with pytest.raises(ValueError, match="Expected block_table on a real device"):
        triton_paged_attention(q, kc, vc, _md(md, bt=md.block_table.to("meta")))
    bt = md.block_table.long().clone()
    bt[0, 1] = 2**32 + 3
    with pytest.raises(ValueError, match=r"block_table entries .* but got \[4294967299\]"):
        triton_paged_attention(q, kc, vc, _md(md, bt=bt))
    with pytest.raises(ValueError, match="Expected block_table an integer tensor"):
        triton_paged_attention(q, kc, vc, _md(md, bt=md.block_table.float()))
    with pytest.raises(ValueError, match="Expected sliding_window >= 0"):
        triton_paged_attention(q, kc, vc, md, sliding_window=-2)
    with pytest.raises(ValueError, match="Expected query dtype"):
        triton_paged_attention(q.to(torch.int32), kc, vc, md)
    with pytest.raises(ValueError, match="Expected sinks on a real device"):
        triton_paged_attention(q, kc, vc, md, sinks=torch.zeros(4, device="meta"))


@needs_interp
def test_nan_query_and_scale_and_huge_window():
    q, kc, vc, md = make_batch([1, 5], [20, 9], 4, 2, 32, 16)
    qn = q.clone()
    qn[0, 1, 0] = float("nan")
    nan = torch.isnan(triton_paged_attention(qn, kc, vc, md)).any(dim=-1)
    assert nan[0, 1] and int(nan.sum()) == 1
    assert torch.isnan(triton_paged_attention(q, kc, vc, md, scale=float("nan"))).all()
    close(triton_paged_attention(q, kc, vc, md, sliding_window=2**32 + 1), paged_attention_reference(q, kc, vc, md),
          q.dtype)


@needs_interp
@pytest.mark.parametrize("causal", [True, False])
def test_item4_window_zero_and_item5_symmetric_windows(causal):
    q, kc, vc, md = make_batch([1, 12], [30, 12], 4, 2, 32, 16)
    close(triton_paged_attention(q, kc, vc, md, sliding_window=0, causal=causal),
          paged_attention_reference(q, kc, vc, md, causal=causal), q.dtype)
    close(triton_paged_attention(q, kc, vc, md, sliding_window=4, causal=causal),
          paged_attention_reference(q, kc, vc, md, sliding_window=(3, 0 if causal else 3), causal=causal), q.dtype)


@needs_interp
@pytest.mark.parametrize("segments", [1, 2])
def test_item6_per_sequence_scales_are_not_element_zero(segments):
    q, kc, vc, md = make_batch([1, 7, 1], [30, 7, 40], 4, 2, 32, 16)
    ks, vs = torch.rand(3, 2) + 0.5, torch.rand(3, 2) + 0.5
    want = paged_attention_reference(q, kc, vc, md, k_scale=ks, v_scale=vs)
    close(triton_paged_attention(q, kc, vc, md, k_scale=ks, v_scale=vs, num_segments=segments), want, q.dtype)


@needs_interp
def test_item7_cross_attention():
    q, kc, vc, md = make_batch([9, 1], [9, 5], 4, 2, 32, 16)
    md = _md(md, sl=torch.tensor([4, 5], dtype=torch.int32))
    close(triton_paged_attention(q, kc, vc, md, causal=False), paged_attention_reference(q, kc, vc, md, causal=False),
          q.dtype)


@needs_interp
@settings(max_examples=budget(10), deadline=None)
@given(feature_problems(max_len=40, head_sizes=(32,), block_sizes=(16, 48), max_heads=4))
def test_features_match_reference(case):
    (q, kc, vc, md), opts = case
    close_result(triton_paged_attention(q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts),
                 q.dtype)


@needs_interp
def test_lse_with_split_kv():
    q, kc, vc, md = make_batch([1, 1], [40, 70], 4, 2, 32, 16)
    opts = dict(sinks=torch.randn(4), alibi_slopes=torch.rand(4), return_lse=True)
    close_result(triton_paged_attention(q, kc, vc, md, num_segments=4, **opts),
                 paged_attention_reference(q, kc, vc, md, **opts), q.dtype)


@pytest.mark.skipif(INTERPRETED, reason="triton runs in interpreter mode in this process already")
def test_in_interpreter_subprocess():
    rerun_in_interpreter(__file__)
