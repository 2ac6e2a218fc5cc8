"""vLLM's environment switches read as the release reads them (a field's `env` and `env_reads`).

Why a module of its own: vLLM turns each variable's text into a value with its own idiom, and the
idioms differ. `VLLM_ROCM_USE_AITER=yes` is *off* in vLLM (only "true" and "1" turn it on), and
`VLLM_BATCH_INVARIANT=true` stops vLLM's start-up (it is read with int()). Parsing that text with
attnsolve's own boolean reader would answer for a setting vLLM never sees; so the CLI and
`Config.from_env` both read it here, with a note where the text does not mean what it looks like.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError
from ..rules.model import ENV_READINGS


# The variables every supported release reads for the common fields: only for a rule set that declares no
# fields (its `env` keys say which variables a release reads). No release from 0.17 on has
# VLLM_ATTENTION_BACKEND, VLLM_FLASH_ATTN_VERSION, VLLM_USE_TRTLLM_ATTENTION or VLLM_V1_USE_PREFILL_DECODE_ATTENTION.
COMMON_VARIABLES = {
    "VLLM_ROCM_USE_AITER": "rocm_use_aiter",
    "VLLM_ROCM_USE_AITER_MHA": "rocm_use_aiter_mha",
    "VLLM_ROCM_USE_AITER_MLA": "rocm_use_aiter_mla",
    "VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION": "rocm_use_aiter_unified_attention",
}


@dataclass(frozen=True)
class EnvRead:
    """One variable set in the environment: its text, the field it feeds and the value vLLM reads
    from it (None: the text changes nothing in vLLM); `note` says why where that is not obvious."""

    variable: str
    text: str
    field: str
    value: Any
    note: str = ""


class EnvTextError(ConfigError):
    """A variable's text that vLLM itself fails on; `variable` names it (the CLI blames it, not a flag)."""

    def __init__(self, variable: str, text: str, field: str, problem: str):
        super().__init__(field, text, "an integer such as 0 or 1", vllm_text=f"ValueError: {problem}",
                         message=f"ValueError: {problem} (vLLM reads {variable} with int() and stops at "
                                 f"start-up). Expected an integer such as 0 or 1.")
        self.variable = variable


def _int_text(variable: str, text: str, field: str) -> int:
    try:
        return int(text)
    except ValueError as e:  # vLLM's envs lambda raises the same ValueError, and start-up stops
        raise EnvTextError(variable, text, field, str(e)) from None


def read_variable(variable: str, text: str, field: str, reading: str) -> EnvRead:
    """The value vLLM reads from `variable`'s `text` (model.ENV_READINGS names the readings)."""
    if reading == "true_or_1":
        on = text.lower() in ("true", "1")
        note = "" if text.lower() in ("true", "1", "false", "0") else (
            f"{variable}={text!r} is read as false: vLLM turns it on only for 'true' or '1' (any case)")
        return EnvRead(variable, text, field, on, note)
    if reading in ("int", "int_sets_true"):
        on = _int_text(variable, text, field) != 0
        if reading == "int_sets_true" and not on:
            return EnvRead(variable, text, field, None,
                           f"{variable}={text!r} changes nothing: vLLM only reads it to skip a check when non-zero")
        return EnvRead(variable, text, field, on)
    if reading == "int_else_false":  # vLLM 0.18's batch_invariant.py: int(text) != 0, a ValueError reads as off
        try:
            return EnvRead(variable, text, field, int(text) != 0)
        except ValueError:
            return EnvRead(variable, text, field, False,
                           f"{variable}={text!r} is read as off: this vLLM turns it on only for a non-zero integer")
    raise ConfigError(field, reading, ENV_READINGS)  # the loader refuses others


def read_environment(environ: Mapping[str, str], declared: Mapping[str, tuple[str, str]]) -> tuple[EnvRead, ...]:
    """Every declared variable set (non-empty) in `environ`; `declared` maps variable -> (field, reading)."""
    return tuple(read_variable(var, environ[var], name, reading)
                 for var, (name, reading) in declared.items() if environ.get(var, "") != "")


def declared_variables(rules: Any) -> dict[str, tuple[str, str]]:
    """variable -> (field, reading) as a rule set declares them (the common ROCm switches for a set that
    declares no variables)."""
    declared = {d.env: (name, d.env_reads) for name, d in rules.fields.items() if d.env}
    if not declared:
        declared = {var: (name, "true_or_1") for var, name in COMMON_VARIABLES.items()}
    return declared
