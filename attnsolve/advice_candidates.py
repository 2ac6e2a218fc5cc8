"""The changes worth trying, per kind: single settings (nearest first), other GPUs of the same
vendor (nearest newer generation first), and nearby values of the model facts the user typed.

Why this module: the search only verifies; what to propose is a question of its own, answered from
the release's domains and declarations.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .advice_fields import _ENV_SWITCHES, _FP8, _MODEL, _declared_fields
from .advice_kinds import _is_model_fact, _named_sizes, _plausible
from .advice_types import Context
from .config import ANY, format_cc


def _settings(ctx: Context) -> list[tuple[str, Any]]:
    """Every single setting change worth trying, nearest first within a field."""
    from .modelconfig import supported_dtypes
    from .selection import compiled_rules
    c = ctx.config
    dom = compiled_rules(c).rules.domains
    out: list[tuple[str, Any]] = []
    kv_values = list(dom["kv_cache_dtype"])
    if ctx.sparse_kv_rewrite:  # the model turns every fp8 spelling into fp8_ds_mla
        kv_values = [v for v in kv_values if not v.startswith(_FP8) or v == "fp8_ds_mla"]
    if ctx.kv_effective:  # the checkpoint's quantization_config decides some: try what each flag gives, once
        gives, seen, kept = dict(ctx.kv_effective), {c.kv_cache_dtype}, []
        for v in kv_values:
            if gives.get(v, v) not in seen:
                seen.add(gives.get(v, v))
                kept.append(v)
        kv_values = kept
    # fp8 spellings first for an fp8 user (keeps intent), "auto" first otherwise
    fp8_user = str(c.kv_cache_dtype).startswith(_FP8)
    kv_values.sort(key=lambda v: (v.startswith(_FP8) != fp8_user, v != "auto"))
    out += [("kv_cache_dtype", v) for v in kv_values if v != c.kv_cache_dtype]
    out += [("block_size", v) for v in (None, *dom["block_size"]) if v != c.block_size]
    if c.platform is not None:
        dts = supported_dtypes(str(c.platform), c.compute_capability)
        out += [("dtype", v) for v in dts if v != c.dtype and (v != "float16" or ctx.float16_ok)]
    if c.platform == "cuda":
        out += [("flash_attn_version", v) for v in (None, *dom["flash_attn_version"]) if v != c.flash_attn_version]
        out += [("use_trtllm_attention", v) for v in (None, True, False) if v != c.use_trtllm_attention]
        for f in ("flashinfer_available", "trtllm_available"):
            if getattr(c, f) is False:
                out.append((f, True))
    if c.platform == "rocm":
        for f in (*_ENV_SWITCHES, "use_prefill_decode_attention"):
            out.append((f, not getattr(c, f)))
    declared = _declared_fields(c)
    if ctx.role == "mla_prefill":
        for f in ("use_trtllm_ragged_deepseek_prefill", "disable_flashinfer_prefill", "use_cudnn_prefill"):
            if f in declared:
                out.append((f, not getattr(c, f)))
    out += _declared_settings(ctx, {f for f, _ in out}, dom)
    if ctx.total_heads and c.num_heads is not None:
        for tp in (1, 2, 4, 8, 16):
            if ctx.total_heads % tp == 0 and ctx.total_heads // tp != c.num_heads:
                out.append(("num_heads", ctx.total_heads // tp))
    return out


def _declared_settings(ctx: Context, done: set[str], dom: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The release's other declared settings worth trying: switches the user set (undo them),
    environment switches and packages that are off (a release's new inputs, with no code here)."""
    c = ctx.config
    out: list[tuple[str, Any]] = []
    for name, decl in _declared_fields(c).items():
        if name in done or name in ("backend", "block_size", "kv_cache_dtype", "dtype", "dtype_explicit", "num_heads"):
            continue
        if decl.category != "setting" or (decl.platforms and c.platform not in decl.platforms):
            continue
        value = getattr(c, name, None)
        if value is ANY:
            continue
        user = name in ctx.user_fields
        if not (user or decl.env or (name.endswith("_available") and value is False)):
            continue
        if decl.kind == "bool":
            values: list[Any] = [not value] if isinstance(value, bool) else [True, False]
        elif decl.kind == "tristate":
            values = [v for v in (None, True, False) if v is not value]
        elif decl.kind in ("enum", "int") and name in dom:
            values = [v for v in (None, *dom[name]) if v != value and (v is not None or decl.default is None)]
        else:
            continue
        out += [(name, v) for v in values]
    return out


def _hardware(ctx: Context) -> list[tuple[dict[str, Any], tuple[str, ...], Mapping[str, Any], bool]]:
    """(changes, GPU names, GPU facts, older) per other generation of the same vendor, nearest
    newer first; on CPU, GPUs of both vendors (a fix there is 'use a GPU')."""
    from .gpus import nearest_first, suggestable
    c = ctx.config
    out: list[tuple[dict[str, Any], tuple[str, ...], Mapping[str, Any], bool]] = []

    def group(rows: Iterable[tuple[str, Mapping[str, Any], bool]]) -> None:
        seen: dict[tuple[Any, Any], int] = {}
        for name, g, older in rows:
            key = (g.get("compute_capability"), g.get("rocm_arch"))
            if key in seen:
                i = seen[key]
                ch, names, facts, old = out[i]
                out[i] = (ch, (*names, name), facts, old)
                continue
            changes: dict[str, Any] = {}
            if g.get("platform") != c.platform:
                changes["platform"] = g.get("platform")
            if "compute_capability" in g:
                changes["compute_capability"] = str(g["compute_capability"])
            if "rocm_arch" in g:
                changes["rocm_arch"] = g["rocm_arch"]
            seen[key] = len(out)
            out.append((changes, (name,), g, older))

    if c.platform == "cpu":
        for plat in ("cuda", "rocm"):
            rows = [(n, g, False) for n, g in suggestable(plat)
                    if plat != "cuda" or str(g.get("compute_capability")) >= "8.0"]
            group(rows)
        return out
    current: dict[str, Any] = {"platform": c.platform}
    if c.compute_capability is not None:
        current["compute_capability"] = format_cc(c.compute_capability)
    if c.rocm_arch is not None:
        current["rocm_arch"] = c.rocm_arch
    group(nearest_first(str(c.platform), current))
    return out


def _model_changes(ctx: Context) -> list[tuple[str, Any]]:
    """Model facts the user typed as a flag, with nearby values."""
    from .diagnosis import _candidate_values
    from .selection import compiled_rules
    rules = compiled_rules(ctx.config).rules
    out: list[tuple[str, Any]] = []
    for f in (*_MODEL, *(n for n in _declared_fields(ctx.config) if n not in _MODEL and _is_model_fact(ctx, n))):
        if f in ctx.user_fields:
            values = [v for v in _candidate_values(rules, f, getattr(ctx.config, f)) if _plausible(rules, f, v)]
            if f == "head_size":  # the sizes backends name, nearest first
                near = sorted(_named_sizes(rules) - {ctx.config.head_size},
                              key=lambda v: abs(v - ctx.config.head_size) if isinstance(ctx.config.head_size, int) else v)
                values = list(dict.fromkeys([*near, *values]))
            out += [(f, v) for v in values[:6]]
    return out
