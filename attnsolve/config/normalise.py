"""Validation of the common Config fields: every given value parsed, defaults filled in, hardware facts
taken from the GPU table."""

from __future__ import annotations

import operator
from typing import Any, Mapping, Sequence

from ..errors import ConfigError
from ..rules import generation, rules_for
from ..rules._fields import CONFIG_FIELDS
from .gpu import lookup_gpu
from .invariants import implied_platform, place, plan_of
from .values import (ANY, canonical_map, requestable_backends, _MAX_INT, _as_bool, _as_int, _backend_name, _cc, _choice, format_cc,
                     int_text, parse_cc, parse_vllm)
from ..rules.sets import per_rules_limit

_BOOL_FIELDS = (
    "use_mla", "use_sparse", "has_sink", "use_mm_prefix", "trtllm_available", "rocm_use_aiter",
    "rocm_use_aiter_mha", "rocm_use_aiter_mla", "rocm_use_aiter_unified_attention",
    "use_prefill_decode_attention", "use_trtllm_ragged_deepseek_prefill", "disable_flashinfer_prefill",
    "use_cudnn_prefill", "flashinfer_available",
)
_COMMON = frozenset(CONFIG_FIELDS)
_CAT_FIELDS = ("gpu", "platform", "dtype", "compute_capability", "rocm_arch", *_BOOL_FIELDS, "kv_cache_dtype",
               "attn_type", "flash_attn_version", "use_trtllm_attention", "backend")
_CAT_GET = operator.itemgetter(*_CAT_FIELDS)
_MEMO: dict[Any, dict[str, Any]] = {}
_OPT_INT_FIELDS = ("num_heads", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_topk")
# The fields numeric_fields validates, in its order (what a template of a Config leaves to each call: template.py).
NUMERIC_FIELDS = ("block_size", *_OPT_INT_FIELDS, "head_size")


def _normalise(cfg: Any) -> dict[str, Any]:
    """Every common field validated: the categorical ones (memoised by their raw values, which repeat:
    platforms, dtypes, switches) and the numeric ones (head size, heads, block size...) each time."""
    d = cfg.__dict__
    vllm = parse_vllm(d["vllm"])
    try:
        key: Any = (vllm, generation(), _CAT_GET(d))
        out = _MEMO.get(key)
    except TypeError:  # an unhashable spelling (a list): validated without the memo
        key, out = None, None
    if out is None:
        out = _categorical(cfg, vllm)
        if key is not None:
            if len(_MEMO) >= 4096:
                _MEMO.clear()
            _MEMO[key] = out
    out = dict(out)
    rules = rules_for(vllm)
    dom = rules.domains
    get = d.__getitem__
    unset = _conditional_defaults(rules)
    if unset:  # fields whose unset value depends on others (head_size: MLA or not), from the categorical ones
        raw = dict(d)
        for name, decl in unset:
            if name in out:
                if out[name] is None:
                    out[name] = decl.unset_value(out, ANY)
            elif raw.get(name) is None:
                raw[name] = decl.unset_value(out, ANY)
        get = raw.__getitem__
    out.update(numeric_fields(get, dom["block_size"], _minimums(rules)))
    return out


def numeric_fields(get: Any, block_sizes: Sequence[int], lows: Mapping[str, int]) -> dict[str, Any]:
    """The numeric common fields (block size, the optional ints, head size) validated from their raw values
    (`get(name)`, unset defaults already applied), in this order (the first bad one is the error)."""
    return {name: numeric_value(name, get(name), block_sizes, lows) for name in NUMERIC_FIELDS}


def numeric_value(name: str, v: Any, block_sizes: Sequence[int], lows: Mapping[str, int]) -> Any:
    """One numeric field's value validated: checked per call, as these values rarely repeat."""
    if name == "head_size":  # unset: the release's declared default ([fields.head_size] defaults)
        return v if (v is ANY or (v.__class__ is int and 1 <= v <= _MAX_INT)) else \
            _as_int("head_size", v, optional=False)
    if name == "block_size":
        if v is None or v is ANY:
            return v
        iv = _as_int("block_size", v, optional=True) if not isinstance(v, int) or isinstance(v, bool) else v
        low = lows.get("block_size")  # declared `min`: any integer from there (0.33: Field(gt=0)), else the list
        if low is not None and not isinstance(v, bool) and isinstance(iv, int):
            if low <= iv <= _MAX_INT:
                return iv
            raise ConfigError("block_size", v, f"an integer from {low} to {_MAX_INT} (vLLM's CacheConfig.block_size)")
        if iv not in block_sizes or isinstance(v, bool):
            raise ConfigError("block_size", v, (None, *block_sizes),
                              suggestion=str(min(block_sizes, key=lambda b: abs(b - iv))) if isinstance(iv, int) else None)
        return iv
    low = lows.get(name, 1)  # the release's declared `min` (0.33: qk_rope_head_dim 0, the NoPE layout)
    return v if (v is ANY or v is None or (v.__class__ is int and low <= v <= _MAX_INT)) else \
        _as_int(name, v, optional=True, minimum=low)


_UNSET: dict[int, tuple[Any, tuple[tuple[str, Any], ...]]] = {}


def _conditional_defaults(rules: Any) -> tuple[tuple[str, Any], ...]:
    """Per rule set: the common fields whose declaration has `defaults` cases, with their declarations."""
    hit = _UNSET.get(id(rules))
    if hit is None or hit[0] is not rules:  # the rules object is kept: an id is reused after GC
        if len(_UNSET) > per_rules_limit():
            _UNSET.clear()
        hit = _UNSET[id(rules)] = (rules, tuple((n, decl) for n, decl in rules.fields.items()
                                                if decl.defaults and n in _COMMON))
    return hit[1]


_MINS: dict[int, tuple[Any, dict[str, int]]] = {}


def _minimums(rules: Any) -> dict[str, int]:
    """Per rule set: the optional int fields whose declaration sets `min` (1 otherwise)."""
    hit = _MINS.get(id(rules))
    if hit is None or hit[0] is not rules:  # the rules object is kept: an id is reused after GC
        if len(_MINS) > per_rules_limit():
            _MINS.clear()
        hit = _MINS[id(rules)] = (rules, {n: rules.fields[n].min for n in (*_OPT_INT_FIELDS, "block_size")
                                          if n in rules.fields and rules.fields[n].min is not None})
    return hit[1]


def _categorical(cfg: Any, vllm: str) -> dict[str, Any]:
    rules = rules_for(vllm)
    dom = rules.domains
    canon = canonical_map(rules)
    out: dict[str, Any] = {"vllm": vllm}
    get = cfg.__dict__.__getitem__

    gpu_facts: Mapping[str, Any] = {}
    if cfg.gpu is not None and cfg.gpu is not ANY:
        gpu_facts = lookup_gpu(cfg.gpu, rules)

    plan = plan_of(rules, _COMMON)
    platform = get("platform")
    if platform is None and "platform" in gpu_facts:
        platform = gpu_facts["platform"]
    if platform is None and not gpu_facts:  # a platform field given alone names its platform (invariants)
        platform = implied_platform(plan, cfg.__dict__)
    if platform is None:
        raise ConfigError("platform", None, tuple(dom["platform"]), message=(
            "Invalid platform: None. Expected one of: " + ", ".join(dom["platform"]) + " (or give gpu=...)."))
    if platform is not ANY and not (platform.__class__ is str and platform in canon["platform"]):
        unmodelled = rules.settings.get("unmodelled_platforms") or {}
        if isinstance(platform, str) and platform.strip().lower() in unmodelled:
            name = platform.strip().lower()
            raise ConfigError("platform", platform, tuple(dom["platform"]), message=(
                f"vLLM {rules.vllm} runs on {name} too, but attnsolve does not model that platform: "
                f"{unmodelled[name]}. The rules for {rules.vllm} model {', '.join(dom['platform'])}."))
        platform = _choice("platform", platform, dom["platform"], rules.aliases.get("platform"))
        if gpu_facts and gpu_facts.get("platform") != platform:
            raise ConfigError("gpu", cfg.gpu, f"a {platform} GPU (gpu={cfg.gpu!r} is a {gpu_facts.get('platform')} device)")
    out["platform"] = platform

    dtype = get("dtype")
    if dtype is None:
        raise ConfigError("dtype", None, tuple(dom["dtype"]))
    out["dtype"] = dtype if (dtype is ANY or (dtype.__class__ is str and dtype in canon["dtype"])) else \
        _choice("dtype", dtype, dom["dtype"], rules.aliases.get("dtype"))

    cc = get("compute_capability")
    if "compute_capability" in gpu_facts:
        gcc = parse_cc(gpu_facts["compute_capability"])
        if cc is not None and cc is not ANY and parse_cc(cc) != gcc:
            raise ConfigError("compute_capability", cc, f"{format_cc(gcc)} (the compute capability of {cfg.gpu}) or leave it unset")
        cc = gcc
    if cc is not None and cc is not ANY:
        cc = _cc(cc)
    out["compute_capability"] = cc

    arch = get("rocm_arch")
    if "rocm_arch" in gpu_facts:
        arch = gpu_facts["rocm_arch"]
    if arch is not None and arch is not ANY:
        arch = _choice("rocm_arch", arch, dom["rocm_arch"])
    out["rocm_arch"] = arch

    for name in _BOOL_FIELDS:
        v = get(name)
        out[name] = v if (v is ANY or v is True or v is False) else _as_bool(name, v)

    v = get("kv_cache_dtype")
    out["kv_cache_dtype"] = v if (v is ANY or (v.__class__ is str and v in canon["kv_cache_dtype"])) else \
        _choice("kv_cache_dtype", v, dom["kv_cache_dtype"])
    v = get("attn_type")
    if v.__class__ is str and not (v.__class__ is str and v in canon["attn_type"]):
        v = v.strip().lower().removeprefix("attentiontype.")
    out["attn_type"] = v if (v is ANY or (v.__class__ is str and v in canon["attn_type"])) else _choice("attn_type", v, dom["attn_type"])

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

    out["backend"] = b = _backend_name(get("backend"), rules)
    if b.__class__ is str and b not in rules.backends and b not in requestable_backends(rules, platform):
        raise ConfigError("backend", b, sorted(requestable_backends(rules, platform)), message=(
            f"Backend {b!r} is a vLLM {rules.vllm} registry name that attnsolve's rules model only where vLLM "
            f"fails it before validating ({', '.join(sorted({pl.platform for pl in rules.lists if b in requestable_backends(rules, pl.platform)}))}); "
            f"its answer on {platform} is not modelled."))
    for name in plan.placed:  # platform fields: a value only on their platforms, required or defaulted there
        if name in out:
            out[name] = place(plan, name, out[name], platform)

    return out

