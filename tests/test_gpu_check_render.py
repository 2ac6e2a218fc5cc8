"""The GPU run's docs section is rendered from the run's JSON files (no GPU needed to test that)."""

from __future__ import annotations

import json

from benchmarks import gpu_check


def _row(name, cfg, value):
    return {"name": name + " " + " ".join(f"{k}={v}" for k, v in cfg.items()), "config": cfg, "value": value,
            "baseline": 1.0, "ratio": round(1.0 / value, 2)}


def test_ab_table_pairs_rows_that_differ_in_one_knob():
    rows = [
        _row("tune MLA b8 h128 ctx 4k", dict(tile=16, num_segments=8, p_two_terms=True), 0.6),
        _row("tune MLA b8 h128 ctx 4k", dict(tile=16, num_segments=8, p_two_terms=False), 0.5),
        _row("tune MLA b8 h128 ctx 4k", dict(tile=32, num_segments=8, p_two_terms=True), 0.9),
        _row("tune MLA b8 h128 ctx 4k", dict(tile=32, num_segments=8, p_two_terms=False), 0.6),
        _row("tune prefill bf16 2k", dict(block_m=128, tile=64, num_stages=2), 0.40),
        _row("tune prefill bf16 2k", dict(block_m=128, tile=64, num_stages=2, mask_every_tile=True), 0.50),
        _row("tune prefill bf16 2k", dict(block_m=64, tile=64, num_stages=2), 0.70),  # no partner: not paired
    ]
    table = gpu_check.knob_ab_table(rows)
    text = "\n".join(table)
    assert "| TRITON_MLA two-term P: time with it / with one bf16 term | MLA b8 h128 ctx 4k | 2 | 1.50 | 1.20-1.50 |" in text
    assert "| TRITON_ATTN edge-only masks: time masking every tile / edge tiles only | prefill bf16 2k | 1 | 1.25 |" in text


def test_render_reads_a_run_directory(tmp_path):
    (tmp_path / "env.json").write_text(json.dumps({"date": "2026-12-04 15:49 UTC", "gpu": "NVIDIA H200", "torch": "2.11",
                                                   "capability": "9.0", "sms": 132, "memory_gib": 139.8,
                                                   "libraries": {}}))
    (tmp_path / "steps.json").write_text(json.dumps({"bench": {"exit": 0, "seconds": 28}}))
    (tmp_path / "bench_tune.json").write_text(json.dumps({"bw": 4000.0, "rows": [
        _row("tune prefill bf16 2k", dict(block_m=128, tile=64, num_stages=2), 0.40),
        _row("tune prefill bf16 2k", dict(block_m=128, tile=64, num_stages=2, mask_every_tile=True), 0.44)]}))
    text = gpu_check.render(tmp_path)
    assert text.startswith(gpu_check.BEGIN) and text.endswith(gpu_check.END)
    assert "NVIDIA H200" in text and "edge-only masks" in text and "| 1.10 |" in text


def test_bench_table_shows_cuda_graph_replay_and_why_it_is_missing():
    rows = [{"name": "decode b8 TRITON_ATTN", "value": 0.12, "unit": "ms", "baseline": 0.04, "ratio": 0.33,
             "kv_gbs": 300.0, "pct_of_bw": 7.0, "graph_ms": 0.03, "graph_pct_of_bw": 28.0},
            {"name": "decode b8 FLEX_ATTENTION", "value": 2.7, "unit": "ms", "baseline": 0.04, "ratio": 0.01,
             "kv_gbs": 12.0, "pct_of_bw": 0.3, "graph_error": "RuntimeError: operation not permitted when stream is capturing"},
            {"name": "decode b8 FLASHINFER", "skipped": "not installed"}]
    table = gpu_check._bench_table(rows)
    assert table[0].endswith("CUDA graph replay (% of bw) |")
    assert "| 0.03 ms (28.0%) |" in table[2]
    assert "not captured: RuntimeError: operation not permitted" in table[3]
    assert all(line.count("|") == table[0].count("|") for line in table)
    # a run without graph figures keeps the four columns
    assert "graph" not in gpu_check._bench_table(rows[2:])[0]


def test_steps_run_in_the_order_given_and_unknown_ones_are_refused(tmp_path, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(gpu_check, "environment", lambda: {})
    monkeypatch.setattr(gpu_check, "_sh", lambda cmd, timeout, log: ran.append((log.name, timeout)) or (0, "", 1.0))
    gpu_check.run(tmp_path, 400, False, ("tests", "tune"))
    assert [name for name, _ in ran] == ["gpu_tests.log", "bench_tune.log"]
    assert ran[0][1] <= 240 and ran[1][1] <= 400
    assert json.loads((tmp_path / "steps.json").read_text()) == {"tests": {"exit": 0, "seconds": 1},
                                                                 "tune": {"exit": 0, "seconds": 1}}
    import pytest

    with pytest.raises(SystemExit):
        gpu_check.main(["--out", str(tmp_path), "--steps", "tests,bogus"])
    assert "unknown step(s) ['bogus']" in capsys.readouterr().err
