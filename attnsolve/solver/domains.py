"""Finite domains for the CSP: every field's values grouped into classes the rules cannot tell apart.

Numeric fields (head size, compute capability, head counts) are infinite; two values that every
predicate in the rules answers the same way are interchangeable, so one representative per class
is enough for partial-config questions, sweeps and explanations. Classes come from the rules
alone, so a new boundary in a rule file creates a new class with no code change.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..rules._fields import CONFIG_FIELDS
from ..rules.model import Pred, RuleSet

# Fields that take None as a meaningful value (vLLM's "unset").
OPTIONAL = {"block_size", "num_heads", "backend", "flash_attn_version", "use_trtllm_attention",
            "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_topk", "compute_capability", "rocm_arch"}
BOOLS = {"use_mla", "use_sparse", "has_sink", "use_mm_prefix", "trtllm_available", "rocm_use_aiter",
         "rocm_use_aiter_mha", "rocm_use_aiter_mla", "rocm_use_aiter_unified_attention",
         "use_prefill_decode_attention", "use_trtllm_ragged_deepseek_prefill", "disable_flashinfer_prefill",
         "use_cudnn_prefill", "flashinfer_available", "use_trtllm_attention"}
_COMMON = frozenset(CONFIG_FIELDS)
INTS = {"head_size", "num_heads", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_topk"}
ENUMS = {"dtype", "kv_cache_dtype", "attn_type", "platform", "rocm_arch", "block_size", "flash_attn_version"}


@dataclass(frozen=True, slots=True)
class ValueClass:
    """Values of one field that every rule treats alike; `representative` stands for all of them."""

    field: str
    representative: Any
    signature: tuple[bool, ...]
    examples: tuple[Any, ...]


def field_preds(rules: RuleSet, field: str) -> tuple[Pred, ...]:
    """Every predicate the rules apply to `field` (checks, guards, list conditions, derived cases)."""
    return _field_preds(rules)[field] if field in _field_preds(rules) else ()


@lru_cache(maxsize=64)  # per rule set: every release's (18 and growing), and a few test mutants
def _field_preds(rules: RuleSet) -> dict[str, tuple[Pred, ...]]:
    found: dict[str, dict[Pred, None]] = {}

    def add(lit: Any) -> None:
        found.setdefault(lit.field, {})[lit.pred] = None

    for b in rules.backends.values():
        for c in b.checks:
            for lit in c.clause():
                add(lit)
    for pl in rules.lists:
        for lit in pl.when:
            add(lit)
        for e in (*pl.entries, *pl.manual_accept):
            for c in e.guards:
                for lit in c.clause():
                    add(lit)
    for d in rules.derived.values():
        for case in d.cases:
            for lit in case.when:
                add(lit)
    for cond in _step_conditions(rules):
        for lit in cond:
            add(lit)
    for decl in rules.fields.values():  # a field's unset value read off others (0.21's deprecated switches name the
        for case in decl.defaults:      # MLA prefill backend): those values are told apart too
            for lit in case.when:
                add(lit)
    for inv in rules.invariants:  # a definition (use_dcp is dcp_size > 1) tells its values apart even where no
        if inv.equals is not None:  # backend reads the field (vLLM 0.24 reads no dcp_size)
            add(inv.equals)
        for c in inv.checks:
            for lit in c.clause():
                add(lit)
    return {f: tuple(p) for f, p in found.items()}


def _step_conditions(rules: RuleSet) -> list[tuple[Any, ...]]:
    """The conditions of the platforms' steps around the lists (vLLM >= 0.18: requests refused or dropped,
    rewrites, model routes and model-chosen backends, the MLA prefill layer's skips and fallbacks): they tell values apart as much as a backend's checks do (a model route names one model_arch)."""
    out: list[tuple[Any, ...]] = []
    seen: set[int] = set()
    for pl in rules.lists:
        out += [c for _, c in pl.request_errors]
        out += [c for _, c, _, _ in pl.request_fallbacks]
        out += [rw.when for rw in pl.rewrites]
        out += [c.when for c in pl.model_backend]
        out += [r.when for r in pl.model_routes] + [k.when for k in pl.model_route_kv]
        if pl.mla_prefill is not None and id(pl.mla_prefill) not in seen:
            seen.add(id(pl.mla_prefill))
            out += [c for _, c in (*pl.mla_prefill.skips, *pl.mla_prefill.fallbacks)]
    return out


def _distinct(rules: RuleSet) -> set[str]:
    """Fields whose every value is its own class: the semantics depends on them structurally (which list,
    which request), not only through predicates; an MLA prefill request field names the backend it asks for."""
    return _DISTINCT | {pl.mla_prefill.request_field for pl in rules.lists
                        if pl.mla_prefill is not None and pl.mla_prefill.request_field}


def _candidates(rules: RuleSet, field: str) -> list[Any]:
    preds = field_preds(rules, field)
    decl = rules.fields.get(field)
    if decl is not None and field not in _COMMON:  # a rule-declared field: its declared kind says its values
        none = [None] if decl.default is None else []
        if decl.kind == "bool":
            return [False, True]
        if decl.kind == "tristate":
            return [None, False, True]
        if decl.kind == "enum":
            return [*none, *rules.domains[field]]
        if decl.kind == "int":
            mentioned = {n for p in preds for n in p.mentioned_numbers()}
            low = decl.min if decl.min is not None else 0
            top = max([64, *mentioned]) * 2 + 1
            nums = set(range(low, top + 1)) | {m for n in mentioned for m in (n - 1, n, n + 1) if m >= low}
            return [*none, *sorted(nums)]
    none = [None] if field in OPTIONAL else []
    if field == "backend":
        return [None, *sorted(rules.backends)]
    if field == "role":
        return ["decode", "mla_prefill"]
    if field == "use_trtllm_attention":
        return [None, False, True]
    if field in BOOLS:
        return [False, True]
    if field == "compute_capability":
        nums = {_cc(g) for g in rules.generations}
        for p in preds:
            for n in p.mentioned_numbers():
                nums.update(x for x in (n - 1, n, n + 1) if 10 <= x <= 209 and x % 10 <= 9)
        return [*none, *sorted(nums)]
    if field in rules.domains:
        return [*none, *rules.domains[field]]
    if field in INTS:
        mentioned = {n for p in preds for n in p.mentioned_numbers()}
        top = max([64, *mentioned]) * 2 + 1
        nums = set(range(1, top + 1)) | {m for n in mentioned for m in (n - 1, n, n + 1) if m >= 1}
        return [*none, *sorted(nums)]
    return [*none]


def _cc(text: str) -> int:
    major, _, minor = text.partition(".")
    return int(major) * 10 + int(minor or 0)


def _nice(values: list[Any], mentioned: set[Any], preferred: set[Any]) -> Any:
    for v in values:
        if v in preferred:
            return v
    for v in values:
        if v in mentioned:
            return v
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool) and v > 0 and v & (v - 1) == 0:
            return v
    return values[0]


# Fields whose every value is its own class: the semantics (which list, which request) depends on
# them structurally, not only through predicates.
_DISTINCT = {"platform", "backend", "role"}


@lru_cache(maxsize=4096)  # per (rule set, field): every release's fields
def _classes_cached(rules: RuleSet, field: str) -> tuple[ValueClass, ...]:
    preds = field_preds(rules, field)
    if field in _distinct(rules):
        return tuple(ValueClass(field, v, (i,), (v,)) for i, v in enumerate(_candidates(rules, field)))
    groups: dict[tuple[bool, ...], list[Any]] = {}
    for v in _candidates(rules, field):
        sig = tuple(p(v) for p in preds)
        groups.setdefault(sig, []).append(v)
    mentioned = {n for p in preds for n in p.mentioned_numbers()}
    # representatives: the GPU generations' capabilities; a field's declared unset values (head size 128, 576)
    decl = rules.fields.get(field)
    preferred = {_cc(g) for g in rules.generations} if field == "compute_capability" else \
        {c.value for c in decl.defaults} if decl is not None else set()
    if decl is not None and decl.platforms and field not in _COMMON and decl.default is not None:
        # a field scoped to some platforms (hpc_available on cuda) takes only its default elsewhere: the
        # representative every platform accepts
        preferred = {decl.default}
    out = []
    for sig, vals in groups.items():
        if None in vals:  # None is always its own class: it means "unset", not a number
            rest = [v for v in vals if v is not None]
            out.append(ValueClass(field, None, sig, (None,)))
            if rest:
                out.append(ValueClass(field, _nice(rest, mentioned, preferred), sig, tuple(rest[:8])))
            continue
        out.append(ValueClass(field, _nice(vals, mentioned, preferred), sig, tuple(vals[:8])))
    return tuple(out)


def value_classes(rules: RuleSet, field: str) -> tuple[ValueClass, ...]:
    """The value classes of `field`, each with a representative value."""
    return _classes_cached(rules, field)


def representatives(rules: RuleSet, field: str) -> tuple[Any, ...]:
    return tuple(c.representative for c in value_classes(rules, field))


def class_of(rules: RuleSet, field: str, value: Any) -> Any:
    """The representative standing for `value` (values outside the scanned range map by signature)."""
    sig = tuple(p(value) for p in field_preds(rules, field))
    for c in value_classes(rules, field):
        if c.signature == sig and (c.representative is None) == (value is None):
            return c.representative
    return value
