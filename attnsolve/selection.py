"""`solve(config)`: vLLM's selection, answered from the compiled rules, as a frozen Selection.

Automatic selection walks the platform's priority list and takes the first backend with no
reasons against it; a requested backend is validated alone and never silently replaced.
Failures raise NoValidBackendError / InvalidBackendError with vLLM's text first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .config import ANY, Config
from .errors import ConfigError, InvalidBackendError, NoValidBackendError
from .guards import available_set, require_config
from .engine import Engine, engine_for
from .rules.model import Backend, RuleSet
from .solver.compiled import CompiledRules
from .solver.facts import base_facts, parse_role
from .solver.semantics import AUTO, Candidate, Plan, reasons_of

NOT_RUNNABLE = "kernel not runnable on this machine"


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

    def __str__(self) -> str:
        return self.backend + (f" ({self.variant})" if self.variant else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "selected": self.backend, "variant": self.variant, "role": self.role, "manual": self.manual,
            "priority_list": self.priority_list, "preferred_block_size": self.preferred_block_size,
            "startup_error": self.startup_error,
            "rejected": [r.to_dict() for r in self.rejected], "warnings": list(self.warnings),
            "config": self.config.to_dict(),
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
    require_config(config)  # first: a non-Config (a list) is not even a cache key
    avail = available_set(available)
    if role is not None and not isinstance(role, str):
        role = parse_role(role)  # raises ConfigError for anything that is not a role name
    key = (config, role, avail)
    eng = engine_for(config.vllm)
    comp = eng.compiled
    cache = eng.cache
    hit = cache.get(key)
    if hit is not None:
        return hit
    if config.is_partial:
        raise ConfigError(config.free_fields[0], ANY, "a concrete value: solve() needs a full config "
                          "(use explain() or possible_backends() for partial ones)")
    role_ = parse_role(role)
    try:
        sel = _solve_uncached(comp, config, role_, avail)
    except (NoValidBackendError, InvalidBackendError) as err:
        raise err.defer_explanation(config, role_, avail) from None
    if len(cache) > 65536:
        cache.clear()
    cache[key] = sel
    return sel


def solve_uncached(config: Config, role: str = "decode", available: frozenset[str] | None = None) -> Selection:
    """solve() without the cache and without computing an explanation on failure (used by explain)."""
    return _solve_uncached(compiled_rules(config), config, role, available)


def evaluate(comp: CompiledRules, config: Config, role: str, available: frozenset[str] | None):
    """Run selection; return (facts, plan, index of the chosen candidate or None, warnings).

    facts["__sat__"] holds the satisfied-clause bitset, so reasons are read off it, not recomputed."""
    facts = base_facts(config, role)
    facts["__derived_warnings__"] = _derived_warnings(comp, facts)  # shown only if the chosen backend reads them
    warnings: list[str] = []
    got = comp.plan_for(facts)
    if got is None:
        raise ConfigError("role", role, "a role with a priority list on platform " + str(facts["platform"]))
    p, masks = got
    sat = comp.satisfied(facts)
    allowed = None if available is None else tuple(c.backend in available for c in p.candidates)
    idx = comp.first_valid(masks, sat, allowed)
    if p.warning:
        warnings.append(p.warning)
    facts["__sat__"] = sat  # read by candidate_reasons; never a rule field
    facts["__comp__"] = comp  # the release's compiled rules that computed `sat`
    return facts, p, idx, warnings


def _derived_warnings(comp: CompiledRules, facts: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Fill in the derived facts; return each one's log lines (vLLM logs them only when it asks)."""
    out: dict[str, tuple[str, ...]] = {}
    memo = comp.add_derived_by_name(facts)
    for name, w in memo.items():
        if w:
            out[name] = (w,) if isinstance(w, str) else tuple(w)
    return out


def reads(backend: Backend, field: str) -> bool:
    """Whether selecting `backend` makes vLLM compute `field` (its variant or one of its checks uses it)."""
    if field in (backend.variant_field, backend.variant_shown_by):
        return True
    return any(field in c.fields for c in backend.checks) or any(
        lit.field == field for _, when in backend.startup_failures for lit in when)


def candidate_reasons(cand: Candidate, facts: dict[str, Any], available: frozenset[str] | None) -> tuple[str, ...]:
    sat = facts.get("__sat__")
    reasons = reasons_of(cand, facts) if sat is None else facts["__comp__"].reasons(cand, facts, sat)
    if available is not None and cand.backend not in available:
        reasons = (*reasons, NOT_RUNNABLE)
    return reasons


def _solve_uncached(comp: CompiledRules, config: Config, role: str, available: frozenset[str] | None) -> Selection:
    rules = comp.rules
    facts, p, idx, warnings = evaluate(comp, config, role, available)
    if idx is None:
        err = failure(rules, config, facts, p, available)
        err.startup_error = _startup_error(comp, config, role, available, facts, p, None)
        raise err
    chosen = p.candidates[idx]
    rejected = tuple(Rejection(c.backend, candidate_reasons(c, facts, available)) for c in p.candidates[:idx])
    backend = rules.backends[chosen.backend]
    for name, lines in facts["__derived_warnings__"].items():
        if reads(backend, name):
            warnings[:0] = [w for w in lines if w not in warnings]
    if p.plist.warn_unvalidated and not chosen.validated:
        for r in backend.reasons(facts):
            warnings.append(f"{chosen.backend}: {r} (vLLM's {facts['platform']} path does not validate; "
                            "the kernel may fail at runtime)")
    for message, when in backend.warnings:
        if all(lit(facts) for lit in when):
            warnings.append(f"{chosen.backend}: {message}")
    variant = (backend.variant_for(facts.get(backend.variant_shown_by or backend.variant_field))
               if backend.variant_field else None)
    return Selection(backend=chosen.backend, variant=variant, rejected=rejected, warnings=tuple(warnings),
                     config=config, role=role, manual=p.mode != AUTO, priority_list=p.plist.name,
                     preferred_block_size=preferred_block_size(rules, chosen.backend, facts.get("block_size"),
                                                               p.plist, facts),
                     startup_error=_startup_error(comp, config, role, available, facts, p, chosen.backend))


def _startup_error(comp: CompiledRules, config: Config, role: str, available: frozenset[str] | None,
                   facts: dict[str, Any], p: Plan, chosen: str | None) -> str | None:
    """vLLM's start-up failure text for this config, in the order start-up meets them: the platform's
    own refusals (before any model code), the selection the start-up hook forces (it may request a
    backend), then the chosen backend's: kernel block sizes that cannot serve the start-up block
    size, and its own start-up failures. None when vLLM starts (or fails only as its selector does)."""
    if role != "decode":
        return None
    rules = comp.rules
    plist = p.plist
    for message, when in plist.startup_failures:
        if all(lit(facts) for lit in when):
            return render_message(message, facts, gpu=config.gpu or "CUDA")
    forced = None
    for case in plist.start_backend:
        if all(lit(facts) for lit in case.when):
            forced = case.value
            break
    if forced is not None and forced != facts.get("backend"):
        try:
            return _solve_uncached(comp, config.replace(backend=forced), role, available).startup_error
        except (NoValidBackendError, InvalidBackendError) as err:
            return err.startup_error or str(err)
    if chosen is None:
        return None
    block = preferred_block_size(rules, chosen, facts.get("block_size"), plist, facts)
    sfacts = dict(facts, block_size=block)
    sizes = rules.backends[chosen].caps.kernel_block_sizes
    if plist.block_size_failure and sizes and block is not None and not any(block % k == 0 for k in sizes):
        return render_message(plist.block_size_failure, sfacts)
    for message, when in rules.backends[chosen].startup_failures:
        if all(lit(sfacts) for lit in when):
            return render_message(message, sfacts)
    return None


class _PyShow(dict):
    """Facts as vLLM's f-strings print them: Python's str() (True, None), unknown names kept."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"

    def __getitem__(self, key: str) -> str:
        if key not in self:
            return self.__missing__(key)
        v = dict.__getitem__(self, key)
        if key == "compute_capability" and isinstance(v, int) and not isinstance(v, bool):
            return f"{v // 10}.{v % 10}"
        return str(v)


def render_message(template: str, facts: dict[str, Any], **extra: Any) -> str:
    """A vLLM message template from the rules, filled from the facts (and `extra`)."""
    return template.format_map(_PyShow({**facts, **extra}))


def preferred_block_size(rules: RuleSet, backend: str, block_size: int | None, plist: Any = None,
                         facts: Any = None) -> int | None:
    """The KV block size vLLM's start-up sets: the platform's start-up rule when it has one (first
    matching case; "block_size" keeps the user's); else the user's; else the backend's preferred
    size: 16 if it accepts 16, else its smallest kernel size."""
    if plist is not None and plist.start_block_size and facts is not None:
        for case in plist.start_block_size:
            if all(lit(facts) for lit in case.when):
                return block_size if case.value == "block_size" else case.value
    if block_size is not None:
        return block_size
    if rules.backends[backend].preferred_block_size is not None:
        return rules.backends[backend].preferred_block_size
    sizes = rules.backends[backend].caps.kernel_block_sizes
    if not sizes or any(16 % s == 0 for s in sizes):
        return 16
    return min(sizes)


def failure(rules: RuleSet, config: Config, facts: dict[str, Any], p: Plan,
            available: frozenset[str] | None) -> NoValidBackendError | InvalidBackendError:
    """The exception vLLM raises for this plan, with vLLM's wording first."""
    reasons = {c.backend: candidate_reasons(c, facts, available) for c in p.candidates}
    seen_facts = dict(facts, **{f: None for f in p.plist.drops})  # what the selector prints
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
        msg = render_message(p.plist.no_valid_message, seen_facts, reasons="{" + shown + "}")
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
    facts = base_facts(config, parse_role(role))
    backend, _ = csp_solver(config).select(facts, None if available is None else frozenset(available))
    return backend


def clear_cache(config: Config | None = None) -> None:
    """Forget solve()'s memoised answers for one release (benchmarks measure cold solves with it)."""
    engine_of(config).cache.clear()
