"""What stands in the way: why a higher-priority backend lost (its conflict, its fixes), the fixes
when nothing (or not the requested backend) is selected, and the conflicts worth showing.

Why this module: advise() reports what was selected; this explains what was not, without the noise
the user never chose (a GPU's platform, untouched defaults).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from .advice_fields import _HARDWARE, _MODEL, _declared_fields
from .advice_kinds import _applicable
from .advice_search import _auto_goal, _rank, _remedy, _search, _try, _without_request
from .advice_types import Context, LostBackend, Remedy
from .errors import ConfigError, SelectionError
from .explain import Explanation, request_conflicts


def _drop_noise(conflict: Mapping[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    """The facts worth showing of a minimal conflict. A GPU platform is implied by the GPU (a CPU is
    shown: it is the cause). With the question's context, facts nobody gave that sit at the
    release's declared default (use_rswa=false, block_size unset ...) are left out too: in a release
    with many selection inputs a minimal conflict names every default that closes an escape route,
    and the user needs the ones they chose and the hardware."""
    shown = {k: v for k, v in conflict.items() if not (k == "platform" and v in ("cuda", "rocm"))}
    if ctx is not None:
        declared = _declared_fields(ctx.config)
        chosen = {k: v for k, v in shown.items()
                  if k in ctx.user_fields or k in _HARDWARE or k not in declared or v != declared[k].default}
        shown = chosen or shown
    return shown if shown else dict(conflict)


def lost_backend(ctx: Context, backend: str, reasons: Sequence[str]) -> LostBackend:
    """Why `backend` (higher priority than the selected one) lost, and what gets it."""
    from .config import ANY
    conflict: dict[str, Any] = {}
    model_conflict = None
    try:  # the conflicts only: the fixes are searched below, as the user can apply them
        conflicts = request_conflicts(ctx.config.replace(backend=backend), role=ctx.role, available=ctx.available,
                                      max_conflicts=2)  # bounded: per lost backend
        if conflicts:
            conflict = _drop_noise(conflicts[0], ctx)
            model_conflict = next((dict(c) for c in conflicts if c and all(
                f in _MODEL and f not in ctx.user_fields for f in c)), None)
    except (ConfigError, SelectionError):
        pass
    fixes = _search(ctx, _auto_goal(ctx, backend), request=backend) if ctx.config.is_partial is False else []
    if ANY in conflict.values():
        conflict = {}
    usable = [f for f in fixes if f.kind in ("setting", "version")]
    hardware_only = not usable and any(f.kind == "hardware" for f in fixes)
    if usable or any(f.kind == "hardware" for f in fixes):
        model_conflict = None if usable else model_conflict
    return LostBackend(backend, tuple(reasons), conflict, tuple(fixes), hardware_only, model_conflict)


def failure_fixes(ctx: Context, e: Explanation) -> list[Remedy]:
    """Fixes for a configuration that selects nothing (or not the requested backend): the
    diagnosis' minimal fixes the user can apply, plus the searched ones, ranked."""
    goal = _auto_goal(ctx, None) if e.requested is None else _auto_goal(ctx, e.requested)
    found: list[Remedy] = []
    for f in e.fixes:
        changes = dict(f.changes)
        if not _applicable(ctx, changes):
            continue  # e.g. a model fact from the model's config: not something the user can set
        if "platform" in changes:
            continue
        if any(k in _HARDWARE for k in changes):
            continue  # hardware is searched below, with GPU names
        got = _try(ctx, changes, goal)
        if got:
            found.append(_remedy(ctx, changes, got))
    found += _search(ctx, goal)
    if e.requested is not None and (drop := _without_request(ctx)) is not None:
        found.append(drop)
    return _rank(found)


def _shown_conflicts(conflicts: Iterable[Mapping[str, Any]], ctx: Context | None = None) -> tuple[Mapping[str, Any], ...]:
    """Conflicts without noise (GPU platform, untouched defaults), none repeating or containing one
    shown before."""
    out: list[dict[str, Any]] = []
    for c in conflicts:
        d = _drop_noise(c, ctx)
        if d and not any(set(o.items()) <= set(d.items()) for o in out):
            out.append(d)
    return tuple(out)
