"""The CLI: verbs, exit codes, error messages, JSON envelope, start-up imports, and a hypothesis
test that drives `main()` in-process with random argument lists (valid and invalid)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from attnsolve import Config, ConfigError, solve
from attnsolve.cli import SCHEMA, main
from attnsolve.errors import SelectionError

# One release: CLI texts, flags and exit codes on 0.17's backends.
pytestmark = pytest.mark.vllm("0.17")

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def last_block(out: str) -> str:
    """The final paragraph (the hint, possibly wrapped)."""
    return out.rstrip().split("\n\n")[-1]


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code, out, err = run(capsys, *argv, "--json")
    env = json.loads(out)
    assert env["schema"] == SCHEMA and env["exit_code"] == code
    return code, env


# ---------------------------------------------------------------------------------------------
# select / explain


def test_select_llama_on_h100(capsys):
    code, out, err = run(capsys, "select", "--gpu", "H100", "--model", str(EX / "llama3-8b.json"))
    assert code == 0 and out.splitlines()[0] == "FLASH_ATTN (FA3)  [vLLM 0.17]" and err == ""


def test_select_json_matches_solve(capsys):
    # --block-size 32: with vLLM's default 16, FlashInfer's head-256 assert stops vLLM's start-up on SM 10.x
    code, env = run_json(capsys, "select", "--gpu", "B200", "--head-size", "256", "--kv-cache-dtype", "fp8",
                         "--block-size", "32")
    sel = solve(Config(gpu="B200", dtype="bfloat16", head_size=256, kv_cache_dtype="fp8", block_size=32))
    assert code == 0 and env["command"] == "select" and env["result"]["startup_error"] is None
    assert env["result"]["selected"] == sel.backend and env["result"]["variant"] == sel.variant


def test_explain_deepseek_fp8_on_h100(capsys):
    code, out, _ = run(capsys, "explain", "--gpu", "H100", "--model", str(EX / "deepseek-v3.json"),
                       "--kv-cache-dtype", "fp8")
    assert code == 0
    assert "Selected  FLASHMLA" in out
    assert "FLASH_ATTN_MLA: kv_cache_dtype not supported" in out
    hint = last_block(out).replace("\n      ", " ")
    # fp8 stays fp8: the hint says FLASHMLA is the best with fp8, and what dropping fp8 would get
    assert hint.startswith("hint: FLASHMLA is the best this GPU offers with the fp8 KV cache")
    assert "--kv-cache-dtype auto gets FLASH_ATTN_MLA but gives up the fp8 KV cache" in hint


def test_explain_lost_backend_only_other_hardware(capsys):
    code, out, _ = run(capsys, "explain", "--gpu", "RTX 5090", "--model", str(EX / "gpt-oss-20b.json"))
    assert code == 0 and "Selected  TRITON_ATTN" in out
    assert "FLASH_ATTN: sink setting not supported" in out and "impossible on this GPU" in out


def test_explain_no_backend_hardware_hint(capsys):
    code, out, _ = run(capsys, "explain", "--gpu", "A100", "--model", str(EX / "deepseek-v3.2.json"),
                       "--kv-cache-dtype", "fp8")
    assert code == 1
    assert "fp8 -> fp8_ds_mla" in out  # the DeepSeek-V3.2 rewrite is said
    assert "Conflict" in out and "compute_capability=8.0" in out
    assert last_block(out).startswith("hint: only other hardware helps")


def test_explain_requested_backend_does_not_fit(capsys):
    code, env = run_json(capsys, "explain", "--gpu", "B200", "--model", str(EX / "deepseek-v3.json"),
                         "--attention-backend", "flashmla")
    assert code == 1
    res = env["result"]
    assert res["requested"] == "FLASHMLA" and res["selected"] is None
    assert res["conflict"] == {"compute_capability": "10.0"}
    first = res["fixes"][0]
    assert (first["changes"], first["selects"], first["kind"]) == ({"backend": None}, "FLASHINFER_MLA", "setting")
    assert first["text"] == "drop --attention-backend (automatic selection)"


def test_select_failure_exit_1_with_reasons(capsys):
    code, out, _ = run(capsys, "select", "--gpu", "CPU", "--use-mla")
    assert code == 1 and "MLA is not supported on CPU." in out
    assert last_block(out).splitlines()[-1].startswith("hint:")


def test_tensor_parallel_divides_heads(capsys):
    code, env = run_json(capsys, "select", "--gpu", "B200", "--model", str(EX / "deepseek-v3.2.json"), "-tp", "8")
    assert code == 0
    assert env["result"]["config"]["num_heads"] == 16
    assert env["result"]["selected"] == "FLASHINFER_MLA_SPARSE"  # <= 16 heads per GPU on SM 10.x
    code, env = run_json(capsys, "select", "--gpu", "B200", "--model", str(EX / "deepseek-v3.2.json"))
    assert env["result"]["selected"] == "FLASHMLA_SPARSE"


def test_mla_prefill_role(capsys):
    code, env = run_json(capsys, "select", "--gpu", "B200", "--model", str(EX / "deepseek-v3.json"),
                         "--role", "mla_prefill")
    assert code == 0 and env["result"]["selected"] == "TRTLLM_RAGGED_DEEPSEEK"


# ---------------------------------------------------------------------------------------------
# matrix / backends / docs


def test_matrix_grid(capsys):
    code, env = run_json(capsys, "matrix", "--model", str(EX / "gpt-oss-20b.json"))
    assert code == 0 and env["result"]["over"] == ["compute_capability", "kv_cache_dtype"]
    cell = {(r["values"]["compute_capability"], r["values"]["kv_cache_dtype"]): r for r in env["result"]["rows"]}
    assert cell[("9.0", "fp8")]["label"] == "FLASH_ATTN (FA3)"
    assert cell[("8.0", "auto")]["backend"] == "TRITON_ATTN"  # sinks: FA2 and FlashInfer native refuse
    code, out, _ = run(capsys, "matrix", "--model", str(EX / "gpt-oss-20b.json"))
    assert all(len(line) <= 80 for line in out.splitlines())


def test_matrix_values_and_long(capsys):
    code, out, _ = run(capsys, "matrix", "--gpu", "H100", "--over", "head_size=12,64,512", "--long")
    assert code == 0
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[3:] if line.strip()}
    assert rows["12"] == "FLEX_ATTENTION" and rows["64"] == "FLASH_ATTN" and rows["512"] == "TRITON_ATTN"


def test_matrix_bad_field(capsys):
    code, out, err = run(capsys, "matrix", "--gpu", "H100", "--over", "kv_cache_dtyp")
    assert code == 2 and "did you mean --over kv_cache_dtype?" in err


def test_backends(capsys):
    code, env = run_json(capsys, "backends", "--no-runnable")
    names = {b["name"]: b for b in env["result"]["backends"]}
    assert names["FLASH_ATTN"]["priority"]["cuda"]["9.0"] == 1
    assert names["FLASH_ATTN"]["priority"]["cuda"]["10.0"] == 2
    assert names["ROCM_AITER_MLA_SPARSE"]["priority"]["rocm"]["*"] == 1
    assert names["TREE_ATTN"]["priority_text"] == "explicit only"
    code, out, _ = run(capsys, "backends", "--no-runnable")
    assert all(len(line) <= 80 for line in out.splitlines())


def test_docs_check_and_write(tmp_path, capsys):
    target = tmp_path / "ab.md"
    target.write_text("stale\n")
    code, out, _ = run(capsys, "docs", "--check", "-o", str(target))
    assert code == 1 and out.startswith("---") and "+# Attention Backend Feature Support" in out
    code, out, _ = run(capsys, "docs", "-o", str(target))
    assert code == 0 and "wrote" in out
    code, out, _ = run(capsys, "docs", "--check", "-o", str(target))
    assert code == 0 and "up to date" in out


# ---------------------------------------------------------------------------------------------
# bad input: exit 2, stderr, flag + value + accepted + closest match, never a traceback


@pytest.mark.parametrize("argv, expect", [
    (["select", "--gpu", "H100", "--kv-cache-dtype", "fp8e4m3"], "did you mean --kv-cache-dtype fp8_e4m3?"),
    (["select", "--gpu", "H100", "--kv-cache-dtyp", "fp8"], "did you mean --kv-cache-dtype?"),
    (["select", "--gpu", "H10"], "did you mean --gpu H100?"),
    (["select", "--gpu", "H100", "--attention-backend", "FLASH_ATN"], "did you mean --attention-backend FLASH_ATTN?"),
    (["select", "--gpu", "H100", "--block-size", "48"], "accepted: unset, 1, 8, 16, 32, 64, 128, 256"),
    (["select", "--gpu", "H100", "--dtype", "fp64"], "invalid --dtype 'fp64'"),
    (["select", "--gpu", "H100", "--use-mla", "maybe"], "invalid --use-mla 'maybe'"),
    (["select", "--model", str(EX / "llama3-8b.json")], "no hardware given"),
    (["selct", "--gpu", "H100"], "did you mean 'attnsolve select'?"),
    (["select", "--gpu"], "expected one argument"),
    (["select", "--gpu", "H100", "-tp", "3", "--num-heads", "32"], "invalid --tensor-parallel-size"),
    (["select", "--gpu", "H100", "--role", "prefil"], "invalid --role 'prefil'"),
    (["select", "--gpu", "H100", "stray"], "unexpected argument 'stray'"),
    (["select", "--gpu", "H100", "--model", "/nonexistent/config.json"], "no such file"),
    ([], "usage:"),
])
def test_bad_input_exit_2(capsys, argv, expect):
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    assert expect in err and "Traceback" not in err and out == ""
    assert all(len(line) <= 80 for line in err.splitlines() if not line.startswith("usage"))


@pytest.mark.parametrize("argv", [
    ["explain", "--gpu", "A100", "--model", str(EX / "deepseek-v3.2.json"), "--kv-cache-dtype", "fp8"],
    ["explain", "--gpu", "B200", "--model", str(EX / "deepseek-v3.2.json"), "-tp", "8", "--kv-cache-dtype", "fp8"],
    ["explain", "--gpu", "MI300X", "--model", str(EX / "deepseek-v3.json"), "--attention-backend", "FLASH_ATTN"],
    ["explain", "--gpu", "H100", "--model", str(EX / "deepseek-v3.json"), "--role", "mla_prefill"],
    ["explain", "--gpu", "T4", "--head-size", "72", "--dtype", "float32", "--block-size", "8", "--has-sink"],
    ["select", "--gpu", "RTX 5090", "--model", str(EX / "gpt-oss-20b.json"), "--attention-backend", "FLASH_ATTN"],
])
def test_text_fits_80_columns(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code in (0, 1) and err == ""
    too_long = [line for line in out.splitlines() if len(line) > 80]
    assert not too_long, too_long


def test_every_config_field_has_a_flag():
    from attnsolve.cli import FLAGS
    from attnsolve.config import FIELD_NAMES
    assert set(FIELD_NAMES) <= {f.field for f in FLAGS}


def test_environment_read_by_default(capsys, monkeypatch):
    monkeypatch.setenv("VLLM_ROCM_USE_AITER", "1")
    code, out, _ = run(capsys, "select", "--gpu", "MI300X")
    assert code == 0 and out.startswith("ROCM_AITER_FA")  # read as vLLM reads it
    assert "environment: VLLM_ROCM_USE_AITER=1" in out and "--no-env" in out
    code, out, _ = run(capsys, "select", "--gpu", "MI300X", "--from-env")  # the old opt-in still works
    assert out.startswith("ROCM_AITER_FA")
    code, out, _ = run(capsys, "select", "--gpu", "MI300X", "--rocm-use-aiter", "false")
    assert out.startswith("TRITON_ATTN") and "environment:" not in out  # a flag wins
    code, out, _ = run(capsys, "select", "--gpu", "MI300X", "--no-env")
    assert out.startswith("TRITON_ATTN") and "environment" not in out
    code, env = run_json(capsys, "select", "--gpu", "MI300X")
    assert env["result"]["query"]["env"] == {"VLLM_ROCM_USE_AITER": "1"}


def test_variables_vllm_0_17_does_not_have_are_not_read(capsys, monkeypatch):
    """vLLM 0.17.0 has no VLLM_ATTENTION_BACKEND, VLLM_FLASH_ATTN_VERSION, VLLM_USE_TRTLLM_ATTENTION or
    VLLM_V1_USE_PREFILL_DECODE_ATTENTION (not in envs.py, read nowhere): a stale one in the shell changes nothing."""
    for var, value in (("VLLM_ATTENTION_BACKEND", "FLASHINFER"), ("VLLM_FLASH_ATTN_VERSION", "2"),
                       ("VLLM_USE_TRTLLM_ATTENTION", "1"), ("VLLM_V1_USE_PREFILL_DECODE_ATTENTION", "1")):
        monkeypatch.setenv(var, value)
    code, out, _ = run(capsys, "select", "--gpu", "H100")
    assert code == 0 and out.startswith("FLASH_ATTN (FA3)") and "environment" not in out
    code, out, _ = run(capsys, "select", "--gpu", "MI300X")
    assert out.startswith("TRITON_ATTN") and "environment" not in out


def test_rocm_switches_read_with_vllms_own_idiom(capsys, monkeypatch):
    """vLLM reads VLLM_ROCM_USE_AITER as text.lower() in ("true", "1"): "TRUE" is on, "yes" and " 1" are off (said)."""
    monkeypatch.setenv("VLLM_ROCM_USE_AITER", "TRUE")
    assert run(capsys, "select", "--gpu", "MI300X")[1].startswith("ROCM_AITER_FA")
    for text in ("yes", " 1", "on"):
        monkeypatch.setenv("VLLM_ROCM_USE_AITER", text)
        code, out, _ = run(capsys, "select", "--gpu", "MI300X")
        assert code == 0 and out.startswith("TRITON_ATTN"), text
        assert "is read as false: vLLM turns it on only for 'true' or '1'" in " ".join(out.split())


def test_bad_input_json_envelope(capsys):
    code, out, err = run(capsys, "select", "--gpu", "H100", "--kv-cache-dtype", "fp8e4m3", "--json")
    env = json.loads(out)
    assert code == 2 and env["exit_code"] == 2 and "result" not in env
    assert env["error"]["flag"] == "--kv-cache-dtype" and env["error"]["suggestion"] == "fp8_e4m3"
    assert "fp8_e4m3" in env["error"]["accepted"] and err.startswith("attnsolve: error:")


def test_help_exit_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "explain" in out
    code, out, _ = run(capsys, "select", "--help")
    assert code == 0 and "--kv-cache-dtype" in out and "--attention-backend" in out


def test_no_unicode_or_colour_when_not_a_tty(capsys, monkeypatch):
    code, out, _ = run(capsys, "explain", "--gpu", "A100", "--model", str(EX / "deepseek-v3.2.json"))
    assert "\x1b[" not in out and "\u2192" not in out and "->" in out


def test_style_tty_rules(monkeypatch):
    from attnsolve.render import Style

    class Tty:
        encoding = "utf-8"

        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    s = Style.for_stream(Tty())
    assert s.unicode and s.colour and s.yes == "\u2705"
    monkeypatch.setenv("NO_COLOR", "1")
    assert not Style.for_stream(Tty()).colour
    assert Style.for_stream(None) == Style(False, False) and Style().no == "no"


# ---------------------------------------------------------------------------------------------
# start-up: no torch, networkx or python-constraint on --help and select


@pytest.mark.parametrize("argv", [["--help"], ["select", "--gpu", "H100", "--model", "examples/llama3-8b.json"]])
def test_startup_imports(argv):
    code = ("import sys; from attnsolve.cli import main; rc = main(%r); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'networkx', 'constraint', 'triton', 'numpy')); "
            "print('HEAVY', heavy); sys.exit(rc)" % (argv,))
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "HEAVY []" in p.stdout


def test_python_dash_m(tmp_path):
    p = subprocess.run([sys.executable, "-m", "attnsolve", "select", "--gpu", "H100", "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and json.loads(p.stdout)["result"]["selected"] == "FLASH_ATTN"


# ---------------------------------------------------------------------------------------------
# hypothesis: random argument lists


_VALUES = {  # flag -> (valid values, invalid values)
    "--gpu": (["H100", "A100", "B200", "RTX 5090", "T4", "MI300X", "CPU", "L40S", "GB300"], ["H10", "nope"]),
    "--platform": (["cuda", "rocm", "cpu"], ["tpu"]),
    "--compute-capability": (["8.0", "9.0", "10.0", "12.0", "7.5"], ["x.y", "99"]),
    "--dtype": (["float16", "bfloat16", "float32", "fp16", "bf16"], ["int8"]),
    "--kv-cache-dtype": (["auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_ds_mla"], ["fp8e4m3"]),
    "--block-size": (["1", "16", "32", "64", "128"], ["48", "x"]),
    "--head-size": (["64", "80", "128", "256", "576", "16"], ["0", "abc"]),
    "--num-heads": (["8", "16", "128"], ["-1"]),
    "--attn-type": (["decoder", "encoder_only", "encoder"], ["bogus"]),
    "--attention-backend": (["FLASH_ATTN", "flashinfer", "TRITON_ATTN", "FLASHMLA", "CPU_ATTN", "auto",
                             "FLASHINFER_MLA", "FLEX_ATTENTION"], ["FLASH_ATN"]),
    "--flash-attn-version": (["2", "3"], ["4"]),
    "--rocm-arch": (["gfx942", "gfx90a", "gfx1100"], ["gfx000"]),
}
_BOOLS = ["--use-mla", "--use-sparse", "--has-sink", "--use-mm-prefix", "--use-trtllm-attention", "--rocm-use-aiter"]
_FIELD = {"--gpu": "gpu", "--platform": "platform", "--compute-capability": "compute_capability", "--dtype": "dtype",
          "--kv-cache-dtype": "kv_cache_dtype", "--block-size": "block_size", "--head-size": "head_size",
          "--num-heads": "num_heads", "--attn-type": "attn_type", "--attention-backend": "backend",
          "--flash-attn-version": "flash_attn_version", "--rocm-arch": "rocm_arch", "--use-mla": "use_mla",
          "--use-sparse": "use_sparse", "--has-sink": "has_sink", "--use-mm-prefix": "use_mm_prefix",
          "--use-trtllm-attention": "use_trtllm_attention", "--rocm-use-aiter": "rocm_use_aiter"}


@st.composite
def argvs(draw):
    valid = draw(st.booleans())  # half the lists are well-formed: the 0/1 answers get exercised too
    pairs: list[tuple[str, str | None]] = []
    if valid:
        pairs.append(("--gpu", draw(st.sampled_from(_VALUES["--gpu"][0]))))
    for flag in draw(st.lists(st.sampled_from(sorted(_VALUES)), max_size=5, unique=True)):
        if valid and flag in ("--gpu", "--platform", "--compute-capability", "--rocm-arch"):
            continue
        good, bad = _VALUES[flag]
        pairs.append((flag, draw(st.sampled_from(good if valid else good + bad))))
    for flag in draw(st.lists(st.sampled_from(_BOOLS), max_size=3, unique=True)):
        pairs.append((flag, draw(st.sampled_from([None, "true", "false", "1", "0"] + ([] if valid else ["maybe"])))))
    model = draw(st.sampled_from([None, None, "llama3-8b.json", "deepseek-v3.json", "deepseek-v3.2.json",
                                  "gpt-oss-20b.json", "gemma3-4b.json", "llama3-8b-fp8-kv.json"]))
    if model:
        pairs.append(("--model", str(EX / model)))
        if draw(st.booleans()):
            pairs.append(("-tp", draw(st.sampled_from(["1", "2", "8", "3", "0"]))))
    pairs = draw(st.permutations(pairs))
    argv = [draw(st.sampled_from(["select", "explain"] if valid else ["select", "explain", "selct"]))]
    for flag, value in pairs:
        argv += [flag] if value is None else [flag, value]
    extra = draw(st.sampled_from([[], ["--json"]] if valid else
                                 [[], [], ["--bogus-flag"], ["stray"], ["--gpu"], ["--json"]]))
    return argv + extra, dict(pairs), extra


def _expected(pairs: dict, extra: list) -> tuple[int, str | None]:
    """What the CLI must answer, from Config and solve() directly."""
    from attnsolve.modelconfig import apply_model_rewrites, read_model_config
    fields: dict = {}
    model = read_model_config(pairs["--model"]) if "--model" in pairs else None
    if model is not None:
        from attnsolve.modelconfig import declared_model_fields
        from attnsolve.rules import default_version, rules_for
        fields.update(model.fields)
        fields.update(declared_model_fields(model, rules_for(default_version()))[0])  # sinks, mm prefix, ...
    for flag, value in pairs.items():
        if flag in _FIELD:
            fields[_FIELD[flag]] = "true" if value is None else value
    tp = int(pairs.get("-tp", "1"))
    if tp < 1:
        return 2, None
    if "num_heads" in fields:
        try:
            heads = int(fields["num_heads"])
        except ValueError:
            return 2, None
        if heads < 1 or heads % tp:
            return 2, None
        fields["num_heads"] = heads // tp
    if not ({"gpu", "platform", "compute_capability", "rocm_arch"} & set(fields)):
        return 2, None
    if not ({"gpu", "platform"} & set(fields)):  # a compute capability alone means CUDA, an arch ROCm
        fields["platform"] = "cuda" if "compute_capability" in fields else "rocm"
    if model is not None and "--dtype" not in pairs:
        # vLLM's --dtype auto: float32 -> the platform's first dtype; no bfloat16 before SM 8.0
        try:
            hw = Config(dtype="float32", **{k: fields[k] for k in ("gpu", "platform", "compute_capability",
                                                                   "rocm_arch") if k in fields})
        except ConfigError:
            return 2, None
        old = hw.platform == "cuda" and hw.compute_capability < (8, 0)
        want = model.fields.get("dtype") or "float32"
        if want == "float32":
            want = "float16" if (old or model.pooling) else "bfloat16"
        if want == "bfloat16" and old:
            want = "float32" if model.model_type in ("gemma2", "gemma3", "gemma3_text") else "float16"
        fields["dtype"] = want
    fields.setdefault("dtype", "bfloat16")
    if model is not None:
        from attnsolve.rules import default_version, rules_for
        fields, _ = apply_model_rewrites(model, fields, rules_for(default_version()))  # the checkpoint's KV dtype too
    try:
        cfg = Config(**fields)
    except ConfigError:
        return 2, None
    try:
        sel = solve(cfg)
    except SelectionError:
        return 1, None
    except ConfigError:
        return 2, None
    return (1 if sel.startup_error else 0), sel.backend  # vLLM would refuse to start: exit 1


@given(argvs())
def test_random_argv(argv_pairs):
    argv, pairs, extra = argv_pairs
    out_buf, err_buf = _Capture(), _Capture()
    from attnsolve.cli import run as cli_run
    code = cli_run(argv, out_buf, err_buf)
    out, err = out_buf.getvalue(), err_buf.getvalue()
    assert code in (0, 1, 2), (argv, out, err)
    event(f"exit {code}")
    assert "Traceback" not in out + err
    if code == 2:
        assert err.startswith("attnsolve: error:")
        if "--json" in argv:
            assert json.loads(out)["exit_code"] == 2
        else:
            assert out == ""
        return
    assert err == ""
    if argv[0] == "selct" or extra in (["--bogus-flag"], ["stray"], ["--gpu"]):
        raise AssertionError(f"bad input accepted: {argv}")
    want, backend = _expected(pairs, extra)
    assert code == want, (argv, out)
    if extra == ["--json"]:
        env = json.loads(out)
        assert env["exit_code"] == code
        if code == 0 or env["result"].get("startup_error"):
            assert env["result"]["selected"] == backend
    elif code == 0 and argv[0] == "select":
        assert out.split()[0] == backend


class _Capture:
    """A non-TTY text stream (like a pipe)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.encoding = "utf-8"

    def write(self, s: str) -> int:
        self.parts.append(s)
        return len(s)

    def isatty(self) -> bool:
        return False

    def getvalue(self) -> str:
        return "".join(self.parts)
