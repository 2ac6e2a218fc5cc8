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

    Attributes: field, value, accepted (tuple of accepted values or a description), suggestion, and vllm_text:
    vLLM's own refusal where vLLM refuses the value too (an unknown MLA prefill name, 0.21's removed cuDNN prefill
    switch), the start of the message; None where only attnsolve's checks refuse it.
    """

    def __init__(self, field: str, value: Any, accepted: Sequence[Any] | str, *, suggestion: str | None = None,
                 message: str | None = None, vllm_text: str | None = None):
        self.field = field
        self.value = value
        self.vllm_text = vllm_text
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

    # Set by attnsolve.explain at import (the explanation layer sits above selection; this hook keeps
    # the arrow pointing down): (config, role, available) -> Explanation.
    explainer: Any = None

    def __init__(self, message: str, reasons: Mapping[str, tuple[str, ...]], *, conflict: Mapping[str, Any] | None = None,
                 fixes: Sequence[Any] = (), explanation: Any = None):
        self.reasons = dict(reasons)
        self._conflict = dict(conflict or {})
        self._fixes = tuple(fixes)
        self._explanation = explanation
        self._question: tuple[Any, ...] | None = None  # (config, role, available): explained on first use
        # vLLM's text when its start-up fails first with another error (see Selection.startup_error).
        self.startup_error: str | None = None
        super().__init__(message)

    def defer_explanation(self, config: Any, role: str, available: Any) -> "SelectionError":
        """Explain this failure only when asked (str(), .conflict, .fixes, .explanation)."""
        self._question = (config, role, available)
        return self

    def _explained(self) -> Any:
        if self._question is not None and self._explanation is None and SelectionError.explainer is not None:
            config, role, available = self._question
            self._question = None
            try:
                self._explanation = SelectionError.explainer(config, role=role, available=available)
            except Exception:  # an explanation must never hide the real error
                return None
            self._conflict = dict(self._explanation.conflict)
            self._fixes = tuple(self._explanation.fixes)
        return self._explanation

    @property
    def explanation(self) -> Any:
        return self._explained()

    @property
    def conflict(self) -> dict[str, Any]:
        self._explained()
        return self._conflict

    @property
    def fixes(self) -> tuple[Any, ...]:
        self._explained()
        return self._fixes

    def __str__(self) -> str:
        """vLLM's text, then one line with the conflict and the smallest fix (computed on first use)."""
        text = super().__str__()
        exp = self._explained()
        if exp is None:
            return text
        hint = ""
        if exp.fixes:
            hint = "Smallest fix: " + str(exp.fixes[0]) + "."
        elif exp.hardware_only:
            hint = "No setting fixes this: the conflict is made of hardware facts only."
        if exp.conflict:
            hint = "Conflict: " + ", ".join(f"{k}={v}" for k, v in exp.conflict.items()) + ". " + hint
        return f"{text}\n{hint.strip()}" if hint else text


class NoValidBackendError(SelectionError):
    """Automatic selection found no valid backend (or the platform's decision tree refused the config)."""


class InvalidBackendError(SelectionError):
    """The requested backend does not fit the configuration; vLLM never falls back in this case."""

    def __init__(self, message: str, backend: str, reasons: Mapping[str, tuple[str, ...]], **kw: Any):
        self.backend = backend
        super().__init__(message, reasons, **kw)
