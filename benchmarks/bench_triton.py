"""GPU kernels (TRITON_ATTN, TRITON_MLA, and the library adapters that can run) vs torch SDPA.

On a CUDA device, side by side in one run:

* Memory bandwidth: a device-to-device copy of 1 GiB (bytes read + written / time).
* Decode: batch 8 and 64, 32 query / 8 KV heads, head 128, contexts 1k/4k/16k, bf16,
  block size 16 with shuffled blocks.  Each runnable backend (``TRITON_ATTN``, and
  ``FLASH_ATTN``, ``FLASHINFER``, ``FLEX_ATTENTION`` when runnable here) vs
  ``F.scaled_dot_product_attention(..., enable_gqa=True)`` on the same KV laid out
  contiguously; KV GB/s and % of the measured bandwidth.
* Prefill: one 2k-token causal sequence and a chunked batch, 32 / 8 heads, head 128, bf16: ms
  and ratio to SDPA (``is_causal``).
* MLA decode (``TRITON_MLA``, and ``FLASHMLA`` when runnable): batch 8, 16 and 128 heads,
  576 / 512 dims, block 64, contexts 1k/4k/16k; vs SDPA on the equivalent MQA problem and
  vs bandwidth.

Without a CUDA device it prints that and returns ``[]`` (Triton's CPU interpreter is a
test tool: timing it means nothing).

Run: ``python benchmarks/bench_triton.py [--quick]``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from attnsolve.kernels.metadata import AttentionMetadata

DEVICE = "cuda"  # a smoke test may point this at "cpu"


def _time_cuda(fn: Callable[[], Any], reps: int = 20, warmup: int = 3) -> float:
    """Median seconds per call over ``reps`` groups of back-to-back calls (CUDA events).

    Calls run back to back inside a group (about 2 ms of work, 1-20 calls), as an engine's
    layers do, so the host's launch work overlaps the previous kernel; one call between two
    events would time the host's Python as well whenever the kernel is shorter."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    inner = max(1, min(20, round(2e-3 / max(time.perf_counter() - t0, 1e-6))))
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3 / inner)
    times.sort()
    return times[len(times) // 2]


def copy_bandwidth_gbs(mib: int = 1024) -> float:
    x = torch.empty(mib * 2**20 // 4, dtype=torch.float32, device=DEVICE)
    y = torch.empty_like(x)
    t = _time_cuda(lambda: y.copy_(x), reps=10)
    return 2 * x.numel() * 4 / t / 1e9


def paged_problem(batch, ctx, heads, kv_heads, head, block, dtype, *, q_rows=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    nblk = -(-ctx // block)
    total = batch * nblk
    bt = torch.randperm(total, generator=g).to(torch.int32).view(batch, nblk)
    q_lens = [q_rows] * batch
    qsl = torch.tensor([0] + [sum(q_lens[: i + 1]) for i in range(batch)], dtype=torch.int32)
    md = AttentionMetadata(qsl.to(DEVICE), torch.full((batch,), ctx, dtype=torch.int32).to(DEVICE), bt.to(DEVICE))
    q = torch.randn(batch * q_rows, heads, head, dtype=dtype, device=DEVICE)
    kc = torch.randn(total, block, kv_heads, head, dtype=dtype, device=DEVICE)
    vc = torch.randn(total, block, kv_heads, head, dtype=dtype, device=DEVICE)
    return q, kc, vc, md


def contiguous(cache, md, ctx):
    """``[batch, H, ctx, D]`` copy of each sequence's KV (the SDPA peer's layout)."""
    b = md.block_table.shape[0]
    x = cache[md.block_table.long()]  # [b, nblk, bs, H, D]
    return x.reshape(b, -1, *cache.shape[2:])[:, :ctx].transpose(1, 2).contiguous()


def _time_graph(fn: Callable[[], Any], reps: int = 20) -> tuple[float | None, str | None]:
    """Seconds per call replaying ``fn`` captured in a CUDA graph (the kernels alone, no Python per call,
    as an engine that captures its decode steps runs them), or ``(None, why)`` when it cannot be captured
    (a host sync inside, say)."""
    try:
        fn()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        return _time_cuda(g.replay, reps=reps), None
    except Exception as e:  # the eager figure stands; say why this one is missing
        try:
            torch.cuda.synchronize()
        except Exception:  # noqa: BLE001 - a broken capture may leave the stream unusable; the error says why
            pass
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


# Backends whose call is captured in a CUDA graph for the replay column: our Triton kernels, which do no
# host sync once the metadata's checks are cached.  Not FLEX (compiled graphs, host-built block masks)
# nor the adapters: a capture that fails half-way can leave the CUDA context unusable for the next rows.
GRAPH_CAPTURED = ("TRITON_ATTN", "TRITON_MLA")


def _add_graph(row: dict[str, Any], fn: Callable[[], Any], unit_bytes: float | None, bw: float) -> None:
    if row.get("backend") not in GRAPH_CAPTURED:
        return
    t, err = _time_graph(fn)
    if t is None:
        row["graph_error"] = err
        return
    row["graph_ms"] = round(t * 1e3, 4)
    if unit_bytes:
        row["graph_pct_of_bw"] = round(100 * unit_bytes / t / 1e9 / bw, 1)


def _try_time(fn, reps=20):
    """``(seconds, None)`` or ``(None, error text)`` (e.g. out of memory, an unsupported case)."""
    try:
        return _time_cuda(fn, reps=reps), None
    except Exception as e:  # keep the other rows
        torch.cuda.empty_cache()
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"


def _runnable(backends):
    from attnsolve.kernels.registry import kernel_for, unavailable_reasons

    out = {}
    for b in backends:
        why = unavailable_reasons(b, DEVICE)
        out[b] = kernel_for(b, DEVICE) if not why else "; ".join(why)
    return out


def bench_decode(bw: float, quick: bool) -> list[dict[str, Any]]:
    rows = []
    kernels = _runnable(["TRITON_ATTN", "FLASH_ATTN", "FLASHINFER", "FLEX_ATTENTION"])
    ctxs = (1024, 4096) if quick else (1024, 4096, 16384)
    for batch in ((8,) if quick else (8, 64)):
        for ctx in ctxs:
            q, kc, vc, md = paged_problem(batch, ctx, 32, 8, 128, 16, torch.bfloat16)
            kv_bytes = 2 * batch * ctx * 8 * 128 * kc.element_size()
            kk, vv = contiguous(kc, md, ctx), contiguous(vc, md, ctx)
            qq = q.view(batch, 32, 1, 128)
            t_sdpa = _time_cuda(lambda: F.scaled_dot_product_attention(qq, kk, vv, enable_gqa=True))
            del kk, vv
            for name, fn in kernels.items():
                row = {"name": f"decode bf16 b{batch} 32/8 d128 ctx {ctx // 1024}k {name}", "backend": name}
                if isinstance(fn, str):
                    row.update(value=None, unit="ms", skipped=fn)
                else:
                    t, err = _try_time(lambda: fn(q, kc, vc, md))
                    if err:
                        row.update(value=None, unit="ms", skipped=err)
                        rows.append(row)
                        continue
                    row.update(value=round(t * 1e3, 4), unit="ms", baseline=round(t_sdpa * 1e3, 4),
                               baseline_name="SDPA enable_gqa, contiguous KV", ratio=round(t_sdpa / t, 2),
                               kv_gbs=round(kv_bytes / t / 1e9, 1), pct_of_bw=round(100 * kv_bytes / t / 1e9 / bw, 1))
                    _add_graph(row, lambda: fn(q, kc, vc, md), kv_bytes, bw)
                rows.append(row)
            del q, kc, vc, md
            torch.cuda.empty_cache()
    return rows


def bench_prefill(quick: bool) -> list[dict[str, Any]]:
    rows = []
    kernels = _runnable(["TRITON_ATTN", "FLASH_ATTN", "FLASHINFER", "FLEX_ATTENTION"])
    L = 2048
    q, kc, vc, md = paged_problem(1, L, 32, 8, 128, 16, torch.bfloat16, q_rows=L)
    kk, vv = contiguous(kc, md, L), contiguous(vc, md, L)
    qq = q.transpose(0, 1).unsqueeze(0).contiguous()
    t_sdpa = _time_cuda(lambda: F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, enable_gqa=True),
                        reps=10)
    flops = 4 * L * L * 128 * 32 / 2
    for name, fn in kernels.items():
        row = {"name": f"prefill bf16 2k causal 32/8 d128 {name}", "backend": name}
        if isinstance(fn, str):
            row.update(value=None, unit="ms", skipped=fn)
        else:
            t, err = _try_time(lambda: fn(q, kc, vc, md), reps=10)
            if err:
                row.update(value=None, unit="ms", skipped=err)
                rows.append(row)
                continue
            row.update(value=round(t * 1e3, 3), unit="ms", baseline=round(t_sdpa * 1e3, 3),
                       baseline_name="SDPA is_causal enable_gqa", ratio=round(t_sdpa / t, 2),
                       tflops=round(flops / t / 1e12, 1))
        rows.append(row)
    return rows


def bench_mla(bw: float, quick: bool) -> list[dict[str, Any]]:
    rows = []
    kernels = _runnable(["TRITON_MLA", "FLASHMLA"])
    ctxs = (1024, 4096) if quick else (1024, 4096, 16384)
    batch, bs = 8, 64
    for heads in (16, 128):
        for ctx in ctxs:
            nblk = -(-ctx // bs)
            bt = torch.randperm(batch * nblk).to(torch.int32).view(batch, nblk).to(DEVICE)
            md = AttentionMetadata(torch.arange(batch + 1, dtype=torch.int32).to(DEVICE),
                                   torch.full((batch,), ctx, dtype=torch.int32).to(DEVICE), bt)
            q = torch.randn(batch, heads, 576, dtype=torch.bfloat16, device=DEVICE)
            kv = torch.randn(batch * nblk, bs, 576, dtype=torch.bfloat16, device=DEVICE)
            kv_bytes = batch * ctx * 576 * 2
            lat = kv[bt.long()].reshape(batch, -1, 576)[:, :ctx].unsqueeze(1)  # [b, 1, ctx, 576]
            qq = q.unsqueeze(1)  # [b, 1, H, 576]: MQA decode = one KV head, the H query heads as rows
            vv = lat[..., :512].contiguous()
            t_sdpa = _time_cuda(lambda: F.scaled_dot_product_attention(qq, lat, vv))
            del vv
            del lat
            for name, fn in kernels.items():
                row = {"name": f"MLA decode bf16 b{batch} h{heads} ctx {ctx // 1024}k {name}", "backend": name}
                if isinstance(fn, str):
                    row.update(value=None, unit="ms", skipped=fn)
                else:
                    t, err = _try_time(lambda: fn(q, kv, md, kv_lora_rank=512, scale=192 ** -0.5,
                                                  topk_indices=None))
                    if err:
                        row.update(value=None, unit="ms", skipped=err)
                        rows.append(row)
                        continue
                    row.update(value=round(t * 1e3, 4), unit="ms", baseline=round(t_sdpa * 1e3, 4),
                               baseline_name="SDPA (heads as query rows) over the gathered latent cache", ratio=round(t_sdpa / t, 2),
                               kv_gbs=round(kv_bytes / t / 1e9, 1), pct_of_bw=round(100 * kv_bytes / t / 1e9 / bw, 1))
                    _add_graph(row, lambda: fn(q, kv, md, kv_lora_rank=512, scale=192 ** -0.5, topk_indices=None),
                               kv_bytes, bw)
                rows.append(row)
            del q, kv, md
            torch.cuda.empty_cache()
    return rows


def _sweep(label: str, fn: Callable[..., Any], configs: list[dict[str, Any]], unit_bytes: float | None,
           bw: float) -> list[dict[str, Any]]:
    """One row per launch configuration; ``ratio`` = the default configuration's time / this one's."""
    rows = []
    t_default, _ = _try_time(lambda: fn())
    for cfg in configs:
        name = f"tune {label} " + " ".join(f"{k}={v}" for k, v in cfg.items() if v is not None)
        t, err = _try_time(lambda: fn(**cfg))
        row: dict[str, Any] = {"name": name, "backend": "TRITON", "config": cfg}
        if err or t is None:
            row.update(value=None, unit="ms", skipped=err)
        else:
            row.update(value=round(t * 1e3, 4), unit="ms", baseline=round((t_default or 0) * 1e3, 4),
                       baseline_name="the default launch", ratio=round((t_default or t) / t, 2))
            if unit_bytes:
                row.update(kv_gbs=round(unit_bytes / t / 1e9, 1), pct_of_bw=round(100 * unit_bytes / t / 1e9 / bw, 1))
        rows.append(row)
    return rows


def bench_tune(bw: float, on_rows: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Launch options of the Triton kernels (tile, warps, split-KV, rows per program) around their
    defaults, on a decode batch, a 2k prefill and an MLA decode: which defaults a GPU should get."""
    from attnsolve.kernels.triton_attn import triton_paged_attention
    from attnsolve.kernels.triton_mla import triton_mla_attention

    rows = []
    for batch, ctx in ((8, 16384), (64, 16384)):
        q, kc, vc, md = paged_problem(batch, ctx, 32, 8, 128, 16, torch.bfloat16)
        kv_bytes = 2 * batch * ctx * 8 * 128 * 2
        if batch == 8:  # split-KV territory: segments x tile (warps None = Triton's default, as the default launch)
            cfgs = [dict(tile=tl_, num_warps=w, num_segments=s) for tl_ in (32, 64) for w in (None, 8)
                    for s in (4, 8, 16)]
        else:  # a full GPU (512 programs): no split; tile, warps, and edge-only masks
            cfgs = [dict(tile=tl_, num_warps=w, num_segments=1) for tl_ in (16, 32, 64, 128) for w in (None, 8)]
            cfgs += [dict(tile=tl_, num_warps=None, num_segments=1, mask_every_tile=True) for tl_ in (32, 64)]
        rows += _sweep(f"decode bf16 b{batch} ctx {ctx // 1024}k", lambda **k: triton_paged_attention(q, kc, vc, md, **k),
                       cfgs, kv_bytes, bw)
        if on_rows is not None:
            on_rows(rows)
        del q, kc, vc, md
        torch.cuda.empty_cache()
    L = 2048
    q, kc, vc, md = paged_problem(1, L, 32, 8, 128, 16, torch.bfloat16, q_rows=L)
    cfgs = [dict(block_m=m, tile=tl_, num_warps=w) for m in (64, 128) for tl_ in (32, 64, 128) for w in (4, 8)]
    cfgs += [dict(block_m=128, tile=tl_, num_warps=8, mask_every_tile=True) for tl_ in (64, 128)]
    rows += _sweep("prefill bf16 2k", lambda **k: triton_paged_attention(q, kc, vc, md, **k), cfgs, None, bw)
    if on_rows is not None:
        on_rows(rows)
    del q, kc, vc, md
    batch, bs, ctx = 8, 64, 4096
    nblk = ctx // bs
    bt = torch.randperm(batch * nblk).to(torch.int32).view(batch, nblk).to(DEVICE)
    md = AttentionMetadata(torch.arange(batch + 1, dtype=torch.int32).to(DEVICE),
                           torch.full((batch,), ctx, dtype=torch.int32).to(DEVICE), bt)
    q = torch.randn(batch, 128, 576, dtype=torch.bfloat16, device=DEVICE)
    kv = torch.randn(batch * nblk, bs, 576, dtype=torch.bfloat16, device=DEVICE)
    cfgs = [dict(tile=tl_, block_h=h, num_segments=s) for tl_ in (16, 32, 64) for h in (16, 32) for s in (8, 16)]
    cfgs += [dict(tile=32, block_h=16, num_segments=s, p_two_terms=False) for s in (8, 16)]
    rows += _sweep("MLA b8 h128 ctx 4k", lambda **k: triton_mla_attention(q, kv, md, kv_lora_rank=512,
                                                                          scale=192 ** -0.5, **k),
                   cfgs, batch * ctx * 576 * 2, bw)
    return rows


def run(quick: bool = False, tune: bool = False,
        on_rows: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """All rows (dicts with name, value, unit, baseline, ratio...); ``[]`` without a CUDA device.
    ``on_rows`` gets the rows so far after every section (a run stopped at a time limit keeps them)."""
    if not torch.cuda.is_available():
        print(f"# no CUDA GPU present (torch {torch.__version__}): bench_triton measures GPU kernels only; "
              "nothing to run. The CPU-interpreter tests are in tests/kernels/test_triton_*.py.")
        return []
    os.environ.pop("TRITON_INTERPRET", None)
    from attnsolve.kernels import triton_attn

    if triton_attn.is_interpreted():
        print("# triton was imported with TRITON_INTERPRET=1: unset it to benchmark compiled kernels")
        return []
    bw = copy_bandwidth_gbs(512 if quick else 1024)
    rows: list[dict[str, Any]] = [{"name": "GPU memory bandwidth (1 GiB device copy, read+write)",
                                   "value": round(bw, 1), "unit": "GB/s"}]
    sections = [lambda: bench_decode(bw, quick), lambda: bench_prefill(quick), lambda: bench_mla(bw, quick)]
    if tune:
        sections.append(lambda: bench_tune(bw))
    for section in sections:
        rows += section()
        if on_rows is not None:
            on_rows(rows)
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print(f"# device: {torch.cuda.get_device_name()} (cc {'.'.join(map(str, torch.cuda.get_device_capability()))}), "
          f"torch {torch.__version__}")
    for r in rows:
        if r.get("skipped"):
            print(f"{r['name']:58} not run: {r['skipped']}")
            continue
        extra = ""
        if "ratio" in r:
            extra += f"  {r['ratio']:5.2f}x {'default' if 'config' in r else 'SDPA'} ({r['baseline']} {r['unit']})"
        if "kv_gbs" in r:
            extra += f"  {r['kv_gbs']:7.1f} GB/s ({r['pct_of_bw']}% of bw)"
        if "tflops" in r:
            extra += f"  {r['tflops']} TFLOP/s"
        if "graph_ms" in r:
            extra += f"  graph {r['graph_ms']} ms" + (f" ({r['graph_pct_of_bw']}% of bw)" if "graph_pct_of_bw" in r else "")
        elif "graph_error" in r:
            extra += f"  graph: {r['graph_error']}"
        print(f"{r['name']:58} {r['value']:>10} {r['unit']:<5}{extra}")


if __name__ == "__main__":
    import argparse

    _ap = argparse.ArgumentParser(prog="bench_triton.py", description=(__doc__ or "").splitlines()[0])
    _ap.add_argument("--quick", action="store_true", help="fewer cases and rounds")
    _ap.add_argument("--json", help="also write the rows (and the device) to this file")
    _ap.add_argument("--tune", action="store_true", help="also sweep the Triton kernels' launch options")
    _args = _ap.parse_args()
    t0 = time.perf_counter()

    def _save(rows: list[dict[str, Any]]) -> None:
        if _args.json:
            import json

            dev = (f"{torch.cuda.get_device_name()} (cc {'.'.join(map(str, torch.cuda.get_device_capability()))})"
                   if torch.cuda.is_available() else None)
            Path(_args.json).write_text(json.dumps({"device": dev, "torch": torch.__version__, "rows": rows}, indent=1))

    _rows = run(quick=_args.quick, tune=_args.tune, on_rows=_save)
    _print(_rows)
    print(f"# total {time.perf_counter() - t0:.1f} s")
    _save(_rows)
