"""One backend's table (its parents merged in first) as a Backend with its checks in vLLM's order.

Why a module of its own: a backend's checks come from three places (the generic checks its capabilities
feed, per-variant overrides, its own [[checks]]) and must come out as vLLM's validate_configuration
reports them; inheritance (`parent`) is resolved before, so a child reads as one table.
"""

from __future__ import annotations

from typing import Any

from . import schema
from .capabilities import _caps, expand_checks
from .conditions import _checks, _literals, _messages
from .model import Backend, Check, GenericCheck, Literal, Pred, Variant
from .problems import _Collector
from .toml_values import _list, _str_list


_ROLES = ("decode", "mla_prefill")


def _resolve_parents(name: str, trail: tuple[str, ...], raw_backends: dict[str, tuple[str, dict]],
                     resolved: dict[str, dict], col: _Collector) -> dict | None:
    """A backend's table with its parents' merged in (kept in `resolved`); None after reporting a cycle,
    a dangling parent or a chain deeper than schema.MAX_PARENT_DEPTH (never looped on)."""
    if name in resolved:
        return resolved[name]
    fname, b = raw_backends[name]
    parent = b.get("parent")
    if parent is None:
        resolved[name] = dict(b)
        return resolved[name]
    if len(trail) > schema.MAX_PARENT_DEPTH:
        col.add(fname, f"backends.{name}.parent", f"inheritance chain deeper than {schema.MAX_PARENT_DEPTH} "
                f"({' -> '.join(trail[:3])} -> ...)")
        return None
    if parent in trail:
        col.add(fname, f"backends.{name}.parent", "inheritance cycle: " + " -> ".join((*trail, parent)))
        return None
    if parent not in raw_backends:
        col.add(fname, f"backends.{name}.parent", f"names no backend: {parent!r}")
        return None
    base = _resolve_parents(parent, (*trail, parent), raw_backends, resolved, col)
    if base is None:
        return None
    merged = {k: v for k, v in base.items() if k not in ("abstract", "summary", "explicit_only", "inherit_checks")}
    for k, v in b.items():
        if k == "checks":  # appended to the parent's, or replacing them (inherit_checks = false)
            inherited = [] if b.get("inherit_checks") is False else list(base.get("checks", []))
            merged["checks"] = inherited + list(v)
        elif k == "variants" and isinstance(v, dict) and isinstance(base.get("variants"), dict):
            merged["variants"] = {**base["variants"], **v}  # a child overrides its parent's variants by name
        else:
            merged[k] = v
    if b.get("inherit_checks") is False and "checks" not in b:
        merged["checks"] = []
    resolved[name] = merged
    return merged


def _check_domain(values: tuple[str, ...] | None, domain: tuple, key: str) -> None:
    if values is None:
        return
    bad = [v for v in values if v not in domain]
    if bad:
        raise ValueError(f"{key}: value(s) {bad} not in the domain {list(domain)} (domains.toml)")


def _check_layouts(raw: Any, known: set[str]) -> None:
    """`kv_cache_layouts` (data, not applied): layout names, or first-match cases `{ when, value }` of them."""
    if raw is None:
        return
    if not isinstance(raw, list):
        raise ValueError(f"kv_cache_layouts: expected a list of layout names or of {{ when, value }} cases, got {raw!r}")
    for i, x in enumerate(raw):
        if isinstance(x, str):
            continue
        if not isinstance(x, dict) or set(x) - {"when", "value"} or "value" not in x:
            got = sorted(x) if isinstance(x, dict) else repr(x)
            raise ValueError(f"kv_cache_layouts case #{i + 1}: expected {{ when, value }}, got {got}")
        if not isinstance(x["value"], list) or not all(isinstance(v, str) for v in x["value"]):
            raise ValueError(f"kv_cache_layouts case #{i + 1}: value must be a list of layout names")
        _literals(x.get("when", {}), known)


def _backend(name: str, full: dict, fname: str, known: set[str], domains: dict, derived: dict,
             generic: tuple[GenericCheck, ...], first: bool = False) -> Backend:
    role = full.get("role", "decode")
    if role not in _ROLES:
        raise ValueError(f"role {role!r} not one of {list(_ROLES)}")
    platforms = _str_list(full.get("platforms", []))
    if not platforms:
        raise ValueError("platforms is missing or empty")
    caps = _caps(full, generic)
    _check_domain(caps.dtypes, domains.get("dtype", ()), "dtypes")
    _check_domain(caps.attn_types, domains.get("attn_type", ()), "attn_types")
    if caps.kv_cache_dtypes:
        exact = [k for k in caps.kv_cache_dtypes if not k.endswith("*")]
        _check_domain(tuple(exact), domains.get("kv_cache_dtype", ()), "kv_cache_dtypes")
    variant_field = full.get("variant_field")
    variants: list[Variant] = []
    raw_variants = full.get("variants", {})
    if raw_variants and variant_field is None:
        raise ValueError("variants need a variant_field")
    if variant_field is not None and variant_field not in known:
        raise ValueError(f"variant_field {variant_field!r} is not a known field")
    shown_by = full.get("variant_shown_by")
    if shown_by is not None and (variant_field is None or shown_by not in derived):
        raise ValueError(f"variant_shown_by {shown_by!r} needs a variant_field and must name a derived fact")
    for vname, v in raw_variants.items():
        if "values" not in v:
            raise ValueError(f"variant {vname} needs 'values'")
        extra = set(v) - schema.keys("variant") - {k for g in generic for k in (g.key, g.exact_key) if k}
        if extra:
            raise ValueError(f"variant {vname}: unknown key(s) {sorted(extra)}")
        variants.append(Variant(vname, tuple(_list(v["values"])), _caps(v, generic)))
    if variant_field in derived:
        covered = {x for v in variants for x in v.values}
        missing = [x for x in derived[variant_field].values if x not in covered]
        if missing:
            raise ValueError(f"variants do not cover {variant_field} value(s) {missing}")
    checks: list[Check] = []
    if not variants:
        checks += expand_checks(caps, role, generic)
    else:
        # Capabilities a variant overrides are checked per variant; the rest once, in vLLM's order.
        overridden = {k for v in variants for k in v.caps.keys()}
        per_kind: dict[str, list[Check]] = {}
        for c in expand_checks(caps, role, generic):
            if c.kind not in overridden:
                per_kind.setdefault(c.kind, []).append(c)
        for v in variants:
            when = (Literal(variant_field, Pred(in_=frozenset(v.values))),)
            only = caps.merged(v.caps).only(overridden)
            for c in expand_checks(only, role, generic, when):
                if c.kind in overridden:
                    per_kind.setdefault(c.kind, []).append(c)
        for g in generic:
            checks += per_kind.get(g.key, [])
    own = list(_checks(full.get("checks", []), known, first=first))
    generic_keys = {g.key for g in generic}
    at = {c.kind for c in own if c.kind in generic_keys}
    if at:  # a check with `at = KEY` replaces that generic check, at its place
        by_kind: dict[str, list[Check]] = {}
        for c in checks:
            by_kind.setdefault(c.kind, []).append(c)
        for c in own:
            if c.kind in at:
                by_kind.setdefault("__at__" + c.kind, []).append(c)
        checks = [c for g in generic for c in by_kind.get("__at__" + g.key if g.key in at else g.key, [])]
        own = [c for c in own if c.kind not in at]
    checks += own
    warns = _messages(full.get("warnings", []), known, "warnings")
    _check_layouts(full.get("kv_cache_layouts"), known)
    pbs = full.get("preferred_block_size")
    if pbs is not None and (isinstance(pbs, bool) or not isinstance(pbs, int) or pbs not in domains.get("block_size", ())):
        raise ValueError(f"preferred_block_size {pbs!r} not in the block_size domain {list(domains.get('block_size', ()))}")
    if shown_by is not None and not all(isinstance(x, str) for x in derived[shown_by].values):
        # a string-valued fact is the variant name shown as is; any other must select a variant
        covered = {x for v in variants for x in v.values}
        missing = [x for x in derived[shown_by].values if x not in covered]
        if missing:
            raise ValueError(f"variants do not cover {shown_by} value(s) {missing}")
    return Backend(warnings=warns, preferred_block_size=pbs, variant_shown_by=shown_by,
                   startup_failures=_messages(full.get("startup_failures", []), known, "startup_failures"),
                   layer_failures=_messages(full.get("layer_failures", []), known, "layer_failures"), name=name, platforms=platforms, role=role, caps=caps, checks=tuple(checks),
                   variant_field=variant_field, variants=tuple(variants),
                   explicit_only=bool(full.get("explicit_only", False)), parent=full.get("parent"),
                   summary=str(full.get("summary", "")), source=fname,
                   composite=_str_list(full.get("composite", [])), vllm_name=str(full.get("vllm_name", "")),
                   alias_of=full.get("alias_of"), get_name=str(full.get("get_name", "")),
                   kernel_block_sizes_text=str(full.get("kernel_block_sizes_text", "")),
                   kv_cache_dtypes_text=_str_list(full.get("kv_cache_dtypes_text", [])),
                   kv_cache_layouts=full.get("kv_cache_layouts"), requested_as=str(full.get("requested_as", "")),
                   model_built=bool(full.get("model_built", False)))
