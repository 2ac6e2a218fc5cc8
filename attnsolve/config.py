"""Config: the one value every question starts from, parsed and validated once at the edge.

Strings are accepted case-insensitively where vLLM accepts them; every bad field raises a
ConfigError naming the field, the bad value, the accepted values and the closest match.
Any field may be `ANY` (unknown) for partial-config questions (explain, possible_backends, sweep).
"""

from __future__ import annotations

import numbers
import operator
import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from .cc import ComputeCapability
from .errors import ConfigError, closest
from .rules import default_rules, default_version, generation, override, parse_version, rules_for, versions


class _Any:
    """Sentinel for a field left free in a partial config."""

    _instance: "_Any | None" = None

    def __new__(cls) -> "_Any":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ANY"

    def __reduce__(self) -> str:
        return "ANY"


ANY: Any = _Any()

_BOOL_FIELDS = (
    "use_mla", "use_sparse", "has_sink", "use_mm_prefix", "trtllm_available", "rocm_use_aiter",
    "rocm_use_aiter_mha", "rocm_use_aiter_mla", "rocm_use_aiter_unified_attention",
    "use_prefill_decode_attention", "use_trtllm_ragged_deepseek_prefill", "disable_flashinfer_prefill",
    "use_cudnn_prefill", "flashinfer_available",
)
_OPT_INT_FIELDS = ("num_heads", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_topk")
_MAX_INT = 1 << 20
_MAX_INT_TEXT = 32  # characters: longer "numbers" are refused before int() sees them (no 4,300-digit parse)
_GFX9 = ("gfx90a", "gfx942", "gfx950")


_INTERNED: dict[tuple[Any, ...], Any] = {}


class _ConfigMeta(type):
    """Turns Python's TypeError for an unknown or positional argument into a ConfigError."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise ConfigError("(positional)", args, "keyword arguments only, e.g. Config(platform='cuda', ...)")
        # Interning: the same arguments (and the same active rules) give the same immutable Config.
        try:
            key: Any = (tuple(kwargs.items()), default_version(), generation())
            hit = _INTERNED.get(key)
        except Exception:  # noqa: BLE001 - an unhashable or uncomparable argument: build without the memo
            key, hit = None, None
        if hit is not None:
            return hit
        obj = cls._build(kwargs)
        if key is not None:
            if len(_INTERNED) >= 8192:
                _INTERNED.clear()
            _INTERNED[key] = obj
        return obj

    def _build(cls, kwargs: dict[str, Any]) -> Any:
        rules = rules_for(parse_vllm(kwargs.get("vllm")))
        declared = rules.fields
        extras: dict[str, Any] = {}
        for name in list(kwargs):
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
        obj = super().__call__(**kwargs)
        if plan[1] or extras:
            obj._set_extras(extras, rules)
        return obj


@dataclass(frozen=True, eq=True, repr=False)
class Config(metaclass=_ConfigMeta):
    """A selection query: platform, model facts and the switches that change vLLM's answer.

    Defaults are vLLM's: kv_cache_dtype "auto" (= model dtype), block_size None (vLLM's start-up
    path: no block-size constraint), automatic backend, FA version per GPU, TRTLLM auto, AITER off.
    head_size None means 576 for MLA layers and 128 otherwise; rocm_arch None means gfx942 (MI300).

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
        """Validate the rule-declared fields (given or their declared default) by their declared kind."""
        values = []
        gpu_facts: Mapping[str, Any] = {}
        if self.gpu is not None and self.gpu is not ANY:
            gpu_facts = lookup_gpu(self.gpu, rules)
        for name, decl in rules.fields.items():
            if name in _DEFAULTS:
                continue
            raw = given.get(name, gpu_facts.get(name, decl.default))  # a GPU entry may carry a declared hardware fact
            if name in given and name in gpu_facts and given[name] != gpu_facts[name]:
                raise ConfigError(name, given[name], f"{gpu_facts[name]!r} (the {name} of {self.gpu}) or leave it unset")
            if isinstance(raw, str) and raw == "ANY":
                raw = ANY
            value = raw if raw is ANY else parse_declared(decl, raw, rules)
            if decl.platforms and value not in (decl.default, ANY) and self.platform not in (ANY, *decl.platforms):
                raise ConfigError(name, value, f"{decl.default!r} on platform {self.platform} "
                                  f"({name} is a {', '.join(decl.platforms)} setting)")
            values.append((name, value))
        set_ = object.__setattr__
        set_(self, "_extra", tuple(values))
        set_(self, "_hash", hash((self._hash, self._extra)))

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
        for name, value in d.items():  # to_dict() writes a free field as the string "ANY"
            if value.__class__ is str and value == "ANY":
                d[name] = ANY
        d.update(_normalise(self))
        d["_hash"] = hash((self.vllm, *_FIELD_VALUES(d)))

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        shown = [f"{k}={v!r}" for k, v in self.to_dict(only_changed=True).items()]
        return "Config(" + ", ".join(shown) + ")"

    @property
    def is_partial(self) -> bool:
        return any(getattr(self, f) is ANY for f in FIELD_NAMES) or any(v is ANY for _, v in self._extra)

    @property
    def free_fields(self) -> tuple[str, ...]:
        return tuple(f for f in self.field_names if getattr(self, f) is ANY)

    def replace(self, **changes: Any) -> "Config":
        """A copy with some fields changed (re-validated)."""
        data = {f: getattr(self, f) for f in FIELD_NAMES}
        data.update(self._extra)
        data["vllm"] = self.vllm
        data.update(changes)
        if "vllm" in changes and changes["vllm"] != self.vllm:  # another release: keep what it declares
            declared = rules_for(parse_vllm(changes["vllm"])).fields
            data = {k: v for k, v in data.items() if k in _INIT_NAMES or k in declared}
        if "compute_capability" in changes or "platform" in changes:
            data.pop("gpu", None)
        return Config(**data)

    def to_dict(self, *, only_changed: bool = False) -> dict[str, Any]:
        """JSON-ready fields, in the form Config accepts back (`Config(**c.to_dict())` round-trips)."""
        out: dict[str, Any] = {}
        for f in FIELD_NAMES:
            v = getattr(self, f)
            if only_changed and f not in ("platform", "dtype") and v == _DEFAULTS.get(f, object()) and v is not ANY:
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
        for var, name in _ENV_VARS.items():
            if var in env and env[var] != "":
                data[name] = env[var]
        data.update(fields_)
        return cls(**data)


# The selection fields (what a partial config may leave free); `vllm` picks the rule set, `gpu` fills hardware.
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Config) if f.name not in ("gpu", "_hash", "vllm", "_extra"))
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Config)}
_INIT_NAMES: frozenset[str] = frozenset((*FIELD_NAMES, "gpu", "vllm"))
_FIELD_VALUES = operator.itemgetter(*FIELD_NAMES)

_ENV_VARS = {
    "VLLM_ATTENTION_BACKEND": "backend",
    "VLLM_FLASH_ATTN_VERSION": "flash_attn_version",
    "VLLM_USE_TRTLLM_ATTENTION": "use_trtllm_attention",
    "VLLM_ROCM_USE_AITER": "rocm_use_aiter",
    "VLLM_ROCM_USE_AITER_MHA": "rocm_use_aiter_mha",
    "VLLM_ROCM_USE_AITER_MLA": "rocm_use_aiter_mla",
    "VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION": "rocm_use_aiter_unified_attention",
    "VLLM_V1_USE_PREFILL_DECODE_ATTENTION": "use_prefill_decode_attention",
    "VLLM_USE_CUDNN_PREFILL": "use_cudnn_prefill",
    "VLLM_USE_TRTLLM_RAGGED_DEEPSEEK_PREFILL": "use_trtllm_ragged_deepseek_prefill",
}


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


def _declared_elsewhere(name: str) -> list[str]:
    """Releases whose rules declare `name` (for the error that says which vLLM has a field)."""
    out = []
    for v in versions():
        try:
            if name in rules_for(v).fields:
                out.append(v)
        except Exception:  # a broken draft set must not hide the user's real mistake
            continue
    return out


def parse_declared(decl: Any, value: Any, rules: Any) -> Any:
    """One value of a rule-declared field, parsed by its declared kind (ConfigError otherwise)."""
    name = decl.name
    if decl.kind == "bool":
        return _as_bool(name, value)
    if decl.kind == "tristate":
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "auto", "")):
            return None
        try:
            return _as_bool(name, value)
        except ConfigError:
            raise ConfigError(name, value, ("None (auto)", "true", "false")) from None
    if decl.kind == "int":
        return _as_int(name, value, optional=decl.default is None, minimum=decl.min if decl.min is not None else 0)
    if decl.kind == "enum":
        if value is None and decl.default is None:
            return None
        return _choice(name, value, tuple(rules.domains[name]), rules.aliases.get(name))
    raise ConfigError(name, value, f"a field of kind {decl.kind} is built into Config, not declared by rules")


def int_text(text: str) -> int | None:
    """The integer a string spells by int()'s own rule ('12', ' +7 ', '1_024'), or None when int() refuses
    it ('²' passes str.isdigit() but not int()) or it is longer than any sane number."""
    if not isinstance(text, str) or len(text) > _MAX_INT_TEXT:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def format_cc(cc: Any) -> str:
    """A compute capability in any internal form (tuple, 90) as vLLM prints it: '9.0'."""
    if isinstance(cc, int) and not isinstance(cc, bool):
        return str(ComputeCapability(cc // 10, cc % 10))
    return str(ComputeCapability.parse(cc))


def gpu_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_GPU_TABLES: dict[int, tuple[Any, dict[str, Mapping[str, Any]]]] = {}


def lookup_gpu(name: Any, rules: Any = None) -> Mapping[str, Any]:
    rules = rules if rules is not None else default_rules()
    hit = _GPU_TABLES.get(id(rules))
    if hit is None or hit[0] is not rules:  # keep the rules object: an id is reused after GC
        if len(_GPU_TABLES) > 16:
            _GPU_TABLES.clear()
        hit = _GPU_TABLES[id(rules)] = (rules, {gpu_key(k): v for k, v in rules.gpus.items()})
    table = hit[1]
    if not isinstance(name, str) or gpu_key(name) not in table:
        from .gpus import resolve  # tool spellings ("NVIDIA H100 80GB HBM3"), vendor-aware suggestions
        return table[gpu_key(resolve(name, rules.gpus))]
    return table[gpu_key(name)]


def parse_cc(value: Any) -> ComputeCapability:
    """'9.0', 9.0, (9, 0), [9, 0], 'sm_90', 90 -> ComputeCapability(9, 0) (ConfigError otherwise)."""
    try:
        return ComputeCapability.parse(value)
    except ValueError:
        raise ConfigError("compute_capability", value,
                          "a compute capability like '9.0', (9, 0) or 9.0 (major 1-20, minor 0-9)") from None


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise ConfigError(name, value, ("true", "false"))


def _as_int(name: str, value: Any, *, optional: bool, minimum: int = 1) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, str):
        parsed = int_text(value)
        if parsed is None:
            raise ConfigError(name, value, f"an integer from {minimum} to {_MAX_INT}" + (" or None" if optional else ""))
        value = parsed
    if not isinstance(value, (bool, int)) and isinstance(value, numbers.Integral):
        value = int(value)  # numpy / torch integer scalars
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, f"an integer >= {minimum}" + (" or None" if optional else ""))
    if not (minimum <= value <= _MAX_INT):
        raise ConfigError(name, value, f"an integer from {minimum} to {_MAX_INT}" + (" or None" if optional else ""))
    return value


def _choice(name: str, value: Any, domain: tuple[Any, ...], aliases: Mapping[str, str] | None = None) -> Any:
    if isinstance(value, str):
        key = value.strip().lower()
        if aliases and key in aliases:
            return aliases[key]
        for d in domain:
            if isinstance(d, str) and d.lower() == key:
                return d
    elif isinstance(value, int) and not isinstance(value, bool) and value in domain:
        return value
    raise ConfigError(name, value, tuple(domain), suggestion=closest(value, domain) if isinstance(value, str) else None)


def parse_vllm(value: Any) -> str:
    """A vLLM release spelling -> the label of a packaged rule set ("0.33"); ConfigError otherwise."""
    if value is None:
        return default_version()
    active = override()
    label = parse_version(value) if isinstance(value, str) else None
    known = versions()
    if active is not None and (label is None or label == active.vllm or label not in known):
        if label is not None or value == "custom":
            return label or "custom"
    if label is None or label not in known:
        shown = ", ".join(known)
        hit = closest(str(value), known) if isinstance(value, str) else None
        raise ConfigError("vllm", value, known, suggestion=hit, message=(
            f"Unsupported vLLM version: {value!r}. attnsolve answers for vLLM {shown} "
            "(spelled like 0.33, 0.33.0 or v0.33)." + (f" Did you mean {hit!r}?" if hit else "")))
    return label


def _normalise(cfg: Config) -> dict[str, Any]:
    vllm = parse_vllm(cfg.vllm)
    rules = rules_for(vllm)
    dom = rules.domains
    out: dict[str, Any] = {"vllm": vllm}
    get = cfg.__dict__.__getitem__

    gpu_facts: Mapping[str, Any] = {}
    if cfg.gpu is not None and cfg.gpu is not ANY:
        gpu_facts = lookup_gpu(cfg.gpu, rules)

    platform = get("platform")
    if platform is None and "platform" in gpu_facts:
        platform = gpu_facts["platform"]
    if platform is None and not gpu_facts:  # a compute capability is a CUDA fact, a gfx arch a ROCm one
        if get("compute_capability") not in (None, ANY) and get("rocm_arch") in (None, ANY):
            platform = "cuda"
        elif get("rocm_arch") not in (None, ANY) and get("compute_capability") in (None, ANY):
            platform = "rocm"
    if platform is None:
        raise ConfigError("platform", None, tuple(dom["platform"]), message=(
            "Invalid platform: None. Expected one of: " + ", ".join(dom["platform"]) + " (or give gpu=...)."))
    if platform is not ANY and not _is_canonical(platform, rules, "platform"):
        platform = _choice("platform", platform, dom["platform"], rules.aliases.get("platform"))
        if gpu_facts and gpu_facts.get("platform") != platform:
            raise ConfigError("gpu", cfg.gpu, f"a {platform} GPU (gpu={cfg.gpu!r} is a {gpu_facts.get('platform')} device)")
    out["platform"] = platform

    dtype = get("dtype")
    if dtype is None:
        raise ConfigError("dtype", None, tuple(dom["dtype"]))
    out["dtype"] = dtype if (dtype is ANY or _is_canonical(dtype, rules, "dtype")) else \
        _choice("dtype", dtype, dom["dtype"], rules.aliases.get("dtype"))

    cc = get("compute_capability")
    if "compute_capability" in gpu_facts:
        gcc = parse_cc(gpu_facts["compute_capability"])
        if cc is not None and cc is not ANY and parse_cc(cc) != gcc:
            raise ConfigError("compute_capability", cc, f"{format_cc(gcc)} (the compute capability of {cfg.gpu}) or leave it unset")
        cc = gcc
    if cc is not None and cc is not ANY:
        cc = _cc(cc)
        if platform not in ("cuda", ANY):
            raise ConfigError("compute_capability", format_cc(cc), "None on platform " + str(platform) + " (compute capability is a CUDA fact)")
    if cc is None and platform == "cuda":
        raise ConfigError("compute_capability", None, "a compute capability like '9.0' (or gpu='H100') on platform cuda")
    out["compute_capability"] = cc

    arch = get("rocm_arch")
    if "rocm_arch" in gpu_facts:
        arch = gpu_facts["rocm_arch"]
    if arch is not None and arch is not ANY:
        arch = _choice("rocm_arch", arch, dom["rocm_arch"])
        if platform not in ("rocm", ANY):
            raise ConfigError("rocm_arch", arch, "None on platform " + str(platform) + " (the gfx arch is a ROCm fact)")
    if arch is None and platform == "rocm":
        arch = "gfx942"
    out["rocm_arch"] = arch

    for name in _BOOL_FIELDS:
        v = get(name)
        out[name] = v if (v is ANY or v is True or v is False) else _as_bool(name, v)

    v = get("kv_cache_dtype")
    out["kv_cache_dtype"] = v if (v is ANY or _is_canonical(v, rules, "kv_cache_dtype")) else \
        _choice("kv_cache_dtype", v, dom["kv_cache_dtype"])
    v = get("block_size")
    if v is not None and v is not ANY:
        iv = _as_int("block_size", v, optional=True) if not isinstance(v, int) or isinstance(v, bool) else v
        if iv not in dom["block_size"] or isinstance(v, bool):
            raise ConfigError("block_size", v, (None, *dom["block_size"]),
                              suggestion=str(min(dom["block_size"], key=lambda b: abs(b - iv))) if isinstance(iv, int) else None)
        v = iv
    out["block_size"] = v
    v = get("attn_type")
    if v.__class__ is str and not _is_canonical(v, rules, "attn_type"):
        v = v.strip().lower().removeprefix("attentiontype.")
    out["attn_type"] = v if (v is ANY or _is_canonical(v, rules, "attn_type")) else _choice("attn_type", v, dom["attn_type"])

    for name in _OPT_INT_FIELDS:
        v = get(name)
        out[name] = v if (v is ANY or v is None or (v.__class__ is int and 1 <= v <= _MAX_INT)) else \
            _as_int(name, v, optional=True)

    v = get("flash_attn_version")
    if v is not None and v is not ANY:
        if isinstance(v, str) and int_text(v) is not None:
            v = int_text(v)
        v = _choice("flash_attn_version", v, tuple(dom["flash_attn_version"]))
    out["flash_attn_version"] = v
    v = get("use_trtllm_attention")
    if v is not None and v is not ANY and not isinstance(v, bool) and not (isinstance(v, str) and v.strip().lower() in ("none", "auto", "")):
        try:
            v = _as_bool("use_trtllm_attention", v)
        except ConfigError:
            raise ConfigError("use_trtllm_attention", v, ("None (auto)", "true", "false")) from None
    elif isinstance(v, str):
        v = None
    out["use_trtllm_attention"] = v

    mla = out["use_mla"]
    v = get("head_size")
    if v is None:
        v = ANY if mla is ANY else (576 if mla else 128)
    out["head_size"] = v if (v is ANY or (v.__class__ is int and 1 <= v <= _MAX_INT)) else \
        _as_int("head_size", v, optional=False)

    out["backend"] = _backend_name(get("backend"), rules)

    if out["use_sparse"] is True and out["use_mla"] is False:
        raise ConfigError("use_sparse", True, "false when use_mla is false (sparse attention is an MLA feature)",
                          message="Invalid use_sparse: True. Sparse attention needs use_mla=True (it is DeepSeek-V3.2-style sparse MLA).")
    return out


_CANONICAL: dict[tuple[int, str], tuple[Any, frozenset[Any]]] = {}


def _canonical(rules: Any, name: str) -> frozenset[Any]:
    """The exact (already canonical) spellings of an enum field's values: accepted without parsing."""
    key = (id(rules), name)
    hit = _CANONICAL.get(key)
    if hit is None or hit[0] is not rules:  # the rules object itself is kept: an id is reused after GC
        if len(_CANONICAL) > 64:
            _CANONICAL.clear()
        hit = _CANONICAL[key] = (rules, frozenset(v for v in rules.domains.get(name, ()) if v.__class__ is str))
    return hit[1]


def _is_canonical(value: Any, rules: Any, name: str) -> bool:
    return value.__class__ is str and value in _canonical(rules, name)


_CC_MEMO: dict[Any, ComputeCapability] = {}


def _cc(value: Any) -> ComputeCapability:
    """parse_cc, memoised for the hashable spellings ('9.0', 90, (9, 0)) that repeat."""
    if value.__class__ is ComputeCapability:
        return value
    try:
        hit = _CC_MEMO.get(value)
    except TypeError:  # a list
        return parse_cc(value)
    if hit is None:
        hit = parse_cc(value)
        if len(_CC_MEMO) < 4096:
            _CC_MEMO[value] = hit
    return hit


def _backend_name(value: Any, rules: Any) -> Any:
    if value is None or value is ANY:
        return value
    if not isinstance(value, str):
        name = getattr(value, "name", None)  # an enum member
        if not isinstance(name, str):
            raise ConfigError("backend", value, "a backend name such as 'FLASH_ATTN'")
        value = name
    text = value.strip()
    text = text.split(".")[-1] if text.startswith("AttentionBackendEnum.") else text
    upper = text.upper()
    if upper == "AUTO" or upper == "":
        return None  # newer vLLM's "auto"; documented: automatic selection
    if upper not in rules.backends:
        names = sorted(rules.backends)
        raise ConfigError("backend", value, names, suggestion=closest(upper, names), message=(
            f"Unknown attention backend: '{upper}'. Valid options are: {', '.join(names)}."
            + (f" Did you mean {closest(upper, names)!r}?" if closest(upper, names) else "")))
    return upper


def cc_int(cc: tuple[int, int] | None) -> int | None:
    return None if cc is None else cc[0] * 10 + cc[1]


def is_gfx9(arch: str | None) -> bool:
    return arch in _GFX9
