"""Patch releases: vLLM 0.18.1 has its own rule set (AttentionConfig.use_trtllm_ragged_deepseek_prefill went back
to True in config/attention.py), the other patch releases (0.17.1, 0.19.1, 0.20.1, 0.20.2, 0.22.1, 0.25.1, 0.27.1)
are answered by their minor's set, which lists them in `patch_releases` after their wheels were compared
(docs/fidelity.md, "Patch releases"). Also: `upgrade` answers each release at its own defaults.
"""

from __future__ import annotations

import argparse

import pytest

from attnsolve import Config, ConfigError
from attnsolve.docs_prefill import prefill_rows
from attnsolve.query import release_note
from attnsolve.rules import parse_version, release_for, rules_for, versions
from attnsolve.rules.labels import minor_of, release_key
from attnsolve.rules.sets import info, packaged_sets
from attnsolve.versions import compare_versions, in_release

from release_facts import answer as _answer

# B200, DeepSeek R1 dims: the MLA layer whose prefill TRT-LLM ragged serves when it is on
R1_B200 = dict(gpu="B200", dtype="bfloat16", use_mla=True, head_size=576, qk_nope_head_dim=128, qk_rope_head_dim=64,
               v_head_dim=128)


@pytest.mark.parametrize("text, label", [
    ("0.18", "0.18"), ("0.18.0", "0.18"), ("v0.18.1", "0.18.1"), ("0.18.1rc0", "0.18.1"), ("0.18.1.post1", "0.18.1"),
    ("0.20.2", "0.20.2"), ("0.33.0rc1", "0.33"), ("0.21.0-1", "0.21"), ("x", None), (18, None),
])
def test_a_patch_release_keeps_its_patch(text: object, label: str | None) -> None:
    assert parse_version(text) == label


@pytest.mark.parametrize("text, packaged", [
    ("0.18", "0.18"), ("0.18.0", "0.18"), ("0.18.1", "0.18.1"), ("0.18.2", "0.18.1"), ("0.20.2", "0.20"),
    ("0.17.1", "0.17"), ("0.15.0", None), ("0.99.1", None), ("nonsense", None),
])
def test_a_patch_release_without_its_own_set_is_answered_by_the_newest_set_of_its_minor(
        text: str, packaged: str | None) -> None:
    assert release_for(text) == packaged


def test_config_takes_patch_spellings_and_refuses_an_unknown_minor() -> None:
    assert Config(vllm="0.18.1", gpu="H100", dtype="bfloat16").vllm == "0.18.1"
    assert Config(vllm="0.20.2", gpu="H100", dtype="bfloat16").vllm == "0.20"
    with pytest.raises(ConfigError) as e:
        Config(vllm="0.15.1", gpu="H100", dtype="bfloat16")
    assert e.value.field == "vllm" and "a patch release such as 0.20.2" in str(e.value)


def test_release_labels_sort_as_releases() -> None:
    labels = versions()
    assert list(labels) == sorted(labels, key=release_key)
    assert labels.index("0.18") + 1 == labels.index("0.18.1") and labels.index("0.18.1") + 1 == labels.index("0.19")


def test_every_patch_release_listed_is_its_minors_and_has_no_set_of_its_own() -> None:
    listed: dict[str, str] = {}
    for s in packaged_sets():
        for p in rules_for(s.version).settings.get("patch_releases") or ():
            assert parse_version(p) == p and p.count(".") == 2, p
            assert minor_of(p) == minor_of(s.version) and release_key(p) > release_key(s.version), (s.version, p)
            assert p not in versions(), f"{p} has its own rule set and is listed by {s.version}"
            assert release_for(p) == s.version
            assert p not in listed, f"{p} listed by {listed.get(p)} and {s.version}"
            listed[p] = s.version
    assert {"0.17.1", "0.19.1", "0.20.1", "0.20.2", "0.22.1", "0.25.1", "0.27.1"} <= set(listed)


def test_a_patch_set_edits_its_minor_and_does_not_inherit_the_minors_patch_list() -> None:
    for s in packaged_sets():
        if s.key[2]:
            assert f"base = \"{minor_of(s.version)}\"" in (s.path / "ruleset.toml").read_text()
            assert not rules_for(s.version).settings.get("patch_releases")
    assert rules_for("0.20").settings.get("patch_releases") == ("0.20.1", "0.20.2")
    assert not rules_for("0.18").settings.get("patch_releases")  # 0.19's list is 0.19's own
    assert info("0.18.1").path.name == "vllm-0.18.1"


# config/attention.py AttentionConfig.use_trtllm_ragged_deepseek_prefill: 0.17.0 True, 0.18.0 False, 0.18.1 True,
# 0.19.0 False; MLACommonImpl.__init__ prefills with TRT-LLM ragged when it holds (SM 10.x, R1 dims)
@pytest.mark.parametrize("vllm, want", [
    ("0.17", "TRTLLM_RAGGED_DEEPSEEK"), ("0.18", "FLASH_ATTN_PREFILL"), ("0.18.0", "FLASH_ATTN_PREFILL"),
    ("0.18.1", "TRTLLM_RAGGED_DEEPSEEK"), ("0.19", "FLASH_ATTN_PREFILL"),
])
def test_trtllm_ragged_prefill_default_per_release(vllm: str, want: str) -> None:
    assert _answer("mla_prefill", vllm=vllm, **R1_B200)[0] == want
    assert _answer("mla_prefill", vllm=vllm, use_trtllm_ragged_deepseek_prefill=False, **R1_B200)[0] != \
        "TRTLLM_RAGGED_DEEPSEEK"


def test_0_18_1_answers_decode_as_0_18_does() -> None:
    for kw in (dict(gpu="H100", dtype="bfloat16", head_size=128), dict(R1_B200), dict(gpu="MI300X", dtype="bfloat16"),
               dict(platform="cpu", dtype="bfloat16", head_size=128)):
        assert _answer(vllm="0.18.1", **kw) == _answer(vllm="0.18", **kw), kw


def test_upgrade_answers_each_release_at_its_own_defaults() -> None:
    cfg = Config(vllm="0.18", **R1_B200)  # the switch at 0.18's default (off)
    cmp = compare_versions(cfg, "0.17", "0.18", role="mla_prefill")
    assert (cmp.old.backend, cmp.new.backend) == ("TRTLLM_RAGGED_DEEPSEEK", "FLASH_ATTN_PREFILL")
    assert any(w.startswith("use_trtllm_ragged_deepseek_prefill defaults to false in vLLM 0.18 (was true") for w in cmp.why)
    up = compare_versions(cfg, "0.18", "0.18.1", role="mla_prefill")
    assert (up.old.backend, up.new.backend) == ("FLASH_ATTN_PREFILL", "TRTLLM_RAGGED_DEEPSEEK")
    assert not any(" ranks " in w for w in up.why)  # the order is the same: a default moved
    # a value the user set holds in both releases
    kept = compare_versions(cfg, "0.17", "0.18", role="mla_prefill", keep=("use_trtllm_ragged_deepseek_prefill",))
    assert kept.old.backend != "TRTLLM_RAGGED_DEEPSEEK"
    assert in_release(cfg, "0.18") is cfg


def test_upgrade_cli_names_the_default_that_moved(capsys: pytest.CaptureFixture[str]) -> None:
    from attnsolve.cli import main
    args = ["upgrade", "--from", "0.18", "--to", "0.18.1", "--gpu", "B200", "--use-mla", "true", "--role", "mla_prefill",
            "--qk-nope-head-dim", "128", "--qk-rope-head-dim", "64", "--v-head-dim", "128", "--dtype", "bfloat16",
            "--kv-cache-dtype", "auto", "--has-sink", "false", "--head-size", "576"]
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "FLASH_ATTN_PREFILL (FA4) -> TRTLLM_RAGGED_DEEPSEEK" in out
    assert "use_trtllm_ragged_deepseek_prefill defaults to true in vLLM 0.18.1 (was false" in out


@pytest.mark.parametrize("asked, note", [
    ("0.20.2", "vLLM 0.20.2: answered with the 0.20 rules (its selection code is 0.20's: checked)"),
    ("0.20.3", "vLLM 0.20.3 is not a release attnsolve has checked: answered with the 0.20 rules, the newest of vLLM 0.20"),
    ("0.20", None), ("0.20.0", None), ("0.18.1", None), (None, None), ("0.15.1", None),
])
def test_the_query_notes_what_a_patch_release_is_answered_with(asked: str | None, note: str | None) -> None:
    assert release_note(asked) == note
    if note:
        from attnsolve.query import build_query
        ns = argparse.Namespace(vllm=asked, gpu="H100", platform=None, no_env=True)
        assert note in build_query(ns).notes


def test_prefill_table_shows_each_releases_own_defaults() -> None:
    def enable(vllm: str, backend: str) -> str:
        return next(r[3] for r in prefill_rows(rules_for(vllm)) if r[0] == f"`{backend}`")
    assert enable("0.17", "TRTLLM_RAGGED_DEEPSEEK") == "Default"
    assert enable("0.18", "TRTLLM_RAGGED_DEEPSEEK") == "`-ac.use_trtllm_ragged_deepseek_prefill=1`"
    assert enable("0.18.1", "TRTLLM_RAGGED_DEEPSEEK") == "Default"
    assert enable("0.18", "FLASHINFER_PREFILL") == "`-ac.disable_flashinfer_prefill=0`"
    assert enable("0.17", "FLASHINFER_PREFILL") == "Default"


def test_the_defaults_check_reads_attention_config_and_finds_a_moved_default() -> None:
    from tools.vllm_oracle.defaults import attention_config_defaults, declared_settings, differences
    src = ("from dataclasses import field\nclass AttentionConfig:\n    backend: object = None\n"
           "    use_trtllm_ragged_deepseek_prefill: bool = False\n    disable_flashinfer_prefill: bool = True\n"
           "    extra: dict = field(default_factory=dict)\n")
    theirs = attention_config_defaults(src)
    assert theirs == {"backend": None, "use_trtllm_ragged_deepseek_prefill": False, "disable_flashinfer_prefill": True}
    assert "use_trtllm_ragged_deepseek_prefill" in declared_settings(rules_for("0.18.1"))
    assert differences(rules_for("0.18"), theirs) == []
    assert differences(rules_for("0.18.1"), theirs) == [
        "use_trtllm_ragged_deepseek_prefill: attnsolve default True, vLLM AttentionConfig."
        "use_trtllm_ragged_deepseek_prefill = False"]


@pytest.mark.parametrize("listed, problem", [
    ('["0.21.1"]', "'0.21.1' is not a patch release of vLLM 0.20"),
    ('["0.20"]', "'0.20' is not a patch release label"),
    ('["0.20.1", "0.20.1"]', "'0.20.1' is listed twice"),
    ('"0.20.1"', "must be a list of strings"),
])
def test_a_bad_patch_list_is_a_rules_error(tmp_path, listed: str, problem: str) -> None:
    import shutil
    from attnsolve.rules import RulesError, load_rules
    folder = tmp_path / "vllm-0.20"
    shutil.copytree(info("0.20").path, folder)
    text = (folder / "ruleset.toml").read_text()
    (folder / "ruleset.toml").write_text(text.replace('patch_releases = ["0.20.1", "0.20.2"]', f"patch_releases = {listed}"))
    with pytest.raises(RulesError) as e:
        load_rules(folder)
    assert problem in str(e.value)
