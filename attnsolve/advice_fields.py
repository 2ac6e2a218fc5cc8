"""Advice's tables of Config fields: the kinds of fix, how vLLM spells each setting, which fields are
hardware and which are model facts, and the release's own field declarations.

Why this module: writing a change, judging it and choosing candidates all read the same tables; they
live here, below every other advice module, so the imports point one way.
"""

from __future__ import annotations

from typing import Any, Mapping

from .config import Config

# Ranked kinds of fix: what a user can change, most easily first.
KINDS = ("setting", "version", "hardware", "model")

# vLLM spellings of the settings: `vllm serve` flags, --attention-config keys, environment variables.
_SERVE_FLAGS = {"kv_cache_dtype": "--kv-cache-dtype", "block_size": "--block-size", "dtype": "--dtype",
                "backend": "--attention-backend"}
_ATTENTION_CONFIG = ("flash_attn_version", "use_trtllm_attention", "use_prefill_decode_attention",
                     "use_trtllm_ragged_deepseek_prefill", "disable_flashinfer_prefill", "use_cudnn_prefill")
_ENV_SWITCHES = {"rocm_use_aiter": "VLLM_ROCM_USE_AITER", "rocm_use_aiter_mha": "VLLM_ROCM_USE_AITER_MHA",
                 "rocm_use_aiter_mla": "VLLM_ROCM_USE_AITER_MLA",
                 "rocm_use_aiter_unified_attention": "VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION"}
_INSTALL = {"flashinfer_available": "install FlashInfer (pip install flashinfer-python)",
            "trtllm_available": "let FlashInfer download its TRT-LLM kernels (network access at start-up)"}
_HARDWARE = ("platform", "compute_capability", "rocm_arch")
# Model facts: offered as a fix only when the user typed them as an attnsolve flag (a what-if).
_MODEL = ("head_size", "use_mla", "use_sparse", "has_sink", "use_mm_prefix", "attn_type", "qk_nope_head_dim",
          "qk_rope_head_dim", "v_head_dim", "index_topk")
_MODEL_FLAGS = {f: "--" + f.replace("_", "-") for f in _MODEL}
_FP8 = "fp8"


def _declared_fields(config: Config) -> Mapping[str, Any]:
    """The release's field declarations (name -> FieldDecl)."""
    from .selection import compiled_rules
    return getattr(compiled_rules(config).rules, "fields", None) or {}
