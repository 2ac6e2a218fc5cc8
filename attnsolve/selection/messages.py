"""vLLM's message templates from the rules, filled from the facts as vLLM's f-strings print them.

Every rendering ticks `rules.model.RENDERINGS`: solve() keeps an answer for a whole value class only when
producing it put no fact into text.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from ..rules.model import RENDERINGS, placeholder


class FactsWith(Mapping[str, Any]):
    """`facts` with one field set to another value, without copying them (read by conditions)."""

    __slots__ = ("facts", "field", "value")

    def __init__(self, facts: Mapping[str, Any], field: str, value: Any):
        self.facts, self.field, self.value = facts, field, value

    def __getitem__(self, key: str) -> Any:
        return self.value if key == self.field else self.facts[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.value if key == self.field else self.facts.get(key, default)

    def __iter__(self) -> Iterator[str]:
        yield from self.facts
        if self.field not in self.facts:
            yield self.field

    def __len__(self) -> int:
        return len(self.facts) + (self.field not in self.facts)


class _PyShow(dict):
    """Facts as vLLM's f-strings print them: Python's str() (True, None), unknown names kept."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"

    def __getitem__(self, key: str) -> str:
        if "|" in key or key == "device_capability":
            name = key.partition("|")[0]
            if "|" in key and dict.get(self, name) is not None:
                return self[name]
            return placeholder(self, key) or ""
        if key not in self:
            return self.__missing__(key)
        v = dict.__getitem__(self, key)
        if key == "compute_capability" and isinstance(v, int) and not isinstance(v, bool):
            return f"{v // 10}.{v % 10}"
        return str(v)


def render_message(template: str, facts: Mapping[str, Any], **extra: Any) -> str:
    """A vLLM message template from the rules, filled from the facts (and `extra`)."""
    if "{" not in template:
        return template
    next(RENDERINGS)
    if type(facts) is FactsWith:  # one copy of the facts, the field set on it
        shown = _PyShow(facts.facts)
        shown[facts.field] = facts.value
    else:
        shown = _PyShow(facts)
    if extra:
        shown.update(extra)
    return template.format_map(shown)
