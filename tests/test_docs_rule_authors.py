"""The worked examples of docs/rule-authors.md, performed on a copy of the rules.

vLLM v0.17.0 made two changes the packaged (v0.16/seed-era) rules do not have: FlashAttention 4
as the default FLASH_ATTN version on SM 10.x (no fp8 KV cache, no sinks), and head size 80 for
ROCM_ATTN. Each is a rules edit only; no Python changes. The edits below are the ones the guide
shows, applied as text so that a change to the packaged rules that breaks the guide fails here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attnsolve import Config, InvalidBackendError, RulesError, load_rules, solve, use_rules
from attnsolve.cli import main
from attnsolve.docs import generate_doc, iter_cells
from attnsolve.rules import RULES_DIR

# (file, old text, new text): exactly the edits printed in docs/rule-authors.md
FA4_EDITS = [
    ("domains.toml", "flash_attn_version = [2, 3]", "flash_attn_version = [2, 3, 4]"),
    ("cuda.toml", "values = [0, 2, 3]\ncases = [\n",
     "values = [0, 2, 3, 4]\ncases = [\n"
     "  { when = { flash_attn_version = 4, compute_capability = { min = \"10.0\" } }, value = 4 },\n"
     "  { when = { flash_attn_version = 4 }, value = 2, warning = \"FA version 4 needs SM 10.0 or newer; "
     "defaulting to FA version 2.\" },\n"),
    ("cuda.toml", "  { value = 2 },\n]",
     "  { when = { compute_capability = { major_in = [10] } }, value = 4 },\n  { value = 2 },\n]"),
    ("cuda.toml", "[backends.FLASH_ATTN.variants.FA2]\nvalues = [2, 0]",
     "[backends.FLASH_ATTN.variants.FA2]\nvalues = [2, 0]\n[backends.FLASH_ATTN.variants.FA4]\nvalues = [4]"),
    ("mla.toml", "[backends.FLASH_ATTN_PREFILL.variants.FA2]\nvalues = [2]",
     "[backends.FLASH_ATTN_PREFILL.variants.FA2]\nvalues = [2]\n[backends.FLASH_ATTN_PREFILL.variants.FA4]\nvalues = [4]"),
]
ROCM_HEAD_80 = [
    ("rocm.toml", "head_sizes = [32, 64, 96, 128, 160, 192, 224, 256]\nattn_types = [\"decoder\"]\n\n[backends.ROCM_AITER_FA]",
     "head_sizes = [32, 64, 80, 96, 128, 160, 192, 224, 256]\nattn_types = [\"decoder\"]\n\n[backends.ROCM_AITER_FA]"),
]


def _copy_with(tmp_path: Path, edits) -> Path:
    dst = tmp_path / "rules"
    shutil.copytree(RULES_DIR, dst, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for fname, old, new in edits:
        f = dst / fname
        text = f.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{fname}: the guide's edit no longer applies: {old!r}"
        f.write_text(text.replace(old, new), encoding="utf-8")
    return dst


def test_fa4_on_sm10(tmp_path, capsys):
    rules_dir = _copy_with(tmp_path, FA4_EDITS)
    b200 = dict(gpu="B200", dtype="bfloat16", head_size=128)
    assert solve(Config(**b200, backend="FLASH_ATTN")).variant == "FA2"  # the packaged (v0.16) rules
    with use_rules(rules_dir):
        assert solve(Config(**b200, backend="FLASH_ATTN")).variant == "FA4"
        assert solve(Config(gpu="H100", dtype="bfloat16")).variant == "FA3"  # Hopper unchanged
        with pytest.raises(InvalidBackendError) as info:
            solve(Config(**b200, backend="FLASH_ATTN", kv_cache_dtype="fp8"))
        assert "kv_cache_dtype not supported" in info.value.reasons["FLASH_ATTN"]
        sel = solve(Config(gpu="H100", dtype="bfloat16", backend="FLASH_ATTN", flash_attn_version=4))
        assert sel.variant == "FA2" and any("FA version 4" in w for w in sel.warnings)
        # the CLI accepts the new value and the generated doc grows an FA4 row
        assert main(["select", "--gpu", "B200", "--attention-backend", "FLASH_ATTN", "--flash-attn-version", "4"]) == 0
        assert capsys.readouterr().out.startswith("FLASH_ATTN (FA4)")
        rows = {(r[0], r[1]): r for r in iter_cells(generate_doc(), "Standard Attention (MHA, MQA, GQA) Backends")}
        fa4 = rows[("`FLASH_ATTN`", "FA4*")]
        assert fa4[3] == "`auto`, `bfloat16`" and fa4[6] == "\u274c" and fa4[-1] == "10.x-12.x"  # explicit FA4 on SM >= 10.0
    assert solve(Config(**b200, backend="FLASH_ATTN")).variant == "FA2"  # restored after the block


def test_rocm_attn_head_80(tmp_path):
    rules_dir = _copy_with(tmp_path, ROCM_HEAD_80)
    before = {r[0]: r for r in iter_cells(generate_doc(), "Standard Attention (MHA, MQA, GQA) Backends")}
    assert "80" not in before["`ROCM_ATTN`"][5].split(", ")
    with use_rules(rules_dir):
        after = {r[0]: r for r in iter_cells(generate_doc(), "Standard Attention (MHA, MQA, GQA) Backends")}
        assert "80" in after["`ROCM_ATTN`"][5].split(", ")
        assert "80" in after["`ROCM_AITER_UNIFIED_ATTN`"][5].split(", ")  # inherited


def test_a_broken_edit_is_reported_with_file_and_key(tmp_path):
    """Forgetting the prefill variant is caught at load time, naming file, backend and the missing value."""
    rules_dir = _copy_with(tmp_path, FA4_EDITS[:4])
    with pytest.raises(RulesError) as info:
        load_rules(rules_dir)
    text = str(info.value)
    assert "mla.toml" in text and "FLASH_ATTN_PREFILL" in text and "[4]" in text
