"""attnsolve.kernels: the torch dispatch layer and the kernels it calls (the only part importing torch).

>>> from attnsolve.kernels import paged_attention, AttentionMetadata, kernel_for   # doctest: +SKIP
>>> out = paged_attention(query, key_cache, value_cache, AttentionMetadata(qsl, seq_lens, block_table))  # doctest: +SKIP

Layout and semantics: ``docs/kernels.md``.  Kernels register themselves with
``register_kernel``; ``kernel_for(name)`` returns one or raises ``KernelUnavailableError``.
"""

from attnsolve.kernels.registry import (
    KernelUnavailableError,
    kernel_for,
    register_kernel,
    registered_backends,
    runnable_backends,
)
from attnsolve.kernels.metadata import AttentionMetadata
from attnsolve.kernels.dispatch import SelectionWarning, infer_config, paged_attention, paged_attention_op

__all__ = [
    "AttentionMetadata",
    "KernelUnavailableError",
    "infer_config",
    "kernel_for",
    "paged_attention",
    "paged_attention_op",
    "register_kernel",
    "registered_backends",
    "runnable_backends",
    "SelectionWarning",
]
