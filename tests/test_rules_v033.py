"""The vLLM 0.33 rule set and the rule-language constructs it needs.

Two halves:
- one test per construct, each on a tiny rule folder (the 0.17 set plus one extra file in tmp_path),
  checked through solve() and, where the construct decides validity, the CSP path (solve_csp);
- fact tests for 0.33, each naming the vLLM 0.33.0 file the fact comes from, reading the facts
  (reason texts, block sizes, messages) from the rules where the rules hold them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnsolve import Config, ConfigError, InvalidBackendError, NoValidBackendError, RulesError, load_rules, use_rules
from attnsolve.rules import RULES_ROOT, rules_for
from attnsolve.selection import solve_csp, solve_uncached

V17 = RULES_ROOT / "vllm-0.17"

TEST_X = '''
[backends.TEST_X]
platforms = ["cuda"]
role = "decode"
explicit_only = true
summary = "a backend added by a test"
dtypes = ["float16", "bfloat16"]
kv_cache_dtypes = ["auto", "fp8"]
kernel_block_sizes = [16]
head_sizes = [64, 128, 256]
attn_types = ["decoder"]
sink = true
mm_prefix = true
'''


def _folder(tmp_path: Path, extra: str, edits: tuple[tuple[str, str, str], ...] = ()) -> Path:
    root = tmp_path / "rules"
    root.mkdir(parents=True)
    for f in V17.glob("*.toml"):
        shutil.copy(f, root / f.name)
    for name, old, new in edits:
        text = (root / name).read_text()
        assert old in text, f"{old!r} not in {name}: the test's edit needs updating"
        (root / name).write_text(text.replace(old, new, 1))
    (root / "zz_test.toml").write_text(TEST_X + extra)
    return root


def _cfg(**kw) -> Config:
    base = dict(platform="cuda", compute_capability="9.0", dtype="bfloat16", head_size=128, backend="TEST_X")
    base.update(kw)
    return Config(**base)


def _answer(cfg: Config) -> tuple[str | None, tuple[str, ...]]:
    """(selected backend, ()) or (None, the reasons against the requested backend)."""
    try:
        return solve_uncached(cfg).backend, ()
    except InvalidBackendError as e:
        return None, tuple(e.reasons.get(e.backend, ()))


def _agree(cfg: Config) -> tuple[str | None, tuple[str, ...]]:
    got = _answer(cfg)
    assert solve_csp(cfg) == got[0], f"bitsets and CSP disagree on {cfg!r}"
    return got


# ------------------------------------------------------------------------------------------ constructs
def test_any_of_and_not_in_when_and_require(tmp_path):
    root = _folder(tmp_path, '''checks = [
  { reason = "R_ANY", when = { any_of = [ { head_size = 64 }, { use_mm_prefix = true } ] }, require = { not = { dtype = "float16" } } },
]
''')
    with use_rules(root):
        assert _agree(_cfg(head_size=64, dtype="float16")) == (None, ("R_ANY",))
        assert _agree(_cfg(head_size=64)) == ("TEST_X", ())
        assert _agree(_cfg(use_mm_prefix=True, dtype="float16")) == (None, ("R_ANY",))
        assert _agree(_cfg(dtype="float16")) == ("TEST_X", ())


def test_not_of_a_conjunction_and_nested_any_of(tmp_path):
    root = _folder(tmp_path, '''checks = [
  { reason = "R_NOT", when = { not = { head_size = 64, dtype = "float16" } }, require = { any_of = [ { use_mm_prefix = true }, { has_sink = false } ] } },
]
''')
    with use_rules(root):
        # when holds unless (64 and fp16); require holds with mm_prefix or no sink
        assert _agree(_cfg(has_sink=True)) == (None, ("R_NOT",))
        assert _agree(_cfg(has_sink=True, use_mm_prefix=True)) == ("TEST_X", ())
        assert _agree(_cfg(has_sink=True, head_size=64, dtype="float16")) == ("TEST_X", ())


def test_field_comparisons_become_derived_facts(tmp_path):
    root = _folder(tmp_path, '''checks = [
  { reason = "R_EQ", when = { use_mm_prefix = true }, require = { num_heads = { eq_field = "head_size" } } },
  { reason = "R_NE", when = { has_sink = true }, require = { num_heads = { present = true, ne_field = "head_size" } } },
  { reason = "R_MUL", when = { dtype = "float16" }, require = { num_heads = { multiple_of_field = "head_size" } } },
]
''')
    with use_rules(root):
        rules = rules_for("0.17")
        assert rules.derived["num_heads_eq_head_size"].compute == ("eq", ("num_heads", "head_size"))
        assert _agree(_cfg(use_mm_prefix=True, num_heads=64)) == (None, ("R_EQ",))
        assert _agree(_cfg(use_mm_prefix=True, num_heads=128)) == ("TEST_X", ())
        assert _agree(_cfg(has_sink=True, num_heads=128)) == (None, ("R_NE",))
        assert _agree(_cfg(has_sink=True)) == (None, ("R_NE",))  # present = true: unset fails
        assert _agree(_cfg(has_sink=True, num_heads=64)) == ("TEST_X", ())
        assert _agree(_cfg(dtype="float16", num_heads=256)) == ("TEST_X", ())
        assert _agree(_cfg(dtype="float16", num_heads=96)) == (None, ("R_MUL",))


def test_quotients_products_and_derived_facts_reading_derived_facts(tmp_path):
    root = _folder(tmp_path, '''checks = [
  { reason = "R_GROUP", require = { test_group = "ok" } },
]
startup_failures = [
  { message = "heads per group {q_per} (num_heads={num_heads})", when = { test_group = "bad" } },
]
[derived.test_group]
doc = "a derived fact reading another (declared after it on purpose)"
values = ["ok", "bad"]
cases = [
  { when = { test_ratio = "small" }, value = "ok" },
  { value = "bad" },
]
[derived.test_ratio]
doc = "num_heads // head_size, and num_heads * head_size"
values = ["small", "large"]
quotients = { q_per = ["num_heads", "head_size"] }
products = { prod = ["num_heads", "head_size"] }
cases = [
  { when = { q_per = { max = 2 }, prod = { max = 65536 } }, value = "small" },
  { value = "large" },
]
''')
    with use_rules(root):
        rules = rules_for("0.17")
        names = list(rules.derived)
        assert names.index("test_ratio") < names.index("test_group")  # dependency order
        assert _agree(_cfg(num_heads=256)) == ("TEST_X", ())
        assert _agree(_cfg(num_heads=512)) == (None, ("R_GROUP",))  # 512 // 128 = 4
        assert _agree(_cfg(num_heads=128, head_size=256)) == ("TEST_X", ())  # 128 * 256 = 32768


def test_quotient_is_shown_in_messages(tmp_path):
    root = _folder(tmp_path, '''startup_failures = [
  { message = "heads per group {q_per}", when = { test_ratio2 = "large" } },
]
[derived.test_ratio2]
values = ["small", "large"]
quotients = { q_per = ["num_heads", "head_size"] }
cases = [
  { when = { q_per = { min = 3 } }, value = "large" },
  { value = "small" },
]
''')
    with use_rules(root):
        assert solve_uncached(_cfg(num_heads=512)).startup_error == "heads per group 4"
        assert solve_uncached(_cfg(num_heads=128)).startup_error is None


def test_string_valued_variant_fact_and_child_variant_override(tmp_path):
    root = _folder(tmp_path, '''variant_field = "test_kind"
[backends.TEST_X.variants.NARROW]
values = ["narrow"]
[backends.TEST_X.variants.WIDE]
values = ["wide"]
head_sizes = [64, 128, 256, 512]
[backends.TEST_CHILD]
parent = "TEST_X"
explicit_only = true
[backends.TEST_CHILD.variants.WIDE]
values = ["wide"]
head_sizes = [64]
[derived.test_kind]
values = ["narrow", "wide"]
cases = [ { when = { has_sink = true }, value = "wide" }, { value = "narrow" } ]
''')
    with use_rules(root):
        rules = rules_for("0.17")
        assert [v.name for v in rules.backends["TEST_CHILD"].variants] == ["NARROW", "WIDE"]
        sel = solve_uncached(_cfg(has_sink=True, head_size=512))
        assert (sel.backend, sel.variant) == ("TEST_X", "WIDE")
        assert _agree(_cfg(head_size=512)) == (None, ("head_size not supported",))
        assert _agree(_cfg(backend="TEST_CHILD", has_sink=True, head_size=128)) == (None, ("head_size not supported",))


def test_first_failing_combination_reason_only(tmp_path):
    checks = '''checks = [
  { reason = "R_ONE", require = { has_sink = false } },
  { reason = "R_TWO", require = { use_mm_prefix = false } },
]
'''
    root = _folder(tmp_path, checks + '\n[ruleset]\ncombination_reasons = "first"\n')
    with use_rules(root):
        assert _agree(_cfg(has_sink=True, use_mm_prefix=True)) == (None, ("R_ONE",))
        assert _agree(_cfg(use_mm_prefix=True)) == (None, ("R_TWO",))
    all_root = _folder(tmp_path / "all", checks)
    with use_rules(all_root):
        assert _agree(_cfg(has_sink=True, use_mm_prefix=True)) == (None, ("R_ONE", "R_TWO"))


def test_a_check_repeating_a_generic_reason_is_listed_twice(tmp_path):
    root = _folder(tmp_path, '''checks = [
  { reason = "dtype not supported", require = { dtype = ["float16", "bfloat16"] } },
]
''')
    with use_rules(root):
        assert _agree(_cfg(dtype="float32")) == (None, ("dtype not supported", "dtype not supported"))


def test_exact_block_sizes_replace_the_multiples(tmp_path):
    root = _folder(tmp_path, '''exact_block_sizes = [64, 128]
preferred_block_size = 128
''', edits=(("domains.toml", 'key = "kernel_block_sizes"', 'key = "kernel_block_sizes"\nexact_key = "exact_block_sizes"'),
                                     ("cuda.toml", 'drops = ["block_size"]', 'drops = []')))
    with use_rules(root):
        assert _agree(_cfg(block_size=64)) == ("TEST_X", ())
        assert _agree(_cfg(block_size=256)) == (None, ("block_size not supported",))
        assert _agree(_cfg(block_size=32)) == (None, ("block_size not supported",))


def test_generic_check_defaults_apply_when_a_backend_omits_the_key(tmp_path):
    root = _folder(tmp_path, '''[backends.TEST_BARE]
platforms = ["cuda"]
role = "decode"
explicit_only = true
head_sizes = [128]
''', edits=(("domains.toml", 'key = "dtypes"', 'key = "dtypes"\ndefault = ["float16", "bfloat16"]'),))
    with use_rules(root):
        assert _agree(_cfg(backend="TEST_BARE", dtype="float32")) == (None, ("dtype not supported",))
        assert _agree(_cfg(backend="TEST_BARE")) == ("TEST_BARE", ())


def test_alias_resolves_to_its_backend(tmp_path):
    root = _folder(tmp_path, '''[backends.TEST_ALIAS]
alias_of = "TEST_X"
''')
    with use_rules(root):
        assert _agree(_cfg(backend="TEST_ALIAS")) == ("TEST_X", ())
    bad = _folder(tmp_path / "bad", '''[backends.TEST_ALIAS]
alias_of = "NO_SUCH"
''')
    with pytest.raises(RulesError, match="alias_of"):
        load_rules(bad)


def test_placeholders_with_defaults_and_device_capability(tmp_path):
    root = _folder(tmp_path, '''checks = [
  { reason = "dims ({qk_nope_head_dim|0}, {v_head_dim|0}) on {device_capability} / {compute_capability}", require = { has_sink = false } },
]
''')
    with use_rules(root):
        assert _answer(_cfg(has_sink=True)) == (None, ("dims (0, 0) on DeviceCapability(major=9, minor=0) / 9.0",))


def test_platform_rewrites_notes_errors_and_fallbacks(tmp_path):
    root = _folder(tmp_path, '''
[backends.TEST_ERR]
alias_of = "TEST_X"
[backends.TEST_FB]
alias_of = "TEST_X"
[[platforms.cuda.rewrites]]
when = { backend = "TEST_X", kv_cache_dtype = "fp8" }
set = { kv_cache_dtype = "auto" }
stage = "after_selection"
log = "Using auto for {backend}."
[[platforms.cuda.notes]]
when = { backend = "TEST_X", has_sink = true }
level = "warning"
log = "sinks on TEST_X"
[[platforms.cuda.request_errors]]
when = { backend = "TEST_ERR" }
message = "Backend TEST_ERR must be registered before use."
[[platforms.cuda.request_fallbacks]]
when = { backend = "TEST_FB" }
warning = "TEST_FB is dropped"
''')
    with use_rules(root):
        sel = solve_uncached(_cfg(kv_cache_dtype="fp8", has_sink=True))
        assert sel.config_changes == (("kv_cache_dtype", "auto"),)
        assert sel.logs == ("Using auto for TEST_X.",) and "sinks on TEST_X" in sel.warnings
        with pytest.raises(InvalidBackendError, match="must be registered before use"):
            solve_uncached(_cfg(backend="TEST_ERR"))
        assert solve_csp(_cfg(backend="TEST_ERR")) is None
        auto = solve_uncached(_cfg(backend="TEST_FB"))
        assert not auto.manual and "TEST_FB is dropped" in auto.warnings
        assert solve_csp(_cfg(backend="TEST_FB")) == auto.backend


def test_model_backend_skips_selection(tmp_path):
    root = _folder(tmp_path, '''
[platforms.cuda]
model_backend = [ { when = { use_mm_prefix = true, head_size = 256 }, value = "TEST_X" } ]
''')
    with use_rules(root):
        sel = solve_uncached(_cfg(backend=None, use_mm_prefix=True, head_size=256, kv_cache_dtype="auto"))
        assert (sel.backend, sel.rejected, sel.priority_list) == ("TEST_X", (), "model: model")
        assert solve_csp(_cfg(backend=None, use_mm_prefix=True, head_size=256)) == "TEST_X"


def test_unknown_construct_keys_are_reported(tmp_path):
    root = _folder(tmp_path, '''checks = [
  { reason = "R", require = { head_size = { eq_fild = "num_heads" } } },
  { reason = "R2", require = { anyof = [ { head_size = 64 } ] } },
]
''')
    with pytest.raises(RulesError) as info:
        load_rules(root)
    text = str(info.value)
    assert "eq_fild" in text and "anyof" in text


# ------------------------------------------------------------------------------------- vLLM 0.33 facts
@pytest.fixture(scope="module")
def r33():
    return rules_for("0.33")


def _c33(**kw) -> Config:
    base = dict(vllm="0.33", dtype="bfloat16")
    base.update(kw)
    return Config(**base)


def test_033_loads_with_its_release_label(r33):
    # vllm/v1/attention/backends/registry.py: the composites and the MLA prefill registry names
    assert r33.vllm == "0.33"
    assert r33.backends["TRITON_FLASH_ATTN"].composite == ("TRITON_ATTN", "FLASH_ATTN")
    assert r33.backends["FLASH_ATTN_PREFILL"].display_name == "FLASH_ATTN"


def test_033_supports_combination_reports_one_reason(r33):
    # vllm/v1/attention/backends/flash_attn.py FlashAttentionBackend.supports_combination: the first failing test
    with pytest.raises(InvalidBackendError) as info:
        solve_uncached(_c33(gpu="H100", backend="FLASH_ATTN", kv_cache_dtype="fp8", use_mm_prefix=True))
    assert info.value.reasons["FLASH_ATTN"] == ("SM90 FP8 KV with mm_prefix requires Triton",)


def test_033_block_size_reaches_validation(r33):
    # vllm/platforms/cuda.py get_attn_backend_cls (0.33 keeps the user's --block-size: drops = [])
    reason = next(g.reason for g in r33.generic_checks if g.field == "block_size")
    with pytest.raises(NoValidBackendError) as info:
        solve_uncached(_c33(gpu="A100", block_size=8))
    assert info.value.reasons and all(reason in r for r in info.value.reasons.values())


def test_033_b12x_block_sizes_are_exact(r33):
    # vllm/v1/attention/backends/b12x.py B12xPagedAttentionBackend.supports_block_size: 64 or 128 only
    exact = r33.backends["B12X"].caps.get("exact_block_sizes")
    assert exact == (64, 128)
    for size in (64, 128):
        assert solve_uncached(_c33(gpu="RTX 5090", backend="B12X", block_size=size)).backend == "B12X"
    for size in (32, 192):
        with pytest.raises(InvalidBackendError) as info:
            solve_uncached(_c33(gpu="RTX 5090", backend="B12X", block_size=size))
        assert info.value.reasons["B12X"] == ("block_size not supported",)
    # vllm/platforms/interface.py update_block_size_for_backend: get_preferred_block_size(16) -> 128
    assert solve_uncached(_c33(gpu="RTX 5090", backend="B12X")).preferred_block_size == 128


def test_033_preferred_block_size_rule(r33):
    # vllm/platforms/interface.py update_block_size_for_backend; FlashInferMLABackend kernel sizes [32, 64]
    sel = solve_uncached(_c33(gpu="B200", use_mla=True, head_size=576))
    assert sel.backend == "FLASHINFER_MLA" and sel.preferred_block_size == 32
    assert solve_uncached(_c33(gpu="H100")).preferred_block_size == 16


def test_033_sparse_mla_kv_rewrite(r33):
    # vllm/model_executor/layers/attention/mla_attention.py _canonicalize_sparse_mla_kv_cache_dtype
    rewrite = next(rw for pl in r33.lists_for("cuda") for rw in pl.rewrites
                   if any(l.field == "backend" and l.pred.eq == "FLASHMLA_SPARSE" for l in rw.when))
    sel = solve_uncached(_c33(gpu="H100", use_mla=True, use_sparse=True, head_size=576, kv_cache_dtype="fp8",
                              backend="FLASHMLA_SPARSE"))
    assert sel.config_changes == rewrite.set and rewrite.log in sel.logs


def test_033_msa_request_falls_back_to_automatic(r33):
    # vllm/config/attention.py AttentionConfig.__post_init__: CUTLASS_MSA only picks MiniMax-M3's kernel
    sel = solve_uncached(_c33(gpu="H100", backend="CUTLASS_MSA"))
    assert not sel.manual and sel.backend == solve_uncached(_c33(gpu="H100")).backend


def test_033_hpc_heads_per_group_startup_error(r33):
    # vllm/v1/attention/backends/hpc_attn.py HpcAttentionImpl.__init__
    sel = solve_uncached(_c33(gpu="H200", backend="HPC_ATTN", block_size=64, num_heads=48, num_kv_heads=8))
    assert sel.startup_error == ("HPC attention only supports head_per_group in {4, 8}, got 6 "
                                 "(num_heads=48, num_kv_heads=8)")
    assert solve_uncached(_c33(gpu="H200", backend="HPC_ATTN", block_size=64, num_heads=32,
                               num_kv_heads=8)).startup_error is None


def test_033_mla_prefill_uses_its_own_names_and_messages(r33):
    # vllm/v1/attention/backends/mla/prefill/selector.py: reasons under MLAPrefillBackendEnum names
    prefill = next(pl.mla_prefill for pl in r33.lists_for("cuda") if pl.mla_prefill is not None)
    with pytest.raises(NoValidBackendError) as info:
        solve_uncached(_c33(gpu="A100", use_mla=True, head_size=576), role="mla_prefill")
    assert str(info.value).startswith(prefill.no_valid_message.split("(")[0])
    assert set(info.value.reasons) == {"FLASH_ATTN"}
    sel = solve_uncached(_c33(gpu="B200", use_mla=True, head_size=576, qk_nope_head_dim=128, qk_rope_head_dim=64,
                              v_head_dim=128), role="mla_prefill")
    assert sel.backend == "FLASH_ATTN_PREFILL" and "Using FLASH_ATTN MLA prefill backend." in sel.logs


def test_derived_warnings_of_validated_candidates(tmp_path):
    extra = '''
[backends.TEST_Y]
platforms = ["cuda"]
role = "decode"
summary = "a first list entry that reads a derived fact when a sink is asked for"
dtypes = ["float16", "bfloat16"]
kernel_block_sizes = [16]
head_sizes = [64]
attn_types = ["decoder"]
sink = true
checks = [
  { reason = "R_Y", when = { has_sink = true }, require = { test_w = "fine" } },
]
[derived.test_w]
values = ["fine", "odd"]
cases = [
  { when = { head_size = 128 }, value = "odd", warning = "test_w is odd at head {head_size}" },
  { value = "fine" },
]
'''
    edits = (("cuda.toml", 'entries = ["FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION"]',
              'entries = ["TEST_Y", "FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION"]'),)
    chosen_only = _folder(tmp_path / "chosen", extra, edits)
    validated = _folder(tmp_path / "validated", extra + '\n[ruleset]\nderived_warnings = "validated"\n', edits)
    line = "test_w is odd at head 128"
    for root, shown in ((chosen_only, False), (validated, True)):
        with use_rules(root):
            sel = solve_uncached(_cfg(backend=None, has_sink=True))
            assert sel.backend != "TEST_Y" and ("TEST_Y", ("head_size not supported", "R_Y")) in [
                (r.backend, r.reasons) for r in sel.rejected]
            assert (line in sel.warnings) is shown
            # TEST_Y's check reads test_w only when a sink is asked for
            assert line not in solve_uncached(_cfg(backend=None)).warnings


_R33 = rules_for("0.33")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gpu=st.sampled_from([g for g, v in _R33.gpus.items() if v.get("platform") == "cuda"]),
       dtype=st.sampled_from(_R33.domains["dtype"]), kv=st.sampled_from(_R33.domains["kv_cache_dtype"]),
       block=st.sampled_from((None, *_R33.domains["block_size"])), head=st.sampled_from((64, 128, 256, 512, 576)),
       mla=st.booleans(), sparse=st.booleans(), sink=st.booleans(), mm=st.booleans())
def test_033_bitsets_and_csp_agree(gpu, dtype, kv, block, head, mla, sparse, sink, mm):
    """The 0.33 set through both solvers: the same backend (or none) for full configs."""
    try:
        cfg = _c33(gpu=gpu, dtype=dtype, kv_cache_dtype=kv, block_size=block, head_size=head, use_mla=mla,
                   use_sparse=sparse and mla, has_sink=sink, use_mm_prefix=mm)
    except ConfigError:
        return
    try:
        got = solve_uncached(cfg).backend
    except (NoValidBackendError, InvalidBackendError):
        got = None
    assert solve_csp(cfg) == got


def test_033_from_env_reads_the_variables_the_release_reads():
    """vllm/envs.py (0.33.0): VLLM_BATCH_INVARIANT is read, VLLM_ATTENTION_BACKEND is gone (not in envs.py; the
    backend is requested through --attention-config.backend). Config.from_env follows the release's `env`
    declarations, as the CLI does. vLLM 0.17.0 has no VLLM_ATTENTION_BACKEND either (nor any batch-invariance
    input to selection), but reads VLLM_ROCM_USE_AITER."""
    env = {"VLLM_ATTENTION_BACKEND": "TRITON_ATTN", "VLLM_BATCH_INVARIANT": "1", "VLLM_ROCM_USE_AITER": "True"}
    new = Config.from_env(env, vllm="0.33", gpu="H100", dtype="bfloat16")
    assert new.backend is None and new.use_batch_invariant is True
    old = Config.from_env(env, vllm="0.17", gpu="H100", dtype="bfloat16")
    assert old.backend is None and old.rocm_use_aiter is True


# -- DeepSeek-V4 / V4.1 on ROCm: ROCM_FLASHMLA_SPARSE_DSV4 / _DSV41 ------------------------------------------

DSV4_LAYER = dict(dtype="bfloat16", use_mla=True, use_sparse=True, head_size=512)


@pytest.mark.parametrize("backend, block", [("ROCM_FLASHMLA_SPARSE_DSV4", 256), ("ROCM_FLASHMLA_SPARSE_DSV41", 64)])
def test_033_rocm_dsv4_backends_can_be_requested(backend, block):
    """vllm/v1/attention/backends/registry.py names both; platforms/rocm.py get_attn_backend_cls validates a request
    by the class's own checks: models/deepseek_v4/sparse_mla.py / models/deepseek_v41/sparse_mla.py
    DeepseekV4SparseMLABackend (bf16, head 512, sparse, SM 9.x/10.x), kernel block sizes [256] (V4) and
    models/deepseek_v41/amd/rocm.py's [64, 128] (V4.1). Checked with the harness runner against vLLM 0.33.0."""
    sel = solve_uncached(_c33(gpu="MI300X", backend=backend, **{**DSV4_LAYER, "dtype": "bfloat16"}))
    assert sel.backend == backend and sel.manual and sel.preferred_block_size == block
    assert f"Using {backend} backend (selected via --attention-backend)." in sel.logs
    for bad, reason in [(dict(head_size=576), "head_size not supported"), (dict(use_sparse=False), "non-sparse not supported"),
                        (dict(gpu="RX 7900 XTX"), "compute capability not supported")]:
        with pytest.raises(InvalidBackendError) as err:
            solve_uncached(_c33(**{**DSV4_LAYER, "gpu": "MI300X", "backend": backend, **bad}))
        assert err.value.reasons[backend] == (reason,)
    with pytest.raises(InvalidBackendError) as err:  # 64 is no multiple of 256
        solve_uncached(_c33(gpu="MI300X", backend="ROCM_FLASHMLA_SPARSE_DSV4", block_size=64, **DSV4_LAYER))
    assert err.value.reasons["ROCM_FLASHMLA_SPARSE_DSV4"] == ("block_size not supported",)
    assert solve_uncached(_c33(gpu="H100", backend=backend, **DSV4_LAYER)).backend == backend  # CUDA's selector too


def test_033_deepseek_v4_on_rocm_is_model_driven():
    """models/deepseek_v4/__init__.py imports amd/model.py on ROCm, whose layer is amd/rocm.py
    DeepseekV4ROCMAiterMLAAttention (backend_cls ROCM_FLASHMLA_SPARSE_DSV4) whatever is requested; its KV dtype
    follows models/deepseek_v4/attention.py _resolve_dsv4_kv_cache_dtype (fp8_ds_mla layout)."""
    for request in (None, "TRITON_MLA", "ROCM_FLASHMLA_SPARSE_DSV41"):
        sel = solve_uncached(_c33(gpu="MI300X", model_arch="deepseek_v4", backend=request, **DSV4_LAYER))
        assert sel.backend == "ROCM_FLASHMLA_SPARSE_DSV4" and not sel.manual and sel.rejected == ()
        assert sel.config_changes == (("kv_cache_dtype", "fp8_ds_mla"),)
        assert "Using DeepSeek's fp8_ds_mla KV cache format." in sel.logs
    with pytest.raises(NoValidBackendError) as err:
        solve_uncached(_c33(gpu="MI300X", model_arch="deepseek_v4", kv_cache_dtype="bfloat16", **DSV4_LAYER))
    assert str(err.value).startswith("DeepseekV4 fp8_ds_mla layout only supports fp8 kv-cache, got bfloat16.")


def test_033_deepseek_v41_on_rocm_is_model_driven():
    """models/deepseek_v41/amd/model.py _select_dsv4_attn_cls: PCP refused, another request refused, the V4 name
    taken with a deprecation warning; then DeepseekV41ROCMAiterMLAAttention (ROCM_FLASHMLA_SPARSE_DSV41), KV per
    models/deepseek_v41/attention.py _resolve_dsv4_kv_cache_dtype (packed fp8_ds_mla)."""
    sel = solve_uncached(_c33(gpu="MI300X", model_arch="deepseek_v41", **DSV4_LAYER))
    assert sel.backend == "ROCM_FLASHMLA_SPARSE_DSV41" and sel.config_changes == (("kv_cache_dtype", "fp8_ds_mla"),)
    assert sel.preferred_block_size == 64
    old = solve_uncached(_c33(gpu="MI300X", model_arch="deepseek_v41", backend="ROCM_FLASHMLA_SPARSE_DSV4", **DSV4_LAYER))
    assert old.backend == "ROCM_FLASHMLA_SPARSE_DSV41"
    assert old.warnings == ("ROCM_FLASHMLA_SPARSE_DSV4 is deprecated for DeepSeek V4.1 and will be removed in a "
                            "future release. Use ROCM_FLASHMLA_SPARSE_DSV41 instead.",)
    with pytest.raises(NoValidBackendError) as err:
        solve_uncached(_c33(gpu="MI300X", model_arch="deepseek_v41", backend="TRITON_MLA", **DSV4_LAYER))
    assert str(err.value).startswith("TRITON_MLA is not supported for DeepSeek V4.1 on ROCm; use ROCM_FLASHMLA_SPARSE_DSV41.")
    with pytest.raises(NoValidBackendError) as err:
        solve_uncached(_c33(gpu="MI300X", model_arch="deepseek_v41", use_pcp=True, **DSV4_LAYER))
    assert str(err.value).startswith("DeepSeek-V4.1 PCP currently supports NVIDIA CUDA only.")
    kept = solve_uncached(_c33(gpu="MI300X", model_arch="deepseek_v41", kv_cache_dtype="fp8_ds_mla", **DSV4_LAYER))
    assert kept.config_changes == () and "Using DeepSeek's fp8_ds_mla KV cache format." in kept.logs
    with pytest.raises(NoValidBackendError) as err:
        solve_uncached(_c33(gpu="MI300X", model_arch="deepseek_v41", kv_cache_dtype="bfloat16", **DSV4_LAYER))
    assert str(err.value).startswith("DeepseekV4 packed KV layouts only support fp8 kv-cache, got bfloat16.")


def test_033_xpu_flash_attn_mla_request_has_its_own_message():
    """vllm/platforms/xpu.py get_attn_backend_cls: FLASH_ATTN_MLA requested and XPUFlashAttnMLABackend invalid
    raises "FlashAttnMLA on XPU is not valid for this configuration: [...]" (the list's invalid_message);
    harness runner against vLLM 0.33.0."""
    with pytest.raises(NoValidBackendError) as err:
        solve_uncached(_c33(platform="xpu", use_mla=True, head_size=576, backend="FLASH_ATTN_MLA", block_size=8))
    assert str(err.value).startswith(
        "FlashAttnMLA on XPU is not valid for this configuration: ['block_size not supported']")
    auto = solve_uncached(_c33(platform="xpu", use_mla=True, head_size=576, block_size=8))  # not requested
    assert auto.backend == "TRITON_MLA"  # the branch falls back (its fallback_log), no error


def test_033_rocm_override_log_names_the_invalid_entries():
    """vllm/platforms/rocm.py get_attn_backend_cls: with some list entry invalid vLLM logs "Found incompatible
    backend(s) [...] with <attn type>. Overriding with X out of potential backends: [...]." (INFO) instead of
    "Using X backend out of potential backends"; harness runner against vLLM 0.33.0 (logged lines)."""
    sel = solve_uncached(_c33(gpu="MI300X"))
    assert sel.logs == ("Found incompatible backend(s) [TURBOQUANT, ROCM_OCTAVE, ULTRAQUANT] with "
                        "AttentionType.DECODER. Overriding with ROCM_ATTN out of potential backends: "
                        "['ROCM_ATTN', 'ROCM_AITER_UNIFIED_ATTN', 'TRITON_ATTN'].",)
    mla = solve_uncached(_c33(gpu="MI300X", use_mla=True, head_size=576))
    assert mla.logs == ("Using TRITON_MLA backend out of potential backends: ['TRITON_MLA'].",)


def test_033_qk_rope_head_dim_zero_is_a_layout():
    """v1/attention/backends/mla/prefill/flash_attn.py supports_mla_dimensions lists (256, 0, 256), GLM5Next's NoPE
    layout: vLLM 0.33 takes qk_rope_head_dim 0 (the 0.33 declaration's min = 0); harness runner: the MLA decode
    and prefill answers for it agree with vLLM 0.33.0 on B200 / H100 / A100."""
    nope = _c33(gpu="B200", use_mla=True, head_size=512, qk_nope_head_dim=256, qk_rope_head_dim=0, v_head_dim=256)
    assert nope.qk_rope_head_dim == 0
    assert solve_uncached(nope, "mla_prefill").backend == "FLASH_ATTN_PREFILL"
    with pytest.raises(ConfigError):
        _c33(gpu="B200", use_mla=True, qk_rope_head_dim=-1)
    with pytest.raises(ConfigError):  # 0.17 declares no such minimum (no NoPE MLA model there)
        Config(vllm="0.17", gpu="B200", dtype="bfloat16", use_mla=True, qk_rope_head_dim=0)


@pytest.mark.parametrize("name", ["NO_ATTENTION", "TORCH_SDPA", "CUSTOM"])
def test_017_registry_names_that_fail_before_validation(name):
    """vLLM 0.17.0 v1/attention/backends/registry.py: TORCH_SDPA ("") and CUSTOM (None) refuse get_path() unless
    registered; NO_ATTENTION's module is not in the wheel (platforms/cuda.py reports ['ImportError']). ROCm answers
    with platforms/rocm.py's own texts, CPU ignores the request. Harness runner against vLLM 0.17.0."""
    cuda = Config(vllm="0.17", gpu="H100", dtype="bfloat16", backend=name)
    with pytest.raises(InvalidBackendError) as err:
        solve_uncached(cuda)
    text = str(err.value).split("\n", 1)[0]
    assert text == ("Selected backend AttentionBackendEnum.NO_ATTENTION is not valid for this configuration. "
                    "Reason: ['ImportError']" if name == "NO_ATTENTION" else
                    f"Backend {name} must be registered before use. Use register_backend(Backend.{name}, "
                    "'your.module.YourClass')")
    with pytest.raises(InvalidBackendError) as err:
        solve_uncached(Config(vllm="0.17", gpu="MI300X", dtype="bfloat16", backend=name))
    assert str(err.value).startswith(f"Attention backend {name} is not supported on ROCm. "
                                     "Note that V0 attention backends have been removed.")
    with pytest.raises(InvalidBackendError) as err:
        solve_uncached(Config(vllm="0.17", gpu="MI300X", dtype="bfloat16", use_mla=True, backend=name))
    assert str(err.value).startswith(f" The selected backend, {name},is not MLA type while requested for MLA backend.")
    assert solve_uncached(Config(vllm="0.17", platform="cpu", dtype="bfloat16", backend=name)).backend == "CPU_ATTN"


@pytest.mark.parametrize("platform, extra", [("cpu", {}), ("rocm", {"rocm_arch": "gfx942"}), ("xpu", {}),
                                             ("cuda", {"compute_capability": "9.0"})])
def test_033_startup_block_size_refusal_names_the_class_and_its_sizes(platform, extra):
    """vllm/v1/worker/utils.py: "No common block size for N (<get_name()>: <its kernel block sizes>)." with
    every placeholder filled on every platform (ROCm, CPU and XPU print the class's own name and list)."""
    seen = 0
    for bs in rules_for("0.33").domains["block_size"]:
        try:
            sel = solve_uncached(Config(vllm="0.33", platform=platform, dtype="bfloat16", block_size=bs, **extra))
        except (NoValidBackendError, InvalidBackendError):
            continue
        err = sel.startup_error
        if err and err.startswith("No common block size"):
            seen += 1
            assert "{" not in err and err.endswith(").") and f"for {bs} (" in err, err
    if platform in ("cpu", "xpu"):  # CUDA and ROCm refuse these block sizes at selection already
        assert seen, f"no block size refused at start-up on {platform}"


@pytest.mark.parametrize("block_size, refused", [(None, False), (16, True), (32, True), (48, True), (64, False),
                                                 (128, False), (192, False)])
def test_033_xpu_mm_prefix_composite_needs_multiples_of_64_at_start_up(block_size, refused):
    """vllm/v1/attention/backends/composite.py `_intersect_kernel_block_sizes`: TRITON_FLASH_ATTN on XPU takes
    Triton's MultipleOf(16) and FlashAttention's XPU MultipleOf(64) (flash_attn.py) -> [MultipleOf(64)];
    XPU's selection does not validate the block size (platforms/xpu.py, the use_mm_prefix branch), start-up does
    (vllm/v1/worker/utils.py `select_common_block_size`)."""
    sel = solve_uncached(Config(vllm="0.33", platform="xpu", dtype="float16", head_size=256, use_mm_prefix=True,
                                block_size=block_size))
    assert sel.backend == "TRITON_FLASH_ATTN"
    if refused:
        assert sel.startup_error == f"No common block size for {block_size} (TRITON_FLASH_ATTN: [MultipleOf(64)])."
    else:
        assert sel.startup_error is None and sel.preferred_block_size == (block_size or 64)


@pytest.mark.parametrize("platform, backend", [("cpu", "CPU_V4_MLA_SPARSE"), ("xpu", "XPU_V4_MLA_SPARSE")])
def test_033_deepseek_v4_on_cpu_and_xpu_is_model_driven(platform, backend):
    """models/deepseek_v4/__init__.py imports cpu/model.py (xpu/model.py) there, whose layer is cpu_sparse.py
    DeepseekV4CPUAttention (xpu_sparse.py DeepseekV4XPUAttention): backend_cls get_name() CPU_V4_MLA_SPARSE
    (XPU_V4_MLA_SPARSE) whatever is requested, the fp8_ds_mla KV layout (attention.py
    _resolve_dsv4_kv_cache_dtype); start-up block size 256 (sparse_mla.py kernel [256]; platforms/cpu.py
    check_and_update_config forces it on CPU even over the user's)."""
    for request in (None, "CPU_MLA", "TRITON_MLA"):
        sel = solve_uncached(_c33(platform=platform, model_arch="deepseek_v4", backend=request, **DSV4_LAYER))
        assert sel.backend == backend and not sel.manual and sel.rejected == ()
        assert sel.config_changes == (("kv_cache_dtype", "fp8_ds_mla"),) and sel.preferred_block_size == 256
        assert "Using DeepSeek's fp8_ds_mla KV cache format." in sel.logs
    forced = solve_uncached(_c33(platform=platform, model_arch="deepseek_v4", block_size=64, **DSV4_LAYER))
    assert forced.preferred_block_size == (256 if platform == "cpu" else 64)
    with pytest.raises(NoValidBackendError) as err:
        solve_uncached(_c33(platform=platform, model_arch="deepseek_v4", kv_cache_dtype="bfloat16", **DSV4_LAYER))
    assert str(err.value).startswith("DeepseekV4 fp8_ds_mla layout only supports fp8 kv-cache, got bfloat16.")
    # no registry name reaches the model's class (v1/attention/backends/registry.py): not a request
    with pytest.raises(ConfigError) as bad:
        _c33(platform=platform, backend=backend, **DSV4_LAYER)
    assert bad.value.field == "backend" and str(bad.value).startswith(f"Unknown attention backend: '{backend}'.")


def test_033_minimax_m3_sparse_layers_on_rocm_are_model_driven():
    """models/minimax_m3/amd/model.py: the sparse layers' backend comes from common/sparse_attention.py
    select_main_backend_and_impl_cls, whose MSA path is CUDA SM100 only: Triton (MINIMAX_M3_SPARSE) on ROCm
    with AITER's shuffled KV layout off, whatever is requested; an NVFP4 KV cache is refused (ValueError)."""
    for request in (None, "ROCM_ATTN", "TRITON_ATTN"):
        sel = solve_uncached(_c33(gpu="MI355X", head_size=128, model_arch="minimax_m3", backend=request,
                                  minimax_m3_topk_blocks=16))
        assert (sel.backend, sel.variant, sel.manual, sel.rejected) == ("MINIMAX_M3_SPARSE", "Triton", False, ())
    assert sel.preferred_block_size == 128  # sparse_attention.py MiniMaxM3SparseBackend: kernel block size 128
    try:
        cfg = _c33(gpu="MI355X", head_size=128, model_arch="minimax_m3", kv_cache_dtype="nvfp4", minimax_m3_topk_blocks=16)
    except ConfigError:
        return  # nvfp4 is not a ROCm KV dtype in this release's domains
    with pytest.raises(NoValidBackendError) as err:
        solve_uncached(cfg)
    assert str(err.value).startswith("MiniMax M3 sparse attention supports an NVFP4 KV cache only with the SM100 "
                                     "MSA backend (kv_cache_dtype=nvfp4, topk_blocks=16)")


@pytest.mark.parametrize("gpu, block, backend", [("H100", 544, "FLASH_ATTN"), ("A100", 96, "FLASH_ATTN"),
                                                 ("B200", 2048, "FLASHINFER"), ("MI300X", 544, "ROCM_ATTN")])
def test_033_any_positive_block_size_is_a_question(gpu, block, backend):
    """vllm/config/cache.py (0.33): CacheConfig.block_size: int = Field(gt=0), so a hybrid model's aligned size
    (544) or any other integer reaches selection; the backends judge it (MultipleOf(16): 24 fits none on CUDA).
    Checked against vLLM 0.33.0's selector with the harness runner (selector and start-up modes)."""
    sel = solve_uncached(_c33(gpu=gpu, head_size=128, block_size=block))
    assert sel.backend == backend and sel.preferred_block_size == block
    with pytest.raises(NoValidBackendError):
        solve_uncached(_c33(gpu="H100", head_size=128, block_size=24))
    for bad in (0, -16, 2**21, True, 16.5):
        with pytest.raises(ConfigError) as err:
            _c33(gpu=gpu, block_size=bad)
        assert err.value.field == "block_size"
    with pytest.raises(ConfigError) as old:  # 0.17's BlockSize literal (config/cache.py) stays a list
        Config(vllm="0.17", gpu=gpu, dtype="bfloat16", block_size=block)
    assert old.value.field == "block_size"


# vllm/v1/attention/backends/fa_utils.py get_flash_attn_version logs as it resolves; FLASH_ATTN's validation
# resolves it only where flash_attn.py asks: supports_kv_cache_dtype for fp8 / fp8_e4m3, supports_sink and
# supports_per_head_quant_scales when asked, supports_block_size for the Blackwell head-256 page, and
# supports_combination up to its first failing entry (never supports_head_size or supports_mm_prefix).
# Each case is a configuration vLLM 0.33.0's selector answered in the harness (seed 51205 draw, 5 Dec).
@pytest.mark.parametrize("kw, backend, line, logged", [
    (dict(gpu="B300", dtype="float32", head_size=160, block_size=256, flash_attn_version=3), "TRITON_ATTN",
     "Cannot use FA version 3 on Blackwell platform, defaulting to FA version 4 if supported, otherwise FA2.", False),
    (dict(compute_capability="8.9", dtype="float16", kv_cache_dtype="fp8_e5m2", head_size=64, use_mm_prefix=True,
          num_heads=64, flash_attn_version=4), "TRITON_ATTN",
     "Cannot use FA version 4 is not supported due to FA4 is only supported on devices with compute capability "
     "9.x, 10.x, or 11.x", False),
    (dict(compute_capability="7.5", dtype="float16", has_sink=True), "TRITON_ATTN",
     "Cannot use FA version 2 is not supported due to FA2 is only supported on devices with compute capability >= 8",
     True),
    (dict(compute_capability="10.0", dtype="float16", block_size=16, head_size=256, trtllm_available=False,
          dcp_size=4), "FLASHINFER",
     "FA4's Blackwell head_size=256 kernel does not support decode context parallelism, defaulting to FA version 2.",
     True),
])
def test_033_a_losing_flash_attn_logs_what_its_validation_resolves(kw, backend, line, logged):
    sel = solve_uncached(_c33(**{"dtype": "bfloat16", **kw}))
    assert sel.backend == backend
    assert (line in sel.warnings) == logged, sel.warnings


def test_033_the_csp_path_applies_rocms_request_fallback_too():
    """platforms/rocm.py: a TurboQuant run's refused request is replaced by automatic selection when its reasons
    are exactly the KV-dtype ones ([[platforms.rocm.request_fallbacks]] only_reasons); solve_csp, the reference
    path, answers from the same data (found by the nightly test_compiled_equals_csp_equals_oracle)."""
    cfg = _c33(platform="rocm", rocm_arch="gfx90a", head_size=1, kv_cache_dtype="turboquant_k8v4",
               backend="FLEX_ATTENTION")
    assert solve_uncached(cfg).backend == solve_csp(cfg) == "TURBOQUANT"
