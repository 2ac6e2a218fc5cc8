"""The model reader's sliding window, as each release's selection reads it (vLLM 0.33's
AttentionSelectorConfig has `has_sliding_window`; 0.17's selection does not read the window)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnsolve.cli import main

EX = Path(__file__).resolve().parent.parent / "examples"


def _model(tmp_path: Path, **text: object) -> str:
    cfg = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
           "num_attention_heads": 32, "num_key_value_heads": 8, "torch_dtype": "bfloat16", **text}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return str(p)


def _query(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    code = main(["--json", "select", *argv])
    out = json.loads(capsys.readouterr().out)
    assert code in (0, 1), out
    return out


@pytest.mark.parametrize("extra, windowed", [
    ({"sliding_window": 4096}, True),                                      # every layer (Mistral 7B v0.1)
    ({"sliding_window": 4096, "layer_types": ["sliding_attention", "full_attention"]}, False),  # gpt-oss
    ({"sliding_window": 4096, "sliding_window_pattern": 6}, False),       # Gemma 3: 5 local, 1 global
    ({"sliding_window": 131072, "use_sliding_window": False}, False),     # Qwen2: declared, switched off
    ({}, False),
])
def test_has_sliding_window_follows_the_layers(tmp_path, capsys, extra, windowed):
    path = _model(tmp_path, **extra)
    res = _query(capsys, "--vllm", "0.33", "--gpu", "H100", "--model", path)
    config = res["result"]["config"]
    assert config.get("has_sliding_window", False) is windowed
    notes = " ".join(res["result"]["query"]["notes"])
    if extra.get("use_sliding_window") is False:
        assert "switched off" in notes


def test_release_without_the_input_says_so(tmp_path, capsys):
    res = _query(capsys, "--vllm", "0.17", "--gpu", "H100", "--model", _model(tmp_path, sliding_window=4096))
    assert "has_sliding_window" not in res["result"]["config"]
    notes = " ".join(res["result"]["query"]["notes"])
    assert "does not change backend selection in vLLM 0.17" in notes


def test_mla_layers_do_not_pass_the_window(tmp_path, capsys):
    """vllm/model_executor/layers/attention/mla_attention.py: the MLA layer asks for its backend without
    a sliding window, so a windowed MLA model selects as if unwindowed (it was "no valid backend")."""
    cfg = json.loads((EX / "deepseek-v3.2.json").read_text())
    cfg["sliding_window"] = 4096
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    res = _query(capsys, "--vllm", "0.33", "--gpu", "H100", "--model", str(path), "-tp", "8")
    assert res["result"]["config"].get("has_sliding_window", False) is False
    assert res["result"]["selected"] == "FLASH_ATTN_MLA_SPARSE"
    assert "MLA layers do not pass it" in " ".join(res["result"]["query"]["notes"])
