"""solve(): answers kept per config and per value class.

Two configs whose fields fall in the same value classes (CompiledRules.class_key) get the same answer,
unless producing it put a fact into text (a counter in rules.model sees every rendering): such an answer is
kept for the whole class, and a never-seen value of the class is answered from it without solving again.
"""

from __future__ import annotations

import operator
from dataclasses import fields
from typing import Any, Iterable

from ..config import ANY, Config
from ..engine import engine_for
from ..errors import ConfigError, InvalidBackendError, NoValidBackendError
from ..guards import available_set, require_config
from ..rules.model import RENDERINGS
from ..solver.facts import base_facts, parse_role
from .core import answer
from .release import engine_of
from .result import Selection


def solve(config: Config, *, role: str | None = None, available: Iterable[str] | None = None) -> Selection:
    """Select the backend vLLM would use for `config` (role 'decode' or 'mla_prefill').

    available: backend names runnable on this machine; others count as invalid with the reason
    "kernel not runnable on this machine" (so automatic selection moves on, a request fails).
    """
    if type(config) is not Config:
        require_config(config)  # first: a non-Config (a list) is not even a cache key
    avail = available_set(available, config) if available is not None else None
    if role is not None and not isinstance(role, str):
        role = parse_role(role)  # raises ConfigError for anything that is not a role name
    key = (config, role, avail)
    eng = engine_for(config.vllm)
    comp = eng.compiled
    cache = eng.cache
    hit = cache.get(key)
    if hit is not None:
        return hit
    try:
        role_ = parse_role(role)
        facts: dict[str, Any] | None = base_facts(config, role_)
    except ConfigError:
        facts = None  # a partial config's error comes first
    if facts is None or config.is_partial:  # is_partial: ANY among the facts, decided when the Config was built
        if config.is_partial:
            raise ConfigError(config.free_fields[0], ANY, "a concrete value: solve() needs a full config "
                              "(use explain() or possible_backends() for partial ones)")
        role_ = parse_role(role)
        facts = base_facts(config, role_)  # raises its ConfigError
    keyed = comp.keyed(facts)  # the class key, and complete()'s memo key for these facts
    ckey = None if keyed is None else keyed[0]
    if ckey is not None:
        ckey = (ckey, role_, avail)
        try:
            like = eng.by_class.get(ckey)
        except TypeError:  # an unhashable value (no rule names one): no answer by class
            like = ckey = None
        if like is not None:  # the same answer as for another value of these value classes
            sel = _for_config(like, config)
            if len(cache) > 65536:
                cache.clear()
            cache[key] = sel
            return sel
        if ckey is not None and not comp.named("block_size", facts.get("block_size")):
            ckey = None  # the start-up block size passes the user's on: not the same for the whole class
    mark = next(RENDERINGS)
    try:
        sel = answer(comp, config, role_, avail, facts, keyed)
    except (NoValidBackendError, InvalidBackendError) as err:
        raise err.defer_explanation(config, role_, avail) from None
    if ckey is not None and next(RENDERINGS) == mark + 1:  # no fact was put into its text: valid for the class
        if len(eng.by_class) > 4096:
            eng.by_class.clear()
        eng.by_class[ckey] = sel
    if len(cache) > 65536:
        cache.clear()
    cache[key] = sel
    return sel


def _for_config(sel: Selection, config: Config) -> Selection:
    """`sel` as the answer for `config` (another config of the same value classes)."""
    values = list(_SELECTION_FIELDS(sel))
    values[_CONFIG_AT] = config
    return Selection(*values)


_SELECTION_NAMES = tuple(f.name for f in fields(Selection))
_SELECTION_FIELDS = operator.attrgetter(*_SELECTION_NAMES)
_CONFIG_AT = _SELECTION_NAMES.index("config")


def clear_cache(config: Config | None = None) -> None:
    """Forget solve()'s memoised answers for one release, per config and per value class (benchmarks measure
    cold solves with it)."""
    eng = engine_of(config)
    eng.cache.clear()
    eng.by_class.clear()
