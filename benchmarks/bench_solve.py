"""µs per solve(): the compiled bitset path (cached and uncached) vs the CSP reference path, side by side.

* compiled, repeated config: the same Config object solved again and again (the selection cache hits).
* compiled, uncached: the selection cache is cleared before every call (bitsets + plan + Selection built).
* compiled, fresh Config: a new Config object every call, construction included (what a caller
  that builds its query each time pays). Equal configs hash equal, so this is construction + a cache hit.
* CSP: `solve_csp` (python-constraint2) on the same config: the reference the compiled path is tested against.

Goals (issue 3): compiled <= 20 µs uncached, <= 1 µs for a repeated config.
Timings are CPU time of this process (time.process_time), best of 5 runs; `--wall` uses wall-clock time.
Run: python benchmarks/bench_solve.py [--quick] [--wall]
"""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any, Callable

from attnsolve import Config, solve
from attnsolve.selection import clear_cache, compiled_rules, solve_csp

CASES: tuple[tuple[str, dict[str, Any], str | None], ...] = (
    ("H100 bf16 head 128 -> FLASH_ATTN", dict(platform="cuda", gpu="H100", dtype="bfloat16", head_size=128), None),
    ("B200 bf16 -> FLASHINFER", dict(platform="cuda", gpu="B200", dtype="bfloat16"), None),
    ("A100 fp8 KV -> FLASHINFER", dict(platform="cuda", gpu="A100", dtype="bfloat16", kv_cache_dtype="fp8"), None),
    ("H100 fp32 head 16 -> FLEX_ATTENTION", dict(platform="cuda", gpu="H100", dtype="float32", head_size=16), None),
    ("B200 MLA -> FLASHINFER_MLA", dict(platform="cuda", gpu="B200", dtype="bfloat16", use_mla=True), None),
    ("B200 sparse MLA 16 heads", dict(platform="cuda", gpu="B200", dtype="bfloat16", use_mla=True, use_sparse=True,
                                      num_heads=16), None),
    ("B200 MLA prefill (R1 dims)", dict(platform="cuda", gpu="B200", dtype="bfloat16", use_mla=True,
                                        qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128), "mla_prefill"),
    ("manual FLASH_ATTN on H100", dict(platform="cuda", gpu="H100", dtype="bfloat16", backend="flash_attn"), None),
    ("CPU -> CPU_ATTN", dict(platform="cpu", dtype="bfloat16"), None),
    ("MI300X -> TRITON_ATTN", dict(gpu="MI300X", dtype="bfloat16"), None),
)


# CPU time of this (single-threaded) process: on a shared machine wall-clock timings include the time
# other processes hold the cores; `--wall` switches to time.perf_counter.
CLOCK: Callable[[], float] = time.process_time


def _per_call_us(fn: Callable[[], Any], n: int, repeats: int = 5) -> float:
    """Best of `repeats` timings of n calls, in µs per call."""
    for _ in range(max(5, n // 10)):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = CLOCK()
        for _ in range(n):
            fn()
        best = min(best, (CLOCK() - t) / n)
    return best * 1e6


def measure(data: dict[str, Any], role: str | None, n: int) -> dict[str, float]:
    cfg = Config(**data)
    compiled_rules()  # compile once, outside the timings
    solve(cfg, role=role)

    def uncached() -> None:
        clear_cache()
        solve(cfg, role=role)

    return {
        "cached": _per_call_us(lambda: solve(cfg, role=role), n * 10),
        "uncached": _per_call_us(uncached, n),
        "fresh": _per_call_us(lambda: solve(Config(**data), role=role), n),
        "csp": _per_call_us(lambda: solve_csp(cfg, role=role), max(3, n // 50), repeats=3),
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows of {name, value, unit, ratio, baseline, baseline_name} for `python -m benchmarks`."""
    n = 200 if quick else 2000
    rows: list[dict[str, Any]] = []
    totals = {"cached": 0.0, "uncached": 0.0, "fresh": 0.0, "csp": 0.0}
    for name, data, role in CASES:
        m = measure(data, role, n)
        for k in totals:
            totals[k] += m[k]
        rows.append({"name": f"solve uncached: {name}", "value": round(m["uncached"], 2), "unit": "µs",
                     "baseline": round(m["csp"], 1), "baseline_name": "CSP path (solve_csp)",
                     "ratio": round(m["csp"] / m["uncached"], 1),
                     "cached": round(m["cached"], 3), "fresh": round(m["fresh"], 2)})
    k = len(CASES)
    mean = {key: v / k for key, v in totals.items()}
    rows.append({"name": "solve, repeated config (cache hit), mean", "value": round(mean["cached"], 3), "unit": "µs",
                 "baseline": round(mean["csp"], 1), "baseline_name": "CSP path (solve_csp)",
                 "ratio": round(mean["csp"] / mean["cached"], 1), "goal": "<= 1 µs"})
    rows.append({"name": "solve, uncached (cache cleared), mean", "value": round(mean["uncached"], 2), "unit": "µs",
                 "baseline": round(mean["csp"], 1), "baseline_name": "CSP path (solve_csp)",
                 "ratio": round(mean["csp"] / mean["uncached"], 1), "goal": "<= 20 µs"})
    rows.append({"name": "Config(...) + solve, fresh equal object each call, mean", "value": round(mean["fresh"], 2),
                 "unit": "µs", "baseline": round(mean["csp"], 1), "baseline_name": "CSP path (solve_csp)",
                 "ratio": round(mean["csp"] / mean["fresh"], 1)})
    rows.append({"name": "CSP path (solve_csp), mean", "value": round(mean["csp"], 1), "unit": "µs", "ratio": 1.0})
    return rows


def main(argv: list[str] | None = None) -> int:
    global CLOCK
    args = argv if argv is not None else sys.argv[1:]
    quick = "--quick" in args
    if "--wall" in args:
        CLOCK = time.perf_counter
    clock = "wall-clock" if CLOCK is time.perf_counter else "CPU time of this process"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"µs per call, {clock}, best of 5")
    rows = run(quick)
    print(f"{'config':44} {'cached':>9} {'uncached':>9} {'fresh':>9} {'CSP':>10} {'CSP/uncached':>13}")
    for r in rows:
        if r["name"].startswith("solve uncached: "):
            print(f"{r['name'][16:]:44} {r['cached']:>6} µs {r['value']:>6} µs {r['fresh']:>6} µs "
                  f"{r['baseline']:>7} µs {r['ratio']:>12}x")
    print()
    for r in rows:
        if not r["name"].startswith("solve uncached: "):
            goal = f"  (goal {r['goal']})" if "goal" in r else ""
            ratio = f"  CSP is {r['ratio']}x slower" if r.get("baseline") else ""
            print(f"{r['name']:56} {r['value']:>9} {r['unit']}{ratio}{goal}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
