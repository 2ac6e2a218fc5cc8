"""vLLM's start-up refusals for a config its selector answers: the platform's own (before any model code),
the backend the start-up hook forces, and the chosen backend's, in vLLM's order: its layer's impl refusing as the
model is built (`layer_failures`), kernel block sizes that cannot serve the start-up block size (the KV-cache
layout), then its other start-up failures."""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..solver.compiled import CompiledRules
from .blocks import kernel_sizes, preferred_block_size
from .messages import FactsWith, render_message


def platform_refusal(comp: CompiledRules, config: Config, plist: Any, facts: dict[str, Any],
                     t: int | None) -> str | None:
    """The platform's start-up failure text for these facts, or None (t: their truth bitset, or None)."""
    if (i := comp.first_holding(plist.startup_failures, t, facts)) >= 0:
        return render_message(plist.startup_failures[i][0], facts, gpu=config.gpu or "CUDA")
    return None


def startup_lines(comp: CompiledRules, plist: Any, facts: dict[str, Any], t: int | None
                  ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What the platform's start-up hook logs for these facts before any layer selects (`startup_warnings`):
    (WARNING lines, INFO lines), each once, in the rules' order (t: the facts' truth bitset, or None)."""
    items = plist.startup_warnings
    if not items:
        return (), ()
    warn: list[str] = []
    info: list[str] = []
    i = comp.first_holding(items, t, facts)
    while i >= 0:
        text, _, level = items[i]
        line = render_message(text, facts)
        out = info if level == "info" else warn
        if line not in out:  # an entry with several alternatives holds once per alternative
            out.append(line)
        i = comp.first_holding(items, t, facts, i + 1)
    return tuple(warn), tuple(info)


def forced_backend(comp: CompiledRules, plist: Any, facts: dict[str, Any], t: int | None) -> str | None:
    """The backend the platform's start-up hook requests, when it is not the one already requested."""
    i = comp.first_holding(plist.start_backend, t, facts)
    forced = plist.start_backend[i].value if i >= 0 else None
    return forced if forced is not None and forced != facts.get("backend") else None


def backend_refusal(comp: CompiledRules, config: Config, chosen: str, facts: dict[str, Any], plist: Any,
                    t: int | None, block: Any = ...) -> str | None:
    """The chosen backend's start-up failure text, or None. block: the start-up block size (computed when
    the caller has not)."""
    rules = comp.rules
    if block is ...:
        block = preferred_block_size(rules, chosen, facts.get("block_size"), plist, facts, comp, t)
    layer = rules.backends[chosen].layer_failures  # the layer's impl refuses first: it is built before the KV cache
    if layer and (i := comp.first_holding(layer, None if t is None else comp.with_value(t, "block_size", block),
                                          FactsWith(facts, "block_size", block))) >= 0:
        return render_message(layer[i][0], dict(facts, block_size=block), gpu_name=config.gpu or "CUDA")
    if plist.block_size_failure and block is not None and comp.holds(plist.block_size_failure_when, t, facts):
        sizes, exact = kernel_sizes(rules, chosen, facts)
        if (exact and block not in exact) or (sizes and not exact and not any(block % k == 0 for k in sizes)):
            shown = repr(list(exact)) if exact else "[" + ", ".join(f"MultipleOf({k})" for k in sizes) + "]"
            b = rules.backends[chosen]  # vLLM >= 0.18 prints the class's get_name() and its own list text
            return render_message(plist.block_size_failure, dict(facts, block_size=block), backend=chosen,
                                  kernel_block_sizes=shown, get_name=b.get_name or chosen,
                                  kernel_block_sizes_text=b.kernel_block_sizes_text or shown)
    failures = rules.backends[chosen].startup_failures
    if not failures:
        return None
    t_block = None if t is None else comp.with_value(t, "block_size", block)
    if (i := comp.first_holding(failures, t_block, FactsWith(facts, "block_size", block))) >= 0:
        return render_message(failures[i][0], dict(facts, block_size=block), gpu_name=config.gpu or "CUDA")
    return None
