"""Names of the Config fields the rules may mention (kept here so the rules layer needs no import from above)."""

CONFIG_FIELDS: tuple[str, ...] = (
    "platform", "dtype", "compute_capability", "head_size", "kv_cache_dtype", "block_size",
    "use_mla", "use_sparse", "has_sink", "use_mm_prefix", "attn_type", "num_heads", "backend",
    "flash_attn_version", "use_trtllm_attention", "trtllm_available",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_topk",
    "rocm_arch", "rocm_use_aiter", "rocm_use_aiter_mha", "rocm_use_aiter_mla",
    "rocm_use_aiter_unified_attention", "use_prefill_decode_attention",
    "use_trtllm_ragged_deepseek_prefill", "disable_flashinfer_prefill", "use_cudnn_prefill",
    "flashinfer_available",
)

# Kinds of the Config fields, for type-checking the values rules compare them with (rules/schema.py).
INT_FIELDS: frozenset[str] = frozenset({
    "head_size", "block_size", "num_heads", "flash_attn_version", "qk_nope_head_dim", "qk_rope_head_dim",
    "v_head_dim", "index_topk",
})
BOOL_FIELDS: frozenset[str] = frozenset({
    "use_mla", "use_sparse", "has_sink", "use_mm_prefix", "use_trtllm_attention", "trtllm_available",
    "rocm_use_aiter", "rocm_use_aiter_mha", "rocm_use_aiter_mla", "rocm_use_aiter_unified_attention",
    "use_prefill_decode_attention", "use_trtllm_ragged_deepseek_prefill", "disable_flashinfer_prefill",
    "use_cudnn_prefill", "flashinfer_available",
})
