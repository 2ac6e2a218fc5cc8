"""The search for fixes: candidate changes tried alone, then in pairs, with another release and on
other hardware, each verified by re-solving, then ranked by what the user can change.

Why this module: a change is advice only if selection really reaches the goal with it; this is the
one loop that checks that, and the one ranking every list of fixes goes through.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

from .advice_candidates import _hardware, _model_changes, _settings
from .advice_fields import _FP8, _HARDWARE, KINDS, _declared_fields
from .advice_kinds import _gives_up, _kind
from .advice_releases import _version_fixes
from .advice_spelling import change_text, gpu_text
from .advice_types import Context, Goal, Remedy
from .config import Config
from .errors import ConfigError, SelectionError
from .render import show as _show


def _try(ctx: Context, changes: Mapping[str, Any], goal: Goal) -> tuple[str, str | None] | None:
    fields = dict(changes)
    if any(k in _HARDWARE for k in fields):
        fields["gpu"] = None  # the new hardware replaces the named GPU
    if "dtype" in fields and "dtype_explicit" in _declared_fields(ctx.config):
        fields["dtype_explicit"] = True  # the fix is typed as --dtype X: vLLM's start-up checks it as given
    kv = fields.get("kv_cache_dtype")
    if kv is not None and ctx.kv_effective:
        kv = fields["kv_cache_dtype"] = dict(ctx.kv_effective).get(kv, kv)
    if ctx.sparse_kv_rewrite and isinstance(kv, str) and kv.startswith(_FP8):
        fields["kv_cache_dtype"] = "fp8_ds_mla"
    try:
        cfg = ctx.config.replace(**fields)
        if ctx.backend_per_kind is not None and "backend" not in fields:  # the layer's kind may change with the fix
            from .per_kind import apply_backend_per_kind
            base = cfg.replace(backend=ctx.global_backend) if ctx.per_kind else cfg
            cfg = apply_backend_per_kind(base, ctx.backend_per_kind).config
    except ConfigError:
        return None
    return goal(cfg)


def _auto_goal(ctx: Context, target: str | None) -> Goal:
    """Selection (automatic, or the config's requested backend) gets `target` and vLLM starts
    with it (any backend when target is None)."""
    from .selection import solve_uncached
    from .solver.facts import parse_role
    role = parse_role(ctx.role)

    def goal(cfg: Config) -> tuple[str, str | None] | None:
        try:
            sel = solve_uncached(cfg, role, ctx.available)
        except (SelectionError, ConfigError):
            return None
        if getattr(sel, "startup_error", None):
            return None  # vLLM selects it but refuses to start: not a fix
        return (sel.backend, sel.variant) if target is None or sel.backend == target else None

    return goal


def _remedy(ctx: Context, changes: Mapping[str, Any], got: tuple[str, str | None], gpus: tuple[str, ...] = (),
            facts: Mapping[str, Any] | None = None, older: bool = False) -> Remedy:
    kind = _kind(ctx, changes)
    parts = []
    hw = {k: v for k, v in changes.items() if k in _HARDWARE}
    if hw:
        text = gpu_text(gpus, facts or {}, older) if gpus else ", ".join(f"{k}={_show(v)}" for k, v in hw.items())
        parts.append(("use a GPU: " if ctx.config.platform == "cpu" else "use ") + text)
    parts += [change_text(ctx, k, v) for k, v in changes.items() if k not in _HARDWARE]
    lost = _gives_up(ctx, changes)
    return Remedy(dict(changes), got[0], kind, " and ".join(parts), lost is None, tuple(gpus), got[1], lost)


def _without_request(ctx: Context) -> Remedy | None:
    """The fix of dropping the config's backend request, where automatic selection then answers and starts."""
    got = _try(ctx, {"backend": None}, _auto_goal(ctx, None))
    return _remedy(ctx, {"backend": None}, got) if got else None


def _search(ctx: Context, goal: Goal, *, request: str | None = None, limit: int = 6) -> list[Remedy]:
    """Verified fixes, ranked: settings (singles, then pairs), a requested backend, the version,
    hardware (alone, then with one setting), then model facts the user typed."""
    found: list[Remedy] = []
    singles = _settings(ctx)
    working: list[frozenset[str]] = []
    for f, v in singles:
        got = _try(ctx, {f: v}, goal)
        if got:
            found.append(_remedy(ctx, {f: v}, got))
            working.append(frozenset({f}))
    if not found:
        for (f1, v1), (f2, v2) in itertools.combinations(singles, 2):
            if f1 == f2:
                continue
            got = _try(ctx, {f1: v1, f2: v2}, goal)
            if got:
                found.append(_remedy(ctx, {f1: v1, f2: v2}, got))
                if len(found) >= limit:
                    break
    if request is not None and ctx.config.backend is None:
        got = _try(ctx, {"backend": request}, _auto_goal(ctx, None))
        if got:
            found.append(_remedy(ctx, {"backend": request}, got))
    found += _version_fixes(ctx, goal)
    hardware = _hardware(ctx)
    hw_found = 0
    for changes, names, facts, older in hardware:
        got = _try(ctx, changes, goal)
        if got:
            found.append(_remedy(ctx, changes, got, names, facts, older))
            hw_found += 1
            if hw_found >= 2:
                break
    if not hw_found and not found:
        for (changes, names, facts, older), (f, v) in itertools.product(hardware[:4], singles):
            both = {**changes, f: v}
            got = _try(ctx, both, goal)
            if got:
                found.append(_remedy(ctx, both, got, names, facts, older))
                break
    for f, v in _model_changes(ctx):
        got = _try(ctx, {f: v}, goal)
        if got:
            found.append(_remedy(ctx, {f: v}, got))
            break
    return _rank(found)


def _loss(fix: Remedy) -> int:
    """How much of the user's intent a fix drops: nothing, a tuning switch they set (a pinned FA
    version), or a choice that changes what runs (the fp8 KV cache, float32 weights, a model fact)."""
    if fix.keeps_intent:
        return 0
    return 1 if (fix.gives_up or "").startswith("your ") else 2


def _rank(fixes: Sequence[Remedy]) -> list[Remedy]:
    unique: dict[tuple[tuple[str, str], ...], Remedy] = {}
    for f in fixes:
        unique.setdefault(tuple(sorted((k, repr(v)) for k, v in f.changes.items())), f)
    order = list(unique.values())
    ranked = sorted(order, key=lambda f: (KINDS.index(f.kind), _loss(f), "backend" in f.changes,
                                          len(f.changes), order.index(f)))
    # the same fields changed for the same result (block size 16, 32, 64...): the nearest two
    out: list[Remedy] = []
    per: dict[tuple[frozenset[str], str], int] = {}
    for f in ranked:
        key = (frozenset(f.changes), f.selects)
        per[key] = per.get(key, 0) + 1
        if per[key] <= 2:
            out.append(f)
    return out
