"""The verbs: each a function from parsed flags to a frozen `Result` (JSON-ready data, the text
and the exit code), dispatched from the `VERBS` table. cli.py only parses and prints.

`explain`'s text is advice_text's rendering of the same `Advice` the API's `str(explain(...))`
prints, so API, JSON and text users get one answer. Nothing here imports torch (only
`backends` asks the kernel registry, when torch is installed).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import IO, Any, Callable, Mapping, Sequence

from .advice_text import describe_query, env_lines, reason_rows
from .exitcodes import ExitCode
from .query import Query, UsageError, build_query
from .render import WIDTH, Style, fit, show, table, wrap

__all__ = ["Result", "SCHEMA", "VERBS", "parse_over"]

SCHEMA = "attnsolve/1"
EXIT_OK = ExitCode.OK
EXIT_NO_BACKEND = ExitCode.NO_BACKEND


@dataclass(frozen=True)
class Result:
    """What a verb answers: JSON-ready data, the text form and the exit code."""

    command: str
    data: Mapping[str, Any]
    text: str
    exit_code: int = EXIT_OK

    def envelope(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "command": self.command, "exit_code": self.exit_code, "result": dict(self.data)}


def select(ns: argparse.Namespace, style: Style) -> Result:
    """`attnsolve select`: the backend vLLM selects (and the MLA prefill backend for MLA models)."""
    from .advice import prefill_dict, prefill_for, prefill_text
    from .errors import InvalidBackendError, SelectionError
    from .selection import solve
    q = build_query(ns)
    prefill = prefill_for(q)
    base: dict[str, Any] = {"requested": q.config.backend, "prefill": prefill_dict(prefill),
                            "query": q.to_dict()}
    notes = env_lines(q)
    try:
        sel = solve(q.config, role=q.role)
    except SelectionError as e:
        head = (f"{e.backend} (requested) does not fit {describe_query(q)}" if isinstance(e, InvalidBackendError)
                else f"No valid attention backend for {describe_query(q)}")
        message = e.args[0].splitlines()[0] if e.args else ""
        # A request vLLM refuses before validating (an unregistered name) has no per-backend
        # reasons: vLLM's own message is the reason.
        rows = [(b, "; ".join(r) or message or "-") for b, r in e.reasons.items()]
        lines = wrap(head + ":") + reason_rows(rows)
        for n in notes:
            lines += wrap(n, indent="    ", first="note: ")
        lines += wrap("hint: 'attnsolve explain' with the same flags gives the conflict and the fix",
                      indent="      ", first="")
        from .solver.facts import parse_role
        data = {"selected": None, "variant": None, "role": parse_role(q.role), "manual": q.config.backend is not None,
                "priority_list": None, "preferred_block_size": None,
                "rejected": [{"backend": b, "reasons": list(r)} for b, r in e.reasons.items()],
                "warnings": [], "config": q.config.to_dict(), "error": e.args[0],  # not str(e): that explains it
                "startup_error": getattr(e, "startup_error", None), **base}
        return Result("select", data, "\n".join(lines), EXIT_NO_BACKEND)
    startup = getattr(sel, "startup_error", None)
    lines = [style.bold(str(sel)) + ("  (requested)" if sel.manual and q.config.backend else "")
             + f"  [vLLM {q.config.vllm}]"]
    if sel.rejected:
        groups: dict[tuple[str, ...], list[str]] = {}  # backends that lost for the same reasons: one line
        for r in sel.rejected:
            groups.setdefault(r.reasons, []).append(r.backend)
        for reasons, names in groups.items():
            lines += wrap(f"{', '.join(names)}: {'; '.join(reasons)}", indent="      ", first="  not ")
    data = {**sel.to_dict(), "error": startup, "startup_error": startup, **base}
    if prefill is not None:
        lines += wrap(f"{prefill_text(prefill)} (MLA prefill backend)", indent="    ", first="  prefill: ")
    if startup:  # vLLM's selector answers, but vLLM refuses to start: a failing answer
        lines += wrap(f"vLLM selects {sel} but refuses to start: {startup}", indent="    ", first="  error: ")
    for w in sel.warnings:
        lines += wrap(w, indent="    ", first="  warning: ")
    for n in notes:
        lines += wrap(n, indent="    ", first="  note: ")
    if startup:
        lines += wrap("hint: 'attnsolve explain' with the same flags gives a fix that starts", indent="      ",
                      first="")
    return Result("select", data, "\n".join(lines), EXIT_NO_BACKEND if startup else EXIT_OK)


def explain(ns: argparse.Namespace, style: Style) -> Result:
    """`attnsolve explain`: the advice (advice.py) rendered as `str(explain(config))` renders it."""
    from .advice import advise
    q = build_query(ns)
    a = advise(q)
    e = a.explanation
    failed = not e.possible if e.config.is_partial else (e.selected is None or a.startup_error is not None)
    return Result("explain", a.to_dict(), "\n".join(a.lines(style)), EXIT_NO_BACKEND if failed else EXIT_OK)


def _over_values(rules: Any, name: str, values: list[str] | None) -> list[Any]:
    if values is not None:
        return values
    if name == "compute_capability":
        return list(rules.generations)
    if name in rules.domains:
        vals = list(rules.domains[name])
        return [None, *vals] if name in ("block_size", "flash_attn_version") else vals
    from .solver.domains import BOOLS, representatives
    if name in BOOLS:
        return [False, True]
    if name == "backend":
        return [None, *sorted(rules.backends)]
    reps = list(representatives(rules, name))
    return sorted(reps, key=lambda v: (v is not None, v if isinstance(v, (int, float)) else str(v)))


def parse_over(items: Sequence[str] | None) -> list[tuple[str, list[str] | None]]:
    from .config import FIELD_NAMES
    from .errors import ConfigError, closest
    items = list(items or ["compute_capability,kv_cache_dtype"])
    out: list[tuple[str, list[str] | None]] = []
    names = list(FIELD_NAMES)
    for item in items:
        parts = [item] if "=" in item else [p for p in item.split(",") if p.strip()]
        for part in parts:
            name, _, vals = part.partition("=")
            key = name.strip().lstrip("-").replace("-", "_")
            if key == "gpu" and vals:  # GPU names: each brings its platform and compute capability
                from .gpus import resolve
                out.append(("gpu", [resolve(v.strip()) for v in vals.split(",") if v.strip()]))
                continue
            key = {"gpu": "compute_capability", "cc": "compute_capability", "attention_backend": "backend"}.get(key, key)
            if key not in names:
                raise ConfigError("over", name, names, suggestion=closest(key, names))
            values = [v.strip() for v in vals.split(",") if v.strip()] if vals else None
            out.append((key, values))
    if len({k for k, _ in out}) != len(out):
        raise UsageError("a field appears twice in --over", hint="name each field once")
    return out


def _coverage(version: str | None = None) -> Result:
    """`matrix --all`: the whole-space sweep's coverage report (holes and dead rules) of the release asked."""
    from .coverage import coverage_report
    report = coverage_report(all_fields=True, vllm=version)
    return Result("matrix", report.to_dict(), fit(str(report).rstrip("\n")) + "\n", EXIT_OK)


def _with_hardware(q: Query, base: Any, changes: Mapping[str, Any]) -> Any:
    """`base` with `changes`; a GPU name replaces the hardware, and a --model's dtype is resolved
    again for the new hardware (vLLM's --dtype auto depends on the GPU)."""
    from .config import Config
    changes = dict(changes)
    data = base.to_dict()
    if "gpu" in changes:
        data.update(platform=None, compute_capability=None, rocm_arch=None)
    data.update(changes)
    cfg = Config(**data)
    if q.model is not None and "dtype" not in q.user_fields and "dtype" not in changes and \
            {"gpu", "compute_capability", "platform", "rocm_arch"} & set(changes):
        from .modelconfig import resolve_dtype
        dtype, _ = resolve_dtype(q.model, str(cfg.platform), cfg.compute_capability)
        if dtype != cfg.dtype:
            cfg = Config(**{**cfg.to_dict(), "dtype": dtype, **({"gpu": changes["gpu"]} if "gpu" in changes else {})})
    return cfg


def _matrix(q: Query, over: list[tuple[str, list[str] | None]], long: bool, style: Style,
               max_cells: int | None = None, progress: IO[str] | None = None) -> Result:
    import itertools
    from .errors import ConfigError, SelectionError
    from .selection import compiled_rules, solve
    rules = compiled_rules(q.config).rules  # the release asked (--vllm), not the default one
    names = [n for n, _ in over]
    value_lists = [_over_values(rules, n, v) for n, v in over]
    base = q.config
    rows: list[dict[str, Any]] = []
    rewritten: set[str] = set()
    from .cli_guards import DEFAULT_MAX_CELLS, check_cells, progress as _progress
    total = check_cells(names, value_lists, DEFAULT_MAX_CELLS if max_cells is None else max_cells)
    for combo in _progress(itertools.product(*value_lists), total, progress):
        changes = dict(zip(names, combo))
        cell: dict[str, Any] = {"values": {n: show(v) for n, v in changes.items()}}
        try:
            if q.model is not None and "kv_cache_dtype" in changes:
                from .modelconfig import apply_model_rewrites
                fixed, notes = apply_model_rewrites(q.model, {"use_mla": base.use_mla, **changes}, rules)
                fixed = {k: v for k, v in fixed.items() if k in changes or k == "kv_cache_dtype"}
                if notes:
                    cell["note"] = notes[-1]
                if fixed.get("kv_cache_dtype") != changes["kv_cache_dtype"]:
                    rewritten.add(f"{show(changes['kv_cache_dtype'])} -> {show(fixed['kv_cache_dtype'])}")
                changes = fixed
            if q.backend_per_kind is not None:  # the cell's layer may be of another kind: its own entry
                from .per_kind import apply_backend_per_kind
                cfg = _with_hardware(q, base.replace(backend=q.global_backend) if q.per_kind else base, changes)
                cfg = apply_backend_per_kind(cfg, q.backend_per_kind).config
            else:
                cfg = _with_hardware(q, base, changes)
            if "compute_capability" in changes and cfg.platform != "cuda":
                raise ConfigError("compute_capability", changes["compute_capability"], "platform cuda")
            sel = solve(cfg, role=q.role)
            cell.update(backend=sel.backend, variant=sel.variant, label=str(sel))
        except SelectionError as e:
            first = next((r[0] for r in e.reasons.values() if r), None) or e.args[0].splitlines()[0]
            cell.update(backend=None, variant=None, label="-", reason=first)
        except ConfigError as e:
            if any(getattr(e, "field", None) == n for n in names) or "compute_capability" in names:
                cell.update(backend=None, variant=None, label="n/a", invalid=str(e))
            else:
                raise
        rows.append(cell)
    data = {"over": names, "rows": rows, "query": q.to_dict()}
    head = wrap(f"{describe_query(q, skip=names)}; over {', '.join(names)}", indent="  ")
    lines = head
    if len(names) == 2 and not long:
        lines += _grid(names, value_lists, rows, style)
    else:
        lines += [""] + table([[*(r["values"][n] for n in names), r["label"]] for r in rows], headers=[*names, "selected"])
    legend = []
    if any(r["label"] == "-" for r in rows):
        legend.append("- = no valid backend")
    if any(r["label"] == "n/a" for r in rows):
        legend.append("n/a = not a valid combination")
    if rewritten:
        by = [w for w, on in (("the checkpoint's quantization_config", q.model is not None and q.model.quant),
                              ("the DeepSeek-V3.2 model config", q.model is not None and q.model.sparse_kv_rewrite)) if on]
        legend.append(f"kv {', '.join(sorted(rewritten))}: rewritten by {' and '.join(by)}, as vLLM does")
    if legend:
        lines += [""] + [x for item in legend for x in wrap(item)]
    code = EXIT_OK
    return Result("matrix", data, "\n".join(lines), code)


def _grid(names: list[str], value_lists: list[list[Any]], rows: list[dict[str, Any]], style: Style) -> list[str]:
    r_vals, c_vals = [show(v) for v in value_lists[0]], [show(v) for v in value_lists[1]]
    cells = {(r["values"][names[0]], r["values"][names[1]]): r["label"] for r in rows}

    def grid_lines(code: Callable[[str], str], transposed: bool = False, gap: str = "  ") -> list[str]:
        if transposed:  # the second field's values down the side, the first's across
            body = [[cv, *(code(cells.get((rv, cv), "")) for rv in r_vals)] for cv in c_vals]
            return table(body, headers=[names[1], *r_vals], gap=gap)
        body = [[rv, *(code(cells.get((rv, cv), "")) for cv in c_vals)] for rv in r_vals]
        return table(body, headers=[names[0], *c_vals], gap=gap)

    def fits(lines: list[str]) -> bool:
        return max(len(x) for x in lines) <= WIDTH

    full = grid_lines(lambda s: s)
    if fits(full):
        return [""] + full
    seen: dict[str, str] = {}
    for r in rows:
        if r["label"] not in ("-", "n/a") and r["label"] not in seen:
            seen[r["label"]] = chr(ord("A") + len(seen)) if len(seen) < 26 else str(len(seen))

    def coded(s: str) -> str:
        return seen.get(s, s)
    # Letters first; when the columns' names are still too wide (vLLM 0.33 has 22 KV-cache dtypes),
    # the longer axis goes down the side, with a one-space gap if that is what fits.
    grid = next((g for g in (grid_lines(coded), grid_lines(coded, transposed=True),
                             grid_lines(coded, transposed=True, gap=" ")) if fits(g)), grid_lines(coded))
    return [""] + grid + [""] + [f"  {k} = {v}" for v, k in seen.items()]


def _backends(platform: str | None, runnable: bool, style: Style, version: str | None = None) -> Result:
    from .docs import backend_rows
    from .rules import rules_for
    rows = backend_rows(platform, rules_for(version) if version else None)
    here: set[str] | None = None
    devices: list[str] = []
    if runnable:
        import importlib.util
        if importlib.util.find_spec("torch") is not None:
            try:
                from .kernels.registry import devices as kernel_devices, runnable_backends
                devices = kernel_devices()
                here = set()
                for d in devices:
                    here |= set(runnable_backends(d))
            except Exception:  # noqa: BLE001 - the column is optional
                here = None
    lines: list[str] = []
    # Column widths from the names and platform lists themselves (0.33 has 27-letter names and
    # backends on three platforms), so the columns never run together.
    name_w = max((len(r["name"]) for r in rows), default=0) + 2
    plat_w = max((len(", ".join(r["platforms"])) for r in rows), default=0) + 2
    for section in ("standard", "MLA decode", "MLA prefill"):
        part = [r for r in rows if r["kind"] == section]
        if not part:
            continue
        lines += ["", style.bold(f"{section} backends")]
        for r in part:
            if here is not None:
                r["runnable_here"] = r["name"] in here
            run = "" if here is None else ("runnable here: " + (style.yes if r["name"] in here else style.no))
            lines.append(f"  {r['name']:<{name_w}}{', '.join(r['platforms']):<{plat_w}}{run}".rstrip())
            lines += wrap(r["priority_text"], indent=" " * 16, first="      priority: ")
            lines += wrap(r["summary"], indent=" " * 6)
    if here is not None:
        lines += ["", f"runnable here = a registered kernel runs on this machine ({', '.join(devices)})"]
    data = {"backends": rows, "runnable_checked": here is not None, "devices": devices}
    return Result("backends", data, "\n".join(lines[1:] if lines and lines[0] == "" else lines), EXIT_OK)


def _docs(check: bool, output: str, version: str | None = None) -> Result:
    """Write or check the generated document; the result always has path, up_to_date, changed, diff."""
    from .docs import check_doc, generate_doc, write_doc
    from .rules import override, rules_for
    rules = override() or (rules_for(version) if version else None)
    if output == "-":
        text = generate_doc(rules)
        return Result("docs", {"path": None, "up_to_date": None, "changed": None, "diff": None},
                      text.rstrip("\n"), EXIT_OK)
    if check:
        diff = check_doc(output, rules)
        if diff:
            text = diff.rstrip("\n") + f"\n\n{output} is out of date; run 'attnsolve docs' to regenerate it."
            return Result("docs", {"path": output, "up_to_date": False, "changed": None, "diff": diff}, text,
                          EXIT_NO_BACKEND)
        return Result("docs", {"path": output, "up_to_date": True, "changed": None, "diff": None},
                      f"{output} is up to date.", EXIT_OK)
    changed = write_doc(output, rules)
    return Result("docs", {"path": output, "up_to_date": True, "changed": changed, "diff": None},
                  f"{'wrote' if changed else 'unchanged:'} {output}", EXIT_OK)


def matrix(ns: argparse.Namespace, style: Style) -> Result:
    """`attnsolve matrix`: the selection over free fields (or GPU names); --all: the coverage report."""
    if getattr(ns, "all_space", False):
        return _coverage(getattr(ns, "vllm", None))
    from . import cli_guards as guards
    over = parse_over(ns.over or guards.default_over(guards.platform_hint(ns)))
    ns.over_values = {n: v[0] for n, v in over if v}
    q = build_query(ns, need_hardware=False, free=[n for n, _ in over])
    guards.check_over_platform([n for n, _ in over], q.config.platform)
    return _matrix(q, over, ns.long, style, max_cells=guards.max_cells(ns.max_cells), progress=getattr(ns, "stderr", None))


def backends(ns: argparse.Namespace, style: Style) -> Result:
    """`attnsolve backends`: every backend with its platforms, priority and summary."""
    platform = ns.platform
    if platform is not None:
        from .config import Config
        platform = Config(platform=platform, dtype="bfloat16",
                          compute_capability="9.0" if str(platform).lower() in ("cuda", "gpu", "nvidia")
                          else None).platform
    from .config import parse_vllm
    return _backends(platform, not ns.no_runnable, style, parse_vllm(ns.vllm))


def docs(ns: argparse.Namespace, style: Style) -> Result:
    """`attnsolve docs`: write or --check the generated backend document."""
    from .cli_guards import check_docs_output
    from .config import parse_vllm
    from .docs import doc_path
    version = parse_vllm(ns.vllm)
    output = ns.output if ns.output is not None else doc_path(version)
    check_docs_output(output, ns.check)
    return _docs(ns.check, output, version)


# Model facts left free by `upgrade` when neither a flag nor --model gives them.
UPGRADE_FREE = ("dtype", "head_size", "kv_cache_dtype", "use_mla", "has_sink")


def upgrade(ns: argparse.Namespace, style: Style) -> Result:
    """`attnsolve upgrade --from A --to B`: the configuration (or the space of model facts not
    given) answered by two releases, what changes and why."""
    from .config import ANY, parse_vllm
    from .rules import versions
    from .versions import compare_versions
    old = parse_vllm(ns.from_version)
    new = parse_vllm(ns.to_version) if ns.to_version else versions()[-1]
    ns.vllm = new
    q = build_query(ns)
    given = set(q.user_fields) | (set(q.model.fields) if q.model is not None else set())
    free = () if q.model is not None else tuple(f for f in UPGRADE_FREE if f not in given)
    config = q.config.replace(**{f: ANY for f in free}) if free else q.config
    cmp = compare_versions(config, old, new, role=q.role, keep=given)
    query = describe_query(q, skip=tuple(free)).replace(f"vLLM {new}", f"vLLM {old} -> {new}", 1)
    lines = wrap(query, indent="          ", first="Query     ")
    for n in q.notes:
        lines += wrap(n, indent="          ", first="Note      ")
    for i, line in enumerate(cmp.lines(mention=q.user_fields)):
        if i == 0:  # the verdict, without the release pair the Query line already names
            lines += wrap(line.split(": ", 1)[-1], indent="          ", first="Upgrade   ")
        else:  # one group (or one reason) per entry, its continuation indented under it
            lines += wrap(line.strip(), indent="            ", first="          ")
    return Result("upgrade", {**cmp.to_dict(), "query": q.to_dict()}, "\n".join(lines), EXIT_OK)


# Each verb: parsed flags -> a frozen Result (data, text, exit code).
VERBS: dict[str, Callable[[argparse.Namespace, Style], Result]] = {
    "select": select, "explain": explain, "matrix": matrix, "backends": backends, "docs": docs, "upgrade": upgrade,
}
