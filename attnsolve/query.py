"""The question a command line asks: flags, --model and the environment into one validated
`Query` (the advice layer's `Context` plus the model read from --model).

Precedence is vLLM's: flags > environment switches (read as vLLM reads them, unless --no-env) >
--model > defaults. Bad input raises ConfigError naming its source, or UsageError.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .advice import Context
from .render import wrap

if TYPE_CHECKING:
    from .config.env_reading import EnvRead

PROG = "attnsolve"


class UsageError(Exception):
    """Bad command-line input: printed to stderr, exit 2. `hint` is printed last."""

    def __init__(self, message: str, details: Sequence[str] = (), hint: str | None = None):
        self.message = message
        self.details = tuple(details)
        self.hint = hint
        super().__init__(message)

    def lines(self) -> list[str]:
        out = wrap(f"{PROG}: error: {self.message}", indent="    ", first="")
        for d in self.details:
            out += wrap(d, indent="    ", first="  ")
        if self.hint:
            out += wrap(self.hint, indent="    ", first="  ")
        return out


@dataclass(frozen=True)
class Query(Context):
    """A command line's question: the advice Context plus the model config read from --model."""

    model: Any = None


def _int_flag(name: str, value: Any) -> int:
    from .config import _as_int
    return _as_int(name, value, optional=False)


def rules_asked(ns: argparse.Namespace | None = None) -> Any:
    """The rule set a command line asks about: --vllm (already read by cli.py to build the flags),
    else the default release; a bad --vllm is reported by Config with its accepted values."""
    from .config import parse_vllm
    from .rules import rules_for
    try:
        return rules_for(parse_vllm(getattr(ns, "vllm", None)))
    except Exception:  # noqa: BLE001 - Config names the bad value when it parses the field
        return rules_for(parse_vllm(None))


def read_env(environ: Mapping[str, str], rules: Any = None) -> tuple["EnvRead", ...]:
    """vLLM's environment switches set in `environ`, read as the release reads them (one EnvRead each),
    as the rule set declares them (the common fields' variables for a set without declarations)."""
    from .config.env_reading import declared_variables, read_environment
    rules = rules if rules is not None else rules_asked()
    return read_environment(environ, declared_variables(rules))


def _flag_fields(rules: Any) -> tuple[str, ...]:
    """The Config fields a flag sets (a flag's destination is its field's name): the common ones
    and those the rule set declares."""
    from dataclasses import fields as dc_fields
    from .config import Config
    return (*(f.name for f in dc_fields(Config) if f.init), *rules.fields)


def release_note(asked: object) -> str | None:
    """What a --vllm naming a patch release without its own rule set is answered with, or None: the minor's set,
    which its `patch_releases` say was checked against that release's wheel (else: a release never checked)."""
    from .rules import parse_version, release_for, rules_for, versions
    from .rules.labels import minor_of
    label = parse_version(asked)
    if label is None or label in versions():
        return None
    packaged = release_for(label)
    if packaged is None:
        return None  # Config refuses it, naming the releases attnsolve has
    if label in tuple(rules_for(packaged).settings.get("patch_releases") or ()):
        return f"vLLM {label}: answered with the {packaged} rules (its selection code is {packaged}'s: checked)"
    return (f"vLLM {label} is not a release attnsolve has checked: answered with the {packaged} rules, the newest "
            f"of vLLM {minor_of(label)}")


def build_query(ns: argparse.Namespace, *, need_hardware: bool = True, free: Sequence[str] = (),
                environ: Mapping[str, str] | None = None) -> Query:
    """Flags, --model and the environment into a validated Config (ConfigError / UsageError on bad input).

    Precedence: flags > environment (as vLLM reads it, unless --no-env) > --model > defaults.
    """
    import os
    from .config import Config
    from .errors import ConfigError
    fields: dict[str, Any] = {}
    notes: list[str] = []
    model = None
    rules = rules_asked(ns)
    note = release_note(getattr(ns, "vllm", None))
    if note:
        notes.append(note)
    if getattr(ns, "model", None):
        from .modelconfig import read_model_config
        model = read_model_config(ns.model)
        fields.update(model.fields)
        fields.pop("dtype", None)  # resolved below, once the hardware is known
        notes += [f"model {model.path}: {n}" for n in model.notes]
        from .modelconfig import declared_model_fields
        declared, declared_notes = declared_model_fields(model, rules)
        fields.update(declared)
        notes += [f"model {model.path}: {n}" for n in declared_notes]
        notes += _sliding_window(model, rules, fields)
    env: tuple[EnvRead, ...] = ()
    if not getattr(ns, "no_env", False):
        try:
            env = read_env(os.environ if environ is None else environ, rules)
        except ConfigError as e:  # vLLM itself fails on this text (int() of a non-number): name the variable
            from .cli_guards import blame
            raise blame(e, {str(e.field): ("env", getattr(e, "variable", ""))}) from None
    explicit = {f: getattr(ns, f) for f in dict.fromkeys(_flag_fields(rules)) if getattr(ns, f, None) is not None}
    if isinstance(explicit.get("dtype"), str) and explicit["dtype"].strip().lower() == "auto":
        del explicit["dtype"]  # vLLM's --dtype auto: resolved from --model on this hardware (or the default)
    if "dtype" in explicit and "dtype_explicit" in rules.fields and "dtype_explicit" not in explicit:
        explicit["dtype_explicit"] = True  # vLLM's start-up checks an explicit dtype against the device
    used_env = tuple((r.variable, r.text) for r in env if r.field not in explicit)
    notes += [f"environment: {r.note}" for r in env if r.note and r.field not in explicit]
    fields.update({r.field: r.value for r in env if r.field not in explicit and r.value is not None})
    fields.update(explicit)
    gpu = fields.get("gpu")
    if isinstance(gpu, str):
        from .gpus import canonical, detect_local, resolve
        if gpu.strip().lower() == "auto":
            found = detect_local()
            notes.append(f"--gpu auto: {found.source} reports {found.raw!r} = {found.name}")
            fields["gpu"] = found.name
        elif canonical(gpu, rules.gpus) is not None and canonical(gpu, rules.gpus) != gpu:
            fields["gpu"] = resolve(gpu, rules.gpus)
    tp = 1
    if getattr(ns, "tensor_parallel_size", None) is not None:
        tp = _int_flag("tensor_parallel_size", ns.tensor_parallel_size)
    total = None
    if "num_heads" in fields:
        total = _int_flag("num_heads", fields["num_heads"])
        if total % tp:
            raise ConfigError("tensor_parallel_size", tp, f"a divisor of the number of query heads ({total})")
        fields["num_heads"] = total // tp
    if "num_kv_heads" in rules.fields:
        _kv_heads_per_gpu(fields, model, total, tp)
    defaulted: list[str] = []
    hardware = {"gpu", "platform", "compute_capability", "rocm_arch"}
    if not (hardware & set(fields)) and not (hardware & set(free)):
        if need_hardware or not ({"compute_capability", "gpu"} & set(free)):
            raise UsageError("no hardware given", ["the backend depends on the GPU: give --gpu NAME "
                             "(e.g. H100, B200, RTX 5090, MI300X, CPU, or auto for this machine's GPU) "
                             "or --compute-capability 9.0"], hint="e.g. --gpu H100")
    if "gpu" in free and not (hardware & set(fields)):  # matrix over GPU names: the first stands in
        fields["gpu"] = next(v for n, v in getattr(ns, "over_values", {}).items() if n == "gpu")
    if "compute_capability" in free:  # matrix over GPU generations: any CUDA GPU stands in for the base
        from .rules import default_rules
        if not (hardware & set(fields)):
            fields.update(platform="cuda", compute_capability=next(iter(default_rules().generations)))
    if "dtype" not in fields:
        if model is not None and "dtype" not in free:
            fields["dtype"] = _model_dtype(model, fields, notes)
        else:
            fields["dtype"] = "bfloat16"
            defaulted.append("dtype")
    kv_effective: tuple[tuple[str, str], ...] = ()
    if model is not None:
        from .modelconfig import apply_model_rewrites, kv_effective as _kv_effective
        fields, rewrites = apply_model_rewrites(model, fields, rules)
        notes += list(rewrites)
        kv_effective = _kv_effective(model, rules, fields)
    role = getattr(ns, "role", None)
    if role is not None:
        from .solver.facts import parse_role
        role = parse_role(role)
    user = frozenset(explicit) | frozenset(r.field for r in env if r.value is not None)
    env_fields = {r.variable: r.field for r in env if r.field not in explicit}
    try:
        config = Config(**fields)
    except ConfigError as e:  # name the source of the bad value: flag, model file key or environment variable
        from .cli_guards import blame, sources
        raise blame(e, sources(model, env_fields, explicit)) from None
    per_kind = global_backend = None
    if getattr(ns, "backend_per_kind", None) is not None:  # (matrix cells resolve it again: verbs.matrix)  # the entry for this layer's kind is its request
        from .per_kind import apply_backend_per_kind
        got = apply_backend_per_kind(config, ns.backend_per_kind)  # ConfigError: the CLI's exit 2
        notes.append(got.note)
        if got.entry is not None:
            per_kind, global_backend = got.kind, config.backend
            config = got.config
            user = user | {"backend"}
    from .modelconfig import FLOAT16_NOT_SUPPORTED
    f16 = model is None or not ({model.model_type, model.extra.get("text_model_type")} & FLOAT16_NOT_SUPPORTED)
    return Query(config=config, role=role, notes=tuple(notes), model=model,
                 gpu=fields.get("gpu") if isinstance(fields.get("gpu"), str) else None,
                 tensor_parallel_size=tp, total_heads=total, defaulted=tuple(defaulted), env=used_env,
                 user_fields=user, dtype_auto=model is not None and "dtype" not in explicit,
                 sparse_kv_rewrite=bool(model is not None and model.sparse_kv_rewrite), float16_ok=f16,
                 kv_effective=kv_effective, per_kind=per_kind, global_backend=global_backend,
                 backend_per_kind=getattr(ns, "backend_per_kind", None),
                 model_path=None if model is None else model.path)


def _sliding_window(model: Any, rules: Any, fields: dict[str, Any]) -> list[str]:
    """What a model's sliding window means for the release asked: a selection input where the release
    declares `has_sliding_window` (every layer windowed: set; some: the answer is for the full-attention
    layers), else a note that this release's selection does not read it."""
    layers = model.extra.get("sliding_window_layers")
    if layers is None:
        return []
    head = f"model {model.path}: sliding window {model.extra['sliding_window']} on "
    head += "every layer" if layers == "all" else "some layers"
    if "has_sliding_window" not in rules.fields:
        return [head + f" (does not change backend selection in vLLM {rules.vllm})"]
    mla = model.fields.get("use_mla") is True or fields.get("use_mla") is True
    if mla and not rules.fields["has_sliding_window"].mla_layers:
        # this release's MLA layer asks for its backend without the window (0.33's mla_attention.py passes none)
        return [head + f" (its MLA layers do not pass it to backend selection in vLLM {rules.vllm})"]
    if layers == "all":
        fields["has_sliding_window"] = True
        return [head + ": has_sliding_window=true"]
    return [head + ": answered for the full-attention layers; --has-sliding-window true answers for "
            "the windowed ones"]


def _kv_heads_per_gpu(fields: dict[str, Any], model: Any, total_heads: int | None, tp: int) -> None:
    """vLLM's model_config.get_num_kv_heads(parallel_config): 1 for an MLA layer, else the model's KV heads (its
    config's first of n_head_kv / num_kv_heads / num_key_value_heads / ..., the rules' model_keys; the query heads
    where it has none) divided by the tensor-parallel size, at least 1 (KV heads are replicated past it)."""
    kv = fields.get("num_kv_heads")
    if model is not None and fields.get("use_mla") is True:
        fields["num_kv_heads"] = 1  # an MLA model's decode is MQA (its num_key_value_heads is not the cache's)
        return
    if kv is None and model is not None:
        kv = total_heads  # no KV-head key: as many KV heads as query heads (vLLM's default factory)
    if kv is None:
        return
    fields["num_kv_heads"] = max(1, _int_flag("num_kv_heads", kv) // tp)


def _model_dtype(model: Any, fields: Mapping[str, Any], notes: list[str]) -> str:
    """vLLM's --dtype auto for the model on the hardware in `fields` (a note when it differs)."""
    from .config import Config
    from .modelconfig import resolve_dtype
    hw = {k: fields[k] for k in ("gpu", "platform", "compute_capability", "rocm_arch") if k in fields}
    probe = Config(dtype="float32", **hw)
    dtype, note = resolve_dtype(model, str(probe.platform), probe.compute_capability)
    if note:
        notes.append(note)
    return dtype
