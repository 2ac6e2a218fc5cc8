"""The KV block size vLLM's start-up uses with a backend, and the block sizes the backend's kernels serve."""

from __future__ import annotations

import functools
from typing import Any

from ..rules.model import Backend, RuleSet
from ..solver.compiled import CompiledRules
from .messages import FactsWith
from .per_rules import per_rules


def block_reason(rules: RuleSet) -> str:
    """vLLM's reason against a backend whose kernels cannot serve the block size (the generic check's)."""
    for g in rules.generic_checks:
        if g.field == "block_size" and g.reason:
            return g.reason
    return "block_size not supported"


def preferred_block_size(rules: RuleSet, backend: str, block_size: int | None, plist: Any = None,
                         facts: Any = None, comp: CompiledRules | None = None, t: int | None = None) -> int | None:
    """The KV block size vLLM's start-up sets: the platform's start-up rule when it has one (first
    matching case; "block_size" keeps the user's, "preferred" defers to what follows); else the user's;
    else the backend's preferred size: the release's default (16; 64 from 0.34) if it accepts it, else its
    smallest kernel size.
    comp, t: the compiled rules and the truth bitset of `facts` (CompiledRules.holds), to decide the cases
    without evaluating them."""
    if plist is not None and plist.start_block_size and facts is not None:
        sfacts = FactsWith(facts, "selected", backend)  # a case may test the chosen backend (XPU)
        if comp is not None and t is not None:
            t = comp.with_value(t, "selected", backend)
        if comp is None or t is None:
            hit = next((i for i, case in enumerate(plist.start_block_size)
                        if all(lit(sfacts) for lit in case.when)), -1)
        else:
            hit = comp.first_holding(plist.start_block_size, t, sfacts)
        if hit >= 0 and plist.start_block_size[hit].value != "preferred":  # "preferred": the rule below
            case = plist.start_block_size[hit]
            return block_size if case.value == "block_size" else case.value
    if block_size is not None:
        return block_size
    if rules.backends[backend].preferred_block_size is not None:  # the backend's own get_preferred_block_size
        return rules.backends[backend].preferred_block_size
    sizes, exact = kernel_sizes(rules, backend, facts)
    return _default_block_size(sizes, exact, rules.default_block_size)


@functools.lru_cache(maxsize=1024)
def _default_block_size(sizes: tuple[int, ...], exact: tuple[int, ...], default: int) -> int:
    if (default in exact) if exact else (not sizes or any(default % s == 0 for s in sizes)):
        return default  # vLLM's get_preferred_block_size(DEFAULT_BLOCK_SIZE): the default when accepted
    return min(exact or sizes)


_EXACT: dict[int, tuple[RuleSet, str]] = {}


def _exact_key(rules: RuleSet) -> str:
    return per_rules(_EXACT, rules, lambda r: next((g.exact_key for g in r.generic_checks
                                                     if g.field == "block_size" and g.exact_key), ""))


Sizes = tuple[tuple[int, ...], tuple[int, ...]]
_SIZES: dict[int, tuple[RuleSet, dict[str, tuple[str | None, dict[Any, Sizes] | None, Sizes]]]] = {}


def _sizes_table(rules: RuleSet) -> dict[str, tuple[str | None, dict[Any, Sizes] | None, Sizes]]:
    """Per backend: its variant field, the kernel block sizes per value of that field (the first variant
    naming the value, as Backend.variant_for picks it), and the sizes without a variant. Built once per rule
    set: every cold solve asks twice (start-up block size, start-up refusal)."""
    out: dict[str, tuple[str | None, dict[Any, Sizes] | None, Sizes]] = {}
    for name, b in rules.backends.items():
        by_value: dict[Any, Sizes] | None = {}
        if b.variant_field:
            try:
                for v in b.variants:
                    sizes = _kernel_sizes_of(rules, b, v.name)
                    for x in v.values:
                        by_value.setdefault(x, sizes)  # type: ignore[union-attr]
            except TypeError:  # an unhashable value in a variant's list: decided per call
                by_value = None
        out[name] = (b.variant_field, by_value, _kernel_sizes_of(rules, b, None))
    return out


def kernel_sizes(rules: RuleSet, backend: str, facts: Any) -> Sizes:
    """The chosen backend's kernel block sizes (its variant's when a variant declares them): (multiples
    of, exact sizes); exact sizes (B12X) replace the multiples."""
    field, by_value, plain = per_rules(_SIZES, rules, _sizes_table)[backend]
    if facts is None or not field:
        return plain
    value = facts.get(field)
    if by_value is not None:
        try:
            return by_value.get(value, plain)
        except TypeError:  # an unhashable value: the variants' lists decide by equality
            pass
    b = rules.backends[backend]
    name = b.variant_for(value)
    return plain if name is None else _kernel_sizes_of(rules, b, name)


def _kernel_sizes_of(rules: RuleSet, b: Backend, name: str | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    caps = b.caps
    if name is not None:
        for v in b.variants:
            if v.name == name:
                caps = caps.merged(v.caps)
    exact_key = _exact_key(rules)
    exact = tuple(caps.get(exact_key) or ()) if exact_key else ()
    return tuple(caps.kernel_block_sizes or ()), exact
