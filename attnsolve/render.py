"""Text rendering helpers for the CLI and the generated docs: aligned tables, symbols, colour.

Nothing here knows about attention; it only lays out strings. Symbols degrade to ASCII when the
output is not a UTF-8 terminal, and colour is used only on a TTY with NO_COLOR unset.
"""

from __future__ import annotations

import os
import textwrap
import unicodedata
from dataclasses import dataclass
from typing import IO, Any, Sequence

WIDTH = 80


@dataclass(frozen=True)
class Style:
    """How to draw symbols and emphasis on one output stream."""

    unicode: bool = False
    colour: bool = False

    @classmethod
    def for_stream(cls, stream: IO[str] | None) -> "Style":
        tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        enc = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        unicode = tty and enc in ("utf8", "utf8sig")
        colour = tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        return cls(unicode=unicode, colour=colour)

    @property
    def yes(self) -> str:
        return "\u2705" if self.unicode else "yes"

    @property
    def no(self) -> str:
        return "\u274c" if self.unicode else "no"

    @property
    def arrow(self) -> str:
        return "\u2192" if self.unicode else "->"

    @property
    def dot(self) -> str:
        return "\u00b7" if self.unicode else ","

    def _sgr(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour else text

    def bold(self, text: str) -> str:
        return self._sgr("1", text)

    def good(self, text: str) -> str:
        return self._sgr("32", text)

    def bad(self, text: str) -> str:
        return self._sgr("31", text)

    def dim(self, text: str) -> str:
        return self._sgr("2", text)


def width(text: str) -> int:
    """Display width (emoji and wide characters take two columns; escape codes none)."""
    out = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            j = text.find("m", i)
            i = len(text) if j < 0 else j + 1
            continue
        if unicodedata.combining(ch) or ch == "\ufe0f":
            pass
        elif unicodedata.east_asian_width(ch) in ("W", "F"):
            out += 2
        else:
            out += 1
        i += 1
    return out


def pad(text: str, n: int) -> str:
    return text + " " * max(0, n - width(text))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str] | None = None, *, indent: str = "",
          gap: str = "  ", rule: bool = True) -> list[str]:
    """Aligned columns; the last column is not padded (so lines carry no trailing spaces)."""
    all_rows = [[str(c) for c in r] for r in rows]
    if headers is not None:
        all_rows = [[str(h) for h in headers], *all_rows]
    if not all_rows:
        return []
    ncol = max(len(r) for r in all_rows)
    widths = [max((width(r[i]) for r in all_rows if i < len(r)), default=0) for i in range(ncol)]
    lines = []
    for k, r in enumerate(all_rows):
        cells = [pad(c, widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append((indent + gap.join(cells)).rstrip())
        if k == 0 and headers is not None and rule:
            lines.append((indent + gap.join("-" * w for w in widths)).rstrip())
    return lines


def wrap(text: str, *, indent: str = "", first: str | None = None, limit: int = WIDTH) -> list[str]:
    """Wrap to `limit` columns; `first` replaces the indent on the first line."""
    lead = indent if first is None else first
    return textwrap.wrap(text, width=limit, initial_indent=lead, subsequent_indent=indent,
                         break_on_hyphens=False, break_long_words=False) or [lead.rstrip()]


def show(v: Any) -> str:
    """A value as users type it: true/false, unset for None, X.Y for a (major, minor) pair."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "unset"
    if isinstance(v, tuple) and len(v) == 2:
        return f"{v[0]}.{v[1]}"
    return str(v)


def fit(text: str) -> str:
    """Lines past WIDTH (long option spellings argparse does not wrap) wrapped under their indent."""
    out: list[str] = []
    for line in text.split("\n"):
        if width(line) <= WIDTH:
            out.append(line)
            continue
        lead = line[: len(line) - len(line.lstrip())]
        out += wrap(line.strip(), indent=lead + "  ", first=lead)
    return "\n".join(out)


def md_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> list[str]:
    """A GitHub-flavoured Markdown table in the seed document's compact form."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("-" * (len(h) + 2) for h in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return out
