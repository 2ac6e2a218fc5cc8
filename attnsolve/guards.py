"""Argument checks at the public entry points (solve, explain, possible_backends, selection_table,
sweep, coverage_report), run before anything else touches the arguments.

Why: a wrong argument type must surface as the documented ConfigError naming the argument, not as
a TypeError or AttributeError from deep inside (an unhashable cache key, `frozenset(5)`, a string
compared with an int).
"""

from __future__ import annotations

from typing import Any, Iterable

from .errors import ConfigError, closest

MAX_NAMES = 1024  # an `available=` or `over=` longer than this is not a list of names


def require_config(value: Any, name: str = "config") -> Any:
    """`value` if it is a Config, else ConfigError (checked first: nothing else is safe on a non-Config)."""
    from .config import Config
    if not isinstance(value, Config):
        raise ConfigError(name, value, "an attnsolve.Config, e.g. Config(platform='cuda', gpu='H100', dtype='bfloat16')")
    return value


def available_set(value: Iterable[str] | None, config: Any = None) -> frozenset[str] | None:
    """`available=`: None, or an iterable of backend names known to the rules of `config`'s vLLM
    release (the default release without a config)."""
    if value is None:
        return None
    accepted = "None or an iterable of backend names, e.g. {'FLASH_ATTN', 'TRITON_ATTN'}"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError("available", value, accepted)
    names: list[str] = []
    try:
        for item in value:
            if not isinstance(item, str):
                raise ConfigError("available", item, accepted)
            names.append(item)
            if len(names) > MAX_NAMES:
                raise ConfigError("available", value, f"at most {MAX_NAMES} backend names")
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - an iterable whose iteration fails is still bad input
        raise ConfigError("available", value, accepted) from e
    from .rules import default_rules, rules_for
    version = getattr(config, "vllm", None)
    known = (rules_for(version) if version is not None else default_rules()).backends
    for n in names:
        if n not in known:
            raise ConfigError("available", n, sorted(known), suggestion=closest(n.upper(), known))
    return frozenset(names)


def require_int(name: str, value: Any, lo: int, hi: int) -> int:
    """An int (not a bool) in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(name, value, f"an integer from {lo} to {hi}")
    return value


def field_names(name: str, value: Any, known: Iterable[str]) -> list[str]:
    """A sequence of field names (e.g. selection_table's `over`), each one known."""
    known = tuple(known)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(name, value, "a list of field names, e.g. ['compute_capability', 'kv_cache_dtype']")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or item not in known:
            raise ConfigError(name, item, known, suggestion=closest(item, known) if isinstance(item, str) else None)
        out.append(item)
        if len(out) > len(known):
            raise ConfigError(name, value, "each field at most once")
    return out
