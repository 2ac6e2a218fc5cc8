"""The Config class: the one value every question starts from (interned, immutable, hashable)."""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from ..errors import ConfigError, closest
from ..rules import default_version, generation, rules_for, versions
from .env_reading import declared_variables, read_environment
from .facts import facts_layout
from .gpu import lookup_gpu
from .invariants import apply_definitions, check_clauses, place, plan_of
from .normalise import _COMMON, NUMERIC_FIELDS, _normalise
from .template import from_template, numeric_hash, remember, shape_key, template_of
from .values import ANY, format_cc, parse_declared, parse_vllm
from ..rules.sets import per_rules_limit


_INTERNED: dict[tuple[Any, ...], Any] = {}


class _ConfigMeta(type):
    """Turns Python's TypeError for an unknown or positional argument into a ConfigError."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise ConfigError("(positional)", args, "keyword arguments only, e.g. Config(platform='cuda', ...)")
        # Interning: the same arguments (and the same active rules) give the same immutable Config.
        try:
            vllm = kwargs.get("vllm")  # the default release (an environment read) only when none is named
            default, gen = default_version() if vllm is None else None, generation()
            key: Any = (tuple(kwargs.items()), default, gen)
            hit = _INTERNED.get(key)
        except Exception:  # noqa: BLE001 - an unhashable or uncomparable argument: build without the memo
            key, hit = None, None
        if hit is not None:
            return hit
        shape = t = None
        if key is not None:  # fresh numeric values of a known shape: from its template (config/template.py)
            shape = shape_key(kwargs, default, gen)
            t = template_of(shape)
        obj = cls._build(kwargs, shape) if t is None else from_template(cls, t, kwargs)
        if key is not None:
            if len(_INTERNED) >= 8192:
                _INTERNED.clear()
            _INTERNED[key] = obj
        return obj

    def _build(cls, kwargs: dict[str, Any], shape: Any = None) -> Any:
        """The full build (every check); shape: the template key of these arguments, to keep the result as
        the template of its shape (config/template.py), or None."""
        rules = rules_for(parse_vllm(kwargs.get("vllm")))
        declared = rules.fields
        given = frozenset(kwargs)
        extras: dict[str, Any] = {}
        for name in list(kwargs):
            value = kwargs[name]
            if value.__class__ is str and value == "ANY":  # to_dict() writes a free field as the string "ANY"
                kwargs[name] = ANY
            if name not in _INIT_NAMES:
                if name in declared:  # a selection input this release's rules declare (schema as data)
                    extras[name] = kwargs.pop(name)
                    continue
                known = {*_INIT_NAMES, *declared}
                elsewhere = _declared_elsewhere(name)
                if elsewhere:
                    raise ConfigError(name, kwargs[name], sorted(known), message=(
                        f"Config field {name!r} is not a selection input of vLLM {rules.vllm or 'custom'}; "
                        f"it is one of vLLM {', '.join(elsewhere)} (pass vllm=...)."))
                raise ConfigError(name, kwargs[name], sorted(known), suggestion=closest(name, known), message=(
                    f"Unknown Config field {name!r}. Known fields: {', '.join(sorted(known))}."
                    + (f" Did you mean {closest(name, known)!r}?" if closest(name, known) else "")))
        if kwargs.get("platform") is None and kwargs.get("gpu") is None:  # a declared hardware fact names its platform
            hw = {p for n in extras for p in declared[n].platforms if declared[n].category == "hardware"}
            if len(hw) == 1:
                kwargs["platform"] = hw.pop()
        plan = _release_plan(rules)
        for name, default in plan[0]:  # a release's own default for a field Config always has
            if name not in kwargs:
                kwargs[name] = default
        # the dataclass __init__ without its per-field object.__setattr__: every name was checked above
        obj = cls.__new__(cls)
        d = obj.__dict__
        d.update(_INIT_DEFAULTS)
        d.update(kwargs)
        obj.__post_init__()
        if plan[1] or extras:
            obj._set_extras(extras, rules)
        inv = plan_of(rules, _COMMON)
        if inv.definitions and not inv.defined.isdisjoint(given):  # the defaults agree: only a given side moves
            changes = apply_definitions(inv, {**obj.__dict__, **dict(obj._extra)}, given)
            if changes:
                obj._amend(changes)
        if inv.clauses:
            values = {**obj.__dict__, **dict(obj._extra)}
            # a clause judges what was given: a declared field its `defaults` cases filled counts as unset there
            # (0.21's AttentionConfig refuses the cuDNN prefill switch before the deprecated switches fill
            # mla_prefill_backend, so a name given beside the switch that names it is not the switch's)
            for name in _filled_by_defaults(rules):
                if name not in extras or extras[name] is None:
                    values[name] = None
            check_clauses(inv, values)
        d["_partial"] = ANY in _FIELD_VALUES(d) or any(v is ANY for _, v in obj._extra)
        d["_facts"] = facts_layout(d, obj._extra, FIELD_NAMES, _FIELD_VALUES)  # solver.facts.base_facts copies it
        if shape is not None:
            remember(shape, obj, rules, {**_DEFAULTS, **dict(plan[0])}, hash(_FIXED_VALUES(d)),
                     ANY in _FIXED_VALUES(d) or any(v is ANY for _, v in obj._extra))
        return obj


@dataclass(frozen=True, eq=True, repr=False)
class Config(metaclass=_ConfigMeta):
    """A selection query: platform, model facts and the switches that change vLLM's answer.

    Defaults are vLLM's: kv_cache_dtype "auto" (= model dtype), block_size None (vLLM's start-up
    path: no block-size constraint), automatic backend, FA version per GPU, TRTLLM auto, AITER off.
    head_size None means the release's declared default (576 for MLA layers, 128 otherwise: `defaults` of
    [fields.head_size]); rocm_arch None means its invariant's value (gfx942, MI300).

    >>> Config(platform="cuda", gpu="H100", dtype="bf16").compute_capability
    (9, 0)
    """

    platform: Any = None
    dtype: Any = None
    compute_capability: Any = None
    head_size: Any = None
    kv_cache_dtype: Any = "auto"
    block_size: Any = None
    use_mla: Any = False
    use_sparse: Any = False
    has_sink: Any = False
    use_mm_prefix: Any = False
    attn_type: Any = "decoder"
    num_heads: Any = None
    backend: Any = None
    flash_attn_version: Any = None
    use_trtllm_attention: Any = None
    trtllm_available: Any = True
    qk_nope_head_dim: Any = None
    qk_rope_head_dim: Any = None
    v_head_dim: Any = None
    index_topk: Any = None
    rocm_arch: Any = None
    rocm_use_aiter: Any = False
    rocm_use_aiter_mha: Any = True
    rocm_use_aiter_mla: Any = True
    rocm_use_aiter_unified_attention: Any = False
    use_prefill_decode_attention: Any = False
    use_trtllm_ragged_deepseek_prefill: Any = True
    disable_flashinfer_prefill: Any = False
    use_cudnn_prefill: Any = False
    flashinfer_available: Any = True
    # The vLLM release the question is about ("0.33", "0.33.0", "v0.33"; None = the default release).
    vllm: Any = None
    gpu: Any = field(default=None, compare=False)
    _hash: int = field(default=0, init=False, compare=False, repr=False)
    # Fields a release's rules declare beyond the ones above: ((name, value), ...) in declaration order.
    _extra: tuple[tuple[str, Any], ...] = field(default=(), init=False, compare=True, repr=False)

    def _set_extras(self, given: dict[str, Any], rules: Any) -> None:
        """Validate the rule-declared fields (given or their declared default) by their declared kind; the
        defaults are parsed once per rule set, only the given ones (and a GPU entry's) per call."""
        inv = plan_of(rules, _COMMON)
        pairs, index, placed = _extras_of(rules, inv)
        gpu_facts: Mapping[str, Any] = {}
        if self.gpu is not None and self.gpu is not ANY:
            gpu_facts = lookup_gpu(self.gpu, rules)
        touched = [n for n in (*given, *gpu_facts, *placed) if n in index]
        if touched:
            values = list(pairs)
            for name in dict.fromkeys(touched):
                values[index[name]] = (name, self._extra_value(name, given, gpu_facts, rules, inv))
            pairs = tuple(values)
            pairs_hash = hash(pairs)
        else:
            pairs_hash = _pairs_hash(pairs)  # the release's shared defaults tuple
        set_ = object.__setattr__
        set_(self, "_extra", pairs)
        set_(self, "_hash", hash((self._hash, pairs_hash)))

    def _extra_value(self, name: str, given: Mapping[str, Any], gpu_facts: Mapping[str, Any], rules: Any,
                     inv: Any) -> Any:
        decl = rules.fields[name]
        if (name in given and not (given[name] is None and decl.defaults)) or name in gpu_facts:
            # given (None is "not given" for a field with `defaults` cases, as head_size=None is), or a GPU entry's
            # declared hardware fact
            raw = given.get(name, gpu_facts.get(name))
        else:  # its declared default, which may depend on the other fields (`defaults` cases)
            raw = decl.unset_value({**self.__dict__, **given}, ANY) if decl.defaults else decl.default
        if name in given and name in gpu_facts and given[name] != gpu_facts[name]:
            raise ConfigError(name, given[name], f"{gpu_facts[name]!r} (the {name} of {self.gpu}) or leave it unset")
        if isinstance(raw, str) and raw == "ANY":
            raw = ANY
        value = raw if raw is ANY or (raw is None and name in inv.unknowable) else parse_declared(decl, raw, rules)
        value = place(inv, name, value, self.platform)
        if decl.platforms and value not in (decl.default, ANY) and self.platform not in (ANY, *decl.platforms):
            raise ConfigError(name, value, f"{decl.default!r} on platform {self.platform} "
                              f"({name} is a {', '.join(decl.platforms)} setting)")
        return value

    def _amend(self, changes: Mapping[str, Any]) -> None:
        """Values a definition invariant implies (before the instance is published), hash recomputed."""
        d = self.__dict__
        extra = tuple((k, changes.get(k, v)) for k, v in self._extra)
        d.update({k: v for k, v in changes.items() if k in _DEFAULTS})
        base = _fields_hash(d)
        d["_hash"] = hash((base, hash(extra))) if extra else base
        d["_extra"] = extra

    def __getattr__(self, name: str) -> Any:
        # only reached for names that are not regular attributes: the rule-declared fields
        if not name.startswith("_"):
            for key, value in object.__getattribute__(self, "_extra"):
                if key == name:
                    return value
            elsewhere = _declared_elsewhere(name)
            if elsewhere:
                raise AttributeError(f"{name!r} is not a selection input of vLLM {self.vllm} "
                                     f"(it is one of vLLM {', '.join(elsewhere)})")
        raise AttributeError(f"'Config' object has no attribute {name!r}")

    @property
    def field_names(self) -> tuple[str, ...]:
        """Every selection field of this config's release: the common ones, then the rule-declared ones."""
        return FIELD_NAMES + tuple(k for k, _ in self._extra)

    def __post_init__(self) -> None:
        d = self.__dict__  # written directly: the instance is not published yet, and Config() runs often
        d.update(_normalise(self))
        d["_hash"] = _fields_hash(d)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        shown = [f"{k}={v!r}" for k, v in self.to_dict(only_changed=True).items()]
        return "Config(" + ", ".join(shown) + ")"

    @property
    def is_partial(self) -> bool:
        """Whether a field is left free (ANY); decided once, when the Config is built (solve() asks every time)."""
        partial = self.__dict__.get("_partial")
        if partial is None:
            return any(getattr(self, f) is ANY for f in FIELD_NAMES) or any(v is ANY for _, v in self._extra)
        return partial

    @property
    def free_fields(self) -> tuple[str, ...]:
        return tuple(f for f in self.field_names if getattr(self, f) is ANY)

    def replace(self, **changes: Any) -> "Config":
        """A copy with some fields changed (re-validated)."""
        data = {f: getattr(self, f) for f in FIELD_NAMES}
        data.update(self._extra)
        data["vllm"] = self.vllm
        data.update(changes)
        for inv in plan_of(rules_for(self.vllm), _COMMON).definitions:  # the side not changed follows
            a, b = inv.fields
            if (a in changes) != (b in changes):
                data.pop(b if a in changes else a, None)
        if "vllm" in changes and changes["vllm"] != self.vllm:  # another release: keep what it declares
            declared = rules_for(parse_vllm(changes["vllm"])).fields
            data = {k: v for k, v in data.items() if k in _INIT_NAMES or k in declared}
        if "compute_capability" in changes or "platform" in changes:
            data.pop("gpu", None)
        return Config(**data)

    def to_dict(self, *, only_changed: bool = False) -> dict[str, Any]:
        """JSON-ready fields, in the form Config accepts back (`Config(**c.to_dict())` round-trips)."""
        out: dict[str, Any] = {}
        # a common field's default is the release's where its rules declare another (0.21's
        # use_trtllm_ragged_deepseek_prefill is false; Config's own default is 0.17's true)
        release = dict(_release_plan(rules_for(self.vllm))[0]) if only_changed else {}
        for f in FIELD_NAMES:
            v = getattr(self, f)
            if only_changed and f not in ("platform", "dtype") and v == release.get(f, _DEFAULTS.get(f, object())) \
                    and v is not ANY:
                continue
            out[f] = "ANY" if v is ANY else (format_cc(v) if f == "compute_capability" and v is not None else v)
        declared = rules_for(self.vllm).fields if self._extra else {}
        for f, v in self._extra:
            if not (only_changed and v == declared[f].default):
                out[f] = "ANY" if v is ANY else v
        if not only_changed or self.vllm != default_version():
            out["vllm"] = self.vllm
        return out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **fields_: Any) -> "Config":
        """Config with vLLM's environment switches read from `environ` (default os.environ); explicit
        keyword fields win. Opt-in: nothing else in attnsolve reads the environment."""
        env = os.environ if environ is None else environ
        if not isinstance(env, Mapping):
            raise ConfigError("environ", environ, "a mapping of environment variables, or None for os.environ")
        data: dict[str, Any] = {}
        # the variables the release's field declarations name (`env`), read as vLLM reads them (env_reading)
        for read in read_environment(env, declared_variables(rules_for(parse_vllm(fields_.get("vllm"))))):
            if read.value is not None:
                data[read.field] = read.value
        data.update(fields_)
        return cls(**data)


# The selection fields (what a partial config may leave free); `vllm` picks the rule set, `gpu` fills hardware.
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Config) if f.name not in ("gpu", "_hash", "vllm", "_extra"))
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Config)}
_INIT_NAMES: frozenset[str] = frozenset((*FIELD_NAMES, "gpu", "vllm"))
_INIT_DEFAULTS: dict[str, Any] = {**{n: _DEFAULTS[n] for n in _INIT_NAMES}, "_hash": 0, "_extra": ()}
# the hash of the fields, in two parts: the release and the non-numeric fields, then the numeric ones
# (template.numeric_hash: a Config built from a template hashes only its numeric values)
_FIXED_VALUES = operator.itemgetter("vllm", *(f for f in FIELD_NAMES if f not in NUMERIC_FIELDS))
_NUMERIC_VALUES = operator.itemgetter(*NUMERIC_FIELDS)
_FIELD_VALUES = operator.itemgetter(*FIELD_NAMES)


def _fields_hash(d: Mapping[str, Any]) -> int:
    return numeric_hash(hash(_FIXED_VALUES(d)), dict(zip(NUMERIC_FIELDS, _NUMERIC_VALUES(d))))



_PAIRS_HASH: dict[int, tuple[Any, int]] = {}


def _pairs_hash(pairs: tuple[tuple[str, Any], ...]) -> int:
    """hash(pairs) of a release's declared-defaults tuple (kept alive by _extras_of), remembered: a tuple
    does not cache its hash, and hashing 0.33's 34 pairs on every Config costs about a microsecond."""
    hit = _PAIRS_HASH.get(id(pairs))
    if hit is None or hit[0] is not pairs:
        if len(_PAIRS_HASH) > per_rules_limit():
            _PAIRS_HASH.clear()
        hit = _PAIRS_HASH[id(pairs)] = (pairs, hash(pairs))
    return hit[1]


_PLANS: dict[int, tuple[Any, tuple[tuple[str, Any], ...], bool]] = {}


def _release_plan(rules: Any) -> tuple[tuple[tuple[str, Any], ...], bool]:
    """Per rule set, once: the common fields whose declared default differs from Config's, and
    whether the set declares fields beyond the common ones."""
    hit = _PLANS.get(id(rules))
    if hit is None or hit[0] is not rules:
        declared = rules.fields
        defaults = tuple((n, d.default) for n, d in declared.items()
                         if n in _DEFAULTS and d.default != _DEFAULTS[n] and d.kind != "enum")
        hit = _PLANS[id(rules)] = (rules, defaults, any(n not in _DEFAULTS for n in declared))
    return hit[1], hit[2]


_FILLED: dict[int, tuple[Any, tuple[str, ...]]] = {}


def _filled_by_defaults(rules: Any) -> tuple[str, ...]:
    """Per rule set, once: the fields it declares beyond Config's own whose unset value comes from `defaults` cases."""
    hit = _FILLED.get(id(rules))
    if hit is None or hit[0] is not rules:
        hit = _FILLED[id(rules)] = (rules, tuple(n for n, d in rules.fields.items() if d.defaults and n not in _DEFAULTS))
    return hit[1]


_EXTRAS: dict[int, tuple[Any, tuple[tuple[tuple[str, Any], ...], dict[str, int], tuple[str, ...]]]] = {}


def _extras_of(rules: Any, inv: Any) -> tuple[tuple[tuple[str, Any], ...], dict[str, int], tuple[str, ...]]:
    """Per rule set, once: the declared fields beyond the common ones with their parsed defaults, each
    one's index, and those judged on every call: placed by a platform invariant (they depend on the platform)
    or defaulted by `defaults` cases (they depend on other fields)."""
    hit = _EXTRAS.get(id(rules))
    if hit is None or hit[0] is not rules:  # the rules object is kept: an id is reused after GC
        if len(_EXTRAS) > per_rules_limit():
            _EXTRAS.clear()
        names = [n for n in rules.fields if n not in _DEFAULTS]
        pairs = tuple((n, parse_declared(rules.fields[n], rules.fields[n].default, rules)
                       if rules.fields[n].default is not None else None) for n in names)
        hit = _EXTRAS[id(rules)] = (rules, (pairs, {n: i for i, n in enumerate(names)},
                                            tuple(n for n in names if n in inv.placed or rules.fields[n].defaults)))
    return hit[1]


def _declared_elsewhere(name: str) -> list[str]:
    """Releases whose rules declare `name` (for the error that says which vLLM has a field)."""
    out = []
    for v in versions():
        try:
            if name in rules_for(v).fields:
                out.append(v)
        except Exception:  # a broken draft set must not hide the user's real mistake
            continue
