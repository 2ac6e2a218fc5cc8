"""Read a Hugging Face `config.json` into the Config fields attention selection depends on.

Only JSON is parsed; nothing from a model directory is imported or executed. Every bad file or
key raises ConfigError naming the file and the key, so the CLI can exit 2 with a clear message.

What is derived (vLLM's reading of the same keys):

- head size: `head_dim`, else `hidden_size / num_attention_heads`;
- query heads: `num_attention_heads` (the CLI divides by --tensor-parallel-size);
- MLA (`kv_lora_rank` present): head size `kv_lora_rank + qk_rope_head_dim` (576 for DeepSeek),
  plus `qk_nope_head_dim`, `qk_rope_head_dim`, `v_head_dim`;
- sparse MLA (`index_topk`, DeepSeek-V3.2): use_sparse, and vLLM's rewrite of an fp8 KV cache
  dtype to `fp8_ds_mla` (see `apply_model_rewrites`);
- the fields a release's rules declare `model_keys` / `architectures` for (`declared_model_fields`): attention
  sinks (gpt-oss), the multimodal prefix LM (`is_mm_prefix_lm`, else vLLM's model_type list: Gemma 3,
  PaliGemma, Molmo2, and on 0.33 Bagel and Moondream 3), soft-capping, ALiBi, R-SWA, diffusion, MiMo-V2's route;
- sliding window: on every layer or on some (layer_types / sliding_window_pattern), or switched off
  (use_sliding_window false); a release whose selection reads it gets `has_sliding_window` (query.py);
- dtype: `torch_dtype` or `dtype`, then resolved as vLLM's `--dtype auto` does on the chosen
  hardware (`resolve_dtype`): float32 checkpoints run in bfloat16 (float16 for pooling models),
  and bfloat16 becomes float16 before compute capability 8.0 (float32 for models vLLM refuses to
  run in float16, e.g. Gemma 2/3);
- attention type: encoder-only (pooling) architectures such as BERT, RoBERTa, XLM-R and
  ModernBERT select encoder-only attention (vLLM builds them with EncoderOnlyAttention).

Multimodal configs keep the language model under `text_config`; its keys win.

>>> m = read_model_config("examples/llama-3-8b.json")   # doctest: +SKIP
>>> m.fields["head_size"], m.fields["num_heads"]          # doctest: +SKIP
(128, 32)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .checkpoint_kv import CheckpointQuant, apply_checkpoint, kv_outcomes
from .errors import ConfigError, safe_repr
from .render import show
from .rules.model import ModelKey

_DTYPES = {"float16": "float16", "fp16": "float16", "half": "float16", "bfloat16": "bfloat16",
           "bf16": "bfloat16", "float32": "float32", "fp32": "float32", "float": "float32"}
# Architectures vLLM runs as pooling models whose attention is encoder-only (bidirectional, no KV
# cache): the BERT family and its descendants (vLLM's registry: _EMBEDDING_MODELS and
# _CROSS_ENCODER_MODELS entries built with EncoderOnlyAttention).
ENCODER_ONLY_ARCHITECTURES = frozenset({
    "BertModel", "BertForSequenceClassification", "BertForTokenClassification", "BertSpladeSparseEmbeddingModel",
    "HF_ColBERT", "RobertaModel", "RobertaForMaskedLM", "RobertaForSequenceClassification", "XLMRobertaModel",
    "XLMRobertaForSequenceClassification", "BgeM3EmbeddingModel", "ModernBertModel",
    "ModernBertForSequenceClassification", "ModernBertForTokenClassification", "NomicBertModel", "GteModel",
    "GteNewModel", "GteNewForSequenceClassification", "LlamaBidirectionalModel",
    "LlamaBidirectionalForSequenceClassification", "ColBERTModernBertModel", "ColBERTJinaRobertaModel",
})
# Pooling (embedding / reward / classification) architectures with decoder attention.
POOLING_ARCHITECTURES = ENCODER_ONLY_ARCHITECTURES | frozenset({
    "Gemma2Model", "Gemma3TextModel", "LlamaModel", "MistralModel", "Qwen2Model", "Qwen2ForRewardModel",
    "Qwen2ForProcessRewardModel", "InternLM2ForRewardModel", "GPT2ForSequenceClassification",
    "JambaForSequenceClassification",
})
# vLLM's _FLOAT16_NOT_SUPPORTED_MODELS: model types it refuses to run in float16.
FLOAT16_NOT_SUPPORTED = frozenset({"gemma2", "gemma3", "gemma3_text", "plamo2", "glm4"})
FP8_DS_MLA_NOTE = ("kv_cache_dtype {old} -> fp8_ds_mla: vLLM's DeepSeek-V3.2 model config rewrites an fp8 "
                   "KV cache to fp8_ds_mla before selection")


@dataclass(frozen=True)
class ModelFacts:
    """What a config.json says about attention: Config fields plus notes for the explanation."""

    path: str
    fields: Mapping[str, Any]
    notes: tuple[str, ...] = ()
    model_type: str | None = None
    sparse_kv_rewrite: bool = False  # DeepSeek-V3.2 style: fp8* KV cache dtypes become fp8_ds_mla
    extra: Mapping[str, Any] = field(default_factory=dict)  # facts that do not change selection
    config_dtype: str | None = None  # the checkpoint's dtype as written (None: not given)
    architectures: tuple[str, ...] = ()
    pooling: bool = False  # vLLM runs it as a pooling (embedding / classification) model
    config: Mapping[str, Any] = field(default_factory=dict, repr=False)  # config.json (text_config merged in)
    quant: CheckpointQuant | None = None  # its quantization_config, as vLLM's two readers see it

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "model_type": self.model_type, "fields": dict(self.fields),
                "notes": list(self.notes), "sparse_kv_rewrite": self.sparse_kv_rewrite,
                "config_dtype": self.config_dtype, "architectures": list(self.architectures),
                "pooling": self.pooling, **dict(self.extra)}


_MAX_VALUE = 1 << 20  # as Config's integer fields: no attention size or head count comes near it


def _err(path: str, key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{path}:{key}", value, expected,
                       message=f"Invalid model config {path}: key {key!r} is {safe_repr(value)}. Expected {expected}.")


def _get_int(cfg: Mapping[str, Any], key: str, path: str, *, minimum: int = 1) -> int | None:
    v = cfg.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise _err(path, key, v, f"an integer >= {minimum}")
    if not minimum <= v <= _MAX_VALUE:
        raise _err(path, key, v, f"an integer from {minimum} to {_MAX_VALUE}")
    return v


def _load(path: str | Path) -> tuple[str, dict[str, Any]]:
    from .safe_io import MODEL_CONFIG_MAX_BYTES, FileProblem, read_text
    try:
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
    except (OSError, ValueError):  # an unusable path (NUL byte, too long): read_text says why
        p = Path(str(path))
    shown = str(p)
    try:
        text = read_text(p, max_bytes=MODEL_CONFIG_MAX_BYTES)
    except FileProblem as e:
        if e.reason == "no such file":
            raise ConfigError("model", str(path), "a config.json file or a directory holding one",
                              message=f"Invalid --model {str(path)!r}: no such file ({shown}). "
                                      "Expected a Hugging Face config.json or a directory holding one.") from None
        raise ConfigError("model", str(path), "a regular UTF-8 JSON file of at most "
                          f"{MODEL_CONFIG_MAX_BYTES} bytes",
                          message=f"Invalid --model {str(path)!r}: cannot read {shown}: {e.reason}.") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise ConfigError("model", str(path), "valid JSON nested less deeply",
                          message=f"Invalid model config {shown}: JSON nested too deeply to read.") from None
    except json.JSONDecodeError as e:
        raise ConfigError("model", str(path), "valid JSON",
                          message=f"Invalid model config {shown}: not valid JSON (line {e.lineno}, "
                                  f"column {e.colno}: {e.msg}).") from None
    except ValueError:  # a number of more than 4,300 digits (Python's int limit)
        raise ConfigError("model", str(path), "valid JSON with numbers of sane size",
                          message=f"Invalid model config {shown}: a number of more than 4,300 digits.") from None
    if not isinstance(data, dict):
        raise ConfigError("model", str(path), "a JSON object",
                          message=f"Invalid model config {shown}: expected a JSON object, got {type(data).__name__}.")
    return shown, data


_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it (HF_HUB_CACHE, HF_HOME, XDG)."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def locate(path: str | Path) -> str | Path:
    """`path` itself, or for a Hugging Face repo id ("deepseek-ai/DeepSeek-V3") that is not a local
    path, its config.json in the local hub cache (offline; ConfigError naming the cache when absent)."""
    text = str(path)
    if Path(text).exists() or not _REPO_ID.match(text) or text.lower().endswith(".json"):
        return path
    repo = hf_cache_dir() / ("models--" + text.replace("/", "--"))
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    candidates: list[Path] = []
    try:
        if ref.is_file():
            candidates.append(snapshots / ref.read_text(encoding="utf-8").strip() / "config.json")
        if snapshots.is_dir():
            candidates += sorted((p / "config.json" for p in snapshots.iterdir()),
                                 key=lambda p: p.stat().st_mtime if p.exists() else 0, reverse=True)
    except OSError:
        pass
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError("model", text, "a config.json path, a directory holding one, or a Hugging Face repo id "
                      "in the local cache", message=(
                          f"Invalid --model {text!r}: not a local path, and the Hugging Face cache has no "
                          f"config.json for it (looked in {snapshots}). attnsolve reads the cache offline: "
                          f"fetch it first (huggingface-cli download {text} config.json) or give the path."))


def read_model_config(path: str | Path) -> ModelFacts:
    """Parse `path` (config.json, a directory holding it, or a Hugging Face repo id in the local
    cache) into ModelFacts; ConfigError on bad input."""
    shown, top = _load(locate(path))
    text_cfg = top.get("text_config")
    if text_cfg is not None and not isinstance(text_cfg, dict):
        raise _err(shown, "text_config", text_cfg, "a JSON object")
    cfg: dict[str, Any] = {**top, **(text_cfg or {})}
    text_type = (text_cfg or {}).get("model_type")
    model_type = top.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise _err(shown, "model_type", model_type, "a string")
    fields: dict[str, Any] = {}
    notes: list[str] = []
    extra: dict[str, Any] = {}
    if isinstance(text_type, str):
        extra["text_model_type"] = text_type

    for key in ("torch_dtype", "dtype"):
        v = top.get(key, (text_cfg or {}).get(key))
        if v is None:
            continue
        if not isinstance(v, str) or v.lower().removeprefix("torch.") not in _DTYPES:
            raise _err(shown, key, v, "one of float16, bfloat16, float32")
        fields["dtype"] = _DTYPES[v.lower().removeprefix("torch.")]
        break

    heads = _get_int(cfg, "num_attention_heads", shown)
    kv_heads = _get_int(cfg, "num_key_value_heads", shown)
    hidden = _get_int(cfg, "hidden_size", shown)
    head_dim = _get_int(cfg, "head_dim", shown)
    if heads is not None:
        fields["num_heads"] = heads
        extra["num_attention_heads"] = heads
    if kv_heads is not None:
        extra["num_key_value_heads"] = kv_heads

    kv_lora = _get_int(cfg, "kv_lora_rank", shown)
    if kv_lora is not None:
        rope = _get_int(cfg, "qk_rope_head_dim", shown)
        if rope is None:
            raise _err(shown, "qk_rope_head_dim", None, "an integer (MLA models with kv_lora_rank need it)")
        fields["use_mla"] = True
        fields["head_size"] = kv_lora + rope
        fields["qk_rope_head_dim"] = rope
        for key in ("qk_nope_head_dim", "v_head_dim"):
            v = _get_int(cfg, key, shown)
            if v is not None:
                fields[key] = v
        notes.append(f"MLA: head size {kv_lora + rope} = kv_lora_rank {kv_lora} + qk_rope_head_dim {rope}")
        topk = _get_int(cfg, "index_topk", shown)
        if topk is not None:
            fields["use_sparse"] = True
            fields["index_topk"] = topk
            notes.append(f"sparse MLA (index_topk {topk}, DeepSeek-V3.2 style)")
    else:
        if "index_topk" in cfg:
            raise _err(shown, "index_topk", cfg["index_topk"], "absent unless kv_lora_rank is set (sparse attention is an MLA feature)")
        if head_dim is not None:
            fields["head_size"] = head_dim
        elif hidden is not None and heads is not None:
            if hidden % heads:
                raise _err(shown, "hidden_size", hidden, f"a multiple of num_attention_heads ({heads}) when head_dim is absent")
            fields["head_size"] = hidden // heads
            notes.append(f"head size {hidden // heads} = hidden_size {hidden} / num_attention_heads {heads}")

    archs = top.get("architectures", [])
    if archs is None:
        archs = []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise _err(shown, "architectures", archs, "a list of architecture names")
    pooling = any(a in POOLING_ARCHITECTURES for a in archs)
    if any(a in ENCODER_ONLY_ARCHITECTURES for a in archs):
        fields["attn_type"] = "encoder_only"
        notes.append(f"encoder-only attention ({archs[0]} is a pooling model vLLM builds with "
                     "encoder-only attention)")
    elif pooling:
        notes.append(f"pooling model ({archs[0]})")

    window = cfg.get("sliding_window")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise _err(shown, "sliding_window", window, "a positive integer or null")
        if cfg.get("use_sliding_window") is False:  # Qwen2: the window is declared but switched off
            notes.append(f"sliding window {window} switched off (use_sliding_window false)")
        else:
            layers, why = _windowed_layers(cfg, text_type if isinstance(text_type, str) else model_type)
            if layers == "none":
                notes.append(f"sliding window {window} unused: no layer is a sliding-window layer ({why})")
            else:
                extra["sliding_window"] = window  # the note depends on the release asked (query.py)
                extra["sliding_window_layers"] = layers

    quant = _quantization(shown, top, text_cfg)
    if quant is not None and quant.method:
        extra["quant_method"] = quant.method
    return ModelFacts(path=shown, fields=fields, notes=tuple(notes), model_type=model_type,
                      sparse_kv_rewrite=bool(fields.get("use_sparse")), extra=extra,
                      config_dtype=fields.get("dtype"), architectures=tuple(archs), pooling=pooling, config=cfg,
                      quant=quant)


def _quantization(shown: str, top: Mapping[str, Any], text_cfg: Mapping[str, Any] | None) -> CheckpointQuant | None:
    """The checkpoint's quantization as vLLM reads it: hf_config.quantization_config (config.json's, else a ModelOpt
    hf_quant_config.json beside it: transformers_utils/config.py), and the model's quantization config (that, else
    `compression_config`, else text_config's: model_arch_config_convertor.py get_quantization_config)."""
    def table(cfg: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
        v = cfg.get(key)
        if v is not None and not isinstance(v, dict):
            raise _err(where, key, v, "a JSON object")
        return v
    engine = table(top, "quantization_config", shown)
    source = "config.json quantization_config"
    if engine is None:
        side = Path(shown).with_name("hf_quant_config.json")
        if side.is_file():
            source = side.name
            engine = table({"quantization_config": _load(side)[1]}, "quantization_config", str(side))
    layer = engine if engine is not None else table(top, "compression_config", shown)
    if layer is None and text_cfg:
        layer = table(text_cfg, "quantization_config", shown) or table(text_cfg, "compression_config", shown)
    if engine is None and layer is None:
        return None
    return CheckpointQuant(engine=engine, layer=layer, source=source)


# transformers' config classes that fill `layer_types` when config.json lists none (their __post_init__), for the
# model types whose default is not "every layer windowed": vLLM builds each layer from config.layer_types.
# "some": Gemma2Config / GptOssConfig alternate, Gemma3TextConfig / Gemma4TextConfig window 5 of 6, Cohere2Config
# and Exaone4Config 3 of 4 (sliding_window_pattern), GraniteSWAConfig / GraniteMoeSWAConfig / CwmConfig a full layer
# every 4th, MiMoV2FlashConfig every 6th; "none": LagunaConfig makes every layer full attention.
_DEFAULT_LAYER_TYPES = {
    "gemma2": "some", "gpt_oss": "some", "gemma3_text": "some", "gemma4_text": "some", "cohere2": "some",
    "cohere2_moe": "some", "exaone4": "some", "granite_swa": "some", "granitemoe_swa": "some", "cwm": "some",
    "mimo_v2_flash": "some", "laguna": "none",
}


def _windowed_layers(cfg: Mapping[str, Any], model_type: Any) -> tuple[str, str]:
    """Which layers a config's sliding window applies to ("all", "some" or "none") and why: its `layer_types`,
    else its `sliding_window_pattern` (an int: every n-th layer full; a string like "LLLG": L local, G global),
    else what transformers' config class for `model_type` fills in, else every layer."""
    types = cfg.get("layer_types")
    if isinstance(types, list) and types:
        slid = [isinstance(t, str) and "sliding" in t for t in types]
        return ("some" if any(slid) and not all(slid) else "all" if all(slid) else "none"), "its layer_types"
    pattern = cfg.get("sliding_window_pattern")
    if isinstance(pattern, int) and not isinstance(pattern, bool) and pattern >= 1:
        return ("some" if pattern > 1 else "none"), "its sliding_window_pattern"
    if isinstance(pattern, str) and pattern and set(pattern.upper()) <= {"L", "G"}:
        kinds = set(pattern.upper())
        return ("some" if kinds == {"L", "G"} else "all" if kinds == {"L"} else "none"), "its sliding_window_pattern"
    default = _DEFAULT_LAYER_TYPES.get(model_type) if isinstance(model_type, str) else None
    if default is not None:
        return default, f"transformers' {model_type} config fills layer_types so when config.json has none"
    return "all", "no layer_types"


def declared_model_fields(model: ModelFacts, rules: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The fields a release's rules say `--model` fills (`model_keys`, `architectures` in their
    declarations), read from this config.json; with a note for each. Only fields the release declares."""
    out: dict[str, Any] = {}
    notes: list[str] = []
    arch = model.architectures[0] if model.architectures else None
    # vLLM reads model_type from hf_config (the top level), not from a multimodal model's text_config
    view = {**model.config, "model_type": model.model_type}
    for name, decl in rules.fields.items():
        if name in model.fields:
            continue
        if arch is not None and arch in decl.architectures:
            out[name] = v = decl.architectures[arch]
            notes.append(f"{name} {show(v)} (architecture {arch})")
            continue
        keys = (*decl.model_keys, *decl.architecture_keys.get(arch or "", ()))
        if decl.kind in ("bool", "tristate"):
            got = _bool_from_keys(keys, view)
            if got is not None:
                out[name], mk = got
                _note(notes, mk, mk.raw(view), f"{name} {'true' if out[name] else 'false'} (config.json {mk})")
            continue
        for mk in keys:
            v = mk.read(view)
            key = mk.key
            if v is None:
                continue
            if decl.kind == "int":
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _MAX_VALUE:
                    raise _err(model.path, key, v, f"an integer from 0 to {_MAX_VALUE}")
                out[name] = v
            else:
                out[name] = v
            _note(notes, mk, v, f"{name} {out[name]} (config.json {key})")
            break
    return out, tuple(notes)


def _note(notes: list[str], mk: ModelKey, value: Any, default: str) -> None:
    """The key's own note (`{value}` filled; "" for none), else `default`."""
    if mk.note is None:
        notes.append(default)
    elif mk.note:
        notes.append(mk.note.format(value=value))


def _bool_from_keys(keys: tuple[ModelKey, ...], cfg: dict[str, Any]) -> tuple[bool, ModelKey] | None:
    """A bool field from its keys, in order: a present key that `decides` answers alone; otherwise true where
    any present key says so (vLLM ORs its getattr()s), false where some are present and none does; None where
    none is present."""
    first_false = None
    for mk in keys:
        v = mk.read(cfg)
        if v is None:
            continue
        if mk.decides or v:
            return bool(v), mk
        first_false = first_false or mk
    return (False, first_false) if first_false is not None else None


def supported_dtypes(platform: str, compute_capability: tuple[int, int] | None) -> tuple[str, ...]:
    """vLLM's `current_platform.supported_dtypes`, in its order (the first is the fallback)."""
    if platform == "cuda" and compute_capability is not None and compute_capability < (8, 0):
        return ("float16", "float32")  # Pascal, Volta, Turing: no bfloat16
    return ("bfloat16", "float16", "float32")  # Ampere+, ROCm, x86/aarch64 CPU


def resolve_dtype(model: ModelFacts, platform: str, compute_capability: tuple[int, int] | None) -> tuple[str, str | None]:
    """The dtype vLLM's `--dtype auto` gives this model on this hardware, and a note when it is not
    the checkpoint's (vLLM's `_resolve_auto_dtype`)."""
    supported = [d for d in supported_dtypes(platform, compute_capability)
                 if not (d == "float16" and (model.model_type in FLOAT16_NOT_SUPPORTED
                                             or _text_type(model) in FLOAT16_NOT_SUPPORTED))]
    preferred = "float16" if model.pooling and "float16" in supported else supported[0]
    given = model.config_dtype or "float32"  # no dtype in the config: vLLM's float32 default
    dtype = preferred if given == "float32" else given
    if dtype not in supported:
        dtype = preferred
    if dtype == model.config_dtype:
        return dtype, None
    why = ("float32 checkpoints run in the platform's preferred dtype" + (", float16 for pooling models"
           if model.pooling else "")) if given == "float32" else f"{given} is not supported on this hardware"
    was = model.config_dtype or "not given (float32)"
    return dtype, f"dtype {dtype}: --dtype auto resolves the checkpoint's {was} to {dtype} as vLLM does ({why})"


def _text_type(model: ModelFacts) -> str | None:
    return model.extra.get("text_model_type") if isinstance(model.extra.get("text_model_type"), str) else None


def apply_model_rewrites(model: ModelFacts, fields: dict[str, Any], rules: Any = None
                         ) -> tuple[dict[str, Any], tuple[str, ...]]:
    """vLLM's model-config rewrites of user settings, in its order: the checkpoint's own KV-cache dtype (its
    quantization_config, as `rules` -- the release asked -- reads it; none without rules), then DeepSeek-V3.2's
    fp8* KV -> fp8_ds_mla.

    Returns the new fields and a note for each rewrite (the CLI shows it as a warning).
    """
    notes: tuple[str, ...] = ()
    if rules is not None:
        decl = rules.fields.get("kv_cache_dtype")
        fields, notes = apply_checkpoint(model.quant, decl.checkpoint if decl is not None else None, fields,
                                         rules.fields)
    kv = fields.get("kv_cache_dtype")
    if model.sparse_kv_rewrite and isinstance(kv, str) and kv.lower().startswith("fp8") and kv.lower() != "fp8_ds_mla":
        return {**fields, "kv_cache_dtype": "fp8_ds_mla"}, (*notes, FP8_DS_MLA_NOTE.format(old=kv))
    return fields, notes


def kv_effective(model: ModelFacts, rules: Any, fields: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """(typed --kv-cache-dtype, the dtype vLLM ends with) for each value of the release's domain that this
    checkpoint's quantization_config changes (the fix search offers what a flag gives, not what it says)."""
    decl = rules.fields.get("kv_cache_dtype")
    if model.quant is None or decl is None or decl.checkpoint is None:
        return ()
    got = kv_outcomes(model.quant, decl.checkpoint, tuple(rules.domains.get("kv_cache_dtype", ())),
                      {"use_mla": fields.get("use_mla")}, rules.fields)
    return tuple(got.items())
