"""The import structure, read from the source: arrows only point down, no cycles, torch only in kernels.

Layers, bottom first: values (cc, errors, exit codes, safe I/O) <- rules <- config <- solver <- engine
<- the public surface (selection, explain, sweep, versions, ...) <- CLI, docs and kernels. Every
import counts, including the lazy ones inside functions.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

PKG = Path(__file__).resolve().parents[1] / "attnsolve"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("attnsolve.cc", "attnsolve.errors", "attnsolve.exitcodes", "attnsolve.safe_io"),
    ("attnsolve.rules",),
    ("attnsolve.config", "attnsolve.gpus"),
    ("attnsolve.solver",),
    ("attnsolve.engine",),
    ("attnsolve.guards", "attnsolve.selection", "attnsolve.diagnosis", "attnsolve.explain", "attnsolve.sweep",
     "attnsolve.coverage", "attnsolve.modelconfig", "attnsolve.advice", "attnsolve.advice_text", "attnsolve.render",
     "attnsolve.versions", "attnsolve"),
    ("attnsolve.cli", "attnsolve.cli_guards", "attnsolve.query", "attnsolve.verbs", "attnsolve.docs",
     "attnsolve.docs_backends", "attnsolve.docs_cc", "attnsolve.docs_cells", "attnsolve.docs_page",
     "attnsolve.docs_paths", "attnsolve.docs_prefill", "attnsolve.docs_sections", "attnsolve.docs_tables",
     "attnsolve.__main__", "attnsolve.kernels"),
)


# Inside attnsolve.selection (solve and its parts), bottom first: a module imports only modules of lower rows.
SELECTION_LAYERS: tuple[tuple[str, ...], ...] = (
    ("result", "messages", "per_rules", "release"),
    ("blocks", "lists", "steps"),
    ("startup", "lines", "prefill"),
    ("core",),
    ("memo", "reference"),
)


def _module(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    best, best_len = None, -1
    for i, names in enumerate(LAYERS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and len(n) > best_len:
                best, best_len = i, len(n)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def _imports() -> list[tuple[str, str]]:
    edges = []
    for f in PKG.rglob("*.py"):
        mod = _module(f)
        package = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [f"{target}.{a.name}" for a in node.names]
                # `from . import x` names a submodule; `from .m import Y` names module m
                for name in names if not node.module else [target]:
                    edges.append((mod, name))
            elif isinstance(node, ast.Import):
                edges += [(mod, a.name) for a in node.names]
    return edges


def _known(name: str, modules: set[str]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def test_every_arrow_points_down():
    modules = {_module(f) for f in PKG.rglob("*.py")}
    upward = []
    for src, dst in _imports():
        target = _known(dst, modules)
        if target is None or target == src or target == "attnsolve" and src.startswith("attnsolve.kernels"):
            continue
        if _layer(target) > _layer(src):
            upward.append(f"{src} -> {target}")
    assert not upward, "imports that run upward:\n" + "\n".join(sorted(set(upward)))


def test_no_import_cycles_between_modules():
    modules = {_module(f) for f in PKG.rglob("*.py")}
    g = nx.DiGraph()
    for src, dst in _imports():
        target = _known(dst, modules)
        # a package's own __init__ re-exports its submodules: not a cycle of ideas
        if target and target != src and not src.startswith(target + ".") and not target.startswith(src + "."):
            g.add_edge(src, target)
    cycles = [c for c in nx.simple_cycles(g) if len(c) > 1 and "attnsolve" not in c]
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_selection_modules_import_only_those_below():
    pkg = "attnsolve.selection."
    row = {pkg + name: i for i, names in enumerate(SELECTION_LAYERS) for name in names}
    modules = {_module(f) for f in (PKG / "selection").glob("*.py")} - {"attnsolve.selection"}
    assert modules == set(row), f"selection modules not in SELECTION_LAYERS: {sorted(modules - set(row))}; " \
                                f"listed but missing: {sorted(set(row) - modules)}"
    wrong = []
    for src, dst in _imports():
        target = _known(dst, modules | {"attnsolve.selection"})
        if src in row and target is not None and target.startswith("attnsolve.selection"):
            if target not in row or row[target] >= row[src]:
                wrong.append(f"{src} -> {target}")
    assert not wrong, "selection imports that do not point down:\n" + "\n".join(sorted(set(wrong)))


def test_torch_is_imported_only_under_kernels():
    offenders = sorted({src for src, dst in _imports()
                        if dst.split(".")[0] in ("torch", "triton") and not src.startswith("attnsolve.kernels")})
    assert not offenders, f"torch/triton imported outside attnsolve/kernels: {offenders}"


def test_the_kernel_registry_and_the_cli_do_not_pull_torch_in():
    code = ("import sys, attnsolve, attnsolve.cli, attnsolve.kernels.registry, attnsolve.kernels; "
            "from attnsolve.cli import main; main(['select', '--gpu', 'H100', '--dtype', 'bf16']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent, timeout=120)
    assert r.returncode == 0, r.stderr
