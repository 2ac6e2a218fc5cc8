"""Schema as data: a made-up platform, selection field and generic check added through rules alone.

The rule folder below is the packaged 0.17 set plus text appended to its TOML files; no Python
changes. solve(), explain(), the CLI (its --help included), the environment policy and `docs`
must all pick the additions up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attnsolve import Config, ConfigError, NoValidBackendError, explain, solve, use_rules
from attnsolve.rules import RULES_DIR, load_rules

# vLLM 0.17's facts (the made-up platform/field/check are appended to the 0.17 set): 0.17 answers what names no release.
pytestmark = pytest.mark.vllm("0.17")

ROOT = Path(__file__).resolve().parents[1]

DOMAINS_EXTRA = '''
[gpus."Ascend 910B"]
platform = "npu"
npu_gen = "910b"
[gpus."Ascend 910A"]
platform = "npu"
npu_gen = "910a"

[[generic_checks]]
key = "zigzag"
field = "use_zigzag"
form = "supports"
default = false
reason = "zigzag attention not supported"
'''

NPU_TOML = '''
[fields.npu_gen]
kind = "enum"
values = ["910a", "910b"]
category = "hardware"
platforms = ["npu"]
flags = ["--npu-gen"]
help = "Ascend NPU generation"

[fields.use_zigzag]
kind = "bool"
default = false
category = "setting"
flags = ["--use-zigzag"]
env = "VLLM_USE_ZIGZAG"
vllm = "VLLM_USE_ZIGZAG=1"
help = "zigzag ring attention"

[backends.NPU_FLASH]
platforms = ["npu"]
summary = "made-up NPU flash kernel: zigzag, 910B only"
dtypes = ["float16", "bfloat16"]
zigzag = true
checks = [{ reason = "NPU flash needs a 910B", require = { npu_gen = "910b" } }]

[backends.NPU_SDPA]
platforms = ["npu"]
summary = "made-up NPU fallback"
dtypes = ["float16", "bfloat16", "float32"]

[platforms.npu]
validate = true
no_valid_message = "No valid attention backend for npu. Reasons: {reasons}."
[[platforms.npu.lists]]
name = "npu"
entries = ["NPU_FLASH", "NPU_SDPA"]
'''


@pytest.fixture(scope="module")
def npu_rules(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("npu-rules")
    for f in RULES_DIR.glob("*.toml"):
        shutil.copy(f, root / f.name)
    domains = (root / "domains.toml").read_text()
    domains = domains.replace('platform = ["cuda", "rocm", "cpu"]', 'platform = ["cuda", "rocm", "cpu", "npu"]')
    assert '"npu"]' in domains
    (root / "domains.toml").write_text(domains + DOMAINS_EXTRA)
    (root / "npu.toml").write_text(NPU_TOML)
    load_rules(root)  # loads cleanly, structure checks included
    return root


def test_solve_and_explain_see_the_new_platform_field_and_check(npu_rules):
    with use_rules(npu_rules):
        fast = solve(Config(gpu="Ascend 910B", dtype="bf16"))
        assert fast.backend == "NPU_FLASH"
        # a hardware fact from the GPU table, platform inferred from the GPU
        cfg = Config(gpu="Ascend 910A", dtype="bf16")
        assert cfg.platform == "npu" and cfg.npu_gen == "910a"
        sel = solve(cfg)
        assert sel.backend == "NPU_SDPA"
        assert sel.rejected[0].reasons == ("NPU flash needs a 910B",)
        # the made-up generic check: NPU_SDPA does not declare zigzag (default false)
        with pytest.raises(NoValidBackendError) as err:
            solve(Config(gpu="Ascend 910A", dtype="bf16", use_zigzag=True))
        assert "zigzag attention not supported" in str(err.value)
        exp = explain(Config(gpu="Ascend 910A", dtype="bf16", use_zigzag=True))
        assert exp.selected is None
        assert any("zigzag attention not supported" in v.reasons for v in exp.candidates)
        assert any(f.changes.get("npu_gen") == "910b" or f.changes.get("use_zigzag") is False
                   for f in exp.fixes)
        # the field's platform is an invariant; its values are checked with the accepted ones
        with pytest.raises(ConfigError, match="npu_gen"):
            Config(gpu="H100", dtype="bf16", npu_gen="910b")
        with pytest.raises(ConfigError, match="910c"):
            Config(platform="npu", dtype="bf16", npu_gen="910c")
        # a hardware field alone names its platform
        assert Config(npu_gen="910b", dtype="bf16").platform == "npu"


def _cli(rules: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "ATTNSOLVE_RULES": str(rules), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "attnsolve", *args], capture_output=True, text=True, env=full,
                          cwd=ROOT, timeout=120)


def test_cli_flags_help_and_environment_come_from_the_rules(npu_rules):
    help_text = _cli(npu_rules, "select", "--help").stdout
    assert "--npu-gen" in help_text and "--use-zigzag" in help_text and "zigzag ring attention" in help_text
    ok = _cli(npu_rules, "select", "--gpu", "Ascend 910B", "--dtype", "bf16")
    assert ok.returncode == 0 and ok.stdout.startswith("NPU_FLASH"), ok.stderr
    bad = _cli(npu_rules, "select", "--gpu", "Ascend 910B", "--dtype", "bf16", "--use-zigzag", "--npu-gen", "910a")
    assert bad.returncode == 2 and "910b" in bad.stderr  # the GPU says 910b: a contradiction is bad input
    no = _cli(npu_rules, "select", "--gpu", "Ascend 910A", "--dtype", "bf16", "--use-zigzag")
    assert no.returncode == 1 and "zigzag attention not supported" in no.stdout
    via_env = _cli(npu_rules, "select", "--gpu", "Ascend 910A", "--dtype", "bf16", env={"VLLM_USE_ZIGZAG": "1"})
    assert via_env.returncode == 1 and "VLLM_USE_ZIGZAG" in via_env.stdout
    typo = _cli(npu_rules, "select", "--gpu", "Ascend 910A", "--dtype", "bf16", "--npu-gen", "910")
    assert typo.returncode == 2 and "Traceback" not in typo.stderr and "910a" in typo.stderr


def test_docs_pick_up_the_new_backends(npu_rules, tmp_path):
    out = _cli(npu_rules, "docs", "--output", str(tmp_path / "backends.md"))
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "backends.md").read_text()
    assert "NPU_FLASH" in text and "NPU_SDPA" in text and "npu" in text.lower()
