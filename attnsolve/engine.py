"""One Engine per rule set: the compiled fast path, the CSP and the answer cache of one vLLM release.

Why: several releases must be answerable side by side in one process (`Config(vllm="0.17")` next
to `Config(vllm="0.33")`, `compare_versions`), so nothing that depends on the rules may live in a
module-level cache; it lives here, keyed by the RuleSet it was built from.
"""

from __future__ import annotations

from typing import Any

from .rules import RuleSet, default_version, rules_for
from .rules.sets import per_rules_limit
from .solver.compiled import CompiledRules


class Engine:
    """Everything derived from one RuleSet, built on first use and kept for the set's lifetime."""

    __slots__ = ("rules", "_compiled", "_csp", "cache", "by_class")

    def __init__(self, rules: RuleSet):
        self.rules = rules
        self._compiled: CompiledRules | None = None
        self._csp: Any = None
        self.cache: dict[tuple[Any, ...], Any] = {}  # solve() answers of this release
        # solve() answers by the queries' value classes (CompiledRules.class_key), for answers whose text
        # names no fact: a never-seen head size in a known class is answered without solving again
        self.by_class: dict[tuple[Any, ...], Any] = {}

    @property
    def version(self) -> str:
        return self.rules.vllm or "custom"

    @property
    def compiled(self) -> CompiledRules:
        if self._compiled is None:
            self._compiled = CompiledRules(self.rules)
        return self._compiled

    @property
    def csp(self) -> Any:
        """The CSP (python-constraint2 is imported here, never on the fast path)."""
        if self._csp is None:
            from .solver.csp import CSP
            self._csp = CSP(self.rules)
        return self._csp

    def __repr__(self) -> str:
        return f"Engine(vllm={self.version!r})"


_engines: dict[int, Engine] = {}


def engine_for(version: str | None = None) -> Engine:
    """The engine of a release label ("0.17"; None = the default release), or of the override."""
    rules = rules_for(version or default_version())
    return engine_of_rules(rules)


def engine_of_rules(rules: RuleSet) -> Engine:
    eng = _engines.get(id(rules))
    if eng is None or eng.rules is not rules:
        if len(_engines) > per_rules_limit():  # every packaged release's engine, and a few test mutants
            _engines.clear()
        eng = _engines[id(rules)] = Engine(rules)
    return eng
