"""Environment switches read with vLLM's own idiom per variable (`env_reads`), and the loader's checks of it.

The references below are vLLM's envs.py lambdas written out (0.17.0 to 0.34.0 read these variables the same
way): a variable's text must give attnsolve exactly the value vLLM gets, or the error vLLM stops with.
"""

from __future__ import annotations

import shutil

import pytest
from hypothesis import given, strategies as st

from attnsolve import Config, ConfigError
from attnsolve.config.env_reading import read_variable
from attnsolve.rules import RulesError, load_rules
from attnsolve.rules.model import ENV_READINGS
from attnsolve.rules.sets import info

TEXTS = st.one_of(st.sampled_from(["1", "0", "true", "True", "TRUE", "false", "yes", "on", " 1", "1 ", "2", "-1",
                                   "1_0", "+1", "²", "\u0661", "0x1", "", "1.0"]),
                  st.text(max_size=6))


def _vllm_true_or_1(text: str) -> bool:
    return text.lower() in ("true", "1")


def _vllm_int(text: str) -> bool:
    return bool(int(text))


@given(TEXTS)
def test_true_or_1_is_vllms_lower_in_true_1(text):
    read = read_variable("VLLM_ROCM_USE_AITER", text, "rocm_use_aiter", "true_or_1")
    assert read.value is _vllm_true_or_1(text)
    assert bool(read.note) == (text.lower() not in ("true", "1", "false", "0"))  # said where it surprises


@given(TEXTS)
def test_int_is_vllms_bool_of_int_or_its_valueerror(text):
    try:
        expected = _vllm_int(text)
    except ValueError as e:
        with pytest.raises(ConfigError) as err:
            read_variable("VLLM_BATCH_INVARIANT", text, "use_batch_invariant", "int")
        assert str(err.value).startswith(f"ValueError: {e}")  # vLLM's words first
        assert err.value.field == "use_batch_invariant" and "VLLM_BATCH_INVARIANT" in str(err.value)
        return
    assert read_variable("VLLM_BATCH_INVARIANT", text, "use_batch_invariant", "int").value is expected


@given(TEXTS)
def test_int_sets_true_never_turns_a_field_off(text):
    try:
        expected = _vllm_int(text)
    except ValueError:
        return
    read = read_variable("VLLM_HAS_FLASHINFER_CUBIN", text, "trtllm_available", "int_sets_true")
    assert read.value is (True if expected else None) and (read.note != "") is (not expected)


def test_cubin_zero_leaves_the_flag_or_default_in_charge():
    """VLLM_HAS_FLASHINFER_CUBIN=0 does not make the cubins unavailable (vLLM still finds the package or the
    server): the field keeps its default."""
    assert Config.from_env({"VLLM_HAS_FLASHINFER_CUBIN": "0"}, gpu="B200", dtype="bfloat16", vllm="0.33").trtllm_available is True
    assert Config.from_env({"VLLM_HAS_FLASHINFER_CUBIN": "1"}, gpu="B200", dtype="bfloat16", vllm="0.33",
                           trtllm_available=False).trtllm_available is False  # a keyword wins, as a flag does


def test_every_declared_variable_says_how_it_is_read():
    from attnsolve import vllm_versions
    from attnsolve.rules import rules_for
    for version in vllm_versions():
        for name, decl in rules_for(version).fields.items():
            if decl.env:
                assert decl.env_reads in ENV_READINGS, (version, name)


@pytest.mark.parametrize("edit, problem", [
    ('env_reads = "true_or_1"\n', "fields.rocm_use_aiter.env_reads"),         # env without its reading
    ('env_reads = "truthy"\n', "'truthy'"),                                   # not a reading
], ids=["missing", "unknown"])
def test_the_loader_refuses_an_env_without_a_known_reading(tmp_path, edit, problem):
    folder = tmp_path / "vllm-0.33"
    shutil.copytree(info("0.33").path, folder)
    rocm = folder / "rocm.toml"
    text = rocm.read_text()
    first = text.index('env = "VLLM_ROCM_USE_AITER"\n') + len('env = "VLLM_ROCM_USE_AITER"\n')
    assert text[first:].startswith('env_reads = "true_or_1"\n')
    replacement = "" if edit == 'env_reads = "true_or_1"\n' else edit
    rocm.write_text(text[:first] + replacement + text[first + len('env_reads = "true_or_1"\n'):])
    with pytest.raises(RulesError) as err:
        load_rules(folder)
    assert problem in str(err.value) and "true_or_1, int, int_sets_true" in str(err.value)
