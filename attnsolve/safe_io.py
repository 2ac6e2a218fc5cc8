"""Reading and writing the few files attnsolve touches (a model config.json, rule files, the
generated docs) without ever blocking or eating memory.

Why: a path can name a FIFO (open() blocks forever), /dev/zero (read() never ends), a directory or
a dangling symlink (raw OSError). Every path is stat()ed first and only a regular file is opened,
with O_NONBLOCK so a file swapped for a FIFO after the check still cannot block, and read with a
size cap. Problems come back as `FileProblem` with a one-line reason naming the path; callers turn
it into their own documented error (ConfigError, RulesError, a CLI exit 2).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MODEL_CONFIG_MAX_BYTES = 1 << 20   # a Hugging Face config.json is a few kilobytes
RULES_FILE_MAX_BYTES = 4 << 20     # the packaged rule files are tens of kilobytes
DOC_MAX_BYTES = 8 << 20            # docs/attention_backends.md is about 60 kB


class FileProblem(Exception):
    """A path that cannot be read or written as a plain file; `str()` names the path and the cause."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _stat(path: str) -> os.stat_result | None:
    """stat() following links; None when nothing is there (a dangling symlink is reported as such)."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileProblem(path, f"dangling symbolic link (to {os.readlink(path)!r})") from None
        return None
    except OSError as e:
        raise FileProblem(path, e.strerror or str(e)) from None
    except ValueError as e:  # an embedded NUL byte
        raise FileProblem(path, f"not a usable path ({e})") from None


def read_text(path: str | Path, *, max_bytes: int, encoding: str = "utf-8") -> str:
    """The text of a regular file of at most `max_bytes`; FileProblem for anything else
    (missing, a directory, a FIFO or device, a dangling link, too large, unreadable, not `encoding`)."""
    shown = str(path)
    st = _stat(shown)
    if st is None:
        raise FileProblem(shown, "no such file")
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem(shown, f"{_kind(st.st_mode)}, not a regular file")
    if st.st_size > max_bytes:
        raise FileProblem(shown, f"{st.st_size} bytes, more than the {max_bytes} this file may have")
    try:
        fd = os.open(shown, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise FileProblem(shown, e.strerror or str(e)) from None
    try:
        st = os.fstat(fd)  # the file actually opened (it may have been swapped since the stat)
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(shown, f"{_kind(st.st_mode)}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError as e:
                raise FileProblem(shown, e.strerror or str(e)) from None
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise FileProblem(shown, f"more than the {max_bytes} bytes this file may have")
            chunks.append(chunk)
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode(encoding)
    except UnicodeDecodeError as e:
        raise FileProblem(shown, f"not {encoding.upper()} text (byte {e.start}: {e.reason})") from None


def check_readable(path: str | Path, *, max_bytes: int) -> None:
    """Raise FileProblem unless `path` is absent or a regular file of at most `max_bytes` (for a
    later read by code that uses plain open(); absent files are the caller's business)."""
    shown = str(path)
    st = _stat(shown)
    if st is None:
        return
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem(shown, f"{_kind(st.st_mode)}, not a regular file")
    if st.st_size > max_bytes:
        raise FileProblem(shown, f"{st.st_size} bytes, more than the {max_bytes} this file may have")


def check_writable(path: str | Path) -> None:
    """Raise FileProblem unless `path` can be written as a regular file: it is absent (its nearest
    existing ancestor a writable directory) or already a writable regular file. Never writes."""
    shown = str(path)
    st = _stat(shown)
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(shown, f"{_kind(st.st_mode)}, not a regular file")
        if not os.access(shown, os.W_OK):
            raise FileProblem(shown, "not writable")
        return
    parent = os.path.dirname(os.path.abspath(shown)) or "."
    while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)  # missing directories are created by the writer
    if not os.path.isdir(parent):
        raise FileProblem(shown, f"{parent} is not a directory")
    if not os.access(parent, os.W_OK):
        raise FileProblem(shown, f"directory {parent} is not writable")
