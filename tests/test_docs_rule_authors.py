"""The worked examples of docs/rule-authors.md, performed on a copy of the rules.

The packaged rules are vLLM 0.17.0's. The guide shows two edits a later release needs: the CUDA
selector keeping the block size (one platform key less) and a new head size (one list entry).
Each is a rules edit only; no Python changes. The edits below are the ones the guide shows,
applied as text so that a change to the packaged rules that breaks the guide fails here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attnsolve import Config, NoValidBackendError, RulesError, load_rules, solve, use_rules
from attnsolve.cli import main
from attnsolve.docs import generate_doc, iter_cells
from attnsolve.rules import RULES_DIR

# vLLM 0.17's facts (the guide's worked examples edit a copy of the 0.17 set): 0.17 answers what names no release.
pytestmark = pytest.mark.vllm("0.17")

# (file, old text, new text): exactly the edits printed in docs/rule-authors.md
KEEP_BLOCK_SIZE = [("cuda.toml", 'drops = ["block_size"]\n', "")]
HEAD_96 = [("rocm.toml", "kernel_block_sizes = [16, 32]\nhead_sizes = [64, 128, 256]",
            "kernel_block_sizes = [16, 32]\nhead_sizes = [64, 96, 128, 256]")]
TYPO = [("cuda.toml", 'drops = ["block_size"]', 'drop = ["block_size"]')]


def _copy_with(tmp_path: Path, edits) -> Path:
    dst = tmp_path / "rules"
    shutil.copytree(RULES_DIR, dst, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for fname, old, new in edits:
        f = dst / fname
        text = f.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{fname}: the guide's edit no longer applies: {old!r}"
        f.write_text(text.replace(old, new), encoding="utf-8")
    return dst


def test_selection_keeps_the_block_size(tmp_path, capsys):
    rules_dir = _copy_with(tmp_path, KEEP_BLOCK_SIZE)
    h100 = dict(gpu="H100", dtype="bfloat16", use_mla=True, kv_cache_dtype="fp8", block_size=16)
    assert solve(Config(**h100)).backend == "FLASHMLA"  # the packaged (0.17) rules: block size dropped
    with use_rules(rules_dir):
        with pytest.raises(NoValidBackendError) as info:
            solve(Config(**h100))
        assert info.value.reasons["FLASHMLA"] == ("block_size not supported",)
        assert "block_size=16" in str(info.value)  # the selector now sees it
        assert main(["select", "--gpu", "H100", "--use-mla", "--kv-cache-dtype", "fp8", "--block-size", "16"]) == 1
        out = capsys.readouterr().out
        assert "FLASHMLA         block_size not supported" in out
        assert solve(Config(**{**h100, "block_size": 64})).backend == "FLASHMLA"
    assert solve(Config(**h100)).backend == "FLASHMLA"  # restored after the block


def test_new_head_size(tmp_path):
    rules_dir = _copy_with(tmp_path, HEAD_96)
    before = {r[0]: r for r in iter_cells(generate_doc(), "Standard Attention (MHA, MQA, GQA) Backends")}
    assert "96" not in before["`ROCM_AITER_FA`"][5].split(", ")
    with use_rules(rules_dir):
        after = {r[0]: r for r in iter_cells(generate_doc(), "Standard Attention (MHA, MQA, GQA) Backends")}
        assert "96" in after["`ROCM_AITER_FA`"][5].split(", ")


def test_a_broken_edit_is_reported_with_file_and_key(tmp_path):
    """A typo in a platform key is caught at load time, naming file, key and the accepted keys."""
    rules_dir = _copy_with(tmp_path, TYPO)
    with pytest.raises(RulesError) as info:
        load_rules(rules_dir)
    text = str(info.value)
    assert "cuda.toml" in text and "platforms.cuda.drop" in text and "drops" in text
