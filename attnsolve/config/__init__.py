"""Config: the one value every question starts from, parsed and validated once at the edge.

Strings are accepted case-insensitively where vLLM accepts them; every bad field raises a
ConfigError naming the field, the bad value, the accepted values and the closest match.
Any field may be `ANY` (unknown) for partial-config questions (explain, possible_backends, sweep).
"""


from __future__ import annotations

from .core import FIELD_NAMES, Config
from .gpu import gpu_key, lookup_gpu
from .values import (ANY, _as_bool, _as_int, _choice, cc_int, format_cc, int_text, parse_cc, parse_declared,
                     parse_vllm, requestable_backends)

__all__ = ["ANY", "FIELD_NAMES", "Config", "cc_int", "format_cc", "gpu_key", "int_text", "lookup_gpu",
           "parse_cc", "parse_declared", "parse_vllm", "requestable_backends", "_as_bool", "_as_int", "_choice"]
