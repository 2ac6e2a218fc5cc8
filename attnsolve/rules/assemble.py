"""The files' tables, gathered across files, built into one RuleSet and checked as a whole.

Why a module of its own: each table kind is parsed by its own module; this is the one place that knows
the order (domains, fields, generic checks, invariants, derived facts, backends, lists, aliases) and
the cross-file checks (names defined twice, references, fields read but not declared, structure).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from . import schema
from .backends import _backend, _resolve_parents
from .capabilities import _generic_checks
from .conditions import _Known
from .derived import _derived_facts, _ordered_derived
from .field_decls import _field_decls
from .invariants import _invariants
from .model import Backend, Derived, PriorityList, RuleSet
from .priority_lists import _LIST_SETTINGS, _priority_list
from .problems import RulesError, _Collector
from .toml_values import _cc_int


# Fields that exist besides the Config fields: the role of the query.
EXTRA_FIELDS = {"role": ("decode", "mla_prefill")}
# Facts that exist only while a platform step runs (never Config fields): the variant a model route
# chose (model_route_kv) and the decode backend an MLA prefill step follows (mla_prefill.skips).
CONTEXT_FIELDS = ("route_variant", "decode_backend", "selected")


# Key sets come from the one table of known keys, rules/schema.py KEYS.
_BACKEND_KEYS = schema.keys("backend")
# Platform-level keys ([platforms.X], shared by all of X's lists).
_PLATFORM_KEYS = schema.keys("platform")


def _build(docs: list[tuple[str, dict]], col: _Collector, check_structure: bool, sources: tuple[str, ...]) -> RuleSet:
    from ._fields import CONFIG_FIELDS  # field names known to Config, kept beside the loader

    domains: dict[str, tuple[Any, ...]] = {}
    aliases: dict[str, dict[str, str]] = {}
    gpus: dict[str, dict[str, Any]] = {}
    generations: dict[str, str] = {}
    raw_backends: dict[str, tuple[str, dict]] = {}
    raw_derived: dict[str, tuple[str, dict]] = {}
    raw_platforms: dict[str, list[tuple[str, dict]]] = {}
    raw_fields: dict[str, tuple[str, dict]] = {}
    top_keys = schema.keys("top")

    def table(fname: str, where: str, value: Any) -> dict:
        """`value` if it is a table, else {} with a problem naming file and key."""
        if isinstance(value, dict):
            return value
        col.add(fname, where, f"must be a table, got {type(value).__name__}")
        return {}

    release: dict[str, Any] = {}  # [ruleset]: texts and switches, and default_block_size (an int)
    for fname, doc in docs:
        if isinstance(doc.get("ruleset"), dict):
            release.update({k: v for k, v in doc["ruleset"].items()
                            if isinstance(v, str) or (k == "default_block_size" and type(v) is int)})
            size = doc["ruleset"].get("default_block_size")
            if size is not None and not (type(size) is int and size >= 1):
                col.add(fname, "ruleset.default_block_size", f"must be a positive integer, got {size!r}")
            unmodelled = doc["ruleset"].get("unmodelled_platforms")
            if unmodelled is not None:
                if isinstance(unmodelled, dict) and all(isinstance(w, str) and w for w in unmodelled.values()):
                    release["unmodelled_platforms"] = {str(k).lower(): w for k, w in unmodelled.items()}
                else:
                    col.add(fname, "ruleset.unmodelled_platforms",
                            f"must be a table of platform = \"why it is not modelled\", got {unmodelled!r}")
            patches = doc["ruleset"].get("patch_releases")
            if patches is not None:
                release["patch_releases"] = _patch_releases(patches, doc["ruleset"].get("vllm"), fname, col)
        for key in set(doc) - top_keys:
            col.add(fname, key, f"unknown top-level table; accepted: {', '.join(sorted(top_keys))}")
        for k, v in table(fname, "fields", doc.get("fields", {})).items():
            if isinstance(v, dict):
                if k in raw_fields:
                    col.add(fname, f"fields.{k}", f"declared twice (also in {raw_fields[k][0]})")
                raw_fields[k] = (fname, v)
                if "values" not in v:
                    continue
                v = v["values"]
            if not isinstance(v, list) or not v:
                col.add(fname, f"fields.{k}", "must be a non-empty list")
            elif not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
                col.add(fname, f"fields.{k}", "values must be strings or integers")
            else:
                domains[k] = tuple(v)
        for k, v in table(fname, "aliases", doc.get("aliases", {})).items():
            v = table(fname, f"aliases.{k}", v)
            bad = [a for a, b in v.items() if not isinstance(b, str)]
            if bad:
                col.add(fname, f"aliases.{k}.{bad[0]}", "must be a string")
                continue
            aliases.setdefault(k, {}).update({str(a).lower(): b for a, b in v.items()})
        for k, v in table(fname, "gpus", doc.get("gpus", {})).items():
            v = table(fname, f"gpus.{k}", v)
            if v and not isinstance(v.get("platform"), str):
                col.add(fname, f"gpus.{k}.platform", "must be a platform name")
                continue
            if v:
                gpus[k] = v
        for k, v in table(fname, "generations", doc.get("generations", {})).items():
            try:
                _cc_int(k)
            except ValueError as e:
                col.add(fname, f"generations.{k}", str(e))
                continue
            generations[k] = str(v)
        for kind, raw in (("derived", raw_derived), ("backends", raw_backends)):
            for name, d in table(fname, kind, doc.get(kind, {})).items():
                if name in raw:
                    col.add(fname, f"{kind}.{name}", f"defined twice (also in {raw[name][0]})")
                if not isinstance(d, dict):
                    col.add(fname, f"{kind}.{name}", "must be a table")
                    continue
                raw[name] = (fname, d)
        for plat, p in table(fname, "platforms", doc.get("platforms", {})).items():
            if not isinstance(p, dict):
                col.add(fname, f"platforms.{plat}", "must be a table")
                continue
            if not isinstance(p.get("lists", []), list) or not all(isinstance(x, dict) for x in p.get("lists", [])):
                col.add(fname, f"platforms.{plat}.lists", "must be an array of tables ([[platforms.X.lists]])")
                continue
            raw_platforms.setdefault(plat, []).append((fname, p))

    for required in ("dtype", "kv_cache_dtype", "block_size", "attn_type", "platform", "flash_attn_version", "rocm_arch"):
        if required not in domains:
            col.add("domains.toml", f"fields.{required}", "missing")
    for fld, table_ in aliases.items():
        for a, target in table_.items():
            if fld in domains and target not in domains[fld]:
                col.add("domains.toml", f"aliases.{fld}.{a}", f"target {target!r} not in fields.{fld} {list(domains[fld])}")
    for gname, g in gpus.items():
        if g.get("platform") not in domains.get("platform", ()):
            col.add("domains.toml", f"gpus.{gname}.platform", f"{g.get('platform')!r} not in fields.platform {list(domains.get('platform', ()))}")
        if "compute_capability" in g:
            try:
                _cc_int(g["compute_capability"])
            except ValueError as e:
                col.add("domains.toml", f"gpus.{gname}.compute_capability", str(e))
        if "rocm_arch" in g and g["rocm_arch"] not in domains.get("rocm_arch", ()):
            col.add("domains.toml", f"gpus.{gname}.rocm_arch", f"{g['rocm_arch']!r} not in fields.rocm_arch")
    known: set[str] = _Known(set(CONFIG_FIELDS) | set(raw_derived) | set(EXTRA_FIELDS) | set(CONTEXT_FIELDS)
                             | set(raw_fields))
    field_decls = _field_decls(raw_fields, domains, col, known)
    generic = _generic_checks([(fname, g) for fname, doc in docs for g in (doc.get("generic_checks") or [])
                               if isinstance(g, dict)], known, col)
    invariants = _invariants([(fname, g) for fname, doc in docs for g in (doc.get("invariants") or [])
                              if isinstance(g, dict)], known, domains, col)
    if not generic:
        col.add("domains.toml", "generic_checks", "missing: the rule set declares no [[generic_checks]] "
                "(vLLM's validate_configuration checks, in order)")

    derived: dict[str, Derived] = _derived_facts(raw_derived, known, col)

    # Inheritance: resolve parents first (a cycle or a dangling parent is reported, not looped on).
    resolved: dict[str, dict] = {}

    backends: dict[str, Backend] = {}
    abstract: set[str] = set()
    # the rule set's own capability keys (its generic checks), accepted on backends and variants
    cap_keys = {k for g in generic for k in (g.key, g.key + "_unset_passes" if g.unset_passes else "", g.exact_key) if k}
    for name, (fname, b) in raw_backends.items():
        loc = f"backends.{name}"
        unknown = set(b) - _BACKEND_KEYS - cap_keys
        if unknown:
            col.add(fname, loc, f"unknown key(s) {sorted(unknown)}; accepted: {', '.join(sorted(_BACKEND_KEYS))}")
            continue
        if "alias_of" in b:  # built after the loop, from its target
            if set(b) - {"alias_of", "summary"}:
                col.add(fname, loc, "an alias (alias_of) takes no other keys besides summary")
            continue
        full = _resolve_parents(name, (name,), raw_backends, resolved, col)
        if full is None:
            continue
        if full.get("abstract"):
            abstract.add(name)
            continue
        try:
            # an MLA prefill backend's validate_configuration lists every failing check (its own registry)
            backends[name] = _backend(name, full, fname, known, domains, derived, generic,
                                      first=release.get("combination_reasons") == "first"
                                      and full.get("role") != "mla_prefill")
        except (ValueError, KeyError, TypeError) as e:
            col.add(fname, loc, str(e))

    lists: list[PriorityList] = []
    for plat, parts in raw_platforms.items():
        settings: dict[str, Any] = {}
        for fname, p in parts:
            for k, v in p.items():
                if k == "lists":
                    continue
                if k not in _PLATFORM_KEYS:
                    col.add(fname, f"platforms.{plat}.{k}", f"unknown key; accepted: {', '.join(sorted(_PLATFORM_KEYS))}")
                    continue
                if k in _LIST_SETTINGS:  # lists of rules: concatenated across files, in file order
                    settings[k] = [*settings.get(k, []), *v] if isinstance(v, list) else v
                    continue
                if k in settings and settings[k] != v:
                    col.add(fname, f"platforms.{plat}.{k}", f"conflicts with an earlier value {settings[k]!r}")
                settings[k] = v
        for fname, p in parts:
            for i, raw_list in enumerate(p.get("lists", [])):
                loc = f"platforms.{plat}.lists[{i}]"
                try:
                    lists.append(replace(_priority_list(plat, raw_list, settings, known), source=fname))
                except (ValueError, KeyError, TypeError) as e:
                    col.add(fname, loc, str(e))
        if plat not in domains.get("platform", ()):
            col.add(parts[0][0], f"platforms.{plat}", f"platform not in fields.platform {list(domains.get('platform', ()))}")

    for name, d in getattr(known, "synth", {}).items():  # field comparisons found while parsing
        derived.setdefault(name, d)
    derived = _ordered_derived(derived, col)
    # an alias resolves to its target: same capabilities, reported under the target's name
    for name, (fname, b) in raw_backends.items():
        target = b.get("alias_of")
        if target is None:
            continue
        if target not in backends or backends[target].alias_of:
            col.add(fname, f"backends.{name}.alias_of", f"names no (non-alias) backend: {target!r}")
            continue
        backends[name] = replace(backends[target], name=name, alias_of=target, source=fname, explicit_only=True,
                                 summary=str(b.get("summary", f"alias of {target}")))
    rules = RuleSet(domains=domains, aliases=aliases, gpus=gpus, generations=generations, derived=derived,
                    backends=backends, lists=tuple(lists), sources=sources, fields=field_decls, generic_checks=generic,
                    invariants=invariants,
                    vllm=release.get("vllm", ""), read_from=release.get("read_from", ""),
                    summary=release.get("summary", ""), settings=dict(release))
    _check_references(rules, abstract, col)
    if field_decls:  # a set that declares its fields must declare every common field its rules read
        from ._fields import CONFIG_FIELDS as _COMMON
        used: dict[str, None] = {}
        for b in backends.values():
            for c in b.checks:
                used.update(dict.fromkeys(c.fields))
        for pl in lists:
            used.update(dict.fromkeys(lit.field for lit in pl.when))
            for case in (*pl.start_block_size, *pl.start_backend):  # start-up rules read fields too
                used.update(dict.fromkeys(lit.field for lit in case.when))
            for _, when in (*pl.startup_failures, *pl.request_errors):
                used.update(dict.fromkeys(lit.field for lit in when))
        for d in derived.values():
            used.update(dict.fromkeys(d.inputs))
        for f in used:
            if f in _COMMON and f not in field_decls:
                hit = schema.closest(f, [n for n in field_decls if n not in used])
                col.add(next((fn for fn, _ in raw_fields.values()), "fields.toml"), f"fields.{f}",
                        "not declared, but the rules read it (a release that declares its fields declares them all)"
                        + (f"; {hit!r} is declared and read by nothing: a typo?" if hit else ""))
    if check_structure and not col.problems:
        from .structure import check_structure as _graph_check
        for problem in _graph_check(rules, {n: b.get("parent") for n, (_, b) in raw_backends.items()},
                                    {n: f for n, (f, _) in raw_backends.items()}, abstract):
            col.add(*problem)
    if col.problems:
        raise RulesError(col.problems)
    return rules


def _check_references(rules: RuleSet, abstract: set[str], col: _Collector) -> None:
    """Cheap reference checks that need no graph library (also run on the fast start-up path)."""
    for pl in rules.lists:
        for case in pl.start_backend:
            if case.value not in rules.backends:
                col.add(pl.source or pl.platform, f"platforms.{pl.platform}.start_backend", f"names no backend: {case.value!r}")
        for e in (*pl.entries, *pl.manual_accept):
            if e.backend not in rules.backends:
                why = "an abstract base" if e.backend in abstract else "no backend"
                col.add(pl.source or pl.platform, f"platforms.{pl.platform}.lists {pl.name!r}", f"entry {e.backend!r} names {why}")
            elif pl.platform not in rules.backends[e.backend].platforms:
                col.add(pl.source or pl.platform, f"platforms.{pl.platform}.lists {pl.name!r}",
                        f"entry {e.backend!r} is not declared for platform {pl.platform!r}")


def _patch_releases(patches: Any, vllm: Any, fname: str, col: Any) -> tuple[str, ...]:
    """`[ruleset] patch_releases`: patch releases ("0.20.2") of this set's own minor release, each once."""
    from .labels import minor_of, parse_version
    if not isinstance(patches, list) or not all(isinstance(p, str) for p in patches):
        col.add(fname, "ruleset.patch_releases", f"must be a list of release labels such as \"0.20.2\", got {patches!r}")
        return ()
    out: list[str] = []
    for p in patches:
        label = parse_version(p)
        if label != p or p.count(".") != 2:
            col.add(fname, "ruleset.patch_releases", f"{p!r} is not a patch release label such as \"0.20.2\"")
        elif isinstance(vllm, str) and parse_version(vllm) and minor_of(p) != minor_of(parse_version(vllm)):
            col.add(fname, "ruleset.patch_releases", f"{p!r} is not a patch release of vLLM {vllm}")
        elif p in out:
            col.add(fname, "ruleset.patch_releases", f"{p!r} is listed twice")
        else:
            out.append(p)
    return tuple(out)
