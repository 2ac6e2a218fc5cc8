"""The capability tables (standard attention, MLA decode): one row per backend and variant.

Why a module: these two tables share vLLM's columns, per-variant rows and the footnote marks that
tell which derived field picks a variant; the prefill table is docs_prefill's.
"""

from __future__ import annotations

from .docs_backends import _sorted_variants, kind_of
from .docs_cc import cc_cell
from .docs_cells import attn_cell, block_cell, dtypes_cell, flag_cell, head_cell, kv_cell
from .rules.model import Capabilities, RuleSet

STANDARD_HEADERS = ["Backend", "Version", "Dtypes", "KV Dtypes", "Block Sizes", "Head Sizes", "Sink", "MM Prefix",
                    "DCP", "Attention Types", "Compute Cap."]
MLA_HEADERS = ["Backend", "Dtypes", "KV Dtypes", "Block Sizes", "Head Sizes", "Sink", "Sparse", "MM Prefix", "DCP",
               "Attention Types", "Compute Cap."]
_VARIANT_SHOW = {"NATIVE": "Native"}
_FOOTNOTE_MARKS = ("\u2020", "*", "\u2021", "\u00a7")  # assigned to variant fields in sorted order


def _merge(base: Capabilities, over: Capabilities | None) -> Capabilities:
    if over is None:
        return base
    return base.merged(over)


def _marks(rules: RuleSet) -> dict[str, str]:
    fields = sorted({b.variant_field for b in rules.backends.values() if b.variants and b.variant_field}, reverse=True)
    return {f: _FOOTNOTE_MARKS[i % len(_FOOTNOTE_MARKS)] for i, f in enumerate(fields)}


def standard_rows(rules: RuleSet) -> list[list[str]]:
    marks = _marks(rules)
    rows = []
    for b in sorted((b for b in rules.backends.values() if kind_of(b) == "standard"), key=lambda b: b.name):
        variants = _sorted_variants(rules, b) or [None]
        for v in variants:
            caps = _merge(b.caps, v.caps if v is not None else None)
            version = "" if v is None else _VARIANT_SHOW.get(v.name, v.name) + marks.get(b.variant_field or "", "")
            rows.append([f"`{b.name}`", version, dtypes_cell(caps, rules), kv_cell(caps, rules),
                         block_cell(caps, rules), head_cell(caps), flag_cell(caps.sink), flag_cell(caps.mm_prefix),
                         flag_cell(caps.dcp), attn_cell(caps, rules), cc_cell(b, caps, rules, v)])
    return rows


def mla_rows(rules: RuleSet) -> list[list[str]]:
    rows = []
    for b in sorted((b for b in rules.backends.values() if kind_of(b) == "MLA decode"), key=lambda b: b.name):
        # a backend with variants gets a row per variant, named in the Backend cell (the table has no Version
        # column: 0.33's FLASHMLA_SPARSE_DSV41 pages 64 on SM 9.x, 128 elsewhere)
        for v in _sorted_variants(rules, b) or [None]:
            caps = _merge(b.caps, v.caps if v is not None else None)
            name = f"`{b.name}`" + ("" if v is None else f" ({_VARIANT_SHOW.get(v.name, v.name)})")
            rows.append([name, dtypes_cell(caps, rules), kv_cell(caps, rules), block_cell(caps, rules),
                         head_cell(caps), flag_cell(caps.sink), flag_cell(caps.sparse), flag_cell(caps.mm_prefix),
                         flag_cell(caps.dcp), attn_cell(caps, rules), cc_cell(b, caps, rules, v)])
    return rows
