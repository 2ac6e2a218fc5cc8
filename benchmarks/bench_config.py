"""µs per Config(...) and per cold solve(), with every packaged rule set loaded, side by side.

* Config, fresh values: a head size never used before in this process (no interning hit).
* Config, repeated arguments: the same keyword arguments again (interned: the same immutable Config).
* solve, cold: a Config whose head size was never seen (no answer cache, no per-value memo hit).
* solve, warm: the same Config again (answer cache hit).
Each row is measured for every packaged release with all of them loaded in this process (one
Engine each), so the second release's figures show the cost of having several side by side.

Goals (issue 13): cold solve() <= 20 µs, Config(...) <= 10 µs.
CPU time of this process (time.process_time), best of 5; `--wall` uses wall-clock time.
Run: python benchmarks/bench_config.py [--quick] [--wall]
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any, Callable

from attnsolve import Config, solve
from attnsolve.rules import versions
from attnsolve.selection import compiled_rules

CLOCK: Callable[[], float] = time.process_time
# Head sizes 1..2**20 are valid: a counter gives a never-seen value per call.
_COUNTER = itertools.count(1000)


def _best_us(fn: Callable[[], Any], n: int, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = CLOCK()
        for _ in range(n):
            fn()
        best = min(best, (CLOCK() - t) / n)
    return best * 1e6


def _loadable(v: str) -> bool:
    try:
        Config(gpu="H100", dtype="bfloat16", vllm=v)
        return True
    except Exception:  # noqa: BLE001 - a draft set that does not load yet is reported, not measured
        return False


def measure(version: str, n: int) -> dict[str, float]:
    base = dict(platform="cuda", compute_capability="9.0", dtype="bfloat16", vllm=version)
    compiled_rules(Config(**base, head_size=128))  # compile outside the timings
    solve(Config(**base, head_size=128))
    warm = Config(**base, head_size=128)
    fresh_args = [dict(base, head_size=next(_COUNTER)) for _ in range(n * 5)]
    it = iter(fresh_args)
    cold_cfgs = [Config(**base, head_size=next(_COUNTER)) for _ in range(n * 5)]
    ic = iter(cold_cfgs)
    return {
        "config_fresh": _best_us(lambda: Config(**next(it)), n),
        "config_repeated": _best_us(lambda: Config(**base, head_size=128), n),
        "solve_cold": _best_us(lambda: solve(next(ic)), n),
        "solve_warm": _best_us(lambda: solve(warm), n),
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows of {name, value, unit, ratio, baseline, baseline_name} for `python -m benchmarks`."""
    n = 200 if quick else 1000
    loaded = [v for v in versions() if _loadable(v)]
    rows: list[dict[str, Any]] = []
    for v in loaded:  # all loaded first: the figures are with every release side by side
        m = measure(v, n)
        rows += [
            {"name": f"vLLM {v}: Config(...) fresh values", "value": m["config_fresh"], "unit": "µs",
             "ratio": m["config_fresh"] / 10.0, "baseline": 10.0, "baseline_name": "goal 10 µs"},
            {"name": f"vLLM {v}: Config(...) repeated arguments", "value": m["config_repeated"], "unit": "µs",
             "ratio": m["config_repeated"] / 10.0, "baseline": 10.0, "baseline_name": "goal 10 µs"},
            {"name": f"vLLM {v}: solve() cold (never-seen head size)", "value": m["solve_cold"], "unit": "µs",
             "ratio": m["solve_cold"] / 20.0, "baseline": 20.0, "baseline_name": "goal 20 µs"},
            {"name": f"vLLM {v}: solve() warm", "value": m["solve_warm"], "unit": "µs",
             "ratio": m["solve_warm"] / m["solve_cold"], "baseline": m["solve_cold"], "baseline_name": "cold"},
        ]
    for v in versions():
        if v not in loaded:
            rows.append({"name": f"vLLM {v}: skipped (rule set does not load)", "value": float("nan"), "unit": "",
                         "ratio": float("nan"), "baseline": float("nan"), "baseline_name": ""})
    return rows


def main(argv: list[str]) -> int:
    global CLOCK
    if "--wall" in argv:
        CLOCK = time.perf_counter
    rows = run(quick="--quick" in argv)
    print(f"{'measurement':52} {'µs':>9}  ratio")
    for r in rows:
        print(f"{r['name']:52} {r['value']:9.2f}  {r['ratio']:.2f} x {r['baseline_name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
