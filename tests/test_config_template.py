"""Config's template path (attnsolve/config/template.py) builds exactly what the full build builds.

A Config whose non-numeric arguments were seen before is built from that shape's template: only the numeric
fields are checked again. Law: for any arguments, the template path gives the same fields, declared fields
and hash as the full build (`_build`, no template), or the same error; either way `is_partial` (decided when
the Config is built) says whether a field is ANY, and base_facts (copied from the facts laid out when the
Config is built, shared by a template's Configs) equals the facts read field by field.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnsolve import ANY, Config, ConfigError
from attnsolve.config import FIELD_NAMES, cc_int, core, template
from attnsolve.solver.facts import base_facts
from attnsolve.config.normalise import NUMERIC_FIELDS
from strategies import config_inputs, config_kwargs, junk

pytestmark = pytest.mark.every_release

_ABSENT = object()


def _outcome(make: Callable[[], Config]) -> tuple[Any, ...]:
    try:
        c = make()
    except Exception as e:  # noqa: BLE001 - the error itself is the answer compared
        return ("error", type(e).__name__, getattr(e, "field", None), str(e))
    free = any(getattr(c, f) is ANY for f in FIELD_NAMES) or any(v is ANY for _, v in c._extra)
    assert c.is_partial is free  # decided when built: solve() reads it instead of scanning the facts
    fields = {k: v for k, v in c.__dict__.items() if k != "_facts"}  # a shared layout: compared as facts below
    return ("config", fields, hash(c), _facts(c))


def _facts(c: Config) -> tuple[Any, ...]:
    """base_facts (from the layout laid out at build, config/facts.py) next to the facts read field by field."""
    want = {f: getattr(c, f) for f in FIELD_NAMES}
    want.update(c._extra)
    if want["compute_capability"] is not ANY:
        want["compute_capability"] = cc_int(want["compute_capability"])
    want["role"] = "decode"
    try:
        got = base_facts(c, "decode")
    except ConfigError as e:  # the role's own invariants: the same error either way is all we ask
        return ("error", str(e))
    assert list(got.items()) == list(want.items())  # the same facts in the same order
    return tuple(got.items())


def _numeric_value(name: str) -> st.SearchStrategy[Any]:
    common = [16, 32, 64, 128, 256, 576, 0, 1, 2**20, 2**20 + 1, -1, True, "64", " 128 ", "ANY", None]
    return st.one_of(st.sampled_from(common), st.integers(-3, 2**21), st.just(_ABSENT), junk())


@st.composite
def siblings(draw: Any, kwargs: st.SearchStrategy[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two argument sets that differ in their numeric fields only (set, changed or left out, in any order)."""
    first = draw(kwargs)
    second = {k: v for k, v in first.items() if k not in NUMERIC_FIELDS}
    for name in NUMERIC_FIELDS:
        v = draw(_numeric_value(name))
        if v is not _ABSENT:
            second[name] = v
    # any order of the numeric arguments (the first bad one in validation order is the error); the others
    # keep theirs (a shape is keyed by its arguments' order)
    numeric = draw(st.permutations([k for k in second if k in NUMERIC_FIELDS]))
    return first, {**{k: v for k, v in second.items() if k not in NUMERIC_FIELDS}, **{k: second[k] for k in numeric}}


def _check(first: dict[str, Any], second: dict[str, Any]) -> None:
    template._TEMPLATES.clear()
    core._INTERNED.clear()
    _outcome(lambda: Config(**first))  # keeps the shape's template when it builds
    core._INTERNED.clear()  # the second call must not be an interning hit
    got = _outcome(lambda: Config(**second))
    want = _outcome(lambda: Config._build(dict(second)))  # type: ignore[attr-defined]  # the full build
    assert got == want


@given(siblings(config_kwargs()))
def test_template_builds_what_the_full_build_builds(pair):
    _check(*pair)


@given(siblings(config_inputs()))
def test_template_on_arbitrary_input_answers_as_the_full_build(pair):
    _check(*pair)


def test_template_is_used_for_a_fresh_head_size():
    template._TEMPLATES.clear()
    base = dict(platform="cuda", compute_capability="9.0", dtype="bfloat16")
    Config(**base, head_size=1000)
    key = template.shape_key({**base, "head_size": 1001}, core.default_version(), core.generation())
    assert template.template_of(key) is not None
    mla = Config(**base, use_mla=True, head_size=None)  # a new shape: full build, then the template's unset default
    assert mla.head_size == Config(**base, use_mla=True, num_heads=8).head_size
