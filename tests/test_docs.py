"""The generated docs/attention_backends.md: up to date, deterministic, and equal to the seed's
standard and MLA decode tables cell by cell except for an explicit list of deliberate differences,
each with its reason from the spec (shared/spec/settled-facts.md, vllm-selection-semantics.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnsolve.docs import check_doc, doc_path, generate_doc, iter_cells

# vLLM 0.17's facts (docs/attention_backends-vllm-0.17.md, compared with the 0.17 seed tables): 0.17 answers what names no release.
pytestmark = pytest.mark.vllm("0.17")

ROOT = Path(__file__).resolve().parents[1]
SEED = (ROOT / "tests" / "fixtures" / "seed_tables.md").read_text(encoding="utf-8")

STANDARD = "Standard Attention (MHA, MQA, GQA) Backends"
MLA = "Decode Backends"

_BLOCKS = "settled-facts: block sizes: source accepts multiples of a kernel size; the seed shows literal lists"
_MLA_HEADS = "settled-facts: dense MLA head sizes: source 576 only (MLA layers pass 576); the seed says Any"
_DIFFKV = "settled-facts: FLASH_ATTN_DIFFKV inherits FLASH_ATTN's checks (FA2/FA3); the seed shows base defaults"
_V017_KV = ("vLLM 0.17.0: the class keeps AttentionBackend's default supported_kv_cache_dtypes ['auto', 'bfloat16'] "
            "(its validate_configuration accepts bfloat16 when the backend is requested on CUDA)")
_V017_ATTN = "vLLM 0.17.0 rocm_attn.py / rocm_aiter_unified_attn.py supports_attn_type: all four types"
_V017_FA = ("vLLM 0.17.0 fa_utils.get_flash_attn_version: FA4 on SM 10.x (head <= 128) or forced on 9.x-11.x; "
            "no version (NONE) where the GPU cannot run the resolved one")
_V017_SPARSE = ("vLLM 0.17.0 ROCMAiterMLASparseBackend keeps the base is_mla()/is_sparse() = False "
                "(requested on CUDA it reports 'MLA not supported'); ROCm's decision tree never validates it")
_FA_HEADS = "settled-facts: FLASH_ATTN requires head_size % 8 == 0 and <= 256; the seed says Any"

# (table, backend, version, column) -> (seed cell, generated cell, reason).  Rows present on one side
# only use the column "*row*" and None for the missing side.
DELIBERATE: dict[tuple[str, str, str, str], tuple[str | None, str | None, str]] = {
    # vLLM 0.17.0's classes, checked against its selector by the differential harness (issue #12)
    (STANDARD, "`CPU_ATTN`", "", "KV Dtypes"): ("`auto`", "`auto`, `bfloat16`", _V017_KV),
    (STANDARD, "`ROCM_AITER_FA`", "", "KV Dtypes"): ("`auto`", "`auto`, `bfloat16`", _V017_KV),
    (STANDARD, "`ROCM_AITER_UNIFIED_ATTN`", "", "KV Dtypes"): ("`auto`", "`auto`, `bfloat16`", _V017_KV),
    (STANDARD, "`ROCM_ATTN`", "", "KV Dtypes"): ("`auto`", "`auto`, `bfloat16`", _V017_KV),
    (STANDARD, "`TREE_ATTN`", "", "KV Dtypes"): ("`auto`", "`auto`, `bfloat16`", _V017_KV),
    (MLA, "`ROCM_AITER_MLA`", "", "KV Dtypes"): ("`auto`", "`auto`, `bfloat16`", _V017_KV),
    (MLA, "`ROCM_AITER_TRITON_MLA`", "", "KV Dtypes"): ("`auto`", "`auto`, `bfloat16`", _V017_KV),
    (STANDARD, "`ROCM_ATTN`", "", "Head Sizes"): ("32, 64, 96, 128, 160, 192, 224, 256",
        "32, 64, 80, 96, 128, 160, 192, 224, 256", "vLLM 0.17.0 rocm_attn.py get_supported_head_sizes includes 80"),
    (STANDARD, "`ROCM_ATTN`", "", "Attention Types"): ("Decoder", "All", _V017_ATTN),
    (STANDARD, "`ROCM_AITER_UNIFIED_ATTN`", "", "Attention Types"): ("Decoder", "All", _V017_ATTN),
    (STANDARD, "`FLASH_ATTN`", "FA4*", "*row*"): (None, "present", _V017_FA),
    (STANDARD, "`FLASH_ATTN`", "NONE*", "*row*"): (None, "present", _V017_FA),
    (STANDARD, "`FLASH_ATTN_DIFFKV`", "FA4*", "*row*"): (None, "present", _V017_FA),
    (STANDARD, "`FLASH_ATTN_DIFFKV`", "NONE*", "*row*"): (None, "present", _V017_FA),
    (STANDARD, "`ROCM_AITER_MLA_SPARSE`", "", "*row*"): (None, "present", _V017_SPARSE),
    (MLA, "`ROCM_AITER_MLA_SPARSE`", "", "*row*"): ("present", None, _V017_SPARSE),
    (STANDARD, "`FLASHINFER`", "Native†", "Block Sizes"): ("16, 32, 64", "%16", _BLOCKS),
    (STANDARD, "`FLASHINFER`", "TRTLLM†", "Block Sizes"): ("16, 32, 64", "%16", _BLOCKS),
    (STANDARD, "`FLASHINFER`", "Native†", "Compute Cap."): ("7.x-9.x", "7.5-12.1",
        "settled-facts: FLASHINFER accepts 7.5 to 12.1; native kernels also run on 10.x with TRT-LLM off"),
    (STANDARD, "`FLASH_ATTN`", "FA2*", "Head Sizes"): ("Any", "%8, ≤256", _FA_HEADS),
    (STANDARD, "`FLASH_ATTN`", "FA3*", "Head Sizes"): ("Any", "%8, ≤256", _FA_HEADS),
    (STANDARD, "`FLASH_ATTN`", "FA3*", "KV Dtypes"): (
        "`auto`, `bfloat16`, `fp8`, `fp8_e4m3`, `fp8_e5m2`",
        "`auto`, `bfloat16`, `fp8`, `fp8_e4m3`, `fp8_e5m2`, `fp8_inc`, `fp8_ds_mla`",
        "settled-facts: FA accepts any KV dtype starting with fp8 on SM 9.x (e.g. fp8_inc)"),
    (STANDARD, "`FLASH_ATTN_DIFFKV`", "", "*row*"): ("present", None, _DIFFKV),
    (STANDARD, "`FLASH_ATTN_DIFFKV`", "FA2*", "*row*"): (None, "present", _DIFFKV),
    (STANDARD, "`FLASH_ATTN_DIFFKV`", "FA3*", "*row*"): (None, "present", _DIFFKV),
    (STANDARD, "`ROCM_AITER_FA`", "", "Block Sizes"): ("16, 32", "%16", _BLOCKS),
    (STANDARD, "`ROCM_ATTN`", "", "Block Sizes"): ("16, 32, 544", "%16",
        _BLOCKS + " (544 is not one of vLLM's block sizes)"),
    (STANDARD, "`ROCM_AITER_UNIFIED_ATTN`", "", "Dtypes"): ("fp16, bf16", "fp16, bf16, fp32",
        "semantics §6: ROCM_AITER_UNIFIED_ATTN inherits ROCM_ATTN's declarations; the seed row is a generator artifact"),
    (STANDARD, "`ROCM_AITER_UNIFIED_ATTN`", "", "Block Sizes"): ("Any", "%16",
        "semantics §6: inherits ROCM_ATTN's kernel block sizes [16, 32, 544]"),
    (STANDARD, "`ROCM_AITER_UNIFIED_ATTN`", "", "Head Sizes"): ("Any", "32, 64, 80, 96, 128, 160, 192, 224, 256",
        "semantics §6: inherits ROCM_ATTN's head sizes"),
    (STANDARD, "`TRITON_ATTN`", "", "Head Sizes"): ("Any", "≥32", "settled-facts: TRITON_ATTN requires head_size >= 32"),
    (MLA, "`CUTLASS_MLA`", "", "Block Sizes"): ("128", "%128", _BLOCKS),
    (MLA, "`FLASHINFER_MLA`", "", "Block Sizes"): ("32, 64", "%32", _BLOCKS),
    (MLA, "`FLASHINFER_MLA_SPARSE`", "", "Block Sizes"): ("32, 64", "%32", _BLOCKS),
    (MLA, "`FLASHMLA`", "", "Block Sizes"): ("64", "%64", _BLOCKS),
    (MLA, "`FLASHMLA_SPARSE`", "", "Block Sizes"): ("64", "%64", _BLOCKS),
    (MLA, "`ROCM_AITER_MLA`", "", "Block Sizes"): ("1", "Any",
        "semantics §6: kernel block size [1]: every block size is a multiple of 1"),
    (MLA, "`FLASHMLA`", "", "Compute Cap."): ("9.x-10.x", "9.x",
        "settled-facts: FLASHMLA dense is Hopper-only ('FlashMLA Dense is only supported on Hopper devices.')"),
    **{(MLA, f"`{b}`", "", "Head Sizes"): ("Any", "576", _MLA_HEADS)
       for b in ("CUTLASS_MLA", "FLASHINFER_MLA", "FLASHMLA", "FLASH_ATTN_MLA", "ROCM_AITER_MLA",
                 "ROCM_AITER_TRITON_MLA", "TRITON_MLA")},
}


def _table(text: str, section: str) -> tuple[list[str], dict[tuple[str, str], dict[str, str]]]:
    rows = list(iter_cells(text, section))
    header, body = rows[0], rows[2:]
    has_version = header[1] == "Version"
    out = {}
    for r in body:
        key = (r[0], r[1] if has_version else "")
        out[key] = dict(zip(header, r))
    return header, out


def _differences() -> dict[tuple[str, str, str, str], tuple[str | None, str | None]]:
    gen = generate_doc()
    diffs: dict[tuple[str, str, str, str], tuple[str | None, str | None]] = {}
    for section in (STANDARD, MLA):
        sh, seed = _table(SEED, section)
        gh, mine = _table(gen, section)
        assert sh == gh, f"{section}: columns differ: {sh} vs {gh}"
        for key in sorted(set(seed) | set(mine)):
            if key not in mine:
                diffs[(section, *key, "*row*")] = ("present", None)
            elif key not in seed:
                diffs[(section, *key, "*row*")] = (None, "present")
            else:
                for col in sh:
                    if seed[key][col] != mine[key][col]:
                        diffs[(section, *key, col)] = (seed[key][col], mine[key][col])
    return diffs


def test_seed_tables_cell_by_cell():
    diffs = _differences()
    unexpected = {k: v for k, v in diffs.items() if k not in DELIBERATE}
    assert not unexpected, "cells differ from the seed without a listed reason:\n" + "\n".join(
        f"  {k}: seed {v[0]!r} -> generated {v[1]!r}" for k, v in unexpected.items())
    stale = [k for k in DELIBERATE if k not in diffs]
    assert not stale, f"listed differences that no longer differ (remove them): {stale}"
    for k, (seed_cell, gen_cell, reason) in DELIBERATE.items():
        assert diffs[k] == (seed_cell, gen_cell), (k, diffs[k])
        assert reason and "\n" not in reason


def test_committed_doc_is_up_to_date():
    diff = check_doc(ROOT / doc_path("0.17"))
    assert diff == "", f"{doc_path('0.17')} is stale; run `attnsolve docs --vllm 0.17`:\n" + diff[:3000]


@pytest.mark.parametrize("release", __import__("attnsolve").vllm_versions())
def test_every_release_document_is_up_to_date(release):
    """Each packaged release's committed tables match its rules (`.ci/run` also runs `docs --check` per release;
    an edit folder's document changes whenever its base does, so this catches a base edit in the suite)."""
    from attnsolve.rules import rules_for
    diff = check_doc(ROOT / doc_path(release), rules_for(release))
    assert diff == "", f"{doc_path(release)} is stale; run `attnsolve docs --vllm {release}`:\n" + diff[:3000]


def test_each_release_has_its_own_document():
    """The newest release's tables are docs/attention_backends.md (what users of today's vLLM read);
    each older release keeps its own file, whatever $ATTNSOLVE_VLLM says."""
    from attnsolve import vllm_versions
    paths = {v: doc_path(v) for v in vllm_versions()}
    assert paths[vllm_versions()[-1]] == "docs/attention_backends.md"
    assert paths["0.17"] == "docs/attention_backends-vllm-0.17.md" and len(set(paths.values())) == len(paths)


def test_deterministic():
    assert generate_doc() == generate_doc()


def test_doc_shows_conditions_the_seed_cannot():
    text = generate_doc()
    for needle in ("sink not supported on compute capability < 9.0", "FlashMLA Dense is only supported on Hopper devices.",
                   "when num_heads <= 16", "## ROCm selection", "## CPU selection", "MLA is not supported on CPU.",
                   "`fa_version`", "ROCMAiterMLASparseBackend doesn't support fp8 kv_cache_dtype."):
        assert needle in text, needle
    assert "| `TRITON_ATTN` |  | fp16, bf16, fp32 |" in text
