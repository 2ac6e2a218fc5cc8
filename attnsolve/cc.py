"""Compute capability: one small value type, formatted only at the edges.

Why: the same fact arrived as (9, 0), 90, 9.0 and "9.0" in different layers, and mixing them broke
`sweep(...).by("compute_capability")`. A ComputeCapability is a (major, minor) tuple (so it compares,
sorts and hashes like one), prints as vLLM does ("9.0") and converts to vLLM's integer form (90).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class ComputeCapability(NamedTuple):
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def __repr__(self) -> str:
        return f"ComputeCapability({self.major}, {self.minor})"

    def __int__(self) -> int:
        return self.major * 10 + self.minor

    @property
    def as_int(self) -> int:
        """vLLM's DeviceCapability.to_int(): 9.0 -> 90."""
        return self.major * 10 + self.minor

    @classmethod
    def parse(cls, value: Any) -> "ComputeCapability":
        """'9.0', 9.0, (9, 0), [9, 0], 'sm_90', 90, 9 -> ComputeCapability(9, 0); ValueError otherwise."""
        bad = ValueError(f"not a compute capability: {value!r} (like '9.0', (9, 0) or 9.0; major 1-20, minor 0-9)")
        if isinstance(value, bool):
            raise bad
        if isinstance(value, ComputeCapability):
            return value
        if isinstance(value, (tuple, list)):
            if len(value) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
                raise bad
            major, minor = value
        elif isinstance(value, int):
            major, minor = (value // 10, value % 10) if value >= 20 else (value, 0)
        elif isinstance(value, float):
            if value != value or not (0 < value < 100):
                raise bad
            text = f"{value:.1f}"
            major, minor = int(text.split(".")[0]), int(text.split(".")[1])
        elif isinstance(value, str):
            text = value.strip().lower().removeprefix("sm_").removeprefix("sm")
            if not (text.replace(".", "", 1).isascii() and text.replace(".", "", 1).isdigit()) or len(text) > 8:
                raise bad  # ASCII digits only: '²' or '٩' pass str.isdigit() but are no compute capability
            if "." in text:
                a, _, b = text.partition(".")
                if not (a.isdigit() and b.isdigit() and len(b) == 1):
                    raise bad
                major, minor = int(a), int(b)
            elif len(text) in (2, 3):
                major, minor = int(text[:-1]), int(text[-1])
            else:
                major, minor = int(text), 0
        else:
            raise bad
        if not (1 <= major <= 20 and 0 <= minor <= 9):
            raise bad
        return cls(major, minor)
