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
