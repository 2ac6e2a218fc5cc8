"""explain()'s answers on a fixed sample, to show a speed-up changed none of them, and its timings.

The sample: configurations drawn from tests/strategies.py (derandomised) per release plus its
hand-picked edge cases, stored once as JSON so that two versions of the code answer the same
questions. Each answer is explain().to_dict() (conflicts, fixes in rank order, verdicts) and the
advice text str(explain(...)) (lost backends' conflicts and fixes), with the CPU seconds it took.

    python -m benchmarks.explain_answers sample  SAMPLE.json [--n 200]     # draw the questions
    python -m benchmarks.explain_answers answer  SAMPLE.json OUT.json [--budget S]  # answer and time them
    python -m benchmarks.explain_answers compare BEFORE.json AFTER.json    # same answers? timings
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any


def _draw(version: str, n: int) -> list[dict[str, Any]]:
    os.environ["ATTNSOLVE_VLLM"] = version
    from hypothesis import HealthCheck, Phase, given, settings

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from tests import strategies as S
    from attnsolve.rules import rules_for

    rules = rules_for(version)
    out: list[dict[str, Any]] = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(S.queries(rules))
    def collect(q: Any) -> None:
        cfg, role = q
        out.append({"config": {**cfg.to_dict(), "vllm": version}, "role": role})

    collect()
    from attnsolve import Config
    from attnsolve.errors import ConfigError
    for kw, role in S.EDGE_CASES:
        try:
            cfg = Config(**kw, vllm=version)
        except ConfigError:
            continue
        out.append({"config": cfg.to_dict(), "role": role})
    seen, uniq = set(), []
    for q in out:
        k = json.dumps(q, sort_keys=True, default=str)
        if k not in seen:
            seen.add(k)
            uniq.append(q)
    return uniq


class _OverBudget(BaseException):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _OverBudget()


def _answer(q: dict[str, Any], budget: float = 0.0) -> dict[str, Any]:
    """One question's answer; budget > 0: give up after that many CPU seconds (recorded as such)."""
    import signal
    if budget:
        signal.signal(signal.SIGVTALRM, _alarm)
        signal.setitimer(signal.ITIMER_VIRTUAL, budget)
    try:
        return _answer_now(q)
    except _OverBudget:
        return {"answer": {"over_budget": budget}, "text": "", "explain_s": budget, "total_s": budget}
    finally:
        if budget:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)


def _answer_now(q: dict[str, Any]) -> dict[str, Any]:
    from attnsolve import Config, explain
    cfg = Config(**q["config"])
    role = None if q["role"] == "decode" else q["role"]
    t = time.process_time()
    try:
        e = explain(cfg, role=role)
    except _OverBudget:
        raise
    except Exception as x:  # noqa: BLE001 - a refused question (a role without a list) is an answer too
        t1 = time.process_time()
        return {"answer": {"error": f"{type(x).__name__}: {x}"}, "text": "", "explain_s": round(t1 - t, 4),
                "total_s": round(t1 - t, 4)}
    t1 = time.process_time()
    text = str(e)
    t2 = time.process_time()
    return {"answer": json.loads(json.dumps(e.to_dict(), default=str)), "text": text,
            "explain_s": round(t1 - t, 4), "total_s": round(t2 - t, 4)}


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else ""
    if cmd == "sample":
        n = int(argv[argv.index("--n") + 1]) if "--n" in argv else 200
        qs = _draw("0.17", n) + _draw("0.33", n)
        with open(argv[1], "w") as f:
            json.dump(qs, f, indent=0, default=str)
        print(f"{len(qs)} questions -> {argv[1]}")
        return 0
    if cmd == "answer":
        with open(argv[1]) as f:
            qs = json.load(f)
        budget = float(argv[argv.index("--budget") + 1]) if "--budget" in argv else 0.0
        out = []
        for i, q in enumerate(qs):
            out.append({**q, **_answer(q, budget)})
            if i % 25 == 0:
                print(i, file=sys.stderr, flush=True)
        with open(argv[2], "w") as f:
            json.dump(out, f, indent=0)
        return 0
    if cmd == "compare":
        with open(argv[1]) as f:
            a = json.load(f)
        with open(argv[2]) as f:
            b = json.load(f)
        assert [x["config"] for x in a] == [x["config"] for x in b], "different samples"
        skipped = [i for i, (x, y) in enumerate(zip(a, b)) if "over_budget" in x["answer"] or "over_budget" in y["answer"]]
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if i not in skipped
                and (x["answer"], x["text"]) != (y["answer"], y["text"])]
        print(f"{len(a)} questions, {len(skipped)} over the CPU budget on one side (not compared), "
              f"{len(diff)} answers differ" + (f": {diff[:20]}" if diff else ""))
        for version in ("0.17", "0.33"):
            for key in ("explain_s", "total_s"):
                xa = [x[key] for x in a if x["config"]["vllm"] == version]
                xb = [x[key] for x in b if x["config"]["vllm"] == version]
                if xa:
                    print(f"{version} {key:9}: before median {statistics.median(xa):.3f} max {max(xa):.2f} "
                          f"sum {sum(xa):.1f} | after median {statistics.median(xb):.3f} max {max(xb):.2f} "
                          f"sum {sum(xb):.1f}")
        return 1 if diff else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
