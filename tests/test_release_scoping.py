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


def test_sweep_reads_the_release_declared_fields():
    """sweep() folded only the common fields' clause bits: on 0.33 (whose checks read declared fields such
    as use_non_causal) every row came out 'no backend'. Rows must be what solve() selects."""
    from attnsolve import ANY, possible_backends
    from attnsolve.selection import solve_uncached
    from attnsolve.sweep import sweep
    cfg = Config(vllm="0.33", platform="cuda", dtype="bfloat16", compute_capability="9.0", head_size=128,
                 kv_cache_dtype=ANY)
    rows = list(sweep(cfg))
    assert rows and "FLASH_ATTN" in possible_backends(cfg)
    for assignment, backend in rows:
        try:
            want = solve_uncached(cfg.replace(**assignment), "decode", None).backend
        except Exception:  # noqa: BLE001 - a failing selection is no backend
            want = None
        assert backend == want, assignment
