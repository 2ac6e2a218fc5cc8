"""One test per vLLM fact the rules must encode (settled-facts.md first, then the semantics file),
the seed document's worked examples, and every place where the seed tables and vLLM's source
disagree (the rules follow the source).
"""

from __future__ import annotations

import pytest

from attnsolve import Config, ConfigError, InvalidBackendError, NoValidBackendError, solve
from attnsolve.rules import rules_for

# vLLM 0.17's facts (settled-facts.md, vllm-selection-semantics.md): 0.17 answers what names no release.
pytestmark = pytest.mark.vllm("0.17")

RULES = rules_for("0.17")
R1 = dict(qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)


def cuda(cc: str = "9.0", **kw) -> Config:
    kw.setdefault("dtype", "bfloat16")
    return Config(platform="cuda", compute_capability=cc, **kw)


def mla(cc: str = "9.0", **kw) -> Config:
    return cuda(cc, use_mla=True, **kw)


def rocm(**kw) -> Config:
    kw.setdefault("dtype", "bfloat16")
    return Config(platform="rocm", **kw)


def cpu(**kw) -> Config:
    kw.setdefault("dtype", "bfloat16")
    return Config(platform="cpu", **kw)


def reasons_for(cfg: Config, role: str | None = None) -> tuple[str, ...]:
    """The reasons a manual request (cfg.backend) is refused with; () if it is accepted."""
    assert cfg.backend is not None
    try:
        sel = solve(cfg, role=role)
    except InvalidBackendError as e:
        assert e.backend == cfg.backend
        return e.reasons[cfg.backend]
    assert sel.backend == cfg.backend and sel.manual
    return ()


def picked(cfg: Config, role: str | None = None) -> str:
    return solve(cfg, role=role).backend


# -- seed document examples (issue 3, "Done when") --------------------------------------------------

def test_seed_sm90_bf16_head128_is_flash_attn_fa3():
    sel = solve(cuda("9.0", head_size=128))
    assert (sel.backend, sel.variant) == ("FLASH_ATTN", "FA3")
    assert sel.rejected == () and not sel.manual


def test_seed_sm100_is_flashinfer():
    sel = solve(cuda("10.0", head_size=128))
    assert sel.backend == "FLASHINFER"
    assert sel.variant == "TRTLLM"  # TRT-LLM kernels are usable on SM 10.x by default


def test_seed_sm80_fp8_kv_is_flashinfer():
    sel = solve(cuda("8.0", head_size=128, kv_cache_dtype="fp8"))
    assert (sel.backend, sel.variant) == ("FLASHINFER", "NATIVE")
    assert [(r.backend, r.reasons) for r in sel.rejected] == [("FLASH_ATTN", ("kv_cache_dtype not supported",))]


def test_seed_fp32_head16_sm90_is_flex_attention():
    # vLLM's own test: TRITON_ATTN requires head_size >= 32, so fp32 + head 16 falls through to FLEX_ATTENTION.
    sel = solve(cuda("9.0", dtype="float32", head_size=16))
    assert sel.backend == "FLEX_ATTENTION"
    assert [r.backend for r in sel.rejected] == ["FLASH_ATTN", "FLASHINFER", "TRITON_ATTN"]
    assert dict((r.backend, r.reasons) for r in sel.rejected)["TRITON_ATTN"] == ("head_size not supported",)


def test_seed_mla_sm100_is_flashinfer_mla():
    assert picked(mla("10.0")) == "FLASHINFER_MLA"


def test_seed_cpu_is_cpu_attn():
    sel = solve(cpu())
    assert sel.backend == "CPU_ATTN" and sel.warnings == ()


def test_seed_cpu_mla_is_an_error():
    with pytest.raises(NoValidBackendError) as info:
        solve(cpu(use_mla=True))
    assert str(info.value).startswith("MLA is not supported on CPU.")


def test_seed_priority_lists_match_the_doc():
    # The seed doc's CUDA priority tables (the sparse pair in its default order).
    lists = {pl.name: [e.backend for e in pl.entries] for pl in RULES.lists_for("cuda")}
    assert lists["standard, SM 10.x"] == ["FLASHINFER", "FLASH_ATTN", "TRITON_ATTN", "FLEX_ATTENTION"]
    assert lists["standard, other GPUs"] == ["FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION"]
    assert lists["MLA, SM 10.x"] == ["FLASHINFER_MLA", "CUTLASS_MLA", "FLASH_ATTN_MLA", "FLASHMLA", "TRITON_MLA",
                                     "FLASHMLA_SPARSE", "FLASHINFER_MLA_SPARSE"]
    assert lists["MLA, other GPUs"] == ["FLASH_ATTN_MLA", "FLASHMLA", "FLASHINFER_MLA", "TRITON_MLA", "FLASHMLA_SPARSE"]


SEED_BACKENDS = [
    "CPU_ATTN", "FLASHINFER", "FLASH_ATTN", "FLASH_ATTN_DIFFKV", "FLEX_ATTENTION", "ROCM_AITER_FA",
    "ROCM_AITER_UNIFIED_ATTN", "ROCM_ATTN", "TREE_ATTN", "TRITON_ATTN", "CUTLASS_MLA", "FLASHINFER_MLA",
    "FLASHINFER_MLA_SPARSE", "FLASHMLA", "FLASHMLA_SPARSE", "FLASH_ATTN_MLA", "ROCM_AITER_MLA",
    "ROCM_AITER_MLA_SPARSE", "ROCM_AITER_TRITON_MLA", "TRITON_MLA",
]


def test_every_seed_backend_is_in_the_rules():
    assert set(SEED_BACKENDS) <= set(RULES.backends)
    roles = {b.role for b in RULES.backends.values()}
    assert roles == {"decode", "mla_prefill"}
    prefill = {n for n, b in RULES.backends.items() if b.role == "mla_prefill"}
    assert len(prefill) == 4  # TRT-LLM ragged, FlashInfer, cuDNN, FlashAttention


# -- FLASH_ATTN ------------------------------------------------------------------------------------

@pytest.mark.parametrize("head", [8, 64, 72, 128, 200, 256])
def test_flash_attn_accepts_head_sizes_multiple_of_8_up_to_256(head):
    assert reasons_for(cuda("9.0", head_size=head, backend="FLASH_ATTN")) == ()


@pytest.mark.parametrize("head", [100, 12, 260, 264, 512])
def test_flash_attn_rejects_head_size_not_multiple_of_8_or_above_256(head):
    assert reasons_for(cuda("9.0", head_size=head, backend="FLASH_ATTN")) == ("head_size not supported",)


def test_flash_attn_sink_needs_cc_9():
    assert reasons_for(cuda("8.0", has_sink=True, backend="FLASH_ATTN")) == (
        "sink setting not supported", "sink not supported on compute capability < 9.0")
    assert reasons_for(cuda("9.0", has_sink=True, backend="FLASH_ATTN")) == ()
    # FA2 forced on Hopper: the sink is refused by FA2, but not for the compute capability.
    assert reasons_for(cuda("9.0", has_sink=True, backend="FLASH_ATTN", flash_attn_version=2)) == (
        "sink setting not supported",)
    assert picked(cuda("8.0", has_sink=True)) == "TRITON_ATTN"


@pytest.mark.parametrize("kv", ["fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc"])
def test_flash_attn_fp8_kv_only_with_fa3_on_sm9(kv):
    sel = solve(cuda("9.0", kv_cache_dtype=kv))
    assert (sel.backend, sel.variant) == ("FLASH_ATTN", "FA3")
    for cc in ("8.0", "8.9", "10.0", "12.0"):
        assert reasons_for(cuda(cc, kv_cache_dtype=kv, backend="FLASH_ATTN")) == ("kv_cache_dtype not supported",)
    assert reasons_for(cuda("9.0", kv_cache_dtype=kv, backend="FLASH_ATTN", flash_attn_version=2)) == (
        "kv_cache_dtype not supported",)


def test_flash_attn_version_defaults():
    """vLLM 0.17 (fa_utils.get_flash_attn_version): FA3 on 9.x, FA4 on 10.x (head <= 128), FA2 elsewhere."""
    assert solve(cuda("9.0")).variant == "FA3"
    for cc in ("8.0", "8.6", "8.9", "12.0"):
        assert solve(cuda(cc)).variant == "FA2", cc
    assert solve(cuda("10.0", backend="FLASH_ATTN")).variant == "FA4"
    assert solve(cuda("9.0", flash_attn_version=2)).variant == "FA2"
    sel = solve(cuda("10.0", backend="FLASH_ATTN", flash_attn_version=3))
    assert sel.variant == "FA4"
    assert any("Cannot use FA version 3 on Blackwell platform" in w for w in sel.warnings)


def test_flash_attn_cc_floor_and_dtype():
    assert reasons_for(cuda("7.5", dtype="float16", backend="FLASH_ATTN")) == ("compute capability not supported",)
    assert reasons_for(cuda("9.0", dtype="float32", backend="FLASH_ATTN")) == ("dtype not supported",)


# -- TRITON_ATTN -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("head", "ok"), [(16, False), (31, False), (32, True), (40, True), (100, True), (1024, True)])
def test_triton_attn_head_size_at_least_32(head, ok):
    got = reasons_for(cuda("9.0", head_size=head, backend="TRITON_ATTN"))
    assert got == (() if ok else ("head_size not supported",))


# -- MLA -------------------------------------------------------------------------------------------

DENSE_MLA = ["CUTLASS_MLA", "FLASHINFER_MLA", "FLASHMLA", "FLASH_ATTN_MLA", "TRITON_MLA"]


def _home_cc(backend: str) -> str:
    return "10.0" if backend in ("CUTLASS_MLA", "FLASHINFER_MLA") else "9.0"


@pytest.mark.parametrize("backend", DENSE_MLA)
def test_mla_head_size_is_576(backend):
    assert reasons_for(mla(_home_cc(backend), backend=backend)) == ()
    assert mla().head_size == 576  # an MLA layer's default head size
    for head in (128, 512, 64):
        assert reasons_for(mla(_home_cc(backend), backend=backend, head_size=head)) == ("head_size not supported",)


def test_flashmla_dense_is_hopper_only():
    assert reasons_for(mla("9.0", backend="FLASHMLA")) == ()
    assert reasons_for(mla("10.0", backend="FLASHMLA")) == ("FlashMLA Dense is only supported on Hopper devices.",)
    assert reasons_for(mla("8.0", backend="FLASHMLA")) == (
        "compute capability not supported", "FlashMLA Dense is only supported on Hopper devices.")
    # vLLM 0.17 drops the block size in selection: CUTLASS_MLA wins, and start-up forces its block size 128
    sel = solve(mla("10.0", block_size=64, qk_nope_head_dim=64))
    assert (sel.backend, sel.preferred_block_size) == ("CUTLASS_MLA", 128)


@pytest.mark.parametrize(("cc", "expected"), [
    ("7.5", "FLASHINFER"), ("8.0", "FLASH_ATTN"), ("8.9", "FLASH_ATTN"), ("9.0", "FLASH_ATTN"), ("10.0", "FLASHINFER"),
    ("10.3", "FLASHINFER"), ("11.0", "FLASH_ATTN"), ("12.0", "FLASH_ATTN"), ("12.1", "FLASH_ATTN"),
])
def test_standard_list_switches_on_major_10_exactly(cc, expected):
    assert picked(cuda(cc, dtype="float16")) == expected


def test_mla_default_on_hopper_and_ampere():
    assert picked(mla("9.0")) == "FLASH_ATTN_MLA"
    assert picked(mla("9.0", kv_cache_dtype="fp8")) == "FLASHMLA"
    assert picked(mla("8.0")) == "TRITON_MLA"
    assert picked(mla("12.0")) == "TRITON_MLA"


def test_flashinfer_mla_qk_nope_checked_only_when_given():
    assert picked(mla("10.0")) == "FLASHINFER_MLA"
    assert picked(mla("10.0", qk_nope_head_dim=128)) == "FLASHINFER_MLA"
    sel = solve(mla("10.0", qk_nope_head_dim=64))
    assert sel.backend == "CUTLASS_MLA"
    assert reasons_for(mla("10.0", qk_nope_head_dim=64, backend="FLASHINFER_MLA")) == (
        "FlashInfer MLA kernel requires qk_nope_head_dim == 128, but got 64",)


def test_flashinfer_mla_sparse_model_checks_only_with_model_facts():
    base = dict(use_sparse=True, backend="FLASHINFER_MLA_SPARSE")
    assert reasons_for(mla("10.0", **base)) == ()
    assert reasons_for(mla("10.0", **base, qk_nope_head_dim=128, index_topk=2048)) == ()
    assert reasons_for(mla("10.0", **base, qk_nope_head_dim=128)) == (
        "FlashInfer MLA Sparse requires model with index_topk config",)
    assert reasons_for(mla("10.0", **base, qk_nope_head_dim=64, index_topk=2048)) == (
        "FlashInfer MLA Sparse kernel requires qk_nope_head_dim == 128, but got 64",)


@pytest.mark.parametrize(("num_heads", "first"), [
    (None, "FLASHMLA_SPARSE"), (1, "FLASHINFER_MLA_SPARSE"), (16, "FLASHINFER_MLA_SPARSE"),
    (17, "FLASHMLA_SPARSE"), (128, "FLASHMLA_SPARSE"),
])
@pytest.mark.parametrize("cc", ["10.0", "10.3"])
def test_sm10_sparse_order_by_num_heads(num_heads, first, cc):
    sel = solve(mla(cc, use_sparse=True, num_heads=num_heads))
    assert sel.backend == first
    assert "FLASHINFER_MLA_SPARSE" not in [r.backend for r in sel.rejected]


def test_sparse_off_sm10_uses_flashmla_sparse_only():
    assert picked(mla("9.0", use_sparse=True, num_heads=8)) == "FLASHMLA_SPARSE"
    with pytest.raises(NoValidBackendError) as info:
        solve(mla("8.0", use_sparse=True))
    assert "FLASHINFER_MLA_SPARSE" not in info.value.reasons  # not in the non-SM100 list at all


def test_flashmla_sparse_rejects_plain_fp8():
    base = dict(use_sparse=True, backend="FLASHMLA_SPARSE")
    assert reasons_for(mla("9.0", **base, kv_cache_dtype="fp8")) == ("kv_cache_dtype not supported",)
    assert reasons_for(mla("9.0", **base, kv_cache_dtype="fp8_ds_mla")) == ()
    assert reasons_for(mla("9.0", **base, kv_cache_dtype="auto")) == ()
    for cc in ("9.0", "10.0"):
        with pytest.raises(NoValidBackendError):
            solve(mla(cc, use_sparse=True, kv_cache_dtype="fp8"))
    assert picked(mla("9.0", use_sparse=True, kv_cache_dtype="fp8_ds_mla")) == "FLASHMLA_SPARSE"


def test_flashmla_sparse_is_bf16_only():
    assert reasons_for(mla("9.0", dtype="float16", use_sparse=True, backend="FLASHMLA_SPARSE")) == ("dtype not supported",)


# -- FLASHINFER ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("cc", "ok"), [
    ("7.0", False), ("7.4", False), ("7.5", True), ("8.0", True), ("8.9", True), ("9.0", True), ("10.0", True),
    ("11.0", True), ("12.0", True), ("12.1", True), ("12.2", False), ("13.0", False),
])
def test_flashinfer_compute_capability_7_5_to_12_1(cc, ok):
    got = reasons_for(cuda(cc, dtype="float16", backend="FLASHINFER"))
    assert got == (() if ok else ("compute capability not supported",))


@pytest.mark.parametrize(("cc", "extra", "ok"), [
    ("10.0", {}, True), ("10.3", {}, True), ("10.0", {"use_trtllm_attention": True}, True),
    ("10.0", {"use_trtllm_attention": False}, False), ("10.0", {"trtllm_available": False}, False),
    ("9.0", {}, False), ("9.0", {"use_trtllm_attention": True}, False), ("12.0", {}, False), ("8.0", {}, False),
])
def test_flashinfer_sinks_only_with_trtllm(cc, extra, ok):
    cfg = cuda(cc, has_sink=True, backend="FLASHINFER", **extra)
    assert reasons_for(cfg) == (() if ok else ("sink setting not supported",))
    if ok:
        assert solve(cfg).variant == "TRTLLM"


def test_flashinfer_variant_native_off_blackwell():
    assert solve(cuda("9.0", backend="FLASHINFER")).variant == "NATIVE"
    assert solve(cuda("10.0", use_trtllm_attention=False)).variant == "NATIVE"


# -- block sizes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, 2, 4, 24, 48, 512, 544, 1024])
def test_block_size_must_be_an_allowed_size(bad):
    with pytest.raises(ConfigError) as info:
        cuda("9.0", block_size=bad)
    assert info.value.field == "block_size"


@pytest.mark.parametrize(("backend", "cc", "accepted"), [
    ("FLASH_ATTN", "9.0", {16, 32, 64, 128, 256}),
    ("FLASHINFER", "9.0", {16, 32, 64, 128, 256}),
    ("TRITON_ATTN", "9.0", {16, 32, 64, 128, 256}),
    ("FLEX_ATTENTION", "9.0", {1, 8, 16, 32, 64, 128, 256}),
    ("CUTLASS_MLA", "10.0", {128, 256}),
    ("FLASHMLA", "9.0", {64, 128, 256}),
    ("FLASHINFER_MLA", "10.0", {32, 64, 128, 256}),
    ("FLASH_ATTN_MLA", "9.0", {16, 32, 64, 128, 256}),
    ("TRITON_MLA", "9.0", {1, 8, 16, 32, 64, 128, 256}),
])
def test_block_size_multiple_of_a_kernel_size(backend, cc, accepted):
    """vLLM 0.17: the CUDA selector drops the block size; start-up then sets it (the MLA hook forces
    FlashMLA's 64, CUTLASS_MLA's 128, FlashInfer MLA's 64 unless 32 or a multiple of 64) and fails with
    "No common block size" when the chosen kernels cannot serve it (vllm/v1/worker/utils.py)."""
    is_mla = RULES.backends[backend].caps.mla
    forced = backend in ("CUTLASS_MLA", "FLASHMLA", "FLASHINFER_MLA")
    for bs in RULES.domains["block_size"]:
        cfg = (mla if is_mla else cuda)(cc, block_size=bs, backend=backend)
        assert reasons_for(cfg) == (), (backend, bs)
        sel = solve(cfg)
        if forced:
            assert sel.startup_error is None and sel.preferred_block_size in accepted, (backend, bs)
        else:
            assert sel.preferred_block_size == bs
            assert (sel.startup_error is None) == (bs in accepted), (backend, bs)
            if bs not in accepted:
                assert sel.startup_error == f"No common block size for {bs}. "
    # unset block size: the start-up block size is set
    sel = solve((mla if is_mla else cuda)(cc, backend=backend))
    assert sel.preferred_block_size == (64 if backend == "FLASHINFER_MLA" else 16 if 16 in accepted else min(accepted))


def test_given_block_size_does_not_constrain_automatic_selection():
    """vLLM 0.17's CudaPlatform.get_attn_backend_cls replaces the block size by None (0.18 keeps it)."""
    sel = solve(cuda("9.0", block_size=8))
    assert sel.backend == "FLASH_ATTN" and sel.startup_error == "No common block size for 8. "
    assert picked(mla("10.0", block_size=128)) == "FLASHINFER_MLA"
    sel = solve(mla("10.0", block_size=16))
    assert sel.backend == "FLASHINFER_MLA" and sel.preferred_block_size == 128 and sel.startup_error is None


# -- explicit-only backends ------------------------------------------------------------------------

EXPLICIT = sorted(n for n, b in RULES.backends.items() if b.explicit_only)


def test_explicit_only_backends_are_declared():
    assert {"TREE_ATTN", "FLASH_ATTN_DIFFKV"} <= set(EXPLICIT)


@pytest.mark.parametrize("backend", EXPLICIT)
def test_explicit_only_never_auto_selected(backend):
    for pl in RULES.lists:
        assert backend not in [c.backend for c in _auto_candidates(pl)]
    for cc in ("8.0", "9.0", "10.0", "12.0"):
        for kw in ({}, {"dtype": "float32", "head_size": 16}, {"has_sink": True}, {"block_size": 8}):
            sel = solve(cuda(cc, **kw))
            assert sel.backend != backend
            assert backend not in [r.backend for r in sel.rejected]


def _auto_candidates(pl):
    from attnsolve.solver.semantics import plan
    return plan(RULES, pl, None).candidates


@pytest.mark.parametrize(("backend", "cfg"), [
    ("TREE_ATTN", dict(platform="cuda", compute_capability="9.0", dtype="bfloat16", head_size=128)),
    ("FLASH_ATTN_DIFFKV", dict(platform="cuda", compute_capability="9.0", dtype="bfloat16", head_size=128)),
    ("ROCM_AITER_TRITON_MLA", dict(platform="rocm", dtype="bfloat16", use_mla=True)),
])
def test_explicit_only_manually_valid(backend, cfg):
    assert picked(Config(**cfg, backend=backend)) == backend


# -- CPU -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("head", [32, 80, 112, 256])
def test_cpu_supported_heads_no_warning(head):
    sel = solve(cpu(head_size=head, dtype="float32"))
    assert sel.backend == "CPU_ATTN" and sel.warnings == ()


def test_cpu_unsupported_head_size_warns_but_selects():
    sel = solve(cpu(head_size=48))
    assert sel.backend == "CPU_ATTN"
    assert any("head_size not supported" in w for w in sel.warnings)


@pytest.mark.parametrize("requested", ["FLASH_ATTN", "TRITON_ATTN", "flex_attention"])
def test_cpu_ignores_requested_backend_with_warning(requested):
    sel = solve(cpu(backend=requested))
    assert sel.backend == "CPU_ATTN"
    assert f"Cannot use AttentionBackendEnum.{requested.upper()} backend on CPU." in sel.warnings


def test_cpu_mla_and_sparse_errors():
    with pytest.raises(NoValidBackendError) as info:
        solve(cpu(use_mla=True))
    assert info.value.reasons == {"CPU_ATTN": ("MLA is not supported on CPU.",)}
    with pytest.raises(NoValidBackendError) as info:
        solve(cpu(use_mla=True, use_sparse=True))
    # vLLM checks MLA first; both refusals are on the exception
    assert str(info.value).startswith("MLA is not supported on CPU.")
    assert "Sparse Attention is not supported on CPU." in info.value.reasons["CPU_ATTN"]


# -- ROCm decision tree ----------------------------------------------------------------------------

@pytest.mark.parametrize(("kw", "expected"), [
    ({}, "TRITON_ATTN"),
    ({"rocm_use_aiter": True}, "ROCM_AITER_FA"),
    ({"rocm_use_aiter": True, "rocm_arch": "gfx90a"}, "ROCM_AITER_FA"),
    ({"rocm_use_aiter": True, "rocm_arch": "gfx950"}, "ROCM_AITER_FA"),
    ({"rocm_use_aiter": True, "rocm_arch": "gfx1100"}, "TRITON_ATTN"),
    ({"rocm_use_aiter": True, "rocm_use_aiter_mha": False}, "TRITON_ATTN"),
    ({"rocm_use_aiter": True, "rocm_use_aiter_unified_attention": True}, "ROCM_AITER_UNIFIED_ATTN"),
    ({"rocm_use_aiter_unified_attention": True}, "TRITON_ATTN"),
    ({"use_prefill_decode_attention": True}, "ROCM_ATTN"),
    ({"use_prefill_decode_attention": True, "rocm_use_aiter": True}, "ROCM_AITER_FA"),
    ({"use_prefill_decode_attention": True, "rocm_use_aiter": True, "rocm_arch": "gfx1201"}, "ROCM_ATTN"),
])
def test_rocm_standard_decision_tree(kw, expected):
    assert picked(rocm(**kw)) == expected


def test_rocm_does_not_validate_standard_backends():
    # ROCm's tree never calls validate_configuration: head 16 with fp32 still gets TRITON_ATTN.
    assert picked(rocm(dtype="float32", head_size=16)) == "TRITON_ATTN"
    assert picked(rocm(backend="ROCM_ATTN", head_size=80)) == "ROCM_ATTN"


@pytest.mark.parametrize("backend", ["FLEX_ATTENTION", "TRITON_ATTN", "ROCM_ATTN", "ROCM_AITER_UNIFIED_ATTN"])
def test_rocm_explicit_standard_accepted(backend):
    assert picked(rocm(backend=backend)) == backend


def test_rocm_aiter_fa_explicit_needs_gfx9():
    assert picked(rocm(backend="ROCM_AITER_FA", rocm_arch="gfx942")) == "ROCM_AITER_FA"
    with pytest.raises(InvalidBackendError) as info:
        solve(rocm(backend="ROCM_AITER_FA", rocm_arch="gfx1100"))
    assert str(info.value).startswith(
        "The selected backend, ROCM_AITER_FA, is only supported on gfx9 architectures.")


@pytest.mark.parametrize("backend", ["FLASH_ATTN", "FLASHINFER", "CPU_ATTN", "TREE_ATTN"])
def test_rocm_explicit_cuda_backend_is_not_supported(backend):
    with pytest.raises(InvalidBackendError) as info:
        solve(rocm(backend=backend))
    assert str(info.value).startswith(f"Attention backend {backend} is not supported on ROCm.")


@pytest.mark.parametrize(("kw", "expected"), [
    ({"block_size": 16}, "TRITON_MLA"),
    ({"block_size": 1}, "ROCM_AITER_MLA"),
    ({"block_size": 16, "rocm_use_aiter": True}, "ROCM_AITER_MLA"),
    ({"block_size": 16, "rocm_use_aiter": True, "rocm_use_aiter_mla": False}, "TRITON_MLA"),
    ({"block_size": 16, "rocm_use_aiter": True, "rocm_arch": "gfx1100"}, "TRITON_MLA"),
])
def test_rocm_mla_decision_tree(kw, expected):
    assert picked(rocm(use_mla=True, **kw)) == expected


def test_rocm_mla_default_unset_block_size_is_triton_mla():
    # vLLM: ROCM_AITER_MLA only if AITER MLA is enabled or block_size == 1; None != 1.
    assert picked(rocm(use_mla=True)) == "TRITON_MLA"


def test_rocm_explicit_triton_mla_with_unset_block_size():
    # vLLM refuses an explicit TRITON_MLA only for block_size == 1; an unset block size passes.
    assert picked(rocm(use_mla=True, backend="TRITON_MLA")) == "TRITON_MLA"


def test_rocm_mla_explicit_choices():
    assert picked(rocm(use_mla=True, backend="ROCM_AITER_MLA", block_size=16)) == "ROCM_AITER_MLA"
    assert picked(rocm(use_mla=True, backend="ROCM_AITER_TRITON_MLA", block_size=16)) == "ROCM_AITER_TRITON_MLA"
    assert picked(rocm(use_mla=True, backend="TRITON_MLA", block_size=16)) == "TRITON_MLA"
    with pytest.raises(InvalidBackendError) as info:
        solve(rocm(use_mla=True, backend="TRITON_MLA", block_size=1))
    assert "The selected backend, TRITON_MLA,does not support block size 1." in str(info.value)
    with pytest.raises(InvalidBackendError) as info:
        solve(rocm(use_mla=True, backend="FLASHMLA", block_size=16))
    assert "The selected backend, FLASHMLA,is not MLA type while requested for MLA backend." in str(info.value)


def test_rocm_sparse_mla():
    # vllm/platforms/rocm.py asserts block_size == 1: an unset block size fails too
    with pytest.raises(NoValidBackendError) as info:
        solve(rocm(use_mla=True, use_sparse=True))
    assert str(info.value).startswith("Sparse MLA backend on ROCm only supports block size 1 for now.")
    assert picked(rocm(use_mla=True, use_sparse=True, block_size=1)) == "ROCM_AITER_MLA_SPARSE"
    for kv in ("fp8", "fp8_e4m3", "fp8_ds_mla"):
        with pytest.raises(NoValidBackendError) as info:
            solve(rocm(use_mla=True, use_sparse=True, kv_cache_dtype=kv, block_size=1))
        assert str(info.value).startswith("ROCMAiterMLASparseBackend doesn't support fp8 kv_cache_dtype.")
    with pytest.raises(NoValidBackendError) as info:
        solve(rocm(use_mla=True, use_sparse=True, block_size=64))
    assert str(info.value).startswith("Sparse MLA backend on ROCm only supports block size 1 for now.")
    # a requested backend is ignored for sparse MLA
    assert picked(rocm(use_mla=True, use_sparse=True, block_size=1, backend="TRITON_MLA")) == "ROCM_AITER_MLA_SPARSE"


# -- backend names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["flash_attn", "Flash_Attn", "FLASH_ATTN", " flash_attn "])
def test_backend_names_case_insensitive(name):
    cfg = cuda("9.0", backend=name)
    assert cfg.backend == "FLASH_ATTN"
    assert picked(cfg) == "FLASH_ATTN"


def test_backend_enum_member_accepted():
    class Member:
        name = "TRITON_ATTN"
    assert cuda("9.0", backend=Member()).backend == "TRITON_ATTN"


@pytest.mark.parametrize("name", ["flash_atn", "FLASHATTN2", "xformers", "auto_attn", "flash-attn"])
def test_unknown_backend_name(name):
    with pytest.raises(ConfigError) as info:
        cuda("9.0", backend=name)
    msg = str(info.value)
    assert msg.startswith(f"Unknown attention backend: '{name.strip().upper()}'. Valid options are:")
    for known in ("FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "CPU_ATTN"):
        assert known in msg
    assert info.value.field == "backend"


@pytest.mark.parametrize("name", ["auto", "AUTO", "Auto"])
def test_auto_means_automatic_selection(name):
    # Documented deviation: vLLM v0.16/v0.17 reject 'AUTO'; later vLLM maps it to automatic selection.
    cfg = cuda("9.0", backend=name)
    assert cfg.backend is None
    sel = solve(cfg)
    assert not sel.manual and sel.backend == "FLASH_ATTN"


# -- MLA prefill -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("cc", "kw", "expected", "variant"), [
    ("10.0", R1, "TRTLLM_RAGGED_DEEPSEEK", None),
    ("10.3", R1, "TRTLLM_RAGGED_DEEPSEEK", None),
    ("10.0", {}, "FLASH_ATTN_PREFILL", "FA4"),  # no model dims: no head-size cap on FA4 (vLLM 0.17)
    ("9.0", R1, "FLASH_ATTN_PREFILL", "FA3"),
    ("8.0", R1, "FLASH_ATTN_PREFILL", "FA2"),
    ("12.0", R1, "FLASH_ATTN_PREFILL", "FA2"),
    ("10.0", {**R1, "use_trtllm_ragged_deepseek_prefill": False}, "FLASHINFER_PREFILL", None),
    ("10.0", {**R1, "use_trtllm_ragged_deepseek_prefill": False, "disable_flashinfer_prefill": True},
     "FLASH_ATTN_PREFILL", "FA2"),
    ("10.0", {**R1, "use_trtllm_ragged_deepseek_prefill": False, "use_cudnn_prefill": True}, "CUDNN_PREFILL", None),
    ("10.0", {"use_cudnn_prefill": True}, "CUDNN_PREFILL", None),
    ("10.0", {**R1, "use_cudnn_prefill": True}, "TRTLLM_RAGGED_DEEPSEEK", None),
    ("10.0", {"use_cudnn_prefill": True, "trtllm_available": False}, "FLASH_ATTN_PREFILL", "FA4"),
    ("9.0", {"use_cudnn_prefill": True}, "FLASH_ATTN_PREFILL", "FA3"),
    ("10.0", {**R1, "flashinfer_available": False}, "FLASH_ATTN_PREFILL", "FA2"),
])
def test_mla_prefill_selection(cc, kw, expected, variant):
    sel = solve(mla(cc, **kw), role="mla_prefill")
    assert (sel.backend, sel.variant) == (expected, variant)
    assert sel.role == "mla_prefill"


def test_mla_prefill_needs_mla():
    with pytest.raises(ConfigError):
        solve(cuda("10.0"), role="mla_prefill")


# -- where the seed tables and vLLM's source disagree (the rules follow the source) -----------------

SEED_DIFFERENCES = [
    # (what the seed doc shows, settled-facts line, check)
    ("TRITON_ATTN head sizes 'Any'", "source requires head_size >= 32",
     lambda: reasons_for(cuda("9.0", head_size=16, backend="TRITON_ATTN")) == ("head_size not supported",)),
    ("TRITON_ATTN head sizes 'Any'", "fp32 + head 16 on SM 9.0 selects FLEX_ATTENTION",
     lambda: picked(cuda("9.0", dtype="float32", head_size=16)) == "FLEX_ATTENTION"),
    ("FLASHINFER CC 7.x-9.x (native) and 10.x (TRTLLM)", "source accepts 7.5 to 12.1",
     lambda: reasons_for(cuda("12.0", backend="FLASHINFER")) == ()
     and reasons_for(cuda("12.1", backend="FLASHINFER")) == ()
     and reasons_for(cuda("11.0", backend="FLASHINFER")) == ()),
    ("FLASHINFER CC 7.x", "7.0 is below FlashInfer's 7.5 floor",
     lambda: reasons_for(cuda("7.0", dtype="float16", backend="FLASHINFER")) == ("compute capability not supported",)),
    ("FLASHINFER block sizes 16, 32, 64", "block size 128 is a multiple of 16: accepted",
     lambda: reasons_for(cuda("9.0", block_size=128, backend="FLASHINFER")) == ()),
    ("FLASHMLA block size 64", "128 and 256 are multiples of 64: accepted",
     lambda: reasons_for(mla("9.0", block_size=256, backend="FLASHMLA")) == ()),
    ("CUTLASS_MLA block size 128", "256 is a multiple of 128: accepted",
     lambda: reasons_for(mla("10.0", block_size=256, backend="CUTLASS_MLA")) == ()),
    ("Dense MLA head sizes 'Any'", "source 576 only (inherited from MLACommonBackend)",
     lambda: all(reasons_for(mla(_home_cc(b), head_size=128, backend=b)) == ("head_size not supported",)
                 for b in DENSE_MLA)),
    ("FLASHMLA CC 9.x-10.x", "dense FlashMLA is Hopper only",
     lambda: reasons_for(mla("10.0", backend="FLASHMLA")) == ("FlashMLA Dense is only supported on Hopper devices.",)),
    ("FLASH_ATTN head sizes 'Any'", "head_size % 8 == 0 and <= 256: 260 rejected",
     lambda: reasons_for(cuda("9.0", head_size=260, backend="FLASH_ATTN")) == ("head_size not supported",)),
    ("FLASH_ATTN head sizes 'Any'", "head_size % 8 == 0 and <= 256: 100 rejected",
     lambda: reasons_for(cuda("9.0", head_size=100, backend="FLASH_ATTN")) == ("head_size not supported",)),
    ("FLASH_ATTN FA3 kv fp8, fp8_e4m3, fp8_e5m2", "FA accepts any KV dtype starting with fp8 on SM 9.x (fp8_inc)",
     lambda: reasons_for(cuda("9.0", kv_cache_dtype="fp8_inc", backend="FLASH_ATTN")) == ()),
    ("FLASH_ATTN_DIFFKV: fp16/bf16, auto, Any, Any, Decoder, CC Any", "inherits FLASH_ATTN's checks",
     lambda: RULES.backends["FLASH_ATTN_DIFFKV"].checks == RULES.backends["FLASH_ATTN"].checks
     and reasons_for(cuda("7.5", dtype="float16", backend="FLASH_ATTN_DIFFKV")) == ("compute capability not supported",)
     and reasons_for(cuda("9.0", head_size=100, backend="FLASH_ATTN_DIFFKV")) == ("head_size not supported",)
     and solve(cuda("9.0", block_size=8, backend="FLASH_ATTN_DIFFKV")).startup_error == "No common block size for 8. "
     and reasons_for(cuda("9.0", kv_cache_dtype="fp8", backend="FLASH_ATTN_DIFFKV")) == ()
     and reasons_for(cuda("9.0", attn_type="encoder", backend="FLASH_ATTN_DIFFKV")) == ()),
    ("FLASHMLA_SPARSE KV auto, bfloat16, fp8_ds_mla (generator hides fp8)", "plain fp8 rejected at this version",
     lambda: reasons_for(mla("9.0", use_sparse=True, kv_cache_dtype="fp8", backend="FLASHMLA_SPARSE"))
     == ("kv_cache_dtype not supported",)),
    ("MLA SM 10.x list shows FLASHMLA_SPARSE before FLASHINFER_MLA_SPARSE", "<= 16 heads per GPU: FlashInfer first",
     lambda: picked(mla("10.0", use_sparse=True, num_heads=16)) == "FLASHINFER_MLA_SPARSE"),
]


@pytest.mark.parametrize(("seed", "source", "check"), SEED_DIFFERENCES,
                         ids=[f"{i}-{s[:30]}" for i, (s, _, _) in enumerate(SEED_DIFFERENCES)])
def test_rules_follow_source_where_seed_table_differs(seed, source, check):
    assert check(), f"seed doc: {seed}; source: {source}"


# -- attention types and multimodal prefix ----------------------------------------------------------

@pytest.mark.parametrize(("attn_type", "expected"), [
    ("decoder", "FLASH_ATTN"), ("encoder", "FLASH_ATTN"), ("encoder_only", "FLASH_ATTN"),
    ("encoder_decoder", "FLASH_ATTN"),
])
def test_flash_attn_supports_all_attention_types(attn_type, expected):
    assert picked(cuda("9.0", attn_type=attn_type)) == expected


def test_attention_type_reason_names_the_type():
    assert reasons_for(cuda("9.0", attn_type="encoder", backend="FLEX_ATTENTION")) == (
        "attention type encoder not supported",)
    assert reasons_for(cuda("9.0", attn_type="encoder_only", backend="FLEX_ATTENTION")) == ()
    assert reasons_for(cuda("10.0", attn_type="encoder_decoder", backend="FLASHINFER")) == (
        "attention type encoder_decoder not supported",)
    # SM 10.0 encoder layer: FLASHINFER is decoder-only, FLASH_ATTN takes it
    sel = solve(cuda("10.0", attn_type="encoder"))
    assert sel.backend == "FLASH_ATTN"
    assert [(r.backend, r.reasons) for r in sel.rejected] == [("FLASHINFER", ("attention type encoder not supported",))]


def test_mm_prefix_needs_triton_or_flex():
    mm = "partial multimodal token full attention not supported"
    sel = solve(cuda("9.0", use_mm_prefix=True))
    assert sel.backend == "TRITON_ATTN"
    assert [(r.backend, r.reasons) for r in sel.rejected] == [("FLASH_ATTN", (mm,)), ("FLASHINFER", (mm,))]
    assert picked(cuda("9.0", use_mm_prefix=True, head_size=16)) == "FLEX_ATTENTION"
