"""How big the suite runs: the ``ci`` profile samples, ``nightly`` / ``--runslow`` run full sizes.

One switch for everything that is not a hypothesis example count (grids, parametrisations,
interpreter example budgets): ``FULL`` is true under ``HYPOTHESIS_PROFILE=nightly``, with
``--runslow`` (conftest sets ``ATTNSOLVE_FULL_SIZES=1`` before the test modules are imported) or
with ``ATTNSOLVE_FULL_SIZES=1``.  Read it at import time; it does not change during a run.
"""

from __future__ import annotations

import os

FULL = os.environ.get("HYPOTHESIS_PROFILE") == "nightly" or os.environ.get("ATTNSOLVE_FULL_SIZES") == "1"


def pick(ci: int, full: int) -> int:
    """``full`` under the full sizes, else ``ci`` (e.g. interpreter examples: ``pick(20, 300)``)."""
    return full if FULL else ci
