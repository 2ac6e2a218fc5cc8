"""The vLLM 0.34 rule set: what changed from 0.33, each fact naming the vLLM 0.34.0 file it comes from, and
the rule-language constructs 0.34 needed (default_block_size, start_block_size "preferred", inherit_checks,
le_field, a model_backend warning, a field's mla_layers), each on a tiny rule folder where it is new.

Every fact is asked of both releases where the point is the change (0.33's answer beside 0.34's), so a
rules edit that loses the difference fails here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from attnsolve import Config, InvalidBackendError, NoValidBackendError, RulesError, compare_versions, load_rules, \
    solve, use_rules
from attnsolve.cli import main
from attnsolve.errors import SelectionError
from attnsolve.rules import RULES_ROOT, rules_for

EX = Path(__file__).resolve().parent.parent / "examples"


def _answer(**kw: Any) -> tuple[Any, ...]:
    """(backend, variant, start-up block size, warnings) or ("ERR", vLLM's first line, reasons)."""
    try:
        s = solve(Config(**kw))
    except SelectionError as e:
        return ("ERR", str(e).splitlines()[0], {k: tuple(v) for k, v in e.reasons.items()})
    return (s.backend, s.variant, s.preferred_block_size, s.warnings)


# ------------------------------------------------------------------------------------ facts of 0.34.0

def test_034_default_block_size_is_64():
    """vllm/config/cache.py: CacheConfig.DEFAULT_BLOCK_SIZE = 64 (16 in 0.33.0); platforms/interface.py
    update_block_size_for_backend asks the chosen backend's get_preferred_block_size(DEFAULT_BLOCK_SIZE)."""
    assert rules_for("0.34").default_block_size == 64 and rules_for("0.33").default_block_size == 16
    assert _answer(vllm="0.33", gpu="H100", dtype="bfloat16", head_size=128)[:3] == ("FLASH_ATTN", "FA3", 16)
    assert _answer(vllm="0.34", gpu="H100", dtype="bfloat16", head_size=128)[:3] == ("FLASH_ATTN", "FA3", 64)
    # a user's --block-size is kept
    assert _answer(vllm="0.34", gpu="H100", dtype="bfloat16", head_size=128, block_size=16)[2] == 16
    # FLASHINFER_MLA's kernel pages [32, 64]: 32 (its smallest) under 0.33's 16, 64 now
    assert _answer(vllm="0.33", gpu="B200", dtype="bfloat16", use_mla=True)[:3] == ("FLASHINFER_MLA", None, 32)
    assert _answer(vllm="0.34", gpu="B200", dtype="bfloat16", use_mla=True)[:3] == ("FLASHINFER_MLA", None, 64)


def test_034_rocm_attn_prefers_16():
    """v1/attention/backends/rocm_attn.py: RocmAttentionBackend.get_preferred_block_size returns 16 (its native
    C++ kernel), whatever the default."""
    assert _answer(vllm="0.34", gpu="MI300X", dtype="bfloat16", head_size=128)[:3] == ("ROCM_ATTN", None, 16)


@pytest.mark.parametrize("gpu, kv, want", [
    ("RX 7900 XTX", "auto", "TRITON_ATTN"),             # gfx1100: swapped
    ("Radeon AI PRO R9700", "auto", "TRITON_ATTN"),     # gfx1201: swapped
    ("RX 7900 XTX", "fp8_e5m2", "ROCM_ATTN"),           # an fp8_e5m2 KV cache keeps ROCM_ATTN first
    ("Ryzen AI Max+ 395", "auto", "ROCM_ATTN"),         # gfx1151: not swapped
])
def test_034_triton_before_rocm_attn_on_gfx1100_and_gfx1201(gpu, kv, want):
    """platforms/rocm.py RocmPlatform.get_valid_backends: on gfx1201 and gfx1100 TRITON_ATTN and ROCM_ATTN swap
    places unless the KV cache is fp8_e5m2 (0.33 listed ROCM_ATTN first everywhere)."""
    assert _answer(vllm="0.33", gpu=gpu, dtype="bfloat16", head_size=128, kv_cache_dtype=kv)[0] == "ROCM_ATTN"
    assert _answer(vllm="0.34", gpu=gpu, dtype="bfloat16", head_size=128, kv_cache_dtype=kv)[0] == want


def test_034_aiter_on_every_rdna_gpu():
    """_aiter_ops.py rocm_aiter_ops.is_rdna_aiter_enabled: on_rdna() (gfx11xx and gfx12xx) since 0.34 (RDNA4 only
    before); platforms/rocm.py _get_backend_priorities appends ROCM_AITER_UNIFIED_ATTN after ROCM_ATTN on RDNA3
    and puts it first on RDNA4."""
    lists = {pl.name: pl for pl in rules_for("0.34").lists_for("rocm")}
    assert [e.backend for e in lists["ROCm standard, RDNA3 with AITER on"].entries[:3]] == [
        "ROCM_ATTN", "ROCM_AITER_UNIFIED_ATTN", "TRITON_ATTN"]
    assert [e.backend for e in lists["ROCm standard, RDNA4 with AITER on"].entries[:3]] == [
        "ROCM_AITER_UNIFIED_ATTN", "ROCM_ATTN", "TRITON_ATTN"]
    kw = dict(gpu="Ryzen AI Max+ 395", dtype="bfloat16", head_size=128, rocm_use_aiter=True)
    assert solve(Config(vllm="0.34", **kw)).priority_list == "ROCm standard, RDNA3 with AITER on"
    assert solve(Config(vllm="0.33", **kw)).priority_list == "ROCm standard"


def test_034_attention_type_prints_as_its_value():
    """v1/attention/backend.py: AttentionType is a StrEnum in 0.34, so "attention type {attn_type} not supported"
    prints the value (0.33's str Enum printed AttentionType.ENCODER)."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=128, attn_type="encoder", backend="FLASHINFER")
    assert _answer(vllm="0.33", **kw)[2] == {"FLASHINFER": ("attention type AttentionType.ENCODER not supported",)}
    assert _answer(vllm="0.34", **kw)[2] == {"FLASHINFER": ("attention type encoder not supported",)}


def test_034_flash_attn_sm90_d512_fp8_checks():
    """v1/attention/backends/flash_attn.py FlashAttentionBackend.supports_combination: on SM 9.0 with a quantized
    KV cache at head 512 a block size must divide by 64, and block sparsity is refused; the fp8 reason's text
    changed (fa_utils.flash_attn_supports_kv_cache_dtype)."""
    kw = dict(gpu="H100", dtype="bfloat16", head_size=512, kv_cache_dtype="fp8", backend="FLASH_ATTN")
    assert _answer(vllm="0.34", block_size=16, **kw)[2]["FLASH_ATTN"] == (
        "block_size not supported", "SM90 d512 FP8 KV requires a block size divisible by 64")
    assert _answer(vllm="0.33", block_size=16, **kw)[2]["FLASH_ATTN"] == ("block_size not supported",)
    assert _answer(vllm="0.34", block_size=64, **kw)[0] == "FLASH_ATTN"
    fp8 = dict(gpu="A100", dtype="bfloat16", head_size=128, kv_cache_dtype="fp8", backend="FLASH_ATTN")
    assert "FP8 KV requires FA3 (SM90), equal-d512 FA4 (SM90), or FA4 (SM100)." in _answer(vllm="0.34", **fp8)[2][
        "FLASH_ATTN"]


def test_034_diffkv_fp8_check_uses_v_head_128():
    """flash_attn.py supports_combination passes head_size_v=cls.head_size_v (FlashAttentionDiffKVBackend: 128):
    on SM 10.x FA4 keeps head 192 with V 128 (fa_utils.get_flash_attn_version's TMEM rule), so an fp8 KV cache is
    accepted there, where 0.33 (head_size_v=head_size) resolved FA2 and refused it."""
    kw = dict(gpu="B200", dtype="bfloat16", head_size=192, kv_cache_dtype="fp8", backend="FLASH_ATTN_DIFFKV")
    assert _answer(vllm="0.33", **kw)[0] == "ERR"
    assert _answer(vllm="0.34", **kw)[0] == "FLASH_ATTN_DIFFKV"
    # FLASH_ATTN itself (head_size_v None) still refuses it
    assert _answer(vllm="0.34", **dict(kw, backend="FLASH_ATTN"))[0] == "ERR"
    # sinks at a head other than 128 upgrade FA3 to FA4 on SM 9.x for DIFFKV's call, so fp8 fails there
    sm90 = dict(gpu="H100", dtype="bfloat16", head_size=192, kv_cache_dtype="fp8", has_sink=True,
                backend="FLASH_ATTN_DIFFKV")
    assert _answer(vllm="0.34", **sm90)[0] == "ERR"
    assert _answer(vllm="0.34", **dict(sm90, head_size=128))[0] == "FLASH_ATTN_DIFFKV"


@pytest.mark.parametrize("release", ["0.33", "0.34"])
def test_diffkv_reports_the_version_its_layer_runs(release):
    """v1/attention/backends/flash_attn_diffkv.py FlashAttentionDiffKVImpl.__init__ (0.33.0 and 0.34.0): the layer
    re-derives its FA version with the class's V head size (MiMo-V2 sets its v_head_dim, else 128), so MiMo-V2's
    192/128 layers run FA4 on a B200, where FLASH_ATTN's own version at head 192 is FA2 (TMEM)."""
    kw = dict(vllm=release, dtype="bfloat16", head_size=192, head_size_v=128, model_route="mimo_v2")
    assert str(solve(Config(gpu="B200", **kw))) == "FLASH_ATTN_DIFFKV (FA4)"
    assert str(solve(Config(gpu="H100", **kw))) == "FLASH_ATTN_DIFFKV (FA3)"
    # requested without a model: V 128, so head 256 runs FA2 on SM 10.x; sinks with V != K upgrade FA3 on SM 9.x
    ask = dict(vllm=release, dtype="bfloat16", backend="FLASH_ATTN_DIFFKV")
    assert solve(Config(gpu="B200", head_size=256, **ask)).variant == "FA2"
    assert solve(Config(gpu="H100", head_size=64, has_sink=True, **ask)).variant == "FA4"
    assert solve(Config(gpu="H100", head_size=128, has_sink=True, **ask)).variant == "FA3"
    assert solve(Config(gpu="A100", head_size=128, **ask)).variant == "FA2"


def test_034_new_explicit_backends():
    """v1/attention/backends/registry.py gains FLASHINFER_TS (flashinfer_ts.py: SM 10.0/10.3/10.7, heads 64/128/256,
    pages 16-128, dense only, no sinks) and KIMI_K3_KV_BALANCED_MLA (models/kimi_k3/nvidia/kv_balanced_mla/
    backend.py: SM 10.x, bf16, fp8 KV, pages 32/64, dims (128, 64, 128, 512)); neither is in a priority list."""
    r = rules_for("0.34")
    assert r.backends["FLASHINFER_TS"].explicit_only and r.backends["KIMI_K3_KV_BALANCED_MLA"].explicit_only
    assert "FLASHINFER_TS" not in rules_for("0.33").backends
    assert _answer(vllm="0.34", gpu="B200", dtype="bfloat16", head_size=128, backend="FLASHINFER_TS")[0] == "FLASHINFER_TS"
    assert _answer(vllm="0.34", gpu="H100", dtype="bfloat16", head_size=128, backend="FLASHINFER_TS")[2] == {
        "FLASHINFER_TS": ("compute capability not supported",)}
    assert "FLASHINFER_TS does not support attention sinks" in _answer(
        vllm="0.34", gpu="B200", dtype="bfloat16", head_size=128, has_sink=True, backend="FLASHINFER_TS")[2][
        "FLASHINFER_TS"]
    kimi = dict(gpu="B200", dtype="bfloat16", use_mla=True, kv_cache_dtype="fp8", backend="KIMI_K3_KV_BALANCED_MLA")
    assert _answer(vllm="0.34", **kimi)[:3] == ("KIMI_K3_KV_BALANCED_MLA", None, 64)
    dims = dict(qk_nope_head_dim=192, qk_rope_head_dim=64, v_head_dim=128, kv_lora_rank=512)
    assert _answer(vllm="0.34", **kimi, **dims)[2]["KIMI_K3_KV_BALANCED_MLA"] == (
        "needs MLA dimensions (qk_nope_head_dim, qk_rope_head_dim, v_head_dim, kv_lora_rank) = (128, 64, 128, 512), "
        "got (192, 64, 128, 512)",)


def test_034_b12x_drops_head_64():
    """v1/attention/backends/b12x.py get_supported_head_sizes: [128, 192, 256] (head 64 excluded until
    flashinfer-ai/flashinfer#6977 is fixed)."""
    kw = dict(gpu="RTX 5090", dtype="bfloat16", head_size=64, backend="B12X")
    assert _answer(vllm="0.33", **kw)[0] == "B12X"
    assert _answer(vllm="0.34", **kw)[2] == {"B12X": ("head_size not supported",)}


def test_034_triton_mla_serves_sliding_windows():
    """v1/attention/backends/mla/triton_mla.py TritonMLABackend.supports_sliding_window: True (decode only)."""
    kw = dict(gpu="A100", dtype="bfloat16", use_mla=True, has_sliding_window=True)
    assert _answer(vllm="0.33", **kw)[0] == "ERR"
    assert _answer(vllm="0.34", **kw)[0] == "TRITON_MLA"


def test_034_sliding_window_mla_refuses_packed_deepseek_kv():
    """model_executor/layers/attention/mla_attention.py MLAAttention.__init__: "Sliding-window MLA does not support
    kv_cache_dtype=..." for fp8_ds_mla / nvfp4_ds_mla, before the layer selects (so it is the start-up error)."""
    with pytest.raises(NoValidBackendError) as e:
        solve(Config(vllm="0.34", gpu="H100", dtype="bfloat16", use_mla=True, use_sparse=True, has_sliding_window=True,
                     kv_cache_dtype="fp8_ds_mla"))
    assert e.value.startup_error == "Sliding-window MLA does not support kv_cache_dtype=fp8_ds_mla."


def test_034_dsv41_flashinfer_sparse_pages_on_sm12():
    """models/deepseek_v41/nvidia/flashinfer_sparse.py get_supported_kernel_block_sizes: [64] on SM 12.x (its
    kernels instantiate 64-token blocks only), [128] elsewhere."""
    kw = dict(dtype="bfloat16", use_mla=True, use_sparse=True, head_size=512, kv_cache_dtype="fp8",
              backend="FLASHINFER_MLA_SPARSE_DSV41")
    assert _answer(vllm="0.33", gpu="RTX 5090", **kw)[2] == 128
    assert _answer(vllm="0.34", gpu="RTX 5090", **kw)[2] == 64
    assert _answer(vllm="0.34", gpu="B200", **dict(kw, kv_cache_dtype="fp8_e4m3"))[2] == 128


def test_034_mimo_v2_honours_requests_that_serve_v_not_k():
    """model_executor/models/mimo_v2.py: a requested backend whose class's supports_head_size_v(head, v) holds is
    used; any other request gets the DiffKV auto-pick, with a warning."""
    kw = dict(dtype="bfloat16", head_size=192, head_size_v=128, model_route="mimo_v2")
    s = solve(Config(vllm="0.34", gpu="H100", backend="FLASH_ATTN", **kw))
    assert s.backend == "FLASH_ATTN_DIFFKV"
    assert s.warnings == ("FLASH_ATTN cannot serve head_size_v=128 != head_size=192; using the DiffKV auto-pick "
                          "instead.",)
    assert solve(Config(vllm="0.33", gpu="H100", backend="FLASH_ATTN", **kw)).warnings == ()
    assert solve(Config(vllm="0.34", gpu="MI300X", backend="ROCM_AITER_UNIFIED_ATTN", **kw)).backend == \
        "ROCM_AITER_UNIFIED_ATTN"
    assert solve(Config(vllm="0.33", gpu="MI300X", backend="ROCM_AITER_UNIFIED_ATTN", **kw)).backend == \
        "TRITON_ATTN_DIFFKV"


def test_034_aiter_mla_adaptive_verification_with_dcp_raises_without_aiter():
    """v1/attention/backends/mla/rocm_aiter_mla.py AiterMLABackend.validate_configuration raises for adaptive
    verification with DCP where no verify path exists (no AITER: no segmented MLA decode), as on CUDA."""
    with pytest.raises(InvalidBackendError) as e:
        solve(Config(vllm="0.34", gpu="H100", dtype="bfloat16", use_mla=True, backend="ROCM_AITER_MLA",
                     use_adaptive_verification=True, dcp_size=2))
    assert str(e.value).startswith("adaptive verification with decode context parallelism needs the round-robin asm "
                                   "decode, segmented MLA or the gfx942 Triton verify.")


def test_034_rocm_flydsl_fp8_prefill_is_requestable():
    """v1/attention/backends/mla/prefill/registry.py: ROCM_AITER_FLYDSL_FP8 (aiter_flydsl_fp8.py: gfx950,
    bfloat16, AITER on); no platform list names it."""
    kw = dict(dtype="bfloat16", use_mla=True, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
              rocm_use_aiter=True, mla_prefill_backend="ROCM_AITER_FLYDSL_FP8")
    assert solve(Config(vllm="0.34", gpu="MI355X", **kw), role="mla_prefill").backend == "ROCM_AITER_FLYDSL_FP8_PREFILL"
    with pytest.raises(SelectionError):
        solve(Config(vllm="0.34", gpu="MI300X", **kw), role="mla_prefill")


def test_034_upgrade_reports_the_block_size():
    """compare_versions names a changed start-up block size (what every 0.33 -> 0.34 upgrade meets)."""
    cmp = compare_versions(Config(gpu="H100", dtype="bfloat16", head_size=128, kv_cache_dtype="auto", use_mla=False,
                                  has_sink=False), "0.33", "0.34")
    assert cmp.differs and cmp.old.block_size == 16 and cmp.new.block_size == 64
    assert cmp.why == ("KV cache block size at start-up in vLLM 0.34: 64 (was 16)",)


def test_034_windowed_mla_model_passes_its_window(tmp_path, capsys):
    """model_executor/layers/attention/mla_attention.py (0.34): MLAAttention passes has_sliding_window to
    get_attn_backend (0.33's did not: fields.toml mla_layers = false there)."""
    cfg = json.loads((EX / "deepseek-v3.2.json").read_text())
    cfg["sliding_window"] = 4096
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    main(["--json", "select", "--vllm", "0.34", "--gpu", "H100", "--model", str(path), "-tp", "8"])
    res = json.loads(capsys.readouterr().out)
    assert res["result"]["config"].get("has_sliding_window") is True
    assert not rules_for("0.33").fields["has_sliding_window"].mla_layers
    assert rules_for("0.34").fields["has_sliding_window"].mla_layers


# ------------------------------------------------------------------------------ constructs 0.34 needed

def _folder(tmp_path: Path, edits: tuple[tuple[str, str, str], ...], extra: str = "") -> Path:
    root = tmp_path / "rules"
    root.mkdir(parents=True)
    for f in (RULES_ROOT / "vllm-0.34").glob("*.toml"):
        shutil.copy(f, root / f.name)
    for name, old, new in edits:
        text = (root / name).read_text()
        assert old in text, f"{old!r} not in {name}: the test's edit needs updating"
        (root / name).write_text(text.replace(old, new, 1))
    if extra:
        (root / "zz_test.toml").write_text(extra)
    return root


def test_default_block_size_is_data(tmp_path):
    root = _folder(tmp_path, (("ruleset.toml", "default_block_size = 64", "default_block_size = 32"),))
    with use_rules(load_rules(root)):
        assert solve(Config(gpu="H100", dtype="bfloat16", head_size=128)).preferred_block_size == 32
    bad = _folder(tmp_path / "bad", (("ruleset.toml", "default_block_size = 64", "default_block_size = 0"),))
    with pytest.raises(RulesError, match="default_block_size"):
        load_rules(bad)


def test_inherit_checks_false_replaces_the_parents_checks(tmp_path):
    root = _folder(tmp_path, (("cuda.toml", "inherit_checks = false\n", ""),))
    with use_rules(load_rules(root)):  # appended to FLASH_ATTN's: its fp8 check refuses again
        assert _answer(gpu="B200", dtype="bfloat16", head_size=192, kv_cache_dtype="fp8",
                       backend="FLASH_ATTN_DIFFKV")[0] == "ERR"


def test_le_field_compares_integers(tmp_path):
    extra = '''
[[platforms.cuda.request_errors]]
when = { backend = "TRITON_ATTN", head_size_v = { le_field = "head_size" } }
message = "narrow V"
'''
    with use_rules(load_rules(_folder(tmp_path, (), extra))):
        with pytest.raises(InvalidBackendError, match="narrow V"):
            solve(Config(gpu="H100", dtype="bfloat16", head_size=128, head_size_v=64, backend="TRITON_ATTN"))
        assert solve(Config(gpu="H100", dtype="bfloat16", head_size=128, head_size_v=256,
                            backend="TRITON_ATTN")).backend == "TRITON_ATTN"
        assert solve(Config(gpu="H100", dtype="bfloat16", head_size=128, backend="TRITON_ATTN")).backend == "TRITON_ATTN"


def test_start_block_size_preferred_defers_to_the_default_rule(tmp_path):
    root = _folder(tmp_path, (("xpu.toml", '  { value = "preferred" },', '  { value = 48 },'),))
    kw = dict(platform="xpu", dtype="bfloat16", head_size=128, backend="TRITON_ATTN")
    assert solve(Config(vllm="0.34", **kw)).preferred_block_size == 64  # "preferred": 64 where accepted
    with use_rules(load_rules(root)):
        assert solve(Config(**kw)).preferred_block_size == 48
