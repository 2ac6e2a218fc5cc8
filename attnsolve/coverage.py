"""Coverage of the rules: where no backend serves a configuration, and which rules never fire.

>>> r = coverage_report()                       # doctest: +SKIP
>>> print(r)                                    # doctest: +SKIP

`coverage_report()` sweeps the model facts (dtype, head size, KV-cache dtype, block size, MLA,
sparse, sinks, multimodal prefix, attention type, heads per GPU) and both roles on every platform
and GPU generation (one group per value class of compute capability / gfx arch), with vLLM's
environment switches at their defaults, and reports:

- **holes**: configurations that get no backend (solve() raises), per group, summarised as
  *patterns* such as `kv_cache_dtype in (fp8_inc, fp8_ds_mla), role=decode`: the fields named
  must take those values, every other field is free, and every configuration matching is a hole.
  Each pattern is maximal (freeing a named field, or letting it take one more value, would take in
  a configuration that has a backend); patterns are chosen greedily, largest gain first, until
  every hole is covered or `max_patterns` are shown.
- **dead rules**: backends that automatic selection never picks anywhere in the whole space
  (every field free, both roles), and priority-list entries never reached in their list.

`all_fields=True` also frees every environment switch and model-dimension field when counting
(exact counts over the whole space); patterns are still drawn over the model facts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from .config import ANY, FIELD_NAMES, Config, format_cc
from .errors import ConfigError
from .rules import default_version, rules_for
from .solver.domains import class_of, value_classes
from .sweep import sweep

__all__ = ["coverage_report", "CoverageReport", "GroupCoverage", "HolePattern", "MODEL_FIELDS"]

MODEL_FIELDS: tuple[str, ...] = ("dtype", "head_size", "kv_cache_dtype", "block_size", "use_mla", "use_sparse",
                                 "has_sink", "use_mm_prefix", "attn_type", "num_heads")
HARDWARE = ("platform", "compute_capability", "rocm_arch")
_SEEDS = 8


@dataclass(frozen=True)
class HolePattern:
    """Every configuration of the group with these field values has no backend (other fields any).

    `pattern` maps a field to its value, or to a tuple of values when any of them will do
    (`block_size in (8, 16, 32)`); fields not named are free."""

    pattern: dict[str, Any]
    holes: int  # holes of the group matching the pattern
    example: dict[str, Any]  # one full assignment of the swept fields
    # all_fields only: False when some setting of the other fields (switches) gives a backend there
    complete: bool = True
    text: str = ""

    def __str__(self) -> str:
        text = self.text or ", ".join(f"{k}={_show(v)}" for k, v in self.pattern.items()) or "(every configuration)"
        return text if self.complete else text + " [with the default switches; some settings give a backend]"

    def to_dict(self) -> dict[str, Any]:
        return {"pattern": {k: list(v) if isinstance(v, tuple) else v for k, v in self.pattern.items()},
                "text": str(self), "holes": self.holes, "example": dict(self.example), "complete": self.complete}

    def completions(self) -> list[dict[str, Any]]:
        """The single-valued patterns this one stands for (one per combination of its value sets)."""
        keys = list(self.pattern)
        choices = [v if isinstance(v, tuple) else (v,) for v in self.pattern.values()]
        return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


@dataclass(frozen=True)
class GroupCoverage:
    """One platform / GPU generation."""

    platform: str
    label: str
    hardware: dict[str, Any]  # the fixed hardware fields (Config values)
    configurations: int
    holes: int
    by_backend: dict[str | None, int]
    patterns: tuple[HolePattern, ...]
    uncovered: int  # holes matched by none of the patterns shown

    def to_dict(self) -> dict[str, Any]:
        return {"platform": self.platform, "label": self.label, "hardware": dict(self.hardware),
                "configurations": self.configurations, "holes": self.holes,
                "by_backend": [{"backend": k, "configurations": v} for k, v in self.by_backend.items()],
                "patterns": [p.to_dict() for p in self.patterns], "uncovered": self.uncovered}


@dataclass(frozen=True)
class CoverageReport:
    fields: tuple[str, ...]  # swept fields besides the hardware (role included)
    all_fields: bool
    groups: tuple[GroupCoverage, ...]
    dead: tuple[str, ...]  # never selected automatically anywhere
    explicit_only: tuple[str, ...]  # never selected automatically by design (requested only)
    unreached: tuple[tuple[str, str], ...]  # (priority list, backend) entries never selected by that list
    whole_space: int  # configurations in the dead-rule sweep
    notes: tuple[str, ...] = field(default=())

    @property
    def holes(self) -> int:
        return sum(g.holes for g in self.groups)

    @property
    def configurations(self) -> int:
        return sum(g.configurations for g in self.groups)

    def to_dict(self) -> dict[str, Any]:
        return {"fields": list(self.fields), "all_fields": self.all_fields, "configurations": self.configurations,
                "holes": self.holes, "groups": [g.to_dict() for g in self.groups], "dead": list(self.dead),
                "explicit_only": list(self.explicit_only),
                "unreached": [{"list": a, "backend": b} for a, b in self.unreached],
                "whole_space": self.whole_space, "notes": list(self.notes)}

    def __str__(self) -> str:
        lines = [f"Coverage: {self.holes:,} of {self.configurations:,} configurations have no backend "
                 f"(swept: {', '.join(self.fields)}{'; every other field too' if self.all_fields else ''})."]
        for g in self.groups:
            pct = 100.0 * g.holes / g.configurations if g.configurations else 0.0
            lines.append(f"{g.platform} {g.label}: {g.holes:,} of {g.configurations:,} without a backend ({pct:.1f}%)")
            for p in g.patterns:
                lines.append(f"  - {p}  ({p.holes:,})" if p.pattern or p.holes else f"  - {p}")
            if g.uncovered:
                lines.append(f"  - ... {g.uncovered:,} more not matched by the patterns above")
        lines.append("Backends never selected automatically: " + (", ".join(self.dead) or "none")
                     + (f" (explicit only by design: {', '.join(self.explicit_only)})" if self.explicit_only else ""))
        if self.unreached:
            lines.append("Priority-list entries never reached: "
                         + "; ".join(f"{b} in '{pl}'" for pl, b in self.unreached))
        lines.extend(self.notes)
        return "\n".join(lines)


def _show(v: Any) -> str:
    if v is None:
        return "None"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _groups(rules: Any, config: Config) -> list[tuple[str, str, dict[str, Any]]]:
    """(platform, label, hardware changes) for each platform / value class of the GPU field."""
    plats = rules.domains["platform"] if config.platform is ANY else (config.platform,)
    out = []
    for p in plats:
        if p == "cuda":
            if config.compute_capability is ANY:
                gens: dict[Any, list[str]] = {}
                for g, name in rules.generations.items():
                    major, _, minor = g.partition(".")
                    rep = class_of(rules, "compute_capability", int(major) * 10 + int(minor or 0))
                    gens.setdefault(rep, []).append(name)
                for vc in value_classes(rules, "compute_capability"):
                    rep = vc.representative
                    if rep is None:
                        continue
                    cc = format_cc((rep // 10, rep % 10))
                    label = ", ".join(gens.get(rep, [])) or (
                        f"SM {cc} class (no listed GPU; e.g. "
                        + ", ".join(format_cc((x // 10, x % 10)) for x in vc.examples[:3] if x is not None) + ")")
                    out.append((p, label, {"platform": p, "compute_capability": cc, "rocm_arch": None}))
            else:
                cc = format_cc(config.compute_capability) if config.compute_capability is not None else None
                out.append((p, f"SM {cc}", {"platform": p, "compute_capability": cc, "rocm_arch": None}))
        elif p == "rocm":
            if config.rocm_arch is ANY:
                members: dict[Any, list[str]] = {}
                for a in rules.domains["rocm_arch"]:
                    members.setdefault(class_of(rules, "rocm_arch", a), []).append(a)
                for vc in value_classes(rules, "rocm_arch"):
                    if vc.representative is None:
                        continue
                    label = ", ".join(members.get(vc.representative, [vc.representative]))
                    out.append((p, label, {"platform": p, "compute_capability": None, "rocm_arch": vc.representative}))
            else:
                arch = config.rocm_arch or "gfx942"
                out.append((p, arch, {"platform": p, "compute_capability": None, "rocm_arch": arch}))
        else:
            label = "(every CPU)" if p == "cpu" else f"(every {p.upper()} device)"
            out.append((p, label, {"platform": p, "compute_capability": None, "rocm_arch": None}))
    return out


def _describe(field: str, chosen: list[Any], every: tuple[Any, ...]) -> str:
    if len(chosen) == 1:
        return f"{field}={_show(chosen[0])}"
    rest = [v for v in every if v not in chosen]
    if len(rest) == 1:
        return f"{field}!={_show(rest[0])}"
    return f"{field} in ({', '.join(_show(v) for v in chosen)})"


def _patterns(s: Any, max_patterns: int) -> tuple[list[HolePattern], int]:
    """Greedy cover of the holes of sweep `s` by maximal boxes: each field free, or held to the
    largest set of values that keeps every configuration in the box a hole."""
    import numpy as np
    fields, grid = s.grid()
    holes = grid == -1
    ok = holes | (grid == -2)  # excluded combinations are not configurations: they never block a pattern
    remaining = holes.copy()
    nd = grid.ndim
    order = sorted(range(nd), key=lambda a: (-grid.shape[a], a))
    full = [list(range(n)) for n in grid.shape]

    def sub(arr: Any, box: list[list[int]]) -> Any:
        """arr restricted to the box (basic slicing where a field is free or single: no big copies)."""
        a = arr[tuple(slice(ix[0], ix[0] + 1) if len(ix) == 1 else slice(None) for ix in box)]
        for ax, ix in enumerate(box):
            if 1 < len(ix) < grid.shape[ax]:
                a = np.take(a, ix, axis=ax)
        return a

    def all_ok(box: list[list[int]]) -> bool:
        return bool(sub(ok, box).all())

    def grow(cell: list[int]) -> list[list[int]]:
        box = [[i] for i in cell]
        for ax in order:  # free whole fields first: the fewest fields named
            trial = list(box)
            trial[ax] = full[ax]
            if all_ok(trial):
                box = trial
        for ax in order:  # then widen each named field to every value that keeps the box all holes
            if len(box[ax]) == len(full[ax]):
                continue
            part = sub(ok, [*box[:ax], full[ax], *box[ax + 1:]])
            per_value = part.all(axis=tuple(a for a in range(nd) if a != ax)) if nd > 1 else part
            box[ax] = [v for v in full[ax] if per_value[v]]
        return box

    out: list[HolePattern] = []
    while len(out) < max_patterns:
        flat = np.flatnonzero(remaining)
        if not len(flat):
            break
        best: tuple[int, list[list[int]], list[int]] | None = None
        for k in range(min(_SEEDS, len(flat))):  # a few seeds spread over the holes left; keep the best box
            cell = [int(i) for i in np.unravel_index(int(flat[k * len(flat) // _SEEDS]), grid.shape)]
            box = grow(cell)
            gain = int(sub(remaining, box).sum())
            if best is None or gain > best[0]:
                best = (gain, box, cell)
        assert best is not None
        _, box, cell = best
        pattern: dict[str, Any] = {}
        parts = []
        for f, idx in zip(fields, box):
            if len(idx) == grid.shape[fields.index(f)]:
                continue
            vals = [s.values[f][i] for i in idx]
            pattern[f] = vals[0] if len(vals) == 1 else tuple(vals)
            parts.append(_describe(f, vals, s.values[f]))
        example = {f: s.values[f][i] for f, i in zip(fields, cell)}
        out.append(HolePattern(pattern, int(sub(holes, box).sum()), example,
                               text=", ".join(parts) or "(every configuration)"))
        remaining[np.ix_(*box)] = False
    out.sort(key=lambda p: (-p.holes, len(p.pattern)))
    return out, int(remaining.sum())


def coverage_report(config: Config | None = None, *, all_fields: bool = False, role: Any = ANY,
                    max_patterns: int = 8, vllm: str | None = None) -> CoverageReport:
    """Holes per platform / GPU generation and dead rules of one release's rules (see the module doc).

    config: restrict to the completions of this partial config (its ANY fields are swept, its
    hardware fields choose the groups, its release answers); default: MODEL_FIELDS free on every
    platform and GPU of `vllm` (default: the default release).
    """
    from .config import parse_vllm
    from .guards import require_config, require_int
    if config is not None:
        require_config(config)
    require_int("max_patterns", max_patterns, 0, 1024)
    version = config.vllm if config is not None else (parse_vllm(vllm) if vllm is not None else default_version())
    rules = rules_for(version)
    if config is None:
        config = Config(platform=ANY, compute_capability=ANY, rocm_arch=ANY, vllm=version,
                        **{f: ANY for f in MODEL_FIELDS})
    swept = tuple(f for f in config.free_fields if f not in HARDWARE) + (("role",) if role is ANY else ())
    groups = []
    seen: set[tuple[str, str | None]] = set()  # (list, backend) pairs the groups select (dead-rule evidence)
    too_large: set[str] = set()  # platforms whose every-field sweep does not fold (all_fields)
    for plat, label, hw in _groups(rules, config):
        changes = {k: v for k, v in hw.items() if getattr(config, k) is ANY or k == "platform"}
        base = config.replace(**changes)
        s = sweep(base, role=role)
        if role is ANY and base.backend is None:
            seen |= {k for k, n in s.by_list().items() if n}
        counts = s.by_backend()
        total, holes = len(s), counts.get(None, 0)
        every = None
        if all_fields:
            every = base.replace(**{f: ANY for f in FIELD_NAMES if f not in (*HARDWARE, "backend")
                                    and getattr(base, f) is not ANY})
            try:
                full = sweep(every, role=role)
            except ConfigError:  # too many fields read together (vLLM 0.33's steps): the model facts' counts
                every = None
                too_large.add(plat)
            else:
                counts = full.by_backend()
                total, holes = len(full), counts.get(None, 0)
        patterns: list[HolePattern] = []
        uncovered = 0
        if s.by_backend().get(None, 0):
            if s.raw_size <= 4_000_000:
                patterns, uncovered = _patterns(s, max_patterns)
                if every is not None:  # count each pattern's holes in the whole space, and say if it stays all holes
                    uncovered = 0
                    full_patterns = []
                    for p in patterns:
                        n_holes, complete = 0, True
                        for one in p.completions():
                            fixed = {k: v for k, v in one.items() if k != "role"}
                            try:
                                c = sweep(every.replace(**fixed), role=one.get("role", role)).by_backend()
                            except ConfigError:
                                continue
                            n_holes += c.get(None, 0)
                            complete = complete and set(c) <= {None}
                        full_patterns.append(HolePattern(p.pattern, n_holes, p.example, complete=complete,
                                                         text=p.text))
                    patterns = full_patterns
            else:
                # too many combinations to draw patterns: a few holes as examples
                patterns = [HolePattern({}, 0, a, text="example: " + ", ".join(f"{k}={_show(v)}" for k, v in a.items()))
                            for a, _ in s.rows(None, limit=3)]
        hardware = {k: v for k, v in hw.items() if v is not None}
        groups.append(GroupCoverage(plat, label, hardware, total, holes, counts, tuple(patterns), uncovered))

    # Dead rules: the whole space, every field free, automatic selection only.
    explicit = tuple(b for b, x in rules.backends.items() if x.explicit_only)
    whole = Config(**{f: ANY for f in FIELD_NAMES if f != "backend"}, backend=None, vllm=version)
    try:
        ws = sweep(whole, role=ANY)
    except ConfigError:  # the whole space does not fold (vLLM 0.33's steps before the lists read most fields)
        ws = None
    decode_whole = False
    if ws is not None:
        by_list = {k for k, n in ws.by_list().items() if n}
        whole_space = len(ws)
        never = None
    else:
        by_list, never = _witnessed(rules, version, seen)
        whole_space = 0
        # the decode role alone may still fold (0.16/0.17: only their MLA prefill rows read a decode twin): its
        # lists' entries are then reached or not by enumeration, not by witness
        try:
            wd = sweep(whole, role="decode")
        except ConfigError:
            wd = None
        if wd is not None:
            decode_whole = True
            reached_d = {k for k, n in wd.by_list().items() if n}
            by_list |= reached_d
            never |= {(pl.name, e.backend) for pl in rules.lists if _decode_only(pl) for e in pl.entries
                      if (pl.name, e.backend) not in reached_d}
    reached = {b for _, b in by_list if b is not None}
    unreached = []
    undecided = []
    for pl in rules.lists:
        for e in pl.entries:
            if rules.backends[e.backend].explicit_only or (pl.name, e.backend) in by_list:
                continue
            if never is None or (pl.name, e.backend) in never:
                unreached.append((pl.name, e.backend))
            else:
                undecided.append((pl.name, e.backend))
    maybe = {b for _, b in undecided}
    dead = tuple(b for b in rules.backends if b not in reached and b not in explicit and b not in maybe)
    notes = []
    if all_fields and len(too_large) < len({g.platform for g in groups}):
        notes.append("Counts cover every field; patterns are drawn with vLLM's environment switches at their defaults.")
    if too_large:
        notes.append(f"On {', '.join(sorted(too_large))} the counts are over the swept fields only: with every field free, "
                     "the steps before the priority lists read too many fields together to fold.")
    if ws is None:
        notes.append(f"vLLM {rules.vllm}'s whole space does not fold into one sweep: a list entry is reached when a "
                     "configuration selecting it was found (the groups above, a sweep over each model route's fields), "
                     "never reached when no configuration makes it valid where its list applies."
                     + (" The decode role's lists are read from their own whole-space sweep (it folds)."
                        if decode_whole else ""))
        if undecided:
            notes.append("Valid somewhere but not seen selected (other switches or model dimensions may reach them): "
                         + "; ".join(f"{b} in '{pl}'" for pl, b in undecided))
    return CoverageReport(swept, all_fields, tuple(groups), dead, explicit, tuple(unreached), whole_space,
                          tuple(notes))


def _decode_only(pl: Any) -> bool:
    """Whether only the decode role reaches priority list `pl` (its `when` reads the role and refuses MLA prefill)."""
    lits = [lit for lit in pl.when if lit.field == "role"]
    return bool(lits) and all(lit.pred("decode") and not lit.pred("mla_prefill") for lit in lits)


def _witnessed(rules: Any, version: str, seen: set[tuple[str, str | None]]) -> tuple[set[Any], set[Any]]:
    """Where the whole space does not fold: ((list, backend) pairs automatic selection is seen to reach,
    list entries no configuration can reach). Seen: `seen` (the pairs the report's groups select) and each
    model route's backend by a sweep over the fields its condition reads. Proved unreachable: no completion
    makes the entry valid while its list applies (the bitset reachability of attnsolve.solver.reach). An
    entry in neither set is undecided (valid somewhere, but not seen selected)."""
    from .selection import compiled_rules
    from .solver.reach import reach_for
    out = set(seen)
    names = set(Config(vllm=version, platform="cpu", dtype="bfloat16").field_names)
    for pl in {pl.platform: pl for pl in rules.lists}.values():  # each platform's model routes
        routes = [*pl.model_routes, *pl.model_backend]
        for r in routes:
            fields = sorted({lit.field for lit in r.when} & names - {"backend", "platform"})
            kw: dict[str, Any] = {f: ANY for f in fields}
            if pl.platform == "cuda":
                kw["compute_capability"] = ANY
            elif pl.platform == "rocm":
                kw["rocm_arch"] = ANY
            try:
                s = sweep(Config(vllm=version, platform=pl.platform, dtype="bfloat16", backend=None, **kw))
            except ConfigError:
                continue
            out |= {k for k, n in s.by_list().items() if n}
    comp = compiled_rules(Config(vllm=version, platform="cpu", dtype="bfloat16"))
    reach = reach_for(comp)
    facts: dict[str, Any] = {f: ANY for f in names}
    facts["backend"] = None
    facts["role"] = ANY
    units = reach.units(facts)
    never: set[tuple[str, str]] = set()
    for i, pl in enumerate(rules.lists):
        p, masks = comp.plan(pl, None)
        base = comp.list_need(i)
        for cand, m in zip(p.candidates, masks):
            if (pl.name, cand.backend) in out:
                continue
            if pl.error or base < 0 or units is None or not reach.reachable(facts, base | m, units):
                never.add((pl.name, cand.backend))
    return out, never
