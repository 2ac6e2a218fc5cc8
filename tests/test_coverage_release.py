"""coverage_report / `matrix --all` answer for the release asked. On vLLM 0.33 (whose steps before the lists read
most fields together, so its whole space does not fold into one sweep) the dead-rule part is decided from the
configurations seen selected and from reachability; checked here against 0.17's whole-space enumeration."""

from __future__ import annotations

import pytest

from attnsolve import ANY, Config
from attnsolve.config import FIELD_NAMES
from attnsolve.coverage import _decode_only, _witnessed, coverage_report
from attnsolve.rules import rules_for
from attnsolve.sweep import sweep


@pytest.mark.vllm("0.33")
def test_a_033_question_answers_for_033():
    r = coverage_report(Config(vllm="0.33", gpu="H100", dtype=ANY, head_size=ANY), role="decode")
    assert [g.platform for g in r.groups] == ["cuda"] and r.groups[0].configurations > 0
    assert r.whole_space == 0 and any("does not fold" in n for n in r.notes)
    d = r.to_dict()
    assert d["whole_space"] == 0 and d["notes"]


def test_witnesses_agree_with_the_enumeration_on_017():
    """The 0.33 path on 0.17's decode role: what it sees selected is selected in the whole decode space, and what it
    proves never reached is never reached there (0.17's whole space with the role free no longer folds since its MLA
    layer reads the decode twin; its decode role's still does, and the report reads it: tests/test_coverage.py)."""
    rules = rules_for("0.17")
    ws = sweep(Config(**{f: ANY for f in FIELD_NAMES if f != "backend"}, backend=None, vllm="0.17"), role="decode")
    full = {k for k, n in ws.by_list().items() if n}
    groups = sweep(Config(vllm="0.17", platform="cuda", compute_capability="9.0", dtype=ANY, head_size=ANY,
                          use_mla=ANY, kv_cache_dtype=ANY), role="decode")
    seen = {k for k, n in groups.by_list().items() if n}
    reached, never = _witnessed(rules, "0.17", seen)
    decode_lists = {pl.name for pl in rules.lists if _decode_only(pl)}
    assert seen and reached >= seen and {k for k in reached if k[0] in decode_lists} <= full
    assert not never & full