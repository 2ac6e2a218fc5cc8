"""A backend's place in selection: its kind, its position in each priority list, its variants in order.

Why a module: the tables, the prose sections and `attnsolve backends` (backend_rows) all classify,
rank and order backends this one way.
"""

from __future__ import annotations

from typing import Any, Mapping

from .rules import default_rules
from .rules.model import Backend, PriorityList, RuleSet


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
    if b.model_built:
        return "model-driven only (no request names it)"
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


def _sorted_variants(rules: RuleSet, b: Backend) -> list[Any]:
    d = rules.derived.get(b.variant_field or "")
    if d is None:
        return list(b.variants)
    # a variant none of whose values the fact can take sorts last (it is never shown as reached)
    return sorted(b.variants, key=lambda v: min((d.values.index(x) for x in v.values if x in d.values),
                                                default=len(d.values)))
