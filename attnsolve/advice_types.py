"""The values advice hands around: the question (Context), a fix (Remedy), a backend that lost
(LostBackend), the Advice itself, and the Goal a fix must reach.

Why this module: the search, the lost-backend analysis and the text renderer all pass these values;
keeping them apart from the code that fills them keeps the imports one-way. Each knows its JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from .advice_text import prefill_dict
from .config import Config
from .explain import Explanation, Verdict


@dataclass(frozen=True)
class Context:
    """The question as the user asked it: the Config plus what came from their own flags.

    The CLI builds one from flags, --model and the environment (attnsolve/query.py); the API
    builds one from a Config with `Context.of`, counting every field set away from its default
    as the user's own."""

    config: Config
    role: str | None = None
    gpu: str | None = None
    user_fields: frozenset[str] = frozenset()  # Config fields set by a flag (not by --model)
    tensor_parallel_size: int = 1
    total_heads: int | None = None  # query heads of the model before tensor parallelism
    sparse_kv_rewrite: bool = False  # DeepSeek-V3.2: an fp8 KV cache becomes fp8_ds_mla
    # --kv-cache-dtype values the checkpoint turns into another dtype (its quantization_config): (typed, effective)
    kv_effective: tuple[tuple[str, str], ...] = ()
    # the layer's request came from backend_per_kind's entry for this kind (per_kind.py); the global request
    per_kind: str | None = None
    global_backend: str | None = None
    backend_per_kind: Any = None  # the map as given (a matrix cell's layer may be of another kind)
    float16_ok: bool = True  # False for model types vLLM refuses to run in float16
    notes: tuple[str, ...] = ()  # what the model reader and --gpu auto resolved, said to the user
    env: tuple[tuple[str, str], ...] = ()  # vLLM environment switches read from the process
    defaulted: tuple[str, ...] = ()  # fields nobody gave (shown as "(default)")
    dtype_auto: bool = False  # the dtype is vLLM's --dtype auto for the model (depends on the GPU)
    model_path: str | None = None
    available: frozenset[str] | None = None  # backends installed (None: all)

    @classmethod
    def of(cls, config: Config, role: str | None = None, available: Iterable[str] | None = None) -> "Context":
        """An API question: every field set away from its default counts as the user's."""
        given = frozenset(config.to_dict(only_changed=True)) - {"platform", "dtype"}
        heads = config.num_heads if isinstance(config.num_heads, int) else None
        return cls(config, role, config.gpu if isinstance(config.gpu, str) else None, given, total_heads=heads,
                   available=None if available is None else frozenset(available))

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(only_changed=True), "role": self.role, "gpu": self.gpu,
                "tensor_parallel_size": self.tensor_parallel_size, "model": self.model_path,
                "notes": list(self.notes), "defaulted": list(self.defaulted), "env": dict(self.env)}


@dataclass(frozen=True)
class Remedy:
    """One fix: the Config changes, the backend they get, the kind, and the text to paste."""

    changes: Mapping[str, Any]
    selects: str
    kind: str
    text: str
    keeps_intent: bool = True
    gpus: tuple[str, ...] = ()
    variant: str | None = None
    gives_up: str | None = None  # what the user chose and this fix drops ("the fp8 KV cache")

    @property
    def label(self) -> str:
        return self.selects + (f" ({self.variant})" if self.variant else "")

    def to_dict(self) -> dict[str, Any]:
        return {"changes": dict(self.changes), "selects": self.selects, "variant": self.variant, "kind": self.kind,
                "text": self.text, "keeps_intent": self.keeps_intent, "gives_up": self.gives_up,
                "gpus": list(self.gpus)}


@dataclass(frozen=True)
class LostBackend:
    """A higher-priority backend that lost: vLLM's reasons, the facts that rule it out, the fixes."""

    backend: str
    reasons: tuple[str, ...]
    conflict: Mapping[str, Any]
    fixes: tuple[Remedy, ...]
    hardware_only: bool
    model_conflict: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "reasons": list(self.reasons), "conflict": dict(self.conflict),
                "fixes": [f.to_dict() for f in self.fixes], "hardware_only": self.hardware_only,
                "model_conflict": None if self.model_conflict is None else dict(self.model_conflict)}


@dataclass(frozen=True)
class Advice:
    """An explanation with the advice around it: lost backends, ranked fixes, the one-line hint."""

    explanation: Explanation
    lost: tuple[LostBackend, ...] = ()
    fixes: tuple[Remedy, ...] = ()
    hint: str = ""
    hardware_only: bool = False
    conflicts: tuple[Mapping[str, Any], ...] = ()  # shown conflicts (noise such as platform=cuda removed)
    startup_error: str | None = None  # vLLM selects a backend but refuses to start (its own text)
    context: Context | None = None  # the question (None: Context.of the explanation's config)
    prefill: Any = None  # for an MLA model asked about decode: the MLA prefill Selection vLLM also picks
    other_releases: tuple[Any, ...] = ()  # on failure: versions.Outcome of other vLLM releases that select one

    @property
    def rejected(self) -> tuple[Verdict, ...]:
        """The candidates that lost: every one on failure, those above the selected one on success."""
        e = self.explanation
        if e.selected is None:
            return tuple(c for c in e.candidates if not c.valid)
        order = [c.backend for c in e.candidates]
        return tuple(e.candidates[: order.index(e.selected)]) if e.selected in order else ()

    def to_dict(self) -> dict[str, Any]:
        """One JSON shape on success and failure (docs/attnsolve-output.schema.json)."""
        ctx = self.context or Context.of(self.explanation.config, self.explanation.role)
        data = self.explanation.to_dict()
        data.update(fixes=[f.to_dict() for f in self.fixes], lost=[x.to_dict() for x in self.lost],
                    hint=self.hint, hardware_only=self.hardware_only, startup_error=self.startup_error,
                    query=ctx.to_dict(), error=self.explanation.message or None,
                    prefill=prefill_dict(self.prefill),
                    rejected=[{"backend": c.backend, "reasons": list(c.reasons)} for c in self.rejected],
                    other_releases=[o.to_dict() for o in self.other_releases])
        return data

    def lines(self, style: Any = None) -> list[str]:
        """The text `attnsolve explain` prints (attnsolve/advice_text.py)."""
        from .advice_text import advice_lines
        e = self.explanation
        return advice_lines(self, self.context or Context.of(e.config, e.role), style)

    def __str__(self) -> str:
        return "\n".join(self.lines())


Goal = Callable[[Config], "tuple[str, str | None] | None"]  # config -> (backend, variant) it gets, or None
