"""Law of the generated docs: every cell of the backend tables agrees with solve().

For each CUDA row of the standard and MLA decode tables in the generated attention_backends.md, a witness
config is found on which the backend (and the row's variant) is valid when requested. Each cell is then
checked by changing only the field it describes and asking solve() (manual selection, which validates):
a listed dtype / KV dtype / attention type / head size / block size / compute capability keeps the backend
valid with the same variant, an unlisted one makes it invalid; a ✅/❌ flag (sink, MM prefix, sparse) is
checked by switching the feature on. ROCm and CPU rows are declarations only (their platforms do not
validate), so they are not checked here.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Callable

import pytest

from attnsolve import Config, ConfigError, vllm_versions, InvalidBackendError, NoValidBackendError, solve
from attnsolve.rules import default_rules

docs = pytest.importorskip("attnsolve.docs")
from attnsolve.rules import rules_for  # noqa: E402

# Per release (pytest.param(..., marks=pytest.mark.vllm(v))), for the releases whose tables this reads: 0.17.
# Not yet 0.33: its generated doc leaves the Compute Cap. cell of 28 variant rows (FLASH_ATTN's, FLASHINFER's)
# empty (docs._variant_ccs evaluates the variant's derived fact on its direct inputs only, and 0.33's variant
# names derive from other derived facts), prints "one of 120, 121" for a compute-capability list, and the
# witness search does not set 0.33's own fields (dcp, FA version >= 3, nvfp4 KV) that its variants need.
CHECKED = ("0.17",)

STANDARD = "Standard Attention (MHA, MQA, GQA) Backends"
MLA = "Decode Backends"
DTYPE_SHORT = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
GENERATIONS = [(7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (10, 3), (11, 0), (12, 0), (12, 1)]
HEADS = [16, 32, 40, 64, 80, 96, 112, 128, 160, 192, 256, 264, 512, 576]


def _rows(section: str, version: str) -> list[dict[str, str]]:
    cells = list(docs.iter_cells(docs.generate_doc(rules_for(version)), section))
    header = cells[0]
    return [dict(zip(header, r)) for r in cells[2:]]


def _variant_name(version: str) -> str | None:
    text = version.rstrip("*†‡§¶").strip()
    return {"FA2": "FA2", "FA3": "FA3", "Native": "NATIVE", "TRTLLM": "TRTLLM"}.get(text, text or None)


def _valid(config: Config, variant: str | None) -> bool:
    try:
        sel = solve(config)
    except (InvalidBackendError, NoValidBackendError, ConfigError):
        return False
    return sel.backend == config.backend and (variant is None or sel.variant == variant)


def _witness(backend: str, variant: str | None, mla: bool, sparse: bool) -> Config | None:
    for cc, fav, trt, dtype, nope, topk in itertools.product(
            [(9, 0), (10, 0), (8, 0), (12, 0), (7, 5)], [2, 3, None], [False, None], ["bfloat16", "float16"],
            [None, 128], [None, 2048]):
        try:
            c = Config(platform="cuda", compute_capability=cc, dtype=dtype, backend=backend, use_mla=mla,
                       use_sparse=sparse, head_size=576 if mla else 128, flash_attn_version=fav,
                       use_trtllm_attention=trt, qk_nope_head_dim=nope, index_topk=topk)
        except ConfigError:
            continue
        if _valid(c, variant):
            return c
    return None


def _pred_cell(text: str) -> Callable[[int], bool]:
    """'64, 128, 256' / '%8, ≤256' / '≥32' / 'Any' / '576' / '%16' -> predicate over an integer."""
    text = text.strip()
    if text in ("Any", ""):
        return lambda v: True
    parts = [p.strip() for p in text.split(",")]
    if all(p.isdigit() for p in parts):
        allowed = {int(p) for p in parts}
        return lambda v: v in allowed
    checks: list[Callable[[int], bool]] = []
    for p in parts:
        if p.startswith("%"):
            checks.append(lambda v, m=int(p[1:]): v % m == 0)
        elif p.startswith("≤"):
            checks.append(lambda v, m=int(p[1:]): v <= m)
        elif p.startswith("≥"):
            checks.append(lambda v, m=int(p[1:]): v >= m)
        else:
            raise AssertionError(f"cannot read cell {text!r}")
    return lambda v: all(c(v) for c in checks)


def _cc_cell(text: str) -> Callable[[tuple[int, int]], bool]:
    """'7.5-12.1' / '10.x' / '9.x-10.x' / '≥8.0' / 'Any' -> predicate over (major, minor)."""
    text = text.strip()
    if text in ("Any", "N/A"):
        return lambda cc: True

    def point(s: str, upper: bool) -> int:
        if s.endswith(".x"):
            return int(s[:-2]) * 10 + (9 if upper else 0)
        a, _, b = s.partition(".")
        return int(a) * 10 + int(b or 0)

    if text.startswith("≥"):
        lo = point(text[1:], False)
        return lambda cc: cc[0] * 10 + cc[1] >= lo
    if text.startswith("≤"):
        hi = point(text[1:], True)
        return lambda cc: cc[0] * 10 + cc[1] <= hi
    ranges = []
    for part in text.split(","):
        part = part.strip()
        lo_s, _, hi_s = part.partition("-")
        ranges.append((point(lo_s, False), point(hi_s or lo_s, True)))
    return lambda cc: any(lo <= cc[0] * 10 + cc[1] <= hi for lo, hi in ranges)


def _list_cell(text: str, domain: tuple[Any, ...], kind: str) -> set[Any]:
    text = text.strip()
    if text in ("All", "Any"):
        return set(domain)
    items = [x.strip().strip("`") for x in text.split(",") if x.strip()]
    if kind == "dtype":
        return {DTYPE_SHORT.get(x, x) for x in items}
    if kind == "attn_type":
        return {x.lower().replace(" ", "_") for x in items}
    return set(items)


def _cuda_rows(version: str) -> list[tuple[str, dict[str, str]]]:
    rules = rules_for(version)  # at import: before the test's marker applies
    out = []
    for section in (STANDARD, MLA):
        for row in _rows(section, version):
            name = row["Backend"].strip("`")
            if name in rules.backends and "cuda" in rules.backends[name].platforms:
                out.append((section, row))
    return out


RELEASE_ROWS = {v: _cuda_rows(v) for v in vllm_versions() if v in CHECKED}
ROWS = [pytest.param(v, section, row, marks=pytest.mark.vllm(v),
                     id=f"{v}-{row['Backend'].strip('`')}-{row.get('Version', '') or 'row'}")
        for v, rows in RELEASE_ROWS.items() for section, row in rows]


@pytest.mark.parametrize("v,section,row", ROWS)
def test_every_cell_agrees_with_solve(v, section, row):
    rules = default_rules()
    name = row["Backend"].strip("`")
    variant = _variant_name(row.get("Version", ""))
    mla = section == MLA
    sparse = row.get("Sparse", "❌") == "✅"
    w = _witness(name, variant, mla, sparse)
    assert w is not None, f"no config found on which {name} ({variant}) is valid when requested"
    wrong: list[str] = []

    def check(column: str, changes: dict[str, Any], claimed: bool) -> None:
        try:
            c = w.replace(**changes)
        except ConfigError:
            return
        got = _valid(c, variant)
        if got != claimed:
            wrong.append(f"{column}: {changes} -> solve says {'valid' if got else 'invalid'}, the doc says "
                         f"{'valid' if claimed else 'invalid'} ({row[column]!r})")

    for column, field, kind in (("Dtypes", "dtype", "dtype"), ("KV Dtypes", "kv_cache_dtype", "kv"),
                                ("Attention Types", "attn_type", "attn_type")):
        domain = tuple(rules.domains[field])
        listed = _list_cell(row[column], domain, kind)
        for value in domain:
            check(column, {field: value}, value in listed)
    heads = _pred_cell(row["Head Sizes"])
    for h in HEADS:
        if variant == "FA4" and h > 128:  # valid, but FA4 runs as FA2 above head 128 (fa_kernel_version)
            check("Head Sizes", {"head_size": h}, False) if not heads(h) else None
            if heads(h) and not _valid(w.replace(head_size=h), "FA2"):
                wrong.append(f"Head Sizes: {h} -> not valid as FA2")
            continue
        check("Head Sizes", {"head_size": h}, heads(h))
    # Block sizes are kernel block sizes: vLLM 0.17's CUDA selector drops the block size, and start-up
    # (the MLA hook may set its own) fails with "No common block size" when the kernels cannot serve it.
    blocks = _pred_cell(row["Block Sizes"])
    for b in rules.domains["block_size"]:
        try:
            sel = solve(w.replace(block_size=b))
        except (InvalidBackendError, NoValidBackendError, ConfigError):
            wrong.append(f"Block Sizes: block_size={b} changed the selection")
            continue
        served = sel.startup_error is None or not sel.startup_error.startswith("No common block size")
        if served != (blocks(b) or sel.preferred_block_size != b):
            wrong.append(f"Block Sizes: block_size={b} -> start-up {'serves' if served else 'fails'}, the doc says "
                         f"{row['Block Sizes']!r}")
    ccs = _cc_cell(row["Compute Cap."])
    for cc in GENERATIONS:  # the cell is the union over the version switch (e.g. NONE: FA3 forced on 8.x, FA4 on 12.x)
        got = any(_valid(w.replace(compute_capability=cc, flash_attn_version=fav), variant)
                  for fav in (w.flash_attn_version, None, 2, 3, 4))
        if got != ccs(cc):
            wrong.append(f"Compute Cap.: {cc} -> solve says {'valid' if got else 'invalid'}, the doc says "
                         f"{row['Compute Cap.']!r}")
    check("Sink", {"has_sink": True}, row["Sink"] == "✅")
    check("MM Prefix", {"use_mm_prefix": True}, row["MM Prefix"] == "✅")
    if mla:
        check("Sparse", {"use_sparse": not sparse}, False)
    assert not wrong, f"{name} ({variant}) witness {w!r}:\n  " + "\n  ".join(wrong)


@pytest.mark.parametrize("v", [pytest.param(v, marks=pytest.mark.vllm(v)) for v in vllm_versions()])
def test_every_cuda_backend_has_a_row(v):
    named = {r["Backend"].strip("`") for _, r in (RELEASE_ROWS.get(v) or _cuda_rows(v))}
    rules = default_rules()
    decode = {n for n, b in rules.backends.items() if "cuda" in b.platforms and b.role == "decode"}
    assert decode <= named, f"backends missing from the generated tables: {sorted(decode - named)}"
