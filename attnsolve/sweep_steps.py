"""The platform's steps around the priority lists (vLLM >= 0.18), as a sweep sees them.

Which platforms have such steps, which fields the steps read and change (a sweep enumerates those in one
unit) and the outcome they force on one combination; selection's own `before_selection` runs them.
"""

from __future__ import annotations

from typing import Any


def evaluated_force(sfields: tuple[str, ...], combo: tuple[Any, ...], facts_for: Any,
                    step_at: dict[tuple[Any, ...], tuple[int, dict[str, Any]]], run_steps: Any) -> int:
    """The forced outcome the steps give one combination of the fields they read."""
    facts = facts_for(sfields, combo)
    key = tuple(facts[f] for f in sfields)
    got = step_at.get(key)
    if got is None:
        got = step_at[key] = run_steps(dict(facts))
    return got[0]


def _platform_steps(rules: Any, platform: str) -> Any:
    """The platform-wide settings (every list of a platform carries them) when they hold a step around the
    lists, else None (as selection's own test: no step, straight to the lists)."""
    pl = next((pl for pl in rules.lists if pl.platform == platform), None)
    if pl is None:
        return None
    steps = (pl.request_errors or pl.rewrites or pl.request_fallbacks or pl.model_backend or pl.model_routes
             or pl.mla_prefill is not None or pl.compute_capability_from)
    return pl if steps else None


def _steps_before_lists(rules: Any, platform: str) -> Any:
    """`_platform_steps`, less a platform whose one step is an MLA prefill layer step reading no prefill request
    (0.16/0.17's): that step comes after the lists (the fold reads it from each prefill row's decode twin,
    `_PlanTable.layer`), so the sweep's steps unit has nothing to run for it."""
    ps = _platform_steps(rules, platform)
    if ps is None or ps.mla_prefill is None or ps.mla_prefill.request_field:
        return ps
    before = (ps.request_errors or ps.rewrites or ps.request_fallbacks or ps.model_backend or ps.model_routes
              or ps.compute_capability_from)
    return ps if before else None


def _refused_by_name_only(ps: Any) -> bool:
    """A platform whose only step before the lists refuses some requests by their name (vLLM 0.17). An MLA prefill
    layer step that reads no prefill request (0.16/0.17's) is no step before the lists: the fold reads it after
    them, from each prefill row's decode twin (`_PlanTable.layer`)."""
    return not (ps.rewrites or ps.request_fallbacks or ps.model_backend or ps.model_routes or ps.model_route_kv
                or (ps.mla_prefill is not None and ps.mla_prefill.request_field) or ps.compute_capability_from) \
        and all(lit.field == "backend" for _, when in ps.request_errors for lit in when)


def _step_fields(rules: Any, settings: list[Any]) -> tuple[set[str], set[str]]:
    """(fields the steps before selection read, fields they may change), derived facts expanded to their
    base fields. Everything read is enumerated in one unit so each of its rows knows the steps' outcome."""
    reads: set[str] = {"platform", "role", "backend"}
    writes: set[str] = {"backend"}
    for ps in settings:
        conds = [c for _, c in ps.request_errors]
        conds += [rw.when for rw in ps.rewrites if rw.stage == "before_selection"]
        conds += [c for _, c, only, _ in ps.request_fallbacks if not only]
        conds += [c.when for c in ps.model_backend] + [r.when for r in ps.model_routes]
        conds += [k.when for k in ps.model_route_kv]
        for c in conds:
            reads |= {lit.field for lit in c}
        for rw in ps.rewrites:
            if rw.stage == "before_selection":
                writes |= {k for k, _ in rw.set} | set(rw.unset)
        if ps.compute_capability_from:
            reads.add(ps.compute_capability_from)
            writes.add("compute_capability")
        if ps.mla_prefill is not None and ps.mla_prefill.request_field:
            reads.add(ps.mla_prefill.request_field)
    reads.discard("route_variant")  # the route's own variant, not a fact
    base: set[str] = set()
    todo = list(reads | writes)
    while todo:
        f = todo.pop()
        if f in base:
            continue
        base.add(f)
        d = rules.derived.get(f)
        if d is not None:
            todo.extend(d.inputs)
    derived = set(rules.derived)
    return base - derived, writes


def _prefill_list(pl: Any) -> bool:
    """A list only the MLA prefill role reaches."""
    return any(lit.field == "role" and lit.pred("mla_prefill") and not lit.pred("decode") for lit in pl.when)
