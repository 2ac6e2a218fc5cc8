"""Other vLLM releases: fixes that install another release, and the releases whose selection
succeeds where this one fails.

Why this module: attnsolve holds rules for several releases, and asking each the same question is
advice of its own kind ("version"); versions.py is read only when such a fix is searched.
"""

from __future__ import annotations

from typing import Any

from .advice_types import Context, Goal, Remedy
from .errors import ConfigError, SelectionError


def _version_fixes(ctx: Context, goal: Goal) -> list[Remedy]:
    """Fixes from another vLLM release: the same question asked of each other release attnsolve
    has rules for, kept where that release reaches the goal (newer releases first)."""
    from .versions import in_release, vllm_versions
    current = ctx.config.vllm
    out: list[Remedy] = []
    for v in sorted((v for v in vllm_versions() if v != current), key=_release_key, reverse=True):
        try:
            got = goal(in_release(ctx.config, v))
        except (ConfigError, SelectionError):
            continue  # a field that release does not take, or a draft set that cannot answer
        if got:
            older = current is not None and _release_key(v) < _release_key(current)
            text = f"pip install vllm=={_wheel_version(v)}" + (" (an older release)" if older else "")
            gives_up = f"vLLM {current}" if older else None  # a downgrade drops what the newer release brings
            out.append(Remedy({"vllm": v}, got[0], "version", text, not older, (), got[1], gives_up))
    return out


def _release_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _wheel_version(version: str) -> str:
    """'0.33' -> '0.33.0': the release the rule set was read from (its wheel)."""
    return version if version.count(".") >= 2 else version + ".0"


def other_releases(ctx: Context) -> tuple[Any, ...]:
    """The other vLLM releases attnsolve knows whose selection succeeds for this configuration."""
    from .versions import in_release, outcome, vllm_versions
    out = []
    for v in vllm_versions():
        if v == ctx.config.vllm:
            continue
        try:
            o = outcome(in_release(ctx.config, v), ctx.role)
        except Exception:  # noqa: BLE001 - a field the other release reads differently, a draft set that fails
            continue
        if o.backend is not None and o.error is None:
            out.append(o)
    return tuple(out)
