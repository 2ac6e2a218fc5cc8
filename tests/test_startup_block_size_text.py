"""Start-up's "No common block size" text, as each release's v1/worker/utils.py select_common_block_size raises it.

The harness stops after selection (no KV cache is laid out on a CPU-only machine), so this text is never compared
with a running vLLM; these facts were read from each release's wheel. Until session 37 every release from 0.19 to
0.30 printed 0.31's bracketed form.
"""

from __future__ import annotations

import pytest

from attnsolve import vllm_versions
from attnsolve.rules import rules_for
from release_facts import answer as _answer

# The release's exact f-string, with {block_size} for kv_manager_block_size.
TEXT_BY_RELEASE = {
    "0.17": "No common block size for {block_size}. ",
    **{v: "No common block size for {block_size}. " for v in vllm_versions() if "0.19" <= v <= "0.29"},
    "0.30": "No common block size for {block_size}.",
}


@pytest.mark.parametrize("version", [v for v in vllm_versions() if v in TEXT_BY_RELEASE])
def test_every_platform_uses_the_release_text(version):
    """Each platform that can fail this way prints the one text of its release (the worker code is shared)."""
    rules = rules_for(version)
    texts = {(lst.platform, lst.name): lst.block_size_failure
             for platform in rules.platforms for lst in rules.lists_for(platform) if lst.block_size_failure}
    assert texts and set(texts.values()) == {TEXT_BY_RELEASE[version]}, texts


@pytest.mark.parametrize("version, want", [
    ("0.29", "No common block size for 48. "),
    ("0.30", "No common block size for 48."),
    ("0.31", "No common block size for 48 (CPU_ATTN: [MultipleOf(32)])."),
])
def test_cpu_block_of_48_fails_in_the_release_words(version, want):
    """CPU_ATTN's kernels take multiples of 32 from 0.29 on (cpu_attn.py); a 48-token block fails at start-up."""
    assert _answer(vllm=version, platform="cpu", dtype="bfloat16", head_size=128, block_size=48)[4] == want


@pytest.mark.parametrize("attn_type, fails", [("decoder", True), ("encoder_decoder", True),
                                              ("encoder_only", False), ("encoder", False)])
def test_only_layers_with_a_kv_cache_can_fail(attn_type, fails):
    """v1/worker/utils.py (0.17.0 on): the kernel block size is picked per KV cache group, and an encoder-only
    layer's EncoderOnlyAttentionSpec is skipped (an encoder layer has no spec): TRITON_ATTN on a V100 with 1-token
    blocks refuses to start for a decoder layer only."""
    kw = dict(vllm="0.17", gpu="V100", dtype="float16", head_size=128, block_size=1, attn_type=attn_type)
    got = _answer(**kw)
    assert got[0] == "TRITON_ATTN"
    assert (got[4] == "No common block size for 1. ") if fails else got[4] is None
