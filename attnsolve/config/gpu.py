"""GPU names -> the hardware facts of a rule set's GPU table (tool spellings resolved by attnsolve.gpus)."""

from __future__ import annotations

from typing import Any, Mapping

from ..rules import default_rules
from ..rules.sets import per_rules_limit


def gpu_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_GPU_TABLES: dict[int, tuple[Any, dict[str, Mapping[str, Any]]]] = {}


def lookup_gpu(name: Any, rules: Any = None) -> Mapping[str, Any]:
    rules = rules if rules is not None else default_rules()
    hit = _GPU_TABLES.get(id(rules))
    if hit is None or hit[0] is not rules:  # keep the rules object: an id is reused after GC
        if len(_GPU_TABLES) > per_rules_limit():
            _GPU_TABLES.clear()
        hit = _GPU_TABLES[id(rules)] = (rules, {gpu_key(k): v for k, v in rules.gpus.items()})
    table = hit[1]
    if not isinstance(name, str) or gpu_key(name) not in table:
        from ..gpus import resolve  # tool spellings ("NVIDIA H100 80GB HBM3"), vendor-aware suggestions
        return table[gpu_key(resolve(name, rules.gpus))]
    return table[gpu_key(name)]

