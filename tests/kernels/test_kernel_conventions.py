"""#17: vLLM's conventions (items 1-7) and the paged-attention features, on the CPU-runnable kernels.

The reference itself is checked against formulas written here (symmetric encoder windows, window 0,
ALiBi's ``slope * (t - p)``, half-open multimodal ranges, lse); every kernel is then checked against
the reference.  TRITON's share: ``test_triton_conventions.py``.
"""

from __future__ import annotations

import functools
import math
import warnings

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402

from paged_cases import amx_decode_host, close, close_result, feature_problems, make_batch  # noqa: E402

from attnsolve.kernels import AttentionMetadata, kernel_for, paged_attention  # noqa: E402
from attnsolve.kernels.cpu import cpu_attn_impl  # noqa: E402
from attnsolve.kernels.dispatch import paged_attention_lse_op, paged_attention_op  # noqa: E402
from attnsolve.kernels.flex import flex_paged_attention  # noqa: E402
from attnsolve.kernels.reference import paged_attention_reference  # noqa: E402

try:
    from strategies import budget
except ImportError:  # pragma: no cover
    def budget(n):
        return n

KERNELS = {
    "cpu_ext": functools.partial(cpu_attn_impl, use_ext=None),
    "cpu_torch": functools.partial(cpu_attn_impl, use_ext=False),
    "flex": flex_paged_attention,
}


@pytest.fixture(params=sorted(KERNELS))
def kernel(request):
    return KERNELS[request.param]


def _dense(q, k, v, positions, visible, *, scale, bias=None, sink=None):
    """One sequence, one head, float64, written from the documented formula."""
    s = (q.double() @ k.double().T) * scale
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~visible, -math.inf)
    cols = [s] + ([torch.full((s.shape[0], 1), float(sink), dtype=torch.float64)] if sink is not None else [])
    full = torch.cat(cols, dim=1)
    lse = torch.logsumexp(full, dim=1)
    p = torch.exp(full - lse.unsqueeze(1).where(torch.isfinite(lse.unsqueeze(1)), torch.zeros(1, dtype=torch.float64)))
    p = torch.where(torch.isfinite(lse).unsqueeze(1), p, torch.zeros_like(p))
    return p[:, : s.shape[1]] @ v.double(), lse


def _one_seq(n, L, D=32, bs=16, seed=0):
    return make_batch([n], [L], 1, 1, D, bs, seed=seed)


def _formula_check(n, L, visible_fn, *, causal, bias_fn=None, sink=None, **kw):
    q, kc, vc, md = _one_seq(n, L)
    k = kc[md.block_table[0, : -(-L // 16)].long()].reshape(-1, 1, 32)[:L, 0]
    v = vc[md.block_table[0, : -(-L // 16)].long()].reshape(-1, 1, 32)[:L, 0]
    p = torch.arange(L - n, L).view(n, 1)
    t = torch.arange(L).view(1, L)
    bias = None if bias_fn is None else bias_fn(p, t)
    want, lse = _dense(q[:, 0], k, v, p, visible_fn(p, t), scale=32 ** -0.5, bias=bias, sink=sink)
    sinks = None if sink is None else torch.tensor([float(sink)])
    got, got_lse = paged_attention_reference(q, kc, vc, md, causal=causal, sinks=sinks, return_lse=True, **kw)
    torch.testing.assert_close(got[:, 0].double(), want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_lse[:, 0].double(), lse, atol=1e-5, rtol=1e-5)


# -- the reference against the documented formulas --------------------------------------------------


def test_reference_window_zero_is_no_window():
    _formula_check(5, 30, lambda p, t: t <= p, causal=True, sliding_window=0)
    _formula_check(5, 30, lambda p, t: t >= 0, causal=False, sliding_window=0)


def test_reference_causal_int_window():
    _formula_check(6, 30, lambda p, t: (t <= p) & (t > p - 4), causal=True, sliding_window=4)


def test_reference_encoder_window_is_symmetric():
    """#17 item 5: vLLM's non-causal window is window_size = (w - 1, w - 1): |t - p| < w."""
    _formula_check(30, 30, lambda p, t: (t - p).abs() < 5, causal=False, sliding_window=5)


@pytest.mark.parametrize("lr", [(3, 2), (0, 5), (-1, 2), (4, -1), (-1, -1)])
def test_reference_left_right_window(lr):
    left, right = lr
    lo = (lambda p, t: t >= 0) if left == -1 else (lambda p, t: t >= p - left)
    hi = (lambda p, t: t >= 0) if right == -1 else (lambda p, t: t <= p + right)
    _formula_check(20, 30, lambda p, t: lo(p, t) & hi(p, t), causal=False, sliding_window=lr)
    _formula_check(20, 30, lambda p, t: lo(p, t) & (t <= p), causal=True, sliding_window=lr)


def test_reference_alibi_is_slope_times_key_minus_query():
    _formula_check(8, 30, lambda p, t: t <= p, causal=True, bias_fn=lambda p, t: 0.25 * (t - p).double(),
                   alibi_slopes=torch.tensor([0.25]))


def test_reference_mm_prefix_ranges_are_half_open_and_bidirectional():
    vis = lambda p, t: (t <= p) | ((p >= 4) & (p < 12) & (t >= 4) & (t < 12))  # noqa: E731
    _formula_check(20, 30, vis, causal=True, mm_prefix_ranges=[[(4, 12)]])
    # (causal and window) or range
    vis = lambda p, t: ((t <= p) & (t > p - 3)) | ((p >= 4) & (p < 12) & (t >= 4) & (t < 12))  # noqa: E731
    _formula_check(20, 30, vis, causal=True, sliding_window=3, mm_prefix_ranges=[[(4, 12)]])


def test_reference_lse_includes_the_sink_and_is_minus_inf_for_empty_rows():
    _formula_check(6, 30, lambda p, t: t <= p, causal=True, sink=0.7)
    q, kc, vc, md = _one_seq(1, 5)
    md = AttentionMetadata(md.query_start_loc, torch.tensor([0], dtype=torch.int32), md.block_table)
    md = AttentionMetadata(torch.tensor([0, 0], dtype=torch.int32), md.seq_lens, md.block_table)
    out, lse = paged_attention_reference(q[:0], kc, vc, md, return_lse=True)
    assert out.shape == (0, 1, 32) and lse.shape == (0, 1)


def test_reference_cross_attention_rows_see_every_key():
    """#17 item 7: n > L with causal=False: each of the n rows sees all L keys."""
    q, kc, vc, md = make_batch([9], [9], 2, 2, 32, 16)
    md = AttentionMetadata(md.query_start_loc, torch.tensor([4], dtype=torch.int32), md.block_table)
    out = paged_attention_reference(q, kc, vc, md, causal=False)
    k = kc[md.block_table[0, 0].long(), :4].double()
    v = vc[md.block_table[0, 0].long(), :4].double()
    s = torch.einsum("nhd,lhd->hnl", q.double(), k) * 32 ** -0.5
    want = torch.einsum("hnl,lhd->nhd", torch.softmax(s, -1), v)
    torch.testing.assert_close(out.double(), want, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="query rows <= seq_len"):
        paged_attention_reference(q, kc, vc, md, causal=True)


# -- items 1-7 on every kernel -------------------------------------------------------------------


def test_item1_repeated_physical_block(kernel):
    q, kc, vc, md = make_batch([48], [48], 4, 4, 32, 16)
    md = AttentionMetadata(md.query_start_loc, md.seq_lens, torch.tensor([[0, 1, 0]], dtype=torch.int32))
    close(kernel(q, kc, vc, md), paged_attention_reference(q, kc, vc, md), q.dtype)


def test_item2_nan_past_seq_len(kernel):
    q, kc, vc, md = make_batch([1, 1, 5], [20, 7, 35], 4, 2, 32, 16)
    kc2, vc2 = kc.clone(), vc.clone()
    for i, L in enumerate([20, 7, 35]):
        b = int(md.block_table[i, (L - 1) // 16])
        kc2[b, L % 16:], vc2[b, L % 16:] = float("nan"), float("nan")
    out = kernel(q, kc2, vc2, md)
    assert not torch.isnan(out).any(), "Likely read out of bounds"
    close(out, paged_attention_reference(q, kc, vc, md), q.dtype)


@pytest.mark.parametrize("layout", ["flashinfer_split", "hnd_permuted"])
def test_item3_strided_kv_views(kernel, layout):
    q, kc, vc, md = make_batch([1, 12], [30, 12], 4, 2, 32, 16)
    nb = kc.shape[0]
    if layout == "flashinfer_split":
        kv = torch.stack([kc, vc], dim=1)  # [nb, 2, bs, Hkv, D]
        k, v = kv[:, 0], kv[:, 1]
    else:
        k = kc.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)  # stored HND, seen NHD
        v = vc.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    assert not k.is_contiguous() and k.shape == (nb, 16, 2, 32)
    close(kernel(q, k, v, md), paged_attention_reference(q, kc, vc, md), q.dtype)


@pytest.mark.parametrize("causal", [True, False])
def test_item4_window_zero_is_no_window(kernel, causal):
    q, kc, vc, md = make_batch([1, 12], [30, 12], 4, 2, 32, 16)
    close(kernel(q, kc, vc, md, sliding_window=0, causal=causal),
          paged_attention_reference(q, kc, vc, md, causal=causal), q.dtype)


def test_item5_symmetric_encoder_window(kernel):
    q, kc, vc, md = make_batch([30, 17], [30, 17], 4, 2, 32, 16)
    for w in (1, 4, 9):
        close(kernel(q, kc, vc, md, causal=False, sliding_window=w),
              paged_attention_reference(q, kc, vc, md, causal=False, sliding_window=(w - 1, w - 1)), q.dtype)


def test_item6_per_sequence_kv_head_scales(kernel):
    q, kc, vc, md = make_batch([1, 12, 1], [30, 12, 50], 4, 2, 32, 16)
    ks, vs = torch.rand(3, 2) + 0.5, torch.rand(3, 2) + 0.5
    want = paged_attention_reference(q, kc, vc, md, k_scale=ks, v_scale=vs)
    close(kernel(q, kc, vc, md, k_scale=ks, v_scale=vs), want, q.dtype)
    # not silently element [0]
    assert (kernel(q, kc, vc, md, k_scale=float(ks[0, 0]), v_scale=float(vs[0, 0])) - want).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"Expected k_scale a float, a 0-d tensor or a \[num_seqs, num_kv_heads\]"):
        kernel(q, kc, vc, md, k_scale=torch.ones(2, 3))


def test_item7_cross_attention_more_rows_than_keys(kernel):
    q, kc, vc, md = make_batch([9, 1, 20], [9, 5, 20], 4, 2, 32, 16)
    md = AttentionMetadata(md.query_start_loc, torch.tensor([4, 5, 6], dtype=torch.int32), md.block_table)
    close(kernel(q, kc, vc, md, causal=False), paged_attention_reference(q, kc, vc, md, causal=False), q.dtype)
    with pytest.raises(ValueError, match="query rows <= seq_len"):
        kernel(q, kc, vc, md, causal=True)


def test_item7_page_size_1_and_16_agree():
    """Same cache seen with page size 16 and as 16x more pages of size 1: the C++ decode steps its online
    softmax over tiles at absolute multiples of 32 tokens, so the two are equal (vLLM's peer asserts it),
    except on an AMX host where 16-row groups inside a block take the AMX score path (~1 bf16 ulp)."""
    q, kc, vc, md = make_batch([1, 1], [40, 23], 4, 2, 64, 16, dtype=torch.bfloat16)
    nb = kc.shape[0]
    bt1 = (md.block_table.long().unsqueeze(-1) * 16 + torch.arange(16)).reshape(2, -1).to(torch.int32)
    md1 = AttentionMetadata(md.query_start_loc, md.seq_lens, bt1)
    a = cpu_attn_impl(q, kc, vc, md)
    b = cpu_attn_impl(q, kc.reshape(nb * 16, 1, 2, 64), vc.reshape(nb * 16, 1, 2, 64), md1)
    if amx_decode_host():
        torch.testing.assert_close(a.float(), b.float(), atol=1.6e-2, rtol=1.6e-2)  # ~1 bf16 ulp
    else:
        assert torch.equal(a, b)
    a32 = cpu_attn_impl(q.float(), kc.float(), vc.float(), md, use_ext=False)
    b32 = cpu_attn_impl(q.float(), kc.float().reshape(nb * 16, 1, 2, 64), vc.float().reshape(nb * 16, 1, 2, 64), md1,
                        use_ext=False)
    torch.testing.assert_close(a32, b32, atol=1e-5, rtol=1e-5)


# -- the features, every CPU kernel against the reference (a hypothesis property) ------------------


@settings(max_examples=budget(40), deadline=None)
@given(feature_problems())
def test_features_match_reference(case):
    (q, kc, vc, md), opts = case
    want = paged_attention_reference(q, kc, vc, md, **opts)
    for name in ("cpu_ext", "cpu_torch"):
        close_result(KERNELS[name](q, kc, vc, md, **opts), want, q.dtype)


# FLEX (eager) costs ~1 s per problem, about 20x the CPU paths (the block-mask build in
# attnsolve/kernels/flex.py): the same property on fewer problems under ci, 10x under nightly.
@settings(max_examples=budget(15), deadline=None)
@given(feature_problems())
def test_flex_features_match_reference(case):
    (q, kc, vc, md), opts = case
    close_result(KERNELS["flex"](q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts), q.dtype)


def test_features_through_dispatch_and_custom_ops():
    q, kc, vc, md = make_batch([1, 12], [30, 12], 4, 2, 32, 16)
    opts = dict(alibi_slopes=torch.rand(4), sliding_window=(5, 2), causal=False, mm_prefix_ranges=[[(2, 9)], []],
                k_scale=torch.rand(2, 2) + 0.5, v_scale=0.5, sinks=torch.randn(4))
    want = paged_attention_reference(q, kc, vc, md, return_lse=True, **opts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        close_result(paged_attention(q, kc, vc, md, return_lse=True, **opts), want, q.dtype)
        close(paged_attention(q, kc, vc, md, **opts), want[0], q.dtype)
        flat = (q, kc, vc, md.query_start_loc, md.seq_lens, md.block_table)
        kw = dict(causal=False, sliding_window=5, sliding_window_right=2, alibi_slopes=opts["alibi_slopes"],
                  mm_prefix_ranges=torch.tensor([[[2, 9]], [[0, 0]]]), k_scale=opts["k_scale"],
                  v_scale=torch.tensor(0.5), sinks=opts["sinks"])
        close(paged_attention_op(*flat, **kw), want[0], q.dtype)
        close_result(paged_attention_lse_op(*flat, **kw), want, q.dtype)
        torch.library.opcheck(paged_attention_lse_op, flat, kw, test_utils=("test_schema", "test_faketensor"))

        def layer(q, kc, vc, qsl, sl, bt):
            out, lse = paged_attention(q, kc, vc, AttentionMetadata(qsl, sl, bt), return_lse=True, **opts)
            return out * 2, lse

        got = torch.compile(layer, fullgraph=True, backend="aot_eager")(*flat)
    close_result((got[0] / 2, got[1]), want, q.dtype)


def test_registry_calling_convention_takes_the_features():
    q, kc, vc, md = make_batch([1, 12], [30, 12], 4, 2, 32, 16)
    opts = dict(alibi_slopes=torch.rand(4), mm_prefix_ranges=[[], [(0, 6)]], return_lse=True)
    want = paged_attention_reference(q, kc, vc, md, **opts)
    for name in ("CPU_ATTN", "FLEX_ATTENTION"):
        close_result(kernel_for(name)(q, kc, vc, md, **opts), want, q.dtype)


@pytest.mark.parametrize("bad, match", [
    (dict(alibi_slopes=torch.rand(3)), r"alibi_slopes of shape \[4\]"),
    (dict(alibi_slopes=torch.arange(4)), "alibi_slopes a floating-point tensor"),
    (dict(mm_prefix_ranges=[[(3, 1)], []]), r"half-open ranges \[start, end\)"),
    (dict(mm_prefix_ranges=[[(0, 1)]]), "one entry per sequence"),
    (dict(mm_prefix_ranges="0-4"), "mm_prefix_ranges a sequence"),
    (dict(sliding_window=(1, 2, 3)), r"an int or a \(left, right\) pair"),
    (dict(return_lse="yes"), "return_lse a bool"),
    (dict(causal=False, sliding_window=3, _cross=True), "no sliding_window with cross-attention"),
])
def test_bad_feature_arguments_are_value_errors(kernel, bad, match):
    q, kc, vc, md = make_batch([1, 12], [30, 12], 4, 2, 32, 16)
    bad = dict(bad)  # parametrize shares the dict between kernels
    if bad.pop("_cross", False):
        md = AttentionMetadata(md.query_start_loc, torch.tensor([30, 5], dtype=torch.int32), md.block_table)
    with pytest.raises(ValueError, match="Expected .*" + match):
        kernel(q, kc, vc, md, **bad)
