"""Deterministic CPU_ATTN decode cases for the pipelined-path equality test (run in this process and in
a child with ATTNSOLVE_CPU_PIPE=0) and the scheduling-switch tests (a child per setting): bf16 caches the AMX path takes, and fp8 caches (widened to bf16 per KV
head inside the pipelined path, any block size), with partial tiles, windows, sinks, soft-capping, a
v_scale, several query rows and shuffled blocks."""

from __future__ import annotations

import sys

import torch

from attnsolve.kernels import kernel_for
from paged_cases import make_batch

# (heads, kv heads, head size, block size, seq lens, query rows per sequence, options)
CASES = (
    (32, 8, 128, 16, (37, 100, 513), 1, {}),
    (16, 2, 64, 32, (700, 33), 1, {"sliding_window": 100}),
    (8, 8, 256, 64, (129, 64), 3, {}),
    (16, 4, 128, 16, (300,), 2, {"logits_soft_cap": 30.0}),
    (8, 1, 64, 16, (257, 18, 1), 1, {"sinks": True}),
    (32, 8, 128, 16, (37, 100, 513), 1, {"cache": torch.float8_e4m3fn}),
    (16, 2, 64, 8, (700, 33), 1, {"cache": torch.float8_e5m2, "sliding_window": 100}),
    (8, 4, 256, 24, (129, 64), 2, {"cache": torch.float8_e4m3fn, "logits_soft_cap": 30.0, "v_scale": 0.5}),
    (8, 1, 64, 16, (257, 18, 1), 1, {"cache": torch.float8_e5m2, "sinks": True}),
    # prefills (several rows per work item where no AMX prefill kernel runs), one with a window, one MHA
    (8, 2, 128, 16, (300, 40), 300, {}),
    (4, 4, 64, 16, (200,), 150, {"sliding_window": 50, "sinks": True}),
    # float32 scores as outer products (16 or more query heads per KV head, an item's rows included): two vectors
    # of heads, the second partly masked (24 per KV head), and 16 heads per KV head with a window
    (24, 1, 64, 16, (90, 33), 1, {}),
    (32, 2, 128, 16, (70, 5), 5, {"sliding_window": 30}),
)


def outputs(dtype: torch.dtype = torch.bfloat16) -> list[torch.Tensor]:
    """Every case's output with a ``dtype`` query and cache (the fp8-cache cases keep their bf16 query)."""
    fn = kernel_for("CPU_ATTN")
    outs = []
    for i, (H, hkv, d, bs, lens, n, opts) in enumerate(CASES):
        kw = dict(opts)
        dt = torch.bfloat16 if "cache" in kw else dtype
        q, kc, vc, md = make_batch([min(n, L) for L in lens], lens, H, hkv, d, bs, dtype=dt,
                                   cache_dtype=kw.pop("cache", None), seed=100 + i, extra_blocks=2)
        g = torch.Generator().manual_seed(200 + i)
        if kw.pop("sinks", False):
            kw["sinks"] = torch.randn(H, generator=g)
        outs.append(fn(q, kc, vc, md, **kw))
    return outs


if __name__ == "__main__":  # pipe_cases.py OUT [DTYPE ...]: the outputs of each dtype (default bfloat16), in order
    dtypes = [getattr(torch, name) for name in sys.argv[2:]] or [torch.bfloat16]
    torch.save([o for dt in dtypes for o in outputs(dt)], sys.argv[1])
