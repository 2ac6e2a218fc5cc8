"""Rules as data: one folder of TOML files per vLLM release, each loaded into an immutable RuleSet.

`rules_for(version)` is the packaged set of one release (loaded once); `default_rules()` the set a
question without a version is answered from. `use_rules(path)` puts another set (a mutant, an
unreleased vLLM) in place of every release for the duration of a `with` block.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .loader import RULES_DIR, RULES_ROOT, RulesError, load_rules
from .model import RuleSet
from .sets import default_version, info, parse_version, release_for, versions

__all__ = ["RuleSet", "RulesError", "load_rules", "default_rules", "rules_for", "use_rules", "RULES_DIR",
           "RULES_ROOT", "override", "versions", "default_version", "parse_version", "release_for"]

_loaded: dict[str, RuleSet] = {}
_failed: dict[str, RulesError] = {}
_override: RuleSet | None = None
_env_checked = False
_generation = 0


def rules_for(version: str) -> RuleSet:
    """The packaged rule set of one release label ("0.17"), or the override while one is active."""
    active = override()
    if active is not None:
        return active
    rules = _loaded.get(version)
    if rules is None:
        if version in _failed:  # a packaged draft that does not load: the same error, not another parse
            raise _failed[version]
        try:
            rules = _loaded[version] = load_rules(info(version).path, check_structure=False)
        except RulesError as e:
            _failed[version] = e
            raise
    return rules


def override() -> RuleSet | None:
    """The set that replaces every release: use_rules(), or $ATTNSOLVE_RULES (a folder) at first use."""
    global _override, _env_checked
    if not _env_checked:
        env = os.environ.get("ATTNSOLVE_RULES")
        if env and _override is None:
            _override = load_rules(Path(env))  # a bad folder raises here, every time it is asked
        _env_checked = True
    return _override


def default_rules() -> RuleSet:
    """The rule set a question without a vLLM version is answered from."""
    return rules_for(default_version())


def generation() -> int:
    """Bumped whenever the override changes, so caches keyed on it stay correct."""
    return _generation


def set_rules(rules: RuleSet | None) -> None:
    global _override, _generation, _env_checked
    _env_checked = True
    _override = rules
    _generation += 1


@contextmanager
def use_rules(rules: RuleSet | str | Path) -> Iterator[RuleSet]:
    """Temporarily answer every question from `rules` (a RuleSet or a folder); restored in `finally`."""
    previous = override()
    new = rules if isinstance(rules, RuleSet) else load_rules(rules)
    set_rules(new)
    try:
        yield new
    finally:
        set_rules(previous)
