"""The Compute Cap. cell: on which GPUs a backend, or one of its variants, can be selected.

Why a module: a variant's GPUs are declared nowhere; they follow from searching every setting of the
derived facts its variant field reads (FA version, FA pick), the one costly computation of the document.
"""

from __future__ import annotations

import functools
from typing import Any

from .docs_backends import _cc_int
from .docs_cells import cc_pred_text
from .rules.model import Backend, Capabilities, Check, Pred, RuleSet, format_cc


def _cc_candidates(rules: RuleSet) -> list[int]:
    from .solver.domains import value_classes
    vals = {c.representative for c in value_classes(rules, "compute_capability") if c.representative is not None}
    for c in value_classes(rules, "compute_capability"):
        vals.update(x for x in c.examples if isinstance(x, int))
    vals.update(_cc_int(g) for g in rules.generations)
    return sorted(vals)


def _chain(rules: RuleSet, name: str) -> list[str]:
    """`name` and the derived facts it reads, directly or through others, in the rules' evaluation order."""
    need = {name}
    for d in reversed(list(rules.derived)):
        if d in need:
            need.update(f for f in rules.derived[d].inputs if f in rules.derived)
    return [d for d in rules.derived if d in need]


@functools.lru_cache(maxsize=512)
def _reachable_values(rules: RuleSet, name: str, platform: str, cc: int,
                      also: tuple[str, ...] = ()) -> frozenset[Any]:
    """The values derived fact `name` takes on `platform` at compute capability `cc` over every setting of
    the fields it reads, through the derived facts it reads (0.33's variant names derive from the FA
    version, which derives from the FA pick). The fields are set one at a time; a derived fact is evaluated
    as soon as its inputs are set, and a partial setting keeps only what a fact still to be evaluated reads,
    so settings that agree on that are searched once."""
    from .solver.domains import representatives
    chain = list(dict.fromkeys(d for n in (name, *also) for d in _chain(rules, n)))
    chain = [d for d in rules.derived if d in chain]
    reads = {d: set(rules.derived[d].inputs) for d in chain}
    fixed = {"platform": platform, "compute_capability": cc}
    roots = [f for f in dict.fromkeys(f for d in chain for f in reads[d]) if f not in rules.derived and f not in fixed]

    preds: dict[str, list[Pred]] = {}
    arithmetic: set[str] = set()
    for d in chain:
        for case in rules.derived[d].cases:
            for lit in case.when:
                preds.setdefault(lit.field, []).append(lit.pred)
        for _, _, parts in rules.derived[d].locals:
            arithmetic.update(parts)
        if rules.derived[d].compute is not None:
            arithmetic.update(rules.derived[d].compute[1])

    def choices(f: str) -> list[Any]:
        """The field's values, one per class that the chain's cases tell apart."""
        decl = rules.fields.get(f)
        if decl is not None and decl.platforms and platform not in decl.platforms:
            return [None]
        if f in arithmetic:
            return list(representatives(rules, f))
        seen: dict[tuple[bool, ...], Any] = {}
        for v in representatives(rules, f):
            seen.setdefault(tuple(p(v) for p in preds.get(f, ())), v)
        return list(seen.values())

    # per step (one root set): the derived facts that become computable, and what the states keep after it
    known, pending, steps = set(fixed), list(chain), []
    for root in [None, *roots]:
        if root is not None:
            known.add(root)
        ready = []
        for d in list(pending):
            if reads[d] <= known:
                ready.append(d)
                known.add(d)
                pending.remove(d)
        keep = (set().union(*(reads[d] for d in pending)) - set(fixed) if pending else set()) | (
            {name, *also} & known)
        steps.append((root, ready, keep))
    states: set[tuple[tuple[str, Any], ...]] = {()}
    for root, ready, keep in steps:
        grown = set()
        for st in states:
            for v in (choices(root) if root is not None else (None,)):
                facts = {**fixed, **dict(st)}
                if root is not None:
                    facts[root] = v
                for d in ready:
                    facts[d] = rules.derived[d].evaluate(facts)[0]
                grown.add(tuple(sorted((k, facts[k]) for k in keep if k in facts)))
        states = grown
    if also:  # (value, the others' values) tuples
        return frozenset((dict(st).get(name), *(dict(st).get(a) for a in also)) for st in states)
    return frozenset(dict(st).get(name) for st in states)


def _variant_ccs(rules: RuleSet, b: Backend, values: tuple[Any, ...], ccs: list[int] | None = None) -> list[int]:
    """CUDA compute capabilities at which some setting makes the derived variant field take `values` while the
    backend's unconditional checks on derived facts pass (TRITON_FLASH_ATTN's causal route needs FA 3 or 4,
    which its FA2 bucket never has)."""
    always = [c for c in b.checks if not c.when and c.require.field in rules.derived]
    also = tuple(dict.fromkeys(c.require.field for c in always))
    out = []
    for cc in _cc_candidates(rules) if ccs is None else ccs:
        reach = _reachable_values(rules, b.variant_field, "cuda", cc, also)  # type: ignore[arg-type]
        if not also:
            ok = not reach.isdisjoint(values)
        else:
            ok = any(t[0] in values and all(c.require.pred(t[1 + also.index(c.require.field)]) for c in always)
                     for t in reach)
        if ok:
            out.append(cc)
    return out


def cc_cell(b: Backend, caps: Capabilities, rules: RuleSet, variant: Any = None) -> str:
    if "cuda" not in b.platforms:
        return "N/A"
    base = caps.compute_capability
    allowed = [c for c in _cc_candidates(rules) if base is None or base(c)]
    own = _own_cc_checks(b, caps)
    if own:  # combination checks on the GPU alone that always apply to this backend (FLASHMLA dense)
        narrowed = [c for c in allowed if all(chk.require.pred(c) for chk in own)]
        if narrowed != allowed:
            return _by_major(narrowed, allowed, rules)
    if variant is None or b.variant_field not in rules.derived:
        return cc_pred_text(base)
    reach = _variant_ccs(rules, b, variant.values, allowed)
    if not reach:  # a variant of another platform (FLASH_ATTN's XPU bucket)
        return "N/A"
    if reach == allowed:
        return cc_pred_text(base)
    return _by_major(reach, allowed, rules)


def _by_major(ccs: list[int], allowed: list[int], rules: RuleSet) -> str:
    """`ccs` as the doc writes them: "N.x" for a major whose every allowed capability and every GPU generation is in,
    else each one ("7.5" where Volta's 7.0 is not: FlashInfer's native kernels from SM 7.5 in vLLM 0.23)."""
    gens = {_cc_int(g) for g in rules.generations}
    majors = sorted({c // 10 for c in ccs})

    def whole(m: int) -> bool:
        return all(c in ccs for c in allowed if c // 10 == m) and all(c in ccs for c in gens if c // 10 == m)

    if all(whole(m) for m in majors):
        return cc_pred_text(Pred(major_in=frozenset(majors)))
    parts = []
    for m in majors:
        some = [c for c in ccs if c // 10 == m]
        real = [c for c in some if c in gens]  # a major partly in: its GPUs (not the 7.6 no GPU has)
        parts += [f"{m}.x"] if whole(m) else [format_cc(c) for c in (real or some)]
    return ", ".join(parts)


def _own_cc_checks(b: Backend, caps: Capabilities) -> list[Check]:
    """Combination checks on compute_capability whose conditions hold for every config this backend accepts."""
    natural = {"use_sparse": bool(caps.sparse), "use_mla": bool(caps.mla)}
    out = []
    for c in b.checks:
        if c.kind != "combination" or c.require.field != "compute_capability":
            continue
        if all(w.field in natural and w(natural) for w in c.when):
            out.append(c)
    return out
