"""Accepted differences (known_differences.toml): each with its cause, matched by signature."""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .compare import CATEGORIES
from .versions import version_key

DATA = Path(__file__).with_name("known_differences.toml")


@dataclass(frozen=True)
class Known:
    """One accepted difference: its categories, a regex over the class signature, and why."""

    id: str
    categories: tuple[str, ...]
    pattern: str
    cause: str
    versions: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    modes: tuple[str, ...] = ()
    # the backend attnsolve selected (a difference that only a chosen backend explains: a log line of a call vLLM
    # makes after selection, once that backend is built)
    selected: tuple[str, ...] = ()
    # a regex attnsolve's error text must match (a difference only that error explains: vLLM's text from code the
    # harness does not run, such as an attention layer's own refusal before it selects)
    attnsolve_error: str = ""

    def matches(self, category: str, signature: str, version: str, platform: str, mode: str,
                selected: str | None = None, attnsolve_error: str | None = None) -> bool:
        return (category in self.categories and re.search(self.pattern, signature) is not None
                and (not self.versions or version_key(version) in self.versions)
                and (not self.platforms or platform in self.platforms)
                and (not self.modes or mode in self.modes)
                and (not self.selected or selected in self.selected)
                and (not self.attnsolve_error or re.search(self.attnsolve_error, attnsolve_error or "") is not None))


def load_known(path: Path = DATA) -> tuple[Known, ...]:
    """The accepted differences; ValueError naming the entry for a malformed one."""
    with path.open("rb") as f:
        raw = tomllib.load(f).get("difference", [])
    out = []
    for i, e in enumerate(raw):
        missing = [k for k in ("id", "category", "match", "cause") if not e.get(k)]
        if missing:
            raise ValueError(f"{path.name}: difference #{i + 1} lacks {', '.join(missing)}")
        re.compile(e["match"])
        re.compile(e.get("attnsolve_error", ""))
        cats = (e["category"],) if isinstance(e["category"], str) else tuple(e["category"])
        unknown = [c for c in cats if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"{path.name}: difference {e['id']!r}: unknown category {unknown[0]!r}; "
                             f"expected {', '.join(CATEGORIES)}")
        out.append(Known(e["id"], cats, e["match"], e["cause"], tuple(e.get("versions", ())),
                         tuple(e.get("platforms", ())), tuple(e.get("modes", ())), tuple(e.get("selected", ())),
                         str(e.get("attnsolve_error", ""))))
    ids = [k.id for k in out]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{path.name}: duplicate ids")
    return tuple(out)


def explain(known: tuple[Known, ...], category: str, signature: str, version: str, platform: str,
            mode: str, selected: str | None = None, attnsolve_error: str | None = None) -> Known | None:
    """The first entry that accepts this difference (`selected`: the backend attnsolve selected;
    `attnsolve_error`: attnsolve's error text, if it raised).  Lines one side alone warns are also accepted one by one:
    a configuration that meets two known classes (a deprecated switch's line and a layer's log line, or a line only
    vLLM logs beside one only attnsolve gives) lists both."""
    hit = next((k for k in known if k.matches(category, signature, version, platform, mode, selected,
                                              attnsolve_error)), None)
    if hit is None and category == "warnings":
        m = re.match(r"^warnings vllm-only=(\[.*\]) attnsolve-only=(\[.*\])$", signature, re.S)
        try:
            vonly, aonly = (ast.literal_eval(m.group(1)), ast.literal_eval(m.group(2))) if m else ([], [])
        except (ValueError, SyntaxError):
            vonly, aonly = [], []
        singles = [f"warnings vllm-only={[x]!r} attnsolve-only=[]" for x in vonly] + \
                  [f"warnings vllm-only=[] attnsolve-only={[x]!r}" for x in aonly]
        if len(singles) > 1 and all(isinstance(x, str) for x in (*vonly, *aonly)):
            each = [explain(known, category, one, version, platform, mode, selected, attnsolve_error)
                    for one in singles]
            if all(each):
                hit = each[0]
    return hit
