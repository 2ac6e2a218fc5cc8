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
    """The reader's own facts, plus the fields the running release's rules declare model keys for (sinks and
    the multimodal prefix LM are model_type lists in fields.toml)."""
    from attnsolve.modelconfig import declared_model_fields
    from attnsolve.rules import default_version, rules_for
    m = read_model_config(EX / name)
    fields = {**m.fields, **declared_model_fields(m, rules_for(default_version()))[0]}
    for k, v in expected.items():
        assert fields[k] == v, k


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


GEMMA2 = {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "torch_dtype": "bfloat16",
          "hidden_size": 3584, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
          "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}


def _select(tmp_path, capsys, cfg: dict, *args: str) -> dict:
    f = tmp_path / "config.json"
    f.write_text(json.dumps(cfg))
    code = main(["select", "--vllm", "0.33", "--model", str(f), "--json", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)["result"]


def test_033_gemma2_soft_capping_is_read_and_keeps_fa4s_head_256_kernel_off(tmp_path, capsys):
    """vllm/v1/attention/backends/fa_utils.py _fa4_hd256_fallback_reason: getattr(model_config.hf_text_config,
    "attn_logit_softcapping", None) truthy -> FA2 with its warning (Gemma 2 on B200, FLASH_ATTN requested)."""
    res = _select(tmp_path, capsys, GEMMA2, "--gpu", "B200", "--attention-backend", "FLASH_ATTN")
    assert res["config"]["has_logit_softcap"] is True
    assert (res["selected"], res["variant"]) == ("FLASH_ATTN", "FA2"), res
    assert any("does not support logits soft capping" in w for w in res["warnings"]), res["warnings"]
    res = _select(tmp_path, capsys, dict(GEMMA2, attn_logit_softcapping=None), "--gpu", "B200",
                  "--attention-backend", "FLASH_ATTN")  # Gemma 3 writes null: no soft-capping
    assert res["config"].get("has_logit_softcap") in (None, False) and res["variant"] != "FA2", res


@pytest.mark.parametrize("extra, arch, expected", [
    ({"alibi": True}, "FalconForCausalLM", True),              # Falcon-RW
    ({"alibi": False}, "FalconForCausalLM", False),            # Falcon-7B
    ({"attn_config": {"alibi": True}}, "MPTForCausalLM", True),
    ({"position_encoding_type": "alibi"}, "GPTBigCodeForCausalLM", True),
    ({"position_encoding_type": "rope"}, "GPTBigCodeForCausalLM", None),  # no match says nothing
    ({"alibi": False, "attn_config": {"alibi": True}}, "MPTForCausalLM", True),  # vLLM ORs the keys
    ({}, "BloomForCausalLM", True),
    ({}, "LlamaForCausalLM", None),
])
def test_033_alibi_is_read_as_model_config_uses_alibi_reads_it(tmp_path, extra, arch, expected):
    """vllm/config/model.py ModelConfig.uses_alibi: hf_text_config.alibi, "BloomForCausalLM" in architectures,
    position_encoding_type == "alibi", or attn_config.alibi - any of them."""
    from attnsolve.modelconfig import declared_model_fields
    from attnsolve.rules import rules_for
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"architectures": [arch], "hidden_size": 4096, "num_attention_heads": 32, **extra}))
    fields, notes = declared_model_fields(read_model_config(f), rules_for("0.33"))
    assert fields.get("use_alibi") is expected, (fields, notes)
    if expected is not None:  # the note says where it came from, as the CLI shows it
        assert [n for n in notes if n.startswith(f"use_alibi {str(expected).lower()} (")], notes


def test_033_alibi_from_the_config_runs_flash_attention_2(tmp_path, capsys):
    """ALiBi turns FA3 into FA2 (fa_utils.py get_flash_attn_version(requires_alibi=True)): an MPT model on an
    H100 gets FLASH_ATTN's FA2 variant, as a serving vLLM builds it."""
    mpt = {"architectures": ["MPTForCausalLM"], "model_type": "mpt", "torch_dtype": "bfloat16", "hidden_size": 4096,
           "num_attention_heads": 32, "attn_config": {"alibi": True}}
    res = _select(tmp_path, capsys, mpt, "--gpu", "H100")
    assert res["config"]["use_alibi"] is True, res["config"]
    plain = _select(tmp_path, capsys, dict(mpt, attn_config={"alibi": False}), "--gpu", "H100")
    assert plain["config"].get("use_alibi") in (None, False)
    assert res != plain  # the fact reaches the answer (variant, warnings or start-up)


@pytest.mark.parametrize("key, value, field", [("rswa_window", 4096, "use_rswa"), ("rswa_window", 0, "use_rswa"),
                                                ("canvas_length", 64, "is_diffusion")])
def test_033_keys_vllm_tests_for_presence(tmp_path, key, value, field):
    """transformers_utils/model_arch_config_convertor.py rswa_window(): any rswa_window that is not None is a window
    (0 included); config/model.py is_diffusion: canvas_length is not None."""
    from attnsolve.modelconfig import declared_model_fields
    from attnsolve.rules import rules_for
    f = tmp_path / "config.json"
    base = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_attention_heads": 32}
    f.write_text(json.dumps({**base, key: value}))
    fields, _ = declared_model_fields(read_model_config(f), rules_for("0.33"))
    assert fields[field] is True
    f.write_text(json.dumps({**base, key: None}))
    fields, _ = declared_model_fields(read_model_config(f), rules_for("0.33"))
    assert field not in fields


@pytest.mark.parametrize("model_type, text_type, flag, expected", [
    ("gemma3", "gemma3_text", None, True),       # the top-level model_type, as vLLM's hf_config.model_type
    ("gemma3", None, False, False),              # is_mm_prefix_lm where present decides, before the list
    ("llava", None, True, True),
    ("llava", None, None, None),
])
def test_the_multimodal_prefix_lm_is_is_mm_prefix_lm_then_the_model_type_list(tmp_path, model_type, text_type, flag,
                                                                             expected):
    """vllm/config/model.py (0.17) / transformers_utils/model_arch_config_convertor.py (0.33) is_mm_prefix_lm:
    hf_config.is_mm_prefix_lm if the config has it, else model_type in MM_PREFIX_LM_MODELS (0.16: the list only)."""
    from attnsolve.modelconfig import declared_model_fields
    from attnsolve.rules import default_version, rules_for
    cfg: dict = {"model_type": model_type, "head_dim": 128, "num_attention_heads": 8}
    if text_type:
        cfg["text_config"] = {"model_type": text_type, "head_dim": 256, "num_attention_heads": 8}
    if flag is not None:
        cfg["is_mm_prefix_lm"] = flag
    f = tmp_path / "config.json"
    f.write_text(json.dumps(cfg))
    fields, _ = declared_model_fields(read_model_config(f), rules_for(default_version()))
    if default_version() == "0.16":  # 0.16's config/model.py reads the model_type list alone (no is_mm_prefix_lm)
        expected = True if model_type == "gemma3" else None
    assert fields.get("use_mm_prefix") is expected, fields


@pytest.mark.vllm("0.33")
@pytest.mark.parametrize("model_type", ["bagel", "moondream3"])
def test_033_adds_bagel_and_moondream3_to_the_prefix_lm_list(tmp_path, model_type):
    """vLLM 0.33's MM_PREFIX_LM_MODELS (model_arch_config_convertor.py) has bagel and moondream3; 0.17's had not."""
    from attnsolve.modelconfig import declared_model_fields
    from attnsolve.rules import rules_for
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"model_type": model_type, "head_dim": 128, "num_attention_heads": 8}))
    assert declared_model_fields(read_model_config(f), rules_for("0.33"))[0]["use_mm_prefix"] is True
    assert "use_mm_prefix" not in declared_model_fields(read_model_config(f), rules_for("0.17"))[0]


@pytest.mark.vllm("0.33")
@pytest.mark.parametrize("arch, model_type, extra, expected", [
    ("GraniteForCausalLM", "granite", {}, None),                                    # plain Granite: no sinks
    ("GraniteForCausalLM", "granite", {"layer_types": ["full_attention"]}, True),  # HF SWA checkpoints
    ("GraniteForCausalLM", "granite", {"layer_types": ["full_attention"], "attention_sinks": False}, False),
    ("GraniteMoeForCausalLM", "granitemoe", {"attention_sinks": True}, True),
    ("GraniteSWAForCausalLM", "granite_swa", {}, True),  # transformers' GraniteSWAConfig fills layer_types
    ("LlamaForCausalLM", "llama", {"layer_types": ["full_attention"]}, None),      # read for Granite only
])
def test_033_granite_sinks_are_read_as_granite_layer_attn_params_reads_them(tmp_path, arch, model_type, extra,
                                                                            expected):
    """vllm/model_executor/models/granite.py granite_layer_attn_params: has_sink = getattr(config,
    "attention_sinks", layer_types is not None) for every layer (granitemoe.py and granitemoeshared.py too)."""
    from attnsolve.modelconfig import declared_model_fields
    from attnsolve.rules import rules_for
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"architectures": [arch], "model_type": model_type, "hidden_size": 2048,
                             "num_attention_heads": 32, **extra}))
    fields, notes = declared_model_fields(read_model_config(f), rules_for("0.33"))
    assert fields.get("has_sink") is expected, (fields, notes)


@pytest.mark.parametrize("extra, expected", [
    ({"model_type": "mistral"}, "all"),                                         # a window, no layer pattern
    ({"model_type": "gemma2"}, "some"),                     # Gemma2Config alternates when the file has none
    ({"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", "head_dim": 256,
                                              "num_attention_heads": 8, "sliding_window": 1024}}, "some"),
    ({"model_type": "laguna"}, None),                     # LagunaConfig: every layer full attention
    ({"model_type": "qwen3_next", "layer_types": ["linear_attention", "full_attention"]}, None),
    ({"model_type": "llama", "layer_types": ["sliding_attention", "sliding_attention"]}, "all"),
    ({"model_type": "llama", "layer_types": ["sliding_attention", "full_attention"]}, "some"),
    ({"model_type": "exaone4", "sliding_window_pattern": "LLLG"}, "some"),
    ({"model_type": "exaone4", "sliding_window_pattern": "LLLL"}, "all"),
    ({"model_type": "cohere2", "sliding_window_pattern": 1}, None),           # every layer full
])
def test_which_layers_a_sliding_window_applies_to(tmp_path, extra, expected):
    """vLLM builds each layer from config.layer_types, which transformers' config classes fill when config.json
    lists none (Gemma2Config alternates, LagunaConfig makes every layer full, ...): a window on no layer is
    unused, not has_sliding_window for the whole model."""
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"head_dim": 128, "num_attention_heads": 8, "sliding_window": 4096, **extra}))
    m = read_model_config(f)
    assert m.extra.get("sliding_window_layers") == expected, (m.extra, m.notes)
    assert (expected is None) == any("unused" in n for n in m.notes), m.notes


@pytest.mark.vllm("0.33")
def test_033_kv_heads_per_gpu_as_vllms_get_num_kv_heads(tmp_path, capsys):
    """vllm/config/model.py get_num_kv_heads: 1 for MLA, else max(1, total // tp) with the total from
    transformers_utils/config.py CONFIG_FIELD_ALIASES["total_num_kv_heads"] (the query heads where the config has
    none): FlashInfer's page size above 64 needs the trtllm-gen GQA decode, which an MHA model does not get."""
    def cfg(*args: str) -> dict:
        code = main(["select", "--vllm", "0.33", "--json", *args])
        out = json.loads(capsys.readouterr().out)
        return code, out["result"]
    llama3 = str(EX / "llama3-8b.json")
    assert cfg("--gpu", "B200", "--model", llama3, "-tp", "4")[1]["config"]["num_kv_heads"] == 2
    assert cfg("--gpu", "B200", "--model", llama3, "-tp", "16")[1]["config"]["num_kv_heads"] == 1  # replicated
    assert cfg("--gpu", "B200", "--model", str(EX / "deepseek-v3.json"), "-tp", "8")[1]["config"]["num_kv_heads"] == 1
    assert cfg("--gpu", "B200", "--num-heads", "32", "--num-kv-heads", "8", "-tp", "2")[1]["config"]["num_kv_heads"] == 4
    mha = tmp_path / "config.json"
    mha.write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float16",
                               "hidden_size": 4096, "num_attention_heads": 32}))
    code, res = cfg("--gpu", "B200", "--model", str(mha), "--block-size", "128")
    assert res["config"]["num_kv_heads"] == 32 and code == 1
    assert res["startup_error"] == "Unexpected FlashInfer page size 128 without trtllm-gen GQA", res
    code, res = cfg("--gpu", "B200", "--model", llama3, "--block-size", "128")
    assert code == 0 and res["startup_error"] is None


@pytest.mark.vllm("0.33")
@pytest.mark.parametrize("version, model_type, expected", [
    ("0.20", "umm", True), ("0.20", "moondream3", None), ("0.21", "moondream3", True), ("0.28", "umm", True),
    ("0.29", "umm", None), ("0.33", "umm", None),
])
def test_the_prefix_lm_list_is_each_releases_own(tmp_path, version, model_type, expected):
    """transformers_utils/model_arch_config_convertor.py MM_PREFIX_LM_MODELS per release: "umm" from 0.20 to 0.28
    (0.29 removed it), "moondream3" from 0.21 (found reading 0.20's source: the rules had 0.33's list everywhere)."""
    from attnsolve.modelconfig import declared_model_fields
    from attnsolve.rules import rules_for
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"model_type": model_type, "head_dim": 128, "num_attention_heads": 8}))
    got = declared_model_fields(read_model_config(f), rules_for(version))[0].get("use_mm_prefix")
    assert got is (expected if expected else False) or (expected is None and got in (None, False)), got


@pytest.mark.vllm("0.33")
@pytest.mark.parametrize("version", ["0.20", "0.28", "0.33", "0.34"])
@pytest.mark.parametrize("where, value, expected", [
    ("text_config", "vision", True), ("text_config", "all", False), ("top", "vision", True), (None, None, False),
])
def test_gemma4_decides_by_its_bidirectional_vision_attention(tmp_path, version, where, value, expected):
    """Gemma4ModelArchConfigConvertor.is_mm_prefix_lm (0.20 to 0.34): hf_text_config.use_bidirectional_attention ==
    "vision" (a gemma4 config's text_config, a gemma4_text config's own key); gemma4 is not in the model_type list."""
    from attnsolve.modelconfig import declared_model_fields
    from attnsolve.rules import rules_for
    text = {"model_type": "gemma4_text", "head_dim": 256, "num_attention_heads": 8}
    cfg: dict = {"model_type": "gemma4" if where != "top" else "gemma4_text", "head_dim": 256, "num_attention_heads": 8}
    if where == "text_config":
        cfg["text_config"] = dict(text, use_bidirectional_attention=value)
    elif where == "top":
        cfg["use_bidirectional_attention"] = value
    f = tmp_path / "config.json"
    f.write_text(json.dumps(cfg))
    assert bool(declared_model_fields(read_model_config(f), rules_for(version))[0].get("use_mm_prefix")) is expected
