"""The references themselves: paged reference vs SDPA on contiguous KV; MLA reference vs a brute force."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from attnsolve.kernels.metadata import AttentionMetadata  # noqa: E402
from attnsolve.kernels.reference import gather_sequence, mla_decode_reference, paged_attention_reference  # noqa: E402
from paged_cases import make_batch  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/kernels/conftest.py)


@pytest.mark.parametrize("gqa", [1, 4])
def test_paged_reference_equals_sdpa_per_sequence(gqa):
    q, kc, vc, md = make_batch([5, 1, 7], [12, 30, 7], 4 * gqa, 4, 32, 8, seed=8)
    out = paged_attention_reference(q, kc, vc, md)
    qsl, lens = md.host_lists()
    for i, L in enumerate(lens):
        q0, q1 = qsl[i], qsl[i + 1]
        k = gather_sequence(kc, md.block_table[i], L).transpose(0, 1)[None]
        v = gather_sequence(vc, md.block_table[i], L).transpose(0, 1)[None]
        n = q1 - q0
        mask = torch.ones(n, L, dtype=torch.bool).tril(L - n)  # bottom-right causal
        ref = torch.nn.functional.scaled_dot_product_attention(
            q[q0:q1].transpose(0, 1)[None], k, v, attn_mask=mask, enable_gqa=True)[0].transpose(0, 1)
        torch.testing.assert_close(out[q0:q1], ref, atol=1e-5, rtol=1e-5)


def test_sink_softcap_window_by_hand():
    """One query, two keys, one head: the formulas of the docs, written out."""
    q = torch.tensor([[[1.0, 0.0]]])
    kc = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # one block of 2 slots
    vc = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    md = AttentionMetadata(torch.tensor([0, 1], dtype=torch.int32), torch.tensor([2], dtype=torch.int32),
                           torch.tensor([[0]], dtype=torch.int32))
    s = torch.tensor([2.0, 0.0])  # scale 1
    cap = 1.5
    sc = cap * torch.tanh(s / cap)
    sink = 0.7
    p = torch.exp(sc) / (torch.exp(sc).sum() + math.exp(sink))
    out = paged_attention_reference(q, kc, vc, md, scale=1.0, logits_soft_cap=cap, sinks=torch.tensor([sink]))
    torch.testing.assert_close(out[0, 0], p, atol=1e-6, rtol=1e-6)
    only_last = paged_attention_reference(q, kc, vc, md, scale=1.0, sliding_window=1)
    torch.testing.assert_close(only_last[0, 0], torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("sparse", [False, True])
def test_mla_reference_brute_force(sparse):
    g = torch.Generator().manual_seed(9)
    rank, rope, H, bs = 16, 4, 3, 4
    lens, qls = [9, 5], [2, 1]
    nb = 6
    kv = torch.randn(nb, bs, rank + rope, generator=g)
    bt = torch.tensor([[4, 1, 5], [0, 2, 3]], dtype=torch.int32)
    md = AttentionMetadata(torch.tensor([0, 2, 3], dtype=torch.int32), torch.tensor(lens, dtype=torch.int32), bt)
    q = torch.randn(3, H, rank + rope, generator=g)
    topk = torch.tensor([[0, 3, 8, -1], [7, -1, -1, -1], [4, 0, 2, 1]], dtype=torch.int32) if sparse else None
    out = mla_decode_reference(q, kv, md, kv_lora_rank=rank, scale=0.2, topk_indices=topk)
    rows = [(0, 0, 7), (0, 1, 8), (1, 2, 4)]  # (seq, row, position)
    for s, r, p in rows:
        seq = gather_sequence(kv, bt[s], lens[s]).double()
        keys = [t for t in topk[r].tolist() if t >= 0] if sparse else list(range(p + 1))
        for h in range(H):
            sc = torch.stack([q[r, h].double() @ seq[t] for t in keys]) * 0.2
            w = torch.softmax(sc, 0)
            ref = sum(w[j] * seq[t, :rank] for j, t in enumerate(keys))
            torch.testing.assert_close(out[r, h].double(), ref, atol=1e-5, rtol=1e-5)
    assert out.shape == (3, H, rank)


def test_rows_without_keys_give_zeros_and_the_sink_lse():
    """Non-causal rows of a sequence with no context (seq_len 0) see no key: zeros, lse = sink (or
    -inf); the sequences around it are unaffected."""
    q = torch.randn(4, 2, 8, dtype=torch.float64)
    kc = torch.randn(3, 4, 1, 8, dtype=torch.float64)
    md = AttentionMetadata(torch.tensor([0, 1, 3, 4], dtype=torch.int32), torch.tensor([3, 0, 5], dtype=torch.int32),
                           torch.tensor([[0, 1], [2, 2], [1, 2]], dtype=torch.int32))
    sinks = torch.tensor([0.5, -1.0])
    out, lse = paged_attention_reference(q, kc, kc, md, causal=False, sinks=sinks, return_lse=True)
    assert torch.equal(out[1:3], torch.zeros(2, 2, 8, dtype=torch.float64))
    assert torch.equal(lse[1:3], sinks.view(1, 2).expand(2, 2).float())
    _, lse_plain = paged_attention_reference(q, kc, kc, md, causal=False, return_lse=True)
    assert torch.isneginf(lse_plain[1:3]).all() and torch.isfinite(lse_plain[[0, 3]]).all()
    alone = AttentionMetadata(torch.tensor([0, 1], dtype=torch.int32), torch.tensor([5], dtype=torch.int32),
                              torch.tensor([[1, 2]], dtype=torch.int32))
    torch.testing.assert_close(out[3:], paged_attention_reference(q[3:], kc, kc, alone, causal=False, sinks=sinks))
