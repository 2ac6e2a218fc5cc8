"""Fuzzing the public API with hostile arguments: only the documented errors, never a hang.

Inputs: every Config field (and from_env's environment) given hostile values (digit strings int()
refuses such as '²', numbers of more than 4,300 digits, nested containers, objects with broken
__eq__/__repr__), and every entry point (solve, explain, possible_backends, selection_table, sweep,
coverage_report) called with arguments of any type in any position. The answer is a result, a
ConfigError or (solve only) a SelectionError; the error's str() is short and builds; nothing takes
more than a few seconds.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnsolve import (ANY, Config, ConfigError, SelectionError, coverage_report, explain, possible_backends,
                       selection_table, solve, sweep)
from attnsolve.config import FIELD_NAMES
from attnsolve.rules import default_rules
from strategies import budget, config_inputs, configs, junk, partial_configs

pytestmark = pytest.mark.every_release

TIME_LIMIT_S = 20


@contextlib.contextmanager
def time_limit(seconds: int = TIME_LIMIT_S) -> Iterator[None]:
    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"an API call took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# Numbers and digit strings that trip int(), str() or a naive isdigit() check.
# Built lazily (a 5,000-digit int in a strategy's repr would break hypothesis's own reporting).
huge_ints = st.integers(4400, 5200).map(lambda n: 10 ** n) | st.integers(4400, 5200).map(lambda n: -(10 ** n))
digit_strings = st.one_of(
    st.sampled_from(["²", "³", "①", "٣", "٣²", "𝟗", "1²", "١٢٨", "12\u200b8", "0x80", "1e3", "128.0", "-0", "+128",
                     "1_2_8", "_128", "128_", " 128 ", "\t64\n", "1" + "0" * 40]),
    st.integers(4400, 5200).map(lambda n: "9" * n), st.integers(4400, 5200).map(lambda n: "-" + "9" * n),
    st.text(alphabet=st.characters(categories=("Nd", "No", "Nl")), min_size=1, max_size=6),
)
hostile_numbers = st.one_of(
    digit_strings, huge_ints,
    st.sampled_from([2 ** 64, -(2 ** 63), 2 ** 20 + 1, 0, -1, float("inf"), 1e300, -0.0]),
    st.integers(-(2 ** 80), 2 ** 80),
)
hostile = st.one_of(junk(), hostile_numbers)
anything = st.one_of(hostile, configs(), partial_configs(), st.just(None), st.just(ANY))

API_SETTINGS = settings(max_examples=budget(60), suppress_health_check=[HealthCheck.too_slow], deadline=None)


def _check_error(e: Exception) -> None:
    text = str(e)  # builds (no 4,300-digit repr) and stays readable
    assert len(text) < 20_000
    if isinstance(e, ConfigError):
        assert isinstance(e.field, str) and e.field


@API_SETTINGS
@given(st.data())
def test_hostile_field_values_give_config_error(data):
    kw = data.draw(config_inputs())
    for name in data.draw(st.lists(st.sampled_from([*FIELD_NAMES, "gpu"]), min_size=1, max_size=3, unique=True)):
        kw[name] = data.draw(hostile, label=name)
    try:
        with time_limit():
            cfg = Config(**kw)
    except ConfigError as e:
        _check_error(e)
        return
    assert Config(**cfg.to_dict()) == cfg  # what was accepted round-trips


@API_SETTINGS
@given(st.dictionaries(st.sampled_from(sorted({d.env for d in default_rules().fields.values() if d.env})), st.one_of(digit_strings, st.text(max_size=8)),
                       max_size=4))
def test_from_env_hostile_values_give_config_error(env):
    try:
        with time_limit():
            Config.from_env(env, gpu="H100", dtype="bfloat16")
    except ConfigError as e:
        _check_error(e)


ENTRY_POINTS = {
    "solve": lambda a, kw: solve(a, **kw),
    "explain": lambda a, kw: explain(a, **kw),
    "possible_backends": lambda a, kw: possible_backends(a, **kw),
    "selection_table": lambda a, kw: selection_table(a, **kw),
    "sweep": lambda a, kw: sweep(a, **kw),
    "coverage_report": lambda a, kw: coverage_report(a, **kw),
}
KEYWORDS = {
    "solve": ("role", "available"), "explain": ("role", "available", "max_conflicts"),
    "possible_backends": ("role", "available"), "selection_table": ("over", "role", "available"),
    "sweep": ("role", "available"), "coverage_report": ("max_patterns",),
}
keyword_values = st.one_of(hostile, st.sampled_from([None, "decode", "mla_prefill", ["FLASH_ATTN"], {"TRITON_ATTN"},
                                                     ("FLEX_ATTENTION",), ["kv_cache_dtype"], 1, 2, 4, 64]))


@API_SETTINGS
@given(st.sampled_from(sorted(set(ENTRY_POINTS) - {"coverage_report"})), st.data())
def test_entry_points_with_any_arguments_give_only_documented_errors(name, data):
    _call_with_any_arguments(name, data)


# coverage_report() on partial configs. On 0.33 it answers now (dead rules without the whole-space sweep), but a
# drawn config with the hardware free sweeps all 19 GPU groups (~30 s each on a loaded 2-core box), past this
# test's 60 s limit: its fuzzing runs for 0.17 (open: docs/testing.md, "Not yet every release").
@pytest.mark.vllm("0.17")
@settings(API_SETTINGS, max_examples=budget(10))  # its share of the entry points' budget before the split
@given(st.data())
def test_coverage_report_with_any_arguments_gives_only_documented_errors(data):
    _call_with_any_arguments("coverage_report", data)


def _call_with_any_arguments(name, data):
    if name == "coverage_report":  # (None, the whole space: tests/test_coverage.py's report)
        first = data.draw(st.one_of(hostile, partial_configs(max_free=1)), label="config")
    else:
        first = data.draw(anything, label="config")
    kw = {k: data.draw(keyword_values, label=k) for k in KEYWORDS[name]
          if data.draw(st.booleans(), label=f"give {k}")}
    try:
        with time_limit(60 if name in ("coverage_report", "selection_table") else TIME_LIMIT_S):
            ENTRY_POINTS[name](first, kw)
    except (ConfigError, SelectionError) as e:
        if isinstance(e, SelectionError):
            assert name == "solve", f"{name} raised {type(e).__name__}"
        _check_error(e)
