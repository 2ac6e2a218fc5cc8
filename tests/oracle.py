"""An independent, deliberately naive re-reading of the rules: the oracle the solvers are compared with.

It reads only the *declared* data of a RuleSet (Backend.caps, variants, custom checks, guards,
priority lists, derived decision lists) and re-implements their meaning with plain loops:

- no bitsets, no CSP, nothing from ``attnsolve.solver`` or ``attnsolve.selection``;
- predicates are evaluated by ``pred_holds`` below, not by ``Pred.__call__``;
- capabilities are checked from ``Backend.caps`` (not from the loader's expanded ``Backend.checks``),
  in vLLM's validate_configuration order (spec: vllm-selection-semantics.md section 1.2).

Only the backend-specific "combination" checks (and the checks a backend puts in a generic check's place,
``at = KEY``) are taken from ``Backend.checks`` (they have no other form). Around the lists it walks the
platform's own steps by hand (``select``): the MLA layer's decode backend before its prefill backend,
request errors, rewrites before selection, dropped requests, model code that picks the backend, then
the first list whose condition holds, and the fallback for a request refused for exactly the declared
reasons.
Slow on purpose: clarity over speed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import pytest

from attnsolve import vllm_versions
from attnsolve.config import ANY, FIELD_NAMES, Config
from attnsolve.rules.model import Capabilities, Check, Literal, Pred, RuleSet

# The releases whose rule-language constructs this oracle has learned: 0.17's, and what vLLM 0.33's set
# added (the ROCm compute capability from the gfx arch, aliases, config rewrites, model routes and
# model-chosen backends, requested-backend fallbacks and request errors, decision-tree lists, entry
# conditions, `at` checks, exact block sizes, `combination_reasons = "first"`, field comparisons and
# local arithmetic in derived facts, the MLA prefill step with its skips and fallbacks). Composite
# backends need nothing: their capabilities are their own. Definitions in invariants.toml (use_dcp =
# dcp_size > 1) hold in every Config, so the oracle reads both fields as given.
# Tests that compare with the oracle carry ORACLE_RELEASES and run for every packaged release; the oracle
# refuses a release it has not learned (select() fails naming it): teach it the release's new constructs,
# then add the release here.
KNOWS = ("0.16", "0.17", "0.18", "0.18.1", "0.19", "0.20", "0.21", "0.22", "0.23", "0.24", "0.25", "0.26", "0.27", "0.28", "0.29", "0.30", "0.31", "0.32", "0.33", "0.34")
ORACLE_RELEASES = pytest.mark.every_release

CAP_KEYS = ("dtypes", "kv_cache_dtypes", "kernel_block_sizes", "head_sizes", "compute_capability",
            "attn_types", "sink", "mm_prefix", "mla", "sparse", "dcp")

_PACKAGED = tuple(vllm_versions())
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


def _show_bool(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _cc_text(v: Any) -> str:
    return f"{v // 10}.{v % 10}"


def _special(facts: Mapping[str, Any], key: str, show: Any) -> str | None:
    """The placeholders that are not plain field names: `{field|default}` (the default when unset), the
    compute capability printed as vLLM does (`9.0`, `DeviceCapability(major=9, minor=0)`)."""
    if "|" in key:
        name, _, default = key.partition("|")
        v = facts.get(name)
        return default if v is None else show(name, v)
    cc = facts.get("compute_capability")
    is_cc = isinstance(cc, int) and not isinstance(cc, bool)
    if key == "device_capability":
        return f"DeviceCapability(major={cc // 10}, minor={cc % 10})" if is_cc else "None"
    if key == "compute_capability" and is_cc:
        return _cc_text(cc)
    return None


def render(text: str, facts: Mapping[str, Any]) -> str:
    """A check's reason: booleans as the rules write them (true / false), unknown names kept."""
    def show(name: str, v: Any) -> str:
        return v if isinstance(v, str) else _show_bool(v)

    def one(m: re.Match) -> str:
        key = m.group(1)
        got = _special(facts, key, show)
        if got is not None:
            return got
        return show(key, facts[key]) if key in facts else m.group(0)
    return re.sub(r"\{([^{}]+)\}", one, text)


def render_py(text: str, facts: Mapping[str, Any]) -> str:
    """Log lines and vLLM's messages print values as Python's str() does (compute capability as 9.0)."""
    def show(name: str, v: Any) -> str:
        if name == "compute_capability" and isinstance(v, int) and not isinstance(v, bool):
            return _cc_text(v)
        return str(v)

    def one(m: re.Match) -> str:
        key = m.group(1)
        got = _special(facts, key, show)
        if got is not None:
            return got
        return show(key, facts[key]) if key in facts else m.group(0)
    return re.sub(r"\{([^{}]+)\}", one, text)


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
    return with_derived(rules, facts)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _locals(d: Any, facts: Mapping[str, Any]) -> dict[str, Any]:
    """A derived fact's local arithmetic (sums, integer quotients, products); None when a part is unset."""
    out: dict[str, Any] = {}
    for kind in ("sums", "quotients", "products"):
        for name, parts in getattr(d, kind, ()):
            vals = [facts.get(f) for f in parts]
            if not all(_is_int(v) for v in vals):
                out[name] = None
            elif kind == "sums":
                out[name] = sum(vals)
            elif kind == "products":
                prod = 1
                for v in vals:
                    prod *= v
                out[name] = prod
            else:
                out[name] = vals[0] // vals[1] if vals[1] else None
    return out


def _comparison(op: str, a: Any, b: Any) -> bool:
    """A field comparison (`eq_field`, `ne_field`, `le_field`, `multiple_of_field`): Python's ==, !=, <= on
    integers and divisibility."""
    if op == "eq":
        return a == b
    if op == "ne":
        return a != b
    if op == "le":
        return _is_int(a) and _is_int(b) and a <= b
    if op == "multiple_of":
        return _is_int(a) and _is_int(b) and b != 0 and a % b == 0
    raise AssertionError(f"the oracle does not know the field comparison {op!r}")


def with_derived(rules: RuleSet, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The facts with every derived fact (re)computed in the rule set's order (inputs first): a field
    comparison by its operator, otherwise the first case whose conditions hold. Local arithmetic is
    published too (messages print it)."""
    local_names = {n for d in rules.derived.values() for kind in ("sums", "quotients", "products")
                   for n, _ in getattr(d, kind, ())}
    out = {k: v for k, v in facts.items() if k not in rules.derived and k not in local_names}
    published: dict[str, Any] = {}
    for name, d in rules.derived.items():
        compute = getattr(d, "compute", None)
        if compute is not None:
            op, (a, b) = compute
            out[name] = _comparison(op, out.get(a), out.get(b))
            continue
        loc = _locals(d, out)
        view = {**out, **loc}
        for case in d.cases:
            if all_hold(case.when, view):
                out[name] = case.value
                break
        for k, v in loc.items():
            published.setdefault(k, v)
    for k, v in published.items():
        out.setdefault(k, v)
    return out


def _with_sums(d: Any, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The facts plus the derived fact's local arithmetic."""
    return {**facts, **_locals(d, facts)}


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


# ---------------------------------------------------------------------------------------------------
# a backend's own capabilities
# ---------------------------------------------------------------------------------------------------
def _variant(backend: Any, facts: Mapping[str, Any]) -> Any:
    """The backend's variant picked by its variant field's value (None: no variant applies)."""
    if backend.variant_field is None:
        return None
    value = facts.get(backend.variant_field)
    for v in backend.variants:
        if value in v.values:
            return v
    return None


def effective_caps(backend: Any, facts: Mapping[str, Any]) -> Capabilities:
    """The backend's declared capabilities with its variant's overrides (picked by the variant field)."""
    v = _variant(backend, facts)
    return backend.caps if v is None else backend.caps.merged(v.caps)


def variant_name(backend: Any, facts: Mapping[str, Any]) -> str | None:
    """The variant reported: the value of `variant_shown_by` when it is a name (FLASH_ATTN's FA version),
    else the variant that value (or the variant field's) selects."""
    if backend.variant_field is None:
        return None
    shown_by = getattr(backend, "variant_shown_by", None)
    if shown_by:
        value = facts.get(shown_by)
        if isinstance(value, str):
            return value
        for v in backend.variants:
            if value in v.values:
                return v.name
        return None
    v = _variant(backend, facts)
    return None if v is None else v.name


def _in_list(value: Any, allowed: tuple[Any, ...]) -> bool:
    for a in allowed:
        if isinstance(a, str) and a.endswith("*"):
            if isinstance(value, str) and value.startswith(a[:-1]):
                return True
        elif value == a:
            return True
    return False


class _Reasons:
    """vLLM's reason list: each check's text once (a text with no source check, e.g. a generic one, once in
    all); of the checks of vLLM's single-string supports_combination (`first`), only the first that fails."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.seen: set[tuple[int, str]] = set()
        self.first_group: int | None = None

    def add(self, text: str, group: int = 0, first: bool = False) -> None:
        if first:
            if self.first_group is None:
                self.first_group = group
            elif group != self.first_group:
                return
        if (group, text) in self.seen or (group == 0 and text in self.out):
            return
        self.seen.add((group, text))
        self.out.append(text)


def own_reasons(backend: Any, facts: Mapping[str, Any], rules: RuleSet | None = None) -> tuple[str, ...]:
    """vLLM's validate_configuration for this backend, read from its declared capabilities, in vLLM's order.

    The generic checks come from the rule set's `[[generic_checks]]` (each release declares its own list,
    order, defaults and texts), read here form by form; a backend check written `at = KEY` takes generic
    check KEY's place (ROCm's capability from the gfx arch); then the backend's combination checks."""
    if rules is None:
        from attnsolve.rules import default_rules
        rules = default_rules()
    caps = effective_caps(backend, facts)
    keys = {g.key for g in rules.generic_checks}
    # `at` checks: declared checks (group > 0; capability checks have none) labelled with a generic key
    at: dict[str, list[Check]] = {}
    for c in backend.checks:
        if c.kind in keys and c.group:
            at.setdefault(c.kind, []).append(c)
    out = _Reasons()
    for g in rules.generic_checks:
        if g.key in at:
            for c in at[g.key]:
                if check_fires(c, facts):
                    out.add(render(c.reason, facts), c.group)
            continue
        if g.roles and backend.role not in g.roles:
            continue
        if g.when and not all_hold(g.when, facts):
            continue
        reason = _generic_reason(g, caps, facts)
        if reason:
            out.add(reason)
    for c in backend.checks:  # the backend-specific checks (the only ones not declared as caps)
        if c.kind in keys or c.kind in ("skip", "guard"):
            continue
        if check_fires(c, facts):
            out.add(render(c.reason, facts), c.group, c.first)
    return tuple(out.out)


def _generic_reason(g: Any, caps: Capabilities, facts: Mapping[str, Any]) -> str | None:
    """One generic check by its form: the reason it gives against these facts, or None when it passes."""
    declared = caps.get(g.key)
    cap = g.default if declared is None else declared
    value = facts.get(g.field)
    if g.form == "flag":
        return None
    unset_passes = caps.get(g.key + "_unset_passes", g.unset_passes)  # a backend may override it
    if g.form in ("supports", "matches"):
        has = bool(cap)
        if g.form == "supports":
            return render(g.reason, facts) if value and not has else None
        if bool(value) == has:
            return None
        return render(g.reason_true if value else g.reason_false, facts)
    if value is None and unset_passes:
        return None
    exact = caps.get(g.exact_key) if g.exact_key else None
    if exact is not None:  # an exact list replaces the capability (B12X's exact block sizes)
        return None if value in exact else render(g.reason, facts)
    if cap is None:
        return None
    if g.form == "predicate" and isinstance(cap, (tuple, list)):
        ok = _in_list(value, tuple(cap))  # a list default: membership
    elif g.form == "predicate":
        ok = pred_holds(cap, value)
    elif g.form == "values":
        ok = _in_list(value, tuple(cap))
    elif g.form == "multiple_of":
        ok = value is not None and any(value % k == 0 for k in cap)
    else:
        raise AssertionError(f"the oracle does not know the generic-check form {g.form!r}")
    return None if ok else render(g.reason, facts)


def guard_reasons(guards: tuple[Check, ...], facts: Mapping[str, Any]) -> tuple[str, ...]:
    """A list entry's own refusals (an entry's `when` is not one: a candidate it excludes is not tried)."""
    out: list[str] = []
    for c in guards:
        if c.kind == "skip":
            continue
        if check_fires(c, facts):
            r = render(c.reason, facts)
            if r not in out:
                out.append(r)
    return tuple(out)


# ---------------------------------------------------------------------------------------------------
# selection
# ---------------------------------------------------------------------------------------------------
NO_PREFILL = "NO_PREFILL"                  # the MLA layer runs without a prefill backend ...
NO_PREFILL_PATH = "top-k MQA path only"    # ... and this instead (the answer's variant)


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
    # vLLM's whole text when it fails before validating any backend (a request it cannot load, a model
    # route's error, a decision-tree branch that raises): `tried` then holds the request alone, or nothing
    message: str | None = None
    # the backend a refused request names (an alias resolved; the prefill registry's own name)
    requested: str | None = None
    # candidate -> the name a failure lists it under (the MLA prefill registry prints vLLM's prefill names)
    shown: dict[str, str] = field(default_factory=dict)
    # config values vLLM changed around selection ((field, value), in order)
    changes: list[tuple[str, Any]] = field(default_factory=list)
    model_route: str | None = None        # the model code that chose the backend (no validation)
    # an MLA prefill question answered by the layer's decode selection, which failed first
    decode_failed: bool = False

    @property
    def rejected(self) -> list[tuple[str, tuple[str, ...]]]:
        """The candidates tried before the selected one (all of them when nothing was selected)."""
        out = []
        for b, r in self.tried:
            if b == self.backend:
                break
            out.append((b, r))
        return out

    def name(self, backend: str) -> str:
        """How a failure names a tried backend."""
        return self.shown.get(backend, backend)


def _platform_head(rules: RuleSet, platform: Any) -> Any:
    """The platform-wide settings: every list of a platform carries them; read them off its first list."""
    for pl in rules.lists:
        if pl.platform == platform:
            return pl
    return None


def _cc_of(text: Any) -> int | None:
    """A capability written as text ("9.4") -> 94; None when unset or not a capability."""
    if text is None:
        return None
    major, _, minor = str(text).partition(".")
    if not major.isdigit() or (minor and not minor.isdigit()):
        return None
    return int(major) * 10 + (int(minor) if minor else 0)


def _prefill_name(rules: RuleSet, wanted: str) -> str:
    """A prefill request (vLLM's prefill registry name) -> the rules' backend name."""
    for b in rules.backends.values():
        if b.role == "mla_prefill" and (b.vllm_name or b.name) == wanted:
            return b.name
    return wanted


def select(rules: RuleSet, config: Config, role: str = "decode", available: frozenset[str] | None = None) -> Answer:
    """Which backend the rules pick for a full config, by walking the platform's steps and lists by hand."""
    if rules.vllm in _PACKAGED and rules.vllm not in KNOWS:
        raise AssertionError(f"the oracle has not learned vLLM {rules.vllm}'s rules: teach tests/oracle.py the "
                             f"constructs that release added, then add it to oracle.KNOWS")
    if config.use_mla is False and role == "mla_prefill":
        return Answer(None, "error", error=BAD_ROLE)
    head = _platform_head(rules, config.platform)
    if role == "mla_prefill" and head is not None and head.mla_prefill is not None:
        return _prefill(rules, config, head.mla_prefill, available)
    return _select(rules, config, role, available)


def _prefill(rules: RuleSet, config: Config, mp: Any, available: frozenset[str] | None) -> Answer:
    """vLLM >= 0.18's MLA layer: its decode backend first (a failure there is the answer), then the skips
    (no prefill backend for this layer), the prefill lists, and the fallbacks that swallow their failure."""
    decode = _select(rules, config, "decode", available)
    if decode.backend is None:
        decode.decode_failed = decode.error is None
        return decode
    facts = facts_of(rules, config, "mla_prefill")
    for k, v in decode.changes:
        facts[k] = v
    facts["decode_backend"] = decode.backend
    facts = with_derived(rules, facts)
    for text, when in mp.skips:
        if all_hold(when, facts):
            return Answer(NO_PREFILL, "auto", "MLA prefill skipped", variant=NO_PREFILL_PATH, facts=facts)
    ans = _select(rules, config, "mla_prefill", available)
    if ans.backend is None and ans.mode == "auto" and ans.error is None:
        for text, when in mp.fallbacks:
            if all_hold(when, facts):
                tried = [(_prefill_name(rules, ans.name(b)), r) for b, r in ans.tried]
                return Answer(NO_PREFILL, "auto", "MLA prefill fallback", tried, NO_PREFILL_PATH, facts=facts)
    return ans


def _select(rules: RuleSet, config: Config, role: str, available: frozenset[str] | None) -> Answer:
    facts = facts_of(rules, config, role)
    head = _platform_head(rules, facts["platform"])
    changes: list[tuple[str, Any]] = []
    if head is not None:
        if role == "mla_prefill" and head.mla_prefill is not None:
            # the prefill registry's own request (its names); the decode request is not its business
            req_field = head.mla_prefill.request_field
            wanted = facts.get(req_field) if req_field else None
            facts["backend"] = None if wanted is None else _prefill_name(rules, wanted)
            facts = with_derived(rules, facts)
        if head.compute_capability_from and facts["compute_capability"] is None:
            # the device capability validate_configuration sees off CUDA (ROCm: from the gfx arch)
            facts["compute_capability"] = _cc_of(facts.get(head.compute_capability_from))
            facts = with_derived(rules, facts)
        requested = facts["backend"]
        if requested is not None:
            for text, when in head.request_errors:  # names vLLM cannot even load
                if all_hold(when, facts):
                    return Answer(None, "manual", tried=[(requested, ())], facts=facts,
                                  message=render_py(text, facts), requested=requested)
        for rw in head.rewrites:  # config changes before selection, each on the facts so far
            if rw.stage == "before_selection" and all_hold(rw.when, facts):
                for k, v in rw.set:
                    facts[k] = v
                    changes.append((k, v))
                for k in rw.unset:
                    facts[k] = None
                    changes.append((k, None))
                facts = with_derived(rules, facts)
        for text, when, only, _level in head.request_fallbacks:  # requests dropped for automatic selection
            if not only and facts["backend"] is not None and all_hold(when, facts):
                facts["backend"] = None
                facts = with_derived(rules, facts)
                break
        if role == "decode":
            got = _model_code(rules, head, facts, changes)
            if got is not None:
                return got
    plist = None
    for pl in rules.lists:
        if pl.platform == facts["platform"] and all_hold(pl.when, facts):
            plist = pl
            break
    if plist is None:
        return Answer(None, "error", facts=facts, error=NO_LIST)
    if plist.error:  # a decision-tree branch that raises
        return Answer(None, "auto", plist.name, facts=facts, message=render_py(plist.error, facts))
    if plist.no_prefill:  # a branch giving the MLA layer no prefill backend (0.16/0.17's sparse layers)
        return Answer(NO_PREFILL, "auto", plist.name, variant=NO_PREFILL_PATH, facts=facts, changes=changes)

    requested = facts["backend"]
    ans = Answer(None, "auto", plist.name, facts=facts, changes=changes)
    mp = plist.mla_prefill if role == "mla_prefill" else None
    # the prefill registry's own messages name vLLM's prefill names: an automatic failure under its no-valid
    # text, a refused request under its invalid text
    prefill_names = {b.name: b.vllm_name for b in rules.backends.values() if b.vllm_name}

    def not_runnable(name: str) -> tuple[str, ...]:
        return () if available is None or name in available else ("kernel not runnable on this machine",)

    seen = dict(facts, **{f: None for f in plist.drops})  # the platform's selector drops these fields
    if requested is None or plist.manual in ("ignore", "list"):  # "list": the request only chose the list
        for entry in plist.entries:
            b = rules.backends[entry.backend]
            if b.explicit_only:
                continue
            if entry.when and not any(all_hold(alt, seen) for alt in entry.when):
                continue  # an entry whose condition does not hold is not tried
            validate = plist.validate if entry.validate is None else entry.validate
            reasons = own_reasons(b, seen, rules) if validate else ()
            reasons = reasons + tuple(r for r in guard_reasons(entry.guards, seen) if r not in reasons)
            reasons += not_runnable(entry.backend)
            ans.tried.append((entry.backend, reasons))  # every candidate gets a verdict
            if not reasons and ans.backend is None:
                ans.backend = entry.backend
    elif plist.manual == "validate":
        ans.mode = "manual"
        b = rules.backends[requested]
        if b.alias_of:  # a request for an alias is a request for its backend
            requested = b.alias_of
            b = rules.backends[requested]
        reasons = own_reasons(b, seen, rules)
        extra = []
        if plist.platform not in b.platforms and plist.request_platform_check:
            extra.append("platform")
        if b.role != role:
            extra.append("role")
        reasons = tuple(extra) + reasons + not_runnable(requested)
        ans.tried.append((requested, reasons))
        ans.requested = requested
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
        ans.requested = requested
        if not reasons:
            ans.backend = requested
    if mp is not None and (mp.invalid_message if ans.mode == "manual" else mp.no_valid_message):
        ans.shown = prefill_names
        if ans.requested is not None:
            ans.requested = ans.name(ans.tried[0][0])
    if ans.backend is None and ans.mode == "manual":
        reasons = ans.tried[0][1]
        for _text, when, only, _level in plist.request_fallbacks:
            # a request refused for exactly these reasons: vLLM selects automatically instead
            if only and tuple(reasons) in only and all_hold(when, facts):
                return select(rules, config.replace(backend=None), role, available)
    if ans.backend is not None:
        ans.variant = variant_name(rules.backends[ans.backend], facts)
        after = dict(facts, backend=ans.backend)
        for rw in plist.rewrites:  # the first change vLLM makes after selecting (a sparse KV format)
            if rw.stage == "after_selection" and all_hold(rw.when, after):
                ans.changes += list(rw.set)
                break
    return ans


def _model_code(rules: RuleSet, head: Any, facts: dict[str, Any], changes: list[tuple[str, Any]]) -> Answer | None:
    """Model code that chooses the backend itself, before and without any list or validation: the first
    `model_backend` case, else the first model route (its error, or its backend with its KV handling)."""
    for case in head.model_backend:
        if all_hold(case.when, facts):
            chosen = facts["backend"] if case.value == "backend" else case.value
            return _by_model(rules, "model", chosen, None, facts, changes)
    for route in head.model_routes:
        if not all_hold(route.when, facts):
            continue
        if route.error:
            return Answer(None, "auto", facts=facts, message=render_py(route.error, facts))
        rfacts = dict(facts, route_variant=route.variant or None)
        for kv in head.model_route_kv:
            if all_hold(kv.when, rfacts):
                if kv.error:
                    return Answer(None, "auto", facts=facts, message=render_py(kv.error, rfacts))
                for k, v in kv.set:
                    facts[k] = v
                    changes.append((k, v))
                facts = with_derived(rules, facts)
                break
        return _by_model(rules, route.name, route.result, route.variant or None, facts, changes)
    return None


def _by_model(rules: RuleSet, route: str, backend: str, variant: str | None, facts: dict[str, Any],
              changes: list[tuple[str, Any]]) -> Answer:
    if backend not in rules.backends:
        return Answer(None, "auto", facts=facts, message=f"the model route {route!r} names no backend")
    if variant is None:
        variant = variant_name(rules.backends[backend], facts)
    return Answer(backend, "auto", f"model: {route}", variant=variant, facts=facts, changes=changes,
                  model_route=route)


def preferred_block_size(rules: RuleSet, backend: str, block_size: int | None, list_name: str | None = None,
                         facts: Mapping[str, Any] | None = None) -> int | None:
    """vLLM start-up: the platform's start-up rule when it has one (its first matching case, which may test
    the chosen backend as `selected`; "block_size" keeps the user's), else the user's block size, else the
    backend's declared preferred size, else the release's default size (16; 64 from 0.34) if the backend
    (its variant) accepts it, else its smallest kernel size. None for an answer that is no backend (the MLA layer without a prefill backend)."""
    if backend not in rules.backends:
        return None
    # the rule is the platform's (every list of it carries it): a model-driven answer ("model: ...") meets it too
    model_driven = isinstance(list_name, str) and list_name.startswith("model: ")
    for pl in rules.lists:
        if (pl.name == list_name or model_driven) and facts is not None and pl.platform == facts.get("platform"):
            sfacts = dict(facts, selected=backend)
            for case in pl.start_block_size:
                if all(literal_holds(lit, sfacts) for lit in case.when):
                    if case.value == "preferred":  # the rule below, as without cases
                        break
                    return block_size if case.value == "block_size" else case.value
            break
    if block_size is not None:
        return block_size
    b = rules.backends[backend]
    if b.preferred_block_size is not None:  # declared start-up size (ROCm unified: 64)
        return b.preferred_block_size
    caps = effective_caps(b, facts or {})
    exact_key = next((g.exact_key for g in rules.generic_checks if g.field == "block_size" and g.exact_key), "")
    exact = caps.get(exact_key) if exact_key else None
    # vLLM's CacheConfig.DEFAULT_BLOCK_SIZE, as the rule set records it ([ruleset] default_block_size; 16 when absent)
    default = rules.settings.get("default_block_size", 16)
    if exact:  # exact sizes replace the multiples
        return default if default in exact else min(exact)
    sizes = caps.kernel_block_sizes
    if not sizes or any(default % s == 0 for s in sizes):
        return default
    return min(sizes)


def is_full(config: Config) -> bool:
    return all(getattr(config, f) is not ANY for f in config.field_names)
