"""The error a malformed rule set raises, and the collector that fills it.

Why a module of its own: loading never stops at the first problem; every step adds (file, location,
message) to one collector and the loader raises them all at once, so a rules author fixes a folder in
one pass.
"""

from __future__ import annotations


class RulesError(ValueError):
    """The rules are malformed; `.problems` lists every (file, location, message) found."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = tuple(problems)
        lines = [f"{len(problems)} problem(s) in the attention rules:"]
        lines += [f"  {f}: {loc}: {msg}" for f, loc, msg in problems]
        super().__init__("\n".join(lines))


class _Collector:
    def __init__(self) -> None:
        self.problems: list[tuple[str, str, str]] = []

    def add(self, file: str, loc: str, msg: str) -> None:
        self.problems.append((file, loc, msg))
