"""CPU_ATTN vs SDPA vs the machine's memory bandwidth, prefill vs SDPA, and dispatch overhead, side by side.

* Decode: batch 8, 32 query heads / 8 KV heads, head 128, contexts 1k/4k/16k, bf16 and fp32,
  block size 16 with shuffled blocks.  Ours: paged CPU_ATTN (default path: the C++ kernel;
  also the pure-torch fallback).  Peer: ``F.scaled_dot_product_attention(..., enable_gqa=True)``
  on the same KV laid out contiguously.  Bandwidth: bytes of KV read / time, against a
  large-tensor read (``x.sum()`` over 512 MiB) measured in the same run.
* Prefill: one 2k-token causal sequence, 32 query / 8 KV heads, head 128: ratio to SDPA
  on a contiguous ``[1, H, T, D]`` query (the goal's peer), and in parentheses to SDPA given
  the same ``[T, H, D]`` query memory CPU_ATTN receives, as a transposed view.
* Dispatch: ``paged_attention`` (config inference + cached selection) vs calling the
  registered kernel directly; the ``torch.library.custom_op`` wrapper vs ``paged_attention``;
  torch's own floor for a custom op (a trivial op vs its Python function).

Run: ``python benchmarks/bench_kernels.py [--quick]`` (under 2 minutes; ``--quick`` ~20 s).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from attnsolve.kernels import AttentionMetadata, kernel_for, paged_attention, paged_attention_op
from attnsolve.kernels import _cpu_ext
from attnsolve.kernels.cpu import cpu_attn_impl


def _best(fn: Callable[[], Any], reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _best_interleaved(fns: list[Callable[[], Any]], rounds: int) -> list[float]:
    """Best time of each function over ``rounds`` rounds that alternate between them (fair under load)."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def _per_call_us(fn: Callable[[], Any], n: int) -> float:
    """Per-call microseconds: the best of many short batches of 20 calls (robust to preemption on a busy box)."""
    for _ in range(50):
        fn()
    best = float("inf")
    for _ in range(max(10, n // 20)):
        t = time.perf_counter()
        for _ in range(20):
            fn()
        best = min(best, (time.perf_counter() - t) / 20)
    return best * 1e6


def read_bandwidth_gbs(mib: int = 512) -> float:
    """Large-tensor read: best-of-5 ``x.sum()`` over ``mib`` MiB of float32."""
    x = torch.ones(mib * 1024 * 1024 // 4)
    t = _best(lambda: x.sum(), 5)
    return x.numel() * 4 / t / 1e9


def paged_problem(batch, ctx, heads, kv_heads, head, block, dtype, *, q_rows=1, seed=0, shuffle=True):
    g = torch.Generator().manual_seed(seed)
    nblk = -(-ctx // block)
    total = batch * nblk
    kc = torch.empty(total, block, kv_heads, head, dtype=dtype).normal_(generator=g)
    vc = torch.empty(total, block, kv_heads, head, dtype=dtype).normal_(generator=g)
    order = torch.randperm(total, generator=g) if shuffle else torch.arange(total)
    bt = order.view(batch, nblk).to(torch.int32)
    qsl = torch.arange(0, (batch + 1) * q_rows, q_rows, dtype=torch.int32)
    md = AttentionMetadata(qsl, torch.full((batch,), ctx, dtype=torch.int32), bt)
    q = torch.randn(batch * q_rows, heads, head, generator=g).to(dtype)
    return q, kc, vc, md


def contiguous_kv(kc, md, ctx):
    """``[batch, kv_heads, ctx, head]`` copies for the SDPA peer."""
    b = md.block_table.shape[0]
    x = kc[md.block_table.long()]  # [b, nblk, bs, hkv, d]
    return x.reshape(b, -1, kc.shape[2], kc.shape[3])[:, :ctx].transpose(1, 2).contiguous()


def bench_decode(bw: float, quick: bool) -> list[dict[str, Any]]:
    rows = []
    cpu_attn = kernel_for("CPU_ATTN")
    ctxs = (1024, 4096) if quick else (1024, 4096, 16384)
    for dtype in (torch.bfloat16, torch.float32):
        for ctx in ctxs:
            rounds = 3 if quick else (8 if ctx <= 4096 else 4)
            q, kc, vc, md = paged_problem(8, ctx, 32, 8, 128, 16, dtype)
            kv_bytes = 2 * 8 * ctx * 8 * 128 * kc.element_size()
            kk, vv = contiguous_kv(kc, md, ctx), contiguous_kv(vc, md, ctx)
            qq = q.view(8, 32, 1, 128)
            t_ours, t_sdpa = _best_interleaved([lambda: cpu_attn(q, kc, vc, md),
                                                lambda: F.scaled_dot_product_attention(qq, kk, vv, enable_gqa=True)],
                                               rounds)
            del kk, vv
            t_torch = _best(lambda: cpu_attn_impl(q, kc, vc, md, use_ext=False), 1 if ctx > 4096 else 2)
            name = f"decode {str(dtype)[6:]} b8 32/8 heads d128 ctx {ctx // 1024}k"
            rows.append({
                "name": name, "value": round(t_ours * 1e3, 3), "unit": "ms",
                "baseline": round(t_sdpa * 1e3, 3), "baseline_name": "SDPA enable_gqa, contiguous KV",
                "ratio": round(t_sdpa / t_ours, 2),
                "kv_gbs": round(kv_bytes / t_ours / 1e9, 1), "sdpa_gbs": round(kv_bytes / t_sdpa / 1e9, 1),
                "torch_path_gbs": round(kv_bytes / t_torch / 1e9, 1),
                "pct_of_bw": round(100 * kv_bytes / t_ours / 1e9 / bw, 1),
            })
            del q, kc, vc, md
    return rows


def bench_prefill(quick: bool) -> list[dict[str, Any]]:
    rows = []
    L = 2048
    cpu_attn = kernel_for("CPU_ATTN")
    for dtype, shuffle in ((torch.bfloat16, True), (torch.float32, True), (torch.bfloat16, False),
                           (torch.float32, False)):
        if quick and not shuffle:
            continue
        q, kc, vc, md = paged_problem(1, L, 32, 8, 128, 16, dtype, q_rows=L, shuffle=shuffle)
        kk, vv = contiguous_kv(kc, md, L), contiguous_kv(vc, md, L)
        qq = q.transpose(0, 1).unsqueeze(0).contiguous()
        qv = q.transpose(0, 1).unsqueeze(0)  # the same query memory in vLLM's [T, H, D] order (a strided view)
        t_ours, t_sdpa, t_view = _best_interleaved(
            [lambda: cpu_attn(q, kc, vc, md),
             lambda: F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, enable_gqa=True),
             lambda: F.scaled_dot_product_attention(qv, kk, vv, is_causal=True, enable_gqa=True)],
            2 if quick else 5)
        flops = 4 * L * L * 128 * 32 / 2
        blocks = "shuffled" if shuffle else "consecutive"
        rows.append({
            "name": f"prefill {str(dtype)[6:]} 2k causal 32/8 heads d128, {blocks} blocks",
            "value": round(t_ours * 1e3, 1),
            "unit": "ms", "baseline": round(t_sdpa * 1e3, 1), "baseline_name": "SDPA is_causal enable_gqa",
            "ratio": round(t_sdpa / t_ours, 2), "gflops": round(flops / t_ours / 1e9, 1),
            "ratio_same_layout": round(t_view / t_ours, 2),
            "note": f"{round(t_view / t_ours, 2)}x vs SDPA given the same [T, H, D] query as a view",
        })
    return rows


_noop: dict[str, Any] = {}


def _noop_op():
    """A custom op with paged_attention_op's exact schema whose body only allocates the output."""
    if "op" not in _noop:
        @torch.library.custom_op("attnsolve_bench::same_schema", mutates_args=())
        def same_schema(query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                        query_start_loc: torch.Tensor, seq_lens: torch.Tensor, block_table: torch.Tensor,
                        backend: Optional[str] = None, scale: Optional[float] = None, causal: bool = True,
                        sliding_window: Optional[int] = None, logits_soft_cap: Optional[float] = None,
                        sinks: Optional[torch.Tensor] = None, k_scale: Optional[float] = None,
                        v_scale: Optional[float] = None) -> torch.Tensor:
            return torch.empty_like(query)

        same_schema.register_fake(lambda query, *a, **k: torch.empty_like(query))
        _noop["op"] = same_schema
    return _noop["op"]


def bench_dispatch(quick: bool) -> list[dict[str, Any]]:
    q, kc, vc, md = paged_problem(1, 16, 8, 2, 64, 16, torch.float32)
    md.host_lists()
    fn = kernel_for("CPU_ATTN")
    n = 300 if quick else 2000
    direct = _per_call_us(lambda: fn(q, kc, vc, md), n)
    entry = _per_call_us(lambda: paged_attention(q, kc, vc, md), n)
    qsl, sl, bt = md.query_start_loc, md.seq_lens, md.block_table
    op = _per_call_us(lambda: paged_attention_op(q, kc, vc, qsl, sl, bt), n)
    # the op gets flat tensors, so it builds its metadata (and host copies) every call: compare like with like
    entry_fresh = _per_call_us(lambda: paged_attention(q, kc, vc, AttentionMetadata(qsl, sl, bt)), n)
    same = _noop_op()
    floor = _per_call_us(lambda: same(q, kc, vc, qsl, sl, bt), n) - _per_call_us(lambda: torch.empty_like(q), n)
    return [
        {"name": "dispatch: paged_attention - direct kernel call (tiny decode)", "value": round(entry - direct, 2),
         "unit": "us", "baseline": round(direct, 1), "baseline_name": "direct kernel call, us"},
        {"name": "dispatch: custom_op wrapper - paged_attention (fresh metadata each call)",
         "value": round(op - entry_fresh, 2), "unit": "us",
         "baseline": round(floor, 2), "baseline_name": "torch's custom_op floor for this schema (same-schema op that only allocates)"},
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    mib = 256 if quick else 512
    bw = read_bandwidth_gbs(mib)
    dec = bench_decode(bw, quick)
    bw2 = read_bandwidth_gbs(mib)  # again after the decode runs: the best of the two
    if bw2 > bw:
        bw = bw2
        for r in dec:
            r["pct_of_bw"] = round(100 * r["kv_gbs"] / bw, 1)
    rows = [{"name": f"memory read bandwidth (x.sum over {mib} MiB fp32)", "value": round(bw, 1), "unit": "GB/s"}]
    rows += dec
    rows += bench_prefill(quick)
    rows += bench_dispatch(quick)
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    import os
    import platform

    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU_ATTN extension: {'loaded' if _cpu_ext.load() else 'unavailable (' + str(_cpu_ext.reason()) + ')'}")
    dec = [r for r in rows if r["name"].startswith("decode")]
    other = [r for r in rows if not r["name"].startswith("decode")]
    if dec:
        print(f"{'decode (paged, shuffled blocks of 16)':46} {'ours ms':>9} {'SDPA ms':>9} {'x SDPA':>7} "
              f"{'ours GB/s':>10} {'SDPA GB/s':>10} {'torch-path GB/s':>16} {'% of read bw':>13}")
        for r in dec:
            print(f"{r['name']:46} {r['value']:9.2f} {r['baseline']:9.2f} {r['ratio']:7.2f} {r['kv_gbs']:10.1f} "
                  f"{r['sdpa_gbs']:10.1f} {r['torch_path_gbs']:16.1f} {r['pct_of_bw']:12.1f}%")
    for r in other:
        base = f"  vs {r['baseline']} ({r['baseline_name']})" if "baseline" in r else ""
        ratio = f"  ratio {r['ratio']}x" if "ratio" in r else ""
        if "ratio_same_layout" in r:
            ratio += f" ({r['ratio_same_layout']}x vs SDPA given the [T, H, D] query as a view)"
        print(f"{r['name']:60} {r['value']:>9} {r['unit']:<5}{ratio}{base}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    _print(run(quick="--quick" in sys.argv))
    print(f"# total {time.perf_counter() - t0:.1f} s")
