"""The MLA prefill table: which --attention-config switches turn each prefill backend on or off.

Why a module: prefill backends are picked at runtime from switches, not validated like decode
backends, so their table has its own columns (Enable, Disable, Notes).
"""

from __future__ import annotations

from .docs_backends import _sorted_variants
from .docs_cells import cc_pred_text, lit_text, reason_text
from .rules.model import Backend, PriorityList, RuleSet

PREFILL_HEADERS = ["Backend", "Description", "Compute Cap.", "Enable", "Disable", "Notes"]
# vLLM --attention-config switches (presentation: how a prefill backend is turned on or off)
_SWITCHES = ("use_trtllm_ragged_deepseek_prefill", "disable_flashinfer_prefill", "use_cudnn_prefill")


def _switch_cells(rules: RuleSet, b: Backend) -> tuple[str, str, list[str]]:
    """Enable / Disable / Notes cells; a switch at the release's own default (vLLM 0.18.0 turned TRT-LLM ragged
    prefill off by default, 0.18.1 on again) is "Default", else the flag that turns it so."""
    from .config import Config
    defaults = {f: (rules.fields[f].default if f in rules.fields else
                    getattr(Config.__dataclass_fields__[f], "default")) for f in _SWITCHES}
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
    if len(enable) > 1 and "Default" in enable:  # the switches away from their defaults are what enables it
        enable.remove("Default")
    return ", ".join(enable) or "Default fallback", ", ".join(disable) or "Use other backends", notes


def prefill_rows(rules: RuleSet) -> list[list[str]]:
    pl = next((p for p in rules.lists if p.platform == "cuda" and not p.no_prefill and _prefill_role(p)), None)
    names = [e.backend for e in pl.entries] if pl else sorted(
        b.name for b in rules.backends.values() if b.role == "mla_prefill")
    rows = []
    for name in names:
        b = rules.backends[name]
        ccs = [c for c in b.checks if c.require.field == "compute_capability"]
        cc = cc_pred_text(ccs[0].require.pred) if ccs else "Any"
        enable, disable, notes = _switch_cells(rules, b)
        variants = ", ".join(v.name for v in _sorted_variants(rules, b))
        if variants:
            notes.append(f"variants {variants} by {b.variant_field}")
        rows.append([f"`{name}`", b.summary, cc, enable, disable, "; ".join(notes)])
    return rows


def no_prefill_lines(rules: RuleSet) -> list[str]:
    """The MLA layer around prefill selection, per platform: its decode backend first (a failure there is the
    layer's), the layers that get no prefill backend (a `skips` entry of the platform's `mla_prefill` step, or a
    `no_prefill` list) and the failed prefill selections a layer swallows (`fallbacks`)."""
    out = []
    seen: set[str] = set()
    for p in rules.lists:
        step = p.mla_prefill
        if step is not None and p.platform not in seen and (step.skips or step.fallbacks or _prefill_role(p)):
            seen.add(p.platform)
            requests = f" Prefill requests come from `{step.request_field}`." if step.request_field else ""
            out.append(f"- {p.platform}: the layer selects its decode backend first; where that fails, the layer "
                       f"fails (no prefill answer).{requests}")
            for text, when in step.skips:
                cond = " and ".join(lit_text(lit) for lit in when) or "every layer"
                said = f"; vLLM logs \u201c{text}\u201d" if text else "; vLLM logs nothing."
                out.append(f"  - {cond} \u2014 no prefill backend: the decode backend's top-k MQA path runs every "
                           f"token{said}")
            for text, when in step.fallbacks:
                cond = " and ".join(lit_text(lit) for lit in when) or "every layer"
                out.append(f"  - {cond} \u2014 a failed prefill selection leaves no prefill backend (the top-k MQA "
                           f"path) instead of failing; vLLM logs \u201c{text}\u201d")
        if p.no_prefill:
            cond = " and ".join(lit_text(lit) for lit in p.when if lit.field != "role")
            out.append(f"- {p.platform}: {cond} \u2014 no prefill backend: the decode backend's top-k MQA path runs "
                       f"every token (list \u201c{p.name}\u201d).")
    return ["", "The MLA layer and its prefill backend:", "", *out] if out else []


def _prefill_role(p: PriorityList) -> bool:
    """Whether priority list `p` answers the MLA prefill question."""
    return any(lit.field == "role" and lit.pred.eq == "mla_prefill" for lit in p.when)
