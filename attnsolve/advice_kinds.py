"""What a change means to the user: its kind (setting, hardware, model fact), what of their own
choices it gives up, and whether they can make it at all.

Why this module: ranking and filtering fixes rest on these judgements; they stay apart from the
search that proposes and verifies the changes.
"""

from __future__ import annotations

from typing import Any, Mapping

from .advice_fields import _FP8, _HARDWARE, _MODEL, _SERVE_FLAGS, _declared_fields
from .advice_spelling import change_text
from .advice_types import Context
from .render import show as _show


def _is_model_fact(ctx: Context, name: str) -> bool:
    if name in _MODEL:
        return True
    if name in _SERVE_FLAGS or name == "num_heads":  # --dtype, --tensor-parallel-size: typed at vllm serve
        return False
    decl = _declared_fields(ctx.config).get(name)
    return decl is not None and decl.category == "model" and name not in _HARDWARE


def _kind(ctx: Context, changes: Mapping[str, Any]) -> str:
    declared = _declared_fields(ctx.config)
    if any(f in _HARDWARE or getattr(declared.get(f), "category", "") == "hardware" for f in changes):
        return "hardware"
    if any(_is_model_fact(ctx, f) for f in changes):
        return "model"
    return "setting"


def _gives_up(ctx: Context, changes: Mapping[str, Any]) -> str | None:
    """What the fix gives up of the user's choices (fp8 KV, float32, a requested backend, a model
    fact), or None when it keeps them."""
    c = ctx.config
    for f, v in changes.items():
        if f == "kv_cache_dtype":
            was, now = str(c.kv_cache_dtype), str(v)
            if was.startswith(_FP8) and not now.startswith(_FP8):
                return "the fp8 KV cache"
            if now.startswith(_FP8) and not was.startswith(_FP8):
                return f"the {was} KV cache"
        elif f == "dtype":
            if "float32" in (c.dtype, v) or "dtype" in ctx.user_fields:
                return f"{c.dtype} weights"
        elif f == "backend":
            if c.backend is not None:
                return f"the requested {c.backend}"
        elif _is_model_fact(ctx, f):
            return f"{f}={_show(getattr(c, f))}"
        elif f in ctx.user_fields and f != "num_heads" and _kind(ctx, {f: v}) == "setting":
            return f"your {change_text(ctx, f, getattr(c, f))}"  # a switch the user set on purpose
    return None


def _named_sizes(rules: Any) -> frozenset[int]:
    """The head sizes some backend names in its rules (64, 128, 256, 576...): real models' sizes."""
    out: set[int] = set()
    for b in rules.backends.values():
        pred = getattr(getattr(b, "caps", None), "head_sizes", None)
        if pred is not None and pred.in_:
            out |= {v for v in pred.in_ if isinstance(v, int)}
    return frozenset(out)


def _plausible(rules: Any, name: str, value: Any) -> bool:
    """A model fact a real model could have: a head size some backend names, a dimension that is a
    multiple of 16 (not the 255 next to 256 that only tells 'any other size')."""
    if name not in _MODEL or isinstance(value, bool) or not isinstance(value, int):
        return True
    if name == "head_size":
        return value in _named_sizes(rules)
    return value % 16 == 0


def _applicable(ctx: Context, changes: Mapping[str, Any]) -> bool:
    """Whether the user can make this change: model facts only when typed as a flag (and then only
    real values); a per-GPU head count only through --tensor-parallel-size unless typed."""
    from .selection import compiled_rules
    rules = compiled_rules(ctx.config).rules
    for k, v in changes.items():
        if _is_model_fact(ctx, k) and (k not in ctx.user_fields or not _plausible(rules, k, v)):
            return False
        if k == "num_heads" and "num_heads" not in ctx.user_fields and not (
                ctx.total_heads and isinstance(v, int) and v > 0 and ctx.total_heads % v == 0):
            return False
    return True
