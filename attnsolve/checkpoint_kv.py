"""A checkpoint's own KV-cache dtype: what vLLM makes of config.json's `quantization_config`.

Why a module of its own: two vLLM code paths decide it (the engine arguments resolve `--kv-cache-dtype auto` for
ModelOpt checkpoints; the attention layer applies a compressed-tensors `kv_cache_scheme`), each release's rules
say how (`[fields.kv_cache_dtype.checkpoint]`, rules.model.CheckpointKv), and `--model`, the matrix over KV dtypes
and the fix search must all apply it alike. Nothing here imports a model or a quantization library: the
config's JSON is read as vLLM's own helpers read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .rules.model import CheckpointKv

# transformers_utils/model_arch_config_convertor.py _normalize_quantization_config: a ModelOpt export's `producer`
# block names its method by the quantization algorithm (an unknown algorithm makes vLLM refuse the checkpoint)
_MODELOPT_METHODS = {"FP8": "modelopt", "FP8_PER_CHANNEL_PER_TOKEN": "modelopt", "FP8_PB_WO": "modelopt",
                     "NVFP4": "modelopt_fp4", "MIXED_PRECISION": "modelopt_mixed"}


def normalized(qc: Mapping[str, Any] | None) -> tuple[Mapping[str, Any] | None, str, str | None]:
    """(the quantization config, its quant_method as vLLM normalises it, vLLM's refusal or None)."""
    if not isinstance(qc, Mapping):
        return None, "", None
    method = qc.get("quant_method", "")
    method = method.lower().replace("compressed_tensors", "compressed-tensors") if isinstance(method, str) else ""
    producer = qc.get("producer")
    inner = qc.get("quantization", {})
    legacy = isinstance(inner, Mapping) and "modelopt_quant_config" in inner
    if (isinstance(producer, Mapping) and producer.get("name") == "modelopt") or legacy:
        algo = inner.get("quant_algo") if isinstance(inner, Mapping) else None
        if algo is not None:
            got = _MODELOPT_METHODS.get(str(algo).upper())
            if got is None:
                return qc, method, f"Unknown ModelOpt quant algo: {algo}"
            method = got
    return qc, method, None


@dataclass(frozen=True)
class CheckpointQuant:
    """The two views vLLM takes of a checkpoint's quantization: `engine` is hf_config.quantization_config (config.json,
    else a ModelOpt hf_quant_config.json beside it), read when the engine arguments resolve the KV dtype; `layer` is
    what the model's quantization config is built from (that, else `compression_config`, else text_config's)."""

    engine: Mapping[str, Any] | None
    layer: Mapping[str, Any] | None
    source: str = "config.json quantization_config"  # where `engine` was read

    @property
    def method(self) -> str:
        return normalized(self.layer if self.layer is not None else self.engine)[1]


def _modelopt_algo(qc: Mapping[str, Any], ck: CheckpointKv) -> tuple[str | None, str | None]:
    """utils/torch_utils.py get_kv_cache_quant_algo_string: (KV dtype or "auto", vLLM's warning) for a ModelOpt config;
    (None, None) where it names no KV algorithm."""
    inner = qc.get("quantization", qc)
    if not isinstance(inner, Mapping):
        inner = qc
    kv_algo = (inner.get("kv_cache_scheme") or qc.get("kv_cache_scheme") or inner.get("kv_cache_quant_algo")
               or qc.get("kv_cache_quant_algo"))
    supported = list(ck.modelopt_algos)
    warning = f"WARNING: Unknown kv_cache_quant_algo '{kv_algo}' in model config. Supported values: {supported}. " \
              "Falling back to 'auto'."
    if isinstance(kv_algo, Mapping):
        scheme = next((s for s in ck.modelopt_schemes if s.matches(kv_algo)), None)
        if scheme is None:
            return "auto", warning
        kv_algo = scheme.algo
    if isinstance(kv_algo, str):
        got = ck.modelopt_algos.get(kv_algo.lower())
        return (got, None) if got is not None else ("auto", warning)
    return None, None


def apply_checkpoint(quant: CheckpointQuant | None, ck: CheckpointKv | None, fields: dict[str, Any],
                     declared: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """`fields` with the KV-cache dtype (and per-head scales) vLLM takes from the checkpoint, and a note for each
    change. fields["kv_cache_dtype"] is what the user typed (absent or "auto": automatic); `declared`: the release's
    field declarations (a per-head input it does not declare is not set)."""
    if quant is None or ck is None:
        return fields, ()
    out = dict(fields)
    notes: list[str] = []
    typed = out.get("kv_cache_dtype")
    engine, method, refusal = normalized(quant.engine)
    if refusal is not None:
        notes.append(f"vLLM refuses this checkpoint's quantization_config: {refusal!r}")
    if engine is not None and method.startswith("modelopt") and typed in (None, "auto"):
        value, warning = _modelopt_algo(engine, ck)
        if warning:
            notes.append(f"vLLM warns: {warning}")
        if value is not None and value != "auto":
            out["kv_cache_dtype"] = value
            notes.append(f"kv_cache_dtype {value}: the checkpoint's ModelOpt KV-cache algorithm ({quant.source}), as "
                         "vLLM resolves --kv-cache-dtype auto")
    layer, layer_method, _ = normalized(quant.layer)
    scheme = layer.get("kv_cache_scheme") if layer is not None and layer_method == "compressed-tensors" else None
    if scheme is None or ck.scheme_dtype is None:
        return out, tuple(notes)
    if out.get("use_mla"):
        notes.append("the checkpoint's compressed-tensors kv_cache_scheme is not applied: vLLM's MLA layers do not "
                     "read it")
        return out, tuple(notes)
    now = out.get("kv_cache_dtype")
    if now in (None, "auto") or ck.scheme_overrides_explicit:
        if now != ck.scheme_dtype:
            out["kv_cache_dtype"] = ck.scheme_dtype
            over = "" if now in (None, "auto") else f", over --kv-cache-dtype {now} (this release's attention layer " \
                                                    "applies the scheme whatever the flag says)"
            notes.append(f"kv_cache_dtype {ck.scheme_dtype}: the checkpoint's compressed-tensors kv_cache_scheme, as "
                         f"vLLM's attention layer uses it{over}")
    elif now != ck.scheme_dtype:
        notes.append(f"the checkpoint's compressed-tensors kv_cache_scheme is not applied: --kv-cache-dtype {now} "
                     "was given")
    per_head = ck.per_head_field
    if (per_head and per_head in declared and per_head not in out and isinstance(scheme, Mapping)
            and scheme.get("strategy") == ck.per_head_strategy):
        out[per_head] = True
        notes.append(f"{per_head} true: the checkpoint's kv_cache_scheme strategy is {ck.per_head_strategy!r}")
    return out, tuple(notes)


def kv_outcomes(quant: CheckpointQuant | None, ck: CheckpointKv | None, values: tuple[str, ...],
                base: Mapping[str, Any], declared: Mapping[str, Any]) -> dict[str, str]:
    """For each --kv-cache-dtype a user could type, the dtype vLLM ends up with for this checkpoint (only those that
    differ): the fix search tries what the flag gives, not what it says."""
    out: dict[str, str] = {}
    for v in values:
        got, _ = apply_checkpoint(quant, ck, {**base, "kv_cache_dtype": v}, declared)
        if got.get("kv_cache_dtype") != v:
            out[v] = got["kv_cache_dtype"]
    return out
