"""Structure of the rules: the packaged rules pass every load-time check, and broken copies fail
with a RulesError that names the file and the key (all problems collected into one report).

Every packaged release passes the checks (every_release tests); the broken copies are edits of the
0.17 files (their text is 0.17's), so the module's other tests pin 0.17.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attnsolve import RulesError, load_rules, solve, use_rules, Config
from attnsolve.rules import RULES_DIR, default_rules
from attnsolve.rules.sets import info

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.vllm("0.17")


@pytest.mark.every_release
def test_packaged_rules_pass_structure_checks(vllm_version):
    rules = load_rules(info(vllm_version).path, check_structure=True)
    assert set(rules.backends) == set(default_rules().backends)
    assert {pl.platform for pl in rules.lists} == set(rules.platforms)


def _copy(tmp_path: Path, folder: Path = RULES_DIR) -> Path:
    dst = tmp_path / "rules"
    dst.mkdir()
    for f in folder.glob("*.toml"):
        shutil.copy(f, dst / f.name)
    return dst


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}: the mutation needs updating"
    path.write_text(text.replace(old, new, 1))


def _problems(root: Path) -> tuple[tuple[str, str, str], ...]:
    with pytest.raises(RulesError) as info:
        load_rules(root, check_structure=True)
    err = info.value
    assert err.problems
    for file, loc, msg in err.problems:
        assert f"{file}: {loc}: {msg}" in str(err)
    return err.problems


def _has(problems, file: str, key: str, text: str) -> bool:
    return any(f == file and key in loc and text in msg for f, loc, msg in problems)


@pytest.mark.every_release
def test_copy_of_the_rules_loads(tmp_path, vllm_version):
    root = _copy(tmp_path, info(vllm_version).path)
    rules = load_rules(root, check_structure=True)
    assert set(rules.backends) == set(default_rules().backends)


def test_inheritance_cycle(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "cuda.toml", "[backends.FLASH_ATTN]\n", '[backends.FLASH_ATTN]\nparent = "FLASH_ATTN_DIFFKV"\n')
    problems = _problems(root)
    assert any(f == "cuda.toml" and "backends.FLASH_ATTN" in loc and "cycle" in msg for f, loc, msg in problems)


def test_dangling_parent(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "cuda.toml", 'parent = "FLASH_ATTN"', 'parent = "FLASH_ATTN_V9"')
    problems = _problems(root)
    assert _has(problems, "cuda.toml", "backends.FLASH_ATTN_DIFFKV.parent", "FLASH_ATTN_V9")


def test_list_entry_naming_no_backend(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "cuda.toml", 'entries = ["FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION"]',
          'entries = ["FLASH_ATTN", "FLASHINFER", "FLASH_ATTN4", "TRITON_ATTN", "FLEX_ATTENTION"]')
    problems = _problems(root)
    assert any("FLASH_ATTN4" in msg and "standard, other GPUs" in loc for _, loc, msg in problems)


def test_list_entry_naming_no_backend_names_the_file(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "cuda.toml", 'entries = ["FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION"]',
          'entries = ["FLASH_ATTN", "FLASHINFER", "FLASH_ATTN4", "TRITON_ATTN", "FLEX_ATTENTION"]')
    problems = _problems(root)
    assert any(f == "cuda.toml" and "FLASH_ATTN4" in msg for f, _, msg in problems)


def test_backend_in_no_list(tmp_path):
    root = _copy(tmp_path)
    with open(root / "cuda.toml", "a") as f:
        f.write('\n[backends.ORPHAN_ATTN]\nplatforms = ["cuda"]\nrole = "decode"\ndtypes = ["float16"]\n')
    problems = _problems(root)
    assert _has(problems, "cuda.toml", "backends.ORPHAN_ATTN", "none of its priority lists")


def test_explicit_only_backend_needs_no_list(tmp_path):
    root = _copy(tmp_path)
    with open(root / "cuda.toml", "a") as f:
        f.write('\n[backends.ORPHAN_ATTN]\nplatforms = ["cuda"]\nrole = "decode"\nexplicit_only = true\n'
                'dtypes = ["float16"]\n')
    rules = load_rules(root, check_structure=True)
    assert rules.backends["ORPHAN_ATTN"].explicit_only


def test_malformed_toml(tmp_path):
    root = _copy(tmp_path)
    with open(root / "mla.toml", "a") as f:
        f.write("\n[backends.BROKEN\nsink = \n")
    problems = _problems(root)
    assert any(f == "mla.toml" and "TOML" in msg for f, _, msg in problems)


@pytest.mark.parametrize(("old", "new", "key"), [
    ('head_sizes = [64, 128, 256]', 'head_size = [64, 128, 256]', "head_size"),
    ('kernel_block_sizes = [16, 32, 64]', 'block_sizes = [16, 32, 64]', "block_sizes"),
])
def test_unknown_backend_key(tmp_path, old, new, key):
    root = _copy(tmp_path)
    _edit(root / "cuda.toml", old, new)
    problems = _problems(root)
    assert _has(problems, "cuda.toml", "backends.FLASHINFER", key)


def test_unknown_field_in_a_check(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "mla.toml", "require = { qk_nope_head_dim = { eq = 128, none = true } }",
          "require = { qk_nope_dim = { eq = 128, none = true } }")
    problems = _problems(root)
    assert _has(problems, "mla.toml", "backends.FLASHINFER_MLA", "qk_nope_dim")


def test_value_outside_domain(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "cuda.toml", 'kv_cache_dtypes = ["auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2"]',
          'kv_cache_dtypes = ["auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m7"]')
    problems = _problems(root)
    assert _has(problems, "cuda.toml", "backends.FLASHINFER", "fp8_e5m7")


def test_problems_are_collected_not_stopped_at_first(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "cuda.toml", 'head_sizes = [64, 128, 256]', 'head_size = [64, 128, 256]')
    _edit(root / "mla.toml", "require = { qk_nope_head_dim = { eq = 128, none = true } }",
          "require = { qk_nope_dim = { eq = 128, none = true } }")
    problems = _problems(root)
    assert {f for f, _, _ in problems} >= {"cuda.toml", "mla.toml"}


def test_use_rules_points_the_package_at_another_folder(tmp_path):
    root = _copy(tmp_path)
    _edit(root / "cuda.toml", 'head_sizes = { min = 32 }', 'head_sizes = { min = 8 }')
    cfg = Config(platform="cuda", compute_capability="9.0", dtype="float32", head_size=16)
    assert solve(cfg).backend == "FLEX_ATTENTION"
    with use_rules(root):
        assert solve(cfg).backend == "TRITON_ATTN"
    assert solve(cfg).backend == "FLEX_ATTENTION"


NEW_BACKEND = '''
[backends.NEW_ATTN]
platforms = ["cuda"]
role = "decode"
summary = "a backend added by a test: data only"
dtypes = ["float16", "bfloat16"]
kv_cache_dtypes = ["auto", "bfloat16"]
kernel_block_sizes = [32]
head_sizes = [64, 128]
compute_capability = { min = "8.0" }
attn_types = ["decoder"]
'''


def test_a_new_backend_in_the_toml_gets_generated_tests(tmp_path):
    """Adding a backend is a rules edit: the generated per-backend tests pick it up unchanged."""
    root = _copy(tmp_path)
    _edit(root / "cuda.toml", 'entries = ["FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION"]',
          'entries = ["NEW_ATTN", "FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION"]')
    with open(root / "cuda.toml", "a") as f:
        f.write(NEW_BACKEND)
    load_rules(root, check_structure=True)
    env = {**os.environ, "ATTNSOLVE_RULES": str(root), "HYPOTHESIS_PROFILE": "ci", "ATTNSOLVE_VLLM": "0.17"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         str(ROOT / "tests" / "test_core_generated.py"), "-k", "NEW_ATTN", "-rA"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    passed = [line for line in out.stdout.splitlines() if line.startswith("PASSED") and "NEW_ATTN" in line]
    # manual acceptance, automatic reachability, and one per check that can fire
    # (head, dtype, kv, block, mm, MLA, sink, sparse, CC, type)
    assert len(passed) >= 10, out.stdout[-3000:]
    assert any("test_automatic_selection_reaches_every_listed_backend[" in line and "NEW_ATTN-cuda" in line
               for line in passed)


def test_entry_behind_a_check_free_backend_is_dead(tmp_path):
    # every MLA prefill query would stop at ANY_PREFILL: the entries after it can never be selected
    root = _copy(tmp_path)
    with open(root / "mla.toml", "a") as f:
        f.write('\n[backends.ANY_PREFILL]\nplatforms = ["cuda"]\nrole = "mla_prefill"\n')
    _edit(root / "mla.toml", 'entries = ["TRTLLM_RAGGED_DEEPSEEK", "FLASHINFER_PREFILL"',
          'entries = ["ANY_PREFILL", "TRTLLM_RAGGED_DEEPSEEK", "FLASHINFER_PREFILL"')
    problems = _problems(root)
    assert any("'TRTLLM_RAGGED_DEEPSEEK' can never be selected automatically" in msg for _, _, msg in problems)


def test_release_graph_lists_what_each_release_adds():
    from attnsolve.rules.structure import release_graph
    base = default_rules()
    smaller = load_rules(RULES_DIR)
    g = release_graph({"0.17": base, "0.16": smaller})
    assert list(g.edges) == [("0.16", "0.17")]
    assert g.edges["0.16", "0.17"]["added"] == () and g.edges["0.16", "0.17"]["removed"] == ()
