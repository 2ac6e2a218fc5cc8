"""Tally the comparisons: agreement per category and per platform process, classes, files."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .compare import CATEGORIES, Check
from .configs import Item
from .shrink import Klass, shown


def where(item: Item) -> str:
    """The report's platform column: cuda, cpu or rocm:<arch>."""
    return f"rocm:{item.cfg.get('rocm_arch') or 'gfx942'}" if item.platform == "rocm" else item.platform


@dataclass
class Tally:
    """compared / agreeing counts per (scope, category); scope is 'all', a mode or a platform."""

    compared: Counter = field(default_factory=Counter)
    agree: Counter = field(default_factory=Counter)
    configs: Counter = field(default_factory=Counter)
    configs_agree: Counter = field(default_factory=Counter)

    def add(self, item: Item, checks: Iterable[Check], known_ok: set[str]) -> None:
        scopes = ("all", f"mode:{item.mode}", f"at:{where(item)}", f"cat:{item.category}")
        all_ok = True
        for c in checks:
            ok = c.agree or c.category in known_ok
            all_ok &= ok
            for s in scopes:
                self.compared[(s, c.category)] += 1
                self.agree[(s, c.category)] += c.agree
        for s in scopes:
            self.configs[s] += 1
            self.configs_agree[s] += all_ok

    def line(self, scope: str) -> str:
        n = self.configs[scope]
        parts = [f"configs {self.configs_agree[scope]}/{n} all-agree-or-known"]
        for cat in CATEGORIES:
            m = self.compared[(scope, cat)]
            if m:
                a = self.agree[(scope, cat)]
                parts.append(f"{cat} {a}/{m} ({100 * a / m:.2f}%)")
        return "  ".join(parts)

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (scope, cat), m in self.compared.items():
            out.setdefault(scope, {})[cat] = {"compared": m, "agree": self.agree[(scope, cat)]}
        for scope, n in self.configs.items():
            out.setdefault(scope, {})["configs"] = {"compared": n, "agree": self.configs_agree[scope]}
        return out


def render(version: str, tally: Tally, classes: Mapping[tuple[str, str], Klass], *, examples: int = 60) -> str:
    lines = [f"== vLLM {version} vs attnsolve: agreement per category (exact; known differences counted as "
             "disagreements here)"]
    scopes = sorted({s for s, _ in tally.compared}, key=lambda s: (s != "all", s.split(":")[0], s))
    for s in scopes:
        if s.startswith("cat:"):
            continue
        lines.append(f"{s:16s} {tally.line(s)}")
    lines.append("\n== per config category")
    for s in scopes:
        if s.startswith("cat:"):
            lines.append(f"{s[4:]:20s} {tally.line(s)}")
    known = [k for k in classes.values() if k.known]
    unexplained = [k for k in classes.values() if not k.known]
    lines.append(f"\n== disagreement classes: {len(unexplained)} unexplained "
                 f"({sum(len(k.members) for k in unexplained)} cases), {len(known)} known "
                 f"({sum(len(k.members) for k in known)} cases)")
    for title, group in (("unexplained", unexplained), ("known", known)):
        for k in sorted(group, key=lambda k: (k.category, -len(k.members)))[:examples]:
            lines.append(_klass_text(k, title))
    return "\n".join(lines)


def _klass_text(k: Klass, title: str) -> str:
    ex = k.example or k.members[0]
    plats = Counter(where(Item(**m["item"])) for m in k.members)
    text = [f"\n[{title}] [{len(k.members)}] {k.category}: {k.signature[:400]}",
            f"   where: {dict(plats)}",
            f"   minimal: {json.dumps(shown(ex['item']['cfg']))}  (mode {ex['item']['mode']})",
            f"   vllm:      {_short(ex['vllm'])}",
            f"   attnsolve: {_short(ex['attnsolve'])}"]
    if k.known:
        text.append(f"   known: {k.known}: {k.cause}")
    return "\n".join(text)


def _short(r: Mapping[str, Any]) -> str:
    keep = {k: r[k] for k in ("ok", "backend", "variant", "fa_version", "trtllm", "kind", "error", "reasons",
                              "rejected", "warnings", "startup_block_size", "preferred_block_size") if k in r}
    if isinstance(keep.get("error"), str):
        keep["error"] = keep["error"][:500]
    return json.dumps(keep)[:1200]


def write(out: Path, version: str, text: str, tally: Tally, records: list[dict[str, Any]],
          classes: Mapping[tuple[str, str], Klass]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.txt").write_text(text + "\n")
    with (out / "disagreements.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    summary = {"vllm": version, "figures": tally.figures(),
               "classes": [{"category": k.category, "signature": k.signature, "count": len(k.members),
                            "known": k.known, "cause": k.cause,
                            "minimal": {"item": k.example["item"] if k.example else None,
                                        "vllm": k.example["vllm"] if k.example else None,
                                        "attnsolve": k.example["attnsolve"] if k.example else None}}
                           for k in classes.values()]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
