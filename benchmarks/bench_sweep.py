"""Sweep throughput (configurations per second) vs a solve() loop, measured side by side.

Three rates for the same sweep: counting (`len` + `by_backend()`, no row materialised), the backend
code of every row (`Sweep.codes()`, a numpy array), and iterating `(assignment, backend)` pairs.
The baseline is the loop a user would write without sweep: one solve() per configuration, once
on the fast path alone (solve_uncached, no explanation) and once through solve() itself (failures
raise with an explanation attached).
Run: python -m benchmarks.bench_sweep [--quick]
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from attnsolve import ANY, Config, ConfigError, InvalidBackendError, NoValidBackendError, solve, vllm_versions
from attnsolve.config import FIELD_NAMES
from attnsolve.selection import clear_cache, compiled_rules, solve_uncached
from attnsolve.sweep import sweep

MODEL = ("dtype", "head_size", "kv_cache_dtype", "block_size", "use_mla", "use_sparse", "has_sink",
         "use_mm_prefix", "attn_type", "num_heads")
SPACES: tuple[tuple[str, Config, Any], ...] = (
    ("H100, dtype x head size x KV dtype", Config(platform="cuda", gpu="H100", dtype=ANY, head_size=ANY,
                                                 kv_cache_dtype=ANY), None),
    ("every platform/GPU, model facts, both roles",
     Config(platform=ANY, compute_capability=ANY, rocm_arch=ANY, **{f: ANY for f in MODEL}), ANY),
    ("whole space: every field, both roles", Config(**{f: ANY for f in FIELD_NAMES}), ANY),
)


def _best(fn: Any, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _loop_rate(s: Any, n: int, *, explain: bool) -> float:
    """Configurations per second of a plain solve loop over the first n rows of the sweep."""
    rows = s.rows(limit=n)
    configs = [(s.completion(a), a.get("role", s.role if s.role is not ANY else None)) for a, _ in rows]
    t = time.perf_counter()
    for cfg, role in configs:
        try:
            if explain:
                solve(cfg, role=role)
            else:
                solve_uncached(cfg, role or "decode")
        except (NoValidBackendError, InvalidBackendError):
            pass
    dt = time.perf_counter() - t
    if explain:
        clear_cache()
    return len(configs) / dt


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The spaces on every packaged release (vLLM 0.33 refuses the two largest: its steps read their
    fields together), rows named by release."""
    rows: list[dict[str, Any]] = []
    saved = os.environ.get("ATTNSOLVE_VLLM")
    try:
        for release in vllm_versions():
            os.environ["ATTNSOLVE_VLLM"] = release
            got = _run_release(quick)
            for r in got:
                r["name"] += f" (vLLM {release})"
            rows += got
    finally:
        if saved is None:
            os.environ.pop("ATTNSOLVE_VLLM", None)
        else:
            os.environ["ATTNSOLVE_VLLM"] = saved
    return rows


def _spaces() -> tuple[tuple[str, Config, Any], ...]:
    """SPACES for the current default release (Config objects are per release)."""
    return (
        ("H100, dtype x head size x KV dtype", Config(platform="cuda", gpu="H100", dtype=ANY, head_size=ANY,
                                                     kv_cache_dtype=ANY), None),
        ("every platform/GPU, model facts, both roles",
         Config(platform=ANY, compute_capability=ANY, rocm_arch=ANY, **{f: ANY for f in MODEL}), ANY),
        ("whole space: every field, both roles", Config(**{f: ANY for f in FIELD_NAMES}), ANY),
    )


def _run_release(quick: bool) -> list[dict[str, Any]]:
    spaces = _spaces()
    compiled_rules()
    rows: list[dict[str, Any]] = []
    reps = 2 if quick else 5
    loop_n = 300 if quick else 2000
    for name, cfg, role in spaces:
        t0 = time.perf_counter()
        try:
            s = sweep(cfg, role=role)
        except ConfigError as e:  # vLLM 0.33's steps read many fields together: some spaces are refused
            rows.append({"name": f"sweep: {name}", "skipped": f"refused by vLLM {cfg.vllm}: {str(e).split(';')[0][:200]}"})
            continue
        n = len(s)
        # a space whose first sweep takes seconds (0.26-0.28's every-platform space: 23-27 million rows whose
        # coupled fields are enumerated, 45-65 s on the 2-core VM) is timed once, without the extra passes
        slow = time.perf_counter() - t0 > 5
        t_count = _best(lambda: sweep(cfg, role=role).by_backend(), 1 if slow else reps)
        loop = _loop_rate(s, loop_n, explain=False)
        if n < 100_000:  # small: fixed cost dominates, report the latency of the whole sweep
            rows.append({"name": f"sweep latency (count + by_backend): {name}", "value": round(t_count * 1e3, 3),
                         "unit": "ms", "configs": n, "seconds": round(t_count, 4), "baseline": round(n / loop * 1e3, 2),
                         "baseline_name": f"solve loop over the same {n} configs, ms",
                         "ratio": round((n / loop) / t_count, 1)})
        else:
            rows.append({"name": f"sweep count: {name}", "value": round(n / t_count), "unit": "configs/s",
                         "configs": n, "seconds": round(t_count, 4), "goal": ">= 1,000,000 configs/s",
                         "met": n / t_count >= 1e6, "baseline": round(loop),
                         "baseline_name": "solve loop, fast path (solve_uncached), configs/s",
                         "ratio": round((n / t_count) / loop, 1)})
        if 100_000 <= n <= 30_000_000 and not slow:
            t_codes = _best(lambda: sweep(cfg, role=role).codes(), max(1, reps // 2))
            rows.append({"name": f"sweep rows (codes array): {name}", "value": round(n / t_codes), "unit": "configs/s",
                         "configs": n, "seconds": round(t_codes, 3), "baseline": round(loop),
                         "baseline_name": "solve loop, fast path (solve_uncached), configs/s",
                         "ratio": round((n / t_codes) / loop, 1)})
        if 100_000 <= n <= 3_000_000 and not slow:
            t = time.perf_counter()
            k = sum(1 for _ in sweep(cfg, role=role))
            t_iter = time.perf_counter() - t
            rows.append({"name": f"sweep iteration (dict, backend): {name}", "value": round(k / t_iter),
                         "unit": "configs/s", "configs": k, "seconds": round(t_iter, 3), "baseline": round(loop),
                         "baseline_name": "solve loop, fast path (solve_uncached), configs/s",
                         "ratio": round((k / t_iter) / loop, 1)})
    # The loop as users write it: solve() raising with an explanation on failures.
    s = sweep(spaces[0][1])
    loop_explain = _loop_rate(s, 60 if quick else 200, explain=True)
    loop_fast = _loop_rate(s, loop_n, explain=False)
    t_rows = _best(lambda: list(sweep(spaces[0][1])), reps)
    rows.append({"name": "solve() loop incl. explained failures (H100 space)", "value": round(loop_explain),
                 "unit": "configs/s", "baseline": round(len(s) / t_rows),
                 "baseline_name": "sweep iteration of the same space, configs/s",
                 "ratio": round((len(s) / t_rows) / loop_explain, 1)})
    rows.append({"name": "solve_uncached loop (H100 space)", "value": round(loop_fast), "unit": "configs/s"})
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if "skipped" in r:  # a space the release refuses (its steps read the space's fields together)
            print(f"{r['name']:70} {'skipped':>20} {r['skipped']}")
            continue
        extra = f"  ({r['configs']:,} configs in {r['seconds']} s)" if "configs" in r else ""
        if "ratio" in r:
            extra += f"  {r['ratio']}x vs {r['baseline']:,} ({r['baseline_name']})"
        print(f"{r['name']:70} {r['value']:>20,} {r['unit']}{extra}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    _print(run(quick="--quick" in sys.argv))
    print(f"# total {time.perf_counter() - t0:.1f} s")
