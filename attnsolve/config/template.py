"""Config(...) with fresh numeric values of a known shape, built from a template of an earlier Config.

Why: a caller sweeping head sizes (or block sizes, head counts) repeats every other argument, and all of
Config's work except the numeric fields' checks depends on those other arguments only: the name checks,
the categorical values, the rule-declared fields, the invariants. A template keeps that work's result per
(other arguments with their types, default release, rules generation) and a call redoes only the numeric
part (normalise.numeric_value, the code the full build runs) and the hash of the numeric values. A rule set
where a numeric field feeds anything else (an invariant, a declared field's default, a placed field) gets no
templates.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..rules import RuleSet
from ..errors import ConfigError
from .normalise import (_CAT_FIELDS, _COMMON, NUMERIC_FIELDS, _conditional_defaults, _minimums, numeric_fields,
                        numeric_value)
from .invariants import plan_of
from .values import ANY
from ..rules.sets import per_rules_limit

_NUMERIC = frozenset(NUMERIC_FIELDS)
# the categorical fields (normalise's memo key) and the release: what a numeric field's unset default may read
_CATEGORICAL = frozenset((*_CAT_FIELDS, "vllm"))
_LIMIT = 4096


class Template:
    """One shape's finished fields, its numeric fields' values when not given, the unset defaults of those
    given as None, what numeric_value needs of the rules, the hashes of the fixed parts, and whether a fixed
    field is free (ANY)."""

    __slots__ = ("base", "numeric", "unset", "block_sizes", "lows", "fixed_hash", "extra_hash", "partial")

    def __init__(self, base: dict[str, Any], numeric: dict[str, Any], unset: dict[str, Any], rules: RuleSet,
                 fixed_hash: int, extra_hash: int | None, partial: bool):
        self.base = base
        self.numeric = numeric
        self.unset = unset
        self.block_sizes = rules.domains["block_size"]
        self.lows = _minimums(rules)
        self.fixed_hash = fixed_hash
        self.extra_hash = extra_hash
        self.partial = partial


_TEMPLATES: dict[Any, Template] = {}
_ELIGIBLE: dict[int, tuple[RuleSet, bool]] = {}


def shape_key(kwargs: Mapping[str, Any], default: Any, gen: int) -> Any:
    """The template key of a call: its non-numeric arguments (name, value, type; in order), the default
    release (when none is named) and the rules generation."""
    return (tuple([(k, v, v.__class__) for k, v in kwargs.items() if k not in _NUMERIC]), default, gen)


def template_of(key: Any) -> Template | None:
    """The template of shape `key`, or None (none yet, or an unhashable argument)."""
    try:
        return _TEMPLATES.get(key)
    except Exception:  # noqa: BLE001 - an argument that cannot be hashed or compared: no template
        return None


def from_template(cls: type, t: Template, kwargs: Mapping[str, Any]) -> Any:
    """A Config for `kwargs` (arguments of `t`'s shape) from the template."""
    values = t.numeric
    partial = t.partial
    given = _NUMERIC.intersection(kwargs)
    if given:
        values = dict(values)
        # validated in numeric_fields' order: the first bad one is the error
        for name in given if len(given) == 1 else sorted(given, key=NUMERIC_FIELDS.index):
            v = kwargs[name]
            if v is None and name in t.unset:
                v = t.unset[name]
            elif v.__class__ is str and v == "ANY":  # to_dict() writes a free field as the string "ANY"
                v = ANY
            values[name] = numeric_value(name, v, t.block_sizes, t.lows)
            partial = partial or v is ANY
    obj = cls.__new__(cls)
    d = obj.__dict__
    d.update(t.base)
    d.update(values)
    h = hash((t.fixed_hash, *values.values()))  # numeric_hash(t.fixed_hash, values), without the call
    d["_hash"] = h if t.extra_hash is None else hash((h, t.extra_hash))
    d["_partial"] = partial  # Config.is_partial
    return obj


def numeric_hash(fixed_hash: int, values: Mapping[str, Any]) -> int:
    """A Config's field hash from the hash of its non-numeric fields and its numeric values (every
    NUMERIC_FIELDS name, in that order): split so that a template hashes only the part a call changes."""
    return hash((fixed_hash, *values.values()))


def remember(key: Any, obj: Any, rules: RuleSet, defaults: Mapping[str, Any], fixed_hash: int,
             fixed_partial: bool) -> None:
    """Keep `obj` (just built in full from arguments of shape `key`) as its shape's template. defaults: each
    numeric field's raw value when not given (Config's default, or the release's own); fixed_hash: the hash of
    obj's non-numeric fields (numeric_hash); fixed_partial: whether one of them (or a declared field) is ANY."""
    if not _eligible(rules):
        return
    d = obj.__dict__
    unset = {name: decl.unset_value(d, ANY) for name, decl in _conditional_defaults(rules) if name in _NUMERIC}
    raw = {name: defaults[name] for name in NUMERIC_FIELDS}
    for name, value in unset.items():
        if raw[name] is None:
            raw[name] = value
    block_sizes = rules.domains["block_size"]
    try:
        numeric = numeric_fields(raw.__getitem__, block_sizes, _minimums(rules))
    except ConfigError:  # a default the rules declare that does not validate: no template, every call in full
        return
    if len(_TEMPLATES) >= _LIMIT:
        _TEMPLATES.clear()
    try:
        _TEMPLATES[key] = Template(dict(d), numeric, unset, rules, fixed_hash,
                                   hash(obj._extra) if obj._extra else None,
                                   fixed_partial or any(v is ANY for v in numeric.values()))
    except Exception:  # noqa: BLE001 - an argument that cannot be hashed or compared: no template
        pass


def _eligible(rules: RuleSet) -> bool:
    """Whether the numeric fields feed nothing but themselves in this rule set (once per set)."""
    hit = _ELIGIBLE.get(id(rules))
    if hit is None or hit[0] is not rules:  # the rules object is kept: an id is reused after GC
        if len(_ELIGIBLE) > per_rules_limit():
            _ELIGIBLE.clear()
        hit = _ELIGIBLE[id(rules)] = (rules, _judge(rules))
    return hit[1]


def _judge(rules: RuleSet) -> bool:
    inv = plan_of(rules, _COMMON)
    if not _NUMERIC.isdisjoint(inv.placed) or not _NUMERIC.isdisjoint(inv.defined):
        return False
    if any(not _NUMERIC.isdisjoint(check.fields) for _, check in inv.clauses):
        return False
    # a declared field whose default reads a numeric field, directly or through another default (0.21's
    # mla_prefill_backend reads two bool switches only: templates stay)
    reads = {name: set(decl.default_reads) for name, decl in rules.fields.items() if decl.defaults}
    tainted = set(_NUMERIC)
    grew = True
    while grew:
        grew = False
        for name, read in reads.items():
            if name not in tainted and not read.isdisjoint(tainted):
                tainted.add(name)
                grew = True
    if any(name in tainted for name in reads if name not in _COMMON):
        return False
    for name, decl in _conditional_defaults(rules):
        if name in _NUMERIC:
            read = set(decl.default_reads)
            if not read <= _CATEGORICAL or not read.isdisjoint(inv.defined):
                return False
    return True

