"""ms per explanation (conflict set + fixes) vs a brute-force baseline, measured side by side.

Brute force: the smallest conflict by testing subsets of the facts in order of size with the CSP
(python-constraint2) as the consistency test, the approach a straightforward implementation takes.
Run: python benchmarks/bench_explain.py [--quick]
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any

from attnsolve import ANY, Config, explain, vllm_versions
from attnsolve.config import FIELD_NAMES
from attnsolve.diagnosis import _fact_order
from attnsolve.selection import csp_solver
from attnsolve.solver.facts import base_facts

FULL = Config(platform="cuda", gpu="H100", dtype="bfloat16", kv_cache_dtype="fp8", block_size=8)
FULL_MLA = Config(platform="cuda", gpu="B200", dtype="float32", use_mla=True, kv_cache_dtype="fp8_e5m2", block_size=8)
REQUESTED = Config(platform="cuda", gpu="A100", dtype="bfloat16", backend="FLASHMLA", use_mla=True)
PARTIAL = Config(platform="cuda", gpu="H100", dtype="bfloat16", kv_cache_dtype=ANY, block_size=ANY)


def brute_force_conflict(cfg: Config, max_size: int = 3) -> tuple[str, ...] | None:
    """The smallest subset of facts (up to max_size) the CSP alone cannot complete: the baseline."""
    full = base_facts(cfg, "decode")
    order = _fact_order(cfg)
    csp = csp_solver(cfg)
    for k in range(1, max_size + 1):
        for sub in itertools.combinations(order, k):
            facts = {f: (full[f] if f in sub or f in ("role", "backend") else ANY) for f in full}
            if csp.find(facts, backend=cfg.backend) is None:
                return sub
    return None


def _time(fn: Any, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e3


# (name, Config arguments): asked of every packaged release
CASES = (
    ("failing full config (H100 fp8, block 8)", dict(platform="cuda", gpu="H100", dtype="bfloat16",
                                                     kv_cache_dtype="fp8", block_size=8)),
    ("failing full config (B200 MLA fp32)", dict(platform="cuda", gpu="B200", dtype="float32", use_mla=True,
                                                 kv_cache_dtype="fp8_e5m2", block_size=8)),
    ("requested backend (FLASHMLA on A100)", dict(platform="cuda", gpu="A100", dtype="bfloat16", backend="FLASHMLA",
                                                  use_mla=True)),
)
# The brute-force baseline runs where its CSP completions take milliseconds: on vLLM 0.33 (30 coupled
# fields) one completion with most facts free can take minutes, so its rows carry no baseline.
BASELINE_RELEASES = ("0.17",)


def run(quick: bool = False) -> list[dict[str, Any]]:
    reps = 3 if quick else 20
    rows = []
    for release in vllm_versions():
        for name, kw in CASES:
            cfg = Config(vllm=release, **kw)
            ours = _time(lambda: explain(cfg), reps)
            row: dict[str, Any] = {"name": f"explain: {name}, vLLM {release}", "value": round(ours, 3), "unit": "ms"}
            if release in BASELINE_RELEASES:
                brute = _time(lambda: brute_force_conflict(cfg), max(1, reps // 10))
                row.update(baseline=round(brute, 1), baseline_name="brute-force conflict only (CSP)",
                           ratio=round(brute / ours, 1))
            else:
                row["detail"] = "no brute-force baseline: one CSP completion on this release can take minutes"
            rows.append(row)
        partial = Config(vllm=release, platform="cuda", gpu="H100", dtype="bfloat16", kv_cache_dtype=ANY, block_size=ANY)
        ours = _time(lambda: explain(partial), reps)
        rows.append({"name": f"explain: partial config (kv dtype, block size free), vLLM {release}",
                     "value": round(ours, 3), "unit": "ms"})
    return rows


def main(argv: list[str] | None = None) -> int:
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    print(f"{'benchmark':58} {'ours':>10} {'baseline':>12} {'speed-up':>9}")
    for r in run(quick):
        base = f"{r['baseline']} ms" if "baseline" in r else "-"
        ratio = f"{r['ratio']}x" if "ratio" in r else "-"
        print(f"{r['name']:58} {r['value']:>7} ms {base:>12} {ratio:>9}")
    print("goal: <= 2 ms for a full config's conflict set plus fixes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
