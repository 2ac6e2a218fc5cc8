"""attnsolve benchmarks: `python -m benchmarks [--quick]` runs them all and writes benchmarks/results.md.

Each bench_*.py module exposes `run(quick: bool = False) -> list[dict]` (rows: name, value, unit and
optional baseline, baseline_name, ratio, goal) and can also be run alone with `python -m benchmarks.bench_x`.
"""
