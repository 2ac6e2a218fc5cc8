"""read_model_config: the shipped examples, derived facts, and bad files (ConfigError -> CLI exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnsolve import ConfigError
from attnsolve.cli import main
from attnsolve.modelconfig import apply_model_rewrites, read_model_config

# Every release: the reader's facts do not depend on the release; the model rewrites it applies do (0.17's
# V3.2 KV rewrite is pinned to 0.17 below).
pytestmark = pytest.mark.every_release

EX = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name, expected", [
    ("llama3-8b.json", {"dtype": "bfloat16", "num_heads": 32, "head_size": 128}),
    ("deepseek-v3.json", {"use_mla": True, "head_size": 576, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                          "v_head_dim": 128, "num_heads": 128}),
    ("deepseek-v3.2.json", {"use_mla": True, "use_sparse": True, "index_topk": 2048, "head_size": 576}),
    ("gpt-oss-20b.json", {"has_sink": True, "head_size": 64, "num_heads": 64}),
    ("gemma3-4b.json", {"use_mm_prefix": True, "head_size": 256, "num_heads": 8}),
])
def test_examples(name, expected):
    m = read_model_config(EX / name)
    for k, v in expected.items():
        assert m.fields[k] == v, k


def test_directory_and_sliding_window(tmp_path):
    (tmp_path / "config.json").write_text((EX / "gpt-oss-20b.json").read_text())
    m = read_model_config(tmp_path)
    assert m.extra["sliding_window"] == 128 and m.extra["sliding_window_layers"] == "some"


@pytest.mark.vllm("0.17")
def test_v32_rewrite():
    m = read_model_config(EX / "deepseek-v3.2.json")
    fields, notes = apply_model_rewrites(m, {"kv_cache_dtype": "fp8_e4m3"})
    assert fields["kv_cache_dtype"] == "fp8_ds_mla" and "fp8_ds_mla" in notes[0]
    assert apply_model_rewrites(m, {"kv_cache_dtype": "auto"}) == ({"kv_cache_dtype": "auto"}, ())
    dense = read_model_config(EX / "deepseek-v3.json")
    assert apply_model_rewrites(dense, {"kv_cache_dtype": "fp8"})[0]["kv_cache_dtype"] == "fp8"


@pytest.mark.parametrize("text, key", [
    ('{"num_attention_heads": "32", "hidden_size": 4096}', "num_attention_heads"),
    ('{"num_attention_heads": 32, "hidden_size": 4001}', "hidden_size"),
    ('{"head_dim": true}', "head_dim"),
    ('{"torch_dtype": "int4"}', "torch_dtype"),
    ('{"kv_lora_rank": 512}', "qk_rope_head_dim"),
    ('{"index_topk": 2048, "head_dim": 128}', "index_topk"),
    ('{"text_config": [1, 2]}', "text_config"),
    ('{"sliding_window": -4}', "sliding_window"),
    ('[1, 2, 3]', None),
    ('{"head_dim": 128,', None),
])
def test_bad_files(tmp_path, capsys, text, key):
    f = tmp_path / "config.json"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_model_config(f)
    assert str(f) in str(info.value)
    if key:
        assert repr(key) in str(info.value)
    code = main(["select", "--gpu", "H100", "--model", str(f)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and str(f) in err.replace("\n    ", " ") and "Traceback" not in err


def test_flags_override_model(capsys):
    code = main(["select", "--gpu", "H100", "--model", str(EX / "llama3-8b.json"), "--head-size", "80",
                 "--dtype", "float16", "--json"])
    env = json.loads(capsys.readouterr().out)
    assert code == 0 and env["result"]["config"]["head_size"] == 80 and env["result"]["config"]["dtype"] == "float16"


def test_nothing_executed(tmp_path):
    """A model directory's Python files are never imported."""
    (tmp_path / "config.json").write_text('{"head_dim": 128, "num_attention_heads": 8, "auto_map": {"AutoConfig": "evil.Cfg"}}')
    (tmp_path / "evil.py").write_text("raise SystemExit('executed')\n")
    assert read_model_config(tmp_path).fields["head_size"] == 128


@pytest.mark.parametrize("gpu", ["H100", "B200"])
@pytest.mark.parametrize("name", sorted(p.name for p in EX.glob("*.json")))
def test_every_example_model_answers(capsys, vllm_version, name, gpu):
    """`attnsolve select --model` on every shipped example answers for the running release (the 0.33 reader
    knows its model-driven architectures too): a backend, exit 0, the JSON naming the release."""
    code = main(["select", "--vllm", vllm_version, "--gpu", gpu, "--model", str(EX / name), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    env = json.loads(out)
    assert env["result"]["selected"] and env["result"]["config"]["vllm"] == vllm_version, env


MIMO_V2_FLASH = {"architectures": ["MiMoV2FlashForCausalLM"], "model_type": "mimo_v2_flash", "head_dim": 192,
                 "v_head_dim": 128, "num_attention_heads": 64, "num_key_value_heads": 4, "torch_dtype": "bfloat16"}
MINIMAX_M3 = {"architectures": ["MiniMaxM3SparseForCausalLM"], "model_type": "minimax_m3", "head_dim": 128,
              "num_attention_heads": 64, "num_key_value_heads": 8, "torch_dtype": "bfloat16",
              "sparse_attention_config": {"sparse_attention_freq": [0, 1], "sparse_topk_blocks": 16,
                                          "sparse_num_index_heads": 8, "sparse_index_dim": 128}}


@pytest.mark.parametrize("gpu, backend", [("H100", "FLASH_ATTN_DIFFKV"), ("A100", "TRITON_ATTN_DIFFKV")])
def test_033_mimo_v2_layers_pass_their_diff_kv_backend(tmp_path, capsys, gpu, backend):
    """vllm/model_executor/models/mimo_v2.py MiMoV2Attention: a layer whose v_head_dim differs from head_dim passes
    FLASH_ATTN_DIFFKV where FlashAttention 3/4 serves it, else TRITON_ATTN_DIFFKV (no selection); `--model` reads
    the architecture (model_route) and v_head_dim (head_size_v) for MiMo-V2 only."""
    f = tmp_path / "config.json"
    f.write_text(json.dumps(MIMO_V2_FLASH))
    code = main(["select", "--vllm", "0.33", "--gpu", gpu, "--model", str(f), "--json"])
    res = json.loads(capsys.readouterr().out)["result"]
    assert code == 0 and res["selected"] == backend
    assert res["config"]["head_size"] == 192 and res["config"]["head_size_v"] == 128


def test_033_v_head_dim_of_an_mla_model_is_not_a_v_head_size():
    """DeepSeek's v_head_dim is an MLA dimension (its layers pass no head_size_v): read only for MiMo-V2."""
    m = read_model_config(EX / "deepseek-v3.json")
    from attnsolve.modelconfig import declared_model_fields
    from attnsolve.rules import rules_for
    fields, _ = declared_model_fields(m, rules_for("0.33"))
    assert "head_size_v" not in fields and "model_route" not in fields


@pytest.mark.parametrize("gpu, variant", [("B200", "MSA"), ("H100", "Triton")])
def test_033_minimax_m3_reads_its_top_k_blocks_from_the_sparse_table(tmp_path, capsys, gpu, variant):
    """vllm/models/minimax_m3/nvidia/model.py reads config.sparse_attention_config["sparse_topk_blocks"];
    common/sparse_attention.py takes the MSA path on SM 10.x for 4/8/16/32 blocks, else Triton."""
    f = tmp_path / "config.json"
    f.write_text(json.dumps(MINIMAX_M3))
    code = main(["select", "--vllm", "0.33", "--gpu", gpu, "--model", str(f), "--json"])
    res = json.loads(capsys.readouterr().out)["result"]
    assert code == 0 and (res["selected"], res["variant"]) == ("MINIMAX_M3_SPARSE", variant), res
    assert res["config"]["minimax_m3_topk_blocks"] == 16
