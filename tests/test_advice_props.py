"""Properties of the advice layer over configurations drawn from the rules' own domains: every
fix really gets what it says, fixes are ranked by kind, model facts are never offered unless the
user typed them, and hardware_only never sits next to a setting fix."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnsolve import Config, solve
from attnsolve.advice import _HARDWARE, _MODEL, KINDS, Context, _plausible, advise
from attnsolve.selection import compiled_rules
from strategies import budget, configs

# Every release: the properties read the running release's rules (configs drawn from its domains).
pytestmark = pytest.mark.every_release


def _applied(cfg: Config, changes: dict) -> Config:
    extra = {"gpu": None} if set(changes) & set(_HARDWARE) else {}
    return cfg.replace(**changes, **extra)


def _check_list(cfg: Config, fixes, target: str | None, allow_model: bool) -> None:
    kinds = [KINDS.index(f.kind) for f in fixes]
    assert kinds == sorted(kinds)
    for kind in KINDS:  # within a kind, fixes that keep the user's choices come first
        keeps = [f.keeps_intent for f in fixes if f.kind == kind]
        assert keeps == sorted(keeps, reverse=True), fixes
    for f in fixes:
        assert f.text and "--gpu" not in f.text and "--rocm-arch" not in f.text
        assert allow_model or not (set(f.changes) & set(_MODEL)), f
        assert _plausible(compiled_rules().rules, "head_size", f.changes.get("head_size", 128)), f
        assert f.keeps_intent == (f.gives_up is None)
        sel = solve(_applied(cfg, dict(f.changes)))
        assert (sel.backend, sel.variant) == (f.selects, f.variant), f
        if target is not None and "backend" not in f.changes:  # dropping a request selects another
            assert sel.backend == target


@settings(max_examples=budget(12), deadline=None)
@given(cfg=configs(), typed=st.booleans())
def test_advice_fixes_are_verified_and_ranked(cfg: Config, typed: bool) -> None:
    user = frozenset(_MODEL) if typed else frozenset()
    a = advise(Context(cfg, user_fields=user))
    e = a.explanation
    if e.selected is None:
        _check_list(cfg, a.fixes, e.requested, typed)
        if a.hardware_only:
            assert not any(f.kind == "setting" for f in a.fixes)
    for lost in a.lost:
        _check_list(cfg, list(lost.fixes), lost.backend, typed)
        assert not (lost.hardware_only and any(f.kind == "setting" for f in lost.fixes))
