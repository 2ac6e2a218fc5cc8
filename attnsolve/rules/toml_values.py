"""Typed reads of one TOML value (an integer, a boolean, a list, a string, a compute capability).

Why a module of its own: every table of the rules reads its values through these, so a wrong kind is
refused with the same message wherever it appears.
"""

from __future__ import annotations

from typing import Any


def _cc_int(value: Any) -> int:
    """'9.0' / 9.0 / '12.1' -> 90 / 121."""
    if isinstance(value, bool):
        raise ValueError(f"expected a compute capability like '9.0', got {value!r}")
    if isinstance(value, int):
        return value * 10 if value < 20 else value
    text = str(value)
    major, _, minor = text.partition(".")
    if not major.isdigit() or (minor and not minor.isdigit()) or len(minor) > 1:
        raise ValueError(f"expected a compute capability like '9.0', got {value!r}")
    return int(major) * 10 + (int(minor) if minor else 0)


def cc_from_text(value: Any) -> int | None:
    """A capability fact ("9.4", 9.4, 94) -> vLLM's integer form; None when unset or not a capability."""
    if value is None:
        return None
    try:
        return _cc_int(value)
    except ValueError:
        return None


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected an integer, got {v!r}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _list(v: Any) -> list:
    if not isinstance(v, list):
        raise ValueError(f"expected a list, got {v!r}")
    return v


def _str_list(v: Any) -> tuple[str, ...]:
    items = _list(v)
    if not all(isinstance(x, str) for x in items):
        raise ValueError(f"expected a list of strings, got {v!r}")
    return tuple(items)


def _text(v: Any, key: str) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{key} must be a string, got {v!r}")
    return v
