"""The GPU session's one prepared script: GPU tests, the peer grid on the GPU, benchmarks, docs.

Run on a CUDA machine (``TRITON_INTERPRET`` unset)::

    python -m benchmarks.gpu_check --out DIR [--write-docs] [--budget SECONDS]

Steps, each in its own process with its own time limit (a hang or a crash in one keeps the
others' results), by default in the order that keeps the most valuable figures if time runs out
(``--steps`` picks and orders them, e.g. ``--steps tests,tune`` for a rerun):

1. ``env.json``: GPU, driver, torch, triton, CUDA, which GPU libraries are installed.
2. ``bench_triton.json``: ``benchmarks/bench_triton.py`` (Triton kernels, the runnable adapters
   and FLEX against SDPA and against the measured copy bandwidth).
3. ``gpu_tests.log``: ``pytest -m gpu tests/kernels`` (compiled Triton kernels against the float64
   references, the adapters, FLEX on CUDA).
4. ``peer_grid.json``: ``tests/kernels/gpu_peer_grid.py``: the peers' grids at their own sizes.
5. ``bench_tune.json``: the Triton kernels' launch options swept around their defaults.

``--write-docs`` (or ``--render DIR`` later, on any machine) rewrites the figures section of
``docs/gpu_kernels.md`` (between its ``gpu-figures`` markers) from DIR; a copy goes to
``DIR/gpu_kernels.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "gpu_kernels.md"
BEGIN, END = "<!-- gpu-figures:begin -->", "<!-- gpu-figures:end -->"


def _sh(cmd: list[str], timeout: float, log: Path | None = None) -> tuple[int, str, float]:
    """(exit code, output, seconds); 124 when the time limit stopped it."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(1, timeout))
        code, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        code = 124
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += "\n# stopped: time limit\n"
    secs = time.perf_counter() - t0
    if log is not None:
        log.write_text(out)
    print(f"# {' '.join(cmd[:4])}...: exit {code} in {secs:.0f} s", flush=True)
    print(out[-3000:], flush=True)
    return code, out, secs


def environment() -> dict:
    import torch

    env: dict = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "python": sys.version.split()[0], "torch": torch.__version__,
                 "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception as e:  # noqa: BLE001
        env["triton"] = f"not importable: {e}"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                   sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        env["nvidia_smi"] = smi.stdout.strip()
    except Exception as e:  # noqa: BLE001
        env["nvidia_smi"] = f"unavailable: {e}"
    from attnsolve.kernels.adapters import _common as C

    env["libraries"] = {m: ("installed" if C.load(m) is not None else "not installed")
                        for m in ("flash_attn", "flashinfer", "flash_mla")}
    return env


STEPS = ("bench", "tests", "peer_grid", "tune")
# the most seconds a step may take; each step also leaves 20 s per step still to come
_STEP_CAP = {"bench": 240, "tests": 240, "peer_grid": 300, "tune": 600}


def _commands(out: Path, quick: bool) -> dict[str, tuple[list[str], Path]]:
    py = sys.executable
    bench = [py, "benchmarks/bench_triton.py", "--json", str(out / "bench_triton.json")] + (["--quick"] if quick else [])
    tests = [py, "-m", "pytest", "-m", "gpu", "tests/kernels", "-q", "-rA", "-p", "no:cacheprovider",
             "--deselect", "tests/kernels/test_gpu_peer_grid.py::test_peer_grid_on_gpu",
             f"--junitxml={out / 'gpu_tests.xml'}"]
    grid = [py, "tests/kernels/gpu_peer_grid.py", "--per-source", "1" if quick else "2",
            "--json", str(out / "peer_grid.json")]
    # rows written after every sweep: a step stopped at its limit keeps what it measured
    tune = [py, "-c", "import json, sys; from benchmarks import bench_triton as b; "
            "bw = b.copy_bandwidth_gbs(1024); "
            f"save = lambda rows: open({str(out / 'bench_tune.json')!r}, 'w').write(json.dumps({{'bw': bw, 'rows': rows}}, indent=1)); "
            "rows = b.bench_tune(bw, save); b._print(rows); save(rows)"]
    return {"bench": (bench, out / "bench_triton.log"), "tests": (tests, out / "gpu_tests.log"),
            "peer_grid": (grid, out / "peer_grid.log"), "tune": (tune, out / "bench_tune.log")}


def run(out: Path, budget: float, quick: bool, steps: tuple[str, ...] = STEPS) -> None:
    """The steps in the order given, each under min(its cap, what the budget leaves after 20 s for each
    step still to come); ``steps.json`` records exit code and seconds per step."""
    out.mkdir(parents=True, exist_ok=True)
    t_end = time.perf_counter() + budget
    (out / "env.json").write_text(json.dumps(environment(), indent=1))
    commands = _commands(out, quick)
    done = {}
    for i, name in enumerate(steps):
        left = t_end - time.perf_counter() - 20 * (len(steps) - i - 1)
        if left < 30:
            print(f"# {name}: skipped, {left:.0f} s left", flush=True)
            continue
        cmd, log = commands[name]
        done[name] = _sh(cmd, min(_STEP_CAP[name], left), log)[::2]
        (out / "steps.json").write_text(json.dumps({k: {"exit": c, "seconds": round(s)} for k, (c, s) in done.items()}))


# ------------------------------------------------------------------------------------ the docs section

def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _bench_table(rows: list[dict]) -> list[str]:
    graphs = any("graph_ms" in r or "graph_error" in r for r in rows)
    lines = ["| case | time | vs baseline | KV GB/s (% of copy bw) |" + (" CUDA graph replay (% of bw) |" if graphs else ""),
             "| --- | ---: | ---: | ---: |" + (" ---: |" if graphs else "")]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['name']} | not run: {str(r['skipped'])[:90]} | | |" + (" |" if graphs else ""))
            continue
        base = f"{r['ratio']}x ({r['baseline']} {r['unit']})" if "ratio" in r else ""
        bw = f"{r['kv_gbs']} ({r['pct_of_bw']}%)" if "kv_gbs" in r else (f"{r['tflops']} TFLOP/s" if "tflops" in r else "")
        graph = ""
        if "graph_ms" in r:
            graph = f"{r['graph_ms']} ms" + (f" ({r['graph_pct_of_bw']}%)" if "graph_pct_of_bw" in r else "")
        elif "graph_error" in r:
            graph = f"not captured: {str(r['graph_error'])[:60]}"
        lines.append(f"| {r['name']} | {r['value']} {r['unit']} | {base} | {bw} |" + (f" {graph} |" if graphs else ""))
    return lines


def _tests_summary(log: str) -> str:
    m = re.findall(r"^(?:=+ )?(\d+ (?:passed|failed|errors?|skipped|deselected).*?) in ([\d.]+)s", log, re.M)
    return f"{m[-1][0]} in {m[-1][1]} s" if m else "no summary line (see gpu_tests.log)"


def render(src: Path) -> str:
    env = _load(src / "env.json") or {}
    steps = _load(src / "steps.json") or {}
    lines = [BEGIN, "", "## Figures from a GPU run", "",
             f"Generated by `python -m benchmarks.gpu_check --render DIR` from the run of {env.get('date', '?')} "
             f"(`python -m benchmarks.gpu_check --out DIR`). Machine: **{env.get('gpu', 'no GPU')}** "
             f"(compute capability {env.get('capability', '?')}, {env.get('sms', '?')} SMs, "
             f"{env.get('memory_gib', '?')} GiB; nvidia-smi: {env.get('nvidia_smi', '?')}), torch {env.get('torch', '?')} "
             f"(CUDA {env.get('cuda', '?')}), triton {env.get('triton', '?')}, Python {env.get('python', '?')}. "
             f"GPU libraries: " + ", ".join(f"{k} {v}" for k, v in (env.get("libraries") or {}).items()) + ".",
             ""]
    if steps:
        lines.append("Steps (exit code, seconds): " + ", ".join(f"{k} {v['exit']} ({v['seconds']} s)"
                                                               for k, v in steps.items()) + ".")
        lines.append("")
    log = (src / "gpu_tests.log").read_text() if (src / "gpu_tests.log").exists() else ""
    lines += ["### GPU tests (`pytest -m gpu tests/kernels`)", "", _tests_summary(log) + ".", ""]
    fails = [ln for ln in log.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    skips = [ln for ln in log.splitlines() if ln.startswith("SKIPPED")]
    lines += [f"- {ln[:220]}" for ln in fails + skips[:12]]
    if fails or skips:
        lines.append("")
    grid = _load(src / "peer_grid.json")
    lines += ["### The peers' grids on the GPU (`tests/kernels/gpu_peer_grid.py`)", ""]
    if grid:
        sys.path.insert(0, str(ROOT / "tests" / "kernels"))
        from gpu_peer_grid import summarise

        lines += summarise(grid).splitlines()
    else:
        lines.append("Not run (see peer_grid.log).")
    lines.append("")
    bench = _load(src / "bench_triton.json")
    lines += ["### Benchmarks (`benchmarks/bench_triton.py`)", ""]
    lines += _bench_table(bench["rows"]) if bench and bench.get("rows") else ["Not run (see bench_triton.log)."]
    lines.append("")
    tune = _load(src / "bench_tune.json")
    if tune and tune.get("rows"):
        lines += ["### Launch options around the defaults (`bench_triton.bench_tune`)", ""]
        best: dict[str, dict] = {}
        for r in tune["rows"]:
            if r.get("value") is None:
                continue
            case = r["name"].split(" tile=")[0].split(" block_m=")[0]
            if case not in best or r["value"] < best[case]["value"]:
                best[case] = r
        lines += ["| case | default | best launch | best time | speed-up |", "| --- | ---: | --- | ---: | ---: |"]
        for case, r in best.items():
            cfg = " ".join(f"{k}={v}" for k, v in r["config"].items())
            lines.append(f"| {case.removeprefix('tune ')} | {r['baseline']} ms | {cfg} | {r['value']} ms | {r['ratio']}x |")
        lines.append("")
        lines += knob_ab_table(tune["rows"])
    lines.append(END)
    return "\n".join(lines)


# Knobs whose cost or gain a run should measure side by side: (knob, value under test, what the ratio means)
_AB_KNOBS = (("p_two_terms", False, "TRITON_MLA two-term P: time with it / with one bf16 term"),
             ("mask_every_tile", True, "TRITON_ATTN edge-only masks: time masking every tile / edge tiles only"))


def knob_ab_table(rows: list[dict]) -> list[str]:
    """Pairs of sweep rows that differ in one A/B knob only: the ratio of their times (median over
    the pairs and its range), so the cost of a precision choice or the gain of a kernel change is a
    figure of the run, not a guess."""
    out: list[str] = []
    for knob, probe, meaning in _AB_KNOBS:
        by_cfg = {}
        for r in rows:
            if r.get("value") is None or "config" not in r:
                continue
            case = r["name"].split(" tile=")[0].split(" block_m=")[0]
            rest = tuple(sorted((k, v) for k, v in r["config"].items() if k != knob))
            by_cfg.setdefault((case, rest), {})[r["config"].get(knob, not probe)] = r["value"]
        ratios = {}
        for (case, _), pair in by_cfg.items():
            if probe in pair and (not probe) in pair:
                num, den = (pair[not probe], pair[probe]) if knob == "p_two_terms" else (pair[probe], pair[not probe])
                ratios.setdefault(case, []).append(num / den)
        for case, rs in ratios.items():
            rs.sort()
            if not out:
                out += ["| A/B | case | pairs | median ratio | range |", "| --- | --- | ---: | ---: | --- |"]
            out.append(f"| {meaning} | {case.removeprefix('tune ')} | {len(rs)} | {rs[len(rs) // 2]:.2f} | "
                       f"{rs[0]:.2f}-{rs[-1]:.2f} |")
    return out + [""] if out else []


def write_docs(src: Path) -> None:
    section = render(src)
    text = DOC.read_text()
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)
    (src / "gpu_kernels.md").write_text(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, help="run the steps, results into this folder")
    ap.add_argument("--render", type=Path, help="only rewrite docs/gpu_kernels.md from a saved run's folder")
    ap.add_argument("--write-docs", action="store_true", help="after the run, rewrite docs/gpu_kernels.md")
    ap.add_argument("--budget", type=float, default=540, help="seconds for all steps together")
    ap.add_argument("--steps", default=",".join(STEPS),
                    help=f"comma-separated steps in the order to run them (default: {','.join(STEPS)})")
    ap.add_argument("--quick", action="store_true", help="fewer cases and rounds")
    a = ap.parse_args(argv)
    if a.render:
        write_docs(a.render)
        return 0
    if not a.out:
        ap.error("give --out DIR (run) or --render DIR (docs only)")
    steps = tuple(x.strip() for x in a.steps.split(",") if x.strip())
    unknown = [x for x in steps if x not in STEPS]
    if unknown or not steps:
        ap.error(f"--steps: unknown step(s) {unknown}; the steps are {', '.join(STEPS)}")
    run(a.out, a.budget, a.quick, steps)
    if a.write_docs:
        write_docs(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
