"""Group disagreements into classes and shrink each class's example to the smallest config.

A class is (category, signature).  Its example starts as the member with the fewest fields
away from the defaults; `candidates` proposes that config with one field reset to its default
(or a smaller value), and a candidate replaces the example when both sides still disagree with
the same signature (the caller runs the candidates through vLLM and attnsolve).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .configs import base

KEEP = ("platform", "compute_capability", "rocm_arch", "dtype")
SMALLER = {"head_size": (128, 576), "num_heads": (None,), "block_size": (None, 16)}


def distance(cfg: Mapping[str, Any]) -> int:
    """How many fields differ from the defaults (the size a minimal example minimises)."""
    d = base(str(cfg.get("platform", "cuda")))
    return sum(1 for k, v in cfg.items() if k not in KEEP and d.get(k) != v)


def shown(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The fields worth printing: the platform facts and whatever differs from the defaults."""
    d = base(str(cfg.get("platform", "cuda")))
    return {k: v for k, v in cfg.items() if k in KEEP or d.get(k) != v}


@dataclass
class Klass:
    """One disagreement class: members, the current smallest example, known cause (if any)."""

    category: str
    signature: str
    members: list[dict[str, Any]] = field(default_factory=list)
    example: dict[str, Any] | None = None
    known: str | None = None
    cause: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.category, self.signature)


def group(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Klass]:
    """records: disagreement records {category, signature, item, vllm, attnsolve}."""
    classes: dict[tuple[str, str], Klass] = {}
    for r in records:
        k = classes.setdefault((r["category"], r["signature"]), Klass(r["category"], r["signature"]))
        k.members.append(dict(r))
    for k in classes.values():
        k.example = min(k.members, key=lambda m: (distance(m["item"]["cfg"]), m["item"]["id"]))
    return classes


def candidates(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """cfg with one field moved toward the defaults, each at most once."""
    d = base(str(cfg.get("platform", "cuda")))
    out = []
    for k, v in cfg.items():
        if k in KEEP:
            continue
        options = [d.get(k)] + [x for x in SMALLER.get(k, ()) if x != d.get(k)]
        for o in options:
            if o != v and (k in d or o is None):
                c = dict(cfg)
                if k in d:
                    c[k] = o
                else:
                    c.pop(k)
                if not c.get("use_mla"):
                    c["use_sparse"] = False
                    if c.get("head_size") == 576 and k == "use_mla":
                        c["head_size"] = 128
                if c != dict(cfg) and c not in out:
                    out.append(c)
                break
    return out
