"""Several vLLM releases side by side: Config(vllm=...), vllm_versions(), compare_versions, upgrade.

A made-up release "0.15" (the 0.17 set with FlashInfer ranked first on every GPU) is registered as
a packaged set for these tests, so the comparisons have a real difference to find.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attnsolve import ANY, Config, ConfigError, compare_versions, solve, vllm_versions
from attnsolve.cli import main
from attnsolve.engine import engine_for
from attnsolve.rules import RULES_DIR, sets

# vLLM 0.17's facts (a made-up release 0.15 is the 0.17 set with one change): 0.17 answers what names no release.
pytestmark = pytest.mark.vllm("0.17")


@pytest.fixture()
def release_015(tmp_path, monkeypatch):
    folder = tmp_path / "vllm-0.15"
    folder.mkdir()
    for f in RULES_DIR.glob("*.toml"):
        shutil.copy(f, folder / f.name)
    cuda = (folder / "cuda.toml").read_text()
    old = 'entries = ["FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION"]'
    assert old in cuda
    (folder / "cuda.toml").write_text(cuda.replace(old, 'entries = ["FLASHINFER", "FLASH_ATTN", "TRITON_ATTN", "FLEX_ATTENTION"]'))
    meta = (folder / "ruleset.toml").read_text().replace('vllm = "0.17"', 'vllm = "0.15"')
    meta = meta.replace('patch_releases = ["0.17.1"]', "")  # 0.17's patch release is no 0.15 patch
    (folder / "ruleset.toml").write_text(meta)
    real = sets.packaged_sets()
    extra = sets.RuleSetInfo("0.15", folder, False)
    monkeypatch.setattr(sets, "packaged_sets", lambda: tuple(sorted((*real, extra), key=lambda s: s.key)))
    monkeypatch.setenv("ATTNSOLVE_VLLM", "0.17")
    yield "0.15"


def test_versions_are_listed_and_spelled_every_way():
    assert "0.17" in vllm_versions() and list(vllm_versions()) == sorted(vllm_versions(), key=lambda v: tuple(map(int, v.split("."))))
    for spelling in ("0.17", "0.17.0", "v0.17", "V0.17.1"):
        assert Config(gpu="H100", dtype="bf16", vllm=spelling).vllm == "0.17"
    with pytest.raises(ConfigError) as err:
        Config(gpu="H100", dtype="bf16", vllm="0.15")
    assert err.value.field == "vllm" and "0.17" in str(err.value)
    with pytest.raises(ConfigError):
        Config(gpu="H100", dtype="bf16", vllm="latest")


def test_an_unpackaged_release_suggests_the_nearest_packaged_one():
    """A well-spelled release without a rule set: the numerically nearest packaged release (the newer on a
    tie), not the most similar string (which offered 0.32 for 0.28)."""
    known = vllm_versions()
    key = lambda v: tuple(map(int, v.split(".")))  # noqa: E731
    for asked in ("0.0", "0.15", "0.26", "0.27", "0.28", "0.99", "1.0"):
        if asked in known:
            continue
        with pytest.raises(ConfigError) as err:
            Config(gpu="H100", dtype="bf16", vllm=asked)
        got = err.value.suggestion
        assert got in known, (asked, got)
        pos = lambda v: key(v)[0] * 1000 + key(v)[1]  # releases in order (minor < 1000)  # noqa: E731
        gap = lambda k: abs(pos(k) - pos(asked))  # noqa: E731
        assert all(gap(got) <= gap(k) for k in known), (asked, got)  # none nearer
        assert f"Did you mean {got!r}?" in str(err.value)
    # the release just below the oldest set after 0.17 (the edit folders grow downwards) gets that set
    oldest = min((v for v in known if key(v) > (0, 17)), key=key)
    below = f"0.{key(oldest)[1] - 1}"
    if below not in known:
        with pytest.raises(ConfigError) as err:
            Config(gpu="H100", dtype="bf16", vllm=below)
        assert err.value.suggestion == oldest


def test_two_releases_answer_side_by_side(release_015):
    a = solve(Config(gpu="H100", dtype="bf16", vllm="0.17"))
    b = solve(Config(gpu="H100", dtype="bf16", vllm="0.15"))
    assert (a.backend, b.backend) == ("FLASH_ATTN", "FLASHINFER")
    assert engine_for("0.17") is not engine_for("0.15")
    assert a.config != b.config and a.config.replace(vllm="0.15") == b.config


def test_compare_a_full_config(release_015):
    cmp = compare_versions(Config(gpu="H100", dtype="bf16"), "0.17", "0.15")
    assert cmp.differs and str(cmp.old) == "FLASH_ATTN (FA3)" and cmp.new.backend == "FLASHINFER"
    assert any("ranks FLASHINFER before FLASH_ATTN" in w for w in cmp.why)
    same = compare_versions(Config(gpu="H100", dtype="bf16"), "0.17", "v0.17.0")
    assert not same.differs and "no change" in str(same)


def test_compare_a_partial_config_groups_the_changes(release_015):
    cmp = compare_versions(Config(gpu="H100", dtype="bf16", kv_cache_dtype=ANY, head_size=ANY), "0.17", "0.15")
    assert cmp.total > 0 and 0 < cmp.changed <= cmp.total
    assert sum(c.count for c in cmp.changes) == cmp.changed
    for c in cmp.changes:  # every example really moves old -> new
        assert str(solve(c.example.replace(vllm="0.17"))) == c.old
        assert str(solve(c.example.replace(vllm="0.15"))) == c.new


def test_cli_version_flag_and_upgrade(release_015, capsys):
    assert main(["select", "--gpu", "H100", "--dtype", "bf16", "--vllm", "0.15"]) == 0
    assert capsys.readouterr().out.startswith("FLASHINFER")
    assert main(["upgrade", "--from", "0.17", "--to", "0.15", "--gpu", "H100", "--model", "examples/llama3-8b.json"]) == 0
    out = capsys.readouterr().out
    assert "FLASH_ATTN (FA3) -> FLASHINFER" in out and "why:" in out
    assert main(["upgrade", "--from", "0.17", "--to", "0.15", "--gpu", "H100"]) == 0
    assert "configurations change backend" in capsys.readouterr().out
    assert main(["select", "--gpu", "H100", "--vllm", "0.99"]) == 2
    assert "0.17" in capsys.readouterr().err


def test_default_release_is_the_newest_packaged(monkeypatch):
    """Issue #14: with no $ATTNSOLVE_VLLM the answer is for the newest release attnsolve ships
    (vLLM 0.34 since it left draft; 0.33 before), in the API and the CLI alike."""
    monkeypatch.delenv("ATTNSOLVE_VLLM", raising=False)
    newest = vllm_versions()[-1]
    assert newest == "0.34" and sets.default_version() == newest
    assert not any(s.draft for s in sets.packaged_sets())
    cfg = Config(gpu="H100", dtype="bfloat16", head_size=128)
    assert cfg.vllm == newest and solve(cfg).config.vllm == newest


def test_default_release_follows_the_environment(monkeypatch):
    monkeypatch.setenv("ATTNSOLVE_VLLM", "0.17.1")
    assert sets.default_version() == "0.17"
    assert Config(gpu="H100", dtype="bfloat16", head_size=128).vllm == "0.17"


def test_a_fact_the_old_release_takes_no_input_for_is_named_not_silently_dropped():
    """Soft-capping is an input of the 0.33 rule set only (FA4's head-256 kernel): the 0.17 answer is without it,
    and the comparison says so instead of presenting the difference as the release's alone."""
    cfg = Config(vllm="0.33", gpu="B200", dtype="bfloat16", head_size=256, has_logit_softcap=True,
                 backend="FLASH_ATTN")
    cmp = compare_versions(cfg, "0.17", "0.33")
    assert cmp.unread == (("0.17", "has_logit_softcap", True),)
    assert any("vLLM 0.17's selection does not read has_logit_softcap" in line for line in cmp.lines())
    assert not any("does not read" in line for line in cmp.lines(mention=("dtype",)))  # the CLI: typed facts only
    assert cmp.to_dict()["unread"] == [{"vllm": "0.17", "field": "has_logit_softcap", "value": True}]
    plain = compare_versions(cfg.replace(has_logit_softcap=False), "0.17", "0.33")
    assert plain.unread == () and not any("does not read" in line for line in plain.lines())  # a default says nothing
    partial = compare_versions(cfg.replace(dtype=ANY), "0.17", "0.33")
    assert partial.unread == (("0.17", "has_logit_softcap", True),)


@pytest.mark.parametrize("gpu, warning", [
    ("H100", "Cannot use FA version 3 with ALiBi, defaulting to FA version 2."),
    ("B200", "Cannot use FA version 4 with ALiBi, defaulting to FA version 2."),
])
def test_alibi_runs_flash_attention_2_on_both_releases(gpu, warning):
    """vllm/v1/attention/backends/fa_utils.py get_flash_attn_version(requires_alibi=True) (0.17 and 0.33 alike:
    FlashAttentionImpl passes alibi_slopes): FA3 / FA4 become FA2 with their line, so an ALiBi model's upgrade is
    no FA-version change; FlexAttentionImpl refuses ALiBi (flex_attention.py) on both."""
    for v in ("0.17", "0.33"):
        sel = solve(Config(vllm=v, gpu=gpu, dtype="bfloat16", head_size=128, use_alibi=True, backend="FLASH_ATTN"))
        assert sel.variant == "FA2" and warning in sel.warnings, (v, sel.variant, sel.warnings)
        flex = solve(Config(vllm=v, gpu=gpu, dtype="bfloat16", head_size=128, use_alibi=True, backend="FLEX_ATTENTION"))
        assert flex.startup_error == "FlexAttention does not support alibi slopes yet.", v
        plain = solve(Config(vllm=v, gpu=gpu, dtype="bfloat16", head_size=128, backend="FLASH_ATTN"))
        assert plain.variant != "FA2" and warning not in plain.warnings
    forced = solve(Config(vllm="0.17", gpu="A100", dtype="bfloat16", head_size=128, use_alibi=True,
                          flash_attn_version=3))  # FA3 off SM 9.x is none, but ALiBi makes it FA2 first
    assert (forced.variant, forced.startup_error) == ("FA2", None), (forced.variant, forced.startup_error)
    assert "Cannot use FA version 3 with ALiBi, defaulting to FA version 2." in forced.warnings
