"""The CLI's exit codes, one name each (documented in docs/user-guide.md, "Exit codes").

Why a module of its own: scripts and tests compare against names, never bare numbers, and the
fuzz suite asserts that every exit is one of these.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0            # selected / success
    NO_BACKEND = 1    # no valid backend, the requested backend does not fit, or `docs --check` found drift
    BAD_INPUT = 2     # bad flag, value, model file, rules, path or too-large matrix; nothing was answered
    INTERNAL = 3      # a bug in attnsolve (reported without a traceback)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


DOCUMENTED: frozenset[int] = frozenset(int(c) for c in ExitCode)
