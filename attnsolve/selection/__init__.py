"""`solve(config)`: vLLM's selection, answered from the compiled rules, as a frozen Selection.

Automatic selection walks the platform's priority list and takes the first backend with no
reasons against it; a requested backend is validated alone and never silently replaced.
Failures raise NoValidBackendError / InvalidBackendError with vLLM's text first.

One idea per module, each importing only those before it:
  result     Selection, Rejection and the special answers (NO_PREFILL)
  messages   vLLM's message templates filled from the facts
  per_rules  values kept beside a rule set
  release    the engine of the release a Config asks about
  blocks     start-up block size and kernel block sizes
  lists      one priority list walked: chosen candidate, reasons, vLLM's error
  steps      the platform's steps before the selector (vLLM >= 0.18)
  startup    vLLM's start-up refusals
  lines      the log lines and config changes after the choice
  prefill    the MLA layer around prefill selection (vLLM >= 0.18)
  core       one uncached answer, put together
  memo       solve(): answers per config and per value class
  reference  solve_csp(): the CSP path, the reference for solve()
"""

from __future__ import annotations

from .blocks import preferred_block_size
from .core import prefill_layer, request_fallback, solve_uncached
from .lists import candidate_reasons, evaluate, failure
from .memo import clear_cache, solve
from .messages import render_message
from .prefill import PrefillLayer, prefill_fallback
from .reference import solve_csp
from .release import compiled_rules, csp_solver, engine_of
from .result import NO_PREFILL, NO_PREFILL_PATH, NOT_RUNNABLE, Rejection, Selection
from .steps import before_selection, prefill_step

__all__ = [
    "request_fallback",
    "NOT_RUNNABLE", "NO_PREFILL", "NO_PREFILL_PATH", "PrefillLayer", "Rejection", "Selection",
    "before_selection", "candidate_reasons", "clear_cache", "compiled_rules", "csp_solver", "engine_of",
    "evaluate", "failure", "preferred_block_size", "prefill_fallback", "prefill_layer", "prefill_step",
    "render_message", "solve", "solve_csp", "solve_uncached",
]
