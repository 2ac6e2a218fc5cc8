"""CPU_MLA decode: bytes of latent cache read per second, as a ratio to a reduction's read rate.

``python benchmarks/bench_cpu_mla.py [--quick]`` prints one table (``python -m benchmarks`` shows
the C++ rows in its kernels group).  Problem: DeepSeek-style decode (one query token per sequence),
``kv_lora_rank 512 + rope 64``, 16 query heads (a TP-8 shard of 128), shuffled blocks of 16, bf16
and fp32, contexts 4k-16k, batch 1-32.  "Bytes read" counts the latent rows the kernel must read
(``sum(seq_lens) * 576 * element size``); the reference is an ``x.sum()`` over float32 reading the
same number of bytes but at least twice the L3 (``benchmarks/memory.py``: fewer would run from cache),
run just before every kernel call so that the kernel starts with its cache evicted (best of the rounds),
so the ratio means something on a loaded, shared box where absolute figures do not.  A 512 MiB ``x.sum()`` (best of 5, before and after) is printed as
the machine's read rate.

MLA decode is compute-bound on a CPU by construction: every 576-element latent row meets all 16
heads (16 x (576 + 512) multiply-adds per row: ~30 flop per bf16 byte), so the ratio says how close
the kernel gets to the read rate, not that the read rate is reachable.
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
from benchmarks.memory import cold_rounds, reduction_for  # noqa: E402


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


def bench_decode(bw: float, quick: bool, ext_only: bool = False) -> list[dict[str, Any]]:
    """Each case against a reduction of at least the same bytes run before every call (best of the rounds)."""
    rows = []
    shapes = [(1, 4096), (8, 4096)] if quick else [(1, 4096), (1, 8192), (1, 16384), (8, 4096), (8, 16384), (32, 4096)]
    for dtype in (torch.bfloat16, torch.float32):
        for batch, ctx in shapes:
            q, kv, md = mla_problem(batch, ctx, 16, dtype)
            nbytes = batch * ctx * 576 * kv.element_size()
            red, red_bytes = reduction_for(nbytes)
            for path, ext in (("C++", True), ("torch", False)):
                if (ext and _cpu_mla_ext.load() is None) or (ext_only and not ext):
                    continue
                (t,), t_red = cold_rounds(
                    [lambda: cpu_mla_attention(q, kv, md, scale=192 ** -0.5, use_ext=ext)], red, 3 if quick else 5)
                gbs = nbytes / t / 1e9
                read_gbs = red_bytes / t_red / 1e9
                short = "bf16" if dtype == torch.bfloat16 else "fp32"
                rows.append({"name": f"MLA {path} {short} batch {batch} ctx {ctx // 1024}k", "value": round(t * 1e3, 2),
                             "unit": "ms", "ms": round(t * 1e3, 2), "GB/s": round(gbs, 2), "gbs": round(gbs, 2),
                             "read_gbs": round(read_gbs, 1), "pct_read": round(100 * gbs / read_gbs, 1),
                             "ratio": round(gbs / read_gbs, 3), "baseline": round(read_gbs, 1),
                             "baseline_name": "GB/s of an x.sum() larger than the L3, just before",
                             "dtype": short, "batch": batch, "context": ctx,
                             "note": f"{gbs:.2f} GB/s = {100 * gbs / read_gbs:.1f}% of the reduction's "
                                     f"read rate ({read_gbs:.1f} GB/s), cache evicted before each call; compute-bound: 16 heads x 1,088 "
                                     f"multiply-adds per {576 * kv.element_size()}-byte row"})
            del q, kv, md, red
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    mib = 256 if quick else 512
    bw = read_bandwidth_gbs(mib)
    rows = bench_decode(bw, quick)
    bw = max(bw, read_bandwidth_gbs(mib))
    return [{"name": f"memory read bandwidth (x.sum over {mib} MiB fp32)", "GB/s": round(bw, 1)}] + rows


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="bench_cpu_mla.py", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer cases and rounds (a smoke run)")
    rows = run(quick=ap.parse_args(argv).quick)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'case':48} {'ms':>9} {'GB/s':>7} {'x.sum() GB/s':>20} {'% of it':>8}")
    for r in rows:
        print(f"{r['name']:48} {r.get('ms', ''):>9} {r['GB/s']:>7} {r.get('read_gbs', ''):>20} {r.get('pct_read', ''):>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
