"""Library adapters (FLASH_ATTN, FLASHINFER, FLASHMLA, FLASHMLA_SPARSE) on CPU with fakes.

flash-attn, flashinfer-python and flash-mla need CUDA and cannot be installed here, so each
is replaced by a fake with the library's call signature that *implements the library's
documented semantics* (paged/packed KV, bottom-right causal, window, soft-cap, fp8
scales, left padding...) in float64 and checks the library's input constraints.  The
adapter's output through the fake must equal ``paged_attention_reference`` /
``mla_decode_reference``: that tests the argument translation, not just that a call happened.

The ``gpu``-marked tests at the end run the real libraries on a CUDA device.
"""

from __future__ import annotations

import math
import types

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from attnsolve.kernels import KernelUnavailableError  # noqa: E402
from attnsolve.kernels.adapters import _common as C  # noqa: E402
from attnsolve.kernels.adapters import describe  # noqa: E402
from attnsolve.kernels.adapters.flash_attn_adapter import flash_attn_paged, sdpa_paged  # noqa: E402
from attnsolve.kernels.adapters.flashinfer_adapter import flashinfer_paged  # noqa: E402
from attnsolve.kernels.adapters.flashmla_adapter import (  # noqa: E402
    flashmla_decode,
    flashmla_sparse,
    global_slots,
)
from attnsolve.kernels.adapters.unsupported import NOT_PROVIDED  # noqa: E402
from attnsolve.kernels.metadata import AttentionMetadata  # noqa: E402
from attnsolve.kernels.reference import mla_decode_reference, paged_attention_reference  # noqa: E402
from attnsolve.kernels.registry import kernel_for, unavailable_reasons  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
_N = max(5, min(100, settings().max_examples // 3))
TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------


def make_batch(q_lens, seq_lens, H, Hkv, D, bs, *, dtype=torch.float16, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    nblk = [-(-s // bs) for s in seq_lens]
    total = sum(nblk) + 2
    perm = torch.randperm(total, generator=g)
    bt = torch.randint(0, total, (len(seq_lens), max(nblk + [1])), generator=g, dtype=torch.int32)
    k = 0
    for i, n in enumerate(nblk):
        bt[i, :n] = perm[k:k + n]
        k += n
    qsl = [0]
    for n in q_lens:
        qsl.append(qsl[-1] + n)
    md = AttentionMetadata(torch.tensor(qsl, dtype=torch.int32, device=device),
                           torch.tensor(seq_lens, dtype=torch.int32, device=device), bt.to(device))
    q = torch.randn(qsl[-1], H, D, generator=g).to(dtype).to(device)
    kc = torch.randn(total, bs, Hkv, D, generator=g).to(dtype).to(device)
    vc = torch.randn(total, bs, Hkv, D, generator=g).to(dtype).to(device)
    return q, kc, vc, md


def make_mla(q_lens, seq_lens, H, bs=64, *, dtype=torch.bfloat16, seed=0, D=576):
    g = torch.Generator().manual_seed(seed)
    nblk = [-(-s // bs) for s in seq_lens]
    total = sum(nblk) + 1
    perm = torch.randperm(total, generator=g)
    bt = torch.zeros(len(seq_lens), max(nblk + [1]), dtype=torch.int32)
    k = 0
    for i, n in enumerate(nblk):
        bt[i, :n] = perm[k:k + n]
        k += n
    qsl = [0]
    for n in q_lens:
        qsl.append(qsl[-1] + n)
    md = AttentionMetadata(torch.tensor(qsl, dtype=torch.int32), torch.tensor(seq_lens, dtype=torch.int32), bt)
    q = torch.randn(qsl[-1], H, D, generator=g).to(dtype)
    kv = torch.randn(total, bs, D, generator=g).to(dtype)
    return q, kv, md


def _softmax_attend(s, v, valid):
    """float64 ``softmax(s) @ v`` over valid keys; rows with none -> 0."""
    s = s.masked_fill(~valid, -math.inf)
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    d = p.sum(-1, keepdim=True)
    return (p / torch.where(d > 0, d, torch.ones_like(d))) @ v


# --------------------------------------------------------------------------------------
# fakes with the libraries' signatures and semantics
# --------------------------------------------------------------------------------------


class FakeFlashAttn(types.ModuleType):
    """``flash_attn`` 2.6+: ``flash_attn_varlen_func`` (packed or paged KV)."""

    def __init__(self):
        super().__init__("flash_attn")
        self.calls = []

    def flash_attn_varlen_func(self, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                               dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False,
                               block_table=None):
        self.calls.append(dict(paged=block_table is not None, window_size=window_size, causal=causal,
                               softcap=softcap, k_dtype=k.dtype))
        assert q.dtype in (torch.float16, torch.bfloat16) and k.dtype == q.dtype == v.dtype
        assert cu_seqlens_q.dtype == torch.int32 and cu_seqlens_k.dtype == torch.int32
        assert dropout_p == 0.0 and alibi_slopes is None and not return_attn_probs
        T, H, D = q.shape
        Hkv = k.shape[-2]
        assert H % Hkv == 0 and k.shape[-1] == D == v.shape[-1]
        cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
        assert max_seqlen_q >= max(b - a for a, b in zip(cq, cq[1:]))
        assert max_seqlen_k >= max(b - a for a, b in zip(ck, ck[1:]))
        if block_table is not None:
            assert k.dim() == 4 and k.shape[1] % 256 == 0, "FA2 paged KV needs page size % 256 == 0"
            assert block_table.dtype == torch.int32
        sc = softmax_scale if softmax_scale is not None else D ** -0.5
        out = torch.empty(T, H, D, dtype=torch.float64)
        left, right = window_size
        for i in range(len(cq) - 1):
            n, L = cq[i + 1] - cq[i], ck[i + 1] - ck[i]
            if block_table is None:
                ki, vi = k[ck[i]:ck[i + 1]], v[ck[i]:ck[i + 1]]
            else:
                bs = k.shape[1]
                blocks = block_table[i, : -(-L // bs)].long()
                ki = k[blocks].reshape(-1, Hkv, D)[:L]
                vi = v[blocks].reshape(-1, Hkv, D)[:L]
            ki = ki.double().repeat_interleave(H // Hkv, 1)
            vi = vi.double().repeat_interleave(H // Hkv, 1)
            qi = q[cq[i]:cq[i + 1]].double()
            s = torch.einsum("nhd,lhd->hnl", qi, ki) * sc
            if softcap:
                s = softcap * torch.tanh(s / softcap)
            pos = torch.arange(L - n, L).view(-1, 1)  # bottom-right alignment
            j = torch.arange(L).view(1, -1)
            valid = torch.ones(n, L, dtype=torch.bool)
            if causal:
                valid &= j <= pos
            if left >= 0:
                valid &= j >= pos - left
            if right >= 0:
                valid &= j <= pos + right
            o = _softmax_attend(s, vi.transpose(0, 1), valid.unsqueeze(0))  # [H, n, D]
            out[cq[i]:cq[i + 1]] = o.transpose(0, 1)
        return out.to(q.dtype)


class FakeFlashInfer(types.ModuleType):
    """``flashinfer`` 0.2+: ``BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD").plan/run``."""

    def __init__(self):
        super().__init__("flashinfer")
        self.plans = []
        lib = self

        class BatchPrefillWithPagedKVCacheWrapper:
            def __init__(self, float_workspace_buffer, kv_layout="NHD", use_cuda_graph=False, **kw):
                assert float_workspace_buffer.dtype == torch.uint8 and kv_layout == "NHD"
                self.p = None

            def plan(self, qo_indptr, paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len,
                     num_qo_heads, num_kv_heads, head_dim_qk, page_size, head_dim_vo=None, custom_mask=None,
                     packed_custom_mask=None, causal=False, pos_encoding_mode="NONE",
                     use_fp16_qk_reduction=False, sm_scale=None, window_left=-1, logits_soft_cap=None,
                     rope_scale=None, rope_theta=None, q_data_type="float16", kv_data_type=None, **kw):
                for t in (qo_indptr, paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len):
                    assert t.dtype == torch.int32
                assert pos_encoding_mode == "NONE"
                self.p = dict(qo=qo_indptr.tolist(), indptr=paged_kv_indptr.tolist(),
                              indices=paged_kv_indices.tolist(), last=paged_kv_last_page_len.tolist(),
                              H=num_qo_heads, Hkv=num_kv_heads, D=head_dim_qk, page=page_size, causal=causal,
                              sm_scale=sm_scale, window_left=window_left, cap=logits_soft_cap,
                              q_dtype=q_data_type, kv_dtype=kv_data_type)
                lib.plans.append(self.p)

            def run(self, q, paged_kv_cache, *args, out=None, lse=None, return_lse=False, k_scale=None,
                    v_scale=None, **kw):
                p = self.p
                kc, vc = paged_kv_cache
                assert q.dtype == p["q_dtype"] and kc.dtype == p["kv_dtype"]
                assert q.dtype in (torch.float16, torch.bfloat16)
                assert kc.shape[1] == p["page"] and kc.shape[2] == p["Hkv"] and q.shape[1:] == (p["H"], p["D"])
                H, Hkv, D, page = p["H"], p["Hkv"], p["D"], p["page"]
                sc = (p["sm_scale"] if p["sm_scale"] is not None else D ** -0.5) * (k_scale or 1.0)
                res = torch.zeros(q.shape, dtype=torch.float64)
                for i in range(len(p["qo"]) - 1):
                    q0, q1 = p["qo"][i], p["qo"][i + 1]
                    pages = p["indices"][p["indptr"][i]:p["indptr"][i + 1]]
                    if q1 == q0 or not pages:
                        continue
                    L = (len(pages) - 1) * page + p["last"][i]
                    n = q1 - q0
                    ki = kc[pages].reshape(-1, Hkv, D)[:L].double().repeat_interleave(H // Hkv, 1)
                    vi = vc[pages].reshape(-1, Hkv, D)[:L].double().repeat_interleave(H // Hkv, 1)
                    s = torch.einsum("nhd,lhd->hnl", q[q0:q1].double(), ki) * sc
                    if p["cap"]:
                        s = p["cap"] * torch.tanh(s / p["cap"])
                    pos = torch.arange(L - n, L).view(-1, 1)
                    j = torch.arange(L).view(1, -1)
                    valid = torch.ones(n, L, dtype=torch.bool)
                    if p["causal"]:
                        valid &= j <= pos
                    if p["window_left"] >= 0:
                        valid &= j >= pos - p["window_left"]
                    o = _softmax_attend(s, vi.transpose(0, 1), valid.unsqueeze(0)) * (v_scale or 1.0)
                    res[q0:q1] = o.transpose(0, 1)
                return res.to(q.dtype)

        self.BatchPrefillWithPagedKVCacheWrapper = BatchPrefillWithPagedKVCacheWrapper


class FakeFlashMLA(types.ModuleType):
    """``flash_mla``: ``get_mla_metadata`` + ``flash_mla_with_kvcache`` (dense), ``flash_mla_sparse_fwd``."""

    def __init__(self, new_api=False):
        super().__init__("flash_mla")
        self.new_api = new_api
        self.calls = []

    def get_mla_metadata(self, cache_seqlens, num_q_tokens_per_head_k, num_heads_k, *args, **kw):
        assert cache_seqlens.dtype == torch.int32 and num_heads_k == 1
        self.calls.append(("meta", num_q_tokens_per_head_k))
        if self.new_api:
            return types.SimpleNamespace(have_initialized=False), None
        return torch.zeros(4, 8, dtype=torch.int32), torch.zeros(cache_seqlens.numel() + 1, dtype=torch.int32)

    def flash_mla_with_kvcache(self, q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata,
                               num_splits=None, softmax_scale=None, causal=False, **kw):
        assert (num_splits is None) == self.new_api
        b, s_q, h, d = q.shape
        assert k_cache.dim() == 4 and k_cache.shape[1] == 64 and k_cache.shape[2] == 1 and d == 576
        assert head_dim_v == 512 and q.dtype in (torch.float16, torch.bfloat16)
        assert self.calls[-1] == ("meta", s_q * h)
        sc = softmax_scale if softmax_scale is not None else d ** -0.5
        out = torch.full((b, s_q, h, head_dim_v), float("nan"), dtype=torch.float64)
        for i in range(b):
            L = int(cache_seqlens[i])
            blocks = block_table[i, : -(-L // 64)].long()
            kv = k_cache[blocks].reshape(-1, d)[:L].double()
            pos = torch.arange(L - s_q, L).view(-1, 1)  # bottom-right
            valid = torch.arange(L).view(1, -1) <= pos if causal else torch.ones(s_q, L, dtype=torch.bool)
            s = torch.einsum("nhd,ld->hnl", q[i].double(), kv) * sc
            o = _softmax_attend(s, kv[:, :head_dim_v], valid.unsqueeze(0))  # [h, s_q, dv]
            o = o.transpose(0, 1)
            o[(pos.view(-1) < 0)] = float("nan")  # rows before the sequence: garbage, like the GPU
            out[i] = o
        return out.to(q.dtype), torch.zeros(b, h, s_q)

    def flash_mla_sparse_fwd(self, q, kv, indices, sm_scale, d_v=512, attn_sink=None, topk_length=None):
        s_q, h_q, d = q.shape
        assert h_q in (64, 128) and q.dtype == torch.bfloat16 and kv.dim() == 3 and kv.shape[1] == 1
        assert indices.shape[:2] == (s_q, 1) and indices.shape[2] % 64 == 0 and indices.dtype == torch.int32
        flat = kv[:, 0].double()
        out = torch.zeros(s_q, h_q, d_v, dtype=torch.float64)
        for t in range(s_q):
            idx = indices[t, 0].long()
            valid = (idx >= 0) & (idx < flat.shape[0])
            sel = flat[idx.clamp(0, flat.shape[0] - 1)]
            s = (q[t].double() @ sel.T) * sm_scale
            out[t] = _softmax_attend(s, sel[:, :d_v], valid.unsqueeze(0))
        return out.to(q.dtype), torch.zeros(s_q, h_q), torch.zeros(s_q, h_q)


@pytest.fixture
def fake(monkeypatch):
    """Install a fake library as package ``name`` for the adapters (undone after the test)."""

    def install(name, module):
        monkeypatch.setitem(C._LIBS, name, module)
        return module

    return install


def check(out, ref, dtype):
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out.float(), ref.float(), **TOL[dtype])


# --------------------------------------------------------------------------------------
# FLASH_ATTN via flash_attn
# --------------------------------------------------------------------------------------


@st.composite
def std_cases(draw):
    seqs = []
    for _ in range(draw(st.integers(1, 3))):
        L = draw(st.integers(1, 300))
        n = draw(st.sampled_from([1, L, min(L, draw(st.integers(1, 6)))]))
        seqs.append((n, L))
    return dict(
        seqs=seqs,
        hkv=draw(st.sampled_from([1, 2])),
        group=draw(st.sampled_from([1, 2, 4])),
        bs=draw(st.sampled_from([16, 32, 256])),
        dtype=draw(st.sampled_from([torch.float16, torch.bfloat16])),
        causal=draw(st.sampled_from([True, True, False])),
        window=draw(st.one_of(st.none(), st.integers(1, 40))),
        cap=draw(st.sampled_from([None, 10.0])),
        fp8=draw(st.sampled_from([None, None, torch.float8_e4m3fn])),
        fp8_query=draw(st.sampled_from([False, False, True])),  # vLLM's quantized query + q_scale (bf16 models)
        seed=draw(st.integers(0, 1000)),
    )


def _build(case, D):
    q, kc, vc, md = make_batch([a for a, _ in case["seqs"]], [b for _, b in case["seqs"]],
                               case["hkv"] * case["group"], case["hkv"], D, case["bs"], dtype=case["dtype"],
                               seed=case["seed"])
    opts = dict(causal=case["causal"], sliding_window=case["window"], logits_soft_cap=case["cap"])
    if case["fp8"] is not None:
        kc, vc = (kc.float() / 2).to(case["fp8"]), (vc.float() / 2).to(case["fp8"])
        opts.update(k_scale=2.0, v_scale=torch.tensor(2.0))
    if case.get("fp8_query") and case["dtype"] == torch.bfloat16:
        q = (q.float() * 4).to(torch.float8_e4m3fn)
        opts.update(q_scale=0.25)
    return q, kc, vc, md, opts


@settings(max_examples=_N, deadline=None)
@given(std_cases())
def test_flash_attn_translation(case):
    lib = FakeFlashAttn()
    C._LIBS["flash_attn"] = lib
    try:
        q, kc, vc, md, opts = _build(case, 64)
        out = flash_attn_paged(q, kc, vc, md, **opts)
    finally:
        C._LIBS.pop("flash_attn", None)
    check(out, paged_attention_reference(q, kc, vc, md, **opts), case["dtype"])
    call = lib.calls[-1]
    assert call["paged"] == (case["bs"] % 256 == 0 and case["fp8"] is None)
    if case["window"] is not None:
        # vLLM's convention: a non-causal (encoder) window is symmetric, (w - 1, w - 1)
        assert call["window_size"] == (case["window"] - 1, 0 if case["causal"] else case["window"] - 1)


def test_flash_attn_refuses_what_fa2_cannot(fake):
    fake("flash_attn", FakeFlashAttn())
    q, kc, vc, md = make_batch([1, 3], [5, 9], 4, 2, 64, 16)
    with pytest.raises(KernelUnavailableError) as ei:
        flash_attn_paged(q, kc, vc, md, sinks=torch.zeros(4))
    assert ei.value.backend == "FLASH_ATTN" and ei.value.alternative == "TRITON_ATTN"
    assert "sinks" in str(ei.value)
    with pytest.raises(KernelUnavailableError, match="fp16/bf16"):
        flash_attn_paged(q.float(), kc.float(), vc.float(), md)
    q, kc, vc, md = make_batch([1], [5], 4, 2, 36, 16)
    with pytest.raises(KernelUnavailableError, match="multiple of 8"):
        flash_attn_paged(q, kc, vc, md)


# --------------------------------------------------------------------------------------
# FLASH_ATTN fallback: torch SDPA (real, on CPU)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [True, False])
def test_sdpa_fallback_matches_reference(dtype, causal, fake):
    fake("flash_attn", None)  # not installed -> SDPA
    q, kc, vc, md = make_batch([1, 7, 5, 0], [20, 7, 33, 4], 8, 2, 64, 16, dtype=dtype, seed=3)
    out = flash_attn_paged(q, kc, vc, md, causal=causal, scale=0.1)
    check(out, paged_attention_reference(q, kc, vc, md, causal=causal, scale=0.1), dtype)


def test_sdpa_fallback_fp8_cache():
    q, kc, vc, md = make_batch([2, 1], [9, 40], 4, 4, 32, 8, dtype=torch.bfloat16, seed=4)
    kc8, vc8 = kc.to(torch.float8_e5m2), vc.to(torch.float8_e5m2)
    out = sdpa_paged(q, kc8, vc8, md, k_scale=0.5, v_scale=2.0)
    check(out, paged_attention_reference(q, kc8, vc8, md, k_scale=0.5, v_scale=2.0), torch.bfloat16)


def test_sdpa_fallback_refuses_uncovered_features(fake):
    fake("flash_attn", None)
    q, kc, vc, md = make_batch([1], [5], 4, 2, 64, 16)
    for kw, word in ((dict(sliding_window=4), "sliding window"), (dict(logits_soft_cap=5.0), "soft-cap"),
                     (dict(sinks=torch.zeros(4)), "sinks")):
        with pytest.raises(KernelUnavailableError, match=word) as ei:
            flash_attn_paged(q, kc, vc, md, **kw)
        assert ei.value.alternative == "TRITON_ATTN"


# --------------------------------------------------------------------------------------
# FLASHINFER
# --------------------------------------------------------------------------------------


@settings(max_examples=_N, deadline=None)
@given(std_cases())
def test_flashinfer_translation(case):
    lib = FakeFlashInfer()
    C._LIBS["flashinfer"] = lib
    try:
        q, kc, vc, md, opts = _build(case, 64)
        if case["window"] is not None and not case["causal"]:
            # FlashInfer has a left window only; vLLM's encoder window is symmetric: refused, by name
            with pytest.raises(KernelUnavailableError, match="two-sided"):
                flashinfer_paged(q, kc, vc, md, **opts)
            return
        out = flashinfer_paged(q, kc, vc, md, **opts)
    finally:
        C._LIBS.pop("flashinfer", None)
    check(out, paged_attention_reference(q, kc, vc, md, **opts), case["dtype"])
    p = lib.plans[-1]
    assert p["window_left"] == (case["window"] - 1 if case["window"] is not None else -1)


def test_flashinfer_page_metadata():
    md = AttentionMetadata(torch.tensor([0, 1, 3], dtype=torch.int32), torch.tensor([17, 32], dtype=torch.int32),
                           torch.tensor([[5, 2, 9], [7, 1, 4]], dtype=torch.int32))
    indptr, indices, last = C.kv_indptr_paged(md, 16, "cpu")
    assert indptr.tolist() == [0, 2, 4] and indices.tolist() == [5, 2, 7, 1] and last.tolist() == [1, 16]


def test_flashinfer_refusals(fake):
    fake("flashinfer", None)
    q, kc, vc, md = make_batch([1], [5], 4, 2, 64, 16)
    with pytest.raises(KernelUnavailableError, match="flashinfer-python") as ei:
        flashinfer_paged(q, kc, vc, md)
    assert ei.value.alternative == "TRITON_ATTN"
    fake("flashinfer", FakeFlashInfer())
    with pytest.raises(KernelUnavailableError, match="sinks"):
        flashinfer_paged(q, kc, vc, md, sinks=torch.zeros(4))
    q, kc, vc, md = make_batch([1], [5], 4, 2, 80, 16)
    with pytest.raises(KernelUnavailableError, match="head sizes"):
        flashinfer_paged(q, kc, vc, md)


# --------------------------------------------------------------------------------------
# FLASHMLA / FLASHMLA_SPARSE
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("new_api", [False, True])
@pytest.mark.parametrize("q_lens,seq_lens", [([1, 1, 1], [70, 5, 130]), ([1, 3, 2], [64, 9, 100]),
                                             ([2, 2], [2, 65])])
def test_flashmla_dense_translation(new_api, q_lens, seq_lens, fake):
    fake("flash_mla", FakeFlashMLA(new_api=new_api))
    q, kv, md = make_mla(q_lens, seq_lens, 16, seed=len(q_lens))
    out = flashmla_decode(q, kv, md, scale=192 ** -0.5)
    assert not out.isnan().any()
    check(out, mla_decode_reference(q, kv, md, scale=192 ** -0.5), torch.bfloat16)


@settings(max_examples=max(5, _N // 3), deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(1, 200)), min_size=1, max_size=4), st.booleans(),
       st.integers(0, 1000))
def test_flashmla_dense_translation_varlen(seqs, new_api, seed):
    seqs = [(min(n, L), L) for n, L in seqs]
    if sum(n for n, _ in seqs) == 0:
        seqs[0] = (1, seqs[0][1])
    C._LIBS["flash_mla"] = FakeFlashMLA(new_api=new_api)
    try:
        q, kv, md = make_mla([n for n, _ in seqs], [L for _, L in seqs], 16, seed=seed)
        out = flashmla_decode(q, kv, md)
    finally:
        C._LIBS.pop("flash_mla", None)
    assert not out.isnan().any()
    check(out, mla_decode_reference(q, kv, md), torch.bfloat16)


def test_flashmla_sparse_translation(fake):
    fake("flash_mla", FakeFlashMLA())
    q, kv, md = make_mla([1, 2, 1], [70, 9, 200], 16, seed=5)
    g = torch.Generator().manual_seed(0)
    idx = torch.full((4, 40), -1, dtype=torch.int32)
    for t, L in enumerate([70, 9, 9, 200]):
        k = min(L, 30)
        idx[t, :k] = torch.randint(0, L, (k,), generator=g, dtype=torch.int32)
    out = flashmla_sparse(q, kv, md, topk_indices=idx)
    check(out, mla_decode_reference(q, kv, md, topk_indices=idx), torch.bfloat16)


def test_global_slots():
    md = AttentionMetadata(torch.tensor([0, 1, 3], dtype=torch.int32), torch.tensor([70, 9], dtype=torch.int32),
                           torch.tensor([[3, 0], [1, 2]], dtype=torch.int32))
    idx = torch.tensor([[0, 69, -1], [8, -1, 0], [1, 2, 3]], dtype=torch.int32)
    assert global_slots(idx, md, 64).tolist() == [[192, 5, -1], [72, -1, 64], [65, 66, 67]]


def test_flashmla_refusals(fake):
    fake("flash_mla", FakeFlashMLA())
    q, kv, md = make_mla([1], [10], 16, bs=16)
    with pytest.raises(KernelUnavailableError, match="block size 64") as ei:
        flashmla_decode(q, kv, md)
    assert ei.value.alternative == "TRITON_MLA"
    q, kv, md = make_mla([1], [10], 16, D=80)
    with pytest.raises(KernelUnavailableError, match="512"):
        flashmla_decode(q, kv, md, kv_lora_rank=64)
    q, kv, md = make_mla([1], [10], 16)
    with pytest.raises(KernelUnavailableError) as ei:
        flashmla_decode(q, kv, md, topk_indices=torch.zeros(1, 4, dtype=torch.int32))
    assert ei.value.alternative == "FLASHMLA_SPARSE"
    with pytest.raises(KernelUnavailableError) as ei:
        flashmla_sparse(q, kv, md)
    assert ei.value.alternative == "FLASHMLA"
    with pytest.raises(KernelUnavailableError, match="bfloat16"):
        flashmla_sparse(q.half(), kv.half(), md, topk_indices=torch.zeros(1, 4, dtype=torch.int32))
    fake("flash_mla", None)
    with pytest.raises(KernelUnavailableError, match="flash-mla"):
        flashmla_decode(q, kv, md)


# --------------------------------------------------------------------------------------
# registry: what is runnable here and why not
# --------------------------------------------------------------------------------------

CUDA_BACKENDS = ["FLASH_ATTN", "FLASHINFER", "FLASHMLA", "FLASHMLA_SPARSE", *NOT_PROVIDED]


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_registered_with_reason_off_gpu(backend):
    reasons = unavailable_reasons(backend, "cpu")
    assert reasons and "no kernel is registered" not in " ".join(reasons)
    if not HAS_CUDA:
        with pytest.raises(KernelUnavailableError) as ei:
            kernel_for(backend, "cuda")
        assert ei.value.backend == backend and ei.value.missing


@pytest.mark.parametrize("backend", sorted(NOT_PROVIDED))
def test_not_provided_backends_explain_and_point_elsewhere(backend):
    why, alt = NOT_PROVIDED[backend]
    assert unavailable_reasons(backend, "cuda") == (why,) or not HAS_CUDA
    from attnsolve.kernels.adapters import unsupported

    fn = [v for k, v in vars(unsupported).items() if k == "_make"][0]
    kernel = fn(backend, why, alt)
    with pytest.raises(KernelUnavailableError) as ei:
        kernel(None, None, None)
    assert ei.value.alternative == alt and why in str(ei.value)


def test_describe_lists_every_adapter():
    rows = {r["backend"]: r for r in describe()}
    assert set(CUDA_BACKENDS) <= set(rows)
    assert rows["FLASH_ATTN"]["package"] == "flash-attn" and rows["FLASHINFER"]["package"] == "flashinfer-python"
    assert rows["FLASHMLA"]["compute_capability"] == "9.x"


def test_importing_adapters_imports_no_gpu_library():
    import subprocess
    import sys

    code = ("import sys, attnsolve.kernels.adapters\n"
            "bad = [m for m in ('flash_attn', 'flashinfer', 'flash_mla') if m in sys.modules]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------------------
# real GPU
# --------------------------------------------------------------------------------------

def _cuda(*ts):
    return [t.cuda() if isinstance(t, torch.Tensor) else t for t in ts]


def _md_cuda(md):
    return AttentionMetadata(md.query_start_loc.cuda(), md.seq_lens.cuda(), md.block_table.cuda())


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (none visible to torch)")
@pytest.mark.parametrize("backend,bs", [("FLASH_ATTN", 16), ("FLASH_ATTN", 256), ("FLASHINFER", 16),
                                        ("FLEX_ATTENTION", 16)])
@pytest.mark.parametrize("opts", [{}, {"sliding_window": 64}, {"logits_soft_cap": 30.0}])
def test_gpu_standard_backends(backend, bs, opts):
    reasons = unavailable_reasons(backend, "cuda")
    if reasons:
        pytest.skip("; ".join(reasons))
    if backend == "FLASH_ATTN" and C.load("flash_attn") is None and opts:
        pytest.skip("flash-attn not installed: the SDPA fallback has no window/soft-cap")
    q, kc, vc, md = make_batch([1, 1, 200, 17], [1000, 5, 200, 700], 32, 8, 128, bs, dtype=torch.bfloat16)
    out = kernel_for(backend, "cuda")(*_cuda(q, kc, vc), _md_cuda(md), **opts)
    check(out.cpu(), paged_attention_reference(q, kc, vc, md, **opts), torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (none visible to torch)")
@pytest.mark.parametrize("sparse", [False, True])
def test_gpu_flashmla(sparse):
    backend = "FLASHMLA_SPARSE" if sparse else "FLASHMLA"
    reasons = unavailable_reasons(backend, "cuda")
    if reasons:
        pytest.skip("; ".join(reasons))
    q, kv, md = make_mla([1, 1, 2], [1000, 64, 4097], 128 if not sparse else 64, seed=9)
    idx = None
    if sparse:
        idx = torch.stack([torch.randperm(L)[:256] for L in [1000, 64 * 4 + 1, 4097, 4097]]).to(torch.int32)
        idx[1] = torch.where(idx[1] < 64, idx[1], torch.full_like(idx[1], -1))
    out = kernel_for(backend, "cuda")(q.cuda(), kv.cuda(), _md_cuda(md), scale=192 ** -0.5,
                                      topk_indices=None if idx is None else idx.cuda())
    check(out.cpu(), mla_decode_reference(q, kv, md, scale=192 ** -0.5, topk_indices=idx), torch.bfloat16)


@pytest.mark.parametrize("which", ["flash_attn", "flashinfer"])
@pytest.mark.parametrize("bs", [16, 256])
def test_fp8_query_descale_reaches_the_library(which, bs):
    """The libraries get the exactly widened query and the softmax scale times ``q_scale``."""
    case = dict(seqs=[(1, 40), (7, 7), (3, 300)], hkv=2, group=2, bs=bs, dtype=torch.bfloat16, causal=True,
                window=None, cap=None, fp8=None, fp8_query=True, seed=5)
    lib = FakeFlashAttn() if which == "flash_attn" else FakeFlashInfer()
    C._LIBS[which] = lib
    try:
        q, kc, vc, md, opts = _build(case, 64)
        fn = flash_attn_paged if which == "flash_attn" else flashinfer_paged
        out = fn(q, kc, vc, md, **opts)
    finally:
        C._LIBS.pop(which, None)
    assert q.dtype == torch.float8_e4m3fn and opts["q_scale"] == 0.25
    ref = paged_attention_reference(q.double() * 0.25, kc.double(), vc.double(), md, scale=64 ** -0.5)
    check(out, ref.to(torch.bfloat16), torch.bfloat16)
