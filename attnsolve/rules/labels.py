"""How a vLLM release is spelled: "0.33", "0.33.0", "v0.33", "0.33.0rc1" all name release "0.33"; a patch
release keeps its patch ("0.18.1", "v0.18.1rc0" -> "0.18.1"), since a patch can change selection (0.18.1 turned
TRT-LLM ragged prefill back on by default).

Why a module of its own: the set registry (sets.py) and the loader (a folder's `[ruleset] base`) both read
release labels, and neither may import the other.
"""

from __future__ import annotations

import re

_SPELLING = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?(?:(?:[.+-]|rc|post|dev|a|b).*)?\s*$", re.IGNORECASE)


def parse_version(text: object) -> str | None:
    """'0.33', '0.33.0', 'v0.33', '0.33.0rc1' -> '0.33'; '0.18.1' -> '0.18.1'; None when the text is no vLLM
    version."""
    if not isinstance(text, str):
        return None
    m = _SPELLING.match(text)
    if not m:
        return None
    label = f"{int(m.group(1))}.{int(m.group(2))}"
    return f"{label}.{int(m.group(3))}" if m.group(3) and int(m.group(3)) else label


def release_key(label: str) -> tuple[int, int, int]:
    """'0.18' -> (0, 18, 0), '0.18.1' -> (0, 18, 1): release labels in release order."""
    parts = [int(p) for p in label.split(".")]
    return parts[0], parts[1], parts[2] if len(parts) > 2 else 0


def minor_of(label: str) -> str:
    """'0.18.1' -> '0.18': the minor release a patch release belongs to."""
    major, minor, _ = release_key(label)
    return f"{major}.{minor}"
