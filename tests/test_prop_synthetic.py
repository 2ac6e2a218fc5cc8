"""Laws of selection on random synthetic rule sets, independent of vLLM's rules.

Random backends (capabilities, custom checks, FA-style variants, explicit-only), random priority lists per
platform (conditions, order, validate / table / ignore request handling, guards) are written as TOML, loaded
with load_rules and made active with use_rules. On each: the compiled path, the CSP and the oracle select
the same backend with the same evidence, and explain() agrees with them.
"""

from __future__ import annotations

import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import oracle
from attnsolve import ConfigError, InvalidBackendError, NoValidBackendError, solve
from attnsolve.rules import load_rules, use_rules
from attnsolve.selection import solve_csp
from strategies import budget, configs, roles_for, synthetic_rules, write_rules

SYN = settings(max_examples=budget(40), suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], deadline=None)
PER_RULESET = 12


def _solve(config, role):
    try:
        return solve(config, role=role)
    except (NoValidBackendError, InvalidBackendError) as e:
        return e
    except ConfigError as e:
        return e


@SYN
@given(synthetic_rules(), st.data())
def test_compiled_csp_and_oracle_agree_on_synthetic_rules(docs, data):
    with tempfile.TemporaryDirectory() as tmp:
        write_rules(docs, tmp)
        rules = load_rules(tmp)
    with use_rules(rules):
        for _ in range(PER_RULESET):
            config = data.draw(configs(rules), label="config")
            role = "decode"
            ans = oracle.select(rules, config, role)
            got = _solve(config, role)
            if ans.error is not None:
                assert isinstance(got, ConfigError), (ans.error, got)
                continue
            if ans.backend is None:
                assert isinstance(got, (NoValidBackendError, InvalidBackendError)), (config, got, ans.tried)
                assert set(got.reasons) == {b for b, _ in ans.tried}
            else:
                assert not isinstance(got, Exception), (config, got, ans.tried)
                assert got.backend == ans.backend
                assert got.variant == ans.variant
                if ans.mode == "auto":
                    assert [(r.backend, tuple(r.reasons)) for r in got.rejected] == ans.rejected
            assert solve_csp(config, role=role) == ans.backend


@settings(max_examples=budget(25), suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], deadline=None)
@given(synthetic_rules(max_backends=4), st.data())
def test_explain_agrees_on_synthetic_rules(docs, data):
    from attnsolve.explain import explain
    with tempfile.TemporaryDirectory() as tmp:
        write_rules(docs, tmp)
        rules = load_rules(tmp)
    with use_rules(rules):
        for _ in range(4):
            config = data.draw(configs(rules), label="config")
            ans = oracle.select(rules, config, "decode")
            if ans.error is not None:
                continue
            exp = explain(config)
            assert exp.selected == ans.backend
            for fix in exp.fixes:
                fixed = config.replace(**{k: (tuple(int(x) for x in v.split(".")) if k == "compute_capability"
                                              and isinstance(v, str) else v) for k, v in fix.changes.items()})
                assert oracle.select(rules, fixed, "decode").backend == fix.selects


def test_csp_when_no_rule_reads_the_compute_capability():
    """Regression (found by the property above): a rule set whose only compute-capability test is
    in a derived fact no rule uses left `compute_capability` out of the CSP's variables, and the
    platform/hardware coupling constraint then raised KeyError."""
    from pathlib import Path

    from attnsolve import Config
    from benchmarks.bench_scaling import packaged_domains_text
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "domains.toml").write_text(packaged_domains_text())
        (Path(tmp) / "synth.toml").write_text('''
[derived.fa_version]
values = [2, 3]
cases = [{ when = { flash_attn_version = 3 }, value = 3 }, { when = { compute_capability = { major_in = [9] } }, value = 3 }, { value = 2 }]
[backends.SYN_0]
platforms = ["cpu"]
role = "decode"
summary = "synthetic"
mla = true
explicit_only = true
[platforms.cpu]
validate = false
[[platforms.cpu.lists]]
name = "cpu default"
when = { role = "decode" }
entries = [{ backend = "SYN_0", checks = [{ reason = "synthetic reason on block_size", require = { block_size = 16 } }] }]
''')
        rules = load_rules(tmp)
    with use_rules(rules):
        config = Config(platform="cpu", dtype="bfloat16", head_size=64)
        assert solve_csp(config, role="decode") == oracle.select(rules, config, "decode").backend
