"""The one table of every key a rule file may use, and the shape check run on the parsed TOML
before anything is built from it.

Why: the loader's builders trust shapes. Checking every key's type up front (unknown keys with
the closest known key, a string where a number belongs, `eq = [1, 2]`, a reason with a stray `{`,
`validate = "no"`) turns each malformed file into a RulesError naming file and key at load time,
instead of a silent wrong answer or a crash at solve time.

To add a rule key: add one line to KEYS (its place and kind), then read it where its table is built
(rules/backends.py, priority_lists.py, predicates.py... : loader.py names the module per table).
"""

from __future__ import annotations

import difflib
import string
from typing import Any, Callable, Iterable, Mapping

from ._fields import BOOL_FIELDS, CONFIG_FIELDS, INT_FIELDS

# Numbers a rule may compare an integer field with. Partial-config questions enumerate integer
# fields up to twice the largest number the rules mention, so this bounds that work (and no real
# head size, block size or head count comes near it).
RULE_INT_MAX = 65536
# Nesting of `parent = ...` chains (the packaged rules use 2).
MAX_PARENT_DEPTH = 32

# Kinds of value. PRED is a predicate over the field named in the kind's argument; LITERALS a table
# of field = predicate; TABLES(k) a table of named tables of place k; LIST_OF(k) a list of place k.
STRS = "strs"  # a string or a list of strings
STR, BOOL, INT, STR_LIST, INT_LIST, LIST, SCALAR, TABLE = "str", "bool", "int", "str_list", "int_list", "list", "scalar", "table"
LITERALS = "literals"


def PRED(field: str) -> str:  # noqa: N802 - reads as a kind in the table
    return f"pred:{field}"


def LIST_OF(place: str) -> str:  # noqa: N802
    return f"list_of:{place}"


def ONE(place: str) -> str:  # noqa: N802 - a single table of place k
    return f"table:{place}"


def TABLES(place: str) -> str:  # noqa: N802
    return f"tables:{place}"


_CAPS: dict[str, str] = {
    "dtypes": STR_LIST, "kv_cache_dtypes": STR_LIST, "attn_types": STR_LIST, "kernel_block_sizes": INT_LIST,
    "head_sizes": PRED("head_size"), "compute_capability": PRED("compute_capability"),
    "sink": BOOL, "mm_prefix": BOOL, "mla": BOOL, "sparse": BOOL, "dcp": BOOL,
}

# place -> key -> kind. THE table of known keys (the loader takes its key sets from here).
KEYS: dict[str, dict[str, str]] = {
    "top": {"generic_checks": LIST_OF("generic_check"), "invariants": LIST_OF("invariant"), "ruleset": ONE("ruleset"), "fields": TABLE, "aliases": TABLE, "gpus": TABLES("gpu"), "generations": TABLE,
            "derived": TABLES("derived"), "backends": TABLES("backend"), "platforms": TABLES("platform")},
    # which vLLM release a rule set models, and the release (wheel) its facts were read from
    # [fields.NAME]: a declared selection input (model.FieldDecl); `values` is its domain (kind enum)
    "field": {"kind": STR, "default": SCALAR, "unset": STR, "category": STR, "selector": BOOL, "flags": STR_LIST, "flag": STR,
              "metavar": STR, "env": STR, "env_reads": STR, "vllm": STR, "help": STR, "platforms": STR_LIST, "min": INT,
              "values": LIST, "model_keys": "raw", "architectures": TABLE, "architecture_keys": TABLE,
              "defaults": LIST_OF("field_default"), "mla_layers": BOOL, "unknown_message": STR,
              "checkpoint": ONE("checkpoint")},
    # [fields.kv_cache_dtype.checkpoint]: how `--model` reads a checkpoint's KV-cache dtype (model.CheckpointKv)
    "checkpoint": {"modelopt_algos": TABLE, "modelopt_schemes": LIST_OF("checkpoint_scheme"), "scheme_dtype": STR,
                   "scheme_overrides_explicit": BOOL, "per_head_strategy": STR, "per_head_field": STR},
    "checkpoint_scheme": {"num_bits": INT, "type": STR, "dynamic": BOOL, "algo": STR},
    # a case of a field's `defaults`: the value an unset field takes where `when` holds (the last has no when)
    "field_default": {"when": LITERALS, "value": SCALAR},
    # default: the base class's value when a backend omits the key (a list for values / multiple_of);
    # exact_key: a backend key that replaces the capability with an exact list (B12X's block sizes)
    "generic_check": {"key": STR, "field": STR, "form": STR, "reason": "reason", "reason_true": "reason",
                      "reason_false": "reason", "default": "any", "unset_passes": BOOL, "roles": STR_LIST,
                      "when": LITERALS, "exact_key": STR, "variant_read_when": "raw", "variant_reads": STR_LIST},
    # a platform invariant: a platform field (field, platforms, unset = "required" or the value assumed on
    # its platforms, implies_platform), a clause (when / require) or a definition (field = a bool, equals: a
    # literal over another field); reason: why (model.Invariant)
    "invariant": {"key": STR, "reason": "reason", "message": "reason", "field": STR, "platforms": STR_LIST, "unset": SCALAR,
                  "implies_platform": BOOL, "when": LITERALS, "require": LITERALS, "equals": LITERALS},
    # combination_reasons: "all" (every failing backend check is a reason) or "first" (vLLM >= 0.18's
    # supports_combination returns one string: only the first failing one)
    "ruleset": {"vllm": STR, "read_from": STR, "summary": STR, "status": STR, "combination_reasons": STR,
                "default_block_size": INT,
                # patch releases of this minor answered by this set, each checked against its own wheel
                # (a patch whose selection differs has its own folder, vllm-X.Y.Z, edits on this one)
                "patch_releases": STR_LIST,
                # platforms the release has that this set does not model ({name = why}): Config's refusal says why
                "unmodelled_platforms": TABLE,
                "derived_warnings": STR},
    # suggest / family: which GPUs a hardware fix names and a ROCm generation name (attnsolve/gpus.py)
    "gpu": {"platform": STR, "compute_capability": SCALAR, "rocm_arch": STR, "suggest": BOOL, "family": STR},
    "backend": {"platforms": STR_LIST, "role": STR, "summary": STR, **_CAPS, "explicit_only": BOOL, "parent": STR,
                "abstract": BOOL, "variant_field": STR, "variants": TABLES("variant"), "checks": LIST_OF("check"),
                # inherit_checks = false: the child's `checks` replace its parent's (default: appended to them)
                "inherit_checks": BOOL,
                "warnings": LIST_OF("warning"), "preferred_block_size": INT,
                "startup_failures": LIST_OF("warning"), "variant_shown_by": STR,
                # layer_failures: start-up refusals of the layer's impl __init__ (before the KV-cache block-size step)
                "layer_failures": LIST_OF("warning"),
                # composite: the backends a composite one dispatches to (documentation; its capabilities are
                # its own); alias_of: a name vLLM accepts and resolves to another backend; vllm_name: the
                # name vLLM prints when it differs from the rule name (MLA prefill registry)
                "composite": STR_LIST, "alias_of": STR, "vllm_name": STR,
                # get_name: the class's get_name() where it differs from the registry name; *_text: vLLM's
                # repr of a capability where it differs from the accepted set; kv_cache_layouts: a list or
                # cases (data); requested_as: the registry name whose request yields this class (XPU)
                "get_name": STR, "kernel_block_sizes_text": STR, "kv_cache_dtypes_text": STR_LIST,
                "kv_cache_layouts": "raw", "requested_as": STR,
                # model_built: a class only model code constructs (no registry name: no request names it)
                "model_built": BOOL},
    "variant": {"values": LIST, **_CAPS},
    # at: the generic check this one replaces (same place in the reasons); kind: vLLM's exception type
    "check": {"reason": "reason", "require": LITERALS, "when": LITERALS, "at": STR, "kind": STR},
    "warning": {"message": STR, "when": LITERALS},
    "derived": {"doc": STR, "values": LIST, "cases": LIST_OF("case"), "sums": TABLE, "quotients": TABLE,
                "products": TABLE},
    "case": {"when": LITERALS, "value": SCALAR, "warning": STRS},
    "platform": {"lists": LIST_OF("list"), "validate": BOOL, "manual": STR, "warn_unvalidated": BOOL,
                 "start_block_size": LIST_OF("start_block_size"), "drops": STR_LIST,
                 "request_platform_check": BOOL, "no_valid_message": STR, "invalid_message": STR,
                 "start_backend": LIST_OF("start_backend"), "startup_failures": LIST_OF("warning"), "block_size_failure": STR,
                 "block_size_failure_when": LITERALS,
                 "precluded_warning": STR, "request_fallbacks": LIST_OF("fallback"), "request_errors": LIST_OF("warning"),
                 "rewrites": LIST_OF("rewrite"), "notes": LIST_OF("note"), "model_backend": LIST_OF("model_backend"),
                 "model_routes": LIST_OF("model_route"), "model_route_kv": LIST_OF("route_kv"),
                 "mla_prefill": ONE("mla_prefill"),
                 # hardware_field: the field naming the platform's device; compute_capability_from: the derived
                 # fact giving validate_configuration's device capability ("none": None); texts vLLM prints
                 "hardware_field": STR, "compute_capability_from": STR, "compute_capability": STR,
                 "kv_cache_dtype_hint": STR, "manual_log": STR, "selected_log": STR, "override_log": STR,
                 "mla_prefill_no_valid_message": STR, "startup_warnings": LIST_OF("startup_warning"),
                 "ignore_warning": STR, "ignore_level": STR},
    "startup_warning": {"when": LITERALS, "message": STR, "level": STR},
    # a requested backend vLLM drops (automatic selection instead), with its log line if any
    "fallback": {"when": LITERALS, "warning": STR, "stage": STR, "only_reasons": "raw", "level": STR},
    # a config change vLLM applies before or after selection (set values, unset fields), with its log line
    "rewrite": {"when": LITERALS, "set": TABLE, "unset": STR_LIST, "stage": STR, "log": STR},
    # a line vLLM logs after selection with no config change
    "note": {"when": LITERALS, "level": STR, "log": STR},
    # a model-driven backend choice (or error) that replaces selection for that model
    "model_route": {"name": STR, "when": LITERALS, "result": STR, "variant": STR, "error": STR},
    "route_kv": {"when": LITERALS, "error": STR, "set": TABLE, "log": STR},
    "mla_prefill": {"request_field": STR, "no_valid_message": STR, "invalid_message": STR, "chosen_log": STR,
                    "skips": LIST_OF("skip"), "fallbacks": LIST_OF("skip")},
    "skip": {"when": LITERALS, "warning": STR},
    # value: a block size, or "block_size" (keep the user's)
    "start_block_size": {"when": LITERALS, "value": SCALAR},
    "start_backend": {"when": LITERALS, "value": STR},
    # a model-driven backend: value (a backend name, "backend": the request as is), and the model code's line
    "model_backend": {"when": LITERALS, "value": STR, "warning": STR},
    # error: the branch raises vLLM's text (no entries); no_prefill: the branch answers NO_PREFILL (an MLA prefill list,
    # no entries); log / warning: the branch's INFO / WARNING line;
    # fallback_log: INFO when the first entry fails and a later one is used ({reason_tuple})
    "list": {"name": STR, "when": LITERALS, "entries": LIST_OF("entry"), "manual": STR,
             "manual_accept": LIST_OF("entry"), "manual_other": STR, "ignore_warning": STR,
             "error": STR, "log": STR, "warning": STR, "ignore_silent": STR_LIST, "fallback_log": STR,
             "invalid_message": STR, "no_prefill": BOOL},
    # validate: run this entry's own checks on a platform that does not validate (or skip them); when: the
    # entry is considered only when it holds
    "entry": {"backend": STR, "checks": LIST_OF("check"), "validate": BOOL, "when": LITERALS},
    # eq_field / ne_field / le_field / multiple_of_field compare with another field (lowered to a derived fact)
    "predicate": {"in": LIST, "not_in": LIST, "min": SCALAR, "max": SCALAR, "multiple_of": SCALAR,
                  "major_in": INT_LIST, "eq": SCALAR, "none": BOOL, "present": BOOL,
                  "eq_field": STR, "ne_field": STR, "le_field": STR, "multiple_of_field": STR},
}
REQUIRED: dict[str, tuple[str, ...]] = {"check": ("reason", "require"), "warning": ("message",),
                                        "derived": ("values", "cases"), "case": ("value",),
                                        "start_block_size": ("value",), "entry": ("backend",),
                                        "variant": ("values",), "gpu": ("platform",), "list": ("name",)}
# (place, key) whose list may not be empty (an empty priority list selects nothing and breaks the sweep).
NON_EMPTY: frozenset[tuple[str, str]] = frozenset({("list", "entries"), ("derived", "values"), ("derived", "cases")})
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {("backend", "role"): ("decode", "mla_prefill"),
                                                   ("ruleset", "combination_reasons"): ("all", "first"),
                                                   ("ruleset", "derived_warnings"): ("chosen", "validated"),
                                                   ("rewrite", "stage"): ("before_selection", "after_selection"),
                                                   ("fallback", "stage"): ("before_selection", "after_selection"),
                                                   ("note", "level"): ("debug", "info", "warning"),
                                                   ("platform", "manual"): ("validate", "table", "ignore", "list"),
                                                   ("list", "manual"): ("validate", "table", "ignore", "list")}


def keys(place: str) -> frozenset[str]:
    return frozenset(KEYS[place])


class ShapeChecker:
    """Walks one parsed document, reporting (file, key, message) through `add`."""

    def __init__(self, add: Callable[[str, str, str], None], fields: Mapping[str, str],
                 capability_keys: Mapping[str, str] | None = None):
        self.add = add
        self.fields = fields  # field name -> "int" | "bool" | "str" | "cc" | "any"
        # the rule set's own capability keys (its [[generic_checks]]) -> kind, accepted on backends and variants
        self.capability_keys = dict(capability_keys or {})

    # -- places -------------------------------------------------------------------------------
    def table(self, f: str, loc: str, raw: Any, place: str) -> None:
        if not isinstance(raw, dict):
            self.add(f, loc, f"must be a table, got {_kind(raw)}")
            return
        known = KEYS[place]
        if place in ("backend", "variant") and self.capability_keys:
            known = {**known, **self.capability_keys}
        if place == "gpu":  # a GPU entry may give any field's value (a made-up platform's hardware field)
            known = {**known, **{k: SCALAR for k in raw if k in self.fields}}
        for k, v in raw.items():
            where = f"{loc}.{k}" if loc else str(k)
            if k not in known:
                hit = closest(k, known)
                self.add(f, where, f"unknown key {k!r}" + (f"; did you mean {hit!r}?" if hit else "")
                         + f" (accepted: {', '.join(sorted(known))})")
                continue
            self.value(f, where, v, known[k], place, k)
        for k in REQUIRED.get(place, ()):
            if k not in raw:
                self.add(f, loc, f"missing required key {k!r}")
            elif (place, k) in NON_EMPTY and raw[k] == []:
                self.add(f, f"{loc}.{k}", "must not be empty")

    def value(self, f: str, loc: str, v: Any, kind: str, place: str = "", key: str = "") -> None:
        bad = lambda what: self.add(f, loc, f"must be {what}, got {_kind(v)} {_short(v)}")  # noqa: E731
        if kind == STR:
            if not isinstance(v, str):
                return bad("a string")
            choices = CHOICES.get((place, key))
            if choices and v not in choices:
                self.add(f, loc, f"{v!r} is not one of {', '.join(choices)}")
        elif kind == STRS:
            if not (isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(x, str) for x in v))):
                bad("a string or a non-empty list of strings")
        elif kind == BOOL:
            if not isinstance(v, bool):
                bad("true or false")
        elif kind == INT:
            if not _is_int(v) or not 0 <= v <= RULE_INT_MAX:
                bad(f"an integer from 0 to {RULE_INT_MAX}")
        elif kind == SCALAR:
            if not isinstance(v, (str, int, float, bool)):
                bad("a single value (string, number or boolean)")
        elif kind == STR_LIST:
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                bad("a list of strings")
        elif kind == INT_LIST:
            if not isinstance(v, list) or not all(_is_int(x) and 0 < x <= RULE_INT_MAX for x in v):
                bad(f"a list of integers from 1 to {RULE_INT_MAX}")
        elif kind == "raw":
            pass  # data kept as written (checked where it is read)
        elif kind == "any":
            ok = isinstance(v, (str, int, float, bool)) or (isinstance(v, list) and all(isinstance(x, (str, int, float, bool)) for x in v))
            if not ok:
                bad("a value or a list of values")
        elif kind == LIST:
            if not isinstance(v, list) or not all(isinstance(x, (str, int, float, bool)) for x in v):
                bad("a list of values")
        elif kind == TABLE:
            if not isinstance(v, dict):
                bad("a table")
        elif kind == "reason":
            self.reason(f, loc, v)
        elif kind == LITERALS:
            self.literals(f, loc, v)
        elif kind.startswith("pred:"):
            self.pred(f, loc, v, kind[5:])
        elif kind.startswith("table:"):
            if not isinstance(v, dict):
                return bad("a table")
            self.table(f, loc, v, kind[6:])
        elif kind.startswith("tables:"):
            if not isinstance(v, dict):
                return bad("a table")
            for name, sub in v.items():
                self.table(f, f"{loc}.{name}", sub, kind[7:])
        elif kind.startswith("list_of:"):
            if not isinstance(v, list):
                return bad("a list (an array)")
            sub_place = kind[8:]
            for i, item in enumerate(v):
                if sub_place == "entry" and isinstance(item, str):
                    continue  # an entry is a backend name or a table
                self.table(f, f"{loc}[{i}]", item, sub_place)

    def domains(self, f: str, raw: Any) -> None:
        """[fields]: each domain a non-empty list of values of its field's kind."""
        if not isinstance(raw, dict):
            return  # reported as "must be a table" by the top-level check
        for name, values in raw.items():
            if isinstance(values, dict):  # a declaration: its keys are checked like any table
                self.table(f, f"fields.{name}", values, "field")
                if "values" not in values:
                    continue
                values = values["values"]
            if name not in self.fields:
                hit = closest(name, self.fields)
                self.add(f, f"fields.{name}", "names no field" + (f"; did you mean {hit!r}?" if hit else ""))
                continue
            kind = self.fields.get(name, "any")
            if not isinstance(values, list) or not values:
                continue  # reported by the loader ("must be a non-empty list")
            for i, x in enumerate(values):
                if kind in ("int", "str"):
                    self.scalar(f, f"fields.{name}[{i}]", x, kind)

    def aliases(self, f: str, raw: Any) -> None:
        """[aliases.FIELD]: FIELD must be a field."""
        for name in raw if isinstance(raw, dict) else ():
            if name not in self.fields:
                hit = closest(name, self.fields)
                self.add(f, f"aliases.{name}", "names no field" + (f"; did you mean {hit!r}?" if hit else ""))

    def reason(self, f: str, loc: str, v: Any) -> None:
        if not isinstance(v, str) or not v:
            self.add(f, loc, f"must be a non-empty string, got {_kind(v)} {_short(v)}")
            return
        try:
            parts = list(string.Formatter().parse(v))
        except ValueError as e:
            self.add(f, loc, f"{_short(v)}: {e} (write a literal brace as '{{{{' or '}}}}')")
            return
        for _, name, spec, conv in parts:
            if name is None:
                continue
            base = name.partition("|")[0]
            if not (name in SPECIAL or base in self.fields) or spec or conv not in (None, "r", "s"):
                self.add(f, loc, f"placeholder {{{name}}} in {_short(v)} names no field"
                         + (f"; did you mean {{{closest(name, self.fields)}}}?" if closest(name, self.fields) else "")
                         + " (placeholders are plain field names, e.g. {attn_type})")

    def literals(self, f: str, loc: str, v: Any) -> None:
        if not isinstance(v, dict):
            self.add(f, loc, f"must be a table of field = predicate, got {_kind(v)} {_short(v)}")
            return
        for field, p in v.items():
            if field == "any_of":
                if not isinstance(p, list) or not p:
                    self.add(f, f"{loc}.any_of", f"must be a non-empty list of tables, got {_kind(p)} {_short(p)}")
                    continue
                for i, sub in enumerate(p):
                    self.literals(f, f"{loc}.any_of[{i}]", sub)
                continue
            if field == "not":
                self.literals(f, f"{loc}.not", p)
                continue
            if field not in self.fields:
                hit = closest(field, self.fields)
                self.add(f, f"{loc}.{field}", f"unknown field {field!r}" + (f"; did you mean {hit!r}?" if hit else ""))
                continue
            self.pred(f, f"{loc}.{field}", p, field)

    def pred(self, f: str, loc: str, raw: Any, field: str) -> None:
        kind = self.fields.get(field, "any")
        if isinstance(raw, list):
            for i, x in enumerate(raw):
                self.scalar(f, f"{loc}[{i}]", x, kind, allow_prefix=True)
            return
        if not isinstance(raw, dict):
            self.scalar(f, loc, raw, kind, allow_prefix=True)
            return
        known = KEYS["predicate"]
        for k, v in raw.items():
            where = f"{loc}.{k}"
            if k not in known:
                hit = closest(k, known)
                self.add(f, where, f"unknown predicate key {k!r}" + (f"; did you mean {hit!r}?" if hit else "")
                         + f" (accepted: {', '.join(sorted(known))})")
            elif k in ("in", "not_in"):
                if not isinstance(v, list):
                    self.add(f, where, f"must be a list, got {_kind(v)} {_short(v)}")
                else:
                    for i, x in enumerate(v):
                        self.scalar(f, f"{where}[{i}]", x, kind, allow_prefix=True)
            elif k in ("min", "max"):
                if kind not in ("int", "cc", "any"):
                    self.add(f, where, f"{k} compares numbers; {field} is a {kind} field")
                else:
                    self.scalar(f, where, v, kind)
            elif k == "eq":
                self.scalar(f, where, v, kind)
            elif k == "multiple_of":
                vals = v if isinstance(v, list) else [v]
                if kind not in ("int", "any") or not vals or not all(_is_int(x) and 0 < x <= RULE_INT_MAX for x in vals):
                    self.add(f, where, f"must be a positive integer (or a list of them) up to {RULE_INT_MAX} on an "
                                       f"integer field, got {_short(v)}")
            elif k == "major_in":
                if kind not in ("cc", "any") or not isinstance(v, list) or not all(_is_int(x) and 0 < x <= 20 for x in v):
                    self.add(f, where, f"must be a list of compute-capability majors (1-20) on compute_capability, "
                                       f"got {_short(v)}")
            elif k in ("eq_field", "ne_field", "le_field", "multiple_of_field"):
                if not isinstance(v, str):  # (a list or table would not even be a key to look up)
                    self.add(f, where, f"must be a field name, got {_kind(v)} {_short(v)}")
                elif v not in self.fields:
                    hit = closest(v, self.fields)
                    self.add(f, where, f"{k} names no field: {_short(v)}" + (f"; did you mean {hit!r}?" if hit else ""))
            elif k in ("none", "present") and not isinstance(v, bool):
                self.add(f, where, f"must be true or false, got {_kind(v)} {_short(v)}")
        if "present" in raw and set(raw) != {"present"} and (raw["present"] is not True or "none" in raw):
            self.add(f, loc, "'present = false' cannot be combined with other predicate keys")

    def scalar(self, f: str, loc: str, v: Any, kind: str, allow_prefix: bool = False) -> None:
        if kind == "int":
            ok = _is_int(v) and 0 <= v <= RULE_INT_MAX
            want = f"an integer from 0 to {RULE_INT_MAX}"
        elif kind == "bool":
            ok, want = isinstance(v, bool), "true or false"
        elif kind == "str":
            ok, want = isinstance(v, str), "a string"
        elif kind == "cc":
            ok, want = _is_cc(v), "a compute capability like \"9.0\""
        else:
            ok, want = isinstance(v, (str, int, float, bool)), "a single value"
        if not ok:
            self.add(f, loc, f"must be {want}, got {_kind(v)} {_short(v)}")


# Placeholders that are not field names (model.placeholder renders them); `{field|default}` is checked by field.
SPECIAL = ("device_capability", "gpu_name")

_DECL_KIND = {"str": "str", "bool": "bool", "int": "int", "cc": "cc", "enum": "str", "platform": "str", "backend": "str",
              "tristate": "bool"}


def capability_kinds(generic: Iterable[Any]) -> dict[str, str]:
    """Capability key -> kind, from the rule set's [[generic_checks]] (their form says the value's shape)."""
    out: dict[str, str] = {}
    for g in generic:
        if not isinstance(g, dict) or not isinstance(g.get("key"), str):
            continue
        form, field = g.get("form"), g.get("field")
        form = form if isinstance(form, str) else None  # a damaged form (a list) is reported by the loader
        out[g["key"]] = {"predicate": PRED(field) if isinstance(field, str) else LIST, "values": LIST,
                         "multiple_of": INT_LIST, "supports": BOOL, "matches": BOOL, "flag": BOOL}.get(form, SCALAR)
        if g.get("unset_passes"):
            out[g["key"] + "_unset_passes"] = BOOL  # a backend's own answer for an unset field
        if isinstance(g.get("exact_key"), str):
            out[g["exact_key"]] = INT_LIST if form == "multiple_of" else LIST
    return out


def field_kinds(domains: Mapping[str, Iterable[Any]], derived: Mapping[str, Any], extra: Iterable[str],
                declared: Mapping[str, Any] | None = None) -> dict[str, str]:
    """field -> kind, for the Config fields, the declared fields, the derived facts and the extra fields (role)."""
    out: dict[str, str] = {}
    for name in CONFIG_FIELDS:
        out[name] = "int" if name in INT_FIELDS else "bool" if name in BOOL_FIELDS else "str"
    out["compute_capability"] = "cc"
    for name, decl in (declared or {}).items():
        kind = decl.get("kind") if isinstance(decl, dict) else None
        out[name] = _DECL_KIND.get(kind, "any") if isinstance(kind, str) else "any"
    for name, values in domains.items():
        if name in out and name != "compute_capability":
            vals = list(values) if isinstance(values, list) else []
            if vals and all(_is_int(x) for x in vals):
                out[name] = "int"
    for name, d in derived.items():
        for local in ("sums", "quotients", "products"):
            table = d.get(local) if isinstance(d, dict) else None
            for sum_name in table if isinstance(table, dict) else ():
                out[str(sum_name)] = "int"  # a derived fact's local arithmetic on integer fields (e.g. qk_head_dim)
        vals = d.get("values") if isinstance(d, dict) else None
        if isinstance(vals, list) and vals and all(isinstance(x, bool) for x in vals):
            out[name] = "bool"
        elif isinstance(vals, list) and vals and all(_is_int(x) for x in vals):
            out[name] = "int"
        elif isinstance(vals, list) and vals and all(isinstance(x, str) for x in vals):
            out[name] = "str"
        else:
            out[name] = "any"
    for name in extra:
        out[name] = "str"
    return out


def closest(name: Any, options: Iterable[str]) -> str | None:
    """The known key a typo most likely meant."""
    if not isinstance(name, str):
        return None
    hit = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return hit[0] if hit else None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_cc(v: Any) -> bool:
    if _is_int(v):
        return 1 <= v <= 209
    if isinstance(v, float):
        return 1.0 <= v < 21.0
    if isinstance(v, str):
        major, _, minor = v.partition(".")
        return major.isascii() and major.isdigit() and len(major) <= 2 and (
            minor == "" or (minor.isascii() and minor.isdigit() and len(minor) == 1))
    return False


def _kind(v: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(v), type(v).__name__)


def _short(v: Any) -> str:
    try:
        text = repr(v)
    except Exception:  # noqa: BLE001 - a 5,000-digit int
        text = f"<{type(v).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
