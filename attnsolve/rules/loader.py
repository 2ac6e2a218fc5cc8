"""Load the TOML rules into a validated RuleSet.

Loading collects every problem into one RulesError (file, backend, key) instead of stopping at the
first, and expands each backend's declared capabilities into vLLM's reasons in vLLM's order.

Why this module: it is the entry point (load_rules, the packaged rules' folder). It reads the files and
checks every key's shape; building the RuleSet is assemble.py's, one module per kind of table below it.
Every name the loader had is still importable from here.
"""

from __future__ import annotations

import os
import tomllib
from copy import deepcopy
from pathlib import Path
from typing import Any

from . import overlay, schema
from .labels import parse_version
from .assemble import _BACKEND_KEYS, _PLATFORM_KEYS, CONTEXT_FIELDS, EXTRA_FIELDS, _build, _check_references
from .backends import _ROLES, _backend, _check_domain
from .capabilities import _caps, _generic_checks, _generic_default, expand_checks
from .conditions import (
    _COMPARE_KEYS, _MAX_TERMS, _NEVER, _checks, _expand, _field_literals, _formula, _Known, _literals, _lower_check,
    _messages, _nnf, _when_dnf,
)
from .derived import _ordered_derived
from .field_decls import _field_decls, _field_defaults
from .invariants import _invariants
from .model import RuleSet
from .predicates import _PRED_KEYS, parse_pred
from .priority_lists import (
    _LIST_SETTINGS, SKIP_REASON, _cc_source, _conds, _entry, _mla_prefill, _model_backend, _priority_list, _sets,
    _start_backend, _start_block_size,
)
from .problems import RulesError, _Collector
from .toml_values import _bool, _cc_int, _int, _list, _str_list, _text, cc_from_text

__all__ = [
    "RULES_ROOT", "RULES_DIR", "EXTRA_FIELDS", "CONTEXT_FIELDS", "SKIP_REASON", "RulesError", "load_rules",
    "cc_from_text", "parse_pred", "expand_checks",
    # The loader's helpers, re-exported under their old address (they live in the modules named above).
    "_BACKEND_KEYS", "_PLATFORM_KEYS", "_PRED_KEYS", "_ROLES", "_COMPARE_KEYS", "_MAX_TERMS", "_NEVER",
    "_LIST_SETTINGS", "_Collector", "_Known", "_cc_int", "_int", "_bool", "_list", "_str_list", "_text",
    "_field_literals", "_formula", "_nnf", "_expand", "_when_dnf", "_literals", "_lower_check", "_checks",
    "_messages", "_generic_checks", "_generic_default", "_caps", "_invariants", "_backend", "_check_domain",
    "_ordered_derived", "_field_decls", "_field_defaults", "_entry", "_priority_list", "_cc_source", "_conds",
    "_sets", "_model_backend", "_mla_prefill", "_start_backend", "_start_block_size", "_check_shapes", "_build",
    "_check_references",
]

# One folder per vLLM release modelled: attnsolve/rules/vllm-<major.minor>/ (see rule_set_dirs()).
RULES_ROOT = Path(__file__).parent
RULES_DIR = RULES_ROOT / "vllm-0.17"


def load_rules(path: str | Path | None = None, *, check_structure: bool = True) -> RuleSet:
    """Load and validate the rules in directory `path` (default: the packaged rules).

    check_structure runs the networkx graph checks (inheritance cycles, dangling parents,
    priority entries naming no backend, backends in no list); the packaged rules are checked
    by the test suite, so the CLI can skip importing networkx on its fast start-up path.
    """
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise RulesError([(type(path).__name__, "-", "expected the path of a folder of rule files (*.toml)")])
    root = Path(path) if path is not None else RULES_DIR
    if not root.is_dir():
        raise RulesError([(str(root), "-", "not a directory of rule files (*.toml)")])
    col = _Collector()
    docs, files = _read_release(root, col, ())
    if col.problems:
        raise RulesError(col.problems)
    _check_shapes(docs, col)
    if col.problems:
        raise RulesError(col.problems)
    try:
        return _build(docs, col, check_structure, files)
    except RulesError:
        raise
    except (TypeError, AttributeError, KeyError, ValueError, RecursionError) as e:
        # Every shape the loader knows is checked with a precise message above; this is the net for
        # a shape it does not know, so a malformed file never escapes as a traceback.
        raise RulesError([*col.problems, (", ".join(Path(f).name for f in files), "-",
                                          f"malformed rules ({type(e).__name__}: {e})")]) from None


def release_documents(path: str | Path) -> dict[str, dict]:
    """A rule folder's tables by file name as the loader reads them: an edit folder's files merged into its
    base's (`[ruleset] base`), so tools and tests can copy or damage a release whatever its folder holds (a copy:
    the loader keeps its own)."""
    col = _Collector()
    docs, _ = _read_release(Path(path), col, ())
    if col.problems:
        raise RulesError(col.problems)
    return deepcopy(dict(docs))


# Folders read by _read_release, kept while none of their files (nor their bases') changes: loading every release
# read each edit folder's whole base chain again (0.18 on 0.19 on ... on 0.33: about 1,250 TOML files for the 20
# releases, ~1.4 s of the CLI's `explain`, which asks every release for a version fix). An entry is
# (signature, docs, sources, chain); the docs are shared, never changed by the loader (load_rules and _build only
# read them; release_documents hands out a copy).
_READ_MEMO: dict[Path, tuple[tuple[Any, ...], list[tuple[str, dict]], tuple[str, ...], tuple[tuple[Path, str | None], ...]]] = {}


def _folder_signature(chain: tuple[tuple[Path, str | None], ...]) -> tuple[Any, ...] | None:
    """What a memoised read depends on: each folder's TOML files (name, size, mtime, inode) and where its base
    label resolves now (a sibling folder may have appeared); None when a folder cannot be listed."""
    out: list[Any] = []
    try:
        for i, (folder, label) in enumerate(chain):
            for f in sorted(folder.glob("*.toml")):
                st = f.stat()
                out.append((f.name, st.st_size, st.st_mtime_ns, st.st_ino))
            if label is not None:
                base = _base_folder(folder, label)
                want = chain[i + 1][0] if i + 1 < len(chain) else None
                if base is None or want is None or base.resolve() != want:
                    return None
            out.append(None)
    except OSError:
        return None
    return tuple(out)


def _read_release(root: Path, col: _Collector, seen: tuple[Path, ...]) -> tuple[list[tuple[str, dict]], tuple[str, ...]]:
    """The folder's files as (name, tables), `domains.toml` first, with its `[ruleset] base` applied.

    A folder whose ruleset names a base release holds edits on that release's folder (rules/overlay.py):
    the base (itself possibly edits on another) is read first, then each file merged into its namesake.
    Returns the tables and every file read, the base's included (RuleSet.sources). A clean read is kept
    (`_READ_MEMO`) until a file of the folder or of its bases changes.
    """
    try:
        key = root.resolve()
    except OSError:
        key = None
    got = _READ_MEMO.get(key) if key is not None and key not in seen else None
    if got is not None and _folder_signature(got[3]) == got[0]:
        return got[1], got[2]
    before = len(col.problems)
    docs, sources, chain = _read_release_files(root, col, seen)
    if key is not None and len(col.problems) == before:
        sig = _folder_signature(chain)
        if sig is not None:
            if len(_READ_MEMO) > 64:
                _READ_MEMO.clear()
            _READ_MEMO[key] = (sig, docs, sources, chain)
    return docs, sources


def _read_release_files(root: Path, col: _Collector, seen: tuple[Path, ...]
                        ) -> tuple[list[tuple[str, dict]], tuple[str, ...], tuple[tuple[Path, str | None], ...]]:
    """_read_release's work, and the chain of (folder, its base label) it read, this folder first."""
    from ..safe_io import RULES_FILE_MAX_BYTES, FileProblem, read_text
    try:
        files = sorted(root.glob("*.toml"))
    except OSError as e:
        raise RulesError([(str(root), "-", f"cannot list the folder: {e.strerror or e}")]) from None
    docs: list[tuple[str, dict]] = []
    for f in sorted(files, key=lambda p: (p.name != "domains.toml", p.name)):
        try:  # regular files only, size-capped, never blocking on a FIFO (safe_io)
            docs.append((f.name, tomllib.loads(read_text(f, max_bytes=RULES_FILE_MAX_BYTES))))
        except FileProblem as e:
            col.add(f.name, "-", f"cannot read {f}: {e.reason}")
        except tomllib.TOMLDecodeError as e:
            col.add(f.name, "-", f"not valid TOML: {e}")
        except RecursionError:
            col.add(f.name, "-", "not valid TOML: nested too deeply")
        except ValueError as e:  # an integer of more than 4,300 digits
            col.add(f.name, "-", "not valid TOML: " + ("a number of more than 4,300 digits" if "4300" in str(e) else str(e)))
    sources = tuple(str(f) for f in files)
    base = _base_label(docs, col)
    here = (root.resolve(), base)
    if base is None:
        if not any(f.name == "domains.toml" for f in files):
            col.problems.insert(0, (str(root), "-", "missing domains.toml (field domains and GPU table)"))
        return docs, sources, (here,)
    if col.problems:
        return docs, sources, (here,)
    base_root = _base_folder(root, base)
    where = ("ruleset.toml", "ruleset.base")
    if base_root is None:
        col.add(*where, f"no rule folder for base release {base!r} (looked for vllm-{base} beside {root} "
                        "and among the packaged sets)")
        return docs, sources, (here,)
    chain = (*seen, root.resolve())
    if base_root.resolve() in chain or len(chain) > overlay.MAX_BASE_DEPTH:
        col.add(*where, f"base releases form a cycle or a chain longer than {overlay.MAX_BASE_DEPTH}: "
                        + " -> ".join(p.name for p in (*chain, base_root)))
        return docs, sources, (here,)
    base_docs, base_sources = _read_release(base_root, col, chain)
    base_chain = _READ_MEMO.get(base_root.resolve(), (None, None, None, ((base_root.resolve(), None),)))[3]
    merged = dict(base_docs)
    for name, edits in docs:
        merged[name] = overlay.merge_file(merged.get(name, {}), edits,
                                          lambda loc, msg, name=name: col.add(name, loc, f"{msg} (edits on vLLM {base})"))
    ruleset = merged["ruleset.toml"].get("ruleset")
    if isinstance(ruleset, dict):
        ruleset.pop("base", None)
        own = dict(docs).get("ruleset.toml", {}).get("ruleset")
        if not (isinstance(own, dict) and "patch_releases" in own):
            ruleset.pop("patch_releases", None)  # the base release's patches are not this release's
    ordered = sorted(merged.items(), key=lambda d: (d[0] != "domains.toml", d[0]))
    return ordered, (*sources, *base_sources), (here, *base_chain)


def _base_label(docs: list[tuple[str, dict]], col: _Collector) -> str | None:
    """`[ruleset] base` of the folder's own ruleset.toml: the release its files edit, or None."""
    table = dict(docs).get("ruleset.toml", {}).get("ruleset")
    base = table.get("base") if isinstance(table, dict) else None
    if base is None:
        return None
    label = parse_version(base)
    if label is None:
        col.add("ruleset.toml", "ruleset.base", f"must name a vLLM release such as \"0.33\", got {base!r}")
    return label


def _base_folder(root: Path, label: str) -> Path | None:
    """The base release's folder: a sibling `vllm-<label>` (so a copied pair still loads), else the packaged one."""
    for folder in (root.parent / f"vllm-{label}", RULES_ROOT / f"vllm-{label}"):
        if folder.is_dir():
            return folder
    return None


def _check_shapes(docs: list[tuple[str, dict]], col: _Collector) -> None:
    """Every key known and of its kind, in every file (schema.KEYS), before anything is built."""
    domains: dict[str, Any] = {}
    derived: dict[str, Any] = {}
    declared: dict[str, Any] = {}
    for _, doc in docs:
        if isinstance(doc.get("fields"), dict):
            for k, v in doc["fields"].items():
                if isinstance(v, dict):
                    declared[k] = v
                    if "values" in v:
                        domains[k] = v["values"]
                else:
                    domains[k] = v
        if isinstance(doc.get("derived"), dict):
            derived.update(doc["derived"])
    # a damaged file may hold any value here: only a list is read (the shape checker reports the rest)
    generic = [g for _, doc in docs if isinstance(doc.get("generic_checks"), list) for g in doc["generic_checks"]]
    checker = schema.ShapeChecker(col.add, schema.field_kinds(domains, derived, (*EXTRA_FIELDS, *CONTEXT_FIELDS), declared),
                                  schema.capability_kinds(generic))
    parents: dict[str, tuple[str, Any]] = {}
    for fname, doc in docs:
        checker.table(fname, "", doc, "top")
        checker.domains(fname, doc.get("fields"))
        checker.aliases(fname, doc.get("aliases"))
        for name, b in (doc.get("backends") or {}).items() if isinstance(doc.get("backends"), dict) else ():
            if isinstance(b, dict) and isinstance(b.get("parent"), str):
                parents[name] = (fname, b["parent"])
    for name, (fname, _) in parents.items():  # chain length, followed iteratively (cycles stop it)
        depth, cur, seen = 0, name, {name}
        while cur in parents and depth <= schema.MAX_PARENT_DEPTH:
            cur = parents[cur][1]
            depth += 1
            if cur in seen:
                break
            seen.add(cur)
        if depth == schema.MAX_PARENT_DEPTH + 1 and not any(p[1] == name for p in parents.values()):
            col.add(fname, f"backends.{name}.parent",
                    f"inheritance chain longer than {schema.MAX_PARENT_DEPTH} parents (the rules use at most 2)")
