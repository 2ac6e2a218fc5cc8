"""Fuzzing the rules loader: malformed rule files always give a RulesError naming the file and the key.

Inputs: the packaged rule files with text damage (truncation, deleted spans, inserted bytes and unicode),
structural damage (a value anywhere in a document replaced by a value of another type, a huge number,
a deep nest), and hand-made worst cases. The loader must return a RuleSet or raise RulesError whose
problems each carry (file, location, message); never another exception, never a hang.
"""

from __future__ import annotations

import tomllib

import contextlib
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnsolve.rules import RulesError, default_version, load_rules
from attnsolve.rules.model import RuleSet
from strategies import budget, dump_toml, packaged_docs

# Every release: the damaged inputs come from the files of the release the test runs for (the default
# release the every_release fixture sets), read when a test first draws from them (R()).
pytestmark = pytest.mark.every_release
PLATFORMS = ("cuda", "rocm", "cpu", "xpu")


class _Files:
    """One release's rule files: texts, parsed documents, and the (file, path) places the tests damage."""

    def __init__(self, version: str):
        from attnsolve.rules.sets import info
        folder = info(version).path
        self.DOCS = packaged_docs(version)  # an edit folder's files merged into its base's, as loaded
        self.FILES = sorted(self.DOCS)
        # the texts as written where the folder is complete, else the merged tables written out (an edit
        # folder alone is no rule set: its base supplies the rest)
        own = tomllib.loads((folder / "ruleset.toml").read_text(encoding="utf-8")).get("ruleset", {})
        complete = "base" not in own
        self.TEXTS = {name: (folder / name).read_text(encoding="utf-8") if complete else dump_toml(self.DOCS[name])
                      for name in self.FILES}
        self.PATHS = [(name, p) for name in self.FILES for p in _paths(self.DOCS[name])]
        # (file, path) of every key of the schema or field name (not free-form names such as backends or GPUs).
        self.KEY_PATHS = [(name, p) for name, p in self.PATHS if isinstance(p[-1], str) and p[-1] in SCHEMA_KEYS
                          and p[:1] != ("generations",)
                          and not (len(p) == 2 and p[0] in ("backends", "derived", "gpus", "platforms", "fields"))]
        self.REASON_PATHS = [(name, p) for name, p in self.PATHS if p[-1] == "reason"]
        self.BLOCK_PATHS = [(name, p) for name, p in self.PATHS if len(p) >= 2 and p[-2] == "kernel_block_sizes"]
        self.BOOL_PATHS = [(name, p) for name, p in self.PATHS if isinstance(_value(self.DOCS[name], p), bool)
                           and p[-1] in ("validate", "warn_unvalidated", "sink", "mla", "sparse", "dcp", "mm_prefix",
                                         "explicit_only", "abstract", "none", "present")]


_FILES: dict[str, _Files] = {}


def R() -> _Files:
    """The files of the release this test runs for."""
    v = default_version()
    if v not in _FILES:
        _FILES[v] = _Files(v)
    return _FILES[v]


def _pick(attr: str) -> st.SearchStrategy[Any]:
    """An item of R().<attr>, chosen when drawn (so under the release the test runs for)."""
    return st.integers(0, 2 ** 31).map(lambda i: getattr(R(), attr)[i % len(getattr(R(), attr))])

TIME_LIMIT_S = 10


@contextlib.contextmanager
def time_limit(seconds: int = TIME_LIMIT_S) -> Iterator[None]:
    """Fail instead of hanging (SIGALRM; the suite runs on the main thread)."""
    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"load_rules took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def load_damaged(files: dict[str, str | bytes]) -> RuleSet | RulesError:
    """Write the files into a fresh folder and load it: a RuleSet or the RulesError (anything else propagates)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            path = Path(tmp) / name
            if isinstance(text, bytes):
                path.write_bytes(text)
            else:
                path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            with time_limit():
                return load_rules(tmp)
        except RulesError as e:
            return e


def assert_clear(result: RuleSet | RulesError, damaged: str) -> None:
    if isinstance(result, RuleSet):
        return
    assert result.problems, "a RulesError lists at least one problem"
    for problem in result.problems:
        assert len(problem) == 3 and all(isinstance(x, str) and x for x in problem), problem
    files = {p[0] for p in result.problems}
    known = set(R().FILES) | {Path(f).name for f in files if f.endswith(".toml")}
    assert files <= known | set(PLATFORMS) | {str(p) for p in files if Path(p).is_absolute()}, files
    assert str(result).count("\n") >= 1  # one line per problem after the header


# ---------------------------------------------------------------------------------------------------
# text damage
# ---------------------------------------------------------------------------------------------------
@st.composite
def damaged_text(draw: Any) -> tuple[str, str]:
    name = draw(st.sampled_from(R().FILES))
    text = R().TEXTS[name]
    op = draw(st.sampled_from(["truncate", "delete", "insert", "replace", "duplicate"]))
    i = draw(st.integers(0, len(text)))
    if op == "truncate":
        text = text[:i]
    elif op == "delete":
        j = draw(st.integers(i, min(len(text), i + 80)))
        text = text[:i] + text[j:]
    elif op == "insert":
        junk = draw(st.one_of(st.text(max_size=12), st.sampled_from(
            ["[", "]", "{", "}", "=", "\"", "'''", "\n[backends.X]\n", "\n[[platforms.cuda.lists]]\n", "\x00", "\ufeff",
             "é", "\u202e", "𝓁", "= 99999999999999999999999999", "= -inf", "= nan", "= 1979-05-27", "\\u0000"])))
        text = text[:i] + junk + text[i:]
    elif op == "replace":
        j = draw(st.integers(i, min(len(text), i + 20)))
        text = text[:i] + draw(st.text(max_size=20)) + text[j:]
    else:
        j = draw(st.integers(i, min(len(text), i + 200)))
        text = text[:j] + text[i:j] + text[j:]
    return name, text


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(damaged_text())
def test_text_damage_gives_rules_error(damage):
    name, text = damage
    files: dict[str, str | bytes] = dict(R().TEXTS)
    files[name] = text
    assert_clear(load_damaged(files), name)


@settings(max_examples=budget(30))
@given(_pick("FILES"), st.binary(min_size=1, max_size=40))
def test_binary_garbage_gives_rules_error(name, garbage):
    files: dict[str, str | bytes] = dict(R().TEXTS)
    files[name] = R().TEXTS[name].encode("utf-8") + garbage
    assert_clear(load_damaged(files), name)


# ---------------------------------------------------------------------------------------------------
# structural damage: any value anywhere replaced by one of another shape
# ---------------------------------------------------------------------------------------------------
def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out



toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True), st.text(max_size=10),
              st.sampled_from(["", "*", "fp8*", "9.0", "10.x", "abc", "🙂", "decode", "FLASH_ATTN", "NO_SUCH"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=3)),
    max_leaves=6)


def _set(doc: Any, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        doc = doc[k]
    doc[path[-1]] = value


def _copy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) for v in x]
    return x


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(_pick("PATHS"), toml_values, st.booleans())
def test_wrong_types_anywhere_give_rules_error(where, value, delete):
    name, path = where
    doc = _copy(R().DOCS[name])
    if delete and isinstance(path[-1], str):
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        del parent[path[-1]]
    else:
        _set(doc, path, value)
    files: dict[str, str | bytes] = dict(R().TEXTS)
    files[name] = dump_toml(doc)
    assert_clear(load_damaged(files), name)


@settings(max_examples=budget(40), suppress_health_check=[HealthCheck.too_slow])
@given(_pick("FILES"), st.dictionaries(st.text(min_size=1, max_size=8), toml_values, min_size=1, max_size=3))
def test_unknown_top_level_tables_give_rules_error(name, extra):
    doc = {**_copy(R().DOCS[name]), **extra}
    files: dict[str, str | bytes] = dict(R().TEXTS)
    files[name] = dump_toml(doc)
    assert_clear(load_damaged(files), name)


# ---------------------------------------------------------------------------------------------------
# hand-made worst cases
# ---------------------------------------------------------------------------------------------------
WORST = {
    "huge numbers": '\n[backends.FLASH_ATTN_DIFFKV]\nkernel_block_sizes = [99999999999999999999999999999]\n',
    "huge head size": '\n[backends.FLASH_ATTN_DIFFKV]\nhead_sizes = { max = 18446744073709551616 }\n',
    "negative sizes": '\n[backends.FLASH_ATTN_DIFFKV]\nkernel_block_sizes = [-16]\n',
    "zero multiple": '\n[backends.FLASH_ATTN_DIFFKV]\nhead_sizes = { multiple_of = 0 }\n',
    "cc garbage": '\n[backends.FLASH_ATTN_DIFFKV]\ncompute_capability = { min = "nine" }\n',
    "unicode key": '\n[backends."FLASH_ATTN_DIFFKV"]\n"dtypés" = ["float16"]\n',
    "unicode value": '\n[backends.FLASH_ATTN_DIFFKV]\ndtypes = ["ƒloat16"]\n',
    "self parent": '\n[backends.LOOP]\nparent = "LOOP"\nplatforms = ["cuda"]\n',
    "two-cycle": '\n[backends.A1]\nparent = "B1"\n[backends.B1]\nparent = "A1"\nplatforms = ["cuda"]\n',
    "dangling parent": '\n[backends.ORPHAN]\nparent = "NOBODY"\nplatforms = ["cuda"]\nexplicit_only = true\n',
    "dangling entry": '\n[[platforms.cuda.lists]]\nname = "x"\nwhen = { role = "decode" }\nentries = ["NOBODY"]\n',
    "list as table": '\n[platforms.cpu]\nlists = 5\n',
    "fields as string": '\nfields = "oops"\n',
    "gpus as list": '\ngpus = [1, 2]\n',
    "aliases as list": '\naliases = [1]\n',
    "derived without default": '\n[derived.zz]\nvalues = [1]\ncases = [{ when = { dtype = "float16" }, value = 1 }]\n',
    "derived not a table": '\n[derived]\nzz = 3\n',
    "backend not a table": '\n[backends]\nZZ = 3\n',
    "platform not a table": '\n[platforms]\nzz = 3\n',
    "variant not a table": '\n[backends.FLASH_ATTN_DIFFKV]\nvariant_field = "fa_version"\nvariants = { A = 3 }\n',
    "checks not a list": '\n[backends.FLASH_ATTN_DIFFKV]\nchecks = { reason = "x" }\n',
    "when not a table": '\n[backends.FLASH_ATTN_DIFFKV]\nchecks = [{ reason = "x", when = 3, require = { dtype = "float16" } }]\n',
    "deep nesting": "\nzz = " + "[" * 5000 + "]" * 5000 + "\n",
}


@pytest.mark.parametrize("case", sorted(WORST))
def test_worst_cases_give_rules_error(case):
    files: dict[str, str | bytes] = dict(R().TEXTS)
    files["zz_extra.toml"] = WORST[case]
    result = load_damaged(files)
    assert_clear(result, "zz_extra.toml")
    if case in ("self parent", "two-cycle"):
        assert isinstance(result, RulesError) and "cycle" in str(result)
    if case in ("dangling parent", "dangling entry"):
        assert isinstance(result, RulesError) and "NOBODY" in str(result)


def test_missing_domains_gives_rules_error():
    files: dict[str, str | bytes] = {k: v for k, v in R().TEXTS.items() if k != "domains.toml"}
    result = load_damaged(files)
    assert isinstance(result, RulesError)


# ---------------------------------------------------------------------------------------------------
# a rule set that loads must be usable: references inside domains.toml point at real values
# ---------------------------------------------------------------------------------------------------
def _domains_edit(edit: Any) -> RuleSet | RulesError:
    docs = _copy(R().DOCS)
    edit(docs["domains.toml"])
    files: dict[str, str | bytes] = dict(R().TEXTS)
    files["domains.toml"] = dump_toml(docs["domains.toml"])
    return load_damaged(files)


def test_alias_to_a_value_outside_the_domain_is_refused():
    result = _domains_edit(lambda d: d["aliases"]["dtype"].__setitem__("fp16", "nonsense"))
    assert isinstance(result, RulesError) and "aliases.dtype" in str(result)


def test_gpu_with_a_bad_compute_capability_is_refused():
    result = _domains_edit(lambda d: d["gpus"].__setitem__("H100", {"platform": "cuda", "compute_capability": "x"}))
    assert isinstance(result, RulesError) and "gpus.H100" in str(result)


def test_gpu_on_an_unknown_platform_is_refused():
    result = _domains_edit(lambda d: d["gpus"].__setitem__("H100", {"platform": "tpu", "compute_capability": "9.0"}))
    assert isinstance(result, RulesError) and "H100" in str(result)


# ---------------------------------------------------------------------------------------------------
# Malformed rule sets generated from the valid ones (issue #15): a key renamed, a value of the wrong
# kind, a reason with a stray brace. The loader must refuse them naming file and key; and a rule
# set that does load must answer every question with a result or a documented error, never crash.
# ---------------------------------------------------------------------------------------------------
from attnsolve import ANY, Config, ConfigError, SelectionError, explain, solve  # noqa: E402
from attnsolve.rules import use_rules  # noqa: E402
from attnsolve.rules._fields import CONFIG_FIELDS  # noqa: E402
from attnsolve.rules.schema import KEYS  # noqa: E402

SCHEMA_KEYS = {k for place in KEYS.values() for k in place} | set(CONFIG_FIELDS)


def _value(doc: Any, path: tuple) -> Any:
    for k in path:
        doc = doc[k]
    return doc


QUESTIONS = [dict(gpu="H100", dtype="bfloat16"), dict(gpu="B200", dtype="bfloat16", use_mla=True, head_size=576),
             dict(gpu="MI300X", dtype="float16"), dict(gpu="CPU", dtype="float32"),
             dict(gpu="A100", dtype="bfloat16", kv_cache_dtype="fp8", has_sink=True)]


def assert_usable(result: RuleSet | RulesError) -> None:
    """A rule set that loads answers solve/explain with a result or a documented error."""
    if not isinstance(result, RuleSet):
        return
    with use_rules(result), time_limit(60):
        for q in QUESTIONS:
            try:
                cfg = Config(**q)
                solve(cfg)
            except (ConfigError, SelectionError):
                pass
        try:
            explain(Config(gpu="H100", dtype="bfloat16", kv_cache_dtype=ANY))
        except ConfigError:
            pass


def _edited(name: str, edit: Any) -> RuleSet | RulesError:
    doc = _copy(R().DOCS[name])
    edit(doc)
    files: dict[str, str | bytes] = dict(R().TEXTS)
    files[name] = dump_toml(doc)
    return load_damaged(files)


def _rename(doc: Any, path: tuple, new: str) -> None:
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    parent[new] = parent.pop(path[-1])


@settings(max_examples=budget(60), suppress_health_check=[HealthCheck.too_slow])
@given(_pick("KEY_PATHS"), st.sampled_from(["_x", "s", "x_", "-typo"]))
def test_a_renamed_key_is_refused_naming_file_and_key(where, suffix):
    name, path = where
    new = path[-1] + suffix
    if new in SCHEMA_KEYS:
        return
    result = _edited(name, lambda d: _rename(d, path, new))
    assert isinstance(result, RulesError), f"{name}: {'.'.join(map(str, path))} renamed to {new!r} loaded silently"
    assert_clear(result, name)
    assert any(new in loc or new in msg for _, loc, msg in result.problems), result.problems


@settings(max_examples=budget(40), suppress_health_check=[HealthCheck.too_slow])
@given(_pick("BOOL_PATHS"), st.sampled_from(["no", "yes", "true", 0, 1, [True], {"x": True}]))
def test_a_boolean_of_another_kind_is_refused(where, value):
    name, path = where
    result = _edited(name, lambda d: _set(d, path, value))
    assert isinstance(result, RulesError), f"{name}: {'.'.join(map(str, path))} = {value!r} loaded silently"
    assert_clear(result, name)


@settings(max_examples=budget(30), suppress_health_check=[HealthCheck.too_slow])
@given(_pick("REASON_PATHS"), st.sampled_from(["{", "}", "{0}", "{nope}", "{head_size.x}", "{head_size!z}"]),
       st.integers(0, 40))
def test_a_reason_that_cannot_be_formatted_is_refused(where, brace, at):
    name, path = where
    def edit(d: Any) -> None:
        text = _value(d, path)
        _set(d, path, text[:at] + brace + text[at:])
    result = _edited(name, edit)
    assert isinstance(result, RulesError)
    assert_clear(result, name)


@settings(max_examples=budget(30), suppress_health_check=[HealthCheck.too_slow])
@given(_pick("BLOCK_PATHS"), st.sampled_from(["16", 16.0, -16, 0, 10**9, True, [16]]))
def test_a_block_size_of_another_kind_is_refused(where, value):
    name, path = where
    result = _edited(name, lambda d: _set(d, path, value))
    assert isinstance(result, RulesError)
    assert_clear(result, name)


@settings(max_examples=budget(60), suppress_health_check=[HealthCheck.too_slow])
@given(_pick("PATHS"), toml_values)
def test_a_rule_set_that_loads_after_damage_still_answers(where, value):
    name, path = where
    result = _edited(name, lambda d: _set(d, path, value))
    assert_clear(result, name)
    assert_usable(result)


@pytest.mark.vllm("0.33")
def test_generic_checks_of_another_shape_is_reported():
    """Was a TypeError in the loader's shape pass (session 5): `generic_checks = 1` in 0.33's checks.toml."""
    test_a_rule_set_that_loads_after_damage_still_answers.hypothesis.inner_test(("checks.toml", ("generic_checks",)), 1)


@pytest.mark.parametrize("value", [[], {"a": 1}, "head_sise"])
def test_a_field_comparison_naming_no_field_is_refused(value):
    """`ne_field` / `eq_field` / `multiple_of_field` name another field: a list or a table there crashed the
    shape check with a TypeError (unhashable) instead of a RulesError (found by the nightly profile), and a
    misspelt name gets the closest field."""
    name, path = next((n, p) for n, p in R().PATHS if p[-1] == "when" and isinstance(_value(R().DOCS[n], p), dict))
    for key in ("ne_field", "eq_field", "multiple_of_field"):
        doc = _copy(R().DOCS[name])
        _value(doc, path)["head_size"] = {key: value}
        files: dict[str, str | bytes] = dict(R().TEXTS)
        files[name] = dump_toml(doc)
        result = load_damaged(files)
        assert_clear(result, name)
        assert f"head_size.{key}" in str(result), str(result)
        if value == "head_sise":
            assert "did you mean 'head_size'" in str(result), str(result)


@pytest.mark.vllm("0.33")
@pytest.mark.parametrize("path, new", [
    (("backends", "ROCM_OCTAVE", "kv_cache_layouts", 0, "when"), "when_x"),      # kv_cache_layouts case keys
    (("backends", "ROCM_OCTAVE", "kv_cache_layouts", 0, "value"), "values"),
])
def test_regression_a_renamed_key_inside_kv_cache_layouts_is_refused(path, new):
    """kv_cache_layouts is data (not applied), but its cases are { when, value }: a renamed key loaded silently
    (found by the nightly run of test_a_renamed_key_is_refused_naming_file_and_key)."""
    result = _edited("rocm.toml", lambda d: _rename(d, path, new))
    assert isinstance(result, RulesError), "loaded silently"
    assert any(new in loc or new in msg for _, loc, msg in result.problems), result.problems


@pytest.mark.vllm("0.33")
def test_a_variant_read_condition_naming_no_field_is_refused():
    def edit(d: Any) -> None:
        for g in d["generic_checks"]:
            if g.get("key") == "sink":
                g["variant_read_when"] = [{"has_sinkk": True}]
    result = _edited("checks.toml", edit)
    assert isinstance(result, RulesError) and any("variant_read_when" in loc for _, loc, _m in result.problems), result


@pytest.mark.vllm("0.33")
@pytest.mark.parametrize("reads, drop_when", [(["fa_versionn"], False), (["fa_version"], True)])
def test_a_variant_reads_list_naming_no_fact_or_without_its_condition_is_refused(reads, drop_when):
    """`variant_reads` names derived facts the consultation computes: a misspelt name, or a list without the
    variant_read_when it belongs to, is a RulesError naming the key."""
    def edit(d: Any) -> None:
        for g in d["generic_checks"]:
            if g.get("key") == "sink":
                g["variant_reads"] = reads
                if drop_when:
                    g.pop("variant_read_when", None)
    result = _edited("checks.toml", edit)
    assert isinstance(result, RulesError) and any("variant_reads" in loc for _, loc, _m in result.problems), result
