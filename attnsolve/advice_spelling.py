"""A change written the way a vLLM user types it: a `vllm serve` flag, an --attention-config key, an
environment variable, or the GPUs to use.

Why this module: every fix is shown as text to paste; one place decides the spelling, from
advice_fields' tables and the release's own field declarations.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .advice_fields import (
    _ATTENTION_CONFIG, _ENV_SWITCHES, _HARDWARE, _INSTALL, _MODEL_FLAGS, _SERVE_FLAGS, _declared_fields,
)
from .advice_types import Context
from .render import show as _show


def gpu_text(names: Sequence[str], facts: Mapping[str, Any], older: bool = False) -> str:
    """'an H100 or H200 (Hopper, SM 9.0)'."""
    from .gpus import generation_name
    shown = " or ".join(names)
    article = "an" if shown[:1].upper() in "AEFHILMNORSX" else "a"
    return f"{article} {shown} ({generation_name(facts)}" + (", an older generation)" if older else ")")


def change_text(ctx: Context, name: str, value: Any) -> str:
    """One change, ready to paste: a `vllm serve` flag, an --attention-config key or an env var."""
    if name == "backend" and ctx.per_kind:  # the request is backend_per_kind's entry for this layer's kind
        if value is None:
            also = " and --attention-backend" if ctx.global_backend else ""
            return f"drop backend_per_kind's {ctx.per_kind} entry{also} (automatic selection)"
        return f"--attention-config '{{\"backend_per_kind\": {{\"{ctx.per_kind}\": \"{value}\"}}}}'"
    if name == "backend":
        return "drop --attention-backend (automatic selection)" if value is None else f"--attention-backend {value}"
    if name in _SERVE_FLAGS:
        return f"drop {_SERVE_FLAGS[name]}" if value is None else f"{_SERVE_FLAGS[name]} {_show(value)}"
    if name in _ATTENTION_CONFIG:
        key = f"--attention-config.{name}"
        return f"drop {key}" if value is None else f"{key} {_show(value)}"
    if name in _ENV_SWITCHES:
        return f"{_ENV_SWITCHES[name]}={1 if value else 0}"
    if name in _INSTALL:
        return _INSTALL[name] if value else f"without {name.removesuffix('_available')}"
    if name == "num_heads" and isinstance(value, int):
        if ctx.total_heads and ctx.total_heads % value == 0:
            return f"--tensor-parallel-size {ctx.total_heads // value}"
        return f"--num-heads {value * ctx.tensor_parallel_size}"
    if name in _HARDWARE:
        return f"{name}={_show(value)}"
    declared = _declared_fields(ctx.config).get(name)
    if declared is not None and name not in _MODEL_FLAGS:
        spelled = _declared_spelling(declared, value)
        if spelled:
            return spelled
    return f"{_MODEL_FLAGS.get(name, '--' + name.replace('_', '-'))} {_show(value)}"


def _declared_spelling(decl: Any, value: Any) -> str | None:
    """How vLLM spells a field the release declares: its environment variable, its
    --attention-config key, or the `vllm serve` flag its declaration names; None when the
    declaration names no pasteable spelling (a model fact, an installed package...)."""
    if decl.name.endswith("_available"):
        package = decl.name.removesuffix("_available")
        return f"install {package}" if value else f"without {package}"
    if decl.env:
        if value is None:
            return f"unset {decl.env}"
        return f"{decl.env}={(1 if value else 0) if isinstance(value, bool) else _show(value)}"
    keys = [f for f in decl.flags if f.startswith("--attention-config.")]
    words = (decl.vllm or "").split()
    if not keys and words and words[0].startswith("--") and (len(words) == 1 or words[1][:1] in "(o"):
        keys = [words[0]]
    if not keys:
        return None
    return f"drop {keys[0]}" if value is None else f"{keys[0]} {_show(value)}"
