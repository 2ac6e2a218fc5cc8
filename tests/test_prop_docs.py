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

import functools
import itertools
import re
from typing import Any, Callable

import pytest

from attnsolve import Config, ConfigError, vllm_versions, InvalidBackendError, NoValidBackendError, solve
from attnsolve.rules import default_rules, default_version

docs = pytest.importorskip("attnsolve.docs")
from attnsolve.rules import rules_for  # noqa: E402
import oracle  # noqa: E402
import sizes  # noqa: E402

# Per release (pytest.param(..., marks=pytest.mark.vllm(v))): every packaged release's tables. A row names a
# variant: on 0.17 the one solve() reports; where the rules show one fact and select capabilities by another
# (0.33's FLASH_ATTN family: `variant_shown_by` = the FA version that runs, `variant_field` = the capability
# bucket the row describes), the row's variant is the bucket, read from the oracle's facts.
CHECKED = tuple(vllm_versions())

STANDARD = "Standard Attention (MHA, MQA, GQA) Backends"
MLA = "Decode Backends"
DTYPE_SHORT = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
GENERATIONS = [(7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (10, 3), (11, 0), (12, 0), (12, 1)]
HEADS = [16, 32, 40, 64, 80, 96, 112, 128, 160, 192, 256, 264, 512, 576]


def _rows(section: str, version: str) -> list[dict[str, str]]:
    cells = list(docs.iter_cells(docs.generate_doc(rules_for(version)), section))
    header = cells[0]
    rows = [dict(zip(header, r)) for r in cells[2:]]
    for row in rows:  # the MLA table names a variant in the Backend cell: "`NAME` (VARIANT)"
        name, _, variant = row["Backend"].partition(" (")
        if variant:
            row["Backend"], row["Version"] = name, variant.rstrip(")")
    return rows


def _variant_name(version: str) -> str | None:
    text = version.rstrip("*†‡§¶").strip()
    return {"Native": "NATIVE"}.get(text, text or None)


def _bucket(config: Config, name: str) -> str | None:
    """The variant a row of backend `name` describes, for `config`: the bucket its `variant_field` selects (from
    the oracle's facts: its own reading of the rules, after the platform's steps before selection)."""
    rules = default_rules()
    b = rules.backends[name]
    ans = oracle.select(rules, config)
    facts = ans.facts or oracle.facts_of(rules, config)
    return b.variant_for(facts.get(b.variant_field))


def _valid(config: Config, variant: str | None) -> bool:
    try:
        sel = solve(config)
    except (InvalidBackendError, NoValidBackendError, ConfigError):
        return False
    if sel.backend != config.backend or variant is None:
        return sel.backend == config.backend
    if default_rules().backends[sel.backend].variant_shown_by:
        return _bucket(config, sel.backend) == variant
    return sel.variant == variant


def _moves(config: Config, name: str, variant: str | None) -> bool:
    """True when `config` lies outside the row's bucket: the row's cells say nothing about it (0.33's FA4
    bucket becomes FA4_P128 at head size 256 on SM 10.x: that row describes it)."""
    b = default_rules().backends[name]
    return variant is not None and bool(b.variant_shown_by) and _bucket(config, name) != variant


# Witness candidates: 0.17's switches first (its rows find their witness there, as before), then the fields
# 0.33's rows need, read from the row itself (its first listed head sizes and KV dtypes: a TURBOQUANT row
# needs a turboquant KV cache, STEP5_DSA head size 192), and FA version 4, SM 11.x, DCP and mm_prefix for
# 0.33's FA buckets.
_FIRST = dict(cc=[(9, 0), (10, 0), (8, 0), (12, 0), (7, 5)], fav=[2, 3, None], trt=[False, None],
              dtype=["bfloat16", "float16"], nope=[None, 128], topk=[None, 2048], head=[None], kv=[None],
              dcp=[None], mm=[None])
_MORE = dict(cc=[(9, 0), (10, 0), (11, 0), (8, 0), (12, 0)], fav=[None, 2, 4], trt=[None],
             dtype=["bfloat16"], nope=[None], topk=[None, 2048], head=[None], kv=[None],
             dcp=[None, True], mm=[None, True])


def _row_heads(row: dict[str, str]) -> list[int]:
    ok = _pred_cell(row["Head Sizes"])
    return [h for h in (128, 256, 512, *HEADS) if ok(h)][:3]


def _row_kvs(row: dict[str, str]) -> list[str]:
    listed = _list_cell(row["KV Dtypes"], tuple(default_rules().domains["kv_cache_dtype"]), "kv")
    return [k for k in ("fp8", *sorted(listed)) if k in listed and k != "auto"][:2]


def _candidates(backend: str, mla: bool, sparse: bool, row: dict[str, str]):
    more = {**_MORE, "head": [None, *_row_heads(row)], "kv": [None, *_row_kvs(row)],
            "nope": [None, 128] if mla else [None], "topk": [None, 2048] if sparse else [None]}
    for grid in (_FIRST, more):
        for cc, fav, trt, dtype, nope, topk, head, kv, dcp, mm in itertools.product(*grid.values()):
            extra = {k: v for k, v in (("kv_cache_dtype", kv), ("use_dcp", dcp), ("use_mm_prefix", mm)) if v}
            try:
                yield Config(platform="cuda", compute_capability=cc, dtype=dtype, backend=backend, use_mla=mla,
                             use_sparse=sparse, head_size=head or (576 if mla else 128), flash_attn_version=fav,
                             use_trtllm_attention=trt, qk_nope_head_dim=nope, index_topk=topk, **extra)
            except ConfigError:
                continue


def _witness(backend: str, variant: str | None, mla: bool, sparse: bool, row: dict[str, str]) -> Config | None:
    seen: set[Config] = set()
    for c in _candidates(backend, mla, sparse, row):
        if c in seen:
            continue
        seen.add(c)
        if _valid(c, variant):
            return c
    return None


def _documented_combination(config: Config, name: str) -> bool:
    """True when what makes `name` invalid on `config` is only combination checks (vLLM's supports_combination
    and the like: conditions across fields), each listed under the backend in the doc's conditions section.
    A cell shows the capability; a combination check narrows it there (0.33: mm_prefix needs FA4 to resolve
    for the head size; FLASHMLA_SPARSE's nvfp4 KV needs SM 10.x)."""
    rules = default_rules()
    b = rules.backends[name]
    ans = oracle.select(rules, config)
    facts = ans.facts or oracle.facts_of(rules, config)
    fired = [c for c in b.checks if oracle.check_fires(c, facts)]
    text = _doc(default_version())
    return bool(fired) and all(c.kind == "combination" and docs._check_line(c) in text for c in fired)


@functools.cache
def _doc(version: str) -> str:
    return docs.generate_doc(rules_for(version))


def _replaced(w: Config, compute_capability: Any, switches: list[dict[str, Any]]):
    for sw in switches:
        try:
            yield w.replace(compute_capability=compute_capability, **sw)
        except ConfigError:
            continue


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

# Rows whose cells the law finds wrong or cannot reach (release, backend, variant) -> why: strict xfails, so
# each is reported until fixed (docs/testing.md "Not yet every release").
# (release, backend, variant) -> why the row has no witness: strict xfails, so a fix turns them red.
_DIFFKV_P64 = ("0.34's FLASH_ATTN_DIFFKV fp8 check (V head 128) refuses every configuration of the SM 9.x head-512 "
               "fp8 page bucket, which only an fp8 KV cache reaches; the generator's variant reachability "
               "(docs_cc._variant_ccs) follows unconditional checks only, so the row says 9.x where N/A is true "
               "(following conditional checks there costs a minute per document)")
KNOWN: dict[tuple[str, str, str | None], str] = {
    ("0.34", "FLASH_ATTN_DIFFKV", "FA3_P64"): _DIFFKV_P64,
    ("0.34", "FLASH_ATTN_DIFFKV", "FA4_P64"): _DIFFKV_P64,
}
# Under ci, 0.33 runs every third row (its 64 rows took 13-41 s on the 2-core box, idle to loaded), the KNOWN ones
# and the dropped requests; the full sizes (tests/sizes.py) run every row. 0.17 runs every row.
_STEP = sizes.pick(3, 1)


def _sampled(v: str, i: int, row: dict[str, str]) -> bool:
    name = row["Backend"].strip("`")
    return v == "0.17" or i % _STEP == 0 or (v, name, _variant_name(
        row.get("Version", ""))) in KNOWN or name in _dropped(v)


def _dropped(v: str) -> set[str]:
    """Backends a request for which the platform drops before selection (0.33's CUTLASS_MSA, TRITON_MSA: a
    request_fallbacks case naming them): no request can make them valid; the law checks the drop."""
    rules = rules_for(v)
    out = set()
    for pl in rules.lists_for("cuda"):
        for _text, when, only, _level in pl.request_fallbacks:
            for lit in when:
                if lit.field == "backend" and not only and len(when) == 1:
                    out |= {b for b in rules.backends if lit.pred(b)}
    return out


def _param(v: str, section: str, row: dict[str, str]) -> Any:
    key = (v, row["Backend"].strip("`"), _variant_name(row.get("Version", "")))
    marks = [pytest.mark.vllm(v)]
    if key in KNOWN:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN[key]))
    return pytest.param(v, section, row, marks=marks, id=f"{v}-{key[1]}-{row.get('Version', '') or 'row'}")


ROWS = [_param(v, section, row) for v, rows in RELEASE_ROWS.items()
        for i, (section, row) in enumerate(rows) if _sampled(v, i, row)]


@pytest.mark.parametrize("v,section,row", ROWS)
def test_every_cell_agrees_with_solve(v, section, row):
    rules = default_rules()
    name = row["Backend"].strip("`")
    variant = _variant_name(row.get("Version", ""))
    mla = section == MLA
    # a standard-table backend may be sparse too (0.33's model-driven MINIMAX_M3_SPARSE, STEP5_DSA): the
    # table has no Sparse column there, so the witness asks what the backend declares
    sparse = row.get("Sparse", "❌") == "✅" or (not mla and bool(rules.backends[name].caps.sparse))
    if rules.backends[name].model_built:  # no registry name (0.22's V4_FLASHMLA_SPARSE): a request is refused
        with pytest.raises(ConfigError):
            Config(platform="cuda", compute_capability=(9, 0), dtype="bfloat16", backend=name)
        return
    if name in _dropped(v):  # the request never reaches selection: automatic selection answers instead
        c = Config(platform="cuda", compute_capability=(9, 0), dtype="bfloat16", backend=name)
        sel = solve(c)
        assert sel.backend != name and not sel.manual, sel
        return
    w = _witness(name, variant, mla, sparse, row)
    if row["Compute Cap."] == "N/A":  # a variant CUDA never selects (FLASH_ATTN's XPU bucket)
        assert w is None, f"{name} ({variant}) is valid on CUDA, the doc says N/A: {w!r}"
        return
    assert w is not None, f"no config found on which {name} ({variant}) is valid when requested"
    wrong: list[str] = []

    def check(column: str, changes: dict[str, Any], claimed: bool) -> None:
        try:
            c = w.replace(**changes)
        except ConfigError:
            return
        if _moves(c, name, variant):  # another row (bucket) describes that config
            return
        got = _valid(c, variant)
        if claimed and not got and _documented_combination(c, name):
            return
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
        if variant == "FA4" and h > 128 and not rules.backends[name].variant_shown_by:  # 0.17  # valid, but FA4 runs as FA2 above head 128 (fa_kernel_version)
            check("Head Sizes", {"head_size": h}, False) if not heads(h) else None
            if heads(h) and not _valid(w.replace(head_size=h), "FA2"):
                wrong.append(f"Head Sizes: {h} -> not valid as FA2")
            continue
        check("Head Sizes", {"head_size": h}, heads(h))
    # Block sizes are kernel block sizes: vLLM 0.17's CUDA selector drops the block size, and start-up
    # (the MLA hook may set its own) fails with "No common block size" when the kernels cannot serve it.
    blocks = _pred_cell(row["Block Sizes"])
    # 0.33's selector validates the kernel block size (an unlisted one makes the backend invalid).
    for b in rules.domains["block_size"]:
        try:
            sel = solve(w.replace(block_size=b))
        except (InvalidBackendError, NoValidBackendError, ConfigError):
            if blocks(b) and not _documented_combination(w.replace(block_size=b), name) or v == "0.17":
                wrong.append(f"Block Sizes: block_size={b} changed the selection")
            continue
        served = sel.startup_error is None or not sel.startup_error.startswith("No common block size")
        if served != (blocks(b) or sel.preferred_block_size != b):
            wrong.append(f"Block Sizes: block_size={b} -> start-up {'serves' if served else 'fails'}, the doc says "
                         f"{row['Block Sizes']!r}")
    ccs = _cc_cell(row["Compute Cap."])
    # The cell is the union over the kernel switches (e.g. NONE: FA3 forced on 8.x, FA4 on 12.x; 0.33's FlashInfer
    # NATIVE bucket on SM 10.x: TRT-LLM cubins absent), less what a documented combination check refuses there.
    switches = [dict(flash_attn_version=fav) for fav in (w.flash_attn_version, None, 2, 3, 4)]
    if "trtllm_available" in rules.fields:
        switches += [dict(trtllm_available=False), dict(use_trtllm_attention=False)]
    for cc in GENERATIONS:
        got = any(_valid(c, variant) for c in _replaced(w, compute_capability=cc, switches=switches))
        if not got and ccs(cc) and _documented_combination(w.replace(compute_capability=cc), name):
            continue
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
