"""vLLM's per-KV-cache-group backend requests (`--attention-config.backend_per_kind`, vLLM 0.26 and later).

Why a module of its own: an entry replaces the request of the layers of one kind only (`get_attn_backend` looks the
layer's kind up, `get_attn_spec_kind`), while the start-up hooks and model code keep reading the global
`--attention-backend`. attnsolve answers for one layer, so the map is resolved here, at the edge, into that layer's
request: the Config that selection sees. Which kinds exist and how a layer's kind is derived are the release's rules
(the derived fact `attn_spec_kind`: its cases and its values); a release without it has no such setting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from .config import Config
from .errors import ConfigError, closest

KIND_FACT = "attn_spec_kind"  # the derived fact that names the layer's kind (rules: checks.toml of 0.26 on)
FIELD = "backend_per_kind"


class HookReadsRequest(ConfigError):
    """A backend_per_kind entry that a start-up or model hook would see differently from the layer (the hook reads the
    global --attention-backend): attnsolve holds one request per question, so it refuses rather than guess."""


@dataclass(frozen=True)
class PerKind:
    """The layer's request after backend_per_kind: `config` (its `backend` is what the layer asks for), the layer's
    kind, the entry that applied (None: none did) and a line saying so (for the explanation's notes)."""

    config: Config
    kind: str | None
    entry: str | None
    note: str


def parse_map(value: Any) -> dict[str, str]:
    """A backend_per_kind value as users write it: a mapping, a JSON object (vLLM's --attention-config syntax) or
    `kind=BACKEND[,kind=BACKEND]`. ConfigError (field backend_per_kind) for anything else."""
    expected = 'a JSON object such as {"sliding_window": "TRITON_ATTN"}, or kind=BACKEND[,kind=BACKEND]'
    if isinstance(value, Mapping):
        items = dict(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                items = json.loads(text)
            except ValueError as e:
                raise ConfigError(FIELD, value, expected,
                                  message=f"Invalid backend_per_kind: not a JSON object ({e}). Expected {expected}.") from None
            if not isinstance(items, dict):
                raise ConfigError(FIELD, value, expected)
        else:
            items = {}
            for part in filter(None, (p.strip() for p in text.split(","))):
                kind, eq, name = part.partition("=")
                if not eq or not kind.strip() or not name.strip():
                    raise ConfigError(FIELD, value, expected)
                items[kind.strip()] = name.strip()
    else:
        raise ConfigError(FIELD, value, expected)
    for kind, name in items.items():
        if not isinstance(kind, str) or not isinstance(name, str) or not name:
            raise ConfigError(FIELD, value, expected)
    return items


def kinds_of(config: Config) -> tuple[str, ...]:
    """The KV-cache group kinds the release's backend_per_kind takes (empty: the release has no such setting)."""
    from .selection import compiled_rules
    d = compiled_rules(config).rules.derived.get(KIND_FACT)
    return () if d is None else tuple(str(v) for v in d.values)


def layer_kind(config: Config, role: str = "decode") -> str | None:
    """The layer's KV-cache group kind as vLLM derives it (None where the release has no such notion)."""
    from .selection import compiled_rules
    from .solver.facts import base_facts
    comp = compiled_rules(config)
    if KIND_FACT not in comp.rules.derived:
        return None
    facts = base_facts(config, role)
    comp.complete(facts)
    got = facts.get(KIND_FACT)
    return None if got is None else str(got)


def apply_backend_per_kind(config: Config, backend_per_kind: Any) -> PerKind:
    """`config` with the layer's request as vLLM's `get_attn_backend` makes it: the backend_per_kind entry for the
    layer's kind replaces `config.backend` (the global --attention-backend); kinds without an entry keep it. Layers
    whose model code picks the backend itself (DeepSeek-V4, MiMo-V2) never ask `get_attn_backend`, so no entry
    applies to them. ConfigError (vLLM's wording first) for a release without the setting, an unknown kind or an
    unknown backend name. (An MLA layer's prefill request is its own setting, mla_prefill_backend: the entry is the
    request of the layer's decode selection, whichever role is asked.)"""
    items = parse_map(backend_per_kind)
    kinds = kinds_of(config)
    if not kinds:
        raise ConfigError(FIELD, backend_per_kind, "vLLM 0.26 or newer", message=(
            f"vLLM {config.vllm} has no backend_per_kind: AttentionConfig took per-KV-cache-group backends in vLLM "
            "0.26 (use --attention-backend, or ask about a newer release with --vllm)."))
    for kind in items:
        if kind not in kinds:
            text = (f"Unknown KV cache group kind '{kind}' in backend_per_kind. Valid kinds are: "
                    f"{', '.join(sorted(kinds))}.")
            hint = closest(kind, kinds)
            raise ConfigError(FIELD, kind, tuple(sorted(kinds)), suggestion=hint, vllm_text=text,
                              message=text + (f" Did you mean {hint!r}?" if hint else ""))
    for kind, name in items.items():  # every entry is parsed as vLLM parses it, used or not
        try:
            config.replace(backend=name)
        except ConfigError as e:
            if e.field != "backend":
                raise
            raise ConfigError(FIELD, name, e.accepted, suggestion=e.suggestion, vllm_text=e.vllm_text,
                              message=f"backend_per_kind[{kind!r}]: {e}") from None
    kind = layer_kind(config)
    entry = items.get(kind) if kind is not None else None
    asked = config.backend
    if entry is None:
        said = f"--attention-backend {asked}" if asked else "automatic selection"
        return PerKind(config, kind, None, f"backend_per_kind has no entry for this layer's kind ({kind}): the "
                                           f"layer keeps {said}")
    if _model_picks(config):
        return PerKind(config, kind, None, f"backend_per_kind[{kind!r}] = {entry} does not apply: the model's own "
                                           "code picks this layer's backend (from --attention-backend), without "
                                           "asking vLLM's selector")
    moved = config.replace(backend=entry)
    hook = _hook_reads(config, moved)
    if hook is not None:
        raise HookReadsRequest(FIELD, entry, "an entry no start-up or model hook reads", message=(
            f"backend_per_kind[{kind!r}] = {moved.backend} is not modelled here: {hook} reads the global "
            f"--attention-backend ({asked or 'unset'}), while the layer asks for the entry, and attnsolve answers with "
            "one request for both. Ask with --attention-backend set to the entry (the hook then sees it too) or "
            "without the entry."))
    was = f" (it replaces --attention-backend {asked} for these layers)" if asked and asked != moved.backend else ""
    return PerKind(moved, kind, moved.backend, f"backend_per_kind[{kind!r}] = {moved.backend}: this layer's request, as "
                                       f"vLLM's get_attn_backend looks the layer's kind up{was}")


def _model_picks(config: Config) -> bool:
    """Whether model code picks this layer's backend itself (a model route or model_backend step), which vLLM's
    per-kind lookup in get_attn_backend never sees."""
    from .errors import SelectionError
    from .selection import compiled_rules
    from .selection.steps import before_selection
    try:
        return before_selection(compiled_rules(config), config, "decode").model is not None
    except (SelectionError, ConfigError):
        return False


def _hook_reads(config: Config, moved: Config) -> str | None:
    """A step before selection (a start-up or model-config hook: a rewrite, a dropped request) or a derived fact that
    reads the request and sees the global one differently from the entry: vLLM's hooks read attention_config.backend,
    the layer the entry, and a Config holds one request. Its description, or None where none does."""
    from .selection import compiled_rules
    from .selection.steps import platform_settings
    from .solver.facts import base_facts
    comp = compiled_rules(config)
    facts = []
    for c in (config, moved):
        f = base_facts(c, "decode")
        comp.complete(f)
        facts.append(f)
    for name, d in comp.rules.derived.items():
        if "backend" in d.inputs and facts[0].get(name) != facts[1].get(name):
            return f"the start-up fact {name}"
    ps = platform_settings(comp.rules, config.platform)
    if ps is None:
        return None
    steps = [("a config rewrite", rw.when) for rw in ps.rewrites if rw.stage == "before_selection"]
    steps += [("a hook that drops the request", when) for _text, when, only, _level in ps.request_fallbacks if not only]
    for what, when in steps:
        if any(lit.field == "backend" for lit in when):
            if any(all(lit(f) for lit in when) for f in facts):
                return what
    return None
