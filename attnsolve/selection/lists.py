"""One priority list walked for a config: the chosen candidate, each candidate's reasons, and the error
vLLM raises when none is valid (vLLM's wording first)."""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..errors import ConfigError, InvalidBackendError, NoValidBackendError
from ..rules.loader import SKIP_REASON
from ..rules.model import RENDERINGS, RuleSet
from ..solver.compiled import CompiledRules, Completion
from ..solver.facts import base_facts
from ..solver.semantics import AUTO, Candidate, Plan, reasons_of
from .messages import render_message
from .result import NOT_RUNNABLE


def evaluate(comp: CompiledRules, config: Config, role: str, available: frozenset[str] | None,
             base: dict[str, Any] | None = None, completed: tuple[dict[str, Any], Completion] | None = None):
    """Run selection; return (facts, plan, index of the chosen candidate or None, warnings).

    base: the config's facts after the platform's before-selection steps (default: the config's own);
    completed: those facts with their derived facts and Completion, when already computed (taken over).
    facts["__sat__"] holds the satisfied-clause bitset, so reasons are read off it, not recomputed."""
    if completed is not None:
        facts, done = completed
    else:
        facts = dict(base) if base is not None else base_facts(config, role)
        done = comp.complete(facts)
    facts["__derived_warnings__"] = done  # their log lines are shown only if the chosen backend reads them
    warnings: list[str] = []
    pl = done.plist
    if pl is None:
        raise ConfigError("role", role, "a role with a priority list on platform " + str(facts["platform"]))
    p, masks = comp.plan(pl, facts.get("backend"))
    sat = done.sat
    allowed = None if available is None else tuple(c.backend in available for c in p.candidates)
    idx = comp.first_valid(masks, sat, allowed)
    if p.warning:
        warnings.append(p.warning)
    facts["__sat__"] = sat  # read by candidate_reasons; never a rule field
    facts["__comp__"] = comp  # the release's compiled rules that computed `sat`
    return facts, p, idx, warnings


def candidate_reasons(cand: Candidate, facts: dict[str, Any], available: frozenset[str] | None) -> tuple[str, ...]:
    sat = facts.get("__sat__")
    reasons = reasons_of(cand, facts) if sat is None else facts["__comp__"].reasons(cand, facts, sat)
    if available is not None and cand.backend not in available:
        reasons = (*reasons, NOT_RUNNABLE)
    return reasons


def failure(rules: RuleSet, config: Config, facts: dict[str, Any], p: Plan,
            available: frozenset[str] | None) -> NoValidBackendError | InvalidBackendError:
    """The exception vLLM raises for this plan, with vLLM's wording first."""
    next(RENDERINGS)  # its text may name the config
    reasons = {c.backend: r for c in p.candidates
               if SKIP_REASON not in (r := candidate_reasons(c, facts, available))}
    seen_facts = dict(facts, **{f: None for f in p.plist.drops})  # what the selector prints
    prefill = p.plist.mla_prefill if facts.get("role") == "mla_prefill" else None
    if prefill is not None and (prefill.no_valid_message or prefill.invalid_message):
        # the MLA prefill registry: its own messages, backends under vLLM's prefill names
        shown_names = {c.backend: rules.backends[c.backend].display_name for c in p.candidates}
        named = {shown_names[b]: r for b, r in reasons.items()}
        if p.mode != AUTO and prefill.invalid_message:
            name = shown_names[p.candidates[0].backend]
            msg = render_message(prefill.invalid_message, seen_facts, backend=name, reason_list=repr(list(named[name])))
            return InvalidBackendError(msg, name, named)
        if p.mode == AUTO and prefill.no_valid_message:
            shown = ", ".join(f"{b}: [{', '.join(r)}]" for b, r in named.items() if r)
            return NoValidBackendError(render_message(prefill.no_valid_message, seen_facts, reasons="{" + shown + "}"), named)
    if facts.get("role") == "mla_prefill" and p.mode == AUTO and p.plist.mla_prefill_no_valid_message:
        # no prefill registry: what the platform raises when no prefill path can run (0.16 to 0.20 on ROCm:
        # MLACommonImpl.__init__'s RuntimeError without upstream flash_attn), not the decode selector's text
        shown = ", ".join(f"{b}: [{', '.join(r)}]" for b, r in reasons.items() if r)
        return NoValidBackendError(render_message(p.plist.mla_prefill_no_valid_message, seen_facts,
                                                  reasons="{" + shown + "}"), reasons)
    requested = facts.get("backend")
    if p.plist.list_invalid_message and requested is not None:
        # a decision-tree branch that validates the request's own class and raises its text (XPU's FLASH_ATTN_MLA)
        first = next(iter(reasons.values()), ())
        msg = render_message(p.plist.list_invalid_message, seen_facts, backend=requested, reason_list=repr(list(first)))
        return NoValidBackendError(msg, reasons)
    if p.mode != AUTO:
        name = p.candidates[0].backend
        if p.plist.invalid_message:
            msg = render_message(p.plist.invalid_message, seen_facts, backend=name,
                                 reason_list=repr(list(reasons[name])))
        elif p.plist.validate or p.plist.manual == "validate":
            msg = f"Selected backend {name} is not valid for this configuration. Reason: {list(reasons[name])}"
        else:
            msg = "; ".join(reasons[name])
        return InvalidBackendError(msg, name, reasons)
    if p.plist.no_valid_message:
        shown = ", ".join(f"{b}: [{', '.join(r)}]" for b, r in reasons.items() if r)
        hint = ""
        kv_backends = [b for b, r in reasons.items() if any("kv_cache_dtype" in x for x in r)]
        if p.plist.kv_cache_dtype_hint and kv_backends:  # ROCm: the KV dtypes the rejected backends declare
            declared = sorted({d for b in kv_backends for d in (rules.backends[b].kv_cache_dtypes_text
                                                                 or rules.backends[b].caps.kv_cache_dtypes or ())})
            hint = render_message(p.plist.kv_cache_dtype_hint, seen_facts, kv_cache_dtypes=", ".join(declared))
        msg = render_message(p.plist.no_valid_message, seen_facts, reasons="{" + shown + "}", kv_cache_dtype_hint=hint)
        if hint and "{kv_cache_dtype_hint}" not in p.plist.no_valid_message:
            msg += hint
    elif p.plist.validate:
        shown = ", ".join(f"{b}: {list(r)}" for b, r in reasons.items())
        msg = (f"No valid attention backend found for {facts['platform']} with {config!r}. "
               f"Reasons: {{{shown}}}.")
    else:
        seen: list[str] = []
        for r in reasons.values():
            seen += [x for x in r if x not in seen]
        # The platform's decision tree raises at its first failing check, with its own text.
        msg = seen[0] if seen else "No valid attention backend found"
    return NoValidBackendError(msg, reasons)
