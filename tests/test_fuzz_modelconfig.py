"""Fuzzing the model-config (Hugging Face config.json) reader: bad input is always a ConfigError naming the file.

Inputs: the example configs with text damage (truncation, inserted bytes), with any key's value replaced by
a value of another type (huge numbers, NaN, strings, nests), random JSON objects over the keys the reader
knows, non-UTF-8 bytes and deep nesting. The reader returns ModelFacts whose fields build a Config, or raises
ConfigError whose message names the file; never another exception.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from strategies import budget

pytestmark = pytest.mark.every_release
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnsolve import Config, ConfigError

modelconfig = pytest.importorskip("attnsolve.modelconfig")
read_model_config = modelconfig.read_model_config

EXAMPLES = {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(__file__).parent.parent.glob("examples/*.json"))}
KEYS = ("torch_dtype", "dtype", "num_attention_heads", "num_key_value_heads", "hidden_size", "head_dim",
        "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "index_topk", "model_type",
        "sliding_window", "text_config", "architectures")

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(2**80), 2**80), st.floats(allow_nan=True),
              st.text(max_size=10), st.sampled_from(["bfloat16", "torch.float16", "fp8", "gpt_oss", "gemma3", "deepseek_v32"]),
              st.sampled_from([0, 1, 64, 128, 512, 576, 7168, 10**30])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)),
    max_leaves=8)


def read_text(text: str | bytes) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            facts = read_model_config(path)
        except ConfigError as e:
            assert "config.json" in str(e), f"the error does not name the file: {e}"
            return e
        # whatever the reader accepts must be Config material (Config itself may still refuse a value)
        try:
            Config(**{"platform": "cpu", "dtype": "bfloat16", **dict(facts.fields)})
        except ConfigError:
            pass
        json.dumps(facts.to_dict(), default=str)
        return facts


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_read(name):
    facts = read_text(EXAMPLES[name])
    assert not isinstance(facts, ConfigError), facts


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(EXAMPLES)) if EXAMPLES else st.just(None), st.data())
def test_text_damage_gives_config_error(name, data):
    if name is None:
        return
    text = EXAMPLES[name]
    i = data.draw(st.integers(0, len(text)), label="at")
    op = data.draw(st.sampled_from(["truncate", "insert", "delete"]), label="op")
    if op == "truncate":
        text = text[:i]
    elif op == "insert":
        text = text[:i] + data.draw(st.one_of(st.text(max_size=8), st.sampled_from(["{", "[", "\"", ",", "NaN", "1e999", "\x00"])),
                                    label="junk") + text[i:]
    else:
        text = text[:i] + text[i + data.draw(st.integers(1, 40), label="n"):]
    read_text(text)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(EXAMPLES)) if EXAMPLES else st.just(None), st.sampled_from(KEYS), json_values)
def test_wrong_types_give_config_error(name, key, value):
    base = json.loads(EXAMPLES[name]) if name else {}
    base[key] = value
    read_text(json.dumps(base))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8))
def test_random_objects_give_config_error(obj):
    read_text(json.dumps(obj))


@settings(max_examples=budget(30))
@given(json_values)
def test_any_json_document_gives_config_error(doc):
    read_text(json.dumps(doc))


@settings(max_examples=budget(30))
@given(st.binary(max_size=60))
def test_binary_gives_config_error(blob):
    read_text(blob)


def test_deep_nesting_gives_config_error():
    read_text('{"text_config": ' + "[" * 100000 + "]" * 100000 + "}")


def test_missing_file_gives_config_error():
    with pytest.raises(ConfigError):
        read_model_config("/nonexistent/dir/config.json")
