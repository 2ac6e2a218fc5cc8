"""Answers the edit-folder fact tests compare between neighbouring releases (tests/test_rules_v0NN.py).

One shape for every release's facts, so a test states what vLLM X has and its neighbour lacks and nothing
else: the selection as a tuple, or vLLM's first error line."""

from __future__ import annotations

from typing import Any

from attnsolve import Config, ConfigError, explain, solve
from attnsolve.errors import SelectionError


def answer(role: str | None = None, **kw: Any) -> tuple[Any, ...]:
    """(backend, variant, start-up block size, warnings, start-up error, logs) or ("ERR", vLLM's first line);
    role "mla_prefill": the MLA layer's prefill question."""
    try:
        s = solve(Config(**kw), role=role) if role else solve(Config(**kw))
    except SelectionError as e:
        return ("ERR", str(e).splitlines()[0])
    return (s.backend, s.variant, s.preferred_block_size, s.warnings, s.startup_error, s.logs)


def rejected_reasons(backend: str, **kw: Any) -> tuple[str, ...]:
    """The reasons of `backend`, one of the candidates the selection rejected."""
    return next(r.reasons for r in solve(Config(**kw)).rejected if r.backend == backend)


def candidate_reasons(backend: str, **kw: Any) -> tuple[str, ...]:
    """Every reason vLLM's validate_configuration gives `backend`, chosen or not (explain judges each candidate)."""
    return next(v.reasons for v in explain(Config(**kw)).candidates if v.backend == backend)


def only_newer_accepts(field: str, value: Any, older: str, newer: str, **kw: Any) -> None:
    """`field=value` is refused by the older release (a ConfigError naming the field: the value did not exist
    there) and accepted by the newer one, which added it."""
    try:
        Config(vllm=older, **kw, **{field: value})
    except ConfigError as e:
        assert e.field == field, (field, e.field)
    else:
        raise AssertionError(f"vLLM {older} accepted {field}={value!r}")
    Config(vllm=newer, **kw, **{field: value})
