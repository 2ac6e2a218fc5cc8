"""docs/attention_backends.md generated from the rules alone (`attnsolve docs`, `--check`).

Same sections and columns as vLLM's generated document (standard backends, MLA prefill, MLA
decode, CUDA priority lists per GPU generation, legend), but every cell is computed from the
checks the solver runs, not parsed from declarations; plus what vLLM's generator cannot show:
combination checks, derived facts (FA version, TRT-LLM), the ROCm decision tree and the CPU path.
Output is deterministic: sorted names, rule order for lists, no dates.

Why this module: it is the entry point (generate, check, write the file; read its tables back).
The page is docs_page.py's, one docs_* module per kind of table or section below it. Every name
this module had is still importable from here.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterable

from .docs_backends import (
    _base_facts, _cc_int, _list_for, _ranges, _sorted_variants, backend_rows, kind_of, priority_positions,
    priority_text,
)
from .docs_cc import _cc_candidates, _chain, _own_cc_checks, _reachable_values, _variant_ccs, cc_cell
from .docs_cells import (
    _ATTN_TYPE, _DTYPE_SHORT, NO, YES, attn_cell, block_cell, cc_pred_text, dtypes_cell, flag_cell, head_cell,
    kv_cell, lit_text, reason_text,
)
from .docs_page import _LEGEND, _read_from, _vllm_flag, generate_doc
from .docs_paths import DEFAULT_PATH, _newest, doc_path
from .docs_prefill import _SWITCHES, PREFILL_HEADERS, _switch_cells, prefill_rows
from .docs_sections import (
    _check_line, _claimed, _conditions_section, _decision_lists, _derived_section, _priority_section, _val,
    _variant_diff,
)
from .docs_tables import (
    _FOOTNOTE_MARKS, _VARIANT_SHOW, MLA_HEADERS, STANDARD_HEADERS, _marks, _merge, mla_rows, standard_rows,
)
from .rules.model import RuleSet

__all__ = [
    "DEFAULT_PATH", "STANDARD_HEADERS", "MLA_HEADERS", "PREFILL_HEADERS", "YES", "NO", "generate_doc", "check_doc",
    "write_doc", "doc_path", "iter_cells", "backend_rows", "kind_of", "priority_positions", "priority_text",
    "standard_rows", "mla_rows", "prefill_rows", "dtypes_cell", "kv_cell", "block_cell", "head_cell", "flag_cell",
    "attn_cell", "cc_cell", "cc_pred_text", "lit_text", "reason_text",
    # The generator's helpers, re-exported under their old address (they live in the modules named above).
    "_DTYPE_SHORT", "_ATTN_TYPE", "_VARIANT_SHOW", "_FOOTNOTE_MARKS", "_SWITCHES", "_LEGEND", "_cc_int", "_list_for",
    "_base_facts", "_ranges", "_merge", "_sorted_variants", "_cc_candidates", "_chain", "_reachable_values",
    "_variant_ccs", "_own_cc_checks", "_marks", "_switch_cells", "_check_line", "_priority_section", "_claimed",
    "_decision_lists", "_derived_section", "_val", "_conditions_section", "_variant_diff", "_newest", "_vllm_flag",
    "_read_from",
]


def check_doc(path: str | Path = DEFAULT_PATH, rules: RuleSet | None = None) -> str:
    """A unified diff (committed -> generated), or '' when the file is up to date."""
    p = Path(path)
    new = generate_doc(rules)
    old = p.read_text(encoding="utf-8") if p.exists() else ""
    if old == new:
        return ""
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=f"{p} (committed)", tofile=f"{p} (generated from the rules)"))


def write_doc(path: str | Path = DEFAULT_PATH, rules: RuleSet | None = None) -> bool:
    """Write the document; True when the file changed."""
    p = Path(path)
    new = generate_doc(rules)
    if p.exists() and p.read_text(encoding="utf-8") == new:
        return False
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(new, encoding="utf-8")
    return True


def iter_cells(text: str, section: str) -> Iterable[list[str]]:
    """Rows of the first Markdown table under heading `section` (for tests and tools)."""
    lines = text.splitlines()
    try:
        i = next(k for k, line in enumerate(lines) if line.lstrip("#").strip() == section)
    except StopIteration:
        return
    rows = []
    for line in lines[i + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    yield from rows
