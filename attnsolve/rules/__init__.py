"""Rules as data: TOML files in this folder, loaded into an immutable RuleSet.

`default_rules()` is the packaged rule set (loaded once). `use_rules(path)` points the whole
package at another rules folder (a mutant, a newer vLLM) for the duration of a `with` block.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .loader import RULES_DIR, RulesError, load_rules
from .model import RuleSet

__all__ = ["RuleSet", "RulesError", "load_rules", "default_rules", "use_rules", "RULES_DIR"]

_current: RuleSet | None = None
_generation = 0


def default_rules() -> RuleSet:
    """The active rule set: $ATTNSOLVE_RULES if set (a folder of TOML files), else the packaged rules."""
    global _current
    if _current is None:
        env = os.environ.get("ATTNSOLVE_RULES")
        _current = load_rules(Path(env) if env else None, check_structure=bool(env))
    return _current


def generation() -> int:
    """Bumped whenever the active rules change, so caches keyed on it stay correct."""
    return _generation


def set_rules(rules: RuleSet | None) -> None:
    global _current, _generation
    _current = rules
    _generation += 1


@contextmanager
def use_rules(rules: RuleSet | str | Path) -> Iterator[RuleSet]:
    """Temporarily make `rules` (a RuleSet or a folder) the active rule set; restored in `finally`."""
    previous = _current
    new = rules if isinstance(rules, RuleSet) else load_rules(rules)
    set_rules(new)
    try:
        yield new
    finally:
        set_rules(previous)
