"""docs/attention_backends.md generated from the rules alone (`attnsolve docs`, `--check`).

Same sections and columns as vLLM's generated document (standard backends, MLA prefill, MLA
decode, CUDA priority lists per GPU generation, legend), but every cell is computed from the
checks the solver runs, not parsed from declarations; plus what vLLM's generator cannot show:
combination checks, derived facts (FA version, TRT-LLM), the ROCm decision tree and the CPU path.
Output is deterministic: sorted names, rule order for lists, no dates.
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Any, Iterable, Mapping

from .render import md_table
from .rules import default_rules
from .rules.model import Backend, Capabilities, Check, Literal, Pred, PriorityList, RuleSet, format_cc

YES, NO = "\u2705", "\u274c"
_DTYPE_SHORT = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}
_ATTN_TYPE = {"decoder": "Decoder", "encoder": "Encoder", "encoder_only": "Encoder Only",
              "encoder_decoder": "Enc-Dec"}
_VARIANT_SHOW = {"NATIVE": "Native"}
_FOOTNOTE_MARKS = ("\u2020", "*", "\u2021", "\u00a7")  # assigned to variant fields in sorted order
STANDARD_HEADERS = ["Backend", "Version", "Dtypes", "KV Dtypes", "Block Sizes", "Head Sizes", "Sink", "MM Prefix",
                    "DCP", "Attention Types", "Compute Cap."]
MLA_HEADERS = ["Backend", "Dtypes", "KV Dtypes", "Block Sizes", "Head Sizes", "Sink", "Sparse", "MM Prefix", "DCP",
               "Attention Types", "Compute Cap."]
PREFILL_HEADERS = ["Backend", "Description", "Compute Cap.", "Enable", "Disable", "Notes"]
# vLLM --attention-config switches (presentation: how a prefill backend is turned on or off)
_SWITCHES = ("use_trtllm_ragged_deepseek_prefill", "disable_flashinfer_prefill", "use_cudnn_prefill")
DEFAULT_PATH = "docs/attention_backends.md"


# ---------------------------------------------------------------------------------------------
# Classification and priority positions


def kind_of(b: Backend) -> str:
    if b.role == "mla_prefill":
        return "MLA prefill"
    return "MLA decode" if b.caps.mla else "standard"


def _cc_int(text: str) -> int:
    a, _, b = text.partition(".")
    return int(a) * 10 + int(b or 0)


def _list_for(rules: RuleSet, platform: str, facts: Mapping[str, Any]) -> PriorityList | None:
    for pl in rules.lists:
        if pl.platform == platform and pl.applies(facts):
            return pl
    return None


def _base_facts(b: Backend, platform: str, cc: int | None) -> dict[str, Any]:
    return {"platform": platform, "role": b.role, "use_mla": bool(b.caps.mla) or b.role == "mla_prefill",
            "use_sparse": bool(b.caps.sparse), "compute_capability": cc, "num_heads": None}


def _ranges(rules: RuleSet, ccs: list[str]) -> str:
    """Consecutive generations of `rules` (the release the text is for) as ranges, in table order:
    ['7.5','8.0','9.0'] -> 'SM 7.5-9.0'."""
    order = list(rules.generations)
    groups: list[list[str]] = []
    for cc in ccs:
        if groups and order.index(cc) == order.index(groups[-1][-1]) + 1:
            groups[-1].append(cc)
        else:
            groups.append([cc])
    return "SM " + ", ".join(g[0] if len(g) == 1 else f"{g[0]}-{g[-1]}" for g in groups)


def priority_positions(rules: RuleSet, b: Backend) -> dict[str, dict[str, int]]:
    """platform -> {generation or '*': 1-based position in the list automatic selection walks}."""
    out: dict[str, dict[str, int]] = {}
    for platform in b.platforms:
        pos: dict[str, int] = {}
        if platform != "cuda":  # one decision list per role and model kind: the first one naming it
            for pl in rules.lists_for(platform):
                names = [e.backend for e in pl.entries if not rules.backends[e.backend].explicit_only]
                if b.name in names:
                    pos["*"] = names.index(b.name) + 1
                    break
            if pos:
                out[platform] = pos
            continue
        for key in rules.generations:
            facts = _base_facts(b, platform, _cc_int(key))
            pl = _list_for(rules, platform, facts)
            if pl is None:
                continue
            names = [e.backend for e in pl.entries if not rules.backends[e.backend].explicit_only]
            if b.name in names:
                pos[key] = names.index(b.name) + 1
        if pos:
            out[platform] = pos
    return out


def priority_text(rules: RuleSet, b: Backend) -> str:
    if b.explicit_only:
        return "explicit only"
    parts = []
    positions = priority_positions(rules, b)
    on_request = [f"{platform} on request only" for platform in b.platforms
                  if platform not in positions and any(e.backend == b.name for pl in rules.lists_for(platform)
                                                       for e in pl.manual_accept)]
    for platform, pos in positions.items():
        if platform != "cuda":
            parts.append(f"{platform} #{pos['*']}")
            continue
        by_pos: dict[int, list[str]] = {}
        for cc, p in pos.items():
            by_pos.setdefault(p, []).append(cc)
        parts.append("cuda " + ", ".join(f"#{p} {_ranges(rules, ccs)}" for p, ccs in sorted(by_pos.items())))
    parts += on_request
    return "; ".join(parts) if parts else "not in a priority list"


def backend_rows(platform: str | None = None, rules: RuleSet | None = None) -> list[dict[str, Any]]:
    """One JSON-ready row per backend for `attnsolve backends` (kind order, then name)."""
    rules = rules or default_rules()
    kinds = ["standard", "MLA decode", "MLA prefill"]
    rows = []
    for b in sorted(rules.backends.values(), key=lambda b: (kinds.index(kind_of(b)), b.name)):
        if platform is not None and platform not in b.platforms:
            continue
        rows.append({"name": b.name, "platforms": list(b.platforms), "role": b.role, "kind": kind_of(b),
                     "explicit_only": b.explicit_only, "priority": priority_positions(rules, b),
                     "priority_text": priority_text(rules, b), "summary": b.summary,
                     "variants": [v.name for v in _sorted_variants(rules, b)]})
    return rows


# ---------------------------------------------------------------------------------------------
# Cells


def _merge(base: Capabilities, over: Capabilities | None) -> Capabilities:
    if over is None:
        return base
    return base.merged(over)


def _sorted_variants(rules: RuleSet, b: Backend) -> list[Any]:
    d = rules.derived.get(b.variant_field or "")
    if d is None:
        return list(b.variants)
    return sorted(b.variants, key=lambda v: min(d.values.index(x) for x in v.values if x in d.values))


def dtypes_cell(caps: Capabilities, rules: RuleSet) -> str:
    if caps.dtypes is None:
        return "Any"
    order = list(rules.domains["dtype"])
    return ", ".join(_DTYPE_SHORT.get(d, d) for d in sorted(caps.dtypes, key=order.index))


def kv_cell(caps: Capabilities, rules: RuleSet) -> str:
    if caps.kv_cache_dtypes is None:
        return "Any"
    dom = list(rules.domains["kv_cache_dtype"])
    pred = Pred(in_=frozenset(k for k in caps.kv_cache_dtypes if not k.endswith("*")),
                prefixes=tuple(k[:-1] for k in caps.kv_cache_dtypes if k.endswith("*")))
    return ", ".join(f"`{k}`" for k in dom if pred(k))


def block_cell(caps: Capabilities, rules: RuleSet) -> str:
    dom = [b for b in rules.domains["block_size"] if isinstance(b, int)]
    exact = caps.get("exact_block_sizes")  # an exact list replaces the multiples (0.33's B12X: 64 or 128)
    if exact is not None:
        return ", ".join(str(b) for b in sorted(exact))
    if caps.kernel_block_sizes is None:
        return "Any"
    ok = [b for b in dom if any(b % k == 0 for k in caps.kernel_block_sizes)]
    if ok == dom:
        return "Any"
    m = min(caps.kernel_block_sizes)
    if ok == [b for b in dom if b % m == 0]:
        return f"%{m}"
    return ", ".join(str(b) for b in ok)


def head_cell(caps: Capabilities) -> str:
    p = caps.head_sizes
    if p is None:
        return "Any"
    if p.in_ is not None and p.min is None and p.max is None and p.multiple_of is None and not p.negate:
        return ", ".join(str(v) for v in sorted(p.in_))
    parts = []
    if p.multiple_of:
        parts.append(" or ".join(f"%{m}" for m in p.multiple_of))
    if p.min is not None:
        parts.append(f"\u2265{p.min}")
    if p.max is not None:
        parts.append(f"\u2264{p.max}")
    return ", ".join(parts) if parts else p.describe("head_size")


def flag_cell(value: bool | None) -> str:
    return YES if value else NO


def attn_cell(caps: Capabilities, rules: RuleSet) -> str:
    if caps.attn_types is None or set(caps.attn_types) >= set(rules.domains["attn_type"]):
        return "All"
    order = list(rules.domains["attn_type"])
    return ", ".join(_ATTN_TYPE.get(t, t) for t in sorted(caps.attn_types, key=order.index))


def cc_pred_text(p: Pred | None) -> str:
    if p is None:
        return "Any"
    if p.major_in is not None and p.min is None and p.max is None:
        majors = sorted(p.major_in)
        if len(majors) > 1 and majors == list(range(majors[0], majors[-1] + 1)):
            return f"{majors[0]}.x-{majors[-1]}.x"
        return ", ".join(f"{m}.x" for m in majors)
    if p.in_ is not None and p.min is None and p.max is None and p.major_in is None and not p.negate:
        return ", ".join(format_cc(c) for c in sorted(p.in_))
    if p.min is not None and p.max is not None:
        return f"{format_cc(p.min)}-{format_cc(p.max)}"
    if p.min is not None:
        return f"\u2265{format_cc(p.min)}"
    if p.max is not None:
        return f"\u2264{format_cc(p.max)}"
    return p.describe("compute_capability")


def _cc_candidates(rules: RuleSet) -> list[int]:
    from .solver.domains import value_classes
    vals = {c.representative for c in value_classes(rules, "compute_capability") if c.representative is not None}
    for c in value_classes(rules, "compute_capability"):
        vals.update(x for x in c.examples if isinstance(x, int))
    vals.update(_cc_int(g) for g in rules.generations)
    return sorted(vals)


def _chain(rules: RuleSet, name: str) -> list[str]:
    """`name` and the derived facts it reads, directly or through others, in the rules' evaluation order."""
    need = {name}
    for d in reversed(list(rules.derived)):
        if d in need:
            need.update(f for f in rules.derived[d].inputs if f in rules.derived)
    return [d for d in rules.derived if d in need]


@functools.lru_cache(maxsize=512)
def _reachable_values(rules: RuleSet, name: str, platform: str, cc: int,
                      also: tuple[str, ...] = ()) -> frozenset[Any]:
    """The values derived fact `name` takes on `platform` at compute capability `cc` over every setting of
    the fields it reads, through the derived facts it reads (0.33's variant names derive from the FA
    version, which derives from the FA pick). The fields are set one at a time; a derived fact is evaluated
    as soon as its inputs are set, and a partial setting keeps only what a fact still to be evaluated reads,
    so settings that agree on that are searched once."""
    from .solver.domains import representatives
    chain = list(dict.fromkeys(d for n in (name, *also) for d in _chain(rules, n)))
    chain = [d for d in rules.derived if d in chain]
    reads = {d: set(rules.derived[d].inputs) for d in chain}
    fixed = {"platform": platform, "compute_capability": cc}
    roots = [f for f in dict.fromkeys(f for d in chain for f in reads[d]) if f not in rules.derived and f not in fixed]

    preds: dict[str, list[Pred]] = {}
    arithmetic: set[str] = set()
    for d in chain:
        for case in rules.derived[d].cases:
            for lit in case.when:
                preds.setdefault(lit.field, []).append(lit.pred)
        for _, _, parts in rules.derived[d].locals:
            arithmetic.update(parts)
        if rules.derived[d].compute is not None:
            arithmetic.update(rules.derived[d].compute[1])

    def choices(f: str) -> list[Any]:
        """The field's values, one per class that the chain's cases tell apart."""
        decl = rules.fields.get(f)
        if decl is not None and decl.platforms and platform not in decl.platforms:
            return [None]
        if f in arithmetic:
            return list(representatives(rules, f))
        seen: dict[tuple[bool, ...], Any] = {}
        for v in representatives(rules, f):
            seen.setdefault(tuple(p(v) for p in preds.get(f, ())), v)
        return list(seen.values())

    # per step (one root set): the derived facts that become computable, and what the states keep after it
    known, pending, steps = set(fixed), list(chain), []
    for root in [None, *roots]:
        if root is not None:
            known.add(root)
        ready = []
        for d in list(pending):
            if reads[d] <= known:
                ready.append(d)
                known.add(d)
                pending.remove(d)
        keep = (set().union(*(reads[d] for d in pending)) - set(fixed) if pending else set()) | (
            {name, *also} & known)
        steps.append((root, ready, keep))
    states: set[tuple[tuple[str, Any], ...]] = {()}
    for root, ready, keep in steps:
        grown = set()
        for st in states:
            for v in (choices(root) if root is not None else (None,)):
                facts = {**fixed, **dict(st)}
                if root is not None:
                    facts[root] = v
                for d in ready:
                    facts[d] = rules.derived[d].evaluate(facts)[0]
                grown.add(tuple(sorted((k, facts[k]) for k in keep if k in facts)))
        states = grown
    if also:  # (value, the others' values) tuples
        return frozenset((dict(st).get(name), *(dict(st).get(a) for a in also)) for st in states)
    return frozenset(dict(st).get(name) for st in states)


def _variant_ccs(rules: RuleSet, b: Backend, values: tuple[Any, ...], ccs: list[int] | None = None) -> list[int]:
    """CUDA compute capabilities at which some setting makes the derived variant field take `values` while the
    backend's unconditional checks on derived facts pass (TRITON_FLASH_ATTN's causal route needs FA 3 or 4,
    which its FA2 bucket never has)."""
    always = [c for c in b.checks if not c.when and c.require.field in rules.derived]
    also = tuple(dict.fromkeys(c.require.field for c in always))
    out = []
    for cc in _cc_candidates(rules) if ccs is None else ccs:
        reach = _reachable_values(rules, b.variant_field, "cuda", cc, also)  # type: ignore[arg-type]
        if not also:
            ok = not reach.isdisjoint(values)
        else:
            ok = any(t[0] in values and all(c.require.pred(t[1 + also.index(c.require.field)]) for c in always)
                     for t in reach)
        if ok:
            out.append(cc)
    return out


def cc_cell(b: Backend, caps: Capabilities, rules: RuleSet, variant: Any = None) -> str:
    if "cuda" not in b.platforms:
        return "N/A"
    base = caps.compute_capability
    allowed = [c for c in _cc_candidates(rules) if base is None or base(c)]
    own = _own_cc_checks(b, caps)
    if own:  # combination checks on the GPU alone that always apply to this backend (FLASHMLA dense)
        narrowed = [c for c in allowed if all(chk.require.pred(c) for chk in own)]
        if narrowed != allowed:
            majors = sorted({c // 10 for c in narrowed})
            return cc_pred_text(Pred(major_in=frozenset(majors))) if all(
                all(c in narrowed for c in allowed if c // 10 == m) for m in majors) else \
                ", ".join(format_cc(c) for c in narrowed)
    if variant is None or b.variant_field not in rules.derived:
        return cc_pred_text(base)
    reach = _variant_ccs(rules, b, variant.values, allowed)
    if not reach:  # a variant of another platform (FLASH_ATTN's XPU bucket)
        return "N/A"
    if reach == allowed:
        return cc_pred_text(base)
    majors = sorted({c // 10 for c in reach})
    if all(all(c in reach for c in allowed if c // 10 == m) for m in majors):
        return cc_pred_text(Pred(major_in=frozenset(majors)))
    return ", ".join(format_cc(c) for c in reach)


def _own_cc_checks(b: Backend, caps: Capabilities) -> list[Check]:
    """Combination checks on compute_capability whose conditions hold for every config this backend accepts."""
    natural = {"use_sparse": bool(caps.sparse), "use_mla": bool(caps.mla)}
    out = []
    for c in b.checks:
        if c.kind != "combination" or c.require.field != "compute_capability":
            continue
        if all(w.field in natural and w(natural) for w in c.when):
            out.append(c)
    return out


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


def lit_text(lit: Literal) -> str:
    return f"{lit.field} {lit.pred.describe(lit.field)}".replace("= true", "on").replace("= false", "off") \
        if lit.pred.eq in (True, False) else f"{lit.field} {lit.pred.describe(lit.field)}"


def _switch_cells(b: Backend) -> tuple[str, str, list[str]]:
    from .config import Config
    defaults = {f: getattr(Config.__dataclass_fields__[f], "default") for f in _SWITCHES}
    enable, disable, notes = [], [], []
    clauses: dict[int, int] = {}
    for c in b.checks:
        clauses[c.group] = clauses.get(c.group, 0) + 1
    shown: set[int] = set()
    for c in b.checks:
        f = c.require.field
        if f in _SWITCHES and c.require.pred.eq in (True, False):
            want = c.require.pred.eq
            on, off = f"`-ac.{f}={int(want)}`", f"`-ac.{f}={int(not want)}`"
            enable.append("Default" if defaults[f] == want else on)
            disable.append(off)
        elif c.group and clauses[c.group] > 1:  # a check over alternatives (any_of): vLLM's own words
            if c.group not in shown:
                shown.add(c.group)
                notes.append("refused with *" + reason_text(c.reason) + "*")
        elif f not in ("compute_capability",):
            cond = " and ".join(lit_text(w) for w in c.when)
            notes.append("needs " + lit_text(c.require) + (f" ({cond})" if cond else ""))
    enable = list(dict.fromkeys(enable))
    return ", ".join(enable) or "Default fallback", ", ".join(disable) or "Use other backends", notes


def prefill_rows(rules: RuleSet) -> list[list[str]]:
    pl = next((p for p in rules.lists if p.platform == "cuda" and any(
        lit.field == "role" and lit.pred.eq == "mla_prefill" for lit in p.when)), None)
    names = [e.backend for e in pl.entries] if pl else sorted(
        b.name for b in rules.backends.values() if b.role == "mla_prefill")
    rows = []
    for name in names:
        b = rules.backends[name]
        ccs = [c for c in b.checks if c.require.field == "compute_capability"]
        cc = cc_pred_text(ccs[0].require.pred) if ccs else "Any"
        enable, disable, notes = _switch_cells(b)
        variants = ", ".join(v.name for v in _sorted_variants(rules, b))
        if variants:
            notes.append(f"variants {variants} by {b.variant_field}")
        rows.append([f"`{name}`", b.summary, cc, enable, disable, "; ".join(notes)])
    return rows


# ---------------------------------------------------------------------------------------------
# Sections


def reason_text(reason: str) -> str:
    """A reason template for prose: placeholders shown as <field>, outer spaces trimmed."""
    import re
    return re.sub(r"\{(\w+)(\|[^}]*)?\}", r"<\1>", reason.strip())


def _check_line(c: Check) -> str:
    cond = " and ".join(lit_text(w) for w in c.when)
    req = lit_text(c.require)
    return f"*{reason_text(c.reason)}*: " + (f"when {cond}, needs {req}" if cond else f"needs {req}")


def _priority_section(rules: RuleSet, mla: bool) -> list[str]:
    out: list[str] = []
    for pl in rules.lists:
        if pl.platform != "cuda":
            continue
        role = next((lit.pred.eq for lit in pl.when if lit.field == "role"), None)
        use_mla = next((lit.pred.eq for lit in pl.when if lit.field == "use_mla"), None)
        if role != "decode" or use_mla is not mla:
            continue
        cc_lits = [lit for lit in pl.when if lit.field == "compute_capability"]
        extra = [lit for lit in pl.when if lit.field not in ("role", "use_mla", "compute_capability")]
        gens = [g for g in rules.generations if all(lit.pred(_cc_int(g)) for lit in cc_lits)]
        # a generation already claimed by an earlier unconditional list is not this list's
        claimed = _claimed(rules, pl, mla)
        gens = [g for g in gens if g not in claimed]
        names = ", ".join(rules.generations[g] for g in gens) if gens else "no listed GPU generation"
        cond = (" when " + " and ".join(lit_text(lit) for lit in extra)) if extra else ""
        out += ["", f"**{names}**{cond} (list \u201c{pl.name}\u201d):", ""]
        entries = [e.backend for e in pl.entries if not rules.backends[e.backend].explicit_only]
        out += md_table([[i + 1, f"`{n}`"] for i, n in enumerate(entries)], ["Priority", "Backend"])
    return out


def _claimed(rules: RuleSet, target: PriorityList, mla: bool) -> set[str]:
    claimed: set[str] = set()
    for pl in rules.lists:
        if pl is target:
            break
        if pl.platform != "cuda":
            continue
        if next((lit.pred.eq for lit in pl.when if lit.field == "use_mla"), None) is not mla:
            continue
        if any(lit.field not in ("role", "use_mla", "compute_capability") for lit in pl.when):
            continue  # conditional on more than the GPU: does not claim whole generations
        cc_lits = [lit for lit in pl.when if lit.field == "compute_capability"]
        claimed.update(g for g in rules.generations if all(lit.pred(_cc_int(g)) for lit in cc_lits))
    return claimed


def _decision_lists(rules: RuleSet, platform: str) -> list[str]:
    out: list[str] = []
    for pl in rules.lists_for(platform):
        when = " and ".join(lit_text(lit) for lit in pl.when)
        out += ["", f"### {pl.name}", "", f"Used when {when}. "
                + ("Candidates are validated like CUDA's." if pl.validate else
                   "No `validate_configuration`: only the conditions below decide.")
                + (" Failing capability checks of the pick are reported as warnings." if pl.warn_unvalidated else ""),
                ""]
        for i, e in enumerate(pl.entries, 1):
            b = rules.backends[e.backend]
            out.append(f"{i}. `{e.backend}`" + ("" if e.guards else " (always, if reached)"))
            for c in e.guards:
                out.append(f"   - {_check_line(c)}")
            if b.explicit_only:
                out[-1] += " (explicit only)"
        if pl.manual == "ignore":
            text = pl.ignore_warning.replace("{backend}", "<NAME>") if pl.ignore_warning else ""
            out += ["", "A requested backend is ignored" + (f" (\u201c{text}\u201d)." if text else ".")]
        elif pl.manual == "table":
            acc = ", ".join(f"`{e.backend}`" for e in pl.manual_accept)
            out += ["", f"A requested backend is accepted without validation if it is one of {acc}"
                    + (", subject to:" if any(e.guards for e in pl.manual_accept) else ".")]
            for e in pl.manual_accept:
                for c in e.guards:
                    out.append(f"- `{e.backend}`: {_check_line(c)}")
            if pl.manual_other:
                out += ["", f"Any other requested backend fails with \u201c{pl.manual_other.strip().replace('{backend}', '<NAME>')}\u201d"]
    return out


def _derived_section(rules: RuleSet) -> list[str]:
    out: list[str] = []
    for name in sorted(rules.derived):
        d = rules.derived[name]
        out += ["", f"**`{name}`** \u2014 {d.doc}", ""]
        for c in d.cases:
            cond = " and ".join(lit_text(lit) for lit in c.when) or "otherwise"
            out.append(f"- {cond} \u2192 `{_val(c.value)}`" + (f" (warns: \u201c{c.warning}\u201d)" if c.warning else ""))
    return out


def _val(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _conditions_section(rules: RuleSet) -> list[str]:
    out: list[str] = []
    for b in sorted(rules.backends.values(), key=lambda b: b.name):
        own = [c for c in b.checks if c.kind == "combination"]
        if b.role == "mla_prefill":
            continue
        if not own and not b.explicit_only and not b.variants:
            continue
        out.append(f"- `{b.name}`" + (" (selected only when requested: never in automatic selection)"
                                       if b.explicit_only else ""))
        for c in own:
            out.append(f"  - {_check_line(c)}")
        for v in _sorted_variants(rules, b):
            diff = _variant_diff(b.caps, v.caps, rules)
            if diff:
                out.append(f"  - variant {v.name} ({b.variant_field} = {', '.join(_val(x) for x in v.values)}): {diff}")
    return out


def _variant_diff(base: Capabilities, over: Capabilities, rules: RuleSet) -> str:
    parts = []
    if over.kv_cache_dtypes is not None:
        parts.append("KV dtypes " + kv_cell(over, rules).replace("`", ""))
    for key in ("sink", "mm_prefix", "dcp", "sparse"):
        v = getattr(over, key)
        if v is not None and v != getattr(base, key):
            parts.append(f"{key} {'yes' if v else 'no'}")
    return "; ".join(parts)


_LEGEND = [
    ("Dtypes", "Supported model data types (fp16, bf16, fp32)"),
    ("KV Dtypes", "Supported KV cache data types (`auto`, `fp8`, `fp8_e4m3`, etc.)"),
    ("Block Sizes", "Supported KV cache block sizes among vLLM's 1, 8, 16, 32, 64, 128, 256 (%N means multiples of N)"),
    ("Head Sizes", "Supported attention head sizes (%N multiples of N; \u2265/\u2264 bounds)"),
    ("Sink", "Attention sink support (for StreamingLLM)"),
    ("Sparse", "Sparse attention support (MLA only)"),
    ("MM Prefix", "Multimodal prefix full attention support"),
    ("DCP", "Decode Context Parallelism support (`--decode-context-parallel-size`)"),
    ("Attention Types", "Supported attention patterns (Decoder, Encoder, Enc-Dec)"),
    ("Compute Cap.", "Required CUDA compute capability (N/A for non-CUDA backends, and for variants CUDA never selects)"),
]


def _newest() -> str | None:
    """The newest released set: its document is DEFAULT_PATH whatever $ATTNSOLVE_VLLM says, so a
    release's file name depends on the packaged sets only, never on the caller's environment."""
    from .rules.sets import versions
    released = versions(include_drafts=False) or versions()
    return released[-1] if released else None


def doc_path(version: str) -> str:
    """Where a release's document lives: the newest release's at DEFAULT_PATH, older ones beside it."""
    return DEFAULT_PATH if version == _newest() else f"docs/attention_backends-vllm-{version}.md"


def _vllm_flag(rules: RuleSet) -> str:
    return "" if not rules.vllm or rules.vllm == _newest() else f" --vllm {rules.vllm}"


def _read_from(rules: RuleSet) -> str:
    return f", read from {rules.read_from.split(':')[0]}" if rules.read_from else ""


def generate_doc(rules: RuleSet | None = None) -> str:
    """The whole document as text (deterministic)."""
    rules = rules or default_rules()
    marks = _marks(rules)
    L: list[str] = [
        "# Attention Backend Feature Support",
        "",
        f"This document is generated by `attnsolve docs{_vllm_flag(rules)}` from the rules in "
        f"`attnsolve/rules/vllm-{rules.vllm or '*'}/*.toml`",
        f"(vLLM {rules.vllm or 'custom'} selection semantics{_read_from(rules)}). Every cell comes from the checks the solver runs,",
        "so the tables show what selection actually accepts, including conditions that exist only",
        "in code in vLLM (see *Conditions the tables cannot show*).",
        "",
        "**Do not edit this file manually.** Regenerate it with:",
        "",
        "```bash",
        f"attnsolve docs{_vllm_flag(rules)}",
        "```",
        "",
        "CI runs `attnsolve docs --check`, which fails with a diff when this file and the rules disagree.",
        "",
        "## Setting the Attention Backend",
        "",
        "In vLLM: `vllm serve <model> --attention-backend FLASH_ATTN` (or `--attention-config.backend`).",
        "To see what a configuration gets without the hardware:",
        "",
        "```bash",
        "attnsolve explain --gpu H100 --model config.json --kv-cache-dtype fp8",
        "```",
        "",
        "## Backend Selection Behavior",
        "",
        "### Manual Selection",
        "",
        "A requested backend is **validated** against the configuration (CUDA) and never silently",
        "replaced: if it does not fit, vLLM raises `Selected backend <NAME> is not valid for this",
        "configuration. Reason: [...]`. Backend names are case-insensitive. ROCm and CPU handle",
        "requests their own way (see their sections below).",
        "",
        "### Automatic Selection",
        "",
        "When no backend is requested, vLLM walks the platform's priority list (below) and takes the",
        "**first backend with no reason against it**. If none fits: `No valid attention backend found`,",
        "followed by each backend's reasons. A concrete `--block-size` constrains every candidate; an",
        "unset block size (vLLM's own start-up path) constrains none.",
        "",
        "## Backend Priority (CUDA)",
        "",
        "When no backend is explicitly selected, vLLM chooses the first compatible backend from these",
        "priority-ordered lists; the first list whose condition holds is used.",
        "",
        "Priority is **1 = highest** (tried first).",
        "",
        "### Standard Attention (MHA, MQA, GQA)",
        *_priority_section(rules, mla=False),
        "",
        "### MLA Attention (DeepSeek-style)",
        *_priority_section(rules, mla=True),
        "",
        "> **Note:** ROCm and CPU platforms have their own selection logic: see *ROCm selection* and",
        "> *CPU selection* below.",
        "",
        "## Legend",
        "",
        *md_table([[f"**{k}**", v] for k, v in _LEGEND], ["Column", "Description"]),
        "",
        f"**Symbols:** {YES} = Supported, {NO} = Not supported",
        "",
        "## Standard Attention (MHA, MQA, GQA) Backends",
        "",
        *md_table(standard_rows(rules), STANDARD_HEADERS),
        "",
    ]
    for f, mark in sorted(marks.items(), key=lambda kv: kv[1]):
        d = rules.derived.get(f)
        users = sorted(b.name for b in rules.backends.values() if b.variant_field == f and kind_of(b) == "standard")
        shown = "\\" + mark if mark == "*" else mark
        L.append(f"> **{shown}** {', '.join(users)}: variant by `{f}`. {d.doc if d else ''}".rstrip())
        L.append(">")
    if L[-1] == ">":
        L.pop()
    L += [
        "",
        "## MLA (Multi-head Latent Attention) Backends",
        "",
        "MLA uses separate backends for prefill and decode phases (`attnsolve explain --role mla_prefill`).",
        "",
        "### Prefill Backends",
        "",
        "The prefill backend is selected at runtime from the switches below; the first row whose",
        "conditions hold is used.",
        "",
        *md_table(prefill_rows(rules), PREFILL_HEADERS),
        "",
        "### Decode Backends",
        "",
        *md_table(mla_rows(rules), MLA_HEADERS),
        "",
        "## Conditions the tables cannot show",
        "",
        "Checks vLLM writes as code (combination checks), per-variant capabilities and explicit-only",
        "backends. Each reason is vLLM's own text.",
        "",
        *_conditions_section(rules),
        "",
        "### Derived facts",
        "",
        "Facts vLLM computes from others before validating; the first matching case wins.",
        *_derived_section(rules),
        "",
        "## ROCm selection",
        "",
        "ROCm uses a decision tree instead of validation (vLLM v0.16/v0.17); reasons are its own texts.",
        *_decision_lists(rules, "rocm"),
        "",
        "## CPU selection",
        *_decision_lists(rules, "cpu"),
        "",
    ]
    return "\n".join(L).replace("\n\n\n", "\n\n")


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
