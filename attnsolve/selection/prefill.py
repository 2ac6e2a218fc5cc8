"""The MLA layer around prefill selection (vLLM >= 0.18's MLAAttention.__init__): the layer's decode backend
decides first, a `skips` entry gives the layer no prefill backend, and a `fallbacks` entry turns a failed
prefill selection into none (the top-k MQA path), with the entry's warning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..errors import NoValidBackendError
from ..solver.compiled import CompiledRules
from ..solver.facts import base_facts
from .messages import render_message
from .result import NO_PREFILL, NO_PREFILL_PATH, Rejection, Selection
from .steps import prefill_backend, with_derived


@dataclass(frozen=True, slots=True)
class PrefillLayer:
    """What the MLA layer knows when it asks for a prefill backend: its decode Selection, the facts with the
    decode backend and the decode step's config changes (the canonical KV dtype), and the skip that applies."""

    decode: Selection
    facts: dict[str, Any]
    skip: str | None


def layer_after(comp: CompiledRules, config: Config, decode: Selection, mp: Any,
                facts: dict[str, Any] | None = None) -> PrefillLayer:
    """The layer once its decode backend is chosen: its facts and the first matching skip. facts: a copy of
    base_facts(config, "mla_prefill") when the caller has them (taken over)."""
    if facts is None:
        facts = base_facts(config, "mla_prefill")
    facts.update(decode.config_changes)
    facts["decode_backend"] = decode.backend
    facts, done = with_derived(comp, facts)
    skip = next((text for text, when in mp.skips if comp.holds(when, done.t, facts)), None)  # by the truth bitset
    return PrefillLayer(decode, facts, skip)


def prefill_fallback(mp: Any, facts: dict[str, Any]) -> str | None:
    """The warning of the fallback that swallows a failed prefill selection for this layer, or None."""
    return next((text for text, when in mp.fallbacks if all(lit(facts) for lit in when)), None)


def skipped(config: Config, layer: PrefillLayer) -> Selection:
    """The answer for a layer a skip names: no prefill backend, the skip's warning (none where the skip's text is
    empty: vLLM 0.17 to 0.20 say nothing when a sparse layer has no prefill path)."""
    assert layer.skip is not None
    return Selection(backend=NO_PREFILL, variant=NO_PREFILL_PATH, rejected=(),
                     warnings=(render_message(layer.skip, layer.facts),) if layer.skip else (),
                     config=config, role="mla_prefill", priority_list="MLA prefill skipped")


def no_prefill_branch(config: Config, plist: Any, facts: dict[str, Any], warnings: list[str]) -> Selection:
    """The answer of a `no_prefill` list (vLLM 0.16/0.17's sparse MLA layer): no prefill backend, the list's
    warning if it has one, after the platform's own."""
    own = (render_message(plist.warning, facts),) if plist.warning else ()
    return Selection(backend=NO_PREFILL, variant=NO_PREFILL_PATH, rejected=(), warnings=(*warnings, *own),
                     config=config, role="mla_prefill", priority_list=plist.name)


def fell_back(comp: CompiledRules, config: Config, layer: PrefillLayer, mp: Any,
              err: NoValidBackendError) -> Selection | None:
    """The answer when prefill selection failed with `err` and a fallback covers the layer (None: none does)."""
    text = prefill_fallback(mp, layer.facts)
    if text is None:
        return None
    rules = comp.rules
    rejected = tuple(Rejection(prefill_backend(rules, b), tuple(r)) for b, r in err.reasons.items())
    return Selection(backend=NO_PREFILL, variant=NO_PREFILL_PATH, rejected=rejected,
                     warnings=(render_message(text, layer.facts),), config=config, role="mla_prefill",
                     priority_list="MLA prefill fallback")
