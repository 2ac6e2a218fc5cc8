"""[fields.NAME] tables: the fields a rule set declares (kind, default, flags, help) as FieldDecl.

Why a module of its own: a release that declares its fields owns the CLI flags and the defaults
(conditional ones too); each declaration is checked against its kind here, before any rule reads it.
"""

from __future__ import annotations

from typing import Any

from . import schema
from ._fields import CONFIG_FIELDS
from .conditions import _literals
from .model import (_NO_EQ, ENV_READINGS, FIELD_CATEGORIES, FIELD_KINDS, CheckpointKv, CheckpointScheme, DerivedCase,
                    FieldDecl, ModelKey)
from .problems import _Collector
from .toml_values import _list


def _field_decls(raw: dict[str, tuple[str, dict]], domains: dict[str, tuple[Any, ...]],
                 col: _Collector, known: set[str]) -> dict[str, FieldDecl]:
    """[fields.NAME] tables -> FieldDecl, each checked against its kind (an enum needs its values)."""
    out: dict[str, FieldDecl] = {}
    for name, (fname, d) in raw.items():
        kind = d.get("kind")
        if kind not in FIELD_KINDS:
            col.add(fname, f"fields.{name}.kind", f"{kind!r} is not a field kind; accepted: {', '.join(FIELD_KINDS)}")
            continue
        category = d.get("category", "setting")
        if category not in FIELD_CATEGORIES:
            col.add(fname, f"fields.{name}.category", f"{category!r}; accepted: {', '.join(FIELD_CATEGORIES)}")
            continue
        if kind == "enum" and name not in domains:
            col.add(fname, f"fields.{name}", "an enum field needs its values (values = [...] here or in [fields] of domains.toml)")
            continue
        default = d.get("default")
        if kind == "bool" and default is not None and not isinstance(default, bool):
            col.add(fname, f"fields.{name}.default", f"a bool field's default is true or false, got {default!r}")
            continue
        if kind == "enum" and default is not None and default not in domains.get(name, ()):
            col.add(fname, f"fields.{name}.default", f"{default!r} not in its values {list(domains.get(name, ()))}")
            continue
        flags = tuple(d.get("flags", ()))
        if isinstance(d.get("flag"), str) and d["flag"] not in flags:  # `flag`: attnsolve's own flag, first
            flags = (d["flag"], *flags)
        bad = [f for f in flags if not f.startswith("-") or " " in f]
        if bad:
            col.add(fname, f"fields.{name}.flags", f"{bad[0]!r} is not a command-line flag (like --{name.replace('_', '-')})")
            continue
        arch_keys: dict[str, tuple[ModelKey, ...]] = {}
        bad_arch = None
        for a, ks in d.get("architecture_keys", {}).items():
            try:
                if not isinstance(ks, list):
                    raise ValueError("expected a list of config.json keys (like [\"v_head_dim\"]), each a key or "
                                     "a table as in model_keys")
                arch_keys[a] = _model_keys(kind, ks)
            except ValueError as e:
                bad_arch = (a, str(e))
                break
        if bad_arch is not None:
            col.add(fname, f"fields.{name}.architecture_keys.{bad_arch[0]}", bad_arch[1])
            continue
        try:
            model_keys = _model_keys(kind, d.get("model_keys", []))
        except ValueError as e:
            col.add(fname, f"fields.{name}.model_keys", str(e))
            continue
        try:
            defaults = _field_defaults(name, d.get("defaults", []), known, domains,
                                       may_stay_unset=default is None and name not in CONFIG_FIELDS)
        except ValueError as e:
            col.add(fname, f"fields.{name}.defaults", str(e))
            continue
        env_reads = d.get("env_reads", "")
        if (d.get("env") or env_reads) and (not d.get("env") or env_reads not in ENV_READINGS):
            col.add(fname, f"fields.{name}.env_reads",
                    f"{env_reads!r}: a field with `env` says how vLLM reads the variable's text, one of "
                    f"{', '.join(ENV_READINGS)} (and `env_reads` needs `env`)")
            continue
        if env_reads and kind not in ("bool", "tristate"):
            col.add(fname, f"fields.{name}.env_reads", f"{env_reads!r} gives true or false: only a bool field takes it")
            continue
        unknown = d.get("unknown_message", "")
        if unknown:
            if kind != "enum":
                col.add(fname, f"fields.{name}.unknown_message", f"only an enum field refuses unknown values (kind {kind})")
                continue
            try:  # the placeholders the refusal fills in: a typo here would crash the refusal itself
                unknown.format(value="x", VALUE="X", values="a, b")
            except (KeyError, IndexError, ValueError) as e:
                col.add(fname, f"fields.{name}.unknown_message",
                        f"unknown placeholder {e} (use {{value}}, {{VALUE}} or {{values}})")
                continue
        checkpoint = None
        if "checkpoint" in d:
            try:
                checkpoint = _checkpoint(name, d["checkpoint"], domains, known)
            except ValueError as e:
                col.add(fname, f"fields.{name}.checkpoint", str(e))
                continue
        out[name] = FieldDecl(name=name, kind=kind, default=default, unset=d.get("unset", ""), category=category,
                              selector=bool(d.get("selector", False)), flags=flags, metavar=d.get("metavar", "VALUE"),
                              env=d.get("env"), vllm=d.get("vllm", ""), help=d.get("help", ""),
                              platforms=tuple(d.get("platforms", ())), min=d.get("min"),
                              model_keys=model_keys, architectures=dict(d.get("architectures", {})),
                              architecture_keys=arch_keys, defaults=defaults,
                              mla_layers=bool(d.get("mla_layers", True)),
                              unknown_message=unknown, env_reads=env_reads, checkpoint=checkpoint)
    return out


def _checkpoint(name: str, raw: Any, domains: dict[str, tuple[Any, ...]], known: set[str]) -> CheckpointKv:
    """`[fields.kv_cache_dtype.checkpoint]` -> CheckpointKv: every dtype it names is one of the field's values, the
    per-head field one the rule set knows (a typo here would make `--model` answer with a value vLLM never uses)."""
    if name != "kv_cache_dtype":
        raise ValueError("only kv_cache_dtype reads a checkpoint's own value")
    values = domains.get(name, ())

    def dtype(v: Any, where: str) -> str:
        if not isinstance(v, str) or v not in values:
            raise ValueError(f"{where}: {v!r} is not one of kv_cache_dtype's values {list(values)}")
        return v
    algos = raw.get("modelopt_algos", {})
    mapped = {str(k).lower(): dtype(v, f"modelopt_algos.{k}") for k, v in algos.items()}
    schemes = []
    for i, c in enumerate(raw.get("modelopt_schemes", ())):
        if not {"num_bits", "type", "algo"} <= set(c) or str(c["algo"]).lower() not in mapped:
            raise ValueError(f"modelopt_schemes #{i + 1}: needs num_bits, type and an algo that modelopt_algos maps "
                             f"(one of {sorted(mapped)}), got {c!r}")
        schemes.append(CheckpointScheme(int(c["num_bits"]), str(c["type"]), str(c["algo"]).lower(), c.get("dynamic")))
    scheme_dtype = raw.get("scheme_dtype")
    if scheme_dtype is not None:
        dtype(scheme_dtype, "scheme_dtype")
    per_head = raw.get("per_head_field")
    if per_head is not None and per_head not in known:
        raise ValueError(f"per_head_field: {per_head!r} is not a field of this rule set")
    if (per_head is None) != (raw.get("per_head_strategy") is None):
        raise ValueError("per_head_strategy and per_head_field go together")
    return CheckpointKv(modelopt_algos=mapped, modelopt_schemes=tuple(schemes), scheme_dtype=scheme_dtype,
                        scheme_overrides_explicit=bool(raw.get("scheme_overrides_explicit", False)),
                        per_head_strategy=raw.get("per_head_strategy"), per_head_field=per_head)


def _model_keys(kind: str, raw: Any) -> tuple[ModelKey, ...]:
    """`model_keys = ["key", { key = "...", present = true }, { key = "...", equals = V }, { key = "...", in = [...] },
    { key = "...", decides = true }]` -> ModelKey (a test sets a true/false field: bool kinds only)."""
    out = []
    tests = ("present", "equals", "in")
    for i, k in enumerate(_list(raw)):
        if isinstance(k, str) and k:
            out.append(ModelKey(k))
            continue
        if not isinstance(k, dict) or not isinstance(k.get("key"), str) or not k["key"] or \
                set(k) - {"key", "decides", "note", *tests}:
            raise ValueError(f"entry #{i + 1}: a config.json key (\"name\" or \"table.name\"), or a table with "
                             f"'key', at most one test (present = true, equals = VALUE, in = [VALUES]), optional "
                             f"decides = true and note = \"...\"; got {k!r}")
        name = k["key"]
        given = [t for t in tests if t in k]
        if len(given) > 1 or ("present" in k and k["present"] is not True) or \
                (not given and k.get("decides") is not True and "note" not in k):
            raise ValueError(f"entry #{i + 1} ({name!r}): one test (present = true, equals = VALUE or in = [VALUES]), "
                             f"or decides = true or a note for the key's own value")
        if given and kind not in ("bool", "tristate"):
            raise ValueError(f"entry #{i + 1} ({name!r}): a test gives true or false, so only a bool field takes one")
        if "decides" in k and not isinstance(k["decides"], bool) or "note" in k and not isinstance(k["note"], str):
            raise ValueError(f"entry #{i + 1} ({name!r}): decides is true or false, note a string")
        try:
            str(k.get("note", "")).format(value="")
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"entry #{i + 1} ({name!r}): a note names no placeholder but {{value}}; got "
                             f"{k['note']!r}") from None
        members = k.get("in")
        if members is not None and (not isinstance(members, list) or not members
                                    or not all(isinstance(x, (str, int, bool)) for x in members)):
            raise ValueError(f"entry #{i + 1} ({name!r}): in = a non-empty list of values")
        out.append(ModelKey(name, present="present" in k, equals=k.get("equals", _NO_EQ),
                            in_=frozenset(members) if members is not None else None,
                            decides=bool(k.get("decides", False)), note=k.get("note")))
    return tuple(out)


def _field_defaults(name: str, raw: Any, known: set[str], domains: dict[str, tuple[Any, ...]],
                    may_stay_unset: bool = False) -> tuple[DerivedCase, ...]:
    """`defaults = [{ when, value }, ..., { value }]`: first match; the last case has no `when`, except for a field a
    release declares beyond Config's own and without a `default`, which stays unset where no case holds (0.21's
    mla_prefill_backend: the deprecated switches name a prefill backend, nothing else does)."""
    cases = []
    for i, c in enumerate(_list(raw)):
        if not isinstance(c, dict) or set(c) - schema.keys("field_default") or "value" not in c:
            raise ValueError(f"case #{i + 1} needs a 'value' (and optional 'when')")
        when = _literals(c.get("when", {}), known)
        if any(lit.field == name for lit in when):
            raise ValueError(f"case #{i + 1}: its 'when' reads {name} itself")
        if name in domains and c["value"] not in domains[name]:
            raise ValueError(f"case #{i + 1}: {c['value']!r} not in its values {list(domains[name])}")
        cases.append(DerivedCase(when, c["value"]))
    if cases and cases[-1].when and not may_stay_unset:
        raise ValueError("the last case must have no 'when' (the value otherwise)")
    return tuple(cases)
