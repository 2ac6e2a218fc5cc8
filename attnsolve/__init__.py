"""attnsolve: which attention backend vLLM selects for a configuration, why not the others,
and the smallest change that fixes a failing one.

>>> from attnsolve import Config, solve
>>> str(solve(Config(platform="cuda", compute_capability="9.0", dtype="bfloat16", head_size=128)))
'FLASH_ATTN (FA3)'
"""

from __future__ import annotations

from .config import ANY, Config
from .errors import ConfigError, InvalidBackendError, NoValidBackendError, SelectionError
from .rules import RulesError, load_rules, use_rules
from .selection import Rejection, Selection, solve

__all__ = [
    "ANY", "Config", "ConfigError", "CoverageReport", "Explanation", "Fix", "InvalidBackendError", "NoValidBackendError",
    "Rejection", "RulesError", "Selection", "SelectionError", "Sweep", "Verdict", "coverage_report", "explain", "load_rules",
    "possible_backends", "selection_table", "solve", "sweep", "use_rules", "VersionComparison", "compare_versions",
    "vllm_versions",
]
__version__ = "0.1.0"

# Imported eagerly on purpose: a lazy package attribute named like its submodule ("explain",
# "sweep") would be replaced by the submodule object as soon as anything imports it.
from .explain import Explanation, Fix, Verdict, explain, possible_backends, selection_table  # noqa: E402
from .sweep import Sweep, sweep  # noqa: E402
from .coverage import CoverageReport, coverage_report  # noqa: E402
from .versions import VersionComparison, compare_versions, vllm_versions  # noqa: E402
