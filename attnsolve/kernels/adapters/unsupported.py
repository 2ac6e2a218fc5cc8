"""CUDA backends the rules can select but attnsolve has no kernel for: a documented refusal.

Each is registered with a ``check`` that always says why (so ``runnable_backends`` leaves
it out, the solver's ``available=`` picks the next one, and ``attnsolve backends`` shows
the reason), and a kernel that raises ``KernelUnavailableError`` naming the package or
build it would need and the backend to use instead.
"""

from __future__ import annotations

from attnsolve.kernels.adapters import _common as C
from attnsolve.kernels.registry import register_kernel

__all__ = ["NOT_PROVIDED"]

# backend -> (why, alternative)
NOT_PROVIDED: dict[str, tuple[str, str]] = {
    "FLASH_ATTN_MLA": (
        "FlashAttention-3 MLA decode exists only in vLLM's vllm_flash_attn build (not in the flash-attn package); "
        "attnsolve has no adapter for it",
        "FLASHMLA",
    ),
    "CUTLASS_MLA": (
        "CUTLASS MLA decode is a vLLM-compiled op (vllm._custom_ops, SM 10.x); attnsolve has no adapter for it",
        "TRITON_MLA",
    ),
    "FLASHINFER_MLA": (
        "FlashInfer's TRT-LLM-gen MLA decode (SM 10.x) has no attnsolve adapter yet",
        "TRITON_MLA",
    ),
    "FLASHINFER_MLA_SPARSE": (
        "FlashInfer's sparse MLA decode (SM 10.x) has no attnsolve adapter yet",
        "TRITON_MLA",
    ),
    "TREE_ATTN": (
        "tree attention (speculative decoding trees) needs a tree mask that this API does not take",
        "TRITON_ATTN",
    ),
    "FLASH_ATTN_DIFFKV": (
        "FlashAttention with packed different-size K/V exists only in vLLM's build; "
        "TRITON_ATTN takes different key and value head sizes",
        "TRITON_ATTN",
    ),
}


def _make(backend: str, why: str, alternative: str):
    def check(device: str) -> str | None:
        return why

    def kernel(*args, **kwargs):
        raise C.unavailable(backend, [why], alternative, device=None)

    kernel.__name__ = f"{backend.lower()}_not_provided"
    kernel.__qualname__ = kernel.__name__
    kernel.__doc__ = f"{backend}: not provided by attnsolve ({why}); use {alternative}."
    register_kernel(backend, devices=("cuda",), check=check)(kernel)
    return kernel


for _b, (_why, _alt) in NOT_PROVIDED.items():
    _make(_b, _why, _alt)
