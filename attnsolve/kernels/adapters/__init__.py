"""Adapters from the dispatch's calling convention to GPU attention libraries.

Importing this package registers (``attnsolve.kernels.registry``):

* ``FLASH_ATTN``  -> ``flash_attn.flash_attn_varlen_func`` (flash-attn), else torch SDPA's fused kernels;
* ``FLASHINFER``  -> ``flashinfer.BatchPrefillWithPagedKVCacheWrapper`` (flashinfer-python);
* ``FLASHMLA`` / ``FLASHMLA_SPARSE`` -> ``flash_mla`` (flash-mla), MLA calling convention;
* the other CUDA backends the rules can select, as documented refusals (``unsupported``).

No GPU library is imported here: each adapter imports its package on first call.
``describe()`` lists what each adapter can run (package, version, GPU) for docs and
``attnsolve backends``.  ``FLEX_ATTENTION`` (all devices) lives in ``attnsolve.kernels.flex``;
``TRITON_ATTN``/``TRITON_MLA`` in ``attnsolve.kernels.triton_attn``/``triton_mla``.
"""

from __future__ import annotations

from attnsolve.kernels.adapters import flash_attn_adapter, flashinfer_adapter, flashmla_adapter, unsupported

__all__ = ["describe", "flash_attn_adapter", "flashinfer_adapter", "flashmla_adapter", "unsupported"]


def describe() -> list[dict]:
    """One dict per adapter: backend, package, installed_version, min_version, GPU, dtypes, notes."""
    infos = [flash_attn_adapter.INFO, flashinfer_adapter.INFO, flashmla_adapter.INFO, flashmla_adapter.INFO_SPARSE]
    rows = [i.as_dict() for i in infos]
    for b, (why, alt) in unsupported.NOT_PROVIDED.items():
        rows.append({"backend": b, "package": None, "installed_version": None, "min_version": None,
                     "compute_capability": None, "dtypes": [], "notes": [why], "fallback": alt})
    return rows
