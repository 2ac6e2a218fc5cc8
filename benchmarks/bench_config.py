"""µs per Config(...) and per cold solve(), with every packaged rule set loaded, side by side.

* Config, fresh values: a head size never used before in this process (no interning hit).
* Config, repeated arguments: the same keyword arguments again (interned: the same immutable Config).
* solve, cold: a Config whose head size was never seen (no answer-cache hit). The compiled rules answer
  by value class: the first query of a class runs the whole selection, a later never-seen value of that
  class (here: head sizes 1000, 1001, ... on one GPU) is answered from its class when that answer puts
  no fact into its text (answers that do are solved in full); the goal row is this one.
* solve, full pipeline: the same never-seen values through the whole selection every time (no reuse of
  another value's answer; the compiled rules' per-class memo of derived facts and clauses still applies).
* solve, warm: the same Config again (answer-cache hit), and a dict lookup: the references measured
  beside the cold figure in this run (ratios = cold / reference), so figures from a loaded or slower
  machine still compare.
Each row is measured for every packaged release with all of them loaded in this process (one Engine
each), so the second release's figures show the cost of having several side by side.

Goals (issue 13): cold solve() <= 20 µs, Config(...) <= 10 µs.
CPU time of this process (time.process_time), best of 5; `--wall` uses wall-clock time.
Run: python benchmarks/bench_config.py [--quick] [--wall]   (also part of `python -m benchmarks`)
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any, Callable

from attnsolve import Config, solve
from attnsolve.rules import versions
from attnsolve.selection import compiled_rules, solve_uncached

CLOCK: Callable[[], float] = time.process_time
GOAL_SOLVE_US = 20.0
GOAL_CONFIG_US = 10.0
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
    full_cfgs = [Config(**base, head_size=next(_COUNTER)) for _ in range(n * 5)]
    iu = iter(full_cfgs)
    table = {warm: 1}
    return {
        "config_fresh": _best_us(lambda: Config(**next(it)), n),
        "config_repeated": _best_us(lambda: Config(**base, head_size=128), n),
        "solve_cold": _best_us(lambda: solve(next(ic)), n),
        "solve_full": _best_us(lambda: solve_uncached(next(iu)), n),
        "solve_warm": _best_us(lambda: solve(warm), n),
        "dict_lookup": _best_us(lambda: table.get(warm), n),
    }


def measure_all(quick: bool = False) -> dict[str, dict[str, float]]:
    """release -> its figures, every release loaded and compiled before anything is measured."""
    n = 200 if quick else 1000
    loaded = [v for v in versions() if _loadable(v)]
    for v in loaded:
        compiled_rules(Config(platform="cuda", compute_capability="9.0", dtype="bfloat16", vllm=v))
    return {v: measure(v, n) for v in loaded}


def rows_of(figures: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for v, m in figures.items():
        cold = m["solve_cold"]
        rows += [
            {"name": f"vLLM {v}: solve() cold (never-seen head size)", "value": round(cold, 2), "unit": "µs",
             "ratio": round(cold / m["solve_warm"], 1), "baseline": round(m["solve_warm"], 2),
             "baseline_name": "solve() warm, same run", "goal": f"<= {GOAL_SOLVE_US:g} µs"},
            {"name": f"vLLM {v}: solve() full pipeline (never-seen head size, no reuse)",
             "value": round(m["solve_full"], 2), "unit": "µs", "ratio": round(m["solve_full"] / m["solve_warm"], 1),
             "baseline": round(m["solve_warm"], 2), "baseline_name": "solve() warm, same run"},
            {"name": f"vLLM {v}: solve() warm (same Config again)", "value": round(m["solve_warm"], 2), "unit": "µs",
             "ratio": round(m["solve_warm"] / m["dict_lookup"], 1), "baseline": round(m["dict_lookup"], 3),
             "baseline_name": "dict lookup, same run"},
            {"name": f"vLLM {v}: Config(...) fresh values", "value": round(m["config_fresh"], 2), "unit": "µs",
             "ratio": round(m["config_fresh"] / m["solve_warm"], 1), "baseline": round(m["solve_warm"], 2),
             "baseline_name": "solve() warm, same run", "goal": f"<= {GOAL_CONFIG_US:g} µs"},
            {"name": f"vLLM {v}: Config(...) repeated arguments", "value": round(m["config_repeated"], 2),
             "unit": "µs", "ratio": round(m["config_repeated"] / m["solve_warm"], 1),
             "baseline": round(m["solve_warm"], 2), "baseline_name": "solve() warm, same run"},
        ]
    for v in versions():
        if v not in figures:
            rows.append({"name": f"vLLM {v}: skipped (rule set does not load)", "value": float("nan"), "unit": "",
                         "skipped": True})
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows of {name, value, unit, ratio, baseline, baseline_name, goal} for `python -m benchmarks`."""
    return rows_of(measure_all(quick))


def table(figures: dict[str, dict[str, float]]) -> list[str]:
    """The releases side by side: µs, then the cold solve as a ratio to the references measured beside it."""
    vs = list(figures)
    head = f"{'':44}" + "".join(f"{'vLLM ' + v:>12}" for v in vs) + "  goal"
    lines = [head]

    def row(label: str, values: list[str], goal: str = "") -> None:
        lines.append(f"{label:44}" + "".join(f"{x:>12}" for x in values) + (f"  {goal}" if goal else ""))

    def verdict(key: str, goal: float) -> str:
        return f"<= {goal:g} µs: " + ", ".join(f"{v} {'met' if figures[v][key] <= goal else 'NOT met'}" for v in vs)

    row("solve() cold, never-seen head size (µs)", [f"{figures[v]['solve_cold']:.2f}" for v in vs],
        verdict("solve_cold", GOAL_SOLVE_US))
    row("  = x solve() warm (same run)", [f"{figures[v]['solve_cold'] / figures[v]['solve_warm']:.1f}x" for v in vs])
    row("  = x dict lookup (same run)", [f"{figures[v]['solve_cold'] / figures[v]['dict_lookup']:.0f}x" for v in vs])
    row("solve() full pipeline, no reuse (µs)", [f"{figures[v]['solve_full']:.2f}" for v in vs])
    row("solve() warm, same Config (µs)", [f"{figures[v]['solve_warm']:.2f}" for v in vs])
    row("dict lookup (µs)", [f"{figures[v]['dict_lookup']:.3f}" for v in vs])
    row("Config(...) fresh values (µs)", [f"{figures[v]['config_fresh']:.2f}" for v in vs],
        verdict("config_fresh", GOAL_CONFIG_US))
    row("Config(...) repeated arguments (µs)", [f"{figures[v]['config_repeated']:.2f}" for v in vs])
    return lines


def main(argv: list[str]) -> int:
    global CLOCK
    if "--wall" in argv:
        CLOCK = time.perf_counter
    figures = measure_all(quick="--quick" in argv)
    print(f"all rule sets loaded in one process ({', '.join(figures)}); "
          f"{'wall' if CLOCK is time.perf_counter else 'CPU'} time, best of 5")
    print("\n".join(table(figures)))
    skipped = [v for v in versions() if v not in figures]
    if skipped:
        print("skipped (rule set does not load): " + ", ".join(skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
