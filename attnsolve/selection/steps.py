"""The platform's steps before its selector (vLLM >= 0.18), as data on the platform's lists: requests that
fail outright, config rewrites, requests dropped for automatic selection, model code that picks the backend
itself, and the MLA prefill registry's own request. solve() and solve_csp() both run them."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..config import Config
from ..errors import InvalidBackendError, NoValidBackendError
from ..rules.loader import cc_from_text
from ..rules.model import RuleSet
from ..solver.compiled import CompiledRules, Completion, Keyed
from ..solver.facts import base_facts
from .messages import render_message
from .per_rules import per_rules


class Before(NamedTuple):
    """What the platform does before selection: the facts selection sees, the log lines, the config changes,
    and a model-driven choice that replaces selection ((backend, variant, route name) or None). A named tuple:
    immutable like a frozen dataclass, built in one C call on every solve."""

    facts: dict[str, Any]
    warnings: tuple[str, ...] = ()
    changes: tuple[tuple[str, Any], ...] = ()
    model: tuple[str, str | None, str] | None = None
    logs: tuple[str, ...] = ()
    # `facts` with their derived facts and the compiled rules' Completion of them, when computed already
    completed: tuple[dict[str, Any], Completion] | None = None


_SETTINGS: dict[int, tuple[RuleSet, dict[Any, Any]]] = {}


def _platform_settings(rules: RuleSet) -> dict[Any, Any]:
    per: dict[Any, Any] = {}
    for pl in rules.lists:
        if pl.platform not in per:
            steps = (pl.request_errors or pl.rewrites or pl.request_fallbacks or pl.model_backend
                     or pl.model_routes or pl.mla_prefill is not None or pl.compute_capability_from)
            per[pl.platform] = pl if steps else None
    return per


def platform_settings(rules: RuleSet, platform: Any) -> Any:
    """The platform-wide settings (every list of a platform carries them); None when the platform has
    no step before selection (then solve() goes straight to the lists)."""
    per = per_rules(_SETTINGS, rules, _platform_settings)
    try:
        return per.get(platform)
    except TypeError:
        return None


def prefill_step(comp: CompiledRules, config: Config) -> Any:
    """The platform's MLA prefill step (`[platforms.X.mla_prefill]`): the layer's decode selection first, then
    its `skips` / `fallbacks` around the prefill registry (vLLM >= 0.18's MLAAttention.__init__); None where
    prefill selection stands alone (0.17)."""
    ps = platform_settings(comp.rules, config.platform)
    return None if ps is None else ps.mla_prefill


def prefill_backend(rules: RuleSet, wanted: str) -> str:
    """An MLA prefill request (vLLM's prefill registry name) -> the rule set's backend name."""
    for b in rules.backends.values():
        if b.role == "mla_prefill" and (b.vllm_name or b.name) == wanted:
            return b.name
    return wanted


def with_derived(comp: CompiledRules, facts: dict[str, Any], keyed: Keyed | None = None
                 ) -> tuple[dict[str, Any], Completion]:
    """The facts with their derived facts, and the compiled rules' Completion of them (truth of conditions).
    keyed: comp.keyed(facts), when the caller has it for these facts."""
    derived = comp.rules.derived
    out = dict(facts)
    if keyed is None and not derived.keys().isdisjoint(out):  # keyed facts hold no derived fact
        out = {k: v for k, v in facts.items() if k not in derived}
    return out, comp.complete(out, keyed)


def before_selection(comp: CompiledRules, config: Config, role: str, facts: dict[str, Any] | None = None,
                     keyed: Keyed | None = None) -> Before:
    """vLLM's steps before the selector: requests that fail outright (request_errors), config rewrites
    (`stage = "before_selection"`), requests dropped for automatic selection (request_fallbacks), and
    model code that picks the backend itself (model_backend, model_routes with their KV handling).
    facts: base_facts(config, role) when the caller has them (taken over, not copied); keyed: comp.keyed(facts)
    when the caller has it (solve() computed it for its class key)."""
    rules = comp.rules
    if facts is None:
        facts = base_facts(config, role)
    ps = platform_settings(rules, facts.get("platform"))
    if ps is not None and role == "mla_prefill" and ps.mla_prefill is not None:
        # the prefill registry's own request (by vLLM's prefill name); the decode request is not its business,
        # and a platform without a request field (CPU) ignores prefill requests
        field = ps.mla_prefill.request_field
        wanted = facts.get(field) if field else None
        facts["backend"] = None if wanted is None else prefill_backend(rules, wanted)
        keyed = None  # the facts changed
    if ps is None:
        return Before(facts) if keyed is None else Before(facts, completed=with_derived(comp, facts, keyed))
    warnings: list[str] = []
    logs: list[str] = []
    changes: list[tuple[str, Any]] = []
    full, done = with_derived(comp, facts, keyed)
    if ps.compute_capability_from and facts.get("compute_capability") is None:
        # the device capability validate_configuration gets on this platform (ROCm: from the gfx arch)
        facts["compute_capability"] = cc_from_text(full.get(ps.compute_capability_from))
        full, done = with_derived(comp, facts)
    holds, first = comp.holds, comp.first_holding
    requested = facts.get("backend")
    if requested is not None and (i := first(ps.request_errors, done.t, full)) >= 0:
        raise InvalidBackendError(render_message(ps.request_errors[i][0], full), requested, {requested: ()})
    i = first(ps.rewrites, done.t, full)
    while i >= 0:
        rw = ps.rewrites[i]
        if rw.stage == "before_selection":
            for k, v in rw.set:
                facts[k] = v
                changes.append((k, v))
            for k in rw.unset:
                facts[k] = None
                changes.append((k, None))
            if rw.log:
                logs.append(render_message(rw.log, full))
            full, done = with_derived(comp, facts)
        i = first(ps.rewrites, done.t, full, i + 1)
    for text, when, only, _level in ps.request_fallbacks:
        if only:  # applies after the request was validated (core's request fallback)
            continue
        if facts.get("backend") is not None and holds(when, done.t, full):
            if text:
                warnings.append(render_message(text, full))
            facts["backend"] = None
            full, done = with_derived(comp, facts)
            break
    if role == "decode":
        if (i := first(ps.model_backend, done.t, full)) >= 0:
            case = ps.model_backend[i]
            chosen = facts.get("backend") if case.value == "backend" else case.value
            if isinstance(case.warning, str):  # the model code's line about a request it does not honour
                warnings.append(render_message(case.warning, full))
            return Before(facts, tuple(warnings), tuple(changes), (chosen, None, "model"), tuple(logs))
        if (i := first(ps.model_routes, done.t, full)) >= 0:
            route = ps.model_routes[i]
            if route.error:
                raise NoValidBackendError(render_message(route.error, full), {})
            rfacts = dict(full, route_variant=route.variant or None)
            t_route = comp.with_value(done.t, "route_variant", route.variant or None)
            if (j := first(ps.model_route_kv, t_route, rfacts)) >= 0:
                kv = ps.model_route_kv[j]
                if kv.error:
                    raise NoValidBackendError(render_message(kv.error, rfacts), {})
                if kv.log:
                    logs.append(render_message(kv.log, rfacts))
                for k, v in kv.set:
                    facts[k] = v
                    changes.append((k, v))
            return Before(facts, tuple(warnings), tuple(changes), (route.result, route.variant or None, route.name),
                          tuple(logs))
    return Before(facts, tuple(warnings), tuple(changes), None, tuple(logs), (full, done))
