"""attnsolve.kernels: the torch dispatch layer and the kernels it calls (the only part importing torch)."""

from attnsolve.kernels.registry import (
    KernelUnavailableError,
    kernel_for,
    register_kernel,
    registered_backends,
    runnable_backends,
)

__all__ = [
    "KernelUnavailableError",
    "kernel_for",
    "register_kernel",
    "registered_backends",
    "runnable_backends",
]
