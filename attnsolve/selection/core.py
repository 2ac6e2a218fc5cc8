"""One uncached answer: the platform's steps, the priority list, the MLA prefill layer, the lines after the
choice and vLLM's start-up refusals, put together (and re-entered for the answers that depend on another
config: a request vLLM replaces by automatic selection, a backend the start-up hook forces)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..config import Config
from ..errors import InvalidBackendError, NoValidBackendError
from ..rules.loader import SKIP_REASON
from ..rules.model import RENDERINGS
from ..solver.compiled import CompiledRules, Completion, Keyed
from ..solver.facts import for_role
from ..solver.semantics import AUTO, Plan
from .blocks import preferred_block_size
from .lines import after_selection
from .lists import candidate_reasons, evaluate, failure
from .messages import render_message
from .prefill import PrefillLayer, fell_back, layer_after, no_prefill_branch, skipped
from .release import compiled_rules
from .result import Rejection, Selection
from .startup import backend_refusal, forced_backend, platform_refusal, startup_lines
from .steps import Before, before_selection, prefill_step, with_derived


def solve_uncached(config: Config, role: str = "decode", available: frozenset[str] | None = None) -> Selection:
    """solve() without the cache and without computing an explanation on failure (used by explain)."""
    return answer(compiled_rules(config), config, role, available)


def answer(comp: CompiledRules, config: Config, role: str, available: frozenset[str] | None,
           facts: dict[str, Any] | None = None, keyed: Keyed | None = None) -> Selection:
    """The Selection for `config` in `role`, uncached. facts: base_facts(config, role) when the caller has
    them (taken over, not copied); keyed: comp.keyed(facts), when the caller has it."""
    if role == "mla_prefill" and (mp := prefill_step(comp, config)) is not None:
        layer = prefill_layer(comp, config, available, mp, facts)
        if layer.skip is not None:
            return skipped(config, layer)
        try:
            return _select(comp, config, "mla_prefill", available, facts)
        except NoValidBackendError as err:
            sel = fell_back(comp, config, layer, mp, err)
            if sel is None:
                raise
            return sel
    return _select(comp, config, role, available, facts, keyed)


def prefill_layer(comp: CompiledRules, config: Config, available: frozenset[str] | None, mp: Any,
                  facts: dict[str, Any] | None = None) -> PrefillLayer:
    """The layer's decode selection first (its failure is the layer's: raised), then the first matching skip.
    facts: base_facts(config, "mla_prefill") when the caller has them (read, not changed)."""
    if facts is None:
        return layer_after(comp, config, answer(comp, config, "decode", available), mp)
    decode = answer(comp, config, "decode", available, for_role(facts, config, "decode"))
    return layer_after(comp, config, decode, mp, dict(facts))


def _select(comp: CompiledRules, config: Config, role: str, available: frozenset[str] | None,
            facts: dict[str, Any] | None = None, keyed: Keyed | None = None) -> Selection:
    """facts: base_facts(config, role) when the caller has them (taken over, not copied); keyed: their
    comp.keyed(facts)."""
    rules = comp.rules
    pre = before_selection(comp, config, role, facts, keyed)
    if pre.model is not None:
        return _model_driven(comp, config, role, pre)
    facts, p, idx, warnings = evaluate(comp, config, role, available, pre.facts, pre.completed)
    warnings[:0] = pre.warnings
    if p.plist.no_prefill:  # an MLA prefill branch that gives the layer no prefill backend (a request is not read)
        return no_prefill_branch(config, p.plist, facts, warnings)
    if p.plist.error:  # a decision-tree branch that raises (CPU / XPU); the start-up hook's refusals come first
        err = NoValidBackendError(render_message(p.plist.error, facts), {})
        err.startup_error = _startup_error(comp, config, role, available, facts, p, None)
        raise err
    if idx is None and p.mode != AUTO:
        fallback = _request_fallback(comp, config, role, available, facts, p)
        if fallback is not None:
            return fallback
    if idx is None:
        err = failure(rules, config, facts, p, available)
        err.startup_error = _startup_error(comp, config, role, available, facts, p, None)
        raise err
    chosen = p.candidates[idx]
    rejected = tuple(r for r in (Rejection(c.backend, candidate_reasons(c, facts, available))
                                 for c in p.candidates[:idx]) if SKIP_REASON not in r.reasons) if idx else ()
    changes = list(pre.changes)
    logs = list(pre.logs)
    if role == "decode" and p.plist.startup_warnings:  # the start-up hook logs before any layer selects
        early, early_info = startup_lines(comp, p.plist, facts, facts["__derived_warnings__"].t)
        warnings[:0] = early
        logs[:0] = early_info
    after_selection(comp, p, idx, rejected, role, facts, warnings, changes, logs)
    t = facts["__derived_warnings__"].t
    variant = rules.backends[chosen.backend].shown_variant(facts)
    block = preferred_block_size(rules, chosen.backend, facts.get("block_size"), p.plist, facts, comp, t)
    return Selection(backend=chosen.backend, variant=variant, rejected=rejected, warnings=tuple(warnings),
                     config_changes=tuple(changes), logs=tuple(logs),
                     config=config, role=role, manual=p.mode != AUTO, priority_list=p.plist.name,
                     preferred_block_size=block,
                     startup_error=_startup_error(comp, config, role, available, facts, p, chosen.backend, block))


def _model_driven(comp: CompiledRules, config: Config, role: str, pre: Before) -> Selection:
    """The model's own backend: no validation, no rejected backends (vLLM's layer passes attn_backend)."""
    rules = comp.rules
    name, variant, route = pre.model  # type: ignore[misc]
    facts, done = with_derived(comp, pre.facts)
    backend = rules.backends.get(name) if name else None
    if backend is None:
        raise NoValidBackendError(f"the model route {route!r} names no backend of vLLM {rules.vllm}: {name!r}", {})
    if variant is None:
        variant = backend.shown_variant(facts)
    # the platform's start-up block size rule applies to the model's backend too (CPU forces DeepSeek-V4's 256)
    lists = rules.lists_for(facts.get("platform")) if isinstance(facts.get("platform"), str) else ()
    block = preferred_block_size(rules, name, facts.get("block_size"), lists[0] if lists else None, facts)
    sfacts = dict(facts, block_size=block)
    t_block = comp.with_value(done.t, "block_size", block)
    startup = None
    for failures in (backend.layer_failures, backend.startup_failures):  # the layer is built first
        if (i := comp.first_holding(failures, t_block, sfacts)) >= 0:
            startup = render_message(failures[i][0], sfacts, gpu_name=config.gpu or "CUDA")
            break
    warnings, logs = pre.warnings, pre.logs
    if role == "decode" and lists:  # the start-up hook's lines come first (before any layer exists)
        early, early_info = startup_lines(comp, lists[0], facts, done.t)
        warnings, logs = early + tuple(warnings), early_info + tuple(logs)
    return Selection(backend=name, variant=variant, rejected=(), warnings=warnings, config=config, role=role,
                     manual=False, priority_list=f"model: {route}", preferred_block_size=block,
                     startup_error=startup, config_changes=pre.changes, logs=logs)


def _startup_error(comp: CompiledRules, config: Config, role: str, available: frozenset[str] | None,
                   facts: dict[str, Any], p: Plan, chosen: str | None, block: Any = ...) -> str | None:
    """vLLM's start-up failure text for this config, in the order start-up meets them: the platform's
    own refusals (before any model code), the selection the start-up hook forces (it may request a
    backend), then the chosen backend's. None when vLLM starts (or fails only as its selector does)."""
    if role != "decode":
        return None
    done = facts.get("__derived_warnings__")
    t = done.t if isinstance(done, Completion) else None  # None: conditions are evaluated on the facts
    text = platform_refusal(comp, config, p.plist, facts, t)
    if text is not None:
        return text
    forced = forced_backend(comp, p.plist, facts, t)
    if forced is not None:
        next(RENDERINGS)  # another config's start-up: its error text may name that config
        try:
            return answer(comp, config.replace(backend=forced), role, available).startup_error
        except (NoValidBackendError, InvalidBackendError) as err:
            return err.startup_error or str(err)
    if chosen is None:
        return None
    return backend_refusal(comp, config, chosen, facts, p.plist, t, block)


def _request_fallback(comp: CompiledRules, config: Config, role: str, available: frozenset[str] | None,
                      facts: dict[str, Any], p: Plan) -> Selection | None:
    """A refused request vLLM replaces by automatic selection when its reasons are exactly one of a
    fallback's `only_reasons` (ROCm's turboquant / ultraquant runs), with the fallback's log line."""
    next(RENDERINGS)  # an answer for another config: not one to reuse for the value class
    found = request_fallback(facts, p, available)
    if found is None:
        return None
    text, level, reasons = found
    cand = p.candidates[0]
    # the answer is for the config asked about (its request included), computed as vLLM does without the request
    sel = replace(answer(comp, config.replace(backend=None), role, available), config=config)
    line = render_message(text, facts, backend=cand.backend, reason_list=repr(list(reasons))) if text else ""
    if not line:
        return sel
    if level == "warning":
        return replace(sel, warnings=(line, *sel.warnings))
    return replace(sel, logs=(line, *sel.logs))


def request_fallback(facts: dict[str, Any], p: Plan, available: frozenset[str] | None
                     ) -> tuple[str, str, tuple[str, ...]] | None:
    """The fallback (log text, level, the request's reasons) that replaces a refused request by automatic
    selection: its reasons are exactly one of the fallback's `only_reasons` and its `when` holds."""
    reasons = tuple(candidate_reasons(p.candidates[0], facts, available))
    for text, when, only, level in p.plist.request_fallbacks:
        if only and reasons in only and all(lit(facts) for lit in when):
            return text, level, reasons
    return None
