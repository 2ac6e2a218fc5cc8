"""How a vLLM release is spelled: "0.33", "0.33.0", "v0.33", "0.33.0rc1" all name the rule set "0.33".

Why a module of its own: the set registry (sets.py) and the loader (a folder's `[ruleset] base`) both read
release labels, and neither may import the other.
"""

from __future__ import annotations

import re

_SPELLING = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.\d+)?(?:[.+-].*)?\s*$", re.IGNORECASE)


def parse_version(text: object) -> str | None:
    """'0.33', '0.33.0', 'v0.33', '0.33.0rc1' -> '0.33'; None when the text is no vLLM version."""
    if not isinstance(text, str):
        return None
    m = _SPELLING.match(text)
    return f"{int(m.group(1))}.{int(m.group(2))}" if m else None
