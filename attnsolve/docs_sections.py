"""The sections written as lists, not capability tables: CUDA priority lists per GPU generation,
the conditions the tables cannot show, derived facts, and the ROCm and CPU decision lists.

Why a module: these sections print the rules' checks and cases as prose lines (vLLM's own reasons),
where the tables print capabilities.
"""

from __future__ import annotations

from typing import Any

from .docs_backends import _cc_int, _sorted_variants
from .docs_cells import kv_cell, lit_text, reason_text
from .render import md_table
from .rules.model import Capabilities, Check, PriorityList, RuleSet


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
                + ("The layer gets no prefill backend: its decode backend's top-k MQA path runs every token."
                   if pl.no_prefill else
                   "Candidates are validated like CUDA's." if pl.validate else
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
            warned = c.warning if isinstance(c.warning, (tuple, list)) else (c.warning,) if c.warning else ()
            out.append(f"- {cond} \u2192 `{_val(c.value)}`"
                       + (" (warns: " + ", then ".join(f"\u201c{w}\u201d" for w in warned) + ")" if warned else ""))
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
        out.append(f"- `{b.name}`" + (" (built by the model code: no request names it, never in automatic selection)"
                                       if b.model_built else " (selected only when requested: never in automatic selection)"
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
