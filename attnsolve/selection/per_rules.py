"""Values derived from one rule set, kept beside it (several releases and test mutants live side by side)."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from ..rules.model import RuleSet
from ..rules.sets import per_rules_limit

T = TypeVar("T")


def per_rules(cache: dict[int, tuple[RuleSet, Any]], rules: RuleSet, make: Callable[[RuleSet], T]) -> T:
    """`make(rules)`, kept per rule set (a plain dict by identity: cheaper than a weak mapping on the cold path)."""
    got = cache.get(id(rules))
    if got is None or got[0] is not rules:
        if len(cache) > per_rules_limit():  # every packaged release's, and a few test mutants
            cache.clear()
        got = cache[id(rules)] = (rules, make(rules))
    return got[1]
