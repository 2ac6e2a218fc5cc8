"""Value parsing for Config: one field value in any accepted spelling -> its canonical form (ConfigError
otherwise, naming the field, the value, the accepted values and the closest match)."""

from __future__ import annotations

import numbers
import weakref
from typing import Any, Mapping

from ..cc import ComputeCapability
from ..errors import ConfigError, closest
from ..rules import default_version, generation, override, parse_version, release_for, versions
from ..rules.labels import release_key
from ..rules.sets import per_rules_limit


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

_MAX_INT = 1 << 20
_MAX_INT_TEXT = 32  # characters: longer "numbers" are refused before int() sees them (no 4,300-digit parse)


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
        try:
            return _choice(name, value, tuple(rules.domains[name]), rules.aliases.get(name))
        except ConfigError as e:
            if not decl.unknown_message:
                raise
            # vLLM's wording first (its text lists the accepted values), then the field, the value and the closest one
            vllm_text = decl.unknown_message.format(value=value, VALUE=str(value).strip().upper(),
                                                    values=", ".join(map(str, e.accepted)))
            hint = f"; did you mean {e.suggestion!r}?" if e.suggestion else ""
            raise ConfigError(name, value, e.accepted, suggestion=e.suggestion,
                              message=f"{vllm_text} (field {name}, value {value!r}{hint})", vllm_text=vllm_text) from None
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


_VLLM_MEMO: dict[str, tuple[int, str]] = {}


def parse_vllm(value: Any) -> str:
    """A vLLM release spelling -> the label of a packaged rule set ("0.33"); ConfigError otherwise.
    Memoised per spelling while the active rules stay the same (generation)."""
    if value is None:
        return default_version()
    if value.__class__ is str:
        hit = _VLLM_MEMO.get(value)
        if hit is not None and hit[0] == generation():
            return hit[1]
        label = _parse_vllm(value)
        if len(_VLLM_MEMO) < 256:
            _VLLM_MEMO[value] = (generation(), label)
        return label
    return _parse_vllm(value)


def _parse_vllm(value: Any) -> str:
    active = override()
    label = parse_version(value) if isinstance(value, str) else None
    known = versions()
    if active is not None and (label is None or label == active.vllm or label not in known):
        if label is not None or value == "custom":
            return label or "custom"
    packaged = release_for(label) if label is not None else None
    if packaged is None:
        shown = ", ".join(known)
        hit = _nearest_release(label, known) if label else closest(str(value), known) if isinstance(value, str) else None
        raise ConfigError("vllm", value, known, suggestion=hit, message=(
            f"Unsupported vLLM version: {value!r}. attnsolve answers for vLLM {shown} "
            "(spelled like 0.33, 0.33.0 or v0.33; a patch release such as 0.20.2 is answered by its minor's rule "
            "set unless it has its own)." + (f" Did you mean {hit!r}?" if hit else "")))
    return packaged


def _nearest_release(label: str, known: tuple[str, ...]) -> str | None:
    """The packaged release nearest to a well-spelled one that is not packaged (0.28 -> 0.29, the newer on a
    tie): the rule set whose semantics are likeliest to match. Spelling similarity suggested 0.32 for 0.28."""
    def key(v: str) -> tuple[int, int]:
        major, minor, _ = release_key(v)
        return major, minor
    want = key(label)
    ranked = sorted((k for k in known if k != "custom" and parse_version(k)),
                    key=lambda k: (abs((key(k)[0] - want[0]) * 1000 + key(k)[1] - want[1]), -key(k)[1], release_key(k)))
    return ranked[0] if ranked else None


_CANONICAL: dict[int, tuple[Any, dict[str, frozenset[Any]]]] = {}


def canonical_map(rules: Any) -> dict[str, frozenset[Any]]:
    """Field -> the exact (already canonical) spellings of its enum values: accepted without parsing."""
    hit = _CANONICAL.get(id(rules))
    if hit is None or hit[0] is not rules:  # the rules object itself is kept: an id is reused after GC
        if len(_CANONICAL) > per_rules_limit():
            _CANONICAL.clear()
        hit = _CANONICAL[id(rules)] = (rules, {name: frozenset(v for v in vals if v.__class__ is str)
                                               for name, vals in rules.domains.items()})
    return hit[1]


def _is_canonical(value: Any, rules: Any, name: str) -> bool:
    return value.__class__ is str and value in canonical_map(rules).get(name, ())


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
    names_ok = requestable_backends(rules)
    if upper not in names_ok:
        names = sorted(names_ok)
        raise ConfigError("backend", value, names, suggestion=closest(upper, names), message=(
            f"Unknown attention backend: '{upper}'. Valid options are: {', '.join(names)}."
            + (f" Did you mean {closest(upper, names)!r}?" if closest(upper, names) else "")))
    return upper


_REQUESTABLE: "weakref.WeakKeyDictionary[Any, dict[Any, frozenset[str]]]" = weakref.WeakKeyDictionary()


def requestable_backends(rules: Any, platform: Any = None) -> frozenset[str]:
    """The names a release accepts as a requested backend: its backends (the MLA prefill kernels too, asked
    for with role="mla_prefill"; not a class another name is requested as, e.g. XPU's FLASH_ATTN_MLA_XPU, nor
    one only model code builds, e.g. CPU_V4_MLA_SPARSE)
    and the registry names vLLM fails before validating (`request_errors`: NO_ATTENTION, TORCH_SDPA, CUSTOM
    in 0.33), those of `platform` only when one is given."""
    per = _REQUESTABLE.get(rules)
    if per is None:
        per = _REQUESTABLE[rules] = {}
    key = platform if isinstance(platform, str) else None
    hit = per.get(key)
    if hit is None:
        names = {n for n, b in rules.backends.items() if not b.requested_as and not b.model_built}
        # a platform that validates a request by the backend's own checks knows only its own request_errors
        # names beyond the backends; one that ignores or tables requests answers any name
        validates = key is not None and any(pl.manual == "validate" for pl in rules.lists if pl.platform == key)
        for pl in rules.lists:
            if not validates or pl.platform == key:
                for _, when in pl.request_errors:
                    names.update(lit.pred.eq for lit in when
                                 if lit.field == "backend" and isinstance(lit.pred.eq, str) and not lit.pred.negate)
        hit = per[key] = frozenset(names)
    return hit


def cc_int(cc: tuple[int, int] | None) -> int | None:
    return None if cc is None else cc[0] * 10 + cc[1]
