"""How cost grows: solve time vs number of backends, explanation time vs number of config facts,
sweep time vs space size (number of free fields).

Synthetic rule sets: the packaged domains.toml plus one CUDA priority list of N generated backends
(random capabilities from the domains, a catch-all backend last so that the list is always walked),
written as TOML into a temporary folder and loaded with `load_rules(dir)` / `use_rules`.
Rows carry `series`, `x` and `value` so the runner can draw the curves.
Run: python -m benchmarks.bench_scaling [--quick]
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from attnsolve import ANY, Config, ConfigError, use_rules
from attnsolve.config import FIELD_NAMES
from attnsolve.rules import RULES_DIR, load_rules
from attnsolve.selection import clear_cache, compiled_rules, evaluate, solve_csp, solve_uncached
from attnsolve.errors import InvalidBackendError, NoValidBackendError
from attnsolve.sweep import sweep

HEADS = [32, 64, 80, 96, 112, 128, 160, 192, 256]
DTYPES = ["float16", "bfloat16", "float32"]
KV = ["auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2"]
BLOCKS = [16, 32, 64]
CCS = ["7.5", "8.0", "8.6", "8.9", "9.0", "10.0"]


def _toml_list(xs: list[Any]) -> str:
    return "[" + ", ".join(f'"{x}"' if isinstance(x, str) else str(x) for x in xs) + "]"


def packaged_domains_text() -> str:
    """The packaged domains.toml as the base of a rule set that declares no fields: the generic checks of fields only
    a fields.toml declares (0.17's use_per_head_quant_scales) are left out, since such a set cannot read them."""
    import re
    from attnsolve.rules._fields import CONFIG_FIELDS
    text = (RULES_DIR / "domains.toml").read_text(encoding="utf-8")
    parts = re.split(r"(?m)^(?=\[\[generic_checks\]\]\n)", text)
    kept = [parts[0]]
    for part in parts[1:]:
        m = re.search(r'(?m)^field = "([a-z_0-9]+)"', part)
        if m is None or m.group(1) in CONFIG_FIELDS:
            kept.append(part)
    return "".join(kept)


def synthetic_rules(n: int, directory: Path, seed: int = 0) -> Path:
    """A rules folder with N CUDA backends in one priority list (the last one accepts everything)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "domains.toml").write_text(packaged_domains_text(), encoding="utf-8")
    out = []
    names = [f"B{i:04d}" for i in range(n)]
    for i, name in enumerate(names):
        out.append(f"[backends.{name}]")
        out.append('platforms = ["cuda"]')
        out.append('role = "decode"')
        if i < n - 1:
            out.append("dtypes = " + _toml_list(rng.sample(DTYPES, rng.randint(1, 2))))
            out.append("kv_cache_dtypes = " + _toml_list(rng.sample(KV, rng.randint(1, 4))))
            out.append("kernel_block_sizes = " + _toml_list(sorted(rng.sample(BLOCKS, rng.randint(1, 2)))))
            out.append("head_sizes = " + _toml_list(sorted(rng.sample(HEADS, rng.randint(1, 5)))))
            out.append(f'compute_capability = {{ min = "{rng.choice(CCS)}" }}')
            out.append("sink = " + rng.choice(["true", "false"]))
            if rng.random() < 0.5:
                out.append('checks = [ { reason = "fp8 KV needs block size 16", when = { kv_cache_dtype = "fp8*" }, '
                           'require = { block_size = { in = [16] } } } ]')
        out.append("")
    out.append("[platforms.cuda]\nvalidate = true\nmanual = \"validate\"")
    out.append("[[platforms.cuda.lists]]\nname = \"synthetic\"\nwhen = { role = \"decode\" }")
    out.append("entries = " + _toml_list(names))
    (directory / "synthetic.toml").write_text("\n".join(out) + "\n", encoding="utf-8")
    return directory


def _queries(k: int, seed: int = 1) -> list[Config]:
    rng = random.Random(seed)
    return [Config(platform="cuda", compute_capability=rng.choice(CCS), dtype=rng.choice(DTYPES),
                   head_size=rng.choice(HEADS), kv_cache_dtype=rng.choice(KV), block_size=rng.choice([16, 32, 64, None]),
                   has_sink=rng.random() < 0.2) for _ in range(k)]


def _per_call_us(fn: Any, configs: list[Config], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for c in configs:
            fn(c)
        best = min(best, (time.perf_counter() - t) / len(configs) * 1e6)
    return best


def _solve_fast(c: Config) -> None:
    try:
        solve_uncached(c)
    except (NoValidBackendError, InvalidBackendError):
        pass


def solve_vs_backends(quick: bool) -> list[dict[str, Any]]:
    rows = []
    sizes = (10, 100, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = synthetic_rules(n, Path(tmp) / f"r{n}")
            t = time.perf_counter()
            rules = load_rules(folder)
            t_load = time.perf_counter() - t
            with use_rules(rules):
                t = time.perf_counter()
                comp = compiled_rules()
                t_compile = time.perf_counter() - t
                qs = _queries(50 if quick else 200)
                us = _per_call_us(_solve_fast, qs, 2 if quick else 3)
                decision = _per_call_us(lambda c: evaluate(comp, c, "decode", None), qs, 2 if quick else 3)
                rows.append({"name": f"solve uncached vs backends: {n} backends", "value": round(us, 2), "unit": "µs",
                             "series": "solve vs backends", "x": n, "load_s": round(t_load, 3),
                             "decision_us": round(decision, 2),
                             "compile_s": round(t_compile, 3), "clauses": comp.clause_count})
                if n <= 100:
                    k = 5 if quick else 10
                    csp = _per_call_us(lambda c: solve_csp(c), qs[:k], 1)
                    rows.append({"name": f"CSP solve vs backends: {n} backends", "value": round(csp, 1), "unit": "µs",
                                 "series": "CSP vs backends", "x": n, "baseline": round(us, 2),
                                 "baseline_name": "compiled solve, µs", "ratio": round(csp / us, 1)})
                clear_cache()
    return rows


EXPLAIN_ORDER = ("platform", "compute_capability", "dtype", "kv_cache_dtype", "block_size", "head_size", "use_mla",
                 "use_sparse", "has_sink", "use_mm_prefix", "attn_type", "num_heads", "flash_attn_version",
                 "use_trtllm_attention", "trtllm_available")
FAILING = dict(platform="cuda", compute_capability="9.0", dtype="bfloat16", kv_cache_dtype="fp8", block_size=8,
               head_size=128, use_mla=False, use_sparse=False, has_sink=False, use_mm_prefix=False,
               attn_type="decoder", num_heads=32, flash_attn_version=None, use_trtllm_attention=None,
               trtllm_available=True)


def explain_vs_facts(quick: bool) -> list[dict[str, Any]]:
    """explain() on the H100 fp8/block-8 failure with the first k facts given, the rest ANY.

    Series 'explain vs facts': automatic selection (backend=None, the usual question); series
    'explain vs facts, backend free': the requested backend free too (every request is a case)."""
    try:
        from attnsolve import explain
    except ImportError:
        return [{"name": "explanation vs number of facts", "skipped": "attnsolve.explain not available"}]
    rows = []

    def best_ms(cfg: Config, reps: int) -> float:
        explain(cfg)  # warm: compiled rules, CSP
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            explain(cfg)
            best = min(best, time.perf_counter() - t)
        return best * 1e3

    ks = (2, 4, 6, 9, 12, 15) if quick else tuple(range(1, len(EXPLAIN_ORDER) + 1))
    for k in ks:
        kw: dict[str, Any] = {f: ANY for f in FIELD_NAMES}
        kw.update({f: FAILING[f] for f in EXPLAIN_ORDER[:k]})
        kw["backend"] = None
        rows.append(_point(lambda: best_ms(Config(**kw), 2 if quick else 3),
                           f"explain vs facts: {k} facts given, backend automatic", "explain vs facts", k))
    for k in ((3, 9) if quick else (1, 3, 5, 9, 15)):
        kw = {f: ANY for f in FIELD_NAMES}
        kw.update({f: FAILING[f] for f in EXPLAIN_ORDER[:k]})
        rows.append(_point(lambda: best_ms(Config(**kw), 1),
                           f"explain vs facts: {k} facts given, requested backend free too",
                           "explain vs facts, backend free", k))
    return rows


def _point(measure: Any, name: str, series: str, k: int) -> dict[str, Any]:
    """One point of a series, or a row saying why there is none: with few facts given, a release whose
    steps read many fields together (vLLM 0.33) refuses the partial question ("sweep too large")."""
    try:
        return {"name": name, "value": round(measure(), 2), "unit": "ms", "series": series, "x": k}
    except ConfigError as e:
        return {"name": name, "skipped": f"refused by this release: {str(e).split(';')[0][:160]}"}


SWEEP_ORDER = ("dtype", "head_size", "kv_cache_dtype", "block_size", "use_mla", "use_sparse", "has_sink",
               "use_mm_prefix", "attn_type", "num_heads", "backend", "qk_nope_head_dim", "qk_rope_head_dim",
               "v_head_dim", "index_topk", "flash_attn_version", "use_trtllm_attention", "trtllm_available",
               "flashinfer_available", "use_cudnn_prefill", "disable_flashinfer_prefill",
               "use_trtllm_ragged_deepseek_prefill", "rocm_use_aiter", "rocm_use_aiter_mha", "rocm_use_aiter_mla",
               "rocm_use_aiter_unified_attention", "use_prefill_decode_attention")


def sweep_vs_space(quick: bool) -> list[dict[str, Any]]:
    """Every platform and GPU free, then one more field free at a time."""
    rows = []
    base = {"platform": ANY, "compute_capability": ANY, "rocm_arch": ANY, "dtype": "bfloat16"}
    step = 2 if quick else 1
    for k in range(0, len(SWEEP_ORDER) + 1, step):
        kw = dict(base)
        kw.update({f: ANY for f in SWEEP_ORDER[:k]})
        cfg = Config(**kw)
        s = sweep(cfg, role=ANY)
        n = len(s)
        best = float("inf")
        for _ in range(2 if quick else 3):
            t = time.perf_counter()
            sweep(cfg, role=ANY).by_backend()
            best = min(best, time.perf_counter() - t)
        row = {"name": f"sweep vs space: {k + 3} free fields, {n:,} configs", "value": round(best * 1e3, 2), "unit": "ms",
               "series": "sweep vs space", "x": n, "free_fields": k + 3, "configs_per_s": round(n / best)}
        if n <= (5_000_000 if quick else 20_000_000):
            t = time.perf_counter()
            s.codes()
            row["rows_ms"] = round((time.perf_counter() - t) * 1e3, 3)
        rows.append(row)
    return rows


# How costs grow, on the vLLM 0.17 rule set: 0.33's steps before the lists read many fields together, so
# it refuses the larger partial questions and spaces these series walk ("sweep too large"), and its
# explanations of nearly free configurations take seconds each (docs/performance.md).
SCALING_RELEASE = "0.17"


def run(quick: bool = False) -> list[dict[str, Any]]:
    saved = os.environ.get("ATTNSOLVE_VLLM")
    os.environ["ATTNSOLVE_VLLM"] = SCALING_RELEASE
    try:
        rows = solve_vs_backends(quick)
        rows += explain_vs_facts(quick)
        rows += sweep_vs_space(quick)
    finally:
        if saved is None:
            os.environ.pop("ATTNSOLVE_VLLM", None)
        else:
            os.environ["ATTNSOLVE_VLLM"] = saved
    for r in rows:
        r["name"] += f" (vLLM {SCALING_RELEASE})"
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r.get("skipped"):
            print(f"{r['name']:60} skipped: {r['skipped']}")
            continue
        extra = "".join(f"  {k}={r[k]}" for k in ("decision_us", "clauses", "load_s", "compile_s", "ratio", "configs_per_s", "rows_ms")
                        if k in r)
        print(f"{r['name']:60} {r['value']:>10} {r['unit']}{extra}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    _print(run(quick="--quick" in sys.argv))
    print(f"# total {time.perf_counter() - t0:.1f} s")
