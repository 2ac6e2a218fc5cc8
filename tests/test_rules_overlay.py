"""A release folder written as edits on another (`[ruleset] base`): the merge rules and the loader's use of them.

Why: most packaged releases are edit folders, so a wrong merge would change every answer of a release
silently; these tests pin each merge rule on small tables and on real folders.
"""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path

import pytest

from attnsolve.rules.loader import RULES_ROOT, load_rules
from attnsolve.rules.overlay import merge_file
from attnsolve.rules.problems import RulesError


def merged(base: dict, edits: dict) -> tuple[dict, list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    out = merge_file(base, edits, lambda loc, msg: problems.append((loc, msg)))
    return out, problems


def test_tables_merge_key_by_key_and_values_replace():
    base = {"backends": {"A": {"dtypes": ["float16"], "head_sizes": [64, 128]}, "B": {"dtypes": ["float32"]}}}
    out, problems = merged(base, {"backends": {"A": {"dtypes": ["bfloat16"]}, "C": {"dtypes": ["float16"]}}})
    assert problems == []
    assert out == {"backends": {"A": {"dtypes": ["bfloat16"], "head_sizes": [64, 128]},
                                "B": {"dtypes": ["float32"]}, "C": {"dtypes": ["float16"]}}}
    assert base["backends"]["A"]["dtypes"] == ["float16"]  # the base is not changed


def test_remove_replace_and_remove_keys():
    base = {"backends": {"A": {"dtypes": ["float16"], "head_sizes": [64]}, "B": {"dtypes": ["float32"], "x": 1}}}
    out, problems = merged(base, {"backends": {"A": {"_remove": True},
                                               "B": {"_replace": True, "dtypes": ["bfloat16"]}}})
    assert problems == []
    assert out == {"backends": {"B": {"dtypes": ["bfloat16"]}}}
    out, problems = merged(base, {"backends": {"B": {"_remove_keys": ["x"]}}})
    assert problems == [] and out["backends"]["B"] == {"dtypes": ["float32"]}


def test_named_arrays_merge_by_name_in_order():
    base = {"platforms": {"cuda": {"lists": [{"name": "a", "entries": ["X"]}, {"name": "b", "entries": ["Y"]},
                                             {"name": "catch-all", "entries": ["Z"]}]}}}
    edits = {"platforms": {"cuda": {"lists": [
        {"name": "b", "entries": ["Y2"]},
        {"name": "a", "_remove": True},
        {"name": "new", "entries": ["N"], "_before": "catch-all"},
        {"name": "last", "entries": ["L"]},
    ]}}}
    out, problems = merged(base, edits)
    assert problems == []
    assert [(e["name"], e["entries"]) for e in out["platforms"]["cuda"]["lists"]] == [
        ("b", ["Y2"]), ("new", ["N"]), ("catch-all", ["Z"]), ("last", ["L"])]


def test_unnamed_arrays_replace_whole():
    base = {"backends": {"A": {"checks": [{"reason": "r1"}, {"reason": "r2"}]}}}
    out, problems = merged(base, {"backends": {"A": {"checks": [{"reason": "r3"}]}}})
    assert problems == [] and out["backends"]["A"]["checks"] == [{"reason": "r3"}]


@pytest.mark.parametrize("edits, where", [
    ({"backends": {"GONE": {"_remove": True}}}, "backends.GONE"),
    ({"lists": [{"name": "nope", "_remove": True}]}, "lists['nope']"),
    ({"lists": [{"name": "n", "_before": "nope"}]}, "lists['n']._before"),
    ({"backends": {"A": {"_remove_keys": ["nope"]}}}, "backends.A._remove_keys"),
    ({"backends": {"NEW": {"_remove_keys": ["x"]}}}, "backends.NEW._remove_keys"),
])
def test_edits_that_miss_their_target_are_reported(edits, where):
    base = {"backends": {"A": {"dtypes": ["float16"]}}, "lists": [{"name": "a"}, {"name": "b"}]}
    _, problems = merged(base, edits)
    assert [loc for loc, _ in problems] == [where]


def same_rules(a, b, *, but: tuple[str, ...] = ()) -> list[str]:
    """The RuleSet fields (compared by value; RuleSet compares by identity) that differ, `sources` aside."""
    return [f.name for f in fields(a) if f.name not in ("sources", *but) and getattr(a, f.name) != getattr(b, f.name)]


def _edit_folder(tmp_path: Path, ruleset: str, **files: str) -> Path:
    folder = tmp_path / "vllm-0.99"
    folder.mkdir()
    (folder / "ruleset.toml").write_text(ruleset)
    for name, text in files.items():
        (folder / f"{name}.toml").write_text(text)
    return folder


def test_a_folder_of_edits_loads_as_its_base_with_the_edits(tmp_path):
    newest = RULES_ROOT / "vllm-0.33"
    folder = _edit_folder(tmp_path, '[ruleset]\nbase = "0.33"\nvllm = "0.99"\nread_from = "test"\nsummary = "s"\n',
                          cuda='[backends.FLEX_ATTENTION]\ndtypes = ["float32"]\n')
    base, edited = load_rules(newest), load_rules(folder)
    assert edited.vllm == "0.99" and edited.read_from == "test"
    assert dict(edited.backends["FLEX_ATTENTION"].caps.items)["dtypes"] == ("float32",)
    # everything else is the base's, exactly (FLEX_ATTENTION has no children)
    assert all(b.parent != "FLEX_ATTENTION" for b in base.backends.values())
    assert {k: v for k, v in edited.backends.items() if k != "FLEX_ATTENTION"} == {
        k: v for k, v in base.backends.items() if k != "FLEX_ATTENTION"}
    assert same_rules(base, edited, but=("backends", "vllm", "read_from", "summary", "settings")) == []
    texts = ("vllm", "read_from", "summary")
    assert {k: v for k, v in edited.settings.items() if k not in texts} == {
        k: v for k, v in base.settings.items() if k not in texts}
    assert any(s.endswith("vllm-0.33/cuda.toml") for s in edited.sources)


def test_an_empty_edit_folder_is_its_base(tmp_path):
    folder = _edit_folder(tmp_path, '[ruleset]\nbase = "0.33"\n')
    base, edited = load_rules(RULES_ROOT / "vllm-0.33"), load_rules(folder)
    assert same_rules(base, edited) == []


def test_a_copied_pair_reads_its_sibling_base(tmp_path):
    shutil.copytree(RULES_ROOT / "vllm-0.33", tmp_path / "vllm-0.33")
    folder = _edit_folder(tmp_path, '[ruleset]\nbase = "0.33"\n')
    assert all(str(tmp_path) in s for s in load_rules(folder).sources)


@pytest.mark.parametrize("ruleset, message", [
    ('[ruleset]\nbase = "0.01"\n', "no rule folder for base release '0.1'"),
    ('[ruleset]\nbase = "latest"\n', "must name a vLLM release"),
    ('[ruleset]\nbase = "0.99"\n', "cycle"),
])
def test_bad_bases_are_clear_errors(tmp_path, ruleset, message):
    folder = _edit_folder(tmp_path, ruleset)
    with pytest.raises(RulesError) as e:
        load_rules(folder)
    assert message in str(e.value)


def test_edit_mistakes_name_file_and_base(tmp_path):
    folder = _edit_folder(tmp_path, '[ruleset]\nbase = "0.33"\n', cuda='[backends.NO_SUCH]\n_remove = true\n')
    with pytest.raises(RulesError) as e:
        load_rules(folder)
    assert e.value.problems == (("cuda.toml", "backends.NO_SUCH", "the base has no such table to remove (edits on vLLM 0.33)"),)


def test_inline_tables_replace_whole():
    """A condition or a predicate is a value: merging key by key would keep the base's bounds and clauses."""
    base = {"backends": {"A": {"head_sizes": {"multiple_of": 8, "max": 512}, "variants": {"V": {"when": {"a": 1}}},
                               "checks": [{"reason": "r", "when": {"x": 1}}]}},
            "platforms": {"cuda": {"mla_prefill": {"skips": [1], "fallbacks": [2]}}}}
    edits = {"backends": {"A": {"head_sizes": {"max": 256}, "variants": {"V": {"when": {"b": 2}}}}},
             "platforms": {"cuda": {"mla_prefill": {"skips": [3]}}}}
    out, problems = merged(base, edits)
    assert problems == []
    assert out["backends"]["A"]["head_sizes"] == {"max": 256}
    assert out["backends"]["A"]["variants"]["V"]["when"] == {"b": 2}
    assert out["platforms"]["cuda"]["mla_prefill"] == {"skips": [3], "fallbacks": [2]}


# ---- the loader keeps a clean read of each folder (rules/loader.py _READ_MEMO) until a file of it or of its bases
# changes: every change a test or a rule author makes between two loads is seen


def test_a_kept_read_sees_an_edit_to_the_folder_or_to_its_base(tmp_path):
    import os
    shutil.copytree(RULES_ROOT / "vllm-0.33", tmp_path / "vllm-0.33")
    folder = _edit_folder(tmp_path, '[ruleset]\nbase = "0.33"\n', cuda='[backends.FLEX_ATTENTION]\ndtypes = ["float32"]\n')

    def dtypes() -> tuple:
        return dict(load_rules(folder).backends["FLEX_ATTENTION"].caps.items)["dtypes"]

    assert dtypes() == ("float32",)
    assert dtypes() == ("float32",)  # the kept read
    edit = folder / "cuda.toml"
    edit.write_text('[backends.FLEX_ATTENTION]\ndtypes = ["float16"]\n')
    os.utime(edit, ns=(1, 1))  # same size, another mtime: a change the signature sees whatever the clock
    assert dtypes() == ("float16",)
    edit.unlink()  # a file gone: the base's own value again
    base_cuda = tmp_path / "vllm-0.33" / "cuda.toml"
    assert dtypes() == dict(load_rules(tmp_path / "vllm-0.33").backends["FLEX_ATTENTION"].caps.items)["dtypes"]
    text = base_cuda.read_text()
    base_cuda.write_text(text.replace('summary = "', 'summary = "edited: ', 1))  # an edit to the base only
    assert load_rules(folder).backends != load_rules(RULES_ROOT / "vllm-0.33").backends


def test_a_base_appearing_beside_an_edit_folder_is_read(tmp_path):
    folder = _edit_folder(tmp_path, '[ruleset]\nbase = "0.33"\n')
    assert not any(str(tmp_path / "vllm-0.33") in s for s in load_rules(folder).sources)  # the packaged base
    shutil.copytree(RULES_ROOT / "vllm-0.33", tmp_path / "vllm-0.33")
    assert all(str(tmp_path) in s for s in load_rules(folder).sources)  # now the sibling


def test_release_documents_hands_out_a_copy():
    from attnsolve.rules.loader import release_documents
    docs = release_documents(RULES_ROOT / "vllm-0.18")
    docs["cuda.toml"].clear()  # damaged, as tests damage their copies
    assert release_documents(RULES_ROOT / "vllm-0.18")["cuda.toml"]
    assert load_rules(RULES_ROOT / "vllm-0.18").backends
