"""Every question is answered from the rules of the release it names: backend names accepted in
`available=`, the values `matrix --over` enumerates. (Regressions: both used the default release.)"""

from __future__ import annotations

import json

import pytest

from attnsolve import Config, solve
from attnsolve.cli import main
from attnsolve.errors import ConfigError
from attnsolve.rules import rules_for
from attnsolve.versions import vllm_versions


@pytest.mark.parametrize("version", vllm_versions())
def test_available_accepts_every_backend_of_the_release(version):
    rules = rules_for(version)
    cfg = Config(vllm=version, platform="cpu", dtype="bfloat16", head_size=128)
    sel = solve(cfg, available=set(rules.backends))
    assert sel.backend in rules.backends
    others = {n for v in vllm_versions() for n in rules_for(v).backends} - set(rules.backends)
    for name in sorted(others)[:3]:
        with pytest.raises(ConfigError) as e:
            solve(cfg, available={name})
        assert e.value.field == "available"


@pytest.mark.parametrize("version", vllm_versions())
def test_matrix_enumerates_the_release_domain(version, capsys):
    code = main(["--json", "matrix", "--vllm", version, "--gpu", "H100", "--over", "kv_cache_dtype"])
    res = json.loads(capsys.readouterr().out)["result"]
    assert code == 0
    shown = [r["values"]["kv_cache_dtype"] for r in res["rows"]]
    assert shown == list(rules_for(version).domains["kv_cache_dtype"])
