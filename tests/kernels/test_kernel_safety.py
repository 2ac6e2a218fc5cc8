"""#15 kernel reproducers as regression tests: memory safety, odd-input semantics, the registry race.

Each bad input must be a ``ValueError`` in the "Expected ..., but got ..." form naming the argument,
on every CPU-runnable kernel (CPU_ATTN's C++ and torch paths, FLEX, the reference); NaN propagates
the same way everywhere.  TRITON's share is in ``test_triton_conventions.py`` (interpreter).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

from paged_cases import make_batch  # noqa: E402

from attnsolve.kernels.cpu import cpu_attn_impl  # noqa: E402
from attnsolve.kernels.flex import flex_paged_attention  # noqa: E402
from attnsolve.kernels.metadata import AttentionMetadata  # noqa: E402
from attnsolve.kernels.reference import paged_attention_reference  # noqa: E402

KERNELS = {
    "cpu_ext": functools.partial(cpu_attn_impl, use_ext=None),
    "cpu_torch": functools.partial(cpu_attn_impl, use_ext=False),
    "cpu_tiled": functools.partial(cpu_attn_impl, use_ext=False, use_flash=False),
    "flex": flex_paged_attention,
    "reference": paged_attention_reference,
}


def _md(md, **kw):
    return AttentionMetadata(kw.get("qsl", md.query_start_loc), kw.get("sl", md.seq_lens), kw.get("bt", md.block_table))


@pytest.fixture(params=sorted(KERNELS))
def kernel(request):
    return KERNELS[request.param]


@pytest.fixture(params=[[1, 1], [20, 1]], ids=["decode", "mixed"])
def batch(request):
    return make_batch(request.param, [40, 33], 4, 2, 32, 16)


# -- memory safety ---------------------------------------------------------------------------------


def test_block_table_on_meta_device_is_an_error_not_a_segfault(kernel, batch):
    q, kc, vc, md = batch
    with pytest.raises(ValueError, match="Expected block_table on a real device"):
        kernel(q, kc, vc, _md(md, bt=md.block_table.to("meta")))


@pytest.mark.parametrize("bad", [2**32 + 3, -(2**40), -1])
def test_int64_block_ids_are_range_checked_before_narrowing(kernel, batch, bad):
    q, kc, vc, md = batch
    bt = md.block_table.long().clone()
    bt[0, 1] = bad
    with pytest.raises(ValueError, match=r"Expected block_table entries in \[0, num_blocks=\d+\).*but got \[" + str(bad)):
        kernel(q, kc, vc, _md(md, bt=bt))


def test_int64_junk_past_the_last_block_is_ignored(kernel, batch):
    q, kc, vc, md = batch
    bt = torch.cat([md.block_table.long(), torch.full((2, 2), 2**40)], dim=1)  # unused columns hold junk
    torch.testing.assert_close(kernel(q, kc, vc, _md(md, bt=bt)).float(),
                               paged_attention_reference(q, kc, vc, md).float(), atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.float64])
def test_float_and_bool_block_tables_are_refused(kernel, batch, dtype):
    q, kc, vc, md = batch
    with pytest.raises(ValueError, match="Expected block_table an integer tensor"):
        kernel(q, kc, vc, _md(md, bt=md.block_table.to(dtype)))


@pytest.mark.parametrize("field", ["qsl", "sl"])
def test_float_lengths_are_refused(kernel, batch, field):
    q, kc, vc, md = batch
    t = (md.query_start_loc if field == "qsl" else md.seq_lens).float()
    with pytest.raises(ValueError, match="Expected (query_start_loc|seq_lens) an integer tensor"):
        kernel(q, kc, vc, _md(md, **{field: t}))


def test_lengths_beyond_the_block_table_capacity_are_refused(kernel, batch):
    q, kc, vc, md = batch
    cap = md.block_table.shape[1] * kc.shape[1]
    with pytest.raises(ValueError, match="Expected seq_lens <= block_table columns"):
        kernel(q, kc, vc, _md(md, sl=torch.tensor([cap + 1, 33], dtype=torch.int32)))


@pytest.mark.parametrize("view", ["last_stride_2", "expanded_tokens", "expanded_heads", "expanded_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_strided_and_expanded_queries(kernel, view, dtype):
    q, kc, vc, md = make_batch([30], [30], 8, 8, 64, 16, dtype=dtype)
    q = {
        "last_stride_2": torch.randn(30, 8, 128)[:, :, ::2],
        "expanded_tokens": torch.randn(1, 8, 64).expand(30, 8, 64),
        "expanded_heads": torch.randn(30, 1, 64).expand(30, 8, 64),
        "expanded_last": torch.randn(30, 8, 1).expand(30, 8, 64),
    }[view].to(dtype)
    tol = 2e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(kernel(q, kc, vc, md).float(), paged_attention_reference(q, kc, vc, md).float(),
                               atol=tol, rtol=tol)


@pytest.mark.parametrize("layout", ["split", "hnd", "last_strided"])
@pytest.mark.parametrize("rows", [[30], [1]], ids=["prefill", "decode"])
def test_strided_kv_cache(kernel, layout, rows):
    q, kc, vc, md = make_batch(rows, [30], 8, 4, 32, 16)
    nb = kc.shape[0]
    if layout == "split":  # FlashInfer's [nb, 2, bs, Hkv, D]
        kv = torch.randn(nb, 2, 16, 4, 32)
        k, v = kv[:, 0], kv[:, 1]
    elif layout == "hnd":  # vLLM CPU's [nb, Hkv, bs, D] permuted
        k = torch.randn(nb, 4, 16, 32).permute(0, 2, 1, 3)
        v = torch.randn(nb, 4, 16, 32).permute(0, 2, 1, 3)
    else:
        k, v = torch.randn(nb, 16, 4, 64)[..., ::2], torch.randn(nb, 16, 4, 64)[..., 1::2]
    torch.testing.assert_close(kernel(q, k, v, md), paged_attention_reference(q, k, v, md), atol=2e-4, rtol=2e-4)


def test_huge_window_is_no_window_not_truncated(kernel, batch):
    q, kc, vc, md = batch
    want = paged_attention_reference(q, kc, vc, md)
    for w in (2**32 + 1, 2**31, 2**63):
        torch.testing.assert_close(kernel(q, kc, vc, md, sliding_window=w), want, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("w", [-1, -5, (-2, 0), (3, -7)])
def test_negative_window_is_one_error_everywhere(kernel, batch, w):
    q, kc, vc, md = batch
    with pytest.raises(ValueError, match="Expected sliding_window"):
        kernel(q, kc, vc, md, sliding_window=w)


@pytest.mark.parametrize("kw, match", [
    (dict(logits_soft_cap=-1.0), "logits_soft_cap"),
    (dict(logits_soft_cap=float("nan")), "logits_soft_cap"),
    (dict(logits_soft_cap=float("inf")), "logits_soft_cap"),
    (dict(scale="x"), "scale a real number"),
    (dict(sliding_window=2.5), "sliding_window an integer"),
    (dict(sliding_window=True), "sliding_window an integer"),
    (dict(k_scale=torch.ones(3)), "k_scale"),
    (dict(v_scale="2"), "v_scale"),
    (dict(sinks=torch.zeros(3)), "sinks of shape"),
    (dict(sinks=torch.zeros(4, dtype=torch.int32)), "sinks a floating-point"),
])
def test_bad_options_are_value_errors(kernel, batch, kw, match):
    q, kc, vc, md = batch
    with pytest.raises(ValueError, match="Expected .*" + match if not match.startswith("Expected") else match):
        kernel(q, kc, vc, md, **kw)


# -- semantics on odd input ------------------------------------------------------------------------


def test_sinks_on_the_meta_device_are_refused(kernel, batch):
    q, kc, vc, md = batch
    with pytest.raises(ValueError, match="Expected sinks on a real device"):
        kernel(q, kc, vc, md, sinks=torch.zeros(4, device="meta"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nan_query_and_nan_scale_give_nan_on_every_path(kernel, dtype):
    q, kc, vc, md = make_batch([1, 20, 3], [40, 20, 9], 4, 2, 64, 16, dtype=dtype)
    q = q.clone()
    q[0, 1, 0] = float("nan")  # row 0 (a decode row), head 1
    out = kernel(q, kc, vc, md)
    nan = torch.isnan(out).any(dim=-1)
    assert nan[0, 1] and int(nan.sum()) == 1, nan
    assert torch.isnan(kernel(q, kc, vc, md, scale=float("nan"))).all()


def test_nan_key_in_a_visible_slot_gives_nan_rows(kernel):
    q, kc, vc, md = make_batch([1, 20], [40, 20], 4, 4, 32, 16)
    kc = kc.clone()
    kc[md.block_table[0, 0], 3, 2] = float("nan")  # sequence 0, position 3, KV head 2
    out = kernel(q, kc, vc, md)
    assert torch.isnan(out[0, 2]).all() and not torch.isnan(out[1:]).any() and not torch.isnan(out[0, :2]).any()


@pytest.mark.parametrize("what, args", [
    ("query dtype", lambda q, kc, vc: (q.to(torch.int32), kc, vc)),
    ("query dtype", lambda q, kc, vc: (q.double(), kc, vc)),
    ("key_cache and value_cache of one dtype", lambda q, kc, vc: (q, kc.to(torch.int8), vc.to(torch.int8))),
    ("key_cache and value_cache of one dtype", lambda q, kc, vc: (q, kc, vc.half())),
])
def test_unsupported_dtypes_are_refused(what, args):
    q, kc, vc, md = make_batch([1], [10], 4, 2, 32, 8)
    for name, k in KERNELS.items():
        if name == "reference" and "float64" in str(args(q, kc, vc)[0].dtype):
            continue  # the float64 reference takes float64 on purpose
        with pytest.raises(ValueError, match=f"Expected {what}"):
            k(*args(q, kc, vc), md)


@pytest.mark.parametrize("case", ["no_kv_heads", "zero_block_size", "heads_not_divisible", "bad_qsl_end",
                                  "decreasing_qsl", "rows_gt_len_causal", "non_tensor_query", "non_md",
                                  "qsl_2d", "block_table_rows"])
def test_bad_shapes_are_value_errors_not_torch_internals(kernel, case):
    q, kc, vc, md = make_batch([2, 1], [10, 5], 4, 2, 32, 8)
    args = [q, kc, vc, md]
    if case == "no_kv_heads":
        args[1], args[2] = kc[:, :, :0], vc[:, :, :0]
    elif case == "zero_block_size":
        args[1], args[2] = kc[:, :0], vc[:, :0]
    elif case == "heads_not_divisible":
        args[0] = q[:, :3]
    elif case == "bad_qsl_end":
        args[3] = _md(md, qsl=torch.tensor([0, 2, 5], dtype=torch.int32))
    elif case == "decreasing_qsl":
        args[3] = _md(md, qsl=torch.tensor([0, 4, 3], dtype=torch.int32))
    elif case == "rows_gt_len_causal":
        args[3] = _md(md, sl=torch.tensor([1, 5], dtype=torch.int32))
    elif case == "non_tensor_query":
        args[0] = q.tolist()
    elif case == "non_md":
        args[3] = (md.query_start_loc, md.seq_lens, md.block_table)
    elif case == "qsl_2d":
        args[3] = _md(md, qsl=md.query_start_loc.view(1, -1))
    elif case == "block_table_rows":
        args[3] = _md(md, bt=md.block_table[:1])
    with pytest.raises(ValueError, match="Expected"):
        kernel(*args)


def test_flex_block_id_minus_one_is_not_the_last_block():
    q, kc, vc, md = make_batch([1], [20], 4, 2, 32, 16)
    bt = md.block_table.clone()
    bt[0, 1] = -1
    with pytest.raises(ValueError, match=r"block_table entries .* but got \[-1\]"):
        flex_paged_attention(q, kc, vc, _md(md, bt=bt))


def test_nan_in_unreferenced_blocks_and_slots_never_reaches_the_output(kernel):
    q, kc, vc, md = make_batch([1, 12], [20, 12], 4, 2, 32, 16, extra_blocks=4)
    used = {int(b) for i, L in enumerate([20, 12]) for b in md.block_table[i, : -(-L // 16)]}
    kc, vc = kc.clone(), vc.clone()
    for b in range(kc.shape[0]):
        if b not in used:
            kc[b], vc[b] = float("nan"), float("nan")
    for i, L in enumerate([20, 12]):  # slots past seq_len in each last block
        b = int(md.block_table[i, (L - 1) // 16])
        kc[b, L % 16 or 16:], vc[b, L % 16 or 16:] = float("nan"), float("nan")
    out = kernel(q, kc, vc, md)
    assert not torch.isnan(out).any()


# -- the registry race ---------------------------------------------------------------------------


def test_registry_cold_start_is_thread_safe():
    """Several threads' first registry queries on a cold start all see every kernel (a fresh process each)."""
    code = textwrap.dedent("""
        import threading
        from attnsolve.kernels import registry
        barrier = threading.Barrier(6)
        errors = []
        def go():
            barrier.wait()
            try:
                registry.kernel_for("CPU_ATTN", "cpu")
                registry.kernel_for("FLEX_ATTENTION", "cpu")
            except Exception as e:
                errors.append(repr(e))
        ts = [threading.Thread(target=go) for _ in range(6)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        print(len(errors), errors[:1])
    """)
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.startswith("0 "), r.stdout
