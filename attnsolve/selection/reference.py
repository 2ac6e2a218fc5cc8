"""solve_csp(): the selected backend by the python-constraint2 CSP alone, the reference for solve().

The platform's steps and the MLA prefill layer are the same data on both paths; only the list walk differs.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..config import ANY, Config
from ..errors import ConfigError, InvalidBackendError, NoValidBackendError
from ..solver.facts import parse_role
from ..solver.semantics import AUTO
from .core import prefill_layer, request_fallback
from .prefill import prefill_fallback
from .release import compiled_rules, csp_solver
from .result import NO_PREFILL
from .steps import before_selection, prefill_step, with_derived


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
    if pre.model is not None:  # model code's backend; a route naming no backend of the rules fails, as in solve()
        return pre.model[0] if pre.model[0] in comp.rules.backends else None
    if _no_prefill_branch(comp, pre.facts):
        return NO_PREFILL
    backend, _ = csp_solver(config).select(pre.facts, avail)
    if backend is None and pre.facts.get("backend") is not None and _falls_back(comp, pre.facts, avail):
        # a refused request vLLM replaces by automatic selection (ROCm's turboquant runs): the same data as solve()
        backend, _ = csp_solver(config).select(dict(pre.facts, backend=None), avail)
    if backend is None and layer is not None and pre.facts.get("backend") is None \
            and prefill_fallback(mp, layer.facts) is not None:
        return NO_PREFILL
    return backend


def _plan_of(comp: Any, facts: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The facts with their derived ones, and the plan of the list that applies to them (None: no list)."""
    full, _ = with_derived(comp, facts)
    got = comp.plan_for(full)
    return full, (None if got is None else got[0])


def _no_prefill_branch(comp: Any, facts: dict[str, Any]) -> bool:
    """Whether the list that applies to `facts` gives the layer no prefill backend (`no_prefill`)."""
    plan = _plan_of(comp, facts)[1]
    return plan is not None and plan.plist.no_prefill


def _falls_back(comp: Any, facts: dict[str, Any], available: frozenset[str] | None) -> bool:
    """Whether the request in `facts` is one a list's request fallback replaces by automatic selection."""
    full, plan = _plan_of(comp, facts)
    if plan is None:
        return False
    return (plan.mode != AUTO and bool(plan.candidates) and bool(plan.plist.request_fallbacks)
            and request_fallback(full, plan, available) is not None)
