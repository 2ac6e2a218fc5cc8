"""vLLM's selection semantics over the rules, independent of how validity is computed.

Both solvers (bitsets and CSP) call `candidates()` to learn *what* must be checked and in which
order; they differ only in *how* they decide that a candidate's checks hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..rules.model import Check, Literal, Pred, PriorityList, RuleSet, firing_reasons

AUTO = "auto"
MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A backend to try and every check that must not fire for it to be chosen."""

    backend: str
    checks: tuple[Check, ...]
    validated: bool  # its own capability checks are part of `checks`


@dataclass(frozen=True, slots=True)
class Plan:
    """What selection does for one list and one request: automatic or manual, and the candidates."""

    plist: PriorityList
    mode: str  # AUTO or MANUAL
    candidates: tuple[Candidate, ...]
    warning: str | None = None


_NEVER = Literal("backend", Pred(in_=frozenset()))  # a literal that never holds: an unconditional refusal


def role_mismatch_check(role: str) -> Check:
    """The refusal of a backend of `role` asked for the other role (a decode backend for MLA prefill, or back)."""
    own, asked = ("MLA prefill", "a decode") if role == "mla_prefill" else ("decode (attention)", "an MLA prefill")
    return Check(f"not {asked} backend: it is selected for the {own} role", Literal("role", Pred(eq=role)), (), "role")


def platform_check(platforms: tuple[str, ...]) -> Check:
    return Check("not supported on platform {platform}", Literal("platform", Pred(in_=frozenset(platforms))), (), "platform")


def select_list(rules: RuleSet, facts: Mapping[str, Any]) -> PriorityList | None:
    for pl in rules.lists:
        if pl.platform == facts.get("platform") and pl.applies(facts):
            return pl
    return None


def without_dropped(checks: tuple[Check, ...], dropped: tuple[str, ...]) -> tuple[Check, ...]:
    """The checks as the platform's selector sees them with the `dropped` fields set to None.

    A literal over a dropped field is decided by its answer for None: a `when` that fails drops the
    check, one that holds is removed; a `require` that holds drops the check, one that fails makes
    the check fire whenever its `when` holds."""
    if not dropped:
        return checks
    out: list[Check] = []
    for c in checks:
        when: list[Literal] = []
        live = True
        for w in c.when:
            if w.field in dropped:
                if not w.pred(None):
                    live = False
                    break
            else:
                when.append(w)
        if not live:
            continue
        require = c.require
        if require.field in dropped:
            if require.pred(None):
                continue
            require = _NEVER
        out.append(Check(c.reason, require, tuple(when), c.kind) if (require is not c.require or
                                                                      len(when) != len(c.when)) else c)
    return tuple(out)


def plan(rules: RuleSet, pl: PriorityList, requested: str | None) -> Plan:
    """The candidates vLLM tries for list `pl` when `requested` (or nothing) was asked for."""
    p = _plan(rules, pl, requested)
    if not pl.drops:
        return p
    return Plan(p.plist, p.mode, tuple(Candidate(c.backend, without_dropped(c.checks, pl.drops), c.validated)
                                       for c in p.candidates), p.warning)


def _plan(rules: RuleSet, pl: PriorityList, requested: str | None) -> Plan:
    if requested is None or pl.manual in ("ignore", "list"):  # "list": the request only steers list choice
        warning = None
        if (requested is not None and pl.manual != "list" and requested not in [e.backend for e in pl.entries]
                and requested not in pl.ignore_silent):
            warning = pl.ignore_warning.replace("{backend}", requested) if pl.ignore_warning else None
        cands = []
        for e in pl.entries:
            b = rules.backends[e.backend]
            if b.explicit_only:
                continue
            validate = pl.validate if e.validate is None else e.validate
            own = b.checks if validate else ()
            cands.append(Candidate(e.backend, (*own, *e.guards), validate))
        return Plan(pl, AUTO, tuple(cands), warning)
    if requested is not None and requested in rules.backends and rules.backends[requested].alias_of:
        requested = rules.backends[requested].alias_of  # vLLM resolves an alias to its backend
    if pl.manual == "validate":
        b = rules.backends[requested]
        extra: list[Check] = []
        if pl.platform not in b.platforms and pl.request_platform_check:
            extra.append(platform_check(b.platforms))
        if b.role != _list_role(pl):
            extra.append(role_mismatch_check(b.role))
        return Plan(pl, MANUAL, (Candidate(requested, (*extra, *b.checks), True),))
    for e in pl.manual_accept:
        if e.backend == requested:
            return Plan(pl, MANUAL, (Candidate(requested, e.guards, False),))
    refusal = Check(pl.manual_other.replace("{backend}", requested) or f"{requested} cannot be selected here",
                    _NEVER, (), "guard")
    return Plan(pl, MANUAL, (Candidate(requested, (refusal,), False),))


def _list_role(pl: PriorityList) -> str:
    for lit in pl.when:
        if lit.field == "role" and lit.pred.eq is not None and isinstance(lit.pred.eq, str):
            return lit.pred.eq
    return "decode"


def reasons_of(cand: Candidate, facts: Mapping[str, Any]) -> tuple[str, ...]:
    return firing_reasons(cand.checks, facts)
