"""Typed, immutable form of the rules: predicates, checks, backends, priority lists.

The loader turns TOML into these values once; the solvers only ever see these.
Every check is a clause "not(when) or require" over single-field predicates, which is what
lets the same rules feed the bitset fast path, the CSP and the explanations.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

# Counts every rendering of a template with placeholders (facts put into text). The compiled solve path
# reuses an answer for another value of the same value class only when producing it rendered nothing:
# next() on it is atomic, so a count that moved means some rendering happened in between.
RENDERINGS = itertools.count()

# Sentinel meaning "no equality constraint" in Pred.eq.
_NO_EQ: Any = ("<no-eq>",)


def format_cc(value: int) -> str:
    """Compute capability as vLLM prints it: 90 -> '9.0', 121 -> '12.1'."""
    return f"{value // 10}.{value % 10}"


@dataclass(frozen=True, slots=True)
class Pred:
    """A predicate over one field's value. All present parts must hold (conjunction).

    `none` is the answer for a missing value (None); `negate` flips the final answer.
    Compute capabilities are integers major*10+minor, as vLLM's DeviceCapability.to_int().
    """

    in_: frozenset | None = None
    prefixes: tuple[str, ...] = ()
    not_in: frozenset | None = None
    not_prefixes: tuple[str, ...] = ()
    min: int | None = None
    max: int | None = None
    multiple_of: tuple[int, ...] | None = None
    major_in: frozenset[int] | None = None
    eq: Any = _NO_EQ
    none: bool = False
    negate: bool = False

    def __call__(self, value: Any) -> bool:
        return self._holds(value) != self.negate

    def _holds(self, value: Any) -> bool:
        if value is None:
            return self.none
        if self.eq is not _NO_EQ and value != self.eq:
            return False
        if self.in_ is not None or self.prefixes:
            hit = self.in_ is not None and value in self.in_
            if not hit and self.prefixes and isinstance(value, str):
                hit = value.startswith(self.prefixes)
            if not hit:
                return False
        if self.not_in is not None and value in self.not_in:
            return False
        if self.not_prefixes and isinstance(value, str) and value.startswith(self.not_prefixes):
            return False
        if self.min is not None and value < self.min:
            return False
        if self.max is not None and value > self.max:
            return False
        if self.multiple_of is not None and not any(value % m == 0 for m in self.multiple_of):
            return False
        if self.major_in is not None and value // 10 not in self.major_in:
            return False
        return True

    def negated(self) -> "Pred":
        return Pred(self.in_, self.prefixes, self.not_in, self.not_prefixes, self.min, self.max,
                    self.multiple_of, self.major_in, self.eq, self.none, not self.negate)

    def mentioned_numbers(self) -> tuple[int, ...]:
        """Numbers this predicate compares against: the boundaries a finite domain must keep."""
        out: list[int] = []
        for v in (self.min, self.max):
            if v is not None:
                out.append(v)
        for coll in (self.in_, self.not_in):
            if coll:
                out.extend(v for v in coll if isinstance(v, int) and not isinstance(v, bool))
        if isinstance(self.eq, int) and not isinstance(self.eq, bool):
            out.append(self.eq)
        if self.multiple_of:
            out.extend(self.multiple_of)
        if self.major_in:
            out.extend(10 * m for m in self.major_in)
        return tuple(out)

    def describe(self, field_name: str = "") -> str:
        """Plain-text form for docs and explanations, e.g. 'multiple of 8, <= 256'."""
        parts: list[str] = []
        cc = field_name == "compute_capability"
        fmt = format_cc if cc else str
        if self.eq is not _NO_EQ:
            parts.append(f"= {_show(self.eq)}")
        if self.in_ is not None or self.prefixes:
            items = sorted((_show(v) for v in (self.in_ or ())), key=_sort_key)
            items += [p + "*" for p in self.prefixes]
            parts.append("one of " + ", ".join(items))
        if self.not_in is not None or self.not_prefixes:
            items = sorted((_show(v) for v in (self.not_in or ())), key=_sort_key)
            items += [p + "*" for p in self.not_prefixes]
            parts.append("not " + ", ".join(items))
        if self.min is not None and self.max is not None:
            parts.append(f"{fmt(self.min)}-{fmt(self.max)}")
        elif self.min is not None:
            parts.append(f">= {fmt(self.min)}")
        elif self.max is not None:
            parts.append(f"<= {fmt(self.max)}")
        if self.multiple_of is not None:
            parts.append("multiple of " + " or ".join(str(m) for m in self.multiple_of))
        if self.major_in is not None:
            parts.append(" or ".join(f"{m}.x" for m in sorted(self.major_in)))
        text = ", ".join(parts) if parts else "set"
        if self.none:
            text += " (or unset)"
        if self.negate and text == "set":
            return "unset"
        return ("not (" + text + ")") if self.negate else text


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _sort_key(s: str) -> tuple[int, Any]:
    return (0, int(s)) if s.isdigit() else (1, s)


@dataclass(frozen=True, slots=True)
class Literal:
    """One field predicate: the atom of every clause."""

    field: str
    pred: Pred

    def __call__(self, facts: Mapping[str, Any]) -> bool:
        return self.pred(facts.get(self.field))


@dataclass(frozen=True, slots=True)
class Check:
    """A reason against a backend: it fires when every `when` literal holds and `require` fails.

    `kind` names the capability it came from (head_size, dtype, ..., or 'combination' /
    'guard') so docs and explanations can group reasons without parsing text.
    """

    reason: str
    require: Literal
    when: tuple[Literal, ...] = ()
    kind: str = "combination"
    # The source check this clause comes from (one rule check may lower to several clauses: a
    # multi-field require, `any_of` / `not`); reasons are reported once per (group, text), so two
    # different checks with the same text both report it, as vLLM lists them. 0: group by text.
    group: int = 0
    # vLLM's supports_combination returns one string: of the checks marked `first`, only the first
    # that fires is reported (ruleset `combination_reasons = "first"`).
    first: bool = False

    def fires(self, facts: Mapping[str, Any]) -> bool:
        return all(w(facts) for w in self.when) and not self.require(facts)

    @property
    def fields(self) -> tuple[str, ...]:
        seen = dict.fromkeys([self.require.field, *(w.field for w in self.when)])
        return tuple(seen)

    def clause(self) -> tuple[Literal, ...]:
        """The check as a disjunction of literals that must hold: not(w1) or ... or require."""
        return (*(Literal(w.field, w.pred.negated()) for w in self.when), self.require)

    def render(self, facts: Mapping[str, Any]) -> str:
        if "{" not in self.reason:
            return self.reason
        next(RENDERINGS)
        return self.reason.format_map(_Show(facts))


def firing_reasons(checks: Iterable[Check], facts: Mapping[str, Any]) -> tuple[str, ...]:
    """The rendered reasons of the checks that fire, in order, each source check once."""
    return report(tuple(c for c in checks if c.fires(facts)), facts)


def report(fired: Iterable[Check], facts: Mapping[str, Any]) -> tuple[str, ...]:
    """vLLM's reason list from the checks that fired (in check order): each (group, text) once, and of
    the `first` checks (supports_combination's single string) only the first group that fired."""
    out: list[str] = []
    seen: set[tuple[int, str]] = set()
    first_group: int | None = None
    for c in fired:
        if c.first:
            if first_group is None:
                first_group = c.group
            elif c.group != first_group:
                continue
        r = c.render(facts)
        key = (c.group, r)
        if key in seen or (c.group == 0 and r in out):
            continue
        seen.add(key)
        out.append(r)
    return tuple(out)


class _Show(dict):
    def __init__(self, facts: Mapping[str, Any]):
        super().__init__(facts)

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"

    def __getitem__(self, key: str) -> str:
        got = placeholder(self, key)
        if got is not None:
            return got
        v = super().__getitem__(key) if key in self else self.__missing__(key)
        return _show(v) if not isinstance(v, str) else v


# Placeholders that are not plain field names: `{field|default}` (the default when the field is unset,
# as vLLM prints getattr(cfg, name, default)) and the compute capability in vLLM's two printed forms.
SPECIAL_PLACEHOLDERS = ("device_capability",)


def placeholder(facts: Mapping[str, Any], key: str) -> str | None:
    """The text of a special placeholder, or None for a plain field name."""
    if "|" in key:
        name, _, default = key.partition("|")
        v = facts.get(name)
        if v is None:
            return default
        return _show(v) if not isinstance(v, str) else v
    if key == "device_capability":
        cc = facts.get("compute_capability")
        if isinstance(cc, int) and not isinstance(cc, bool):
            return f"DeviceCapability(major={cc // 10}, minor={cc % 10})"
        return "None"
    if key == "compute_capability":
        cc = facts.get("compute_capability")
        if isinstance(cc, int) and not isinstance(cc, bool):
            return format_cc(cc)
    return None


GENERIC_FORMS = ("predicate", "values", "multiple_of", "supports", "matches", "flag")


@dataclass(frozen=True, slots=True)
class GenericCheck:
    """One of vLLM's generic capability checks (AttentionBackend.validate_configuration), as data.

    A backend's capability `key` feeds it; `form` says how the capability becomes a check over `field`:
    predicate (the value is a predicate), values (a list of accepted values, "x*" a prefix),
    multiple_of (the field is a multiple of one of them), supports (a bool; fails when the field is
    true and the backend does not support it), matches (a bool the field must equal: reason_true when
    the field is true, reason_false when false), flag (a documented bool capability vLLM never checks).
    """

    key: str
    field: str
    form: str
    reason: str = ""
    reason_true: str = ""
    reason_false: str = ""
    default: Any = None
    unset_passes: bool = False
    roles: tuple[str, ...] = ()
    when: tuple["Literal", ...] = ()
    # A backend key that replaces the capability by an exact list (B12X's exact_block_sizes).
    exact_key: str = ""
    # When vLLM's supports_* for this key consults what a backend's variant depends on (and so computes, and
    # logs, those derived facts): alternatives of literals, () never; None always (the default). FlashAttention's
    # supports_kv_cache_dtype resolves its version only for fp8 dtypes, supports_head_size never.
    variant_read_when: tuple[tuple["Literal", ...], ...] | None = None
    # Which of the variant's derived facts that consultation computes (their calls' log lines), where it is not
    # all of them: FlashAttention's supports_sink asks get_flash_attn_version() (fa_version), not the kernel-page
    # call its variant also depends on. () = everything the variant depends on.
    variant_reads: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one backend (or one of its variants) declares, keyed by the rule set's generic checks.

    Read as attributes (`caps.dtypes`, `caps.sink`): an undeclared key reads as None.
    """

    items: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        for k, v in self.items:
            if k == key:
                return v
        return default

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        return self.get(key)

    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.items)

    def merged(self, over: "Capabilities") -> "Capabilities":
        """These capabilities with `over`'s declared keys replacing them (a variant over its backend)."""
        out = dict(self.items)
        out.update(over.items)
        return Capabilities(tuple(out.items()))

    def only(self, keys: Iterable[str]) -> "Capabilities":
        keep = set(keys)
        return Capabilities(tuple((k, v) for k, v in self.items if k in keep))


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    values: tuple[Any, ...]
    caps: Capabilities


@dataclass(frozen=True, slots=True)
class Backend:
    """A backend after inheritance: declared capabilities plus the expanded checks in vLLM order."""

    name: str
    platforms: tuple[str, ...]
    role: str
    caps: Capabilities
    checks: tuple[Check, ...]
    variant_field: str | None = None
    variants: tuple[Variant, ...] = ()
    # The fact whose value names the variant reported (default: variant_field), when vLLM decides what
    # runs with more facts than validation sees (FA4 -> FA2 by head size after validation).
    variant_shown_by: str | None = None
    explicit_only: bool = False
    parent: str | None = None
    summary: str = ""
    source: str = ""
    # Runtime pitfalls vLLM only hits after selection (message, conditions): surfaced as warnings.
    warnings: tuple[tuple[str, tuple[Literal, ...]], ...] = ()
    # The block size vLLM's start-up sets for this backend when the user gives none (None: vLLM's rule).
    preferred_block_size: int | None = None
    # Failures vLLM hits at start-up after choosing this backend (message, conditions over the start-up
    # facts, block_size = the start-up block size): the first that holds is vLLM's start-up error.
    startup_failures: tuple[tuple[str, tuple[Literal, ...]], ...] = ()
    # The same for refusals raised when the model's layers are built (the impl's __init__), which vLLM meets before
    # it lays out the KV cache, so before the platform's block-size refusal (startup_failures come after it).
    layer_failures: tuple[tuple[str, tuple[Literal, ...]], ...] = ()
    # A composite backend's parts (vLLM's composite.py: shown as "TRITON_ATTN+FLASH_ATTN" in docs; its
    # capabilities are its own), the name vLLM prints when it differs (MLA prefill registry), and the
    # backend an alias resolves to (requesting the alias requests that backend).
    composite: tuple[str, ...] = ()
    vllm_name: str = ""
    alias_of: str | None = None
    # What vLLM prints where it differs from the rules' own names and sets: the class's get_name(), the
    # kernel block sizes' repr, the declared KV dtypes; the KV cache layouts it supports (data: a list or
    # cases, not checked yet) and the registry name whose request yields this class (XPU's FLASH_ATTN_MLA).
    get_name: str = ""
    kernel_block_sizes_text: str = ""
    kv_cache_dtypes_text: tuple[str, ...] = ()
    kv_cache_layouts: Any = None
    requested_as: str = ""
    # a class only model code constructs (DeepSeek-V4's CPU_V4_MLA_SPARSE): no registry name, never requested
    model_built: bool = False

    @property
    def display_name(self) -> str:
        """The name vLLM prints for this backend."""
        return self.vllm_name or self.name

    def shown_variant(self, facts: Mapping[str, Any]) -> str | None:
        """The variant reported: `variant_shown_by`'s value when it is a name (the FA version a
        FLASH_ATTN-based backend runs, while its variants are capability buckets whose value lists
        may hold the same strings), else the variant `variant_field` selects."""
        if not self.variant_field:
            return None
        if self.variant_shown_by:
            value = facts.get(self.variant_shown_by)
            return value if isinstance(value, str) else self.variant_for(value)
        return self.variant_for(facts.get(self.variant_field))

    def variant_for(self, value: Any) -> str | None:
        for v in self.variants:
            if value in v.values:
                return v.name
        return None

    def reasons(self, facts: Mapping[str, Any]) -> tuple[str, ...]:
        return firing_reasons(self.checks, facts)


@dataclass(frozen=True, slots=True)
class DerivedCase:
    when: tuple[Literal, ...]
    value: Any
    # One log line, or several in the order vLLM prints them; may name facts ({head_size}).
    warning: str | tuple[str, ...] | None = None


def _local_value(op: str, vals: list[Any]) -> Any:
    """A derived fact's local arithmetic (sums, quotients, products); None when an input is not an int
    (unset), or a quotient by zero."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return None
    if op == "sum":
        return sum(vals)
    if op == "product":
        out = 1
        for v in vals:
            out *= v
        return out
    if op == "quotient":
        return vals[0] // vals[1] if vals[1] else None
    raise AssertionError(op)


# Field comparisons (`{ eq_field = "x" }`), lowered by the loader to a synthesized boolean derived fact
# whose `compute` is (op, (field, other)): Python's ==, !=, <= (integers) and divisibility on the two values.
def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "eq":
        return a == b
    if op == "ne":
        return a != b
    if op == "le":  # integers only (an unset side never compares)
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (a, b))
        return bool(ints and a <= b)
    if op == "multiple_of":
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (a, b))
        return bool(ok and b and a % b == 0)
    raise AssertionError(op)


@dataclass(frozen=True, slots=True)
class Derived:
    """A fact vLLM computes from others (FA version, TRTLLM usability): a first-match decision list.

    Its cases may read other derived facts (the loader orders the rule set's derived facts so that
    inputs come first) and local arithmetic over fields (`sums`, `quotients`, `products`). A derived
    fact with `compute` has no cases: it is a field comparison the loader synthesized.
    """

    name: str
    values: tuple[Any, ...]
    cases: tuple[DerivedCase, ...]
    doc: str = ""
    # Local sums its cases may test: (name, fields); None when any field is None (vLLM's qk head dim).
    sums: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Local integer quotient (a // b) and product, like sums; also published as facts for messages.
    quotients: tuple[tuple[str, tuple[str, ...]], ...] = ()
    products: tuple[tuple[str, tuple[str, ...]], ...] = ()
    compute: tuple[str, tuple[str, ...]] | None = None
    # computed once (the explanation's inner loop reads it millions of times)
    input_fields: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_fields", self._inputs())

    @property
    def locals(self) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
        return (*(( n, "sum", f) for n, f in self.sums), *((n, "quotient", f) for n, f in self.quotients),
                *((n, "product", f) for n, f in self.products))

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.input_fields

    def _inputs(self) -> tuple[str, ...]:
        if self.compute is not None:
            return self.compute[1]
        local = {name: fields for name, _, fields in self.locals}
        seen: dict[str, None] = {}
        for case in self.cases:
            for lit in case.when:
                if lit.field in local:
                    seen.update(dict.fromkeys(local[lit.field]))
                else:
                    seen[lit.field] = None
        return tuple(seen)

    def local_values(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        return {name: _local_value(op, [facts.get(f) for f in parts]) for name, op, parts in self.locals}

    def evaluate(self, facts: Mapping[str, Any]) -> tuple[Any, str | tuple[str, ...] | None]:
        if self.compute is not None:
            op, (a, b) = self.compute
            return _compare(op, facts.get(a), facts.get(b)), None
        i = self.case_index(facts)
        return self.cases[i].value, self.case_warning(i, facts)

    def case_index(self, facts: Mapping[str, Any]) -> int:
        """The first case whose conditions hold (-1 for a field comparison, which has no cases)."""
        if self.compute is not None:
            return -1
        if self.sums or self.quotients or self.products:
            facts = {**facts, **self.local_values(facts)}
        for i, case in enumerate(self.cases):
            if all(lit(facts) for lit in case.when):
                return i
        raise AssertionError(f"derived {self.name} has no default case")  # loader guarantees one

    def case_warning(self, index: int, facts: Mapping[str, Any]) -> str | tuple[str, ...] | None:
        """Case `index`'s log line(s) rendered with the facts it was chosen on (kept apart from the choice so
        the compiled rules can choose by value class and render only the lines a caller shows)."""
        if index < 0:
            return None
        warning = self.cases[index].warning
        if not warning:
            return warning
        if isinstance(warning, str) and "{" not in warning:
            return warning
        if isinstance(warning, tuple) and not any("{" in w for w in warning):
            return warning
        next(RENDERINGS)
        if self.sums or self.quotients or self.products:
            facts = {**facts, **self.local_values(facts)}
        if isinstance(warning, str):
            return warning.format_map(_Show(facts))
        return tuple(w.format_map(_Show(facts)) if "{" in w else w for w in warning)  # several lines, in order


@dataclass(frozen=True, slots=True)
class Entry:
    """One candidate in a priority list: a backend plus the list's own guard checks."""

    backend: str
    guards: tuple[Check, ...] = ()
    # None: the list's own `validate`; True/False: this entry's own checks are (not) run
    validate: bool | None = None
    # alternatives of the entry's `when` (empty: always considered); not applied by the solvers yet
    when: tuple[tuple[Literal, ...], ...] = ()


Cond = tuple[Literal, ...]  # a conjunction of literals (one alternative of a rule's `when`)


def holds(when: Cond, facts: Mapping[str, Any]) -> bool:
    return all(lit(facts) for lit in when)


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A config change vLLM makes before or after selection (`set` values, `unset` fields), with its log line."""

    when: Cond
    set: tuple[tuple[str, Any], ...] = ()
    unset: tuple[str, ...] = ()
    stage: str = "after_selection"
    log: str = ""


@dataclass(frozen=True, slots=True)
class Note:
    """A line vLLM logs after selection, with no config change."""

    when: Cond
    log: str
    level: str = "info"


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """Model code that picks the backend itself (no validation): `result` (+ `variant`) or vLLM's `error`."""

    name: str
    when: Cond
    result: str = ""
    variant: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class RouteKV:
    """The KV-cache handling of a model route's variant: vLLM's `error`, or `set` values and/or a `log` line."""

    when: Cond
    error: str = ""
    set: tuple[tuple[str, Any], ...] = ()
    log: str = ""


@dataclass(frozen=True, slots=True)
class MlaPrefill:
    """The MLA prefill step (its own registry): the field a request comes from, vLLM's messages, the layers
    that ask for no prefill backend (`skips`) and the failures a layer swallows (`fallbacks`)."""

    request_field: str = ""
    no_valid_message: str = ""
    invalid_message: str = ""
    chosen_log: str = ""
    skips: tuple[tuple[str, Cond], ...] = ()
    fallbacks: tuple[tuple[str, Cond], ...] = ()


@dataclass(frozen=True, slots=True)
class PriorityList:
    """A platform's candidate list for the configs matching `when`, and how a requested backend is handled.

    manual: 'validate' (run the requested backend's own checks, CUDA), 'table' (only the backends in
    `manual_accept` with their guards; anything else fails with `manual_other`, ROCm), or 'ignore'
    (the request is ignored with `ignore_warning`, CPU and ROCm sparse).
    """

    platform: str
    name: str
    when: tuple[Literal, ...]
    entries: tuple[Entry, ...]
    validate: bool
    manual: str = "validate"
    manual_accept: tuple[Entry, ...] = ()
    manual_other: str = ""
    ignore_warning: str = ""
    warn_unvalidated: bool = False
    source: str = ""
    # The KV block size the platform's start-up sets (first matching case over the user's facts; the
    # value "block_size" keeps the user's); empty: the user's, else the backend's preferred size.
    start_block_size: tuple[DerivedCase, ...] = ()
    # Fields the platform's selector sets to None before validating (vLLM 0.16/0.17 CUDA: block_size).
    drops: tuple[str, ...] = ()
    # Whether a requested backend of another platform is refused for that reason (False: only the
    # backend's own checks run, as vLLM's CUDA selector calls its validate_configuration alone).
    request_platform_check: bool = True
    # vLLM's error texts ({platform}, config fields, {backend}, {reasons}, {reason_list}); "" = built-in.
    no_valid_message: str = ""
    invalid_message: str = ""
    # The backend the platform's start-up hook requests before selection (first matching case).
    start_backend: tuple[DerivedCase, ...] = ()
    # Start-up failures before selection (message, conditions), e.g. bf16 on a GPU below SM 8.0.
    startup_failures: tuple[tuple[str, tuple[Literal, ...]], ...] = ()
    # Start-up failure when the chosen backend's kernel block sizes cannot serve the block size.
    block_size_failure: str = ""
    # The layers that text can refuse (a conjunction; () = every layer): vLLM picks a kernel block size only for a
    # layer with a KV cache group (encoder self-attention has none).
    block_size_failure_when: tuple[Literal, ...] = ()
    # vLLM >= 0.18: the warning when a user's --block-size rejected higher-priority backends ({block_size},
    # {precluded}, {backend}); requests vLLM drops for automatic selection ((warning, cond), ...); requests that
    # fail before validation with vLLM's whole text ((message, cond), ...); config rewrites; post-selection
    # log lines; model-driven backends (`model_backend` cases, "backend" = the request as is; `model_routes`
    # and their KV handling `model_route_kv`); the MLA prefill step's settings.
    precluded_warning: str = ""
    # (warning, cond, only_reasons, level): only_reasons (exact reason lists) limits the fallback to a
    # request refused for exactly those reasons (empty: any request matching `when`)
    request_fallbacks: tuple[tuple[str, Cond, tuple[tuple[str, ...], ...], str], ...] = ()
    request_errors: tuple[tuple[str, Cond], ...] = ()
    rewrites: tuple[Rewrite, ...] = ()
    notes: tuple[Note, ...] = ()
    model_backend: tuple[DerivedCase, ...] = ()
    model_routes: tuple[ModelRoute, ...] = ()
    model_route_kv: tuple[RouteKV, ...] = ()
    mla_prefill: MlaPrefill | None = None
    # Decision-tree branches (CPU, XPU): `error` raises vLLM's text (no entries); `log` / `warning` are the
    # branch's INFO / WARNING line; `fallback_log` is logged when the first entry fails and a later one is
    # used; `list_invalid_message` replaces the platform's for a request through this list;
    # `ignore_silent`: requested backends this branch accepts without the ignore warning.
    error: str = ""
    # The branch gives the layer no prefill backend (an MLA prefill list: vLLM 0.16/0.17's sparse layer, whose impl
    # runs every token on its top-k MQA path): the answer is NO_PREFILL, with `warning` if any; no entries.
    no_prefill: bool = False
    log: str = ""
    warning: str = ""
    fallback_log: str = ""
    list_invalid_message: str = ""
    ignore_silent: tuple[str, ...] = ()
    # Platform-wide: the field naming the device, the derived fact giving validate_configuration's device
    # capability (ROCm: from the gfx arch), the no-valid hint listing KV dtypes ({kv_cache_dtypes}), INFO
    # lines (manual_log, selected_log, or override_log when some list entry is invalid), start-up
    # warnings ((message, cond, level)), the MLA prefill no-valid text, the ignore line's level.
    hardware_field: str = ""
    compute_capability_from: str = ""
    kv_cache_dtype_hint: str = ""
    manual_log: str = ""
    selected_log: str = ""
    override_log: str = ""
    mla_prefill_no_valid_message: str = ""
    startup_warnings: tuple[tuple[str, Cond, str], ...] = ()
    ignore_level: str = "warning"

    def applies(self, facts: Mapping[str, Any]) -> bool:
        return all(lit(facts) for lit in self.when)


FIELD_KINDS = ("bool", "int", "enum", "tristate", "cc", "platform", "backend", "str")
FIELD_CATEGORIES = ("hardware", "model", "setting")
# How vLLM turns an environment variable's text into the field's value (FieldDecl.env_reads; read by
# config/env_reading.py): "true_or_1" = text.lower() in ("true", "1"), anything else off (VLLM_ROCM_USE_AITER*);
# "int" = bool(int(text)), a ValueError stops vLLM's start-up (VLLM_BATCH_INVARIANT); "int_sets_true" = as "int",
# but 0 changes nothing (VLLM_HAS_FLASHINFER_CUBIN=1 only skips a check that may pass anyway).
ENV_READINGS = ("true_or_1", "int", "int_sets_true", "int_else_false")


@dataclass(frozen=True, slots=True)
class ModelKey:
    """One config.json key `--model` reads for a field (`model_keys` entries): a string reads the key's value
    (a bool field: its truthiness, as vLLM's `getattr(cfg, key, None)`); a table tests it, `present = true`
    (vLLM's `is not None`: R-SWA's rswa_window, a diffusion model's canvas_length), `equals = V` (MPT-style
    `position_encoding_type == "alibi"`) or `in = [...]` (a model_type list): a match is true, anything else
    says nothing. An entry may say that where its key is present its answer `decides` (vLLM's
    `if hasattr(hf_config, "is_mm_prefix_lm"): return ...` before its list), and how the note reads (`note`,
    `{value}` = the key's value; an empty note: none, for a fact the query line shows). A dotted key reads a
    sub-table."""

    key: str
    present: bool = False
    equals: Any = _NO_EQ
    in_: frozenset | None = None
    decides: bool = False
    note: str | None = None

    def raw(self, cfg: Any) -> Any:
        """The key's value in `cfg`, None where it is absent (or null)."""
        for part in self.key.split("."):
            if not isinstance(cfg, dict):
                return None
            cfg = cfg.get(part)
        return cfg

    def read(self, cfg: Any) -> Any:
        """The value this key gives the field in `cfg`, or None where it says nothing: the key is absent, or a
        value test (equals / in) does not match (a model_type outside a list says nothing about the field)."""
        v = self.raw(cfg)
        if v is None:
            return None
        if self.present:
            return True
        if self.equals is not _NO_EQ:
            return True if v == self.equals else None
        if self.in_ is not None:
            try:
                return True if v in self.in_ else None
            except TypeError:  # an unhashable value (a list where a name belongs): not one of them
                return None
        return v

    def __str__(self) -> str:
        if self.present:
            return f"{self.key} present"
        if self.equals is not _NO_EQ:
            return f"{self.key} = {self.equals!r}"
        return self.key


@dataclass(frozen=True, slots=True)
class CheckpointScheme:
    """A ModelOpt `kv_cache_scheme` / `kv_cache_quant_algo` table vLLM recognises: its bits and type (and
    `dynamic` where vLLM tests it) name the algorithm `algo`, then looked up like a string algorithm."""

    num_bits: int
    type: str
    algo: str
    dynamic: bool | None = None

    def matches(self, scheme: Mapping[str, Any]) -> bool:
        return (scheme.get("num_bits") == self.num_bits and scheme.get("type") == self.type
                and (self.dynamic is None or scheme.get("dynamic") is self.dynamic))


@dataclass(frozen=True, slots=True)
class CheckpointKv:
    """How a release reads a checkpoint's own KV-cache dtype from config.json's `quantization_config`
    (`[fields.kv_cache_dtype.checkpoint]`): as data because the map and the precedence changed across releases.

    - ModelOpt checkpoints (quant_method modelopt*): vLLM's engine arguments resolve `--kv-cache-dtype auto`
      from `kv_cache_scheme` / `kv_cache_quant_algo` (`modelopt_algos`: lower-cased algorithm -> KV dtype;
      `modelopt_schemes`: tables that name an algorithm; anything else: "auto" with vLLM's warning).
    - compressed-tensors checkpoints with a `kv_cache_scheme`: the (non-MLA) attention layer uses
      `scheme_dtype`, over an explicit `--kv-cache-dtype` too where `scheme_overrides_explicit`, and a scheme
      whose strategy is `per_head_strategy` sets `per_head_field`.
    """

    modelopt_algos: Mapping[str, str] = field(default_factory=dict)
    modelopt_schemes: tuple[CheckpointScheme, ...] = ()
    scheme_dtype: str | None = None
    scheme_overrides_explicit: bool = False
    per_head_strategy: str | None = None
    per_head_field: str | None = None


@dataclass(frozen=True, slots=True)
class FieldDecl:
    """One selection input as a rule set declares it (`[fields.NAME]` tables): the schema as data.

    kind: bool | int | enum (values from the domain) | tristate (None/true/false) | cc | platform | backend.
    default None = unset, explained by `unset`. flags[0] is attnsolve's CLI flag; the others are
    vLLM's spellings (`--attention-config.X`). env: the environment variable vLLM reads for it.
    """

    name: str
    kind: str
    default: Any = None
    unset: str = ""
    category: str = "setting"
    selector: bool = False
    flags: tuple[str, ...] = ()
    metavar: str = "VALUE"
    env: str | None = None
    vllm: str = ""
    help: str = ""
    platforms: tuple[str, ...] = ()
    min: int | None = None
    # Where `--model config.json` finds it: the first of these keys present (a bool: true where any key says
    # so, as vLLM's `or` of getattr()s; ModelKey), or the model's first architecture looked up in
    # `architectures` (architecture name -> value); `architecture_keys` (architecture name -> keys) are model
    # keys read only for that architecture (MiMo-V2's v_head_dim is its V head size; DeepSeek's is an MLA
    # dimension).
    model_keys: tuple[ModelKey, ...] = ()
    architectures: Mapping[str, Any] = field(default_factory=dict)
    architecture_keys: Mapping[str, tuple[ModelKey, ...]] = field(default_factory=dict)
    # The value an unset field takes when it depends on other fields (`defaults` cases, first whose `when`
    # holds; the last has no `when`): head_size is 576 for an MLA layer, 128 otherwise.
    defaults: tuple[DerivedCase, ...] = ()
    # Whether vLLM's MLA layers pass this input to selection too (`mla_layers = false`: MLAAttention omits it,
    # as 0.33's does a sliding window), so `--model` sets it for MLA models only where they do.
    mla_layers: bool = True
    # vLLM's own refusal of a value outside an enum field's domain, put first in the ConfigError (users grep for
    # vLLM's wording): {value} the value given, {VALUE} upper-cased as vLLM's enum parsers print it, {values} the
    # accepted ones; empty: the generic "Invalid <field>" text
    unknown_message: str = ""
    # how vLLM reads `env`'s text (one of ENV_READINGS); required with `env`
    env_reads: str = ""
    # the checkpoint's own value (`--model`: config.json's quantization_config), kv_cache_dtype only
    checkpoint: CheckpointKv | None = None

    @property
    def flag(self) -> str:
        return self.flags[0] if self.flags else "--" + self.name.replace("_", "-")

    @property
    def default_reads(self) -> tuple[str, ...]:
        """The fields its `defaults` cases read, in order (the Config, template and sweep code that follow a value
        filled from other fields ask the same question)."""
        return tuple(dict.fromkeys(lit.field for case in self.defaults for lit in case.when))

    def unset_value(self, facts: Mapping[str, Any], unknown: Any = None) -> Any:
        """The value this field takes when not given, read from the other fields in `facts`: the first
        `defaults` case whose `when` holds (`unknown` when a case reads a field whose value is `unknown`
        before one decides), else `default`."""
        for case in self.defaults:
            for lit in case.when:
                v = facts.get(lit.field)
                if unknown is not None and v is unknown:
                    return unknown
                if not lit.pred(v):
                    break
            else:
                return case.value
        return self.default


@dataclass(frozen=True, slots=True)
class Invariant:
    """A platform invariant (`[[invariants]]`): what holds between fields in every configuration.

    Config refuses a configuration that breaks one (a ConfigError naming the field) and the CSP never
    builds one, both from this value alone. Two forms:
    - a platform field (`field`, `platforms`): the field has a value only on those platforms (None
      elsewhere); on them an unset value is refused (`required`) or taken as `default`; given alone
      (no platform, no GPU) it names its platform (`implies_platform`);
    - a clause (`when` / `require`, lowered like a backend check): `checks` must not fire;
    - a definition (`field` + `equals`): the bool `field` is true exactly when the `equals` literal over
      another field holds (vLLM's use_dcp is decode_context_parallel_size > 1); given alone, either side
      implies the other, given both, they must agree.
    `reason` says why, in the error and the docs; `message` is vLLM's own refusal where vLLM refuses the
    configuration itself (0.21's removed cuDNN prefill switch), put first in the ConfigError.
    """

    key: str
    reason: str
    field: str = ""
    message: str = ""
    platforms: tuple[str, ...] = ()
    required: bool = False
    default: Any = None
    implies_platform: bool = False
    checks: tuple[Check, ...] = ()
    equals: Literal | None = None

    @property
    def kind(self) -> str:
        """platform_field | definition | clause"""
        return "definition" if self.equals is not None else "platform_field" if self.field else "clause"

    @property
    def fields(self) -> tuple[str, ...]:
        if self.equals is not None:
            return (self.field, self.equals.field)
        if self.field:
            return ("platform", self.field)
        return tuple(dict.fromkeys(f for c in self.checks for f in c.fields))


@dataclass(frozen=True, eq=False)
class RuleSet:
    """Everything the solvers know: domains, derived facts, backends and priority lists."""

    domains: Mapping[str, tuple[Any, ...]]
    aliases: Mapping[str, Mapping[str, str]]
    gpus: Mapping[str, Mapping[str, Any]]
    generations: Mapping[str, str]
    derived: Mapping[str, Derived]
    backends: Mapping[str, Backend]
    lists: tuple[PriorityList, ...]
    sources: tuple[str, ...] = field(default=())
    # Declared selection inputs, in declaration order (fields.toml); empty for a set without declarations.
    fields: Mapping[str, FieldDecl] = field(default_factory=dict)
    # vLLM's generic capability checks in vLLM's order ([[generic_checks]]).
    generic_checks: tuple[GenericCheck, ...] = ()
    # Platform invariants ([[invariants]]), in file order: Config validation and the CSP read them.
    invariants: tuple[Invariant, ...] = ()
    # The vLLM release modelled ("0.17") and where the facts were read from ([ruleset] in ruleset.toml).
    vllm: str = ""
    read_from: str = ""
    summary: str = ""
    # The [ruleset] table's semantic switches: combination_reasons ("all" | "first"), derived_warnings
    # ("chosen": a derived fact's log lines show when the chosen backend reads it; "validated": when any
    # validated candidate does, as vLLM >= 0.18 validates every list entry).
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def default_block_size(self) -> int:
        """vLLM's CacheConfig.DEFAULT_BLOCK_SIZE ([ruleset] default_block_size; 16 until 0.33, 64 from 0.34): the
        size start-up asks a backend to prefer when --block-size is not given."""
        value = self.settings.get("default_block_size", 16)
        return value if type(value) is int else 16

    def lists_for(self, platform: str) -> tuple[PriorityList, ...]:
        return tuple(pl for pl in self.lists if pl.platform == platform)

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(self.domains["platform"])
