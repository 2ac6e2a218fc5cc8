"""Stateful test: edit a copy of the rules step by step; the solvers and the oracle must keep agreeing.

A hypothesis RuleBasedStateMachine holds the rule documents (TOML as dicts). Each rule edits them (add a
backend cloned from another, remove one, drop or add a capability value, narrow a head-size range, change a
compute-capability bound, reorder a priority list), writes them to a temporary folder, loads them and makes
them active with use_rules. The invariant: solve (compiled), solve_csp and the oracle pick the same backend
on a few configs. Breaking edits (an inheritance cycle, a dangling parent or list entry) must be refused with
a RulesError that names the culprit, and leave the previous rules in force.
"""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

import oracle
from attnsolve import ConfigError, InvalidBackendError, NoValidBackendError, solve, vllm_versions
from attnsolve.rules import RulesError, default_rules, load_rules, override, set_rules
from attnsolve.selection import solve_csp
from strategies import budget, configs, is_edit_folder, packaged_docs, write_rules



class RulesEditing(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.docs = packaged_docs()
        self.previous = override()  # None: no override; restoring default_rules() would pin one release
        self.rules = default_rules()
        self.counter = 0

    def teardown(self) -> None:
        set_rules(self.previous)
        self.tmp.cleanup()

    # -- helpers ---------------------------------------------------------------------------------
    def _backends(self) -> list[tuple[str, str]]:
        return sorted((f, b) for f, d in self.docs.items() for b in d.get("backends", {}))

    def _concrete(self) -> list[tuple[str, str]]:
        return [(f, b) for f, b in self._backends() if not self.docs[f]["backends"][b].get("abstract")]

    def _lists(self) -> list[tuple[str, str, int]]:
        out = []
        for f, d in self.docs.items():
            for plat, p in d.get("platforms", {}).items():
                for i, pl in enumerate(p.get("lists", [])):
                    if "entries" in pl:  # an `error` list (0.33's XPU decision tree) has no entries to edit
                        out.append((f, plat, i))
        return sorted(out)

    def _apply(self, docs: dict) -> RulesError | None:
        folder = Path(self.tmp.name) / f"v{self.counter}"
        self.counter += 1
        write_rules(docs, folder)
        try:
            rules = load_rules(folder)
        except RulesError as e:
            return e
        self.docs = docs
        self.rules = rules
        set_rules(rules)  # what use_rules does, kept active across steps (restored in teardown)
        return None

    def _shadowing_refused(self, err: RulesError | None, before) -> bool:
        """True when `err` refuses the edit only for a dead list entry: the edit placed an entry behind one
        with no checks, which accepts every query of its list (the loader's structure check; 0.33's CPU MLA
        prefill list ends with such an entry). The previous rules must stay in force."""
        if err is None:
            return False
        assert all("can never be selected automatically" in p[2] for p in err.problems), err
        assert self.rules is before
        return True

    # -- edits -----------------------------------------------------------------------------------
    @rule(data=st.data())
    def add_backend(self, data):
        docs = copy.deepcopy(self.docs)
        f, src = data.draw(st.sampled_from(self._concrete()), label="clone of")
        name = f"NEW_{self.counter}"
        docs[f]["backends"][name] = copy.deepcopy(docs[f]["backends"][src])
        docs[f]["backends"][name].pop("parent", None) if "parent" not in docs[f]["backends"][src] else None
        placed: set[str] = set()
        for lf, plat, i in self._lists():
            pl = docs[lf]["platforms"][plat]["lists"][i]
            if any((e if isinstance(e, str) else e["backend"]) == src for e in pl.get("entries", [])):
                pos = data.draw(st.integers(0, len(pl["entries"])), label="position")
                pl["entries"].insert(pos, name)
                placed.add(plat)
        if not placed:
            docs[f]["backends"][name]["explicit_only"] = True
        else:  # a backend must be in a list of every platform it declares (the structure check)
            docs[f]["backends"][name]["platforms"] = sorted(placed)
        before = self.rules
        err = self._apply(docs)
        if not self._shadowing_refused(err, before):
            assert err is None, f"adding {name} (clone of {src}) was refused: {err}"
        self._agree(data)

    @rule(data=st.data())
    def remove_backend(self, data):
        docs = copy.deepcopy(self.docs)
        f, name = data.draw(st.sampled_from(self._concrete()), label="remove")
        children = [b for _, b in self._backends() if self.docs[_]["backends"][b].get("parent") == name]
        del docs[f]["backends"][name]
        for lf, plat, i in self._lists():
            pl = docs[lf]["platforms"][plat]["lists"][i]
            for key in ("entries", "manual_accept"):
                if key in pl:
                    pl[key] = [e for e in pl[key] if (e if isinstance(e, str) else e["backend"]) != name]
        err = self._apply(docs)
        if children:
            assert err is not None and name in str(err), f"removing parent {name} of {children} was accepted"
        elif err is not None:
            # an emptied list, a platform left with no list for a backend, or a platform setting
            # (start_backend, rewrites) naming the removed backend is a legitimate refusal
            assert any("entr" in p[2] or "list" in p[2] or "empty" in p[2] or "names no backend" in p[2]
                       for p in err.problems), err
        self._agree(data)

    @rule(data=st.data())
    def drop_capability_value(self, data):
        docs = copy.deepcopy(self.docs)
        f, name = data.draw(st.sampled_from(self._concrete()), label="backend")
        b = docs[f]["backends"][name]
        keys = [k for k in ("dtypes", "kv_cache_dtypes", "kernel_block_sizes", "attn_types") if isinstance(b.get(k), list)
                and len(b[k]) > 1]
        if not keys:
            self._agree(data)
            return
        k = data.draw(st.sampled_from(keys), label="capability")
        b[k].pop(data.draw(st.integers(0, len(b[k]) - 1), label="index"))
        err = self._apply(docs)
        assert err is None, err
        self._agree(data)

    @rule(data=st.data())
    def change_head_sizes(self, data):
        docs = copy.deepcopy(self.docs)
        f, name = data.draw(st.sampled_from(self._concrete()), label="backend")
        docs[f]["backends"][name]["head_sizes"] = data.draw(st.one_of(
            st.lists(st.sampled_from([32, 64, 80, 96, 128, 256, 576]), min_size=1, max_size=4, unique=True),
            st.builds(lambda lo, hi: {"min": lo, "max": hi}, st.sampled_from([16, 32, 64]), st.sampled_from([128, 256, 512])),
            st.builds(lambda m: {"multiple_of": m}, st.sampled_from([8, 16, 32, 64]))), label="head_sizes")
        assert self._apply(docs) is None
        self._agree(data)

    @rule(data=st.data())
    def change_compute_capability(self, data):
        docs = copy.deepcopy(self.docs)
        f, name = data.draw(st.sampled_from(self._concrete()), label="backend")
        docs[f]["backends"][name]["compute_capability"] = data.draw(st.one_of(
            st.builds(lambda lo: {"min": lo}, st.sampled_from(["7.5", "8.0", "8.9", "9.0", "10.0"])),
            st.builds(lambda m: {"major_in": m}, st.lists(st.sampled_from([8, 9, 10, 12]), min_size=1, max_size=2, unique=True)),
            st.builds(lambda hi: {"max": hi}, st.sampled_from(["8.9", "9.0", "12.1"]))), label="cc")
        assert self._apply(docs) is None
        self._agree(data)

    @rule(data=st.data())
    def reorder_priorities(self, data):
        docs = copy.deepcopy(self.docs)
        lf, plat, i = data.draw(st.sampled_from(self._lists()), label="list")
        pl = docs[lf]["platforms"][plat]["lists"][i]
        pl["entries"] = data.draw(st.permutations(pl["entries"]), label="order")
        before = self.rules
        err = self._apply(docs)
        if not self._shadowing_refused(err, before):
            assert err is None, err
        self._agree(data)

    @rule(data=st.data())
    def introduce_cycle_is_refused(self, data):
        docs = copy.deepcopy(self.docs)
        (fa, a), (fb, b) = data.draw(st.lists(st.sampled_from(self._concrete()), min_size=2, max_size=2,
                                              unique=True), label="pair")
        docs[fa]["backends"][a]["parent"] = b
        docs[fb]["backends"][b]["parent"] = a
        before = self.rules
        err = self._apply(docs)
        assert err is not None and "cycle" in str(err), f"a cycle {a} <-> {b} was accepted"
        assert any(a in p[1] or b in p[1] for p in err.problems), err.problems
        assert self.rules is before
        self._agree(data)

    @rule(data=st.data())
    def dangling_reference_is_refused(self, data):
        docs = copy.deepcopy(self.docs)
        kind = data.draw(st.sampled_from(["entry", "parent"]), label="kind")
        if kind == "entry":
            lf, plat, i = data.draw(st.sampled_from(self._lists()), label="list")
            docs[lf]["platforms"][plat]["lists"][i]["entries"].append("NO_SUCH_BACKEND")
        else:
            f, name = data.draw(st.sampled_from(self._concrete()), label="backend")
            docs[f]["backends"][name]["parent"] = "NO_SUCH_BACKEND"
        before = self.rules
        err = self._apply(docs)
        assert err is not None and "NO_SUCH_BACKEND" in str(err), f"a dangling {kind} was accepted"
        assert all(p[0] and p[1] for p in err.problems)
        assert self.rules is before
        self._agree(data)

    # -- the invariant, checked after every edit -------------------------------------------------
    def _agree(self, data) -> None:
        for _ in range(4):
            config = data.draw(configs(self.rules), label="config")
            role = "decode"
            ans = oracle.select(self.rules, config, role)
            try:
                got = solve(config, role=role).backend
            except (NoValidBackendError, InvalidBackendError):
                got = None
            except ConfigError:
                assert ans.error is not None
                continue
            assert got == ans.backend, (config, got, ans.backend, ans.tried)
            assert solve_csp(config, role=role) == ans.backend

    @rule(data=st.data())
    def solvers_agree(self, data):
        self._agree(data)


# Per release (compared with the oracle, which knows them all: oracle.KNOWS). A hypothesis state machine is a
# unittest class, which pytest does not parametrise: each release gets its own class, pinned with
# pytest.mark.vllm; under dev / ci they share the examples (as every_release tests do, conftest.py): 8 runs
# of 6 steps each, about 30 s for 0.33 (each edit reloads and recompiles its rules) and 7 s for 0.17 on the
# shared 2-core box.
RELEASES = tuple(v for v in vllm_versions() if v in oracle.KNOWS)
_SHARE = 1 if budget(15) > 15 else len(RELEASES)
RulesEditing.TestCase.settings = settings(max_examples=max(5, math.ceil(budget(15) / _SHARE)), stateful_step_count=6,
                                          deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# An edit folder (0.27-0.32, 0.34) has its base's constructs: under dev / ci its machine runs 2 examples (every
# release still edited and compared each run; 5 for the full sets 0.17 and 0.33; the nightly budget for all).
_EDIT_SETTINGS = settings(RulesEditing.TestCase.settings, max_examples=2) if _SHARE > 1 else RulesEditing.TestCase.settings
# Under dev / ci (_SHARE > 1) the machine runs for the full sets, the oldest and newest release and every third
# edit folder between them (each run reloads and recompiles rules: 5-15 s a release on the 2-core box, two
# minutes for all twenty); nightly runs every release.
_EDITS = [v for v in RELEASES if is_edit_folder(v) and v not in (RELEASES[0], RELEASES[-1])]
MACHINES = RELEASES if _SHARE == 1 else tuple(v for v in RELEASES if v not in _EDITS or _EDITS.index(v) % 3 == 0)
for _v in MACHINES:
    _name = "TestRulesEditing_vllm" + _v.replace(".", "_")
    _attrs = {"settings": _EDIT_SETTINGS} if is_edit_folder(_v) else {}
    globals()[_name] = pytest.mark.vllm(_v)(type(_name, (RulesEditing.TestCase,), _attrs))
del _v, _name, _attrs
