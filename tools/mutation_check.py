"""Mutation check: does the test suite pin vLLM's facts, or only check that the solvers agree with each other?

Copies the packaged rules, flips one capability at a time (drop a dtype, widen or narrow a head-size range,
drop a KV dtype, move a compute-capability bound, swap two priority entries, drop a custom check or a guard,
flip a derived case, ...), points the package at the mutant with ATTNSOLVE_RULES=<dir> and runs the
fact-pinning tests (`pytest -x -q`). The solver, the CSP and the oracle all read the mutant, so only tests
that pin facts (spec facts, seed tables, worked examples, reason texts, the generated docs) can kill it.

For each mutant it also measures, in-process, whether the mutation changes any selection (backend, variant
or reasons) over a fixed sample of configs; a surviving mutant that changes nothing observable is reported
as "equivalent" rather than as a gap.

    python tools/mutation_check.py            # a spread of 60 mutants over all operators (~10 min, 2 cores)
    python tools/mutation_check.py --quick    # 10 mutants
    python tools/mutation_check.py --all      # every mutant the operators generate
    python tools/mutation_check.py --list     # list the mutants, run nothing
    python tools/mutation_check.py --tests 'tests/test_core_*.py tests/test_cli.py'

The last line is always `killed K of N mutants`.
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RULES = ROOT / "attnsolve" / "rules"
DEFAULT_TESTS = "tests/test_core_*.py tests/test_docs*.py"

Docs = dict[str, dict[str, Any]]


# ---------------------------------------------------------------------------------------------------
# TOML writer (tomllib only reads): sections for backends/platforms/derived, values inline
# ---------------------------------------------------------------------------------------------------
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v).__name__)


def dump_toml(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    for top, body in doc.items():
        if top in ("backends", "platforms", "derived", "aliases") and all(isinstance(x, dict) for x in body.values()):
            for name, table in body.items():
                lines.append(f"\n[{_key(top)}.{_key(name)}]")
                lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
        else:
            lines.append(f"\n[{_key(top)}]")
            lines += [f"{_key(k)} = {_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def load_docs() -> Docs:
    return {p.name: tomllib.loads(p.read_text(encoding="utf-8")) for p in sorted(RULES.glob("*.toml"))}


def write_docs(docs: Docs, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.toml"):
        old.unlink()
    for name, doc in docs.items():
        (folder / name).write_text(dump_toml(doc), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------
# mutation operators: each yields (operator, description, function docs -> None)
# ---------------------------------------------------------------------------------------------------
@dataclass
class Mutant:
    operator: str
    description: str
    apply: Callable[[Docs], None]


def _backends(docs: Docs) -> Iterator[tuple[str, str, dict]]:
    for f, d in docs.items():
        for name, b in d.get("backends", {}).items():
            yield f, name, b


def _cap_tables(docs: Docs) -> Iterator[tuple[str, str, str, list]]:
    """(file, label, backend, path) for every backend table and every variant table (capabilities live in both)."""
    for f, name, b in _backends(docs):
        yield f, name, name, ["backends", name]
        for vname in b.get("variants", {}):
            yield f, f"{name}.{vname}", name, ["backends", name, "variants", vname]


def _get(docs: Docs, f: str, path: list) -> Any:
    node: Any = docs[f]
    for k in path:
        node = node[k]
    return node


def _lists(docs: Docs) -> Iterator[tuple[str, str, int, dict]]:
    for f, d in docs.items():
        for plat, p in d.get("platforms", {}).items():
            for i, pl in enumerate(p.get("lists", [])):
                yield f, plat, i, pl


def _entry_name(e: Any) -> str:
    return e if isinstance(e, str) else e["backend"]


def generate(docs: Docs) -> list[Mutant]:
    out: list[Mutant] = []
    domains = docs["domains.toml"]["fields"]

    def at(f: str, path: list) -> Callable[[Docs], dict]:
        return lambda d: _get(d, f, path)

    for f, label, _, path in _cap_tables(docs):
        table = _get(docs, f, path)
        get = at(f, path)
        for key, domain in (("dtypes", domains["dtype"]), ("kv_cache_dtypes", domains["kv_cache_dtype"]),
                            ("attn_types", domains["attn_type"])):
            values = table.get(key)
            if not isinstance(values, list):
                continue
            for v in values:
                if len(values) > 1:
                    out.append(Mutant(f"drop {key}", f"drop {v!r} from {label}.{key}",
                                      lambda d, g=get, k=key, v=v: g(d)[k].remove(v)))
            for v in domain:
                if v not in values:
                    out.append(Mutant(f"add {key}", f"add {v!r} to {label}.{key}",
                                      lambda d, g=get, k=key, v=v: g(d)[k].append(v)))
        kbs = table.get("kernel_block_sizes")
        if isinstance(kbs, list):
            for i, v in enumerate(kbs):
                for new in (v * 2, max(1, v // 2)):
                    if new not in kbs:
                        out.append(Mutant("change kernel_block_sizes", f"{label}.kernel_block_sizes: {v} -> {new}",
                                          lambda d, g=get, i=i, new=new: g(d)["kernel_block_sizes"].__setitem__(i, new)))
        hs = table.get("head_sizes")
        if isinstance(hs, list):
            for v in hs:
                if len(hs) > 1:
                    out.append(Mutant("narrow head_sizes", f"drop head size {v} from {label}",
                                      lambda d, g=get, v=v: g(d)["head_sizes"].remove(v)))
            for new in (80, 512, 192):
                if new not in hs:
                    out.append(Mutant("widen head_sizes", f"add head size {new} to {label}",
                                      lambda d, g=get, new=new: g(d)["head_sizes"].append(new)))
                    break
        elif isinstance(hs, dict):
            for bound, factors in (("max", (2, 0.5)), ("min", (0.5, 2)), ("multiple_of", (2, 0.5))):
                if bound in hs:
                    for fac in factors:
                        new = int(hs[bound] * fac)
                        kind = "widen head_sizes" if (bound == "max") == (fac > 1) and bound != "multiple_of" else "narrow head_sizes"
                        out.append(Mutant(kind, f"{label}.head_sizes.{bound}: {hs[bound]} -> {new}",
                                          lambda d, g=get, b=bound, n=new: g(d)["head_sizes"].__setitem__(b, n)))
        cc = table.get("compute_capability")
        if isinstance(cc, dict):
            for bound in ("min", "max"):
                if bound in cc:
                    major, _, minor = str(cc[bound]).partition(".")
                    for new in (f"{int(major) - 1}.{minor or 0}", f"{int(major) + 1}.{minor or 0}"):
                        out.append(Mutant("change compute_capability", f"{label}.compute_capability.{bound}: {cc[bound]} -> {new}",
                                          lambda d, g=get, b=bound, n=new: g(d)["compute_capability"].__setitem__(b, n)))
            if "major_in" in cc:
                for m in cc["major_in"]:
                    if len(cc["major_in"]) > 1:
                        out.append(Mutant("change compute_capability", f"drop major {m} from {label}.compute_capability",
                                          lambda d, g=get, m=m: g(d)["compute_capability"]["major_in"].remove(m)))
                for m in (8, 9, 10, 12):
                    if m not in cc["major_in"]:
                        out.append(Mutant("change compute_capability", f"add major {m} to {label}.compute_capability",
                                          lambda d, g=get, m=m: g(d)["compute_capability"]["major_in"].append(m)))
                        break
        role = docs[f]["backends"][_].get("role", "decode") if (_ := path[1]) else "decode"
        for flag in ("sink", "mm_prefix", "sparse", "mla"):
            if role != "decode":
                break  # the flags are decode-role checks: flipping them on a prefill backend is equivalent
            if flag in table:
                out.append(Mutant(f"flip {flag}", f"{label}.{flag}: {table[flag]} -> {not table[flag]}",
                                  lambda d, g=get, fl=flag: g(d).__setitem__(fl, not g(d)[fl])))
            elif flag in ("sink", "mm_prefix") and "variants" not in path and not table.get("abstract") \
                    and "parent" not in table:
                out.append(Mutant(f"flip {flag}", f"{label}.{flag}: unset -> true",
                                  lambda d, g=get, fl=flag: g(d).__setitem__(fl, True)))
        for i, c in enumerate(table.get("checks", []) or []):
            out.append(Mutant("drop check", f"drop check {c.get('reason', '?')[:50]!r} of {label}",
                              lambda d, g=get, i=i: g(d)["checks"].pop(i)))
    for f, name, b in _backends(docs):
        if "explicit_only" in b:
            out.append(Mutant("flip explicit_only", f"{name}.explicit_only -> {not b['explicit_only']}",
                              lambda d, f=f, n=name: d[f]["backends"][n].__setitem__("explicit_only", not d[f]["backends"][n]["explicit_only"])))
    for f, plat, i, pl in _lists(docs):
        entries = pl.get("entries", [])
        label = f"{plat} list {pl.get('name', i)!r}"
        get = at(f, ["platforms", plat, "lists", i])
        for j in range(len(entries) - 1):
            a, b = _entry_name(entries[j]), _entry_name(entries[j + 1])
            out.append(Mutant("swap priorities", f"{label}: swap {a} and {b}",
                              lambda d, g=get, j=j: g(d)["entries"].__setitem__(slice(j, j + 2), g(d)["entries"][j:j + 2][::-1])))
        for j, e in enumerate(entries):
            if isinstance(e, dict):
                for k, c in enumerate(e.get("checks", [])):
                    out.append(Mutant("drop guard", f"{label}: drop guard {c.get('reason', '?')[:50]!r} of {e['backend']}",
                                      lambda d, g=get, j=j, k=k: g(d)["entries"][j]["checks"].pop(k)))
        for j, e in enumerate(pl.get("manual_accept", [])):
            out.append(Mutant("drop manual_accept", f"{label}: no longer accept a request for {_entry_name(e)}",
                              lambda d, g=get, j=j: g(d)["manual_accept"].pop(j)))
        when = pl.get("when", {})
        nh = when.get("num_heads")
        if isinstance(nh, dict) and "max" in nh:
            out.append(Mutant("change list condition", f"{label}: num_heads max {nh['max']} -> {nh['max'] * 2}",
                              lambda d, g=get: g(d)["when"]["num_heads"].__setitem__("max", g(d)["when"]["num_heads"]["max"] * 2)))
        ccw = when.get("compute_capability")
        if isinstance(ccw, dict) and "major_in" in ccw:
            out.append(Mutant("change list condition", f"{label}: compute_capability majors {ccw['major_in']} + [12]",
                              lambda d, g=get: g(d)["when"]["compute_capability"]["major_in"].append(12)))
    for f, d in docs.items():
        for name, der in d.get("derived", {}).items():
            values = der.get("values", [])
            for k, case in enumerate(der.get("cases", [])):
                for v in values:
                    if v != case.get("value"):
                        out.append(Mutant("flip derived case", f"derived {name} case #{k + 1}: value {case.get('value')!r} -> {v!r}",
                                          lambda dd, f=f, n=name, k=k, v=v: dd[f]["derived"][n]["cases"][k].__setitem__("value", v)))
                        break
    return out


def spread(mutants: list[Mutant], n: int, seed: int = 0) -> list[Mutant]:
    """n mutants, round-robin over the operators (each operator's list shuffled with a fixed seed)."""
    by_op: dict[str, list[Mutant]] = {}
    for m in mutants:
        by_op.setdefault(m.operator, []).append(m)
    rng = random.Random(seed)
    for ms in by_op.values():
        rng.shuffle(ms)
    out: list[Mutant] = []
    ops = sorted(by_op)
    while len(out) < n and any(by_op.values()):
        for op in ops:
            if by_op[op] and len(out) < n:
                out.append(by_op[op].pop())
    return out


# ---------------------------------------------------------------------------------------------------
# does a mutant change anything observable? (in-process, a fixed sample of configs)
# ---------------------------------------------------------------------------------------------------
def sample_configs(n: int, seed: int = 1) -> list[tuple[Any, str]]:
    from attnsolve import Config, ConfigError
    from attnsolve.rules import default_rules
    rules = default_rules()
    rng = random.Random(seed)
    ccs = [(7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (10, 3), (11, 0), (12, 0), (12, 1)]
    names = sorted(rules.backends)
    out = []
    while len(out) < n:
        plat = rng.choice(["cuda", "cuda", "cuda", "rocm", "cpu"])
        mla = rng.random() < 0.4
        kw: dict[str, Any] = {
            "platform": plat, "dtype": rng.choice(rules.domains["dtype"]), "use_mla": mla,
            "use_sparse": mla and rng.random() < 0.3,
            "head_size": 576 if mla and rng.random() < 0.7 else rng.choice([16, 32, 40, 64, 80, 96, 128, 192, 256, 512]),
            "kv_cache_dtype": rng.choice(rules.domains["kv_cache_dtype"]),
            "block_size": rng.choice([None, None, *rules.domains["block_size"]]),
            "has_sink": rng.random() < 0.2, "use_mm_prefix": rng.random() < 0.15,
            "attn_type": rng.choice(["decoder"] * 4 + list(rules.domains["attn_type"])),
            "num_heads": rng.choice([None, 8, 16, 64]),
            "flash_attn_version": rng.choice([None, None, 2, 3]),
            "use_trtllm_attention": rng.choice([None, None, False]),
            "backend": rng.choice(names) if rng.random() < 0.25 else None,
        }
        if rng.random() < 0.5:
            kw.update(qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
        elif rng.random() < 0.3:
            kw.update(qk_nope_head_dim=rng.choice([64, 192]))
        if kw["use_sparse"] and rng.random() < 0.6:
            kw["index_topk"] = 2048
        if plat == "cuda":
            kw["compute_capability"] = rng.choice(ccs)
        if plat == "rocm":
            kw["rocm_arch"] = rng.choice(rules.domains["rocm_arch"])
            for sw in ("rocm_use_aiter", "rocm_use_aiter_mha", "rocm_use_aiter_mla", "rocm_use_aiter_unified_attention",
                       "use_prefill_decode_attention"):
                kw[sw] = rng.random() < 0.5
        if mla and rng.random() < 0.3:
            for sw in ("use_cudnn_prefill", "disable_flashinfer_prefill", "use_trtllm_ragged_deepseek_prefill",
                       "flashinfer_available", "trtllm_available"):
                kw[sw] = rng.random() < 0.5
        try:
            c = Config(**kw)
        except ConfigError:
            continue
        out.append((c, "mla_prefill" if mla and rng.random() < 0.25 else "decode"))
    return out


def observe(configs: list[tuple[Any, str]]) -> list[Any]:
    from attnsolve.errors import ConfigError, SelectionError
    try:  # solve() without the explanation it computes on failure (much faster; same selection)
        from attnsolve.selection import solve_uncached as solve_fast
    except ImportError:  # pragma: no cover - older layout
        from attnsolve import solve as solve_fast
    seen = []
    for c, role in configs:
        try:
            s = solve_fast(c, role=role)
            seen.append((s.backend, s.variant, tuple((r.backend, r.reasons) for r in s.rejected)))
        except SelectionError as e:
            seen.append(("fail", type(e).__name__, tuple(sorted((k, tuple(v)) for k, v in e.reasons.items()))))
        except ConfigError as e:
            seen.append(("config", e.field))
    return seen


def changes_selection(folder: Path, configs: list[tuple[Any, str]], baseline: list[Any]) -> int:
    """How many sampled configs the mutant answers differently (backend, variant or reasons)."""
    from attnsolve.rules import load_rules, use_rules
    with use_rules(load_rules(folder)):
        got = observe(configs)
    return sum(a != b for a, b in zip(got, baseline))


# ---------------------------------------------------------------------------------------------------
# running the pinning tests against a mutant
# ---------------------------------------------------------------------------------------------------
def run_tests(folder: Path | None, tests: list[str], timeout: int, *, stop_first: bool = True,
              deselect: tuple[str, ...] = ()) -> tuple[bool, str, float, list[str]]:
    env = dict(os.environ)
    env.pop("ATTNSOLVE_RULES", None)
    if folder is not None:
        env["ATTNSOLVE_RULES"] = str(folder)
    env.setdefault("HYPOTHESIS_PROFILE", "dev")
    cmd = [sys.executable, "-m", "pytest", *(["-x"] if stop_first else []), "-q", "-p", "no:cacheprovider",
           "-p", "no:warnings", "--hypothesis-seed=0", *tests]
    for d in deselect:
        cmd += ["--deselect", d]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "timeout", time.monotonic() - t0, []
    took = time.monotonic() - t0
    failed = [ln.split(" ", 1)[1].split(" - ")[0] for ln in p.stdout.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
    if p.returncode == 0:
        return True, "", took, []
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    return False, failed[0] if failed else f"exit {p.returncode}: {last}", took, failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a sample of 10 mutants")
    ap.add_argument("--all", action="store_true", help="every mutant the operators generate")
    ap.add_argument("-n", type=int, default=60, help="number of mutants in a normal run (default 60)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--tests", default=DEFAULT_TESTS, help=f"pinning tests to run (globs; default {DEFAULT_TESTS!r})")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per mutant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=4000, help="configs sampled to decide if a mutant changes anything")
    args = ap.parse_args(argv)

    docs = load_docs()
    every = generate(docs)
    chosen = every if args.all else spread(every, 10 if args.quick else args.n, args.seed)
    if args.list:
        for m in chosen:
            print(f"{m.operator:28} {m.description}")
        print(f"{len(chosen)} of {len(every)} mutants")
        return 0
    tests = sorted({t for pat in args.tests.split() for t in (glob.glob(str(ROOT / pat)) or [pat])})
    tests = [os.path.relpath(t, ROOT) for t in tests]
    print(f"{len(every)} mutants generated; running {len(chosen)} against: {' '.join(tests)}", flush=True)

    t_start = time.monotonic()
    configs = sample_configs(args.samples)
    baseline = observe(configs)
    killed = survived = invalid = 0
    survivors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="attnsolve-mutants-") as tmp:
        # Tests that already fail on the packaged rules cannot tell mutants apart: deselect them (and say so).
        ok, why, took, failing = run_tests(None, tests, args.timeout, stop_first=False)
        deselect = tuple(failing)
        if not ok and not failing:
            print(f"baseline: the pinning tests cannot run on the unmutated rules ({why})")
            print("killed 0 of 0 mutants")
            return 2
        for f in failing:
            print(f"baseline: already failing on the packaged rules, deselected: {f}")
        same = Path(tmp) / "baseline"
        write_docs(docs, same)
        ok, why, took, _ = run_tests(same, tests, args.timeout, deselect=deselect)
        if not ok:
            print(f"baseline: the rewritten (unmutated) rules fail the tests ({why}); the TOML writer is lossy")
            print("killed 0 of 0 mutants")
            return 2
        print(f"baseline passes ({took:.1f}s per run)", flush=True)
        from attnsolve.rules import RulesError, load_rules
        for i, m in enumerate(chosen, 1):
            mdocs = copy.deepcopy(docs)
            folder = Path(tmp) / f"m{i}"
            try:
                m.apply(mdocs)
                write_docs(mdocs, folder)
                load_rules(folder)
            except (RulesError, KeyError, IndexError, ValueError, TypeError) as e:
                invalid += 1
                print(f"[{i:3}/{len(chosen)}] invalid   {m.description}  ({type(e).__name__}: rules refused)", flush=True)
                continue
            diff = changes_selection(folder, configs, baseline)
            passed, by, took, _ = run_tests(folder, tests, args.timeout, deselect=deselect)
            if passed:
                survived += 1
                tag = f"changes {diff} of {len(configs)} sampled answers" if diff else "equivalent on the sample"
                survivors.append(f"{m.operator}: {m.description} ({tag})")
                print(f"[{i:3}/{len(chosen)}] SURVIVED  {m.description}  [{tag}] ({took:.1f}s)", flush=True)
            else:
                killed += 1
                print(f"[{i:3}/{len(chosen)}] killed    {m.description}  by {by} ({took:.1f}s)", flush=True)
    n = killed + survived
    elapsed = time.monotonic() - t_start
    if survivors:
        print("\nsurvivors:")
        for s in survivors:
            print("  " + s)
    real = [s for s in survivors if "equivalent" not in s]
    print(f"\n{invalid} invalid mutants (refused by the loader) not counted; {len(real)} surviving mutants change "
          f"an answer on the sample; {elapsed / 60:.1f} min")
    print(f"killed {killed} of {n} mutants")
    return 0


if __name__ == "__main__":
    sys.exit(main())
