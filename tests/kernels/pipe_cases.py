"""Deterministic CPU_ATTN decode cases for the pipelined-path equality test (run in this process and in
a child with ATTNSOLVE_CPU_PIPE=0): bf16 caches the AMX path takes, with partial tiles, windows, sinks,
soft-capping, several query rows and shuffled blocks."""

from __future__ import annotations

import sys

import torch

from attnsolve.kernels import AttentionMetadata, kernel_for

# (heads, kv heads, head size, block size, seq lens, query rows per sequence, options)
CASES = (
    (32, 8, 128, 16, (37, 100, 513), 1, {}),
    (16, 2, 64, 32, (700, 33), 1, {"sliding_window": 100}),
    (8, 8, 256, 64, (129, 64), 3, {}),
    (16, 4, 128, 16, (300,), 2, {"logits_soft_cap": 30.0}),
    (8, 1, 64, 16, (257, 18, 1), 1, {"sinks": True}),
)


def outputs() -> list[torch.Tensor]:
    fn = kernel_for("CPU_ATTN")
    outs = []
    for i, (H, hkv, d, bs, lens, n, opts) in enumerate(CASES):
        g = torch.Generator().manual_seed(100 + i)
        nblk = sum(-(-L // bs) for L in lens)
        kc = torch.randn(nblk + 2, bs, hkv, d, generator=g).to(torch.bfloat16)
        vc = torch.randn(nblk + 2, bs, hkv, d, generator=g).to(torch.bfloat16)
        order = torch.randperm(nblk + 2, generator=g).to(torch.int32)
        width = max(-(-L // bs) for L in lens)
        bt = torch.zeros(len(lens), width, dtype=torch.int32)
        k = 0
        for j, L in enumerate(lens):
            m = -(-L // bs)
            bt[j, :m] = order[k:k + m]
            k += m
        rows = [min(n, L) for L in lens]
        qsl = torch.tensor([0] + list(torch.tensor(rows).cumsum(0).tolist()), dtype=torch.int32)
        md = AttentionMetadata(qsl, torch.tensor(lens, dtype=torch.int32), bt)
        q = torch.randn(int(qsl[-1]), H, d, generator=g).to(torch.bfloat16)
        kw = dict(opts)
        if kw.pop("sinks", False):
            kw["sinks"] = torch.randn(H, generator=g)
        outs.append(fn(q, kc, vc, md, **kw))
    return outs


if __name__ == "__main__":
    torch.save(outputs(), sys.argv[1])
