"""python -m tools.vllm_oracle: vLLM's own selector vs attnsolve on generated configurations.

Exit status: 0 when every disagreement is in known_differences.toml, 1 when some are
unexplained, 2 for bad arguments or a failed set-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .compare import compare
from .configs import MODES, PLATFORMS, Domains, Item, generate
from .known import explain, load_known
from .provision import cache_dir, ensure_venv
from .report import Tally, render, write
from .runner import REPO, answer_cache, run_attnsolve, run_vllm
from .shrink import candidates, distance, group
from .attnsolve_side import PASS_VLLM_VERSION, rule_set_label
from .versions import load_version

PROFILES = {"ci": {"n": 150, "sample": 300, "shrink_rounds": 0}, "nightly": {"n": 20000, "sample": None, "shrink_rounds": 2}}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tools.vllm_oracle", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vllm", required=True, help="vLLM release to compare with, e.g. 0.17.0")
    ap.add_argument("--attnsolve-vllm", metavar="VERSION",
                    help="the attnsolve rule set to compare with (default: the one for --vllm), e.g. 0.17 "
                         "for a new release's starting line")
    ap.add_argument("--n", type=int, default=None, help="random configurations in all (default 20000)")
    ap.add_argument("--sample", type=int, default=None,
                    help="about this many grid configurations, spread over the grids (default: every grid config)")
    ap.add_argument("--profile", choices=sorted(PROFILES),
                    help="ci: --n 150 --sample 300, no shrinking; nightly: every grid config + 20000 random")
    ap.add_argument("--platform", choices=PLATFORMS + ("all",), default="all")
    ap.add_argument("--mode", choices=MODES + ("all",), default="all")
    ap.add_argument("--patches", action="store_true", help="print every stub and patch with why, then exit")
    ap.add_argument("--out", type=Path, help="report folder (default <cache>/runs/<version>)")
    ap.add_argument("--python", type=Path, help="use this vLLM venv python instead of provisioning one")
    ap.add_argument("--jobs", type=int, default=2, help="vLLM worker processes at a time (default 2)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--no-cache", action="store_true",
                    help="ask vLLM again even where <cache>/answers/ holds its answer to the same question")
    ap.add_argument("--shrink-rounds", type=int, default=None,
                    help="rounds of minimal-example shrinking, each one more vLLM run (default 2; ci profile 0: the "
                         "smallest member of each class is its example)")
    a = ap.parse_args(argv)
    prof = PROFILES.get(a.profile or "", {})
    if a.n is None:
        a.n = prof.get("n", 20000)
    if a.sample is None:
        a.sample = prof.get("sample")
    if a.shrink_rounds is None:
        a.shrink_rounds = prof.get("shrink_rounds", 2)
    if a.n < 0 or (a.sample is not None and a.sample < 1) or a.jobs < 1:
        ap.error("--n must be >= 0, --sample >= 1, --jobs >= 1")
    return a


def print_patches(version: str, python: Path) -> None:
    data = load_version(version)
    print(f"vLLM {version}: stubs and patches (versions.toml [{data.key}]); selection logic is never patched")
    for line in data.patch_lines():
        print(" -", line)
    for platform in PLATFORMS:
        if platform == "xpu" and "xpu.current_platform" not in data.patches:
            continue  # booted from the release that adds it to versions.toml
        proc = subprocess.run([str(python), "-m", "tools.vllm_oracle.vllm_side.worker", "--vllm", version,
                               "--platform", platform, "--patches"], cwd=REPO, capture_output=True, text=True,
                              env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "VLLM_LOGGING_LEVEL": "ERROR"})
        if proc.returncode != 0:
            print(f"{platform}: boot failed:\n{proc.stderr[-2000:]}")
            continue
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{platform}: applied {', '.join(info['applied'])}")
        print(f"{platform}: stub modules imported: {', '.join(info['stub_hits']) or '-'}")
        if info["import_failures"]:
            print(f"{platform}: backend modules that fail to import: {info['import_failures']}")


def _evaluate(version: str, items: Sequence[Item], V: dict[str, Any], A: dict[str, Any], known: Any
              ) -> tuple[Tally, list[dict[str, Any]]]:
    tally = Tally()
    records: list[dict[str, Any]] = []
    for it in items:
        checks = compare(it.mode, it.platform, V[it.id], A[it.id])
        known_ok: set[str] = set()
        for c in checks:
            if c.agree:
                continue
            k = explain(known, c.category, c.signature, version, it.platform, it.mode, A[it.id].get("backend"),
                        A[it.id].get("error"))
            if k:
                known_ok.add(c.category)
            records.append({"category": c.category, "signature": c.signature, "item": it.to_json(),
                            "vllm": V[it.id], "attnsolve": A[it.id], "known": k.id if k else None})
        tally.add(it, checks, known_ok)
    return tally, records


def _shrink(version: str, python: Path, classes: dict[Any, Any], rounds: int, jobs: int, workdir: Path,
            ours: str) -> None:
    """Greedy: try each class example with one field reset; keep a candidate with the same class."""
    for r in range(rounds):
        trial: list[Item] = []
        owner: dict[str, Any] = {}
        for n, k in enumerate(classes.values()):
            ex = k.example["item"]
            for m, cfg in enumerate(candidates(ex["cfg"])):
                it = Item(f"shrink{r}-{n}-{m}", ex["category"], ex["mode"], ex["platform"], cfg)
                trial.append(it)
                owner[it.id] = k
        if not trial:
            return
        V = run_vllm(python, version, trial, jobs=jobs, workdir=workdir, log=False)
        A = run_attnsolve(trial, ours)
        improved = False
        for it in trial:
            k = owner[it.id]
            for c in compare(it.mode, it.platform, V[it.id], A[it.id]):
                if (c.category, c.signature) == k.key and not c.agree and \
                        distance(it.cfg) < distance(k.example["item"]["cfg"]):
                    k.example = {"category": c.category, "signature": c.signature, "item": it.to_json(),
                                 "vllm": V[it.id], "attnsolve": A[it.id]}
                    improved = True
        if not improved:
            return


def main(argv: Sequence[str] | None = None) -> int:
    a = parse(argv)
    try:
        data = load_version(a.vllm)
        known = load_known()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ours = a.attnsolve_vllm or a.vllm  # the attnsolve rule set asked
    if not a.patches:  # attnsolve's side first: a bad rule set fails before any provisioning
        try:
            D = dataclasses.replace(Domains.from_rules(ours), rocm_fa_from_aiter=data.rocm_fa_from_aiter)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if a.platform != "all" and a.platform not in D.platforms:
            print(f"error: attnsolve's rule set for vLLM {ours} has no {a.platform} platform "
                  f"(it has {', '.join(D.platforms)})", file=sys.stderr)
            return 2
    try:
        python = a.python or ensure_venv(data)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"error: could not provision vLLM {a.vllm}: {e}", file=sys.stderr)
        return 2
    if a.patches:
        print_patches(a.vllm, python)
        return 0
    platforms = D.platforms if a.platform == "all" else (a.platform,)
    modes = MODES if a.mode == "all" else (a.mode,)
    items = generate(D, n_random=a.n, platforms=platforms, modes=modes, sample=a.sample, seed=a.seed)
    out = a.out or cache_dir() / "runs" / a.vllm
    out.mkdir(parents=True, exist_ok=True)
    t = time.time()
    V = run_vllm(python, a.vllm, items, jobs=a.jobs, workdir=out,
                 cache=None if a.no_cache else answer_cache(cache_dir(), a.vllm))
    A = run_attnsolve(items, ours)
    tally, records = _evaluate(a.vllm, items, V, A, known)
    classes = group(records)
    for k in classes.values():
        ex = k.example
        hit = explain(known, k.category, k.signature, a.vllm, ex["item"]["platform"], ex["item"]["mode"],
                      ex["attnsolve"].get("backend"), ex["attnsolve"].get("error"))
        k.known, k.cause = (hit.id, hit.cause) if hit else (None, None)
    if a.shrink_rounds:
        _shrink(a.vllm, python, classes, a.shrink_rounds, a.jobs, out, ours)
    asked = ("attnsolve answered with its rule set for vLLM " + rule_set_label(ours) if PASS_VLLM_VERSION
             else "attnsolve answered with its active rule set")
    head, _, rest = render(a.vllm, tally, classes).partition("\n")
    text = f"{head}\n{asked}\n{rest}"
    text += f"\n\n{len(items)} configurations (random {a.n}, grid sample {a.sample or 'all'}), {time.time() - t:.0f}s"
    write(out, a.vllm, text, tally, records, classes)
    print(text)
    print(f"\nreport: {out}/report.txt, every disagreement: {out}/disagreements.jsonl, figures: {out}/summary.json")
    return 1 if any(not k.known for k in classes.values()) else 0
