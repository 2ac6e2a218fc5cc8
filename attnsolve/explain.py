"""Explanations: every candidate's verdict, the minimal conflict and the smallest fixes.

`explain` evaluates the selection once (the same evaluation `solve` uses, so verdicts and the
answer cannot disagree) and, when nothing fits, asks `diagnosis` for the conflicts and fixes.
Partial configs (fields = ANY) are answered over the free fields' value classes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

from .config import ANY, Config, format_cc
from .diagnosis import (HARDWARE, MODEL, Fix, _cc, _solver_facts, category, find_conflicts,
                        find_fixes, question)
from .errors import ConfigError, NoValidBackendError, SelectionError
from .goal import role_pinned
from .guards import available_set, field_names, require_config, require_int
from .rules.loader import SKIP_REASON
from .selection.messages import render_message
from .selection import (NO_PREFILL, before_selection, candidate_reasons, compiled_rules, csp_solver, evaluate,
                        failure, prefill_step, request_fallback, solve_uncached)
from .solver.domains import representatives
from .solver.facts import parse_role
from .solver.semantics import AUTO

__all__ = ["Explanation", "Fix", "Verdict", "explain", "possible_backends", "selection_table",
           "category", "find_conflicts", "find_fixes", "HARDWARE", "MODEL"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One candidate, in priority order: valid or not, and vLLM's reasons."""

    backend: str
    valid: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "valid": self.valid, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Explanation:
    """Why a configuration gets (or cannot get) a backend, and what to change."""

    config: Config
    role: str
    selected: str | None
    variant: str | None
    requested: str | None
    candidates: tuple[Verdict, ...]
    conflict: Mapping[str, Any] = field(default_factory=dict)
    conflicts: tuple[Mapping[str, Any], ...] = ()
    fixes: tuple[Fix, ...] = ()
    warnings: tuple[str, ...] = ()
    hardware_only: bool = False
    possible: tuple[str, ...] = ()
    message: str = ""
    conditions: tuple[tuple[str, Mapping[str, tuple[Any, ...]]], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "selected": self.selected, "variant": self.variant, "requested": self.requested, "role": self.role,
            "candidates": [c.to_dict() for c in self.candidates], "conflict": dict(self.conflict),
            "conflicts": [dict(c) for c in self.conflicts], "fixes": [f.to_dict() for f in self.fixes],
            "warnings": list(self.warnings), "hardware_only": self.hardware_only,
            "possible": list(self.possible), "config": self.config.to_dict(),
            "conditions": [{"backend": b, "when": {f: list(v) for f, v in w.items()}} for b, w in self.conditions],
        }

    available: frozenset[str] | None = None  # the backends explain() was told are installed

    # Set by attnsolve.advice (imported by the package): the advice text for an explanation. A hook,
    # because advice builds on explain and the arrows point one way.
    text_hook: ClassVar[Callable[["Explanation"], str] | None] = None

    def __str__(self) -> str:
        """The advice `attnsolve explain` prints for this configuration (attnsolve/advice_text.py):
        the same ranked, pasteable fixes for API, JSON and text users."""
        hook = type(self).text_hook
        if hook is None:  # pragma: no cover - the package import installs it
            raise RuntimeError("attnsolve.advice is not imported: import attnsolve first")
        return hook(self)


# ---------------------------------------------------------------------------------------------
# Public entry points


def explain(config: Config, *, role: str | None = None, available: Iterable[str] | None = None,
            max_conflicts: int = 4) -> Explanation:
    """Explain the selection for `config` (full or partial). Never raises for a well-formed config."""
    require_config(config)
    require_int("max_conflicts", max_conflicts, 1, 64)
    role_ = parse_role(role)
    avail = available_set(available, config)
    if config.is_partial:
        return _explain_partial(config, role_, avail, max_conflicts)
    comp = compiled_rules(config)
    if role_ == "mla_prefill" and prefill_step(comp, config) is not None:
        early = _explain_prefill_layer(config, avail, max_conflicts)
        if early is not None:
            return early
    try:  # the platform's steps before selection (vLLM >= 0.18 rule sets; none for 0.17)
        pre = before_selection(comp, config, role_)
    except SelectionError as e:  # a request vLLM refuses outright, a model route's own error
        return _failed_before_lists(config, role_, avail, str(e), max_conflicts)
    if pre.model is not None:  # model code chose the backend: no candidates were validated
        sel = solve_uncached(config, role_, avail)
        return Explanation(config, role_, sel.backend, sel.variant, None, (), warnings=sel.warnings)
    facts, p, idx, warnings = evaluate(comp, config, role_, avail, pre.facts)
    if p.plist.no_prefill:  # the layer has no prefill path (vLLM 0.16/0.17's sparse MLA): nothing was tried
        sel = solve_uncached(config, role_, avail)
        return Explanation(config, role_, sel.backend, sel.variant, None, (), warnings=sel.warnings, available=avail)
    verdicts = tried_verdicts(p, facts, avail)
    requested = config.backend if p.mode != AUTO else None
    if idx is not None:
        sel = solve_uncached(config, role_, avail)
        return Explanation(config, role_, sel.backend, sel.variant, requested, tuple(verdicts),
                           warnings=sel.warnings, available=avail)
    # a decision-tree branch that raises gives vLLM's own text, as solve() raises it
    err: Exception = NoValidBackendError(render_message(p.plist.error, facts), {}) if p.plist.error else \
        failure(comp.rules, config, facts, p, avail)
    if p.mode != AUTO and request_fallback(facts, p, avail) is not None:
        # a request refused for exactly a fallback's reasons: vLLM selects automatically instead
        try:
            sel = solve_uncached(config, role_, avail)
        except SelectionError as e:  # ... and finds nothing: its candidates are the automatic ones
            err = e
            verdicts = _verdicts(comp, config.replace(backend=None), role_, avail)
        else:
            auto = explain(config.replace(backend=None), role=role_, available=available, max_conflicts=max_conflicts)
            return replace(auto, config=config, warnings=sel.warnings)
    asked = question(config, role_, avail, requested)  # built once for both searches
    conflicts = find_conflicts(config, role_, avail, requested, max_conflicts, asked=asked)
    conflict = conflicts[0] if conflicts else {}
    fixes = find_fixes(config, role_, avail, requested, conflicts, asked=asked)
    hardware_only = bool(conflict) and all(category(f) == "hardware" for f in conflict)
    return Explanation(config, role_, None, None, requested, tuple(verdicts), conflict, tuple(conflicts),
                       tuple(fixes), tuple(warnings), hardware_only, message=str(err), available=avail)


def _verdicts(comp: Any, config: Config, role: str, avail: frozenset[str] | None) -> list[Verdict]:
    """Every candidate's verdict for `config` (none where a step before the lists decides)."""
    try:
        pre = before_selection(comp, config, role)
    except SelectionError:
        return []
    if pre.model is not None:
        return []
    facts, p, _, _ = evaluate(comp, config, role, avail, pre.facts)
    return tried_verdicts(p, facts, avail)


def tried_verdicts(p: Any, facts: dict[str, Any], avail: frozenset[str] | None) -> list[Verdict]:
    """The verdict of every candidate vLLM tries: an entry whose own `when` does not hold is not tried (solve()
    leaves it out of the rejected backends alike), so it is no candidate here either."""
    out = []
    for c in p.candidates:
        reasons = candidate_reasons(c, facts, avail)
        if SKIP_REASON not in reasons:
            out.append(Verdict(c.backend, not reasons, reasons))
    return out


def request_conflicts(config: Config, *, role: str | None = None, available: Iterable[str] | None = None,
                      max_conflicts: int = 2) -> tuple[dict[str, Any], ...]:
    """The minimal conflicts that keep `config`'s requested backend from fitting (empty when it
    fits): what `explain` computes first, without its search for fixes (advice searches those
    itself, per lost backend; on a large release the fix search is most of explain's time)."""
    require_config(config)
    role_ = parse_role(role)
    avail = available_set(available, config)
    if config.is_partial or config.backend is None:
        return ()
    try:
        solve_uncached(config, role_, avail)
        return ()
    except SelectionError:
        pass
    except ConfigError:
        return ()
    return tuple(find_conflicts(config, role_, avail, config.backend, max_conflicts))


def _explain_prefill_layer(config: Config, avail: frozenset[str] | None, max_conflicts: int) -> Explanation | None:
    """vLLM >= 0.21's MLA layer around its prefill selection: its decode backend fails first (that message),
    or it gets no prefill backend (NO_PREFILL, with the prefill candidates a fallback swallowed); None: the
    prefill selection explains itself."""
    try:
        solve_uncached(config, "decode", avail)
    except SelectionError as e:
        return _failed_before_lists(config, "mla_prefill", avail, str(e), max_conflicts, search_role="decode")
    try:
        sel = solve_uncached(config, "mla_prefill", avail)
    except SelectionError:
        return None
    if sel.backend != NO_PREFILL:
        return None
    verdicts = tuple(Verdict(r.backend, False, r.reasons) for r in sel.rejected)
    return Explanation(config, "mla_prefill", sel.backend, sel.variant, None, verdicts, warnings=sel.warnings,
                       available=avail)


def _failed_before_lists(config: Config, role: str, avail: frozenset[str] | None, message: str,
                         max_conflicts: int, search_role: str | None = None) -> Explanation:
    """A selection stopped before its priority lists: a step refused the request or the model's route
    failed (vLLM >= 0.18), or, for an MLA layer's prefill question (`search_role` "decode"), the layer's
    decode selection failed first. The goal is then any backend with the request kept (a platform that
    ignores the request goes on), so conflicts keep the request; the fixes drop the request (automatic
    selection, and what that needs) or keep it, each re-solved for `role` (`selects` is its answer).
    A prefill question's MLA layer (use_mla) is given: never part of a conflict or a fix. A decode
    question's request stays `requested`: a fix that keeps it must select it."""
    search = search_role or role
    requested = config.backend if role == "decode" else None
    hold = role_pinned(compiled_rules(config).rules, role) if search != role else frozenset()
    conflicts = find_conflicts(config, search, avail, None, max_conflicts, hold)
    candidates: list[Fix] = []
    request = _request_field(config, search)
    if request is not None and getattr(config, request) is not None:
        unset = config.replace(**{request: None})
        candidates.append(Fix({request: None}, None))
        try:
            solve_uncached(unset, search, avail)
        except SelectionError:
            unset_conflicts = find_conflicts(unset, search, avail, None, max_conflicts, hold)
            candidates += [Fix({request: None, **f.changes}, f.selects, f.hardware)
                           for f in find_fixes(unset, search, avail, None, unset_conflicts, hold=hold)]
        except ConfigError:
            pass
    candidates += find_fixes(config, search, avail, None, conflicts, hold=hold)
    fixes: list[Fix] = []
    for fix in candidates:
        if len(fixes) >= 8:
            break
        try:
            fixed = config.replace(**{f: _cc(v) for f, v in fix.changes.items()})
            sel = solve_uncached(fixed, role, avail)
        except (ConfigError, SelectionError):
            continue
        if requested is not None and "backend" not in fix.changes and sel.backend != requested:
            continue  # works, but not with the backend asked for (a platform that drops the request)
        if all(f.changes != fix.changes for f in fixes):
            fixes.append(Fix(fix.changes, sel.backend, fix.hardware))
    conflict = conflicts[0] if conflicts else {}
    hardware_only = bool(conflict) and all(category(f) == "hardware" for f in conflict)
    return Explanation(config, role, None, None, requested, (), conflict, tuple(conflicts), tuple(fixes),
                       (), hardware_only, message=message, available=avail)


def _request_field(config: Config, role: str) -> str | None:
    """The field holding the request this role's selection reads: the backend for decode, the platform's
    prefill registry field for an MLA prefill question (None where the platform takes none)."""
    if role != "mla_prefill":
        return "backend"
    step = prefill_step(compiled_rules(config), config)
    field_name = getattr(step, "request_field", None) if step is not None else None
    return field_name or None


def possible_backends(config: Config, *, role: str | None = None, available: Iterable[str] | None = None) -> tuple[str, ...]:
    """Backends that some completion of `config` selects (for a requested backend: it, if some completion fits)."""
    require_config(config)
    role_ = parse_role(role)
    avail = available_set(available, config)
    if not config.is_partial:
        try:
            return (solve_uncached(config, role_, avail).backend,)
        except SelectionError:
            return ()
    facts = _solver_facts(config, role_)
    try:
        # the vectorised sweep over the free fields' value classes: exact (tested against solve)
        # and far faster than one CSP per candidate when many fields are free
        from .sweep import sweep
        found = {b for b in sweep(config, role=role_, available=avail).by_backend() if b is not None}
    except ImportError:  # numpy missing: the CSP answers the same question
        found = set(csp_solver(config).possible(facts, avail))
    order = {b: i for i, b in enumerate(_priority_order(facts, config))}
    return tuple(sorted(found, key=lambda b: (order.get(b, 999), b)))


def selection_table(config: Config, over: Sequence[str] | None = None, *, role: str | None = None,
                    available: Iterable[str] | None = None) -> tuple[tuple[dict[str, Any], Any], ...]:
    """The selection for every combination of the value classes of `over` (default: the free fields).

    Each row is (assignment, backend) where backend is a name or None (nothing valid); when fields
    outside `over` are still free, it is the tuple of possible backends instead.
    """
    require_config(config)
    fields_ = field_names("over", over, config.field_names) if over is not None else list(config.free_fields)
    role_ = parse_role(role)
    avail = available_set(available, config)
    rules = compiled_rules(config).rules
    domains = [_config_values(rules, f, config) for f in fields_]
    rows = []
    for combo in itertools.product(*domains):
        changes = dict(zip(fields_, combo))
        try:
            cfg = config.replace(**changes)
        except ConfigError:
            continue
        assignment = {f: (format_cc(v) if f == "compute_capability" and isinstance(v, tuple) else v)
                      for f, v in ((f, getattr(cfg, f)) for f in fields_)}
        if cfg.is_partial:
            rows.append((assignment, possible_backends(cfg, role=role_, available=avail)))
        else:
            try:
                rows.append((assignment, solve_uncached(cfg, role_, avail).backend))
            except SelectionError:
                rows.append((assignment, None))
            except ConfigError:  # no configuration for this role (CPU's MLA prefill has no list): left out, as
                continue         # Config's refusals above and the sweep's exclusions are
    return tuple(rows)


# ---------------------------------------------------------------------------------------------
# Helpers




def _priority_order(facts: Mapping[str, Any], config: Config) -> list[str]:
    rules = compiled_rules(config).rules
    out: list[str] = []
    for pl in rules.lists:
        for e in pl.entries:
            if e.backend not in out:
                out.append(e.backend)
    return out


# ---------------------------------------------------------------------------------------------
# Partial configs


def _config_values(rules: Any, field_name: str, config: Config) -> list[Any]:
    if field_name == "compute_capability":
        return [tuple(map(int, g.split("."))) for g in rules.generations]
    if field_name in rules.domains:
        vals = list(rules.domains[field_name])
        return [None, *vals] if field_name in ("block_size", "flash_attn_version") else vals
    reps = list(representatives(rules, field_name))
    return reps


def _explain_partial(config: Config, role: str, available: frozenset[str] | None, max_conflicts: int) -> Explanation:
    possible = possible_backends(config, role=role, available=available)
    requested = config.backend if config.backend not in (None, ANY) else None
    verdicts = tuple(Verdict(b, True, ()) for b in possible)
    if possible and (requested is None or requested in possible):
        return Explanation(config, role, possible[0] if len(possible) == 1 else None, None, requested, verdicts,
                           possible=possible, conditions=_conditions(config, role, available), available=available)
    conflicts = find_conflicts(config, role, available, requested, max_conflicts)
    conflict = conflicts[0] if conflicts else {}
    hardware_only = bool(conflict) and all(category(f) == "hardware" for f in conflict)
    fixes: list[Fix] = []
    return Explanation(config, role, None, None, requested, verdicts, conflict, tuple(conflicts), tuple(fixes),
                       (), hardware_only, possible=possible, available=available)


def _conditions(config: Config, role: str, available: frozenset[str] | None,
                limit: int = 2048) -> tuple[tuple[str, Mapping[str, tuple[Any, ...]]], ...]:
    """Per possible backend, the free fields' values under which it is selected (small spaces only)."""
    rules = compiled_rules(config).rules
    free = list(config.free_fields)
    size = 1
    for f in free:
        size *= max(1, len(_config_values(rules, f, config)))
    if not free or size > limit:
        return ()
    per: dict[str, dict[str, list[Any]]] = {}
    for assignment, backend in selection_table(config, free, role=role, available=available):
        if not isinstance(backend, str):
            continue
        slot = per.setdefault(backend, {f: [] for f in free})
        for f, v in assignment.items():
            if v not in slot[f]:
                slot[f].append(v)
    out = []
    for backend, when in per.items():
        narrowed = {f: tuple(v) for f, v in when.items()
                    if len(v) < len([x for x in _config_values(rules, f, config)])}
        out.append((backend, narrowed))
    return tuple(out)


# A failing solve() explains itself on first use through this hook (selection never imports explain).
SelectionError.explainer = explain
