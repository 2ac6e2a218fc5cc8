"""Schema as data: a made-up platform, selection field and generic check added through rules alone.

The rule folder below is the packaged 0.17 set plus text appended to its TOML files; no Python
changes. solve(), explain(), the CLI (its --help included), the environment policy and `docs`
must all pick the additions up. Then: defaults and invariants that were Python (the MLA head size, the
MLA prefill role check) follow edited rules, and a checker reads the package for backend names, release
labels and field values written in Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attnsolve import Config, ConfigError, NoValidBackendError, explain, solve, use_rules
from attnsolve.rules import RULES_DIR, load_rules, rules_for

# Every release: the field defaults and the checker are release-independent and run on each release's own
# folder; the made-up platform/field/check are appended to the 0.17 set and the role invariant's fallback is
# 0.17's (its prefill list is for MLA layers), so those tests pin 0.17.
pytestmark = pytest.mark.every_release


def _release_dir() -> Path:
    """The running release's packaged rule folder (0.17: RULES_DIR)."""
    from attnsolve.rules import RULES_ROOT, default_version
    return RULES_ROOT / f"vllm-{default_version()}"

ROOT = Path(__file__).resolve().parents[1]

DOMAINS_EXTRA = '''
[gpus."Ascend 910B"]
platform = "npu"
npu_gen = "910b"
[gpus."Ascend 910A"]
platform = "npu"
npu_gen = "910a"

[[generic_checks]]
key = "zigzag"
field = "use_zigzag"
form = "supports"
default = false
reason = "zigzag attention not supported"
'''

NPU_TOML = '''
[fields.npu_gen]
kind = "enum"
values = ["910a", "910b"]
category = "hardware"
platforms = ["npu"]
flags = ["--npu-gen"]
help = "Ascend NPU generation"

[fields.use_zigzag]
kind = "bool"
default = false
category = "setting"
flags = ["--use-zigzag"]
env = "VLLM_USE_ZIGZAG"
env_reads = "true_or_1"
vllm = "VLLM_USE_ZIGZAG=1"
help = "zigzag ring attention"

[backends.NPU_FLASH]
platforms = ["npu"]
summary = "made-up NPU flash kernel: zigzag, 910B only"
dtypes = ["float16", "bfloat16"]
zigzag = true
checks = [{ reason = "NPU flash needs a 910B", require = { npu_gen = "910b" } }]

[backends.NPU_SDPA]
platforms = ["npu"]
summary = "made-up NPU fallback"
dtypes = ["float16", "bfloat16", "float32"]

[platforms.npu]
validate = true
no_valid_message = "No valid attention backend for npu. Reasons: {reasons}."
[[platforms.npu.lists]]
name = "npu"
entries = ["NPU_FLASH", "NPU_SDPA"]
'''


@pytest.fixture(scope="module")
def npu_rules(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("npu-rules")
    for f in RULES_DIR.glob("*.toml"):
        shutil.copy(f, root / f.name)
    domains = (root / "domains.toml").read_text()
    domains = domains.replace('platform = ["cuda", "rocm", "cpu", "xpu"]', 'platform = ["cuda", "rocm", "cpu", "xpu", "npu"]')
    assert '"npu"]' in domains
    (root / "domains.toml").write_text(domains + DOMAINS_EXTRA)
    (root / "npu.toml").write_text(NPU_TOML)
    load_rules(root)  # loads cleanly, structure checks included
    return root


@pytest.mark.vllm("0.17")
def test_solve_and_explain_see_the_new_platform_field_and_check(npu_rules):
    with use_rules(npu_rules):
        fast = solve(Config(gpu="Ascend 910B", dtype="bf16"))
        assert fast.backend == "NPU_FLASH"
        # a hardware fact from the GPU table, platform inferred from the GPU
        cfg = Config(gpu="Ascend 910A", dtype="bf16")
        assert cfg.platform == "npu" and cfg.npu_gen == "910a"
        sel = solve(cfg)
        assert sel.backend == "NPU_SDPA"
        assert sel.rejected[0].reasons == ("NPU flash needs a 910B",)
        # the made-up generic check: NPU_SDPA does not declare zigzag (default false)
        with pytest.raises(NoValidBackendError) as err:
            solve(Config(gpu="Ascend 910A", dtype="bf16", use_zigzag=True))
        assert "zigzag attention not supported" in str(err.value)
        exp = explain(Config(gpu="Ascend 910A", dtype="bf16", use_zigzag=True))
        assert exp.selected is None
        assert any("zigzag attention not supported" in v.reasons for v in exp.candidates)
        assert any(f.changes.get("npu_gen") == "910b" or f.changes.get("use_zigzag") is False
                   for f in exp.fixes)
        # the field's platform is an invariant; its values are checked with the accepted ones
        with pytest.raises(ConfigError, match="npu_gen"):
            Config(gpu="H100", dtype="bf16", npu_gen="910b")
        with pytest.raises(ConfigError, match="910c"):
            Config(platform="npu", dtype="bf16", npu_gen="910c")
        # a hardware field alone names its platform
        assert Config(npu_gen="910b", dtype="bf16").platform == "npu"


def _cli(rules: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "ATTNSOLVE_RULES": str(rules), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "attnsolve", *args], capture_output=True, text=True, env=full,
                          cwd=ROOT, timeout=120)


@pytest.mark.vllm("0.17")
def test_cli_flags_help_and_environment_come_from_the_rules(npu_rules):
    help_text = _cli(npu_rules, "select", "--help").stdout
    assert "--npu-gen" in help_text and "--use-zigzag" in help_text and "zigzag ring attention" in help_text
    ok = _cli(npu_rules, "select", "--gpu", "Ascend 910B", "--dtype", "bf16")
    assert ok.returncode == 0 and ok.stdout.startswith("NPU_FLASH"), ok.stderr
    bad = _cli(npu_rules, "select", "--gpu", "Ascend 910B", "--dtype", "bf16", "--use-zigzag", "--npu-gen", "910a")
    assert bad.returncode == 2 and "910b" in bad.stderr  # the GPU says 910b: a contradiction is bad input
    no = _cli(npu_rules, "select", "--gpu", "Ascend 910A", "--dtype", "bf16", "--use-zigzag")
    assert no.returncode == 1 and "zigzag attention not supported" in no.stdout
    via_env = _cli(npu_rules, "select", "--gpu", "Ascend 910A", "--dtype", "bf16", env={"VLLM_USE_ZIGZAG": "1"})
    assert via_env.returncode == 1 and "VLLM_USE_ZIGZAG" in via_env.stdout
    typo = _cli(npu_rules, "select", "--gpu", "Ascend 910A", "--dtype", "bf16", "--npu-gen", "910")
    assert typo.returncode == 2 and "Traceback" not in typo.stderr and "910a" in typo.stderr


@pytest.mark.vllm("0.17")
def test_docs_pick_up_the_new_backends(npu_rules, tmp_path):
    out = _cli(npu_rules, "docs", "--output", str(tmp_path / "backends.md"))
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "backends.md").read_text()
    assert "NPU_FLASH" in text and "NPU_SDPA" in text and "npu" in text.lower()


# -- invariants and defaults that used to be Python: now rules data ---------------------------------------


def _copy_release(dest: Path) -> list[Path]:
    """The running release's packaged folder copied into dest, with the folders it is written as edits on
    (`[ruleset] base`, followed to a complete folder) beside it as the loader finds them; the release's copy
    first, then its bases'."""
    import tomllib
    from attnsolve.rules import RULES_ROOT
    chain, folder = [], _release_dir()
    while True:
        copy = dest / folder.name
        copy.mkdir(parents=True, exist_ok=True)
        for f in folder.glob("*.toml"):
            shutil.copy(f, copy / f.name)
        chain.append(copy)
        base = tomllib.loads((folder / "ruleset.toml").read_text()).get("ruleset", {}).get("base")
        if base is None:
            return chain
        folder = RULES_ROOT / f"vllm-{base}"


def _replace(chain: list[Path], name: str, old: str, new: str) -> None:
    """Replace `old` (once) in the first copy along the chain whose `name` file holds it."""
    for folder in chain:
        f = folder / name
        if f.is_file() and old in f.read_text():
            text = f.read_text()
            assert text.count(old) == 1, old
            f.write_text(text.replace(old, new))
            return
    raise AssertionError(f"{old!r} is in no {name} of {[c.name for c in chain]}")


def _copy(tmp_path: Path, edit: tuple[str, str, str] | None = None, extra: str = "") -> Path:
    """The running release's packaged folder in tmp_path, with one text replacement in one file and extra TOML
    appended."""
    chain = _copy_release(tmp_path)
    if edit is not None:
        _replace(chain, *edit)
    if extra:
        (chain[0] / "extra.toml").write_text(extra)
    load_rules(chain[0])
    return chain[0]


HEAD_DEFAULTS = 'defaults = [{ when = { use_mla = true }, value = 576 }, { value = 128 }]'


def test_the_head_size_default_is_the_field_declarations(tmp_path):
    """[fields.head_size] defaults: 576 for an MLA layer, 128 otherwise, read from the rules, not Python."""
    assert Config(gpu="H100", dtype="bf16").head_size == 128
    assert Config(gpu="H100", dtype="bf16", use_mla=True).head_size == 576
    from attnsolve import ANY
    assert Config(gpu="H100", dtype="bf16", use_mla=ANY).head_size is ANY  # undecided until use_mla is
    other = _copy(tmp_path, ("fields.toml", HEAD_DEFAULTS,
                             'defaults = [{ when = { use_mla = true }, value = 512 }, { when = { dtype = "float32" }, value = 96 }, { value = 64 }]'))
    with use_rules(other):
        assert Config(gpu="H100", dtype="bf16").head_size == 64
        assert Config(gpu="H100", dtype="float32").head_size == 96
        assert Config(gpu="H100", dtype="bf16", use_mla=True).head_size == 512
        assert Config(gpu="H100", dtype="bf16", head_size=80).head_size == 80  # a given value wins


def test_without_a_declared_default_the_head_size_is_required(tmp_path):
    with use_rules(_copy(tmp_path, ("fields.toml", HEAD_DEFAULTS, ""))):
        with pytest.raises(ConfigError) as err:
            Config(gpu="H100", dtype="bf16")
        assert err.value.field == "head_size"
        assert Config(gpu="H100", dtype="bf16", head_size=64).head_size == 64


def test_a_malformed_field_default_is_a_rules_error(tmp_path):
    from attnsolve.rules import RulesError
    for bad in ('defaults = [{ when = { use_mla = true }, value = 576 }]',  # no last case without `when`
                'defaults = [{ when = { head_size = 64 }, value = 576 }, { value = 128 }]',  # reads itself
                'defaults = [{ when = { use_mla = true }, size = 576 }, { value = 128 }]'):  # no value
        chain = _copy_release(tmp_path / str(abs(hash(bad))))
        _replace(chain, "fields.toml", HEAD_DEFAULTS, bad)
        with pytest.raises(RulesError, match="head_size"):
            load_rules(chain[0])


def test_a_declared_field_may_have_a_conditional_default(tmp_path):
    """A field a rule set adds ([fields.X] beyond Config's own) takes its `defaults` the same way."""
    extra = '''
[fields.pages_per_block]
kind = "int"
min = 1
category = "setting"
flags = ["--pages-per-block"]
help = "made up"
defaults = [{ when = { use_mla = true }, value = 2 }, { value = 1 }]
'''
    with use_rules(_copy(tmp_path, extra=extra)):
        assert Config(gpu="H100", dtype="bf16").pages_per_block == 1
        assert Config(gpu="H100", dtype="bf16", use_mla=True).pages_per_block == 2
        assert Config(gpu="H100", dtype="bf16", use_mla=True, pages_per_block=4).pages_per_block == 4



def test_a_declared_field_without_default_may_stay_unset(tmp_path):
    """A field a rule set adds beyond Config's own, with no `default`, may end its `defaults` with a condition: where
    none holds it stays unset (vLLM 0.21's mla_prefill_backend, named by deprecated switches or by nothing); None given
    counts as not given. A common field keeps the rule (the malformed-default test above)."""
    extra = '''
[fields.pages_hint]
kind = "int"
min = 1
category = "setting"
flags = ["--pages-hint"]
help = "made up"
defaults = [{ when = { use_mla = true }, value = 2 }]
'''
    with use_rules(_copy(tmp_path, extra=extra)):
        assert Config(gpu="H100", dtype="bf16").pages_hint is None
        assert Config(gpu="H100", dtype="bf16", use_mla=True).pages_hint == 2
        assert Config(gpu="H100", dtype="bf16", use_mla=True, pages_hint=None).pages_hint == 2
        assert Config(gpu="H100", dtype="bf16", use_mla=True, pages_hint=4).pages_hint == 4


ROLE_INVARIANT = '''[[invariants]]
key = "mla_prefill_needs_mla"
when = { role = "mla_prefill" }
require = { use_mla = true }
reason = "MLA prefill is selected only for MLA models"'''


@pytest.mark.vllm("0.17")
def test_the_mla_prefill_role_check_is_the_invariant(tmp_path):
    """solve(role='mla_prefill') of a non-MLA config is refused by the rule set's invariant over the role (not
    by Python): without it the question goes on to the lists; another clause over the role is applied alike."""
    dense = Config(gpu="H100", dtype="bf16")
    with pytest.raises(ConfigError) as err:
        solve(dense, role="mla_prefill")
    assert err.value.field == "role" and "only for MLA models" in str(err.value)
    (tmp_path / "one").mkdir()
    with use_rules(_copy(tmp_path / "one", ("invariants.toml", ROLE_INVARIANT, ""))):
        with pytest.raises(ConfigError) as err:  # 0.17's prefill list is for MLA layers: no list, not the invariant
            solve(Config(gpu="H100", dtype="bf16"), role="mla_prefill")
        assert "priority list" in str(err.value) and "only for MLA models" not in str(err.value)
    made_up = ROLE_INVARIANT.replace("mla_prefill_needs_mla", "made_up").replace(
        "require = { use_mla = true }", 'require = { dtype = "bfloat16" }').replace(
        "MLA prefill is selected only for MLA models", "made up: MLA prefill in bfloat16 only")
    (tmp_path / "two").mkdir()
    with use_rules(_copy(tmp_path / "two", extra=made_up)):
        mla = Config(gpu="H100", dtype="float16", use_mla=True)
        with pytest.raises(ConfigError, match="bfloat16 only") as err:
            solve(mla, role="mla_prefill")
        assert err.value.field == "role"
        assert solve(mla).role == "decode"  # the clause is over the prefill role only


# -- the checker: Python outside the rules names no backend, release or (in the engine) field value -------

PKG = ROOT / "attnsolve"
# The selection engine: what answers a question from the rules. Field values it names are listed below.
ENGINE = ("config", "solver", "selection", "rules", "engine.py", "guards.py", "errors.py", "cc.py")
# (module, string) -> why it is not rules data. An upper bound: a new entry needs a reason here.
ENGINE_VALUES = {
    ("config/core.py", "auto"): "Config's class default for kv_cache_dtype (vLLM's 'auto' = the model dtype)",
    ("config/core.py", "decoder"): "Config's class default for attn_type",
    ("config/values.py", "auto"): "a spelling of None (automatic) for tristate fields, not a field value",
    ("config/values.py", "none"): "a spelling of None for tristate fields",
    ("config/normalise.py", "auto"): "a spelling of None (automatic) for use_trtllm_attention",
    ("config/normalise.py", "none"): "a spelling of None for use_trtllm_attention",
    ("rules/predicates.py", "none"): "the rule language's predicate keyword (`none = true`: the field may be None)",
    ("rules/schema.py", "none"): "the rule language's keyword",
    ("solver/semantics.py", "auto"): "the name of automatic selection (Plan.mode), not a field value",
    ("solver/reach.py", "auto"): "Plan.mode 'auto'",
    ("solver/reach.py", "cuda"): "reach's coupling of platform and hardware fields (helper explain2: _COUPLED)",
    ("solver/reach.py", "rocm"): "reach's coupling of platform and hardware fields (helper explain2: _COUPLED)",
}


def _strings(path: Path):
    """(line, text) of every string constant of a module that is not a docstring."""
    import ast
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
            yield n.lineno, n.value


def test_python_outside_the_rules_names_no_backend_release_or_engine_field_value():
    """Adding a backend, a field value or a release is a rules edit: no module (kernels aside: a kernel
    registers the backend it implements) names a backend or a release label; the engine's modules name no
    field value beyond ENGINE_VALUES."""
    from attnsolve.rules import versions
    backends: set[str] = set()
    releases: set[str] = set()
    values: set[str] = set()
    for v in versions():
        r = rules_for(v)
        backends |= set(r.backends)
        releases |= {r.vllm, r.read_from, v}
        values |= {x for dom in r.domains.values() for x in dom if isinstance(x, str)}
    found = []
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG).as_posix()
        if rel.startswith("kernels/"):
            continue
        engine = any(rel == e or rel.startswith(e + "/") for e in ENGINE)
        for line, s in _strings(f):
            if s in backends or s in releases - {""}:
                found.append(f"{rel}:{line}: {s!r} (a backend or release)")
            elif engine and s in values and (rel, s) not in ENGINE_VALUES:
                found.append(f"{rel}:{line}: {s!r} (a field value)")
    assert not found, "Python that should be rules data:\n" + "\n".join(found)


RSWA_KEYS = 'model_keys = [{ key = "rswa_window", present = true }]'


@pytest.mark.vllm("0.33")
def test_a_malformed_model_key_is_a_rules_error(tmp_path):
    """`model_keys` entries: a key, or a table with `key` and one test (present = true / equals = V / in = [...])
    or `decides = true`; a test gives true or false, so only a bool field takes one."""
    from attnsolve.rules import RulesError
    for i, (bad, why) in enumerate((
            ('model_keys = [{ name = "rswa_window", present = true }]', "a config.json key"),
            ('model_keys = [{ key = "rswa_window" }]', "one test"),
            ('model_keys = [{ key = "rswa_window", present = true, equals = 1 }]', "one test"),
            ('model_keys = [{ key = "rswa_window", present = false }]', "one test"),
            ('model_keys = [{ key = "rswa_window", in = [] }]', "non-empty list"),
            ('model_keys = [{ key = "rswa_window", present = true, note = 3 }]', "note a string"),
            ('model_keys = [{ key = "rswa_window", present = true, note = "window {size}" }]', "placeholder"),
            ('model_keys = [{ key = "rswa_window", present = true, note = "window {" }]', "placeholder"),
            ('model_keys = [3]', "a config.json key"))):
        (tmp_path / str(i)).mkdir()
        with pytest.raises(RulesError, match=f"fields.use_rswa.model_keys.*{why}"):
            load_rules(_copy(tmp_path / str(i), ("fields.toml", RSWA_KEYS, bad)))
    (tmp_path / "int").mkdir()
    extra = '[fields.window_size]\nkind = "int"\ncategory = "model"\nmodel_keys = [{ key = "w", present = true }]\n'
    with pytest.raises(RulesError, match="fields.window_size.model_keys.*only a bool field"):
        load_rules(_copy(tmp_path / "int", extra=extra))
    granite = 'GraniteForCausalLM = [{ key = "attention_sinks", decides = true }, { key = "layer_types", present = true, note = "attention sinks (Granite with layer_types)" }]'
    (tmp_path / "arch").mkdir()
    with pytest.raises(RulesError, match="fields.has_sink.architecture_keys.GraniteForCausalLM.*one test"):
        load_rules(_copy(tmp_path / "arch", ("fields.toml", granite,
                                             'GraniteForCausalLM = [{ key = "attention_sinks" }]')))
