"""What a sweep's rows carry: a backend code, and an assignment of the free fields in Config's values.

Shared by the module that reads rows (sweep) and those that build and fold them; this and sweep are all that
`import attnsolve` loads (numpy too is imported only when a sweep runs), so the CLI's start-up stays short.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from .config import format_cc

NO_PREFILL = "NO_PREFILL"  # selection.NO_PREFILL: an MLA layer that gets no prefill backend

EXCLUDED = -2  # row code: not a configuration (see attnsolve.sweep.EXCLUSIONS)
NO_BACKEND = -1  # row code: no valid backend (solve raises NoValidBackendError / InvalidBackendError)

FORCE_NONE = -10  # forced-outcome code: the lists decide
EXACT = -3  # result code: a step the fold does not model decides; the row is solved on its own


def _np() -> Any:
    try:
        import numpy
    except ImportError as e:  # pragma: no cover - numpy ships with the bench extra and the test set-up
        raise ImportError("attnsolve.sweep needs numpy (pip install numpy)") from e
    return numpy


def _merged(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in parts:
        out.update(p)
    return out


def _shown(field: str, value: Any) -> Any:
    if field == "compute_capability" and value is not None:
        return format_cc(value)  # facts carry 90, configs ComputeCapability(9, 0): both print "9.0"
    return value


class _Rows:
    """A unit's valid rows as assignments (Config values), built when read: a unit may hold millions."""

    def __init__(self, fields: tuple[str, ...], shown: tuple[tuple[Any, ...], ...], multi: Any):
        self.fields = fields
        self.shown = shown
        self.multi = [m.tolist() for m in multi] if len(fields) else []
        self._n = len(self.multi[0]) if self.multi else 0

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return {f: sh[m[i]] for f, sh, m in zip(self.fields, self.shown, self.multi)}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self._n):
            yield {f: sh[m[i]] for f, sh, m in zip(self.fields, self.shown, self.multi)}
