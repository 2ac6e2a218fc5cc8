"""Advice a vLLM user can act on (issue #16): ROCm switches, fp8-keeping fixes, vLLM's own model
resolution (dtype, encoder-only), GPU names as tools print them, pasteable fix text, and the
ranking settings < version < hardware < model."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from attnsolve import Config, vllm_versions
from attnsolve.advice import KINDS, Context, advise
from attnsolve.cli import main

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"


# vLLM 0.17's facts (advice texts and fixes on 0.17's GPUs and backends): 0.17 answers what names no release.
pytestmark = [pytest.mark.usefixtures("no_vllm_env"), pytest.mark.vllm("0.17")]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)["result"]


def flat(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# ROCm: the AITER switches, the unified-attention switch, the AITER MLA switch, --block-size 1


@pytest.mark.parametrize("gpu", ["MI300X", "MI325X", "MI355X"])
def test_rocm_switches_are_offered(capsys, gpu):
    code, res = run_json(capsys, "explain", "--gpu", gpu, "--model", str(EX / "llama3-8b.json"))
    assert code == 0 and res["selected"] == "TRITON_ATTN"
    lost = {x["backend"]: x for x in res["lost"]}
    for backend in ("ROCM_AITER_UNIFIED_ATTN", "ROCM_AITER_FA", "ROCM_ATTN"):
        assert lost[backend]["fixes"], backend  # never "no setting helps"
        assert not lost[backend]["hardware_only"]
    assert lost["ROCM_AITER_FA"]["fixes"][0]["text"] == "VLLM_ROCM_USE_AITER=1"
    assert lost["ROCM_AITER_UNIFIED_ATTN"]["fixes"][0]["text"] == \
        "VLLM_ROCM_USE_AITER=1 and VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION=1"
    assert lost["ROCM_ATTN"]["fixes"][0]["text"] == "--attention-config.use_prefill_decode_attention true"
    code, out, _ = run(capsys, "explain", "--gpu", gpu, "--model", str(EX / "llama3-8b.json"))
    assert "no setting" not in out and "best this GPU offers" not in out
    assert flat(out).endswith("hint: VLLM_ROCM_USE_AITER=1 and VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION=1 gets "
                              "ROCM_AITER_UNIFIED_ATTN")


def test_rocm_fixes_really_select_the_backend():
    """Each offered switch, applied, gets the backend (vLLM 0.17's selector agrees: checked with
    the shared oracle, VLLM_ROCM_USE_AITER=1 -> ROCM_AITER_FA, + unified -> ROCM_AITER_UNIFIED_ATTN)."""
    from attnsolve import solve
    base = Config(gpu="MI300X", dtype="bfloat16", head_size=128)
    assert solve(base.replace(rocm_use_aiter=True)).backend == "ROCM_AITER_FA"
    assert solve(base.replace(rocm_use_aiter=True, rocm_use_aiter_unified_attention=True)).backend == \
        "ROCM_AITER_UNIFIED_ATTN"
    mla = Config(gpu="MI300X", dtype="bfloat16", use_mla=True, num_heads=128)
    a = advise(Context(mla, gpu="MI300X", total_heads=128))
    texts = [f.text for f in a.lost[0].fixes]
    assert a.lost[0].backend == "ROCM_AITER_MLA"
    assert "--block-size 1" in texts and "VLLM_ROCM_USE_AITER=1" in texts
    for f in a.lost[0].fixes:
        if f.kind == "setting" and "backend" not in f.changes:
            assert solve(mla.replace(**f.changes)).backend == "ROCM_AITER_MLA"


def test_rocm_switch_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("VLLM_ROCM_USE_AITER", "1")
    code, out, _ = run(capsys, "select", "--gpu", "MI300X")
    assert code == 0 and out.startswith("ROCM_AITER_FA")
    assert "environment: VLLM_ROCM_USE_AITER=1" in out and "--no-env" in out
    code, out, _ = run(capsys, "select", "--gpu", "MI300X", "--no-env")
    assert out.startswith("TRITON_ATTN")


# ---------------------------------------------------------------------------------------------
# fp8 stays fp8


def test_flashmla_fp8_e5m2_nearer_fp8_fix_first(capsys):
    code, res = run_json(capsys, "explain", "--gpu", "H100", "--model", str(EX / "deepseek-v3.json"),
                         "--kv-cache-dtype", "fp8_e5m2")
    assert code == 1
    first = res["fixes"][0]
    assert first["text"] == "--kv-cache-dtype fp8" and first["keeps_intent"] and first["selects"] == "FLASHMLA"
    drop = next(f for f in res["fixes"] if f["changes"] == {"kv_cache_dtype": "auto"})
    assert not drop["keeps_intent"] and drop["gives_up"] == "the fp8 KV cache"
    assert res["fixes"].index(first) < res["fixes"].index(drop)


def test_sparse_mla_fp8_gets_fp8_ds_mla(capsys):
    code, res = run_json(capsys, "explain", "--gpu", "H100", "--use-mla", "--use-sparse", "--kv-cache-dtype", "fp8")
    assert code == 1 and res["fixes"][0]["text"] == "--kv-cache-dtype fp8_ds_mla"
    assert res["hint"] == "--kv-cache-dtype fp8_ds_mla"


def test_flash_attn_fp8_needs_fa3_on_hopper_in_text(capsys):
    code, out, _ = run(capsys, "explain", "--gpu", "A100", "--model", str(EX / "llama3-8b.json"),
                       "--kv-cache-dtype", "fp8")
    text = flat(out)
    assert code == 0 and "Selected FLASHINFER" in text
    assert "or use an H100 or H200 (Hopper, SM 9.0) for FLASH_ATTN (FA3), keeping the fp8 KV cache" in text
    hint = text[text.index("hint:"):]
    assert hint.startswith("hint: FLASHINFER (NATIVE) is the best this GPU offers with the fp8 KV cache")
    assert "gives up the fp8 KV cache" in hint


# ---------------------------------------------------------------------------------------------
# The model as vLLM reads it


def test_float32_qwen2_on_h100_gets_fa3(capsys):
    code, res = run_json(capsys, "select", "--gpu", "H100", "--model", str(EX / "qwen2-7b-fp32.json"))
    assert code == 0 and (res["selected"], res["variant"]) == ("FLASH_ATTN", "FA3")
    assert res["config"]["dtype"] == "bfloat16"
    assert any("resolves the checkpoint's float32 to bfloat16" in n for n in res["query"]["notes"])
    code, res = run_json(capsys, "select", "--gpu", "H100", "--model", str(EX / "qwen2-7b-fp32.json"),
                         "--dtype", "float32")
    assert res["selected"] == "TRITON_ATTN"  # an explicit --dtype wins, as in vLLM


def test_bert_is_encoder_only_pooling_in_float16(capsys):
    code, res = run_json(capsys, "select", "--gpu", "H100", "--model", str(EX / "bert-base.json"))
    assert code == 0 and res["config"]["attn_type"] == "encoder_only"
    assert res["config"]["dtype"] == "float16"  # pooling models prefer float16 (vLLM _resolve_auto_dtype)
    assert (res["selected"], res["variant"]) == ("FLASH_ATTN", "FA3")  # vLLM 0.17's selector: same


@pytest.mark.parametrize("gpu,want", [("T4", "float16"), ("V100", "float16"), ("A100", "bfloat16"),
                                      ("CPU", "bfloat16"), ("MI300X", "bfloat16")])
def test_bfloat16_becomes_float16_before_sm80(capsys, gpu, want):
    code, res = run_json(capsys, "select", "--gpu", gpu, "--model", str(EX / "llama3-8b.json"))
    assert res["config"]["dtype"] == want


def test_resolve_dtype_rules():
    from attnsolve.modelconfig import ModelFacts, resolve_dtype
    dense = ModelFacts("m", {}, config_dtype="float32")
    assert resolve_dtype(dense, "cuda", (9, 0))[0] == "bfloat16"
    assert resolve_dtype(dense, "cuda", (7, 5))[0] == "float16"
    pooling = ModelFacts("m", {}, config_dtype="float32", pooling=True)
    assert resolve_dtype(pooling, "cuda", (9, 0))[0] == "float16"
    gemma = ModelFacts("m", {}, model_type="gemma3", config_dtype="bfloat16")
    assert resolve_dtype(gemma, "cuda", (7, 0))[0] == "float32"  # vLLM refuses gemma3 in float16
    assert resolve_dtype(ModelFacts("m", {}, config_dtype=None), "cuda", (8, 0))[0] == "bfloat16"
    assert resolve_dtype(ModelFacts("m", {}, config_dtype="float16"), "cuda", (9, 0)) == ("float16", None)


def test_model_from_hugging_face_cache(tmp_path, monkeypatch, capsys):
    snap = tmp_path / "models--deepseek-ai--DeepSeek-V3" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text((EX / "deepseek-v3.json").read_text())
    (tmp_path / "models--deepseek-ai--DeepSeek-V3" / "refs").mkdir()
    (tmp_path / "models--deepseek-ai--DeepSeek-V3" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    code, res = run_json(capsys, "select", "--gpu", "H100", "--model", "deepseek-ai/DeepSeek-V3")
    assert code == 0 and res["selected"] == "FLASH_ATTN_MLA" and res["config"]["use_mla"] is True
    code, out, err = run(capsys, "select", "--gpu", "H100", "--model", "deepseek-ai/DeepSeek-V9")
    assert code == 2 and str(tmp_path / "models--deepseek-ai--DeepSeek-V9" / "snapshots") in err
    assert "huggingface-cli download deepseek-ai/DeepSeek-V9" in flat(err)


# ---------------------------------------------------------------------------------------------
# GPU names


@pytest.mark.parametrize("spelling,name", [
    ("NVIDIA H100 80GB HBM3", "H100"), ("A100-SXM4-80GB", "A100"), ("NVIDIA A100-SXM4-80GB", "A100"),
    ("H100 SXM", "H100"), ("NVIDIA H100 PCIe", "H100"), ("MI300", "MI300X"), ("AMD Instinct MI300X", "MI300X"),
    ("L20", "L20"), ("Tesla V100-SXM2-32GB", "V100"), ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada"), ("NVIDIA B200", "B200"), ("B100", "B100"),
    # Ti / SUPER parts share their base part's SM
    ("NVIDIA GeForce RTX 4070 Ti SUPER", "RTX 4070"), ("NVIDIA GeForce RTX 3090 Ti", "RTX 3090"),
    ("RTX 2080 Ti", "RTX 2080 Ti"), ("Quadro RTX 8000", "RTX 8000"), ("NVIDIA RTX 5000 Ada Generation", "RTX 5000 Ada"),
])
def test_gpu_spellings(capsys, spelling, name):
    from attnsolve.gpus import canonical
    assert canonical(spelling) == name
    code, res = run_json(capsys, "select", "--gpu", spelling)
    assert code == 0 and res["query"]["gpu"] == name


def test_gpu_typo_suggestion_stays_within_vendor_and_says_generation(capsys):
    code, out, err = run(capsys, "select", "--gpu", "MI400")
    assert code == 2 and "MI" in err and "V100" not in err.split("did you mean")[-1]
    from attnsolve.gpus import resolve
    from attnsolve.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        resolve("RTX 3050")
    assert e.value.suggestion and e.value.suggestion.startswith("RTX")
    assert "(Ampere, SM 8.6)" in str(e.value)


def test_compute_capability_alone_implies_cuda(capsys):
    code, out, err = run(capsys, "select", "--compute-capability", "9.0")
    assert code == 0 and out.startswith("FLASH_ATTN (FA3)")


def _fake_tool(tmp_path: Path, name: str, output: str) -> None:
    tool = tmp_path / name
    tool.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\n")  # printf: a builtin (PATH is only tmp_path)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)


def test_gpu_auto_reads_nvidia_smi(tmp_path, monkeypatch, capsys):
    _fake_tool(tmp_path, "nvidia-smi", "NVIDIA H100 80GB HBM3")
    monkeypatch.setenv("PATH", str(tmp_path))
    code, out, _ = run(capsys, "select", "--gpu", "auto")
    assert code == 0 and out.startswith("FLASH_ATTN (FA3)")
    assert "--gpu auto: nvidia-smi reports 'NVIDIA H100 80GB HBM3' = H100" in flat(out)


def test_gpu_auto_reads_rocm_smi(tmp_path, monkeypatch, capsys):
    _fake_tool(tmp_path, "rocm-smi", "GPU[0]\t\t: Card Series: \t\tAMD Instinct MI300X")
    monkeypatch.setenv("PATH", str(tmp_path))
    code, res = run_json(capsys, "select", "--gpu", "auto")
    assert code == 0 and res["query"]["gpu"] == "MI300X"


def test_gpu_auto_without_a_gpu_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi, no rocm-smi
    import attnsolve.gpus as gpus
    monkeypatch.setattr(gpus, "_from_torch", lambda: None)
    code, out, err = run(capsys, "select", "--gpu", "auto")
    assert code == 2 and out == ""
    assert "no local GPU found" in flat(err) and "nvidia-smi, rocm-smi, torch" in flat(err)


# ---------------------------------------------------------------------------------------------
# Fix text, ranking and hardware suggestions


def _all_fixes(res: dict) -> list[dict]:
    return res["fixes"] + [f for x in res["lost"] for f in x["fixes"]]


CASES = [
    ("A100", "gpt-oss-20b.json", ()), ("V100", "gpt-oss-20b.json", ()), ("RTX 5090", "gpt-oss-20b.json", ()),
    ("A100", "deepseek-v3.2.json", ("--kv-cache-dtype", "fp8")), ("CPU", "deepseek-v3.json", ()),
    ("B200", "deepseek-v3.json", ("--attention-backend", "flashmla")), ("MI300X", "deepseek-v3.2.json", ()),
    ("MI300X", "gpt-oss-20b.json", ()), ("H100", "llama3-8b.json", ("--kv-cache-dtype", "fp8", "--block-size", "8")),
]


@pytest.mark.parametrize("gpu,model,extra", CASES)
def test_fixes_are_usable_ranked_and_name_real_gpus(capsys, gpu, model, extra):
    code, res = run_json(capsys, "explain", "--gpu", gpu, "--model", str(EX / model), *extra)
    for fixes in [res["fixes"]] + [x["fixes"] for x in res["lost"]]:
        kinds = [KINDS.index(f["kind"]) for f in fixes]
        assert kinds == sorted(kinds), fixes  # settings, version, hardware, model
        for f in fixes:
            # model facts from the config file are never offered
            assert not ({"use_mla", "use_sparse", "has_sink", "head_size"} & set(f["changes"])), f
            assert "--rocm-arch" not in f["text"] and "--gpu" not in f["text"]
            if f["kind"] == "hardware":
                assert f["gpus"] and all(g in f["text"] for g in f["gpus"])
        # hardware_only never next to a setting fix
    for x in res["lost"]:
        assert not (x["hardware_only"] and any(f["kind"] == "setting" for f in x["fixes"]))
    assert not (res["hardware_only"] and any(f["kind"] == "setting" for f in res["fixes"]))
    gpus = {g for f in _all_fixes(res) for g in f["gpus"]}
    if gpu == "V100":
        assert "T4" not in gpus and gpus
    if gpu == "RTX 5090":
        assert "B300" not in gpus
    if gpu.startswith("MI"):
        assert all(g.startswith(("MI", "RX", "Radeon")) for g in gpus)


def test_no_platform_noise_in_conflicts(capsys):
    code, out, _ = run(capsys, "explain", "--gpu", "H100", "--model", str(EX / "deepseek-v3.json"),
                       "--kv-cache-dtype", "fp8_e5m2")
    assert "platform=cuda" not in out and "   also   compute_capability=9.0" not in out


def test_cpu_deepseek_says_use_a_gpu(capsys):
    code, out, _ = run(capsys, "explain", "--gpu", "CPU", "--model", str(EX / "deepseek-v3.json"))
    text = flat(out)
    assert code == 1 and "--use-mla" not in text
    newest = vllm_versions()[-1]  # the newest release, which has CPU MLA backends (0.33 and later)
    assert f"hint: no setting makes any backend valid on a CPU for this model in vLLM 0.17; pip install vllm=={newest}.0" in text
    assert "or use a GPU: an A100" in text
    assert "Conflict platform=cpu, use_mla=true" in text


def test_hardware_fix_nearest_newer_generation():
    c = Config(gpu="V100", dtype="float16", head_size=64, has_sink=True)
    a = advise(Context(c, gpu="V100"))
    fa = next(x for x in a.lost if x.backend == "FLASH_ATTN")
    assert fa.hardware_only and fa.fixes[0].gpus == ("H100", "H200")
    c = Config(gpu="RTX 5090", dtype="bfloat16", head_size=64, has_sink=True)
    fi = next(x for x in advise(Context(c, gpu="RTX 5090")).lost if x.backend == "FLASHINFER")
    hw = next(f for f in fi.fixes if f.kind == "hardware")  # after a newer vLLM release's fix, if any
    assert hw.gpus == ("B200",) and "older generation" in hw.text


def test_version_fixes_come_from_the_other_releases():
    """A fix of kind "version": the same question asked of another packaged release, verified by
    solving it there (vLLM 0.17 has no CPU MLA backend; 0.33 selects CPU_MLA)."""
    from attnsolve.advice import _auto_goal, _version_fixes
    from attnsolve.versions import vllm_versions
    c = Config(platform="cpu", dtype="bfloat16", use_mla=True, head_size=576, vllm="0.17")
    ctx = Context(c)
    fixes = _version_fixes(ctx, _auto_goal(ctx, None))
    assert [f.changes for f in fixes] == [{"vllm": v} for v in vllm_versions()[::-1] if v != "0.17"
                                          and _auto_goal(ctx, None)(c.replace(vllm=v))]
    assert fixes and fixes[0].kind == "version" and fixes[0].text.startswith("pip install vllm==")
    assert fixes[0].selects == "CPU_MLA"
    assert _version_fixes(ctx, lambda cfg: None) == []
    a = advise(ctx)
    assert a.fixes[0].kind == "version"


# ---------------------------------------------------------------------------------------------
# matrix over GPU names


def test_matrix_over_gpu_names(capsys):
    code, res = run_json(capsys, "matrix", "--model", str(EX / "llama3-8b.json"), "--over", "gpu=A100,H100,B200")
    assert code == 0 and res["over"] == ["gpu"]
    got = {r["values"]["gpu"]: r["label"] for r in res["rows"]}
    assert got == {"A100": "FLASH_ATTN (FA2)", "H100": "FLASH_ATTN (FA3)", "B200": "FLASHINFER (TRTLLM)"}
    code, res = run_json(capsys, "matrix", "--model", str(EX / "llama3-8b.json"), "--over", "gpu=T4,MI300X,CPU")
    labels = {r["values"]["gpu"]: r["label"] for r in res["rows"]}
    assert "n/a" not in labels.values()
    assert labels["MI300X"] == "TRITON_ATTN" and labels["CPU"] == "CPU_ATTN"


# ---------------------------------------------------------------------------------------------
# vLLM start-up failures (Selection.startup_error, from the rules): a failing answer with vLLM's text


SPARSE_BLOCK = "Sparse MLA backend on ROCm only supports block size 1 for now."


def test_startup_failure_explain_offers_a_fix_that_starts(capsys):
    """FlashInfer head 256 with block 16 on SM 10.x: vLLM selects it, then refuses to start."""
    code, res = run_json(capsys, "explain", "--gpu", "B200", "--head-size", "256")
    assert code == 1 and res["startup_error"].startswith("There is a bug in FlashInfer block_size 16")
    assert res["fixes"][0]["text"] == "--block-size 32"
    assert res["hint"].startswith("vLLM refuses to start with FLASHINFER (TRTLLM); --block-size 32 starts")
    code, out, _ = run(capsys, "select", "--gpu", "B200", "--head-size", "256")
    assert code == 1 and "refuses to start" in out


def test_a_requested_backend_that_cannot_start_gets_the_fix_of_dropping_the_request(capsys):
    """FlexAttentionImpl refuses ALiBi (flex_attention.py; both releases): nothing keeps FLEX_ATTENTION but
    changing the model, while automatic selection starts (FLASH_ATTN as FA2): the request is a setting, and
    dropping it is the fix to show first, marked as giving up the request."""
    for vllm in ("0.17", "0.33"):
        code, res = run_json(capsys, "explain", "--vllm", vllm, "--gpu", "H100", "--dtype", "bfloat16",
                             "--use-alibi", "true", "--attention-backend", "FLEX_ATTENTION")
        assert code == 1 and res["startup_error"] == "FlexAttention does not support alibi slopes yet.", res
        first = res["fixes"][0]
        assert first["changes"] == {"backend": None} and first["selects"] == "FLASH_ATTN", res["fixes"]
        assert first["gives_up"] == "the requested FLEX_ATTENTION" and not first["keeps_intent"], first
        assert "drop --attention-backend" in res["hint"], res["hint"]
    # where automatic selection fails to start as well, it is no fix (FlashInfer's head-256 block-16 bug)
    code, res = run_json(capsys, "explain", "--vllm", "0.17", "--gpu", "B200", "--head-size", "256",
                         "--attention-backend", "FLASHINFER")
    assert code == 1 and all(f["changes"] != {"backend": None} for f in res["fixes"]), res["fixes"]


def test_rocm_sparse_mla_without_block_size_fails_with_vllms_text(capsys):
    """vLLM 0.17's ROCm sparse MLA needs block size 1 (vllm/platforms/rocm.py); start-up sets 16."""
    code, out, _ = run(capsys, "select", "--gpu", "MI300X", "--model", str(EX / "deepseek-v3.2.json"))
    assert code == 1 and SPARSE_BLOCK in flat(out)
    code, res = run_json(capsys, "select", "--gpu", "MI300X", "--model", str(EX / "deepseek-v3.2.json"))
    assert code == 1 and SPARSE_BLOCK in res["error"]
    code, out, _ = run(capsys, "select", "--gpu", "MI300X", "--model", str(EX / "deepseek-v3.2.json"),
                       "--block-size", "1")
    assert code == 0 and out.startswith("ROCM_AITER_MLA_SPARSE")


def test_rocm_sparse_mla_explain_offers_block_size_1(capsys):
    code, res = run_json(capsys, "explain", "--gpu", "MI300X", "--model", str(EX / "deepseek-v3.2.json"))
    assert code == 1
    assert res["fixes"][0]["text"] == "--block-size 1"
    assert res["hint"].startswith("--block-size 1")


def test_failure_hint_says_what_a_dropping_fix_gives_up(capsys):
    code, res = run_json(capsys, "explain", "--gpu", "T4", "--model", str(EX / "deepseek-v3.json"),
                         "--kv-cache-dtype", "fp8")
    assert code == 1
    keeper = next(f for f in res["fixes"] if f["keeps_intent"] and f["kind"] in ("version", "hardware"))
    assert res["hint"] == f"--kv-cache-dtype auto (gives up the fp8 KV cache; {keeper['text']} keeps it, with " \
        f"{keeper['selects']})"


def _all_fixes(res: dict) -> list[dict]:
    return [*res["fixes"], *(f for lost in res["lost"] for f in lost["fixes"])]


@pytest.mark.parametrize("extra", [[], ["--block-size", "16"], ["--has-sink"], ["--kv-cache-dtype", "fp8"]])
def test_b200_head_256_offers_only_real_head_sizes(capsys, extra):
    """Head size 256 on B200 once offered `--head-size 255` (the nearest member of 'any other size'):
    a model-fact what-if names a size some backend supports by name."""
    from attnsolve.advice import _named_sizes
    from attnsolve.rules import default_rules
    named = _named_sizes(default_rules())
    assert {64, 128, 256, 576} <= named
    code, res = run_json(capsys, "explain", "--gpu", "B200", "--head-size", "256", *extra)
    sizes = [f["changes"]["head_size"] for f in _all_fixes(res) if "head_size" in f["changes"]]
    assert all(s in named for s in sizes), sizes
    code, out, _ = run(capsys, "explain", "--gpu", "B200", "--head-size", "256", *extra)
    assert "--head-size 255" not in out


def test_model_facts_from_the_model_file_are_never_fixes(capsys):
    """gpt-oss's sinks and DeepSeek's MLA come from config.json: no `--has-sink false`, `--use-mla
    false` or `--head-size N` (nobody can apply them to a model they serve)."""
    for gpu, model in (("A100", "gpt-oss-20b.json"), ("T4", "deepseek-v3.json"), ("CPU", "deepseek-v3.json")):
        _, res = run_json(capsys, "explain", "--gpu", gpu, "--model", str(EX / model), "--kv-cache-dtype", "fp8")
        assert not [f for f in _all_fixes(res) if f["kind"] == "model"], (gpu, model)


def test_a_switch_the_user_set_is_intent_and_ranks_after_fixes_that_keep_it():
    """Settings first, then version, then hardware; within a kind, fixes keeping what the user chose
    (here VLLM_ROCM_USE_AITER_MHA=0, set on purpose) come before the ones that undo it."""
    cfg = Config(gpu="MI300X", dtype="bfloat16", rocm_use_aiter=True, rocm_use_aiter_mha=False)
    a = advise(Context(cfg, gpu="MI300X", user_fields=frozenset({"rocm_use_aiter", "rocm_use_aiter_mha"})))
    lost = {x.backend: x for x in a.lost}
    fa = lost["ROCM_AITER_FA"].fixes
    flip = next(f for f in fa if f.text == "VLLM_ROCM_USE_AITER_MHA=1")
    assert not flip.keeps_intent and flip.gives_up == "your VLLM_ROCM_USE_AITER_MHA=0"
    assert fa[0].keeps_intent and fa.index(flip) > max(i for i, f in enumerate(fa) if f.keeps_intent
                                                        and f.kind == flip.kind)
    # not typed (vLLM's default): flipping it is an ordinary setting fix
    plain = advise(Context(cfg.replace(rocm_use_aiter_mha=True), gpu="MI300X"))
    assert all(f.keeps_intent for x in plain.lost for f in x.fixes if f.kind == "setting")


def test_explicit_dtype_is_intent(capsys):
    _, res = run_json(capsys, "explain", "--gpu", "B200", "--head-size", "256", "--dtype", "bfloat16")
    f32 = next(f for f in res["fixes"] if f["text"] == "--dtype float32")
    assert f32["gives_up"] == "bfloat16 weights"
    kinds = [KINDS.index(f["kind"]) for f in res["fixes"]]
    assert kinds == sorted(kinds)


def test_fix_list_keeps_its_column_when_a_fix_is_long(capsys):
    """A long hardware fix goes on its own line; every backend still starts in one column."""
    code, out, _ = run(capsys, "explain", "--gpu", "B200", "--head-size", "256")
    block = out.split("each alone is enough):\n", 1)[1].split("\n\n", 1)[0].splitlines()
    arrows = {line.index("-> ") for line in block if "-> " in line}
    assert len(arrows) == 1 and len([x for x in block if "-> " in x]) >= 4, block
    assert all(len(x) <= 80 for x in block)


def test_a_layer_without_prefill_path_says_why():
    """vLLM 0.20 makes no prefill choice for a sparse MLA layer and logs nothing; the answer alone (NO_PREFILL)
    would show no reason, so the hint names the decode backend that serves every token."""
    cfg = Config(vllm="0.20", gpu="H100", dtype="bfloat16", use_mla=True, use_sparse=True, head_size=576,
                 qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, index_topk=2048)
    a = advise(Context(cfg, role="mla_prefill"))
    assert a.explanation.selected == "NO_PREFILL" and not a.explanation.warnings
    assert a.hint == ("no prefill backend: the layer sends every token through its decode backend FLASHMLA_SPARSE's "
                      "top-k MQA path (vLLM 0.20 builds no prefill path for it; vLLM logs nothing about it)")
