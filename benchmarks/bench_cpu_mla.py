"""CPU_MLA decode: bytes of latent cache read per second, as a ratio to a large-array reduction.

``python benchmarks/bench_cpu_mla.py [--quick]`` prints one table.  Problem: DeepSeek-style
decode (one query token per sequence), ``kv_lora_rank 512 + rope 64``, 16 query heads (a TP-8
shard of 128), shuffled blocks of 16, bf16 and fp32.  "Bytes read" counts the latent rows the
kernel must read (``sum(seq_lens) * 576 * element size``); the bandwidth is a best-of-5
``x.sum()`` over 512 MiB of float32 measured in the same run (before and after, best of the
two), so the ratio means something on a loaded, shared box where absolute figures do not.
Each figure is the best of a few rounds; the C++ kernel and the torch fallback path are
timed side by side.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from attnsolve.kernels import _cpu_mla_ext  # noqa: E402
from attnsolve.kernels.cpu_mla import cpu_mla_attention  # noqa: E402
from attnsolve.kernels.metadata import AttentionMetadata  # noqa: E402


def _best(fn: Callable[[], Any], reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def read_bandwidth_gbs(mib: int = 512) -> float:
    """Large-array read: best-of-5 ``x.sum()`` over ``mib`` MiB of float32."""
    x = torch.ones(mib << 18, dtype=torch.float32)
    t = _best(lambda: x.sum(), 5)
    return x.numel() * 4 / t / 1e9


def mla_problem(batch: int, ctx: int, heads: int, dtype: torch.dtype, block: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    nblk = -(-ctx // block)
    total = batch * nblk
    bt = torch.randperm(total, generator=g).to(torch.int32).view(batch, nblk)
    kv = torch.randn(total, block, 576, generator=g).to(dtype)
    q = torch.randn(batch, heads, 576, generator=g).to(dtype)
    md = AttentionMetadata(torch.arange(batch + 1, dtype=torch.int32),
                           torch.full((batch,), ctx, dtype=torch.int32), bt)
    return q, kv, md


def bench_decode(bw: float, quick: bool) -> list[dict[str, Any]]:
    rows = []
    shapes = [(1, 4096), (8, 4096)] if quick else [(1, 4096), (8, 4096), (1, 16384), (8, 16384), (32, 4096)]
    for dtype in (torch.bfloat16, torch.float32):
        for batch, ctx in shapes:
            q, kv, md = mla_problem(batch, ctx, 16, dtype)
            nbytes = batch * ctx * 576 * kv.element_size()
            for path, ext in (("C++", True), ("torch", False)):
                if ext and _cpu_mla_ext.load() is None:
                    continue
                t = _best(lambda: cpu_mla_attention(q, kv, md, scale=192 ** -0.5, use_ext=ext), 3 if quick else 5)
                gbs = nbytes / t / 1e9
                rows.append({"name": f"{path} {str(dtype).split('.')[-1]} batch {batch} ctx {ctx}",
                             "ms": round(t * 1e3, 2), "GB/s": round(gbs, 2), "ratio": round(gbs / bw, 3)})
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    mib = 256 if quick else 512
    bw = read_bandwidth_gbs(mib)
    rows = bench_decode(bw, quick)
    bw = max(bw, read_bandwidth_gbs(mib))
    for r in rows:
        r["ratio"] = round(r["GB/s"] / bw, 3)
    return [{"name": f"memory read bandwidth (x.sum over {mib} MiB fp32)", "GB/s": round(bw, 1)}] + rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rows = run(quick="--quick" in argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'case':48} {'ms':>9} {'GB/s':>7} {'x read bw':>9}")
    for r in rows:
        print(f"{r['name']:48} {r.get('ms', ''):>9} {r['GB/s']:>7} {r.get('ratio', ''):>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
