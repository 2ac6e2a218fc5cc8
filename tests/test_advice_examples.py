"""Every example command in README.md and docs/user-guide.md: its text fits 80 columns and its
--json output validates against docs/attnsolve-output.schema.json; README's output and Python
snippet are what the code prints; select/explain have the same keys on success and failure."""

from __future__ import annotations

import doctest
import io
import json
import os
import re
import shlex
from pathlib import Path

import pytest

from attnsolve import vllm_versions

from attnsolve.cli import COMMANDS, run

jsonschema = pytest.importorskip("jsonschema")  # the test extra installs it (pyproject.toml)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "user-guide.md"
SCHEMA = json.loads((ROOT / "docs" / "attnsolve-output.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


# README and the user guide show the default release's answers: vLLM 0.34's (examples that name --vllm 0.17 or 0.33 keep it).
pytestmark = [pytest.mark.usefixtures("no_vllm_env"), pytest.mark.vllm("0.34")]


def _commands(path: Path) -> list[str]:
    """`$ attnsolve ...` lines of code blocks and backticked `attnsolve <verb> ...` in the prose."""
    text = path.read_text(encoding="utf-8")
    found = re.findall(r"^\$ (attnsolve .+)$", text, re.M)
    found += re.findall(r"`(attnsolve (?:%s)[^`…]*)`" % "|".join(COMMANDS), text)
    out = []
    for c in found:
        c = c.strip()
        if c == "attnsolve docs":  # would write the document: ask for it on stdout instead
            c = "attnsolve docs -o -"
        if c not in out:
            out.append(c)
    return out


EXAMPLES = sorted(set(_commands(README) + _commands(GUIDE)))


def cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        code = run(argv, out, err)
    finally:
        os.chdir(cwd)
    return code, out.getvalue(), err.getvalue()


def validate(envelope: dict) -> None:
    errors = sorted(VALIDATOR.iter_errors(envelope), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def test_examples_found():
    assert len(EXAMPLES) >= 10 and any("matrix" in c for c in EXAMPLES)


@pytest.mark.parametrize("command", EXAMPLES)
def test_example_text_fits_and_json_validates(command):
    argv = shlex.split(command)[1:]
    argv = [a for a in argv if a != "--json"]
    code, out, err = cli(argv)
    assert code in (0, 1, 2), (command, err)
    shown = err if argv[:1] == ["docs"] else out + err  # docs -o - prints the Markdown file itself
    too_wide = [line for line in shown.splitlines() if len(line) > 80]
    assert not too_wide, too_wide
    code_j, out_j, _ = cli([*argv, "--json"])
    assert code_j == code
    envelope = json.loads(out_j)
    assert envelope["exit_code"] == code
    validate(envelope)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_fits_80_columns(command):
    code, out, err = cli([command, "--help"] if command else ["--help"])
    assert code == 0
    assert all(len(line) <= 80 for line in out.splitlines()), [x for x in out.splitlines() if len(x) > 80]


@pytest.mark.parametrize("release", vllm_versions())
@pytest.mark.parametrize("command", ["select", "explain", "matrix"])
def test_every_release_flags_have_help(command, release):
    # a release's declared fields become flags; their help text is rules data (a '%' in it once broke argparse)
    code, out, err = cli([command, "--vllm", release, "--help"])
    assert code == 0 and "Traceback" not in err, err
    assert all(len(line) <= 80 for line in out.splitlines()), [x for x in out.splitlines() if len(x) > 80]


QUESTIONS = [
    ["select", "--gpu", "H100", "--model", "examples/llama3-8b.json"],
    ["select", "--gpu", "CPU", "--use-mla"],
    ["select", "--gpu", "B200", "--model", "examples/deepseek-v3.json", "--attention-backend", "flashmla"],
    ["select", "--gpu", "H100", "--model", "examples/deepseek-v3.json"],
    ["explain", "--gpu", "MI300X", "--model", "examples/llama3-8b.json"],
    ["explain", "--gpu", "A100", "--model", "examples/deepseek-v3.2.json", "--kv-cache-dtype", "fp8"],
    ["explain", "--gpu", "B200", "--model", "examples/deepseek-v3.json", "--attention-backend", "flashmla"],
    ["explain", "--gpu", "H100", "--model", "examples/deepseek-v3.json", "--kv-cache-dtype", "fp8"],
    ["explain", "--gpu", "CPU", "--model", "examples/deepseek-v3.json"],
    ["matrix", "--over", "gpu=A100,H100,B200,MI300X,CPU", "--model", "examples/gpt-oss-20b.json"],
    ["matrix", "--gpu", "H100", "--over", "block_size", "--long"],
    ["backends", "--no-runnable"],
    ["docs", "--check"],
    ["docs", "-o", "-"],
    ["select", "--gpu", "H10"],
    ["explain", "--kv-cache-dtype", "fp8"],
    ["explain", "--gpu", "A100", "--kv-cache-dtype", "ANY", "--block-size", "ANY"],
    ["explain", "--gpu", "CPU", "--use-mla", "--head-size", "ANY"],
    ["selct"],
    ["upgrade", "--from", "0.17", "--to", "0.17", "--gpu", "H100", "--model", "examples/llama3-8b.json"],
    ["upgrade", "--from", "0.17", "--to", "0.17", "--gpu", "H100"],
]


@pytest.mark.parametrize("argv", QUESTIONS, ids=lambda a: " ".join(a)[:60])
def test_every_command_output_validates(argv):
    code, out, _ = cli([*argv, "--json"])
    validate(json.loads(out))


@pytest.mark.parametrize("verb", ["select", "explain"])
def test_same_keys_on_success_and_failure(verb):
    ok = json.loads(cli([verb, "--gpu", "H100", "--model", "examples/deepseek-v3.json", "--json"])[1])
    # vLLM 0.33 (the default): no sparse MLA backend before Hopper (0.33 has CPU MLA, so a CPU no longer fails)
    fail = json.loads(cli([verb, "--gpu", "A100", "--model", "examples/deepseek-v3.2.json", "--json"])[1])
    bad_request = json.loads(cli([verb, "--gpu", "B200", "--attention-backend", "FLASHMLA", "--use-mla", "--json"])[1])
    assert ok["exit_code"] == 0 and fail["exit_code"] == 1 and bad_request["exit_code"] == 1
    assert set(ok["result"]) == set(fail["result"]) == set(bad_request["result"])
    assert isinstance(ok["result"]["rejected"], list) and isinstance(fail["result"]["rejected"], list)
    assert fail["result"]["rejected"][0] == {"backend": "FLASH_ATTN_MLA", "reasons": [
        "sparse not supported", "compute capability not supported", "FlashAttention MLA not supported on this device"]}


def _shown_blocks() -> list[tuple[str, str, list[str]]]:
    """(file, first line, output lines) of every console/text/pycon block in README and the guide:
    what the reader sees as output (prompts and Python input left out)."""
    out = []
    for path in (README, GUIDE):
        for kind, body in re.findall(r"```(console|text|pycon)\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
            lines = body.splitlines()
            if kind == "pycon":
                shown = [x for x in lines if not x.startswith((">>> ", "... ", ">>>", "..."))]
            else:
                shown = [x for x in lines if not x.startswith("$ ")]
            out.append((path.name, lines[0], shown))
    return out


SHOWN = _shown_blocks()


def test_shown_blocks_found():
    assert sum(1 for f, _, _ in SHOWN if f == "user-guide.md") >= 10 and any(f == "README.md" for f, _, _ in SHOWN)


@pytest.mark.parametrize("block", SHOWN, ids=lambda b: f"{b[0]}:{b[1][:50]}")
def test_every_shown_output_fits_80_columns(block):
    """The output the documents show (commands' text and JSON, Python's printed values)."""
    name, first, shown = block
    too_wide = [x for x in shown if len(x) > 80]
    assert not too_wide, f"{name} `{first}`: {too_wide}"


@pytest.mark.parametrize("block", [b for b in SHOWN if "--json" in b[1]], ids=lambda b: f"{b[0]}:{b[1][:50]}")
def test_every_shown_json_validates(block):
    """JSON output shown in the documents is an envelope the schema accepts."""
    _, first, shown = block
    envelope, _ = json.JSONDecoder().raw_decode("\n".join(shown))
    validate(envelope)


def test_json_sketches_parse():
    for path in (README, GUIDE):
        for body in re.findall(r"```json\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
            doc = json.loads(body)
            assert doc["schema"] == SCHEMA["properties"]["schema"].get("const", doc["schema"])


def test_readme_output_is_real():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```text\n\$ (attnsolve [^\n]+)\n(.*?)```", text, re.S)
    assert block is not None
    code, out, err = cli(shlex.split(block.group(1))[1:])
    assert out.rstrip("\n") == block.group(2).rstrip("\n")


def test_readme_python_snippet_prints_what_it_shows():
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```pycon\n(.*?)```", text, re.S)
    assert blocks
    for body in blocks:
        test = doctest.DocTestParser().get_doctest(body, {}, "README", str(README), 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert runner.failures == 0
