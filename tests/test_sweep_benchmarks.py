"""The benchmark runner's plumbing (no timings asserted) and the sweep on synthetic rule sets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from attnsolve import ANY, Config, InvalidBackendError, NoValidBackendError, load_rules, use_rules
from attnsolve.selection import solve_uncached
from attnsolve.sweep import sweep

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_scaling, run  # noqa: E402

# vLLM 0.17's facts (benchmark plumbing on the 0.17 set): 0.17 answers what names no release.
pytestmark = pytest.mark.vllm("0.17")


@pytest.mark.parametrize("n", [3, 40])
def test_sweep_agrees_with_solve_on_synthetic_rules(tmp_path: Path, n: int) -> None:
    folder = bench_scaling.synthetic_rules(n, tmp_path / "rules", seed=n)
    with use_rules(load_rules(folder)):
        cfg = Config(platform="cuda", compute_capability=ANY, dtype=ANY, head_size=ANY, kv_cache_dtype=ANY,
                     block_size=ANY, has_sink=ANY)
        s = sweep(cfg)
        assert len(s) > 1000
        for a, b in s:
            try:
                got = solve_uncached(s.completion(a)).backend
            except (NoValidBackendError, InvalidBackendError):
                got = None
            assert got == b, a


def test_missing_module_becomes_a_skipped_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "MODULES", (("nothing", "bench_does_not_exist"),))
    table, elapsed = run.run_all(quick=True)
    assert table == [("nothing", {"name": "bench_does_not_exist", "skipped": "bench_does_not_exist.py not written yet"})]
    rows = run.table_rows(table)
    assert rows[0][2] == "skipped" and "not written yet" in rows[0][-1]


def test_out_reaches_modules_that_write_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`python -m benchmarks --out DIR`: a module whose run() takes `out` (bench_kernels' plot) gets DIR, so
    nothing is written next to the package; a module without it is called as before."""
    import sys
    import types

    seen: dict[str, object] = {}
    with_out = types.ModuleType("benchmarks.fake_with_out")
    with_out.run = lambda quick=False, out=None: seen.setdefault("out", out) and [{"name": "a", "value": 1}]
    without = types.ModuleType("benchmarks.fake_without_out")
    without.run = lambda quick=False: [{"name": "b", "value": 2}]
    monkeypatch.setitem(sys.modules, "benchmarks.fake_with_out", with_out)
    monkeypatch.setitem(sys.modules, "benchmarks.fake_without_out", without)
    monkeypatch.setattr(run, "MODULES", (("x", "fake_with_out"), ("y", "fake_without_out")))
    table, _ = run.run_all(quick=True, out=tmp_path)
    assert seen["out"] == tmp_path
    assert [r["name"] for _, r in table] == ["a", "b"]


def test_goals_are_applied_and_checked() -> None:
    rows = [{"name": "solve, repeated config (cache hit), mean", "value": 0.3, "unit": "µs"},
            {"name": "solve, uncached (cache cleared), mean", "value": 25.0, "unit": "µs"},
            {"name": "x", "value": 2_000_000, "unit": "configs/s", "goal": ">= 1,000,000 configs/s"}]
    run.apply_goals("solve", rows)
    assert [r.get("met") for r in rows] == [True, False, True]


def test_results_markdown(tmp_path: Path) -> None:
    table = [("sweep", {"name": "a | b", "value": 1.5, "unit": "ms", "baseline": 3.0, "baseline_name": "loop",
                        "ratio": 2.0}),
             ("triton", {"name": "bench_triton", "skipped": "no CUDA"})]
    rows = run.table_rows(table)
    out = tmp_path / "results.md"
    run.write_markdown(out, rows, {"cpu": "test cpu", "cores": "2"}, {"sweep": 1.0}, True, ["x.png"])
    text = out.read_text()
    assert "- cpu: test cpu" in text and "a \\| b" in text and "2x" in text and "skipped" in text
    assert "![x.png](x.png)" in text


def test_plots_from_rows(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    table = [("kernels", {"name": "memory read bandwidth", "value": 10.0, "unit": "GB/s"}),
             ("kernels", {"name": "decode bfloat16 b8 ctx 4k", "value": 1.0, "unit": "ms", "kv_gbs": 5.0,
                          "sdpa_gbs": 2.0}),
             ("kernels", {"name": "decode bfloat16 b8 ctx 16k", "value": 1.0, "unit": "ms", "kv_gbs": 6.0,
                          "sdpa_gbs": 2.0}),
             ("scaling", {"name": "s", "value": 1.0, "unit": "ms", "series": "sweep vs space", "x": 10,
                          "free_fields": 3, "rows_ms": 0.1}),
             ("scaling", {"name": "b", "value": 10.0, "unit": "µs", "series": "solve vs backends", "x": 10,
                          "decision_us": 2.0})]
    made = run.draw_plots(table, tmp_path)
    assert set(made) == set(run.PLOTS.values())
    assert all((tmp_path / p).stat().st_size > 1000 for p in made)
