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

# The dispatch layer and the metadata type need torch: imported on first use (PEP 562), so that
# `attnsolve.kernels.registry` (which the CLI asks for the "runnable here" column) never pulls torch in.
_LAZY = {"AttentionMetadata": "attnsolve.kernels.metadata", "SelectionWarning": "attnsolve.kernels.dispatch",
         "infer_config": "attnsolve.kernels.dispatch", "paged_attention": "attnsolve.kernels.dispatch",
         "paged_attention_op": "attnsolve.kernels.dispatch"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'attnsolve.kernels' has no attribute {name!r}")

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
