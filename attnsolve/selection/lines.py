"""What vLLM logs and rewrites once its selector has chosen a backend, in vLLM's order: the precluded-block
warning, after-selection rewrites, notes, the list's log and warning lines, the fallback / manual / selected
(or override) lines, the MLA prefill registry's line, the derived facts' lines the chosen backend reads, and the backend's
own warnings."""

from __future__ import annotations

from typing import Any

from ..solver.compiled import CompiledRules
from ..solver.semantics import AUTO, Plan
from ..rules.loader import SKIP_REASON
from ..rules.model import RuleSet
from .blocks import block_reason
from .lists import candidate_reasons
from .messages import FactsWith, render_message
from .per_rules import per_rules
from .result import Rejection

_AFTER: dict[int, tuple[RuleSet, dict[int, tuple[Any, ...]]]] = {}


def after_rewrites(rules: RuleSet, plist: Any) -> tuple[Any, ...]:
    """The list's rewrites at `stage = "after_selection"`, in order (sorted out once per rule set: most of a
    list's rewrites run before selection)."""
    per = per_rules(_AFTER, rules, lambda r: {id(pl): tuple(rw for rw in pl.rewrites if rw.stage == "after_selection")
                                             for pl in r.lists})
    got = per.get(id(plist))
    return got if got is not None else tuple(rw for rw in plist.rewrites if rw.stage == "after_selection")


def after_selection(comp: CompiledRules, p: Plan, idx: int, rejected: tuple[Rejection, ...], role: str,
                    facts: dict[str, Any], warnings: list[str], changes: list[tuple[str, Any]],
                    logs: list[str]) -> None:
    """Append the lines and config changes that follow choosing `p.candidates[idx]` to `warnings`,
    `changes` and `logs` (which hold those of the steps before, in order)."""
    rules = comp.rules
    chosen = p.candidates[idx]
    backend = rules.backends[chosen.backend]
    plist = p.plist
    if plist.precluded_warning and p.mode == AUTO and facts.get("block_size") is not None:
        reason = block_reason(rules)
        precluded = [r.backend for r in rejected if r.reasons == (reason,)]
        if precluded:
            warnings.append(render_message(plist.precluded_warning, facts, precluded=", ".join(precluded),
                                           backend=chosen.backend))
    done = facts["__derived_warnings__"]
    t = done.t  # the truth of the rules' conditions on `facts` (comp.holds)
    # the facts after selection, as a view: only lines (copied when one renders) and conditions read them
    after = FactsWith(facts, "backend", chosen.backend)
    rewrites = after_rewrites(rules, plist)
    t_after = comp.with_value(t, "backend", chosen.backend) if rewrites or plist.notes else 0
    for rw in rewrites:
        if comp.holds(rw.when, t_after, after):
            for k, v in rw.set:
                changes.append((k, v))
            if rw.log:
                logs.append(render_message(rw.log, after))
            break
    i = comp.first_holding(plist.notes, t_after, after)
    while i >= 0:
        note = plist.notes[i]
        (warnings if note.level == "warning" else logs).append(render_message(note.log, after))
        i = comp.first_holding(plist.notes, t_after, after, i + 1)
    if plist.log:
        logs.append(render_message(plist.log, after))
    if plist.warning:
        warnings.append(render_message(plist.warning, after))
    if plist.fallback_log and idx > 0 and rejected and rejected[0].backend == p.candidates[0].backend:
        logs.append(render_message(plist.fallback_log, after, reason_tuple=repr(tuple(rejected[0].reasons))))
    if role == "mla_prefill" and plist.mla_prefill is not None:
        pass  # the prefill registry logs its own line (chosen_log), not the decode selector's
    elif p.mode != AUTO and plist.manual_log:
        logs.append(render_message(plist.manual_log, after))
    elif p.mode == AUTO and plist.selected_log and plist.validate:
        sat = facts["__sat__"]
        fits = [(c, m & sat == m) for c, m in zip(p.candidates, comp.plan_for(facts)[1])]
        valid = [c.backend for c, ok in fits if ok]
        # every list entry is validated: with some invalid, vLLM logs which and says it overrides them
        invalid = [c.backend for c, ok in fits if not ok and SKIP_REASON not in candidate_reasons(c, facts, None)]
        if invalid and plist.override_log:
            logs.append(render_message(plist.override_log, after, rejected=", ".join(invalid), valid_list=repr(valid)))
        else:
            logs.append(render_message(plist.selected_log, after, valid_list=repr(valid)))
    if role == "mla_prefill" and plist.mla_prefill is not None and plist.mla_prefill.chosen_log:
        logs.append(render_message(plist.mla_prefill.chosen_log, after, backend=backend.display_name,
                                   get_name=backend.get_name or backend.display_name))
    logging = done.logging
    if logging:  # vLLM logs a derived fact's lines when it computes that fact
        evaluated = comp.derived_read_by(backend)
        pending = [n for n in logging if n not in evaluated]
        if pending and rules.settings.get("derived_warnings") == "validated":  # vLLM validates every list entry
            wanted = frozenset(pending)
            sat = facts["__sat__"]
            others = comp.evaluated_by_others(p, chosen.backend, facts, t, sat, wanted)
            if others is not None:
                evaluated = evaluated | others
            else:  # a plan built for this call (a request the compiled rules have no plan for)
                evaluated = set(evaluated)
                for c in p.candidates:
                    if c.validated and c.backend != chosen.backend:
                        evaluated |= comp.evaluated_derived(c, facts, t, sat, wanted)
                        if evaluated.issuperset(pending):
                            break
        for name in logging:
            if name in evaluated:
                warnings[:0] = [w for w in done.lines(name, facts) if w not in warnings]
    if p.plist.warn_unvalidated and not chosen.validated:
        for r in backend.reasons(facts):
            warnings.append(f"{chosen.backend}: {r} (vLLM's {facts['platform']} path does not validate; "
                            "the kernel may fail at runtime)")
    i = comp.first_holding(backend.warnings, t, facts)
    while i >= 0:
        warnings.append(f"{chosen.backend}: {backend.warnings[i][0]}")
        i = comp.first_holding(backend.warnings, t, facts, i + 1)
