"""Platform invariants are rules data ([[invariants]]): Config validation and the CSP both follow them.

A made-up platform field and a made-up clause, added to a copy of the packaged rules with no Python
change, must be refused by Config and never built by the CSP; the packaged invariants are checked
against Config for every release.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attnsolve import ANY, Config, ConfigError, use_rules
from attnsolve.rules import RULES_DIR, RulesError, load_rules, rules_for, versions
from attnsolve.solver.csp import CSP
from attnsolve.solver.facts import base_facts

MADE_UP = '''
[[invariants]]
key = "sinks_unquantized"
when = { has_sink = true }
require = { kv_cache_dtype = ["auto", "bfloat16"] }
reason = "made up: attention sinks need an unquantized KV cache"

[[invariants]]
key = "fa_version_on_cuda"
field = "flash_attn_version"
platforms = ["cuda"]
reason = "made up: the FlashAttention version is a CUDA setting"
'''


@pytest.fixture(scope="module")
def made_up_rules(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("invariant-rules")
    for f in RULES_DIR.glob("*.toml"):
        shutil.copy(f, root / f.name)
    (root / "made_up.toml").write_text(MADE_UP)
    load_rules(root)  # loads cleanly, structure checks included
    return root


def test_config_refuses_what_a_made_up_invariant_forbids(made_up_rules):
    base = dict(gpu="H100", dtype="bfloat16", has_sink=True)
    assert Config(**base, kv_cache_dtype="fp8").kv_cache_dtype == "fp8"  # the packaged rules allow it
    with use_rules(made_up_rules):
        with pytest.raises(ConfigError) as err:
            Config(**base, kv_cache_dtype="fp8")
        assert err.value.field == "has_sink"
        assert "kv_cache_dtype" in str(err.value) and "unquantized" in str(err.value)
        assert Config(**base).kv_cache_dtype == "auto"
        assert Config(**base, kv_cache_dtype=ANY).is_partial  # a free field is not judged
        with pytest.raises(ConfigError) as err:
            Config(gpu="MI300X", dtype="bfloat16", flash_attn_version=3)
        assert err.value.field == "flash_attn_version" and "CUDA setting" in str(err.value)
        assert Config(gpu="H100", dtype="bfloat16", flash_attn_version=3).flash_attn_version == 3


def _completions(rules, config) -> list[dict]:
    csp = CSP(rules)
    facts = base_facts(config, "decode")
    return [csp.find(facts, backend=b) for b in rules.backends]


def test_the_csp_never_builds_what_a_made_up_invariant_forbids(made_up_rules):
    partial = Config(gpu="H100", dtype="bfloat16", has_sink=True, kv_cache_dtype=ANY)
    before = [s for s in _completions(rules_for("0.17"), partial) if s]
    assert any(s["kv_cache_dtype"] not in ("auto", "bfloat16") for s in before)  # fp8 completions exist
    with use_rules(made_up_rules):
        rules = load_rules(made_up_rules)
        after = [s for s in _completions(rules, partial) if s]
        assert after and all(s["kv_cache_dtype"] in ("auto", "bfloat16") for s in after)
        free = Config(platform=ANY, compute_capability=ANY, rocm_arch=ANY, dtype="bfloat16", flash_attn_version=3)
        found = [s for s in _completions(rules, free) if s]
        assert found and all(s["platform"] == "cuda" for s in found)


@pytest.mark.parametrize("version", versions())
def test_packaged_platform_fields_follow_their_invariants(version):
    rules = rules_for(version)
    placed = [i for i in rules.invariants if i.kind == "platform_field"]
    assert {i.field for i in placed} >= {"compute_capability", "rocm_arch"}
    for inv in placed:
        for platform in rules.platforms:
            gpu = next((n for n, g in rules.gpus.items() if g.get("platform") == platform), None)
            if gpu is None:
                continue
            cfg = Config(vllm=version, gpu=gpu, dtype="bfloat16")
            value = getattr(cfg, inv.field)
            if platform in inv.platforms:
                assert value is not None or not (inv.required or inv.default is not None), (gpu, inv.key)
            else:
                assert value is None, (gpu, inv.key)
                other = next(n for n, g in rules.gpus.items() if g.get("platform") in inv.platforms and inv.field in g)
                with pytest.raises(ConfigError) as err:
                    Config(vllm=version, gpu=gpu, dtype="bfloat16", **{inv.field: rules.gpus[other][inv.field]})
                assert err.value.field == inv.field
        if inv.implies_platform and len(inv.platforms) == 1:
            other = next(n for n, g in rules.gpus.items() if g.get("platform") in inv.platforms and inv.field in g)
            assert Config(vllm=version, dtype="bfloat16", **{inv.field: rules.gpus[other][inv.field]}).platform \
                == inv.platforms[0]


@pytest.mark.parametrize("text, problem", [
    ('[[invariants]]\nkey = "x"\nfield = "no_such_field"\nplatforms = ["cuda"]\nreason = "r"\n', "not a field"),
    ('[[invariants]]\nkey = "x"\nfield = "rocm_arch"\nplatforms = ["tpu"]\nreason = "r"\n', "known platforms"),
    ('[[invariants]]\nkey = "x"\nrequire = { use_mla = true }\n', "reason"),
    ('[[invariants]]\nkey = "x"\nfield = "rocm_arch"\nplatforms = ["rocm"]\nunset = "gfx1"\nreason = "r"\n', "gfx1"),
    ('[[invariants]]\nkey = "x"\nwhen = { use_mla = true }\nrequire = { no_such = 1 }\nreason = "r"\n', "no_such"),
])
def test_a_broken_invariant_is_a_rules_error(tmp_path, text, problem):
    for f in RULES_DIR.glob("*.toml"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "broken.toml").write_text(text)
    with pytest.raises(RulesError, match=problem):
        load_rules(tmp_path)


# Sparse attention without MLA is a question vLLM answers, not a bad configuration (issue 16): every
# backend that is not sparse reports "sparse not supported" (vLLM 0.17.0 and 0.33.0, checked with the
# differential harness's runner); platforms that route sparse first answer as their code does.
@pytest.mark.parametrize("version", ["0.17", "0.33"])
def test_sparse_without_mla_is_vllms_no_valid_backend(version):
    from attnsolve import NoValidBackendError, explain, solve
    cfg = Config(vllm=version, gpu="H100", dtype="bfloat16", use_sparse=True)
    assert cfg.use_sparse is True and cfg.use_mla is False
    with pytest.raises(NoValidBackendError) as err:
        solve(cfg)
    assert str(err.value).startswith("No valid attention backend found for cuda with AttentionSelectorConfig(")
    assert err.value.reasons and all("sparse not supported" in r for r in err.value.reasons.values())
    exp = explain(cfg)
    assert exp.selected is None and "use_sparse" in exp.conflict
    assert any(f.changes == {"use_sparse": False} for f in exp.fixes)


@pytest.mark.vllm("0.17")
def test_sparse_without_mla_elsewhere_follows_each_platforms_code():
    from attnsolve import NoValidBackendError, solve
    with pytest.raises(NoValidBackendError, match="Sparse Attention is not supported on CPU."):
        solve(Config(platform="cpu", dtype="bfloat16", use_sparse=True))
    with pytest.raises(NoValidBackendError, match="only supports block size 1"):  # ROCm routes sparse first
        solve(Config(gpu="MI300X", dtype="bfloat16", use_sparse=True))
    assert solve(Config(gpu="MI300X", dtype="bfloat16", use_sparse=True, block_size=1)).backend == "ROCM_AITER_MLA_SPARSE"


@pytest.mark.vllm("0.33")
def test_sparse_without_mla_on_rocm_v033():
    """vLLM 0.33.0 platforms/rocm.py _get_backend_priorities: use_sparse lists only
    ROCM_AITER_MLA_SPARSE, whose validation refuses a model that is not MLA ("non-MLA not supported"),
    whatever the block size (0.17 refused the block size first)."""
    from attnsolve import NoValidBackendError, solve
    with pytest.raises(NoValidBackendError, match="Sparse Attention is not supported on CPU."):
        solve(Config(platform="cpu", dtype="bfloat16", use_sparse=True))
    for block in (None, 1):
        with pytest.raises(NoValidBackendError) as err:
            solve(Config(gpu="MI300X", dtype="bfloat16", use_sparse=True, block_size=block))
        assert dict(err.value.reasons) == {"ROCM_AITER_MLA_SPARSE": ("non-MLA not supported",)}
    assert solve(Config(gpu="MI300X", dtype="bfloat16", use_mla=True, use_sparse=True, head_size=576,
                        block_size=1)).backend == "ROCM_AITER_MLA_SPARSE"
