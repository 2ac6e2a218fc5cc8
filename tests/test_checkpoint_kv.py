"""A checkpoint's own KV-cache dtype (`--model` with a quantization_config), per release.

The reference below restates vLLM's two code paths as read from each release's wheel (utils/torch_utils.py
get_kv_cache_quant_algo_string with MODELOPT_TO_VLLM_KV_CACHE_DTYPE_MAP, and model_executor/layers/attention/
attention.py Attention.__init__'s kv_cache_scheme block), with the release differences written as version
bounds: the map gained nvfp4 (and the 4-bit float scheme) in 0.20; the compressed-tensors scheme overrides an
explicit --kv-cache-dtype up to 0.21 and only an automatic one from 0.22; the per-head strategy sets
use_per_head_quant_scales from 0.17 (0.16 has no such input). The rules hold the same facts as data; hypothesis
draws quantization configs and compares the two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from attnsolve import ConfigError, explain
from attnsolve.checkpoint_kv import CheckpointQuant, apply_checkpoint, normalized
from attnsolve.cli import main
from attnsolve.modelconfig import apply_model_rewrites, read_model_config
from attnsolve.rules import rules_for, versions
from attnsolve.rules.field_decls import _field_decls
from attnsolve.rules.problems import _Collector

EX = Path(__file__).resolve().parents[1] / "examples"
RELEASES = versions()


def _key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def _reference(release: str, qc: dict[str, Any] | None, typed: str | None, use_mla: bool) -> tuple[str | None, bool]:
    """(the KV dtype the layer selects with, use_per_head_quant_scales) as vLLM `release` computes them."""
    newer_map = _key(release) >= (0, 20)
    algos = {"fp8": "fp8_e4m3", **({"nvfp4": "nvfp4"} if newer_map else {})}
    kv = typed or "auto"
    method = ""
    if qc is not None:
        method = str(qc.get("quant_method", "")).lower().replace("compressed_tensors", "compressed-tensors")
    if kv == "auto" and method.startswith("modelopt"):  # engine/arg_utils.py resolve_kv_cache_dtype_string
        inner = qc.get("quantization", qc)
        algo = (inner.get("kv_cache_scheme") or qc.get("kv_cache_scheme") or inner.get("kv_cache_quant_algo")
                or qc.get("kv_cache_quant_algo"))
        if isinstance(algo, dict):
            if algo.get("dynamic") is False and algo.get("num_bits") == 8 and algo.get("type") == "float":
                algo = "fp8"
            elif newer_map and algo.get("num_bits") == 4 and algo.get("type") == "float":
                algo = "nvfp4"
            else:
                algo = None
                kv = "auto"
        if isinstance(algo, str):
            kv = algos.get(algo.lower(), "auto")
    scheme = qc.get("kv_cache_scheme") if qc is not None and method == "compressed-tensors" else None
    per_head = False
    if scheme is not None and not use_mla:  # Attention.__init__ (MLAAttention does not read it)
        if _key(release) <= (0, 21) or kv == "auto":
            kv = "fp8"
        per_head = _key(release) >= (0, 17) and isinstance(scheme, dict) and scheme.get("strategy") == "attn_head"
    return (None if kv == "auto" else kv), per_head


_ALGOS = st.sampled_from(["FP8", "fp8", "NVFP4", "nvfp4", "INT8", "fp8_e5m2", ""])
_SCHEMES = st.fixed_dictionaries({"num_bits": st.sampled_from([4, 8, 16]), "type": st.sampled_from(["float", "int"])},
                                 optional={"dynamic": st.booleans(),
                                           "strategy": st.sampled_from(["tensor", "attn_head", "channel"])})
_QC = st.one_of(
    st.none(),
    st.fixed_dictionaries({"quant_method": st.sampled_from(["modelopt", "modelopt_fp4", "ModelOpt", "fp8", "awq"])},
                          optional={"kv_cache_quant_algo": st.one_of(_ALGOS, st.none()),
                                    "kv_cache_scheme": st.one_of(_SCHEMES, st.none()),
                                    "quantization": st.fixed_dictionaries({}, optional={
                                        "kv_cache_quant_algo": _ALGOS, "kv_cache_scheme": _SCHEMES})}),
    st.fixed_dictionaries({"quant_method": st.sampled_from(["compressed-tensors", "compressed_tensors"])},
                          optional={"kv_cache_scheme": st.one_of(_SCHEMES, st.none())}),
)


@settings(deadline=None)
@given(release=st.sampled_from(RELEASES), qc=_QC, typed=st.sampled_from([None, "auto", "bfloat16", "fp8", "fp8_e5m2"]),
       use_mla=st.booleans())
def test_rules_read_the_checkpoint_as_each_release_does(release, qc, typed, use_mla):
    rules = rules_for(release)
    ck = rules.fields["kv_cache_dtype"].checkpoint
    fields: dict[str, Any] = {"use_mla": use_mla}
    if typed is not None:
        fields["kv_cache_dtype"] = typed
    quant = None if qc is None else CheckpointQuant(engine=qc, layer=qc)
    got, notes = apply_checkpoint(quant, ck, fields, rules.fields)
    want_kv, want_per_head = _reference(release, qc, typed, use_mla)
    assert (got.get("kv_cache_dtype") or "auto") == (want_kv or typed or "auto")
    assert got.get("use_per_head_quant_scales", False) == want_per_head
    changed = {k for k in got if got[k] != fields.get(k)}
    assert len(notes) >= (1 if changed else 0)  # every change is said


def _write(tmp_path: Path, quantization: dict[str, Any] | None = None, sidecar: dict[str, Any] | None = None,
           **keys: Any) -> Path:
    cfg = json.loads((EX / "llama3-8b.json").read_text())
    cfg.update(keys)
    if quantization is not None:
        cfg["quantization_config"] = quantization
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    if sidecar is not None:
        (tmp_path / "hf_quant_config.json").write_text(json.dumps(sidecar))
    return tmp_path


def _select(*argv: str, capsys: Any) -> dict[str, Any]:
    assert main(["select", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)["result"]


def test_compressed_tensors_example_selects_with_an_fp8_cache(capsys):
    """The shipped llm-compressor example: vLLM's attention layer runs it with an fp8 cache, so on an A100 FlashAttention
    (FA2: no fp8 KV) loses to FlashInfer; --kv-cache-dtype bfloat16 wins from 0.22 on and not before."""
    model = str(EX / "llama3-8b-fp8-kv.json")
    out = _select("--gpu", "A100", "--model", model, capsys=capsys)
    assert out["config"]["kv_cache_dtype"] == "fp8" and out["selected"] == "FLASHINFER"
    out = _select("--gpu", "A100", "--model", model, "--kv-cache-dtype", "bfloat16", capsys=capsys)
    assert out["selected"] == "FLASH_ATTN"
    out = _select("--gpu", "A100", "--model", model, "--kv-cache-dtype", "bfloat16", "--vllm", "0.21", capsys=capsys)
    assert out["config"]["kv_cache_dtype"] == "fp8" and out["selected"] == "FLASHINFER"


def test_the_fix_search_offers_only_what_a_flag_changes():
    """0.34: --kv-cache-dtype float16 / bfloat16 give up the checkpoint's fp8 cache (offered); 0.21 applies the scheme
    whatever the flag says, so no KV fix is offered there."""
    model = str(EX / "llama3-8b-fp8-kv.json")
    import io
    from contextlib import redirect_stdout
    for release, offered in (("0.34", True), ("0.21", False)):
        buf = io.StringIO()
        with redirect_stdout(buf):
            main(["explain", "--gpu", "A100", "--model", model, "--vllm", release])
        assert ("--kv-cache-dtype" in buf.getvalue().split("Higher-priority")[1]) is offered, release


def test_modelopt_sidecar_and_producer_block(tmp_path):
    """A ModelOpt export whose config.json has no quantization_config: vLLM reads hf_quant_config.json beside it and
    names the method from the producer block; fp8 resolves to fp8_e4m3, nvfp4 to nvfp4 from 0.20 on."""
    root = _write(tmp_path, sidecar={"producer": {"name": "modelopt", "version": "0.23.0"},
                                     "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8"}})
    model = read_model_config(root)
    assert model.quant is not None and model.quant.method == "modelopt_fp4"
    for release, kv in (("0.34", "fp8_e4m3"), ("0.17", "fp8_e4m3")):
        fields, notes = apply_model_rewrites(model, {}, rules_for(release))
        assert fields["kv_cache_dtype"] == kv and "hf_quant_config.json" in notes[0]
    root = _write(tmp_path, sidecar={"producer": {"name": "modelopt"},
                                     "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": "NVFP4"}})
    model = read_model_config(root)
    assert apply_model_rewrites(model, {}, rules_for("0.20"))[0]["kv_cache_dtype"] == "nvfp4"
    fields, notes = apply_model_rewrites(model, {}, rules_for("0.19"))
    assert "kv_cache_dtype" not in fields
    assert notes == ("vLLM warns: WARNING: Unknown kv_cache_quant_algo 'NVFP4' in model config. Supported values: "
                     "['fp8']. Falling back to 'auto'.",)
    # an explicit value is the user's: the engine arguments resolve only `auto`
    assert apply_model_rewrites(model, {"kv_cache_dtype": "bfloat16"}, rules_for("0.34"))[0] == {"kv_cache_dtype": "bfloat16"}


def test_an_unknown_modelopt_algorithm_is_vllms_refusal():
    qc, method, refusal = normalized({"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "W4A8_AWQ"}})
    assert refusal == "Unknown ModelOpt quant algo: W4A8_AWQ" and not method.startswith("modelopt")


def test_mla_layers_do_not_read_the_scheme_and_per_head_needs_the_input(tmp_path):
    scheme = {"num_bits": 8, "type": "float", "strategy": "attn_head", "dynamic": False}
    root = _write(tmp_path, {"quant_method": "compressed-tensors", "kv_cache_scheme": scheme})
    model = read_model_config(root)
    fields, notes = apply_model_rewrites(model, {"use_mla": True}, rules_for("0.34"))
    assert fields == {"use_mla": True} and "MLA layers" in notes[0]
    fields, _ = apply_model_rewrites(model, {}, rules_for("0.34"))
    assert fields == {"kv_cache_dtype": "fp8", "use_per_head_quant_scales": True}
    fields, _ = apply_model_rewrites(model, {}, rules_for("0.16"))  # vLLM 0.16 has no per-head input
    assert fields == {"kv_cache_dtype": "fp8"}
    # a flag the user gave stays theirs
    fields, _ = apply_model_rewrites(model, {"use_per_head_quant_scales": False}, rules_for("0.34"))
    assert fields["use_per_head_quant_scales"] is False


def test_text_config_and_compression_config_reach_the_layer_only(tmp_path):
    """vLLM resolves the engine's KV dtype from the top-level quantization_config only; the model's quantization config
    (what the attention layer reads) also comes from `compression_config` or text_config's."""
    scheme = {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False}
    root = _write(tmp_path, compression_config={"quant_method": "compressed-tensors", "kv_cache_scheme": scheme})
    model = read_model_config(root)
    assert model.quant.engine is None
    assert apply_model_rewrites(model, {}, rules_for("0.34"))[0] == {"kv_cache_dtype": "fp8"}
    root = _write(tmp_path, text_config={"quantization_config": {"quant_method": "modelopt",
                                                                  "kv_cache_quant_algo": "FP8"}})
    model = read_model_config(root)
    assert apply_model_rewrites(model, {}, rules_for("0.34"))[0] == {}


def test_a_malformed_quantization_config_names_the_key(tmp_path, capsys):
    root = _write(tmp_path, quantization=["fp8"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as e:
        read_model_config(root)
    assert "quantization_config" in str(e.value)
    assert main(["select", "--gpu", "H100", "--model", str(root)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_the_api_answer_for_the_resolved_config():
    """What the CLI resolves is an ordinary Config: the API gives the same answer for it."""
    from attnsolve import Config, solve
    cfg = Config(gpu="A100", dtype="bfloat16", head_size=128, num_heads=32, kv_cache_dtype="fp8")
    assert solve(cfg).backend == "FLASHINFER" and explain(cfg).selected == "FLASHINFER"


@pytest.mark.parametrize("decl, problem", [
    ({"kind": "enum", "checkpoint": {"scheme_dtype": "fp8"}}, "only kv_cache_dtype"),
    ({"kind": "enum", "checkpoint": {"modelopt_algos": {"fp8": "fp9"}}}, "not one of kv_cache_dtype's values"),
    ({"kind": "enum", "checkpoint": {"modelopt_algos": {"fp8": "fp8"},
                                     "modelopt_schemes": [{"num_bits": 8, "type": "float", "algo": "int8"}]}},
     "an algo that modelopt_algos maps"),
    ({"kind": "enum", "checkpoint": {"per_head_strategy": "attn_head", "per_head_field": "no_such_field"}},
     "not a field of this rule set"),
    ({"kind": "enum", "checkpoint": {"per_head_strategy": "attn_head"}}, "go together"),
])
def test_a_bad_checkpoint_declaration_is_a_rules_error(decl, problem):
    name = "kv_cache_dtype" if "only" not in problem else "dtype"
    col = _Collector()
    out = _field_decls({name: ("fields.toml", decl)}, {name: ("auto", "fp8", "fp8_e4m3", "bfloat16")}, col,
                       {"kv_cache_dtype", "dtype"})
    assert name not in out
    assert any(problem in str(p) for p in col.problems), col.problems


def test_per_head_scales_are_a_017_input():
    """vLLM 0.17 added use_per_head_quant_scales to get_attn_backend and validate_configuration ("per-head quant scales
    not supported"; FlashAttention supports it from FA3): the 0.17 rules declare it (session 43), 0.16's do not."""
    from attnsolve import Config, NoValidBackendError, solve
    assert solve(Config(vllm="0.17", gpu="H100", dtype="bfloat16", use_per_head_quant_scales=True)).variant == "FA3"
    with pytest.raises(NoValidBackendError) as e:
        solve(Config(vllm="0.17", gpu="A100", dtype="bfloat16", use_per_head_quant_scales=True))
    assert "per-head quant scales not supported" in str(e.value) and "use_per_head_quant_scales=True" in str(e.value)
    with pytest.raises(ConfigError):
        Config(vllm="0.16", gpu="A100", dtype="bfloat16", use_per_head_quant_scales=True)
