"""Run vLLM's selector (worker subprocesses, many configs each) and attnsolve on the same items."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from .attnsolve_side import answer
from .configs import Item

REPO = Path(__file__).resolve().parents[2]


def _chunks(items: Sequence[Item], jobs: int) -> list[list[Item]]:
    """Items grouped by worker process (platform, ROCm arch); big groups split across jobs."""
    groups: dict[tuple[str, str], list[Item]] = {}
    for it in items:
        groups.setdefault(it.process, []).append(it)
    total = len(items)
    out = []
    for g in groups.values():
        parts = max(1, min(jobs, round(jobs * len(g) / max(total, 1))))
        size = -(-len(g) // parts)
        out += [g[i:i + size] for i in range(0, len(g), size)]
    return out


def _run_chunk(python: Path, version: str, chunk: list[Item], workdir: Path, nice: bool) -> dict[str, dict[str, Any]]:
    platform, arch = chunk[0].process
    fd, src = tempfile.mkstemp(suffix=".jsonl", dir=workdir)
    dst = src.replace(".jsonl", ".out.jsonl")
    with os.fdopen(fd, "w") as f:
        for it in chunk:
            f.write(json.dumps({"id": it.id, "mode": it.mode, "cfg": dict(it.cfg)}) + "\n")
    cmd = [str(python), "-m", "tools.vllm_oracle.vllm_side.worker", "--vllm", version, "--platform", platform]
    if arch:
        cmd += ["--rocm-arch", arch]
    cmd += [src, dst]
    if nice:
        cmd = ["nice", "-n", "10"] + cmd
    env = dict(os.environ, PYTHONPATH=str(REPO), VLLM_LOGGING_LEVEL="WARNING", PYTHONWARNINGS="ignore")
    env.pop("ATTNSOLVE_RULES", None)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not Path(dst).exists():
        raise RuntimeError(f"vLLM worker ({platform} {arch}) failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    with open(dst) as f:
        res = {r["id"]: r for r in map(json.loads, f)}
    os.unlink(src)
    os.unlink(dst)
    return res


def run_vllm(python: Path, version: str, items: Sequence[Item], *, jobs: int = 2, workdir: Path,
             nice: bool = True, log: bool = True) -> dict[str, dict[str, Any]]:
    """vLLM's answers by item id; chunks run `jobs` at a time, one booted process each."""
    chunks = _chunks(items, jobs)
    t = time.time()
    out: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        for res in ex.map(lambda c: _run_chunk(python, version, c, workdir, nice), chunks):
            out.update(res)
    if log:
        print(f"vLLM {version}: {len(items)} configs in {len(chunks)} processes, {time.time() - t:.0f}s",
              file=sys.stderr, flush=True)
    return out


def run_attnsolve(items: Sequence[Item]) -> dict[str, dict[str, Any]]:
    return {it.id: answer(it.cfg, it.mode) for it in items}
