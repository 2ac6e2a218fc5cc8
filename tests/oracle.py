"""An independent, deliberately naive re-reading of the rules: the oracle the solvers are compared with.

It reads only the *declared* data of a RuleSet (Backend.caps, variants, custom checks, guards,
priority lists, derived decision lists) and re-implements their meaning with plain loops:

- no bitsets, no CSP, nothing from ``attnsolve.solver`` or ``attnsolve.selection``;
- predicates are evaluated by ``pred_holds`` below, not by ``Pred.__call__``;
- capabilities are checked from ``Backend.caps`` (not from the loader's expanded ``Backend.checks``),
  in vLLM's validate_configuration order (spec: vllm-selection-semantics.md section 1.2).

Only the backend-specific "combination" checks are taken from ``Backend.checks`` (they have no other form).
Slow on purpose: clarity over speed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import pytest

from attnsolve.config import ANY, FIELD_NAMES, Config
from attnsolve.rules.model import Capabilities, Check, Literal, Pred, RuleSet

# The releases whose rule-language constructs this oracle reads. It reads every release's fields and
# generic checks from the data; it does not yet re-read what vLLM 0.33's set added (the ROCm compute
# capability derived from the gfx arch, composite backends, aliases, config rewrites, model routes,
# requested-backend fallbacks, the MLA prefill registry). Tests that compare with the oracle carry
# ORACLE_RELEASES; their oracle-free siblings run for every release.
KNOWS = ("0.17",)
ORACLE_RELEASES = pytest.mark.vllm(KNOWS[-1])

CAP_KEYS = ("dtypes", "kv_cache_dtypes", "kernel_block_sizes", "head_sizes", "compute_capability",
            "attn_types", "sink", "mm_prefix", "mla", "sparse", "dcp")

NO_LIST = "<no priority list applies>"
BAD_ROLE = "<mla_prefill role on a non-MLA config>"


# ---------------------------------------------------------------------------------------------------
# predicates, written out from the Pred fields
# ---------------------------------------------------------------------------------------------------
def _no_eq() -> Any:
    return Pred().eq  # the sentinel meaning "no equality part"


_NO_EQ = _no_eq()


def pred_holds(p: Pred, value: Any) -> bool:
    """Every present part of the predicate must hold; `none` answers for a missing value; negate flips."""
    if value is None:
        answer = p.none
    else:
        answer = True
        if p.eq is not _NO_EQ and value != p.eq:
            answer = False
        if p.in_ is not None or p.prefixes:
            member = p.in_ is not None and value in p.in_
            if not member and isinstance(value, str):
                member = any(value.startswith(x) for x in p.prefixes)
            if not member:
                answer = False
        if p.not_in is not None and value in p.not_in:
            answer = False
        if isinstance(value, str) and any(value.startswith(x) for x in p.not_prefixes):
            answer = False
        if p.min is not None and value < p.min:
            answer = False
        if p.max is not None and value > p.max:
            answer = False
        if p.multiple_of is not None:
            if not any(value % m == 0 for m in p.multiple_of):
                answer = False
        if p.major_in is not None and value // 10 not in p.major_in:
            answer = False
    return (not answer) if p.negate else answer


def literal_holds(lit: Literal, facts: Mapping[str, Any]) -> bool:
    return pred_holds(lit.pred, facts.get(lit.field))


def all_hold(lits: tuple[Literal, ...], facts: Mapping[str, Any]) -> bool:
    for lit in lits:
        if not literal_holds(lit, facts):
            return False
    return True


def check_fires(c: Check, facts: Mapping[str, Any]) -> bool:
    """A check is a reason against: its conditions hold and its requirement does not."""
    return all_hold(c.when, facts) and not literal_holds(c.require, facts)


def render(text: str, facts: Mapping[str, Any]) -> str:
    def one(m: re.Match) -> str:
        key = m.group(1)
        if key not in facts:
            return m.group(0)
        v = facts[key]
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)
    return re.sub(r"\{(\w+)\}", one, text)


# ---------------------------------------------------------------------------------------------------
# facts
# ---------------------------------------------------------------------------------------------------
def facts_of(rules: RuleSet, config: Config, role: str = "decode") -> dict[str, Any]:
    """Config -> flat facts: compute capability as major*10+minor, the role, then the derived facts."""
    facts: dict[str, Any] = {}
    for name in config.field_names:  # the common fields, then the ones this release declares
        facts[name] = getattr(config, name)
    cc = facts["compute_capability"]
    if cc is not None:
        facts["compute_capability"] = cc[0] * 10 + cc[1]
    facts["role"] = role
    for name, d in rules.derived.items():  # first case whose conditions all hold
        local = _with_sums(d, facts)
        for case in d.cases:
            if all_hold(case.when, local):
                facts[name] = case.value
                break
    return facts


def _with_sums(d: Any, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The facts plus the derived fact's local sums (None when a part is None)."""
    local = dict(facts)
    for name, parts in getattr(d, "sums", ()):
        vals = [facts.get(f) for f in parts]
        local[name] = sum(vals) if all(isinstance(v, int) and not isinstance(v, bool) for v in vals) else None
    return local


def reads(backend: Any, field: str) -> bool:
    """vLLM computes a derived fact only for a backend that uses it (variant, a check, a start-up failure)."""
    return (field in (backend.variant_field, getattr(backend, "variant_shown_by", None)) or any(field in (c.require.field, *(w.field for w in c.when))
                                                  for c in backend.checks)
            or any(l.field == field for _, when in backend.startup_failures for l in when))


def derived_warnings(rules: RuleSet, facts: Mapping[str, Any], backend: Any = None) -> list[str]:
    """The log lines of the derived facts `backend` reads (all derived facts when backend is None)."""
    out = []
    for d in rules.derived.values():
        if backend is not None and not reads(backend, d.name):
            continue
        local = _with_sums(d, facts)
        for case in d.cases:
            if all_hold(case.when, local):
                lines = (case.warning,) if isinstance(case.warning, str) else (case.warning or ())
                out += [render_py(w, local) for w in lines]
                break
    return out


def render_py(text: str, facts: Mapping[str, Any]) -> str:
    """Log-line templates print values as Python's str() does."""
    return re.sub(r"\{(\w+)\}", lambda m: str(facts[m.group(1)]) if m.group(1) in facts else m.group(0), text)


# ---------------------------------------------------------------------------------------------------
# a backend's own capabilities
# ---------------------------------------------------------------------------------------------------
def effective_caps(backend: Any, facts: Mapping[str, Any]) -> Capabilities:
    """The backend's declared capabilities with its variant's overrides (picked by the variant field)."""
    caps = backend.caps
    if backend.variant_field is None:
        return caps
    value = facts.get(getattr(backend, "variant_shown_by", None) or backend.variant_field)
    for v in backend.variants:
        if value in v.values:
            return caps.merged(v.caps)
    return caps


def variant_name(backend: Any, facts: Mapping[str, Any]) -> str | None:
    if backend.variant_field is None:
        return None
    value = facts.get(getattr(backend, "variant_shown_by", None) or backend.variant_field)
    for v in backend.variants:
        if value in v.values:
            return v.name
    return None


def _in_list(value: Any, allowed: tuple[Any, ...]) -> bool:
    for a in allowed:
        if isinstance(a, str) and a.endswith("*"):
            if isinstance(value, str) and value.startswith(a[:-1]):
                return True
        elif value == a:
            return True
    return False


def own_reasons(backend: Any, facts: Mapping[str, Any], rules: RuleSet | None = None) -> tuple[str, ...]:
    """vLLM's validate_configuration for this backend, read from its declared capabilities, in vLLM's order.

    The generic checks come from the rule set's `[[generic_checks]]` (each release declares its own list,
    order, defaults and texts), read here form by form; then the backend's combination checks."""
    if rules is None:
        from attnsolve.rules import default_rules
        rules = default_rules()
    caps = effective_caps(backend, facts)
    out: list[str] = []
    for g in rules.generic_checks:
        if g.roles and backend.role not in g.roles:
            continue
        if g.when and not all_hold(g.when, facts):
            continue
        reason = _generic_reason(g, caps, facts)
        if reason and reason not in out:
            out.append(reason)
    for c in backend.checks:  # the backend-specific combination checks (the only ones not declared as caps)
        if c.kind == "combination" and check_fires(c, facts):
            r = render(c.reason, facts)
            if r not in out:
                out.append(r)
    return tuple(out)


def _generic_reason(g: Any, caps: Capabilities, facts: Mapping[str, Any]) -> str | None:
    """One generic check by its form: the reason it gives against these facts, or None when it passes."""
    declared = caps.get(g.key)
    cap = g.default if declared is None else declared
    value = facts.get(g.field)
    if g.form == "flag":
        return None
    if g.form in ("supports", "matches"):
        has = bool(cap)
        if g.form == "supports":
            return render(g.reason, facts) if value and not has else None
        if bool(value) == has:
            return None
        return render(g.reason_true if value else g.reason_false, facts)
    if value is None and g.unset_passes:
        return None
    exact = caps.get(g.exact_key) if g.exact_key else None
    if g.form == "multiple_of" and exact is not None:
        return None if value in exact else render(g.reason, facts)
    if cap is None:
        return None
    if g.form == "predicate":
        ok = pred_holds(cap, value)
    elif g.form == "values":
        ok = _in_list(value, tuple(cap))
    elif g.form == "multiple_of":
        ok = value is not None and any(value % k == 0 for k in cap)
    else:
        raise AssertionError(f"the oracle does not know the generic-check form {g.form!r}")
    return None if ok else render(g.reason, facts)


def guard_reasons(guards: tuple[Check, ...], facts: Mapping[str, Any]) -> tuple[str, ...]:
    out: list[str] = []
    for c in guards:
        if check_fires(c, facts):
            r = render(c.reason, facts)
            if r not in out:
                out.append(r)
    return tuple(out)


# ---------------------------------------------------------------------------------------------------
# selection
# ---------------------------------------------------------------------------------------------------
@dataclass
class Answer:
    """What the oracle says: the selected backend (None when selection fails) and the evidence."""

    backend: str | None
    mode: str = "auto"                    # auto | manual | error
    list_name: str | None = None
    tried: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # every candidate: (backend, reasons)
    variant: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None              # NO_LIST / BAD_ROLE

    @property
    def rejected(self) -> list[tuple[str, tuple[str, ...]]]:
        """The candidates tried before the selected one (all of them when nothing was selected)."""
        out = []
        for b, r in self.tried:
            if b == self.backend:
                break
            out.append((b, r))
        return out


def select(rules: RuleSet, config: Config, role: str = "decode", available: frozenset[str] | None = None) -> Answer:
    """Which backend the rules pick for a full config, by walking the platform's lists by hand."""
    if config.use_mla is False and role == "mla_prefill":
        return Answer(None, "error", error=BAD_ROLE)
    facts = facts_of(rules, config, role)
    plist = None
    for pl in rules.lists:
        if pl.platform == facts["platform"] and all_hold(pl.when, facts):
            plist = pl
            break
    if plist is None:
        return Answer(None, "error", facts=facts, error=NO_LIST)

    requested = facts["backend"]
    ans = Answer(None, "auto", plist.name, facts=facts)

    def not_runnable(name: str) -> tuple[str, ...]:
        return () if available is None or name in available else ("kernel not runnable on this machine",)

    seen = dict(facts, **{f: None for f in plist.drops})  # the platform's selector drops these fields
    if requested is None or plist.manual == "ignore":
        for entry in plist.entries:
            b = rules.backends[entry.backend]
            if b.explicit_only:
                continue
            reasons = own_reasons(b, seen, rules) if plist.validate else ()
            reasons = reasons + tuple(r for r in guard_reasons(entry.guards, seen) if r not in reasons)
            reasons += not_runnable(entry.backend)
            ans.tried.append((entry.backend, reasons))  # every candidate gets a verdict
            if not reasons and ans.backend is None:
                ans.backend = entry.backend
    elif plist.manual == "validate":
        ans.mode = "manual"
        b = rules.backends[requested]
        reasons = own_reasons(b, seen, rules)
        extra = []
        if plist.platform not in b.platforms and plist.request_platform_check:
            extra.append("platform")
        if b.role != role:
            extra.append("role")
        reasons = tuple(extra) + reasons + not_runnable(requested)
        ans.tried.append((requested, reasons))
        if not reasons:
            ans.backend = requested
    else:  # "table": only the listed requests, each with its own guards
        ans.mode = "manual"
        accepted = [e for e in plist.manual_accept if e.backend == requested]
        if accepted:
            reasons = guard_reasons(accepted[0].guards, seen) + not_runnable(requested)
        else:
            reasons = ("not accepted on this platform",)
        ans.tried.append((requested, reasons))
        if not reasons:
            ans.backend = requested
    if ans.backend is not None:
        ans.variant = variant_name(rules.backends[ans.backend], facts)
    return ans


def preferred_block_size(rules: RuleSet, backend: str, block_size: int | None, list_name: str | None = None,
                         facts: Mapping[str, Any] | None = None) -> int | None:
    """vLLM start-up: the platform's start-up rule when it has one (its first matching case; "block_size"
    keeps the user's), else the user's block size, else the backend's declared preferred size, else 16
    if the backend accepts it, else its smallest kernel size."""
    for pl in rules.lists:
        if pl.name == list_name and facts is not None:
            for case in pl.start_block_size:
                if all(literal_holds(lit, facts) for lit in case.when):
                    return block_size if case.value == "block_size" else case.value
    if block_size is not None:
        return block_size
    if rules.backends[backend].preferred_block_size is not None:  # declared start-up size (ROCm unified: 64)
        return rules.backends[backend].preferred_block_size
    sizes = rules.backends[backend].caps.kernel_block_sizes
    if not sizes or any(16 % s == 0 for s in sizes):
        return 16
    return min(sizes)


def is_full(config: Config) -> bool:
    return all(getattr(config, f) is not ANY for f in config.field_names)
