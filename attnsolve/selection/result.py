"""What solve() answers: a frozen Selection with the backends that lost before it, and its special names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import Config

NOT_RUNNABLE = "kernel not runnable on this machine"
# The MLA prefill answer when the layer gets no prefill backend (vLLM >= 0.18: a sparse MLA layer without a
# dense-MHA prefill path, or whose automatic prefill selection finds nothing): the top-k MQA path only.
NO_PREFILL = "NO_PREFILL"
NO_PREFILL_PATH = "top-k MQA path only"  # its variant: what the layer runs instead


@dataclass(frozen=True, slots=True)
class Rejection:
    """A backend that lost, with vLLM's reasons."""

    backend: str
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class Selection:
    """The selected backend and the evidence: who lost before it and why, and what was ignored."""

    backend: str
    variant: str | None
    rejected: tuple[Rejection, ...]
    warnings: tuple[str, ...]
    config: Config = field(repr=False)
    role: str = "decode"
    manual: bool = False
    priority_list: str = ""
    preferred_block_size: int | None = None
    # vLLM's own text when its start-up fails for this config although its selector answers
    # `backend` (start-up hook, block size the kernels cannot serve, FA version not detected...):
    # vLLM would refuse to start. None: vLLM starts with this backend.
    startup_error: str | None = None
    # Config values vLLM changes around selection (rules' `rewrites` and model-route KV handling, e.g.
    # kv_cache_dtype -> fp8_ds_mla after FLASHMLA_SPARSE): (field, new value), in the order applied; their
    # log lines are in `warnings`. Empty for vLLM releases without such rewrites.
    config_changes: tuple[tuple[str, Any], ...] = ()
    # vLLM's INFO lines about this selection (rewrites, model-route KV formats, info notes, the MLA prefill
    # backend chosen); WARNING lines are in `warnings`.
    logs: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.backend + (f" ({self.variant})" if self.variant else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "selected": self.backend, "variant": self.variant, "role": self.role, "manual": self.manual,
            "priority_list": self.priority_list, "preferred_block_size": self.preferred_block_size,
            "startup_error": self.startup_error,
            "rejected": [r.to_dict() for r in self.rejected], "warnings": list(self.warnings),
            "config": self.config.to_dict(),
            **({"config_changes": {k: v for k, v in self.config_changes}} if self.config_changes else {}),
            **({"logs": list(self.logs)} if self.logs else {}),
        }
