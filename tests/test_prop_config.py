"""Laws of Config: arbitrary input only ever raises ConfigError; every Config round-trips through JSON.

- ``Config(**anything)`` returns a Config or raises ConfigError (never TypeError, KeyError, ...), and the
  error names a field and says what is accepted;
- ``Config(**c.to_dict()) == c`` (full and partial configs), and ``to_dict()`` is JSON-ready;
- ``replace()`` with the same values is the identity, and equal configs hash equally;
- a ConfigError from ``solve``/``explain`` on a bad role is the only failure besides selection errors.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnsolve import ANY, Config, ConfigError, InvalidBackendError, NoValidBackendError, solve
from attnsolve.config import FIELD_NAMES
from strategies import config_inputs, configs, junk, partial_configs

pytestmark = pytest.mark.every_release


@given(config_inputs())
def test_config_on_arbitrary_input_raises_only_config_error(kw):
    try:
        c = Config(**kw)
    except ConfigError as e:
        assert isinstance(e.field, str) and e.field
        assert e.accepted is not None
        assert str(e)  # the message renders
        return
    assert isinstance(c, Config)
    assert Config(**c.to_dict()) == c


@given(st.lists(junk(), max_size=2))
def test_config_positional_arguments_raise_config_error(args):
    try:
        Config(*args)
    except ConfigError:
        return
    assert not args


@given(configs())
def test_json_round_trip_full(c):
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert Config(**d) == c
    assert Config(**json.loads(json.dumps(d))) == c
    assert hash(Config(**d)) == hash(c)
    assert c.replace() == c
    assert Config(**c.to_dict(only_changed=True)) == c


@given(partial_configs(max_free=4))
def test_json_round_trip_partial(c):
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == d
    back = Config(**d)
    assert back == c
    assert back.free_fields == c.free_fields
    assert all(getattr(back, f) is ANY for f in c.free_fields)


@given(configs(), st.sampled_from(FIELD_NAMES), st.data())
def test_replace_one_field_raises_only_config_error(c, name, data):
    value = data.draw(junk(), label="value")
    try:
        c2 = c.replace(**{name: value})
    except ConfigError:
        return
    assert Config(**c2.to_dict()) == c2


def _hashable(v: object) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


@given(configs(), st.one_of(st.none(), st.text(max_size=12), junk().filter(_hashable)))
def test_solve_with_arbitrary_role_raises_only_known_errors(c, role):
    try:
        solve(c, role=role)
    except (ConfigError, NoValidBackendError, InvalidBackendError):
        pass


def test_regression_unhashable_role_raises_config_error():
    c = Config(platform="cuda", compute_capability="9.0", dtype="bfloat16")
    with pytest.raises(ConfigError):
        solve(c, role=["decode"])


@pytest.mark.parametrize("field", ["platform", "dtype", "kv_cache_dtype", "attn_type", "rocm_arch"])
def test_regression_uncomparable_values_raise_config_error(field):
    from strategies import _NoEq
    kw = {"platform": "rocm", "dtype": "bfloat16", field: _NoEq()}
    with pytest.raises(ConfigError):
        Config(**kw)
