"""What a vLLM upgrade changes: one configuration (or a whole partial space) answered by two releases.

Why a module: users run every release between 0.17 and the newest, and the question before an
upgrade is "will my backend change, and why". Both answers come from the releases' own rule sets,
side by side in one process (one Engine each); nothing here knows any release's facts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from .config import ANY, Config, parse_vllm
from .errors import ConfigError, SelectionError
from .render import show
from .rules import versions


def vllm_versions() -> tuple[str, ...]:
    """The vLLM releases attnsolve answers for, oldest first ("0.17", "0.33"); drafts included."""
    return versions()


@dataclass(frozen=True, slots=True)
class Outcome:
    """One release's answer for one configuration: a backend (and variant) or vLLM's error text."""

    vllm: str
    backend: str | None
    variant: str | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None
    reasons: tuple[tuple[str, tuple[str, ...]], ...] = ()  # backend -> vLLM's reasons against it
    block_size: int | None = None  # the KV block size start-up sets (Selection.preferred_block_size)

    def __str__(self) -> str:
        if self.backend is None:
            return "no valid backend"
        return self.backend + (f" ({self.variant})" if self.variant else "")

    def reasons_of(self, backend: str | None) -> tuple[str, ...]:
        return next((r for b, r in self.reasons if b == backend), ())

    def to_dict(self) -> dict[str, Any]:
        return {"vllm": self.vllm, "selected": self.backend, "variant": self.variant, "warnings": list(self.warnings),
                "error": self.error, "reasons": {b: list(r) for b, r in self.reasons}, "block_size": self.block_size}


@dataclass(frozen=True, slots=True)
class Change:
    """A group of configurations whose backend moves old -> new, with a count and one example."""

    old: str
    new: str
    count: int
    example: Config

    def to_dict(self) -> dict[str, Any]:
        return {"old": self.old, "new": self.new, "count": self.count, "example": self.example.to_dict()}


@dataclass(frozen=True, slots=True)
class VersionComparison:
    """compare_versions' result. Full config: `old`/`new` and `why`. Partial: `changes` over `total` configs."""

    config: Config
    old_version: str
    new_version: str
    old: Outcome | None = None
    new: Outcome | None = None
    why: tuple[str, ...] = ()
    total: int = 0
    changed: int = 0
    changes: tuple[Change, ...] = field(default=())
    free: tuple[str, ...] = ()
    # (release, field, value): a fact the config gives that this release's rule set takes no input for, so its
    # answer is without it (a change it seems to explain may be the missing input, not the release)
    unread: tuple[tuple[str, str, Any], ...] = ()

    @property
    def differs(self) -> bool:
        if self.old is not None and self.new is not None:
            return ((str(self.old), self.old.warnings, self.old.error, self.old.block_size)
                    != (str(self.new), self.new.warnings, self.new.error, self.new.block_size))
        return self.changed > 0

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.old_version, "to": self.new_version, "config": self.config.to_dict(),
                "old": self.old.to_dict() if self.old else None, "new": self.new.to_dict() if self.new else None,
                "why": list(self.why), "total": self.total, "changed": self.changed, "free": list(self.free),
                "changes": [c.to_dict() for c in self.changes],
                "unread": [{"vllm": v, "field": f, "value": x} for v, f, x in self.unread]}

    def lines(self, mention: Iterable[str] | None = None) -> list[str]:
        """The comparison as text; `mention`: the unread facts to note (default all; the CLI notes the ones the
        user typed: a model fact one release does not read is expected, not news)."""
        shown = None if mention is None else frozenset(mention)
        notes = [f"  note: vLLM {v}'s selection does not read {f}: its answer is without {f}={show(x)}"
                 for v, f, x in self.unread if shown is None or f in shown]
        head = f"vLLM {self.old_version} -> {self.new_version}"
        if self.old is not None and self.new is not None:
            if not self.differs:
                return [f"{head}: no change ({self.new})", *notes]
            return [f"{head}: {self.old} -> {self.new}", *(f"  why: {w}" for w in self.why), *notes]
        out = [f"{head}: {self.changed} of {self.total} configurations change backend"
               + (f" (free: {', '.join(self.free)})" if self.free else "")]
        for c in self.changes:
            out.append(f"  {c.old} -> {c.new}: {c.count}, e.g. {_short(c.example, self.free)}")
        return out + notes

    def __str__(self) -> str:
        return "\n".join(self.lines())


def in_release(config: Config, version: str, keep: Iterable[str] | None = None) -> Config:
    """`config` asked of another release: fields that release does not declare are dropped, and a field left at
    its default in `config`'s release takes the other release's default (a user who never set a switch gets each
    release's own: vLLM 0.18.0 turned TRT-LLM ragged prefill off by default, 0.18.1 on again), unless `keep` names
    it (the fields the user set; None: every field at its default follows the release)."""
    if version == config.vllm:
        return config
    moved = config.replace(vllm=version)
    given = set(config.to_dict(only_changed=True)) | set(keep or ())
    defaulted = [f for f in config.to_dict() if f not in given and f != "vllm"]
    if not defaulted:
        return moved
    data = {k: v for k, v in moved.to_dict().items() if k not in defaulted}
    try:
        return Config(**data)
    except ConfigError:  # a pair the release defines together (gpu, compute_capability): keep the carried values
        return moved


def unread_facts(config: Config, versions_: Iterable[str]) -> tuple[tuple[str, str, Any], ...]:
    """(release, field, value) for each fact `config` sets away from its default that a release's rule set does
    not declare (in_release drops it there): an answer without it is not an answer about it."""
    from .engine import engine_for
    decls = engine_for(config.vllm).rules.fields
    out = []
    for v in versions_:
        kept = set(in_release(config, v).field_names)
        for f in config.field_names:
            x = getattr(config, f)
            if f in kept or x is None or x is ANY:
                continue
            d = decls.get(f)
            if d is not None and x == d.default:
                continue
            out.append((v, f, x))
    return tuple(out)


def outcome(config: Config, role: str | None = None) -> Outcome:
    """One release's answer, never raising for a selection failure (its text is kept instead)."""
    from .selection import solve
    try:
        sel = solve(config, role=role)
    except SelectionError as e:
        return Outcome(config.vllm, None, error=e.args[0].splitlines()[0],  # not str(e): that explains it
                       reasons=tuple((b, tuple(r)) for b, r in e.reasons.items()))
    reasons = tuple((r.backend, r.reasons) for r in sel.rejected)
    return Outcome(config.vllm, sel.backend, sel.variant, sel.warnings, sel.startup_error, reasons,
                   sel.preferred_block_size)


def compare_versions(config: Config, old: str, new: str, *, role: str | None = None,
                     max_configs: int = 20000, keep: Iterable[str] | None = None) -> VersionComparison:
    """What moving from vLLM `old` to `new` changes for `config` (full or partial).

    Full: both answers and why they differ (the old backend's reasons in the new release, or the
    new backend's reasons in the old one). Partial: every combination of the free fields' value
    classes (of both releases) is answered by both; changed ones are grouped old -> new.
    A field at its default in `config`'s release is at each release's own default (in_release); `keep`
    names fields whose value holds in both whatever the defaults (the ones the user set).
    """
    if not isinstance(config, Config):
        raise ConfigError("config", config, "an attnsolve.Config")
    old_v, new_v = parse_vllm(old), parse_vllm(new)
    unread = unread_facts(config, (old_v, new_v))
    keep = tuple(keep or ())
    if not config.is_partial:
        ca, cb = in_release(config, old_v, keep), in_release(config, new_v, keep)
        a, b = outcome(ca, role), outcome(cb, role)
        moved = _defaults_moved(ca, cb, b, role)
        why = _why(a, b)
        if moved:  # the order did not change the answer, a default did: no ranking line
            why = tuple(w for w in why if not (w.startswith(f"vLLM {b.vllm} ranks ")))
        return VersionComparison(config, old_v, new_v, a, b, moved + why, unread=unread)
    return replace(_compare_space(config, old_v, new_v, role, max_configs, keep), unread=unread)


def _defaults_moved(ca: Config, cb: Config, b: Outcome, role: str | None) -> tuple[str, ...]:
    """The settings the two releases default differently (in_release gave each its own) whose old default would
    change the new release's answer: a cause a backend change can have with no capability changed at all."""
    da, db = ca.to_dict(), cb.to_dict()
    out = []
    for f, va in da.items():
        if f in ("vllm", "gpu", "compute_capability") or f not in db or db[f] == va:
            continue
        try:
            other = outcome(cb.replace(**{f: va}), role)
        except ConfigError:
            continue
        if str(other) != str(b):
            out.append(f"{f} defaults to {show(db[f])} in vLLM {cb.vllm} (was {show(va)}; with {show(va)} vLLM "
                       f"{cb.vllm} selects {other})")
    return tuple(out)


def _why(a: Outcome, b: Outcome) -> tuple[str, ...]:
    out: list[str] = []
    if a.backend != b.backend:
        if a.backend is not None and b.reasons_of(a.backend):
            out.append(f"{a.backend} in vLLM {b.vllm}: {'; '.join(b.reasons_of(a.backend))}")
        elif a.backend is not None and b.backend is not None:
            out.append(f"vLLM {b.vllm} ranks {b.backend} before {a.backend}")
        if b.backend is not None and a.reasons_of(b.backend):
            out.append(f"{b.backend} in vLLM {a.vllm}: {'; '.join(a.reasons_of(b.backend))}")
        if b.backend is None and b.error:
            out.append(f"vLLM {b.vllm}: {b.error}")
        if a.backend is None and a.error:
            out.append(f"vLLM {a.vllm}: {a.error}")
    elif a.variant != b.variant:
        out.append(f"{a.backend} runs as {b.variant or 'its default'} in vLLM {b.vllm} (was {a.variant})")
    new_w = [w for w in b.warnings if w not in a.warnings]
    out += [f"new warning in vLLM {b.vllm}: {w}" for w in new_w]
    if a.error != b.error and a.backend is not None and b.backend is not None:
        out.append(f"start-up in vLLM {b.vllm}: {b.error or 'starts'} (was: {a.error or 'starts'})")
    if a.block_size != b.block_size and a.block_size is not None and b.block_size is not None:
        out.append(f"KV cache block size at start-up in vLLM {b.vllm}: {b.block_size} (was {a.block_size})")
    return tuple(out)


def _values(config: Config, name: str, releases: Iterable[str]) -> list[Any]:
    from .engine import engine_for
    from .solver.domains import value_classes
    seen: dict[Any, None] = {}
    for v in releases:
        rules = engine_for(v).rules
        if name in config.field_names or name in rules.fields:
            for c in value_classes(rules, name):
                seen.setdefault(c.representative, None)
    return list(seen)


def _compare_space(config: Config, old_v: str, new_v: str, role: str | None, max_configs: int,
                   keep: tuple[str, ...] = ()) -> VersionComparison:
    free = tuple(f for f in config.free_fields if f != "backend")
    kept = (*keep, *free)  # a free field's value is one the space enumerates: the same in both releases
    options = [_values(config, f, (old_v, new_v)) for f in free]
    total = 1
    for o in options:
        total *= max(1, len(o))
    combos: Iterable[tuple[Any, ...]] = itertools.product(*options)
    if total > max_configs:  # a deterministic, evenly spread subset
        step = total / max_configs
        picks = {int(i * step) for i in range(max_configs)}
        combos = (c for i, c in enumerate(itertools.product(*options)) if i in picks)
    groups: dict[tuple[str, str], list[Any]] = {}
    seen = changed = 0
    base = {f: (None if f == "backend" and getattr(config, f) is ANY else getattr(config, f)) for f in config.field_names}
    base["vllm"] = config.vllm
    for combo in combos:
        data = dict(base, **dict(zip(free, combo)))
        try:
            full = Config(**data)
        except ConfigError:
            continue  # an inconsistent combination (a field of another platform): not a configuration
        try:
            a, b = outcome(in_release(full, old_v, kept), role), outcome(in_release(full, new_v, kept), role)
        except ConfigError:
            continue
        seen += 1
        if str(a) != str(b):
            changed += 1
            g = groups.setdefault((str(a), str(b)), [0, full])
            g[0] += 1
    changes = tuple(Change(o, n, c, ex) for (o, n), (c, ex) in sorted(groups.items(), key=lambda kv: -kv[1][0]))
    return VersionComparison(config, old_v, new_v, total=seen, changed=changed, changes=changes, free=free)


def _short(config: Config, free: tuple[str, ...]) -> str:
    from .render import show  # values as users type them: true/false, 9.0
    return ", ".join(f"{f}={show(getattr(config, f))}" for f in free)
