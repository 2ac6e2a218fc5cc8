"""Regression tests for issue #15 (API, CLI and rules-loader hardening): every reproducer is a test.

Hostile input gets the documented error (ConfigError / RulesError; CLI exit 2 naming where the bad
value came from), quickly, and never a bare ValueError/TypeError, a hang, or exit 3.
See docs/reliability.md for the promises these check.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from attnsolve import (ANY, Config, ConfigError, RulesError, coverage_report, explain, possible_backends,
                       selection_table, solve, sweep)
from attnsolve import cli
from attnsolve.cli_guards import DEFAULT_MAX_CELLS, PROGRESS_CELLS, progress
from attnsolve.exitcodes import DOCUMENTED, ExitCode
from attnsolve.modelconfig import read_model_config
from attnsolve.rules import RULES_DIR, load_rules
from attnsolve.rules.schema import KEYS, RULE_INT_MAX

# vLLM 0.17's facts (reproducers written against the 0.17 set): 0.17 answers what names no release.
pytestmark = pytest.mark.vllm("0.17")

ROOT = Path(__file__).resolve().parent.parent
H100 = dict(gpu="H100", dtype="bfloat16")
INT_FIELDS = ("head_size", "block_size", "num_heads", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
              "index_topk", "flash_attn_version", "compute_capability")
HUGE_INT = 10 ** 5000            # more than 4,300 digits: int <-> str conversion raises ValueError
HUGE_DIGITS = "9" * 5000


@contextlib.contextmanager
def time_limit(seconds: int = 10) -> Iterator[None]:
    """A hang becomes a failure (SIGALRM; pytest runs tests on the main thread)."""
    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = dict(os.environ)
    try:
        if env:
            os.environ.update(env)
        code = cli.run(list(argv), out, err)
    finally:
        os.environ.clear()
        os.environ.update(old)
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------------------------
# API: integers, digit strings, argument types
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", INT_FIELDS)
@pytest.mark.parametrize("value", ["²", "٣²", HUGE_DIGITS, HUGE_INT, -HUGE_INT, "1" + "0" * 40],
                         ids=["superscript", "arabic-superscript", "5000-digit-str", "5000-digit-int", "neg-5000-digit-int",
                              "41-digit-str"])
def test_every_integer_field_refuses_hostile_numbers_with_config_error(field, value):
    with pytest.raises(ConfigError) as info:
        Config(platform="cuda", dtype="bfloat16", **({"compute_capability": "9.0"} if field != "compute_capability" else {}),
               **{field: value})
    assert info.value.field == field
    assert len(str(info.value)) < 2000  # the message is built (no 4,300-digit repr) and short


def test_int_fields_accept_what_int_accepts():
    assert Config(**H100, head_size=" 1_28 ").head_size == 128
    assert Config(**H100, num_heads="+8").num_heads == 8


def test_from_env_digit_strings_are_checked_like_int():
    """VLLM_BATCH_INVARIANT is read with int() (vLLM 0.33): "²" fails there as in vLLM, Arabic-Indic digits pass."""
    with pytest.raises(ConfigError) as info:
        Config.from_env({"VLLM_BATCH_INVARIANT": "²"}, **H100, vllm="0.33")
    assert info.value.field == "use_batch_invariant" and str(info.value).startswith("ValueError: invalid literal for int()")
    assert Config.from_env({"VLLM_BATCH_INVARIANT": "\u0661"}, **H100, vllm="0.33").use_batch_invariant is True
    assert Config.from_env({"VLLM_BATCH_INVARIANT": " 0 "}, **H100, vllm="0.33").use_batch_invariant is False


def test_a_compute_capability_alone_implies_cuda():
    assert Config(compute_capability="9.0", dtype="bfloat16").platform == "cuda"
    assert Config(rocm_arch="gfx942", dtype="bfloat16").platform == "rocm"


CFG = Config(**H100, vllm="0.17")


@pytest.mark.parametrize("call", [
    lambda: solve([1]), lambda: solve(None), lambda: possible_backends(None), lambda: explain("H100"),
    lambda: selection_table(5), lambda: sweep({"gpu": "H100"}), lambda: coverage_report(5),
    lambda: solve(CFG, available=5), lambda: solve(CFG, available="FLASH_ATTN"), lambda: solve(CFG, available=[1]),
    lambda: solve(CFG, available=["FLASH_ATN"]), lambda: possible_backends(CFG, available=object()),
    lambda: explain(CFG, max_conflicts="x"), lambda: explain(CFG, max_conflicts=True), lambda: explain(CFG, max_conflicts=10**9),
    lambda: selection_table(CFG, over=5), lambda: selection_table(CFG, over=[1]), lambda: selection_table(CFG, over="head_size"),
    lambda: sweep(CFG.replace(kv_cache_dtype=ANY), available=5), lambda: coverage_report(max_patterns="x"),
    lambda: solve(CFG, role=[1]),
], ids=lambda f: "")
def test_entry_points_refuse_bad_arguments_with_config_error(call):
    with pytest.raises(ConfigError):
        call()


def test_unknown_available_name_gets_the_closest_backend():
    with pytest.raises(ConfigError) as info:
        solve(CFG, available=["FLASH_ATN"])
    assert info.value.suggestion == "FLASH_ATTN"


# ---------------------------------------------------------------------------------------------------
# model config files: regular, small, never blocking
# ---------------------------------------------------------------------------------------------------
@pytest.fixture
def odd_paths(tmp_path: Path) -> dict[str, str]:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    dangling = tmp_path / "dangling.json"
    os.symlink(tmp_path / "nowhere", dangling)
    (tmp_path / "emptydir").mkdir()
    big = tmp_path / "big.json"
    big.write_text('{"x": "' + "a" * (2 << 20) + '"}')
    digits = tmp_path / "digits.json"
    digits.write_text('{"head_dim": ' + HUGE_DIGITS + "}")
    return {"fifo": str(fifo), "dangling": str(dangling), "dir": str(tmp_path / "emptydir"), "big": str(big),
            "digits": str(digits), "zero": "/dev/zero"}


@pytest.mark.parametrize("kind", ["fifo", "dangling", "dir", "big", "digits", "zero"])
def test_model_config_odd_files_give_config_error_quickly(odd_paths, kind):
    with time_limit(10), pytest.raises(ConfigError) as info:
        read_model_config(odd_paths[kind])
    assert Path(odd_paths[kind]).name in str(info.value)


@pytest.mark.parametrize("kind", ["fifo", "dangling", "dir", "big", "digits", "zero"])
def test_cli_model_odd_files_exit_2(odd_paths, kind):
    with time_limit(10):
        code, out, err = run_cli("select", "--gpu", "H100", "--model", odd_paths[kind])
    assert code == ExitCode.BAD_INPUT, err
    assert Path(odd_paths[kind]).name in err and "internal error" not in err


def test_cli_blames_the_model_file_key_not_a_flag(tmp_path):
    model = tmp_path / "config.json"
    model.write_text(json.dumps({"kv_lora_rank": 1_000_000, "qk_rope_head_dim": 100_000}))  # head size 1,100,000
    code, _, err = run_cli("select", "--gpu", "H100", "--model", str(model))
    assert code == 2
    assert str(model) in err and "kv_lora_rank" in err and "--head-size" not in err
    model.write_text(json.dumps({"num_attention_heads": 2_000_000, "head_dim": 128}))
    code, _, err = run_cli("select", "--gpu", "H100", "--model", str(model))
    assert code == 2 and "num_attention_heads" in err and "--num-heads" not in err


def test_cli_blames_the_environment_variable_not_a_flag():
    code, out, err = run_cli("select", "--vllm", "0.33", "--gpu", "H100", "--from-env", "--json",
                             env={"VLLM_BATCH_INVARIANT": "yes"})
    assert code == 2
    assert "VLLM_BATCH_INVARIANT" in err and "--batch-invariant" not in err
    assert json.loads(out)["error"]["field"] == "env:VLLM_BATCH_INVARIANT"
    assert json.loads(out)["error"]["message"].startswith("ValueError: invalid literal for int() with base 10: 'yes'")


@pytest.mark.parametrize("argv", [
    ["select", "--gpu", "H100", "--head-size", "²"], ["select", "--gpu", "H100", "--block-size", HUGE_DIGITS],
    ["select", "--gpu", "H100", "-tp", "²"], ["select", "--gpu", "H100", "--num-heads", HUGE_DIGITS],
    ["select", "--gpu", "H100", "--flash-attn-version", "²"], ["select", "--cc", "²"],
    ["explain", "--gpu", "H100", "--qk-nope-head-dim", "-" + HUGE_DIGITS],
], ids=lambda argv: " ".join(a[:12] for a in argv))
def test_cli_hostile_numbers_exit_2(argv):
    code, _, err = run_cli(*argv)
    assert code == 2 and "internal error" not in err and err.strip()


def test_cli_hostile_env_numbers_exit_2_naming_the_variable():
    code, _, err = run_cli("select", "--vllm", "0.33", "--gpu", "H100", "--from-env", env={"VLLM_BATCH_INVARIANT": "²"})
    assert code == 2 and "VLLM_BATCH_INVARIANT" in err and "Traceback" not in err


def test_cli_compute_capability_alone_is_cuda():
    code, out, err = run_cli("select", "--compute-capability", "9.0")
    assert code == 0, err
    assert "platform" not in err


def test_cli_json_without_a_command_prints_an_envelope():
    code, out, err = run_cli("--json")
    assert code == 2
    env = json.loads(out)
    assert env["exit_code"] == 2 and env["command"] is None and env["error"]["message"]


def test_cli_matrix_on_a_rocm_gpu_is_not_an_all_na_cuda_table():
    code, out, err = run_cli("matrix", "--gpu", "MI300X")
    assert code == 0, err
    assert "CUDA" not in out and "n/a" not in out and "rocm" in out
    code, out, err = run_cli("matrix", "--gpu", "MI300X", "--over", "compute_capability")
    assert code == 2 and "compute_capability" in err


def test_cli_matrix_refuses_a_grid_above_the_cap_with_the_count():
    code, _, err = run_cli("matrix", "--gpu", "H100", "--max-cells", "10")
    assert code == 2 and "max-cells" in err
    cells = [int(w) for w in err.replace("(", " ").split() if w.isdigit()]
    assert cells and cells[0] > 10
    code, _, err = run_cli("matrix", "--gpu", "H100", "--max-cells", str(cells[0]))
    assert code == 0, err
    for bad in ("0", "x", "²", HUGE_DIGITS):
        assert run_cli("matrix", "--gpu", "H100", "--max-cells", bad)[0] == 2


def test_cli_matrix_default_cap_refuses_five_fields():
    code, _, err = run_cli("matrix", "--gpu", "H100", "--over",
                           "head_size,kv_cache_dtype,block_size,dtype,has_sink,attn_type")
    assert code == 2 and str(DEFAULT_MAX_CELLS) in err


def test_matrix_progress_reports_long_grids_only():
    stream = io.StringIO()
    assert list(progress(range(10), 10, stream)) == list(range(10)) and stream.getvalue() == ""
    assert list(progress(range(PROGRESS_CELLS), PROGRESS_CELLS, stream)) == list(range(PROGRESS_CELLS))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 9 and lines[-1].endswith(f"of {PROGRESS_CELLS} cells")


@pytest.mark.parametrize("kind", ["fifo", "dangling", "dir", "zero"])
@pytest.mark.parametrize("check", [True, False])
def test_cli_docs_output_odd_paths_exit_2(odd_paths, kind, check):
    if kind == "dangling" and not check:
        pass  # writing through a dangling link would create a file elsewhere: refused too
    with time_limit(10):
        code, _, err = run_cli("docs", *(["--check"] if check else []), "-o", odd_paths[kind])
    assert code == 2, err
    assert Path(odd_paths[kind]).name in err


def test_cli_docs_check_with_a_non_utf8_file_exits_2(tmp_path):
    p = tmp_path / "doc.md"
    p.write_bytes(b"\xff\xfe junk")
    assert run_cli("docs", "--check", "-o", str(p))[0] == 2


# ---------------------------------------------------------------------------------------------------
# exit codes
# ---------------------------------------------------------------------------------------------------
def test_exit_codes_are_named_and_documented_in_the_user_guide():
    guide = (ROOT / "docs" / "user-guide.md").read_text(encoding="utf-8")
    section = guide[guide.index("## Exit codes"):]
    section = section[: section.index("\n## ", 5)]
    for code in ExitCode:
        assert f"`{int(code)}`" in section and code.name in section, code
    assert DOCUMENTED == {0, 1, 2, 3, 130}


def test_cli_subprocess_bad_input_has_a_documented_exit_code(tmp_path):
    fifo = tmp_path / "f.json"
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, "-m", "attnsolve", "select", "--gpu", "H100", "--model", str(fifo)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == ExitCode.BAD_INPUT and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------------
# rules loader
# ---------------------------------------------------------------------------------------------------
def _rules_copy(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    for p in RULES_DIR.glob("*.toml"):
        shutil.copy(p, d / p.name)
    return d


def _load_error(d: Path) -> RulesError:
    with time_limit(20), pytest.raises(RulesError) as info:
        load_rules(d)
    for problem in info.value.problems:
        assert len(problem) == 3 and all(isinstance(x, str) and x for x in problem)
    return info.value


@pytest.mark.parametrize("kind", ["dir", "dangling", "fifo"])
def test_rules_odd_files_named_toml_give_rules_error(tmp_path, kind):
    d = _rules_copy(tmp_path)
    target = d / "extra.toml"
    {"dir": lambda: target.mkdir(), "dangling": lambda: os.symlink(d / "nowhere", target),
     "fifo": lambda: os.mkfifo(target)}[kind]()
    err = _load_error(d)
    assert err.problems[0][0] == "extra.toml"


BACKEND = '\n[backends.ZZ_EXTRA]\nplatforms = ["cuda"]\nexplicit_only = true\n'
LOADER_CASES = {
    # name: (text appended to cuda.toml, key path expected in the problem)
    "eq list": (BACKEND + 'checks = [{ reason = "r", require = { head_size = { eq = [1, 2] } } }]\n',
                "backends.ZZ_EXTRA.checks[0].require.head_size.eq"),
    "string block sizes": (BACKEND + 'kernel_block_sizes = ["16", "32"]\n', "backends.ZZ_EXTRA.kernel_block_sizes"),
    "string block size literal": (BACKEND + 'checks = [{ reason = "r", require = { block_size = "16" } }]\n',
                                  "backends.ZZ_EXTRA.checks[0].require.block_size"),
    "stray brace": (BACKEND + 'checks = [{ reason = "bad { brace", require = { head_size = 64 } }]\n',
                    "backends.ZZ_EXTRA.checks[0].reason"),
    "unknown placeholder": (BACKEND + 'checks = [{ reason = "bad {hed_size}", require = { head_size = 64 } }]\n',
                            "backends.ZZ_EXTRA.checks[0].reason"),
    "head sizes big": (BACKEND + 'head_sizes = "big"\n', "backends.ZZ_EXTRA.head_sizes"),
    "unknown key": (BACKEND + 'head_size = [64]\n', "backends.ZZ_EXTRA.head_size"),
    "unknown predicate key": (BACKEND + 'head_sizes = { mni = 3 }\n', "backends.ZZ_EXTRA.head_sizes.mni"),
    "parent list": (BACKEND + 'parent = ["FLASH_ATTN"]\n', "backends.ZZ_EXTRA.parent"),
    "variants 5": (BACKEND + 'variants = 5\n', "backends.ZZ_EXTRA.variants"),
    "huge range": (BACKEND + 'head_sizes = { multiple_of = 8, max = 1000000000 }\n', "backends.ZZ_EXTRA.head_sizes.max"),
    "bool role": (BACKEND + 'role = true\n', "backends.ZZ_EXTRA.role"),
    "sink string": (BACKEND + 'sink = "yes"\n', "backends.ZZ_EXTRA.sink"),
}
IN_PLACE = {  # name: (file, text, replacement, key path)
    "validate no": ("cuda.toml", "validate = true", 'validate = "no"', "platforms.cuda.validate"),
    "manual typo": ("cpu.toml", 'manual = "ignore"', 'manual = "ignor"', "platforms.cpu.lists[0].manual"),
    # found by the nightly fuzz: a priority list with no entries loaded and crashed explain's sweep
    "empty entries": ("cuda.toml", 'entries = ["FLASHINFER", "FLASH_ATTN", "TRITON_ATTN", "FLEX_ATTENTION"]',
                      "entries = []", "platforms.cuda.lists[0]"),  # "a list needs entries (or an error ...)"
    "warn_unvalidated string": ("cpu.toml", "warn_unvalidated = true", 'warn_unvalidated = "true"',
                                "platforms.cpu.warn_unvalidated"),
}


@pytest.mark.parametrize("case", sorted(LOADER_CASES))
def test_rules_loader_refuses_malformed_keys_naming_file_and_key(tmp_path, case):
    text, key = LOADER_CASES[case]
    d = _rules_copy(tmp_path)
    (d / "zz_extra.toml").write_text(text)
    err = _load_error(d)
    assert ("zz_extra.toml", key) in {(f, loc) for f, loc, _ in err.problems}, err.problems


@pytest.mark.parametrize("case", sorted(IN_PLACE))
def test_rules_loader_refuses_malformed_settings_naming_file_and_key(tmp_path, case):
    name, old, new, key = IN_PLACE[case]
    d = _rules_copy(tmp_path)
    text = (d / name).read_text()
    assert old in text
    (d / name).write_text(text.replace(old, new, 1))
    err = _load_error(d)
    assert (name, key) in {(f, loc) for f, loc, _ in err.problems}, err.problems


def test_rules_unknown_key_names_the_closest_known_key(tmp_path):
    d = _rules_copy(tmp_path)
    (d / "zz_extra.toml").write_text(BACKEND + 'head_size = [64]\n')
    assert "did you mean 'head_sizes'" in str(_load_error(d))


def test_rules_deep_parent_chain_names_file_and_key(tmp_path):
    d = _rules_copy(tmp_path)
    chain = "".join(f'\n[backends.C{i}]\nparent = "C{i - 1}"\n' for i in range(1, 2000))
    (d / "chain.toml").write_text('[backends.C0]\nplatforms = ["cuda"]\nexplicit_only = true\n' + chain)
    err = _load_error(d)
    assert ("chain.toml", "backends.C1999.parent") in {(f, loc) for f, loc, _ in err.problems}


def test_rules_numbers_are_bounded_so_explain_stays_small(tmp_path):
    d = _rules_copy(tmp_path)
    (d / "zz_extra.toml").write_text(BACKEND + f'head_sizes = {{ multiple_of = 8, max = {RULE_INT_MAX + 1} }}\n')
    _load_error(d)
    (d / "zz_extra.toml").write_text(BACKEND + f'head_sizes = {{ multiple_of = 8, max = {RULE_INT_MAX} }}\n')
    rules = load_rules(d)
    from attnsolve.rules import use_rules
    with use_rules(rules), time_limit(60):
        explain(Config(platform="cuda", compute_capability="9.0", dtype="bfloat16", head_size=ANY,
                       backend="ZZ_EXTRA"))


def test_rules_not_a_directory_gives_rules_error(tmp_path):
    with pytest.raises(RulesError):
        load_rules(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RulesError):
        load_rules(tmp_path / "file")


def test_every_packaged_key_is_in_the_one_table():
    from strategies import packaged_docs
    docs = packaged_docs()
    used = {k for doc in docs.values() for b in doc.get("backends", {}).values() for k in b}
    assert used <= set(KEYS["backend"])


@pytest.mark.parametrize("path", [5, b"/tmp", "/dev/zero", "bad\x00path"], ids=["int", "bytes", "device", "nul"])
def test_load_rules_with_a_bad_path_gives_rules_error(path):
    with pytest.raises(RulesError):
        load_rules(path)


def test_rules_env_pointing_at_a_bad_folder_exits_2(tmp_path):
    os.mkfifo(tmp_path / "domains.toml")
    r = subprocess.run([sys.executable, "-m", "attnsolve", "select", "--gpu", "H100"], capture_output=True, text=True,
                       timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "ATTNSOLVE_RULES": str(tmp_path)})
    assert r.returncode == ExitCode.BAD_INPUT and "domains.toml" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("environ", [5, ["VLLM_ROCM_USE_AITER"], "x"])
def test_from_env_refuses_a_non_mapping(environ):
    with pytest.raises(ConfigError):
        Config.from_env(environ, gpu="H100", dtype="bfloat16")


def test_an_empty_priority_list_table_is_refused(tmp_path):
    """Nightly fuzz reproducer: [[platforms.cuda.lists]] replaced by {} loaded, then explain crashed."""
    d = _rules_copy(tmp_path)
    (d / "zz_extra.toml").write_text("[[platforms.cuda.lists]]\n")
    err = _load_error(d)
    assert ("zz_extra.toml", "platforms.cuda.lists[0]") in {(f, loc) for f, loc, _ in err.problems}
