"""[[platforms.X.lists]] and the platform's settings, as PriorityList.

Why a module of its own: a priority list is vLLM's selection order on one platform; its entries, and
the start-up, request, rewrite and MLA-prefill settings shared by the platform's lists, are parsed
here. SKIP_REASON is the reason of an entry's `when` guard, which the selection reads back.
"""

from __future__ import annotations

from typing import Any

from . import schema
from .conditions import _checks, _literals, _lower_check, _messages, _when_dnf
from .model import DerivedCase, Entry, Literal, MlaPrefill, ModelRoute, Note, PriorityList, Rewrite, RouteKV
from .toml_values import _bool, _list, _str_list, _text


# The reason of an entry's `when` guard: a candidate it refuses is skipped silently (not reported as rejected).
SKIP_REASON = "(entry skipped: its condition does not hold)"


def _entry(raw: Any, known: set[str]) -> Entry:
    if isinstance(raw, str):
        return Entry(raw)
    if not isinstance(raw, dict) or "backend" not in raw:
        raise ValueError(f"an entry is a backend name or a table with 'backend' (and 'checks'), got {raw!r}")
    extra = set(raw) - schema.keys("entry")
    if extra:
        raise ValueError(f"entry {raw.get('backend')}: unknown key(s) {sorted(extra)}")
    validate = raw.get("validate")
    guards = _checks(raw.get("checks", []), known, kind="guard")
    if "when" in raw:  # the entry is considered only when `when` holds: a guard whose failure skips it silently
        guards = (*_lower_check(SKIP_REASON, {}, raw["when"], known, "skip", 10_000, False), *guards)
    return Entry(raw["backend"], guards,
                 None if validate is None else _bool(validate),
                 tuple(_when_dnf(raw["when"], known)) if "when" in raw else ())


def _priority_list(plat: str, raw: dict, settings: dict, known: set[str]) -> PriorityList:
    allowed = schema.keys("list")
    extra = set(raw) - allowed
    if extra:
        raise ValueError(f"unknown key(s) {sorted(extra)}; accepted: {', '.join(sorted(allowed))}")
    validate = settings.get("validate", True)
    manual = raw.get("manual", settings.get("manual", "table" if "manual_accept" in raw or "manual_other" in raw
                                            else "validate"))
    if "manual_accept" in raw or "manual_other" in raw:
        manual = "table"
    if manual not in ("validate", "table", "ignore", "list"):
        raise ValueError(f"manual must be 'validate', 'table', 'ignore' or 'list', got {manual!r}")
    no_prefill = _bool(raw.get("no_prefill", False))
    role = raw.get("when", {}).get("role")
    if no_prefill and role not in ("mla_prefill", ["mla_prefill"]):
        raise ValueError("a no_prefill list answers an MLA prefill question: its when needs role = 'mla_prefill'")
    if no_prefill and (raw.get("entries") or raw.get("error")):
        raise ValueError("a no_prefill list answers NO_PREFILL: it takes no entries and no error")
    if no_prefill and "manual" in raw:
        raise ValueError("a no_prefill list reads no request: it takes no manual")
    if no_prefill:  # the layer reads no request for a prefill path it does not have: none is validated or warned about
        manual = "ignore"
    if not raw.get("entries") and not raw.get("error") and not no_prefill:
        raise ValueError("a list needs entries (or an error: a branch that raises vLLM's text; or no_prefill = true: "
                         "an MLA prefill branch that gives the layer no prefill backend)")
    return PriorityList(
        platform=plat, name=str(raw.get("name", "")), when=_literals(raw.get("when", {}), known),
        entries=tuple(_entry(e, known) for e in _list(raw.get("entries", []))), validate=bool(validate),
        manual=manual, manual_accept=tuple(_entry(e, known) for e in raw.get("manual_accept", [])),
        manual_other=str(raw.get("manual_other", "")),
        ignore_warning="" if no_prefill else str(raw.get("ignore_warning", settings.get("ignore_warning", ""))),
        warn_unvalidated=bool(settings.get("warn_unvalidated", False)),
        start_block_size=_start_block_size(settings.get("start_block_size", []), known),
        drops=_str_list(settings.get("drops", [])),
        request_platform_check=_bool(settings.get("request_platform_check", True)),
        no_valid_message=_text(settings.get("no_valid_message", ""), "no_valid_message"),
        invalid_message=_text(settings.get("invalid_message", ""), "invalid_message"),
        start_backend=_start_backend(settings.get("start_backend", []), known),
        startup_failures=_messages(settings.get("startup_failures", []), known, "startup_failures"),
        block_size_failure=_text(settings.get("block_size_failure", ""), "block_size_failure"),
        block_size_failure_when=_literals(settings.get("block_size_failure_when", {}), known),
        precluded_warning=_text(settings.get("precluded_warning", ""), "precluded_warning"),
        request_fallbacks=tuple((str(r.get("warning", "")), alt,
                                 tuple(tuple(_str_list(x)) for x in _list(r.get("only_reasons", []))),
                                 str(r.get("level", "warning")))
                                for r in _list(settings.get("request_fallbacks", []))
                                for alt in _when_dnf(r.get("when", {}), known)),
        request_errors=_messages(settings.get("request_errors", []), known, "request_errors"),
        rewrites=tuple(Rewrite(alt, _sets(r.get("set", {}), known), _str_list(r.get("unset", [])),
                               r.get("stage", "after_selection"), str(r.get("log", "")))
                       for r in _list(settings.get("rewrites", [])) for alt in _when_dnf(r.get("when", {}), known)),
        notes=tuple(Note(alt, _text(n.get("log", ""), "notes.log"), n.get("level", "info"))
                    for n in _list(settings.get("notes", [])) for alt in _when_dnf(n.get("when", {}), known)),
        model_backend=_model_backend(settings.get("model_backend", []), known),
        model_routes=tuple(ModelRoute(str(r.get("name", "")), alt, str(r.get("result", "")), str(r.get("variant", "")),
                                      str(r.get("error", "")))
                           for r in _list(settings.get("model_routes", [])) for alt in _when_dnf(r.get("when", {}), known)),
        model_route_kv=tuple(RouteKV(alt, str(r.get("error", "")), _sets(r.get("set", {}), known), str(r.get("log", "")))
                             for r in _list(settings.get("model_route_kv", []))
                             for alt in _when_dnf(r.get("when", {}), known)),
        mla_prefill=_mla_prefill(settings.get("mla_prefill"), known),
        error=str(raw.get("error", "")), no_prefill=no_prefill, log=str(raw.get("log", "")), warning=str(raw.get("warning", "")),
        fallback_log=str(raw.get("fallback_log", "")), list_invalid_message=str(raw.get("invalid_message", "")),
        ignore_silent=_str_list(raw.get("ignore_silent", [])),
        hardware_field=str(settings.get("hardware_field", "")),
        compute_capability_from=_cc_source(settings, known),
        kv_cache_dtype_hint=str(settings.get("kv_cache_dtype_hint", "")),
        manual_log=str(settings.get("manual_log", "")), selected_log=str(settings.get("selected_log", "")),
        override_log=str(settings.get("override_log", "")),
        mla_prefill_no_valid_message=str(settings.get("mla_prefill_no_valid_message", "")),
        startup_warnings=tuple((str(w.get("message", "")), alt, str(w.get("level", "warning")))
                               for w in _list(settings.get("startup_warnings", []))
                               for alt in _when_dnf(w.get("when", {}), known)),
        ignore_level=str(settings.get("ignore_level", "warning")),
    )


def _cc_source(settings: dict, known: set[str]) -> str:
    src = settings.get("compute_capability_from", "")
    if src and src not in known:
        raise ValueError(f"compute_capability_from names no field or derived fact: {src!r}")
    return str(src)


_LIST_SETTINGS = ("request_fallbacks", "request_errors", "rewrites", "notes", "model_routes", "model_route_kv")


def _conds(raw: Any, known: set[str], key: str, allow_empty: bool = False) -> tuple[tuple[str, tuple[Literal, ...]], ...]:
    """[{when, <key>}] -> ((text, alternative), ...), one entry per alternative of `when`."""
    out = []
    for i, w in enumerate(_list(raw)):
        if not isinstance(w, dict) or not (allow_empty or isinstance(w.get(key), str)):
            raise ValueError(f"entry #{i + 1} needs '{key}' (and optional 'when')")
        out += [(str(w.get(key, "")), alt) for alt in _when_dnf(w.get("when", {}), known)]
    return tuple(out)


def _sets(raw: Any, known: set[str]) -> tuple[tuple[str, Any], ...]:
    if not isinstance(raw, dict):
        raise ValueError(f"set must be a table of field = value, got {raw!r}")
    bad = [k for k in raw if k not in known]
    if bad:
        raise ValueError(f"set names no field: {bad[0]!r}")
    return tuple(raw.items())


def _model_backend(raw: Any, known: set[str]) -> tuple[DerivedCase, ...]:
    cases = []
    for i, c in enumerate(_list(raw)):
        if (not isinstance(c, dict) or set(c) - {"when", "value", "warning"} or not isinstance(c.get("value"), str)
                or not isinstance(c.get("warning", ""), str)):
            raise ValueError(f"model_backend #{i + 1} needs a backend name 'value' (\"backend\": the request as is), "
                             "optional 'when' and an optional 'warning' text (the line the model code logs)")
        cases += [DerivedCase(alt, c["value"], c.get("warning") or None) for alt in _when_dnf(c.get("when", {}), known)]
    return tuple(cases)


def _mla_prefill(raw: Any, known: set[str]) -> MlaPrefill | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("mla_prefill must be a table")
    field = str(raw.get("request_field", ""))
    if field and field not in known:
        raise ValueError(f"mla_prefill.request_field names no field: {field!r}")
    return MlaPrefill(field, str(raw.get("no_valid_message", "")), str(raw.get("invalid_message", "")),
                      str(raw.get("chosen_log", "")), _conds(raw.get("skips", []), known, "warning"),
                      _conds(raw.get("fallbacks", []), known, "warning"))


def _start_backend(raw: Any, known: set[str]) -> tuple[DerivedCase, ...]:
    cases = []
    for i, c in enumerate(_list(raw)):
        if not isinstance(c, dict) or set(c) - {"when", "value"} or not isinstance(c.get("value"), str):
            raise ValueError(f"start_backend #{i + 1} needs a backend name 'value' (and optional 'when')")
        cases.append(DerivedCase(_literals(c.get("when", {}), known), c["value"]))
    return tuple(cases)


def _start_block_size(raw: Any, known: set[str]) -> tuple[DerivedCase, ...]:
    cases = []
    for i, c in enumerate(_list(raw)):
        v = c.get("value") if isinstance(c, dict) else None
        if (not isinstance(c, dict) or set(c) - schema.keys("start_block_size")
                or not ((isinstance(v, int) and not isinstance(v, bool)) or v in ("block_size", "preferred"))):
            raise ValueError(f"start_block_size #{i + 1} needs an integer 'value', \"block_size\" (keep the "
                             "user's) or \"preferred\" (the backend's preferred size) and optional 'when'")
        cases.append(DerivedCase(_literals(c.get("when", {}), known), c["value"]))
    if cases and cases[-1].when:
        raise ValueError("start_block_size: the last case must have no 'when' (the default)")
    return tuple(cases)
