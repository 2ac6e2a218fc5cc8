"""Run vLLM's selector (worker subprocesses, many configs each) and attnsolve on the same items."""

from __future__ import annotations

import hashlib
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
from .versions import load_version

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
        # the whole process failed (usually vLLM's import on this platform): every config in it is
        # a crash of the vLLM side, reported as such rather than dropped
        last = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        print(f"vLLM worker ({platform} {arch}) failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}",
              file=sys.stderr, flush=True)
        os.unlink(src)
        return {it.id: {"id": it.id, "ok": False, "kind": "worker_failed", "error": last[0]} for it in chunk}
    with open(dst) as f:
        res = {r["id"]: r for r in map(json.loads, f)}
    os.unlink(src)
    os.unlink(dst)
    return res


def _question(it: Item) -> str:
    return json.dumps({"mode": it.mode, "platform": it.platform, "cfg": dict(it.cfg)}, sort_keys=True)


def answer_cache(root: Path, version: str) -> Path:
    """Where vLLM's answers are memoised: per version and per version of the vLLM-side code
    (a change to vllm_side/ or to this version's entry in versions.toml starts a new file)."""
    here = Path(__file__).parent
    digest = hashlib.sha256(repr(load_version(version)).encode())
    for p in sorted(here.joinpath("vllm_side").glob("*.py")):
        digest.update(p.read_bytes())
    return root / "answers" / f"{version}-{digest.hexdigest()[:12]}.jsonl"


def environment_failure(answer: dict[str, Any]) -> bool:
    """A crash that says the harness venv lacks a module (its borrowed torch gone, a dependency missing): the machine's
    state, not vLLM's answer to the question, so it is never memoised (a cached one outlived the fix, session 35)."""
    return answer.get("kind") == "crash" and str(answer.get("error", "")).startswith(("ModuleNotFoundError", "ImportError"))


def run_vllm(python: Path, version: str, items: Sequence[Item], *, jobs: int = 2, workdir: Path,
             nice: bool = True, log: bool = True, cache: Path | None = None) -> dict[str, dict[str, Any]]:
    """vLLM's answers by item id; chunks run `jobs` at a time, one booted process each.  With
    `cache`, answers already there are reused (vLLM's answer is a function of the question) and
    new ones appended."""
    known: dict[str, dict[str, Any]] = {}
    if cache is not None and cache.exists():
        with cache.open() as f:
            for line in f:
                q, a = json.loads(line)
                known[q] = a
    out: dict[str, dict[str, Any]] = {}
    todo = []
    for it in items:
        hit = known.get(_question(it))
        if hit is not None:
            out[it.id] = dict(hit, id=it.id)
        else:
            todo.append(it)
    chunks = _chunks(todo, jobs) if todo else []
    t = time.time()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        for res in ex.map(lambda c: _run_chunk(python, version, c, workdir, nice), chunks):
            out.update(res)
    if cache is not None and todo:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("a") as f:
            for it in todo:
                if not environment_failure(out[it.id]):
                    f.write(json.dumps([_question(it), out[it.id]]) + "\n")
    if log:
        print(f"vLLM {version}: {len(items)} configs ({len(items) - len(todo)} cached) in {len(chunks)} processes, "
              f"{time.time() - t:.0f}s", file=sys.stderr, flush=True)
    return out


def run_attnsolve(items: Sequence[Item], version: str | None = None) -> dict[str, dict[str, Any]]:
    """attnsolve's answers by item id, for vLLM `version` (see attnsolve_side.PASS_VLLM_VERSION)."""
    return {it.id: answer(it.cfg, it.mode, version) for it in items}
