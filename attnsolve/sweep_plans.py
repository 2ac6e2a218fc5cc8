"""What each priority list, with or without a requested backend, makes of a state's clause bits.

The fold needs, per (list, request), the candidates as clause masks, and which plans answer a constant
(an outcome forced before the lists, a branch that raises) or leave their rows to be solved alone.
"""

from __future__ import annotations

from typing import Any

from .sweep_bits import _Bits
from .sweep_rows import NO_BACKEND, NO_PREFILL, _np
from .sweep_steps import _platform_steps, _prefill_list


class _PlanTable:
    """Candidates of each (priority list, requested backend) as clause-bit arrays; plans with a constant
    result (an outcome the steps before the lists forced, a decision-tree branch that raises) and plans whose
    rows a step the fold does not model decides (the MLA prefill layer, a refused request vLLM replaces by
    automatic selection) are marked."""

    def __init__(self, comp: Any, bits: _Bits, avail: frozenset[str] | None, by_name: bool = False):
        self.comp = comp
        self.by_name = by_name  # the platforms' request_errors are decided here (they read the request alone)
        self.bits = bits
        self.avail = avail
        self.keys: list[tuple[int, int]] = []
        self.index: dict[Any, int] = {}
        self.masks: list[Any] = []
        self.allowed: list[Any] = []
        self.cands: list[Any] = []  # backend index per candidate
        self.list_name: list[str] = []
        self.const: dict[int, int] = {}  # plan -> its result code
        self.exact_on_fail: set[int] = set()  # plans whose failing rows are solved alone
        self.layer: dict[int, Any] = {}  # MLA prefill plans -> the platform's layer step (mla_prefill settings)
        self.names = (*comp.rules.backends, NO_PREFILL)
        self._bidx = {b: i for i, b in enumerate(self.names)}
        self._platforms: dict[str, Any] = {}

    def _new(self, key: Any, name: str, masks: Any, allowed: Any, cands: Any) -> int:
        pid = self.index[key] = len(self.keys)
        self.keys.append(key)
        self.list_name.append(name)
        self.masks.append(masks)
        self.allowed.append(allowed)
        self.cands.append(cands)
        return pid

    def constant(self, code: int, name: str) -> int:
        """A plan with no candidate whose every row answers `code`."""
        key = ("const", code, name)
        pid = self.index.get(key)
        if pid is None:
            np = _np()
            pid = self._new(key, name, np.zeros((0, self.bits.W), dtype=np.uint64), np.zeros(0, dtype=bool),
                            np.zeros(0, dtype=np.int32))
            self.const[pid] = code
        return pid

    def get(self, list_idx: int, req: int) -> int:
        key = (list_idx, req)
        pid = self.index.get(key)
        if pid is None:
            np = _np()
            pl = self.comp.rules.lists[list_idx]
            if self.by_name and req >= 0 and any(all(lit({"backend": self.names[req]}) for lit in when)
                                                 for _, when in pl.request_errors):
                pid = self.constant(NO_BACKEND, "refused before selection")
                self.index[key] = pid
                return pid
            if pl.error or pl.no_prefill:  # a branch that raises (nothing is selected) or gives no prefill backend
                pid = self.constant(self.names.index(NO_PREFILL) if pl.no_prefill else NO_BACKEND, pl.name)
                self.index[key] = pid
                return pid
            p, masks = self.comp.plan(pl, None if req < 0 else self.names[req])
            pid = self._new(key, pl.name, self.bits.plan_words(key, masks),
                            np.array([self.avail is None or c.backend in self.avail for c in p.candidates], dtype=bool),
                            np.array([self._bidx[c.backend] for c in p.candidates], dtype=np.int32))
            ps = _platform_steps(self.comp.rules, pl.platform)
            if ps is not None and ps.mla_prefill is not None and _prefill_list(pl):
                self.layer[pid] = ps.mla_prefill  # the layer's decode selection, skips and fallbacks come first
            elif req >= 0 and any(only for _, _, only, _ in pl.request_fallbacks):
                self.exact_on_fail.add(pid)  # the refusal's reasons decide whether vLLM selects automatically
        return pid
