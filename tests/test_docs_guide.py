"""docs/user-guide.md stays true: every `console` block is re-run in-process (stdout and stderr,
as a terminal that is not a TTY shows them) and every `pycon` block is run as a doctest."""

from __future__ import annotations

import doctest
import io
import os
import re
import shlex
from pathlib import Path

import pytest

from attnsolve.cli import run

# The user guide shows the default release's answers: vLLM 0.34's (examples that name --vllm 0.17 or 0.33 keep it).
pytestmark = pytest.mark.vllm("0.34")

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "user-guide.md"
_BLOCK = re.compile(r"```(console|pycon)\n(.*?)```", re.S)


def blocks(kind: str) -> list[str]:
    return [body for k, body in _BLOCK.findall(GUIDE.read_text(encoding="utf-8")) if k == kind]


def console_output(command: str) -> str:
    """What `command` prints (stdout then stderr), run from the repository root."""
    argv = shlex.split(command)
    assert argv[0] == "attnsolve"
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        run(argv[1:], out, err)
    finally:
        os.chdir(cwd)
    return out.getvalue() + err.getvalue()


@pytest.mark.parametrize("block", blocks("console"), ids=lambda b: b.splitlines()[0][2:60])
def test_console_blocks(block):
    first, _, expected = block.partition("\n")
    assert first.startswith("$ ")
    got = console_output(first[2:])
    assert got.rstrip("\n") == expected.rstrip("\n"), f"output of `{first[2:]}` changed:\n{got}"


@pytest.mark.parametrize("block", blocks("pycon"), ids=lambda b: b.splitlines()[0][4:60])
def test_pycon_blocks(block):
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block, {}, "user-guide", str(GUIDE), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0


def refresh() -> None:
    """Rewrite the output of every console block (after a deliberate change of the CLI's text)."""
    text = GUIDE.read_text(encoding="utf-8")

    def fill(m: re.Match) -> str:
        first = m.group(2).split("\n", 1)[0]
        return "```console\n" + first + "\n" + console_output(first[2:]).rstrip("\n") + "\n```"

    GUIDE.write_text(re.sub(r"```(console)\n(.*?)```", fill, text, flags=re.S), encoding="utf-8")


if __name__ == "__main__":  # python tests/test_docs_guide.py --update
    import sys

    if sys.argv[1:] == ["--update"]:
        refresh()
