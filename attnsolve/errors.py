"""The three ways a selection question can fail, with the evidence as data.

Messages keep vLLM's wording first (users grep for it); attributes carry the structure
(field, value, accepted values; backend -> reasons; conflict and fixes) so callers and the
CLI never parse text.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping, Sequence


def safe_repr(value: Any, limit: int = 200) -> str:
    """repr() that never raises (a 5,000-digit int, a broken __repr__) and stays one short line."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - an error message must never fail to build
        text = f"<{type(value).__name__} object>"
        if isinstance(value, int):
            text = f"<int of about {int(value.bit_length() * 0.30103) + 1} digits>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def closest(value: Any, options: Iterable[Any]) -> str | None:
    """The accepted value a typo most likely meant, or None."""
    opts = [str(o) for o in options]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 10**9:
        value = str(value)
    if not isinstance(value, str) or len(value) > 200:
        return None  # nothing sensible is "close" to a list, an object or a huge number
    text = value
    lowered = {o.lower(): o for o in opts}
    if text.lower() in lowered:
        return lowered[text.lower()]
    squashed = {o.lower().replace("_", "").replace("-", ""): o for o in opts}
    key = text.lower().replace("_", "").replace("-", "")
    if key in squashed:
        return squashed[key]
    hit = difflib.get_close_matches(text.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[hit[0]] if hit else None


class ConfigError(ValueError):
    """A configuration field is unknown, of the wrong type, outside its domain, or inconsistent.

    Attributes: field, value, accepted (tuple of accepted values or a description), suggestion.
    """

    def __init__(self, field: str, value: Any, accepted: Sequence[Any] | str, *, suggestion: str | None = None,
                 message: str | None = None):
        self.field = field
        self.value = value
        self.accepted = accepted if isinstance(accepted, str) else tuple(accepted)
        self.suggestion = suggestion
        if message is None:
            shown = accepted if isinstance(accepted, str) else ", ".join(_show(a) for a in accepted)
            message = f"Invalid {field}: {safe_repr(value)}. Expected {shown}."
            if suggestion is not None:
                message += f" Did you mean {suggestion!r}?"
        super().__init__(message)


def _show(v: Any) -> str:
    if v is None:
        return "None"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class SelectionError(ValueError):
    """Base of the selection failures: `.reasons` maps backend -> tuple of vLLM reason strings.

    `.conflict` (field -> value) and `.fixes` (tuple of Fix) are the explanation's smallest cause
    and smallest changes; `.explanation` is the full Explanation when one was computed.
    """

    def __init__(self, message: str, reasons: Mapping[str, tuple[str, ...]], *, conflict: Mapping[str, Any] | None = None,
                 fixes: Sequence[Any] = (), explanation: Any = None):
        self.reasons = dict(reasons)
        self.conflict = dict(conflict or {})
        self.fixes = tuple(fixes)
        self.explanation = explanation
        # vLLM's text when its start-up fails first with another error (see Selection.startup_error).
        self.startup_error: str | None = None
        super().__init__(message)


class NoValidBackendError(SelectionError):
    """Automatic selection found no valid backend (or the platform's decision tree refused the config)."""


class InvalidBackendError(SelectionError):
    """The requested backend does not fit the configuration; vLLM never falls back in this case."""

    def __init__(self, message: str, backend: str, reasons: Mapping[str, tuple[str, ...]], **kw: Any):
        self.backend = backend
        super().__init__(message, reasons, **kw)
