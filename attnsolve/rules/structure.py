"""Graph checks of the rules with networkx: inheritance must be a forest, lists must name real backends,
and every selectable backend must be reachable (in some priority list, or explicitly explicit-only)."""

from __future__ import annotations

from typing import Iterator, Mapping

import networkx as nx

from .model import RuleSet


def check_structure(rules: RuleSet, parents: Mapping[str, str | None], files: Mapping[str, str],
                    abstract: set[str]) -> Iterator[tuple[str, str, str]]:
    """Yield (file, location, message) for each structural problem."""
    inherit = nx.DiGraph()
    inherit.add_nodes_from(parents)
    for child, parent in parents.items():
        if parent is not None:
            inherit.add_edge(child, parent)
    for cycle in nx.simple_cycles(inherit):
        yield files.get(cycle[0], "?"), f"backends.{cycle[0]}.parent", "inheritance cycle: " + " -> ".join(cycle + cycle[:1])
    for child, parent in parents.items():
        if parent is not None and parent not in parents:
            yield files.get(child, "?"), f"backends.{child}.parent", f"names no backend: {parent!r}"

    # Priority graph: list -> entries. Every non-explicit backend must be in a list of each of its platforms.
    prio = nx.DiGraph()
    for pl in rules.lists:
        node = ("list", pl.platform, pl.name)
        prio.add_node(node)
        names = [e.backend for e in pl.entries]
        for i, name in enumerate(names):
            prio.add_edge(node, ("backend", name))
            if name in names[:i]:
                yield pl.source or pl.platform, f"platforms.{pl.platform}.lists {pl.name!r}", f"backend {name!r} listed twice"
    for name, b in rules.backends.items():
        if b.explicit_only:
            continue
        for plat in b.platforms:
            in_lists = [pl for pl in rules.lists if pl.platform == plat
                        and nx.has_path(prio, ("list", plat, pl.name), ("backend", name))] if prio.has_node(("backend", name)) else []
            manual = [pl for pl in rules.lists if pl.platform == plat and any(e.backend == name for e in pl.manual_accept)]
            # a backend listed on another platform may stay requestable here when this platform validates
            # requests (vLLM 0.33: FLEX_ATTENTION on ROCm / XPU)
            listed_elsewhere = any(pl.platform != plat and any(e.backend == name for e in pl.entries) for pl in rules.lists)
            requestable = listed_elsewhere and any(pl.platform == plat and pl.manual == "validate" for pl in rules.lists)
            if not in_lists and not manual and not requestable:
                yield files.get(name, "?"), f"backends.{name}", (
                    f"declared for platform {plat!r} but in none of its priority lists "
                    "(add it to a list or mark it explicit_only = true)")

    # Reachability inside a list: an entry with no checks at all accepts every query of its list, so
    # automatic selection never gets past it; later entries of that list are dead (a rules mistake
    # that vLLM's validated lists cannot have).
    for pl in rules.lists:
        for i, e in enumerate(pl.entries):
            b = rules.backends.get(e.backend)
            if b is None or b.checks or e.guards or e.when or b.variant_field is not None:
                continue
            for later in pl.entries[i + 1:]:
                yield pl.source or pl.platform, f"platforms.{pl.platform}.lists {pl.name!r}", (
                    f"entry {later.backend!r} can never be selected automatically: {e.backend!r} before it "
                    "has no checks and accepts every query of this list")


def release_graph(versions: Mapping[str, RuleSet]) -> nx.DiGraph:
    """Releases in order, each edge labelled with the backends added and removed: what `upgrade` walks."""
    g = nx.DiGraph()
    ordered = sorted(versions, key=lambda v: tuple(int(x) for x in v.split(".")))
    g.add_nodes_from(ordered)
    for a, b in zip(ordered, ordered[1:]):
        old, new = set(versions[a].backends), set(versions[b].backends)
        g.add_edge(a, b, added=tuple(sorted(new - old)), removed=tuple(sorted(old - new)))
    return g
