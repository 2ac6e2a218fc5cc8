"""Which release answers: the engine (compiled rules, CSP, caches) of the vLLM release a Config asks about."""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..engine import Engine, engine_for
from ..solver.compiled import CompiledRules


def engine_of(config: Config | None = None) -> Engine:
    """The engine of the release `config` asks about (the default release without a config)."""
    return engine_for(None if config is None else config.vllm)


def compiled_rules(config: Config | None = None) -> CompiledRules:
    return engine_of(config).compiled


def csp_solver(config: Config | None = None) -> Any:
    """The CSP of the release `config` asks about (python-constraint2 is not on the fast path)."""
    return engine_of(config).csp
