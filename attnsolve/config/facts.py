"""A Config's facts (the flat field -> value mapping the rules read), laid out once when the Config is built.

Why: every uncached solve starts from these facts (about 65 fields on vLLM 0.33); copying a finished dict
costs a fraction of building it field by field. The layout is the one solver.facts.base_facts always built
(the common fields in order with the compute capability as vLLM's integer, then the rule-declared ones);
Configs built from one template share it (config/template.py), so its numeric values are the template's:
base_facts writes the Config's own numeric values over them.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from .values import ANY, cc_int


def facts_layout(d: Mapping[str, Any], extra: tuple[tuple[str, Any], ...], names: tuple[str, ...],
                 values: Callable[[Mapping[str, Any]], tuple[Any, ...]]) -> dict[str, Any]:
    """The facts of the Config whose instance dict is `d` (no role): fields `names` read by `values`, then
    the declared fields `extra`. Never changed after the Config is built: callers copy it."""
    facts = dict(zip(names, values(d)))
    facts.update(extra)  # the fields this release's rules declare beyond the common ones
    cc = facts["compute_capability"]
    if cc is not ANY:
        facts["compute_capability"] = cc_int(cc)
    return facts
