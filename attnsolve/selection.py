"""`solve(config)`: vLLM's selection, answered from the compiled rules, as a frozen Selection.

Automatic selection walks the platform's priority list and takes the first backend with no
reasons against it; a requested backend is validated alone and never silently replaced.
Failures raise NoValidBackendError / InvalidBackendError with vLLM's text first.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterable, Iterator, Mapping

from .config import ANY, Config
from .errors import ConfigError, InvalidBackendError, NoValidBackendError
from .guards import available_set, require_config
from .engine import Engine, engine_for
from .rules.loader import SKIP_REASON, cc_from_text
from .rules.model import RENDERINGS, Backend, RuleSet, placeholder
from .solver.compiled import CompiledRules, Completion
from .solver.facts import base_facts, parse_role
from .solver.semantics import AUTO, Candidate, Plan, reasons_of

NOT_RUNNABLE = "kernel not runnable on this machine"
# The MLA prefill answer when the layer gets no prefill backend (vLLM >= 0.18: a sparse MLA layer without a
# dense-MHA prefill path, or whose automatic prefill selection finds nothing): the top-k MQA path only.
NO_PREFILL = "NO_PREFILL"
NO_PREFILL_PATH = "top-k MQA path only"  # its variant: what the layer runs instead


@dataclass(frozen=True, slots=True)
class Rejection:
    """A backend that lost, with vLLM's reasons."""

    backend: str
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class Selection:
    """The selected backend and the evidence: who lost before it and why, and what was ignored."""

    backend: str
    variant: str | None
    rejected: tuple[Rejection, ...]
    warnings: tuple[str, ...]
    config: Config = field(repr=False)
    role: str = "decode"
    manual: bool = False
    priority_list: str = ""
    preferred_block_size: int | None = None
    # vLLM's own text when its start-up fails for this config although its selector answers
    # `backend` (start-up hook, block size the kernels cannot serve, FA version not detected...):
    # vLLM would refuse to start. None: vLLM starts with this backend.
    startup_error: str | None = None
    # Config values vLLM changes around selection (rules' `rewrites` and model-route KV handling, e.g.
    # kv_cache_dtype -> fp8_ds_mla after FLASHMLA_SPARSE): (field, new value), in the order applied; their
    # log lines are in `warnings`. Empty for vLLM releases without such rewrites.
    config_changes: tuple[tuple[str, Any], ...] = ()
    # vLLM's INFO lines about this selection (rewrites, model-route KV formats, info notes, the MLA prefill
    # backend chosen); WARNING lines are in `warnings`.
    logs: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.backend + (f" ({self.variant})" if self.variant else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "selected": self.backend, "variant": self.variant, "role": self.role, "manual": self.manual,
            "priority_list": self.priority_list, "preferred_block_size": self.preferred_block_size,
            "startup_error": self.startup_error,
            "rejected": [r.to_dict() for r in self.rejected], "warnings": list(self.warnings),
            "config": self.config.to_dict(),
            **({"config_changes": {k: v for k, v in self.config_changes}} if self.config_changes else {}),
            **({"logs": list(self.logs)} if self.logs else {}),
        }


def engine_of(config: Config | None = None) -> Engine:
    """The engine of the release `config` asks about (the default release without a config)."""
    return engine_for(None if config is None else config.vllm)


def compiled_rules(config: Config | None = None) -> CompiledRules:
    return engine_of(config).compiled


def solve(config: Config, *, role: str | None = None, available: Iterable[str] | None = None) -> Selection:
    """Select the backend vLLM would use for `config` (role 'decode' or 'mla_prefill').

    available: backend names runnable on this machine; others count as invalid with the reason
    "kernel not runnable on this machine" (so automatic selection moves on, a request fails).
    """
    if type(config) is not Config:
        require_config(config)  # first: a non-Config (a list) is not even a cache key
    avail = available_set(available, config) if available is not None else None
    if role is not None and not isinstance(role, str):
        role = parse_role(role)  # raises ConfigError for anything that is not a role name
    key = (config, role, avail)
    eng = engine_for(config.vllm)
    comp = eng.compiled
    cache = eng.cache
    hit = cache.get(key)
    if hit is not None:
        return hit
    try:
        role_ = parse_role(role)
        facts: dict[str, Any] | None = base_facts(config, role_)
    except ConfigError:
        facts = None  # a partial config's error comes first
    if facts is None or ANY in facts.values():
        if config.is_partial:
            raise ConfigError(config.free_fields[0], ANY, "a concrete value: solve() needs a full config "
                              "(use explain() or possible_backends() for partial ones)")
        role_ = parse_role(role)
        facts = base_facts(config, role_)  # raises its ConfigError
    ckey = comp.class_key(facts)
    if ckey is not None:
        ckey = (ckey, role_, avail)
        try:
            like = eng.by_class.get(ckey)
        except TypeError:  # an unhashable value (no rule names one): no answer by class
            like = ckey = None
        if like is not None:  # the same answer as for another value of these value classes
            sel = _for_config(like, config)
            if len(cache) > 65536:
                cache.clear()
            cache[key] = sel
            return sel
        if ckey is not None and not comp.named("block_size", facts.get("block_size")):
            ckey = None  # the start-up block size passes the user's on: not the same for the whole class
    mark = next(RENDERINGS)
    try:
        sel = _solve_uncached(comp, config, role_, avail, facts)
    except (NoValidBackendError, InvalidBackendError) as err:
        raise err.defer_explanation(config, role_, avail) from None
    if ckey is not None and next(RENDERINGS) == mark + 1:  # no fact was put into its text: valid for the class
        if len(eng.by_class) > 4096:
            eng.by_class.clear()
        eng.by_class[ckey] = sel
    if len(cache) > 65536:
        cache.clear()
    cache[key] = sel
    return sel


def _for_config(sel: Selection, config: Config) -> Selection:
    """`sel` as the answer for `config` (another config of the same value classes)."""
    values = list(_SELECTION_FIELDS(sel))
    values[_CONFIG_AT] = config
    return Selection(*values)


_SELECTION_NAMES = tuple(f.name for f in fields(Selection))
_SELECTION_FIELDS = operator.attrgetter(*_SELECTION_NAMES)
_CONFIG_AT = _SELECTION_NAMES.index("config")


def solve_uncached(config: Config, role: str = "decode", available: frozenset[str] | None = None) -> Selection:
    """solve() without the cache and without computing an explanation on failure (used by explain)."""
    return _solve_uncached(compiled_rules(config), config, role, available)


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


def _solve_uncached(comp: CompiledRules, config: Config, role: str, available: frozenset[str] | None,
                    facts: dict[str, Any] | None = None) -> Selection:
    """facts: base_facts(config, role) when the caller has them (taken over, not copied)."""
    if role == "mla_prefill" and (mp := prefill_step(comp, config)) is not None:
        return _solve_prefill(comp, config, available, mp)
    return _select(comp, config, role, available, facts)


def _select(comp: CompiledRules, config: Config, role: str, available: frozenset[str] | None,
            facts: dict[str, Any] | None = None) -> Selection:
    """facts: base_facts(config, role) when the caller has them (taken over, not copied)."""
    rules = comp.rules
    pre = before_selection(comp, config, role, facts)
    if pre.model is not None:
        return _model_driven(comp, config, role, pre)
    facts, p, idx, warnings = evaluate(comp, config, role, available, pre.facts, pre.completed)
    warnings[:0] = pre.warnings
    if p.plist.error:  # a decision-tree branch that raises (CPU / XPU)
        raise NoValidBackendError(render_message(p.plist.error, facts), {})
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
                                 for c in p.candidates[:idx]) if SKIP_REASON not in r.reasons)
    backend = rules.backends[chosen.backend]
    plist = p.plist
    if plist.precluded_warning and p.mode == AUTO and facts.get("block_size") is not None:
        block_reason = _block_reason(rules)
        precluded = [r.backend for r in rejected if r.reasons == (block_reason,)]
        if precluded:
            warnings.append(render_message(plist.precluded_warning, facts, precluded=", ".join(precluded),
                                           backend=chosen.backend))
    changes = list(pre.changes)
    logs = list(pre.logs)
    done = facts["__derived_warnings__"]
    t = done.t  # the truth of the rules' conditions on `facts` (comp.holds)
    after: dict[str, Any] = {}  # the facts after selection: only lines and conditions read them
    t_after = 0
    if (plist.rewrites or plist.notes or plist.log or plist.warning or plist.fallback_log or plist.manual_log
            or plist.selected_log or plist.mla_prefill is not None):
        after = dict(facts, backend=chosen.backend)
        t_after = comp.with_value(t, "backend", chosen.backend)
    for rw in plist.rewrites:
        if rw.stage == "after_selection" and comp.holds(rw.when, t_after, after):
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
        valid = [c.backend for c, m in zip(p.candidates, comp.plan_for(facts)[1]) if m & facts["__sat__"] == m]
        logs.append(render_message(plist.selected_log, after, valid_list=repr(valid)))
    if role == "mla_prefill" and plist.mla_prefill is not None and plist.mla_prefill.chosen_log:
        logs.append(render_message(plist.mla_prefill.chosen_log, after, backend=backend.display_name,
                                   get_name=backend.get_name or backend.display_name))
    logging = done.logging
    if logging:  # vLLM logs a derived fact's lines when it computes that fact
        evaluated = comp.derived_read_by(backend)
        pending = [n for n in logging if n not in evaluated]
        if pending and rules.settings.get("derived_warnings") == "validated":  # vLLM validates every list entry
            evaluated = set(evaluated)
            for c in p.candidates:
                if c.validated and c.backend != chosen.backend:
                    evaluated |= comp.evaluated_derived(c, facts, t)
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
    variant = backend.shown_variant(facts)
    block = preferred_block_size(rules, chosen.backend, facts.get("block_size"), p.plist, facts, comp, t)
    return Selection(backend=chosen.backend, variant=variant, rejected=rejected, warnings=tuple(warnings),
                     config_changes=tuple(changes), logs=tuple(logs),
                     config=config, role=role, manual=p.mode != AUTO, priority_list=p.plist.name,
                     preferred_block_size=block,
                     startup_error=_startup_error(comp, config, role, available, facts, p, chosen.backend, block))


@dataclass(frozen=True, slots=True)
class _Before:
    """What the platform does before selection: the facts selection sees, the log lines, the config changes,
    and a model-driven choice that replaces selection ((backend, variant, route name) or None)."""

    facts: dict[str, Any]
    warnings: tuple[str, ...] = ()
    changes: tuple[tuple[str, Any], ...] = ()
    model: tuple[str, str | None, str] | None = None
    logs: tuple[str, ...] = ()
    # `facts` with their derived facts and the compiled rules' Completion of them, when computed already
    completed: tuple[dict[str, Any], Completion] | None = None


def _per_rules(cache: dict[int, tuple[RuleSet, Any]], rules: RuleSet, make: Any) -> Any:
    """`make(rules)`, kept per rule set (a plain dict by identity: cheaper than a weak mapping on the cold path)."""
    got = cache.get(id(rules))
    if got is None or got[0] is not rules:
        if len(cache) > 16:  # mutants loaded by tests come and go; packaged sets are few
            cache.clear()
        got = cache[id(rules)] = (rules, make(rules))
    return got[1]


_SETTINGS: dict[int, tuple[RuleSet, dict[Any, Any]]] = {}


def _platform_settings(rules: RuleSet) -> dict[Any, Any]:
    per: dict[Any, Any] = {}
    for pl in rules.lists:
        if pl.platform not in per:
            steps = (pl.request_errors or pl.rewrites or pl.request_fallbacks or pl.model_backend
                     or pl.model_routes or pl.mla_prefill is not None or pl.compute_capability_from)
            per[pl.platform] = pl if steps else None
    return per


def _settings(rules: RuleSet, platform: Any) -> Any:
    """The platform-wide settings (every list of a platform carries them); None when the platform has
    no step before selection (then solve() goes straight to the lists)."""
    per = _per_rules(_SETTINGS, rules, _platform_settings)
    try:
        return per.get(platform)
    except TypeError:
        return None


def _with_derived(comp: CompiledRules, facts: dict[str, Any]) -> tuple[dict[str, Any], Completion]:
    """The facts with their derived facts, and the compiled rules' Completion of them (truth of conditions)."""
    derived = comp.rules.derived
    out = dict(facts)
    if not derived.keys().isdisjoint(out):
        out = {k: v for k, v in facts.items() if k not in derived}
    return out, comp.complete(out)


def before_selection(comp: CompiledRules, config: Config, role: str, facts: dict[str, Any] | None = None) -> _Before:
    """vLLM's steps before the selector: requests that fail outright (request_errors), config rewrites
    (`stage = "before_selection"`), requests dropped for automatic selection (request_fallbacks), and
    model code that picks the backend itself (model_backend, model_routes with their KV handling).
    facts: base_facts(config, role) when the caller has them (taken over, not copied)."""
    rules = comp.rules
    if facts is None:
        facts = base_facts(config, role)
    ps = _settings(rules, facts.get("platform"))
    if ps is not None and role == "mla_prefill" and ps.mla_prefill is not None:
        # the prefill registry's own request (by vLLM's prefill name); the decode request is not its business,
        # and a platform without a request field (CPU) ignores prefill requests
        field = ps.mla_prefill.request_field
        wanted = facts.get(field) if field else None
        facts["backend"] = None if wanted is None else _prefill_backend(rules, wanted)
    if ps is None:
        return _Before(facts)
    warnings: list[str] = []
    logs: list[str] = []
    changes: list[tuple[str, Any]] = []
    full, done = _with_derived(comp, facts)
    if ps.compute_capability_from and facts.get("compute_capability") is None:
        # the device capability validate_configuration gets on this platform (ROCm: from the gfx arch)
        facts["compute_capability"] = cc_from_text(full.get(ps.compute_capability_from))
        full, done = _with_derived(comp, facts)
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
            full, done = _with_derived(comp, facts)
        i = first(ps.rewrites, done.t, full, i + 1)
    for text, when, only, _level in ps.request_fallbacks:
        if only:  # applies after the request was validated (_request_fallback)
            continue
        if facts.get("backend") is not None and holds(when, done.t, full):
            if text:
                warnings.append(render_message(text, full))
            facts["backend"] = None
            full, done = _with_derived(comp, facts)
            break
    if role == "decode":
        if (i := first(ps.model_backend, done.t, full)) >= 0:
            case = ps.model_backend[i]
            chosen = facts.get("backend") if case.value == "backend" else case.value
            return _Before(facts, tuple(warnings), tuple(changes), (chosen, None, "model"), tuple(logs))
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
            return _Before(facts, tuple(warnings), tuple(changes), (route.result, route.variant or None, route.name),
                           tuple(logs))
    return _Before(facts, tuple(warnings), tuple(changes), None, tuple(logs), (full, done))


def _request_fallback(comp: CompiledRules, config: Config, role: str, available: frozenset[str] | None,
                      facts: dict[str, Any], p: Plan) -> Selection | None:
    """A refused request vLLM replaces by automatic selection when its reasons are exactly one of a
    fallback's `only_reasons` (ROCm's turboquant / ultraquant runs), with the fallback's log line."""
    next(RENDERINGS)  # an answer for another config: not one to reuse for the value class
    cand = p.candidates[0]
    reasons = candidate_reasons(cand, facts, available)
    for text, when, only, level in p.plist.request_fallbacks:
        if only and tuple(reasons) in only and all(lit(facts) for lit in when):
            sel = _solve_uncached(comp, config.replace(backend=None), role, available)
            line = render_message(text, facts, backend=cand.backend, reason_list=repr(list(reasons))) if text else ""
            if not line:
                return sel
            if level == "warning":
                return replace(sel, warnings=(line, *sel.warnings))
            return replace(sel, logs=(line, *sel.logs))
    return None


def _prefill_backend(rules: RuleSet, wanted: str) -> str:
    """An MLA prefill request (vLLM's prefill registry name) -> the rule set's backend name."""
    for b in rules.backends.values():
        if b.role == "mla_prefill" and (b.vllm_name or b.name) == wanted:
            return b.name
    return wanted


def prefill_step(comp: CompiledRules, config: Config) -> Any:
    """The platform's MLA prefill step (`[platforms.X.mla_prefill]`): the layer's decode selection first, then
    its `skips` / `fallbacks` around the prefill registry (vLLM >= 0.18's MLAAttention.__init__); None where
    prefill selection stands alone (0.17)."""
    ps = _settings(comp.rules, config.platform)
    return None if ps is None else ps.mla_prefill


@dataclass(frozen=True, slots=True)
class PrefillLayer:
    """What the MLA layer knows when it asks for a prefill backend: its decode Selection, the facts with the
    decode backend and the decode step's config changes (the canonical KV dtype), and the skip that applies."""

    decode: Selection
    facts: dict[str, Any]
    skip: str | None


def prefill_layer(comp: CompiledRules, config: Config, available: frozenset[str] | None, mp: Any) -> PrefillLayer:
    """The layer's decode selection first (its failure is the layer's: raised), then the first matching skip."""
    decode = _solve_uncached(comp, config, "decode", available)
    facts = base_facts(config, "mla_prefill")
    facts.update(decode.config_changes)
    facts["decode_backend"] = decode.backend
    facts, _ = _with_derived(comp, facts)
    skip = next((text for text, when in mp.skips if all(lit(facts) for lit in when)), None)
    return PrefillLayer(decode, facts, skip)


def prefill_fallback(mp: Any, facts: dict[str, Any]) -> str | None:
    """The warning of the fallback that swallows a failed prefill selection for this layer, or None."""
    return next((text for text, when in mp.fallbacks if all(lit(facts) for lit in when)), None)


def _solve_prefill(comp: CompiledRules, config: Config, available: frozenset[str] | None, mp: Any) -> Selection:
    """MLAAttention's prefill backend: none for a layer a skip names, vLLM's prefill selection otherwise, and
    none (with the fallback's warning) when that fails for a layer a fallback covers."""
    layer = prefill_layer(comp, config, available, mp)
    if layer.skip is not None:
        return Selection(backend=NO_PREFILL, variant=NO_PREFILL_PATH, rejected=(),
                         warnings=(render_message(layer.skip, layer.facts),),
                         config=config, role="mla_prefill", priority_list="MLA prefill skipped")
    try:
        return _select(comp, config, "mla_prefill", available)
    except NoValidBackendError as err:
        text = prefill_fallback(mp, layer.facts)
        if text is None:
            raise
        rules = comp.rules
        rejected = tuple(Rejection(_prefill_backend(rules, b), tuple(r)) for b, r in err.reasons.items())
        return Selection(backend=NO_PREFILL, variant=NO_PREFILL_PATH, rejected=rejected,
                         warnings=(render_message(text, layer.facts),), config=config, role="mla_prefill",
                         priority_list="MLA prefill fallback")


def _model_driven(comp: CompiledRules, config: Config, role: str, pre: _Before) -> Selection:
    """The model's own backend: no validation, no rejected backends (vLLM's layer passes attn_backend)."""
    rules = comp.rules
    name, variant, route = pre.model  # type: ignore[misc]
    facts, done = _with_derived(comp, pre.facts)
    backend = rules.backends.get(name) if name else None
    if backend is None:
        raise NoValidBackendError(f"the model route {route!r} names no backend of vLLM {rules.vllm}: {name!r}", {})
    if variant is None:
        variant = backend.shown_variant(facts)
    block = preferred_block_size(rules, name, facts.get("block_size"), None, facts)
    sfacts = dict(facts, block_size=block)
    t_block = comp.with_value(done.t, "block_size", block)
    startup = None
    if (i := comp.first_holding(backend.startup_failures, t_block, sfacts)) >= 0:
        startup = render_message(backend.startup_failures[i][0], sfacts, gpu_name=config.gpu or "CUDA")
    return Selection(backend=name, variant=variant, rejected=(), warnings=pre.warnings, config=config, role=role,
                     manual=False, priority_list=f"model: {route}", preferred_block_size=block,
                     startup_error=startup, config_changes=pre.changes, logs=pre.logs)


def _block_reason(rules: RuleSet) -> str:
    for g in rules.generic_checks:
        if g.field == "block_size" and g.reason:
            return g.reason
    return "block_size not supported"


def _startup_error(comp: CompiledRules, config: Config, role: str, available: frozenset[str] | None,
                   facts: dict[str, Any], p: Plan, chosen: str | None, block: Any = ...) -> str | None:
    """vLLM's start-up failure text for this config, in the order start-up meets them: the platform's
    own refusals (before any model code), the selection the start-up hook forces (it may request a
    backend), then the chosen backend's: kernel block sizes that cannot serve the start-up block
    size, and its own start-up failures. None when vLLM starts (or fails only as its selector does)."""
    if role != "decode":
        return None
    rules = comp.rules
    plist = p.plist
    done = facts.get("__derived_warnings__")
    t = done.t if isinstance(done, Completion) else None  # None: conditions are evaluated on the facts
    if (i := comp.first_holding(plist.startup_failures, t, facts)) >= 0:
        return render_message(plist.startup_failures[i][0], facts, gpu=config.gpu or "CUDA")
    i = comp.first_holding(plist.start_backend, t, facts)
    forced = plist.start_backend[i].value if i >= 0 else None
    if forced is not None and forced != facts.get("backend"):
        next(RENDERINGS)  # another config's start-up: its error text may name that config
        try:
            return _solve_uncached(comp, config.replace(backend=forced), role, available).startup_error
        except (NoValidBackendError, InvalidBackendError) as err:
            return err.startup_error or str(err)
    if chosen is None:
        return None
    if block is ...:  # the start-up block size, when the caller has not computed it
        block = preferred_block_size(rules, chosen, facts.get("block_size"), plist, facts, comp, t)
    if plist.block_size_failure and block is not None:
        sizes, exact = _kernel_sizes(rules, chosen, facts)
        if (exact and block not in exact) or (sizes and not exact and not any(block % k == 0 for k in sizes)):
            shown = repr(list(exact)) if exact else "[" + ", ".join(f"MultipleOf({k})" for k in sizes) + "]"
            return render_message(plist.block_size_failure, dict(facts, block_size=block), backend=chosen,
                                  kernel_block_sizes=shown)
    failures = rules.backends[chosen].startup_failures
    if not failures:
        return None
    t_block = None if t is None else comp.with_value(t, "block_size", block)
    if (i := comp.first_holding(failures, t_block, _FactsWith(facts, "block_size", block))) >= 0:
        return render_message(failures[i][0], dict(facts, block_size=block), gpu_name=config.gpu or "CUDA")
    return None


class _FactsWith(Mapping[str, Any]):
    """`facts` with one field set to another value, without copying them (read by conditions)."""

    __slots__ = ("facts", "field", "value")

    def __init__(self, facts: Mapping[str, Any], field: str, value: Any):
        self.facts, self.field, self.value = facts, field, value

    def __getitem__(self, key: str) -> Any:
        return self.value if key == self.field else self.facts[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.value if key == self.field else self.facts.get(key, default)

    def __iter__(self) -> Iterator[str]:
        yield from self.facts
        if self.field not in self.facts:
            yield self.field

    def __len__(self) -> int:
        return len(self.facts) + (self.field not in self.facts)


class _PyShow(dict):
    """Facts as vLLM's f-strings print them: Python's str() (True, None), unknown names kept."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"

    def __getitem__(self, key: str) -> str:
        if "|" in key or key == "device_capability":
            name = key.partition("|")[0]
            if "|" in key and dict.get(self, name) is not None:
                return self[name]
            return placeholder(self, key) or ""
        if key not in self:
            return self.__missing__(key)
        v = dict.__getitem__(self, key)
        if key == "compute_capability" and isinstance(v, int) and not isinstance(v, bool):
            return f"{v // 10}.{v % 10}"
        return str(v)


def render_message(template: str, facts: dict[str, Any], **extra: Any) -> str:
    """A vLLM message template from the rules, filled from the facts (and `extra`)."""
    if "{" not in template:
        return template
    next(RENDERINGS)
    return template.format_map(_PyShow({**facts, **extra}))


def preferred_block_size(rules: RuleSet, backend: str, block_size: int | None, plist: Any = None,
                         facts: Any = None, comp: CompiledRules | None = None, t: int | None = None) -> int | None:
    """The KV block size vLLM's start-up sets: the platform's start-up rule when it has one (first
    matching case; "block_size" keeps the user's); else the user's; else the backend's preferred
    size: 16 if it accepts 16, else its smallest kernel size. comp, t: the compiled rules and the truth
    bitset of `facts` (CompiledRules.holds), to decide the cases without evaluating them."""
    if plist is not None and plist.start_block_size and facts is not None:
        sfacts = dict(facts, selected=backend)  # a case may test the chosen backend (XPU)
        if comp is not None and t is not None:
            t = comp.with_value(t, "selected", backend)
        if comp is None or t is None:
            hit = next((i for i, case in enumerate(plist.start_block_size)
                        if all(lit(sfacts) for lit in case.when)), -1)
        else:
            hit = comp.first_holding(plist.start_block_size, t, sfacts)
        if hit >= 0:
            case = plist.start_block_size[hit]
            return block_size if case.value == "block_size" else case.value
    if block_size is not None:
        return block_size
    if rules.backends[backend].preferred_block_size is not None:  # the backend's own get_preferred_block_size
        return rules.backends[backend].preferred_block_size
    sizes, exact = _kernel_sizes(rules, backend, facts)
    return _default_block_size(sizes, exact)


@functools.lru_cache(maxsize=1024)
def _default_block_size(sizes: tuple[int, ...], exact: tuple[int, ...]) -> int:
    if (16 in exact) if exact else (not sizes or any(16 % s == 0 for s in sizes)):
        return 16  # vLLM's get_preferred_block_size(16): 16 when the backend accepts it
    return min(exact or sizes)


_EXACT: dict[int, tuple[RuleSet, str]] = {}


def _exact_key(rules: RuleSet) -> str:
    return _per_rules(_EXACT, rules, lambda r: next((g.exact_key for g in r.generic_checks
                                                      if g.field == "block_size" and g.exact_key), ""))


_SIZES: dict[int, tuple[RuleSet, dict[tuple[str, Any], Any]]] = {}


def _kernel_sizes(rules: RuleSet, backend: str, facts: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The chosen backend's kernel block sizes (its variant's when a variant declares them): (multiples
    of, exact sizes); exact sizes (B12X) replace the multiples."""
    b = rules.backends[backend]
    name = b.variant_for(facts.get(b.variant_field)) if facts is not None and b.variant_field else None
    per = _per_rules(_SIZES, rules, lambda r: {})
    got = per.get((backend, name))
    if got is None:
        got = per[(backend, name)] = _kernel_sizes_of(rules, b, name)
    return got


def _kernel_sizes_of(rules: RuleSet, b: Backend, name: str | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    caps = b.caps
    if name is not None:
        for v in b.variants:
            if v.name == name:
                caps = caps.merged(v.caps)
    exact_key = _exact_key(rules)
    exact = tuple(caps.get(exact_key) or ()) if exact_key else ()
    return tuple(caps.kernel_block_sizes or ()), exact


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


def csp_solver(config: Config | None = None) -> Any:
    """The CSP of the release `config` asks about (python-constraint2 is not on the fast path)."""
    return engine_of(config).csp


def solve_csp(config: Config, *, role: str | None = None, available: Iterable[str] | None = None) -> str | None:
    """The selected backend by the CSP path alone (None when nothing is valid): the reference for solve()."""
    if config.is_partial:
        raise ConfigError(config.free_fields[0], ANY, "a concrete value: solve_csp() needs a full config")
    role_ = parse_role(role)
    avail = None if available is None else frozenset(available)
    comp = compiled_rules(config)
    mp = prefill_step(comp, config) if role_ == "mla_prefill" else None
    layer = None
    if mp is not None:  # the layer's decode backend and the skips are data shared with solve()
        try:
            layer = prefill_layer(comp, config, avail, mp)
        except (NoValidBackendError, InvalidBackendError):
            return None
        if layer.skip is not None:
            return NO_PREFILL
    try:  # the platform's steps before selection are the same data on both paths
        pre = before_selection(comp, config, role_)
    except (NoValidBackendError, InvalidBackendError):
        return None
    if pre.model is not None:
        return pre.model[0]
    backend, _ = csp_solver(config).select(pre.facts, avail)
    if backend is None and layer is not None and pre.facts.get("backend") is None \
            and prefill_fallback(mp, layer.facts) is not None:
        return NO_PREFILL
    return backend


def clear_cache(config: Config | None = None) -> None:
    """Forget solve()'s memoised answers for one release, per config and per value class (benchmarks measure
    cold solves with it)."""
    eng = engine_of(config)
    eng.cache.clear()
    eng.by_class.clear()
