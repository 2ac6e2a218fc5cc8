"""Hypothesis strategies for the whole suite, drawn from the rules' own data.

Small blocks and composite builders. Keyword switches follow one convention: ``None`` draws the value,
anything else pins it. Every value set comes from the active RuleSet (domains.toml, the value classes the
rules induce, backend names), so a new backend, dtype or boundary in a rule file is covered with no new
test code.

- ``configs()``            full, valid Configs (with a role to ask about)
- ``partial_configs()``    Configs with a few fields left ``ANY``
- ``config_inputs()``      keyword dicts for ``Config(**kw)``: valid, out-of-domain and wrong-typed values
- ``synthetic_rules()``    random rule sets (backends, capabilities, guards, priority lists) as TOML documents
- ``kernel_shapes()``      small attention problem shapes for the kernel tests
- ``dump_toml()``          a tiny TOML writer for the rule documents (inline tables, one key per line)
"""

from __future__ import annotations

import functools

import json
import math
import re
from typing import Any, Iterable

from hypothesis import strategies as st

from attnsolve.config import ANY, FIELD_NAMES, Config, requestable_backends
from attnsolve.errors import ConfigError
from attnsolve.rules import default_rules
from attnsolve.rules.model import RuleSet
from attnsolve.solver.domains import value_classes

BOOL_FIELDS = (
    "use_mla", "use_sparse", "has_sink", "use_mm_prefix", "trtllm_available", "rocm_use_aiter",
    "rocm_use_aiter_mha", "rocm_use_aiter_mla", "rocm_use_aiter_unified_attention",
    "use_prefill_decode_attention", "use_trtllm_ragged_deepseek_prefill", "disable_flashinfer_prefill",
    "use_cudnn_prefill", "flashinfer_available",
)
OPT_INT_FIELDS = ("num_heads", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_topk")
# Fields whose values are hardware facts: a partial config may free them, but they are tied to the platform.
HARDWARE = ("platform", "compute_capability", "rocm_arch")


def budget(n: int) -> int:
    """An expensive property's example cap: n under the dev and ci profiles, 10x under nightly (and never
    more than the profile's own max_examples, so dev stays quick)."""
    from hypothesis import settings as _settings
    current = _settings.default
    scaled = n * 10 if current.max_examples >= 1000 else n
    return min(scaled, current.max_examples) if current.max_examples < n else scaled


@functools.lru_cache(maxsize=None)
def is_edit_folder(version: str) -> bool:
    """Whether a packaged release is written as edits on another (`[ruleset] base`): its constructs are its base's,
    so the engine-level properties that are costly per release (state machines editing rules, exhaustive sweeps)
    run on it with a smaller budget under dev / ci (the full one under nightly)."""
    import tomllib
    from attnsolve.rules import info
    with open(info(version).path / "ruleset.toml", "rb") as f:
        return "base" in tomllib.load(f).get("ruleset", {})


def rules_now() -> RuleSet:
    return default_rules()


# ---------------------------------------------------------------------------------------------------
# per-field value pools
# ---------------------------------------------------------------------------------------------------
def _class_values(rules: RuleSet, name: str) -> list[Any]:
    """Representatives and examples of every value class the rules induce on `name`."""
    out: list[Any] = []
    for vc in value_classes(rules, name):
        for v in (vc.representative, *vc.examples):
            if v not in out:
                out.append(v)
    return out


def requests(rules: RuleSet) -> list[str]:
    """The backend names a release accepts as a request that its rules model as backends (not the MLA
    prefill kernels, not the registry names vLLM fails before validating)."""
    return sorted(n for n in requestable_backends(rules) if n in rules.backends)


def field_pool(rules: RuleSet, name: str) -> list[Any]:
    """Every value worth trying for a field: its domain (domains.toml), its value classes, and None if optional.

    Integers stay ints; compute capabilities are (major, minor) tuples, as Config stores them.
    """
    if name == "backend":
        return [None, *requests(rules)]
    if name == "platform":
        return list(rules.domains["platform"])
    if name in BOOL_FIELDS:
        return [False, True]
    if name == "use_trtllm_attention":
        return [None, False, True]
    if name == "compute_capability":
        ints = {v for v in _class_values(rules, name) if isinstance(v, int)}
        for g in rules.generations:
            major, _, minor = g.partition(".")
            ints.add(int(major) * 10 + int(minor or 0))
        ints = {i for i in ints if 10 <= i <= 209}
        return sorted((i // 10, i % 10) for i in ints)
    if name == "rocm_arch":
        return list(rules.domains["rocm_arch"])
    if name in rules.domains:
        vals = list(rules.domains[name])
        decl = rules.fields.get(name)
        unset = decl is not None and name not in FIELD_NAMES and decl.default is None and not decl.platforms
        # None = unset (automatic MLA prefill selection, no model architecture) is a value of its own
        return [None, *vals] if name in ("block_size", "flash_attn_version") or unset else vals
    if name == "head_size":
        vals = [v for v in _class_values(rules, name) if isinstance(v, int) and v >= 1]
        return sorted(set(vals) | {32, 64, 80, 96, 128, 256, 576})
    if name in OPT_INT_FIELDS:
        vals = [v for v in _class_values(rules, name) if isinstance(v, int) and v >= 1]
        return [None, *sorted(set(vals))]
    decl = rules.fields.get(name)
    if decl is not None:  # a field only this release declares: its pool follows its declared kind
        return declared_pool(rules, decl)
    return [None]


def declared_pool(rules: RuleSet, decl: Any) -> list[Any]:
    """Values worth trying for a rule-declared field (`[fields.X]`): by kind, default first."""
    if decl.kind == "bool":
        vals: list[Any] = [False, True]
    elif decl.kind == "tristate":
        vals = [None, False, True]
    elif decl.kind == "enum":
        vals = list(rules.domains.get(decl.name, ()))
    elif decl.kind == "int":
        low = decl.min if decl.min is not None else 1
        vals = sorted({v for v in _class_values(rules, decl.name)
                       if isinstance(v, int) and not isinstance(v, bool) and v >= low})
    else:
        vals = []
    out = [decl.default] if decl.default is not None or decl.kind != "bool" else []
    return out + [v for v in vals if v not in out]


def extra_fields(rules: RuleSet) -> tuple[Any, ...]:
    """The fields this release declares beyond Config's common ones (0.33: use_non_causal, ...)."""
    return tuple(d for n, d in rules.fields.items() if n not in FIELD_NAMES)


def declares(rules: RuleSet, name: str) -> bool:
    """Whether the release reads a common field (a release that declares its fields may drop some)."""
    return not rules.fields or name in rules.fields


def field_values(name: str, rules: RuleSet | None = None) -> st.SearchStrategy[Any]:
    rules = rules or rules_now()
    pool = field_pool(rules, name)
    if name == "head_size":
        return st.one_of(st.sampled_from(pool), st.sampled_from(pool), st.integers(1, 1024))
    if name in OPT_INT_FIELDS:
        return st.one_of(st.sampled_from(pool), st.integers(1, 512))
    if name == "compute_capability":
        return st.one_of(st.sampled_from(pool), st.sampled_from(pool), st.sampled_from(pool),
                         st.tuples(st.integers(1, 20), st.integers(0, 9)))
    return st.sampled_from(pool)


def roles_for(config: Config) -> list[str]:
    return ["decode", "mla_prefill"] if config.use_mla is True else ["decode"]


# ---------------------------------------------------------------------------------------------------
# full configs
# ---------------------------------------------------------------------------------------------------
# vLLM's defaults; config_kwargs keeps a field at its default about half the time (the "feature" switches
# three times in four) so that the fast backends get selected often enough, and perturbs it otherwise.
DEFAULTS: dict[str, Any] = {
    "dtype": "bfloat16", "kv_cache_dtype": "auto", "block_size": None, "attn_type": "decoder",
    "flash_attn_version": None, "use_trtllm_attention": None, "has_sink": False, "use_mm_prefix": False,
    "trtllm_available": True, "flashinfer_available": True, "use_trtllm_ragged_deepseek_prefill": True,
    "disable_flashinfer_prefill": False, "use_cudnn_prefill": False,
    "num_heads": None, "qk_nope_head_dim": None, "qk_rope_head_dim": None, "v_head_dim": None, "index_topk": None,
}
_RARE = ("has_sink", "use_mm_prefix", "trtllm_available", "flashinfer_available", "disable_flashinfer_prefill",
         "use_cudnn_prefill", "attn_type")


def _biased(draw: Any, name: str, rules: RuleSet) -> Any:
    if name in DEFAULTS:
        keep = draw(st.integers(0, 3)) < (3 if name in _RARE else 2)
        if keep:
            return DEFAULTS[name]
    return draw(field_values(name, rules))


@st.composite
def config_kwargs(draw: Any, rules: RuleSet | None = None, *, platform: Any = None, use_mla: Any = None,
                  backend: Any = None, manual: bool | None = None) -> dict[str, Any]:
    """Keyword arguments that make a valid Config. manual=True always requests a backend, False never."""
    rules = rules or rules_now()
    kw: dict[str, Any] = {}
    kw["platform"] = draw(st.sampled_from(field_pool(rules, "platform"))) if platform is None else platform
    kw["use_mla"] = draw(st.booleans()) if use_mla is None else use_mla
    kw["use_sparse"] = draw(st.integers(0, 3)) == 0 if kw["use_mla"] else False
    if kw["platform"] == "cuda":
        kw["compute_capability"] = draw(field_values("compute_capability", rules))
    if kw["platform"] == "rocm":
        kw["rocm_arch"] = draw(st.sampled_from(field_pool(rules, "rocm_arch")))
    for name in ("dtype", "kv_cache_dtype", "block_size", "attn_type", "flash_attn_version", "use_trtllm_attention"):
        if declares(rules, name):
            kw[name] = _biased(draw, name, rules)
    # MLA layers mostly have head size 576; others mostly a common size. Otherwise anything.
    common = draw(st.integers(0, 2))
    if common and kw["use_mla"]:
        kw["head_size"] = 576
    elif common:
        kw["head_size"] = draw(st.sampled_from([64, 128, 256, 80, 96]))
    else:
        kw["head_size"] = draw(field_values("head_size", rules))
    for name in BOOL_FIELDS:
        if name not in kw and declares(rules, name):
            kw[name] = _biased(draw, name, rules)
    for name in OPT_INT_FIELDS:
        if declares(rules, name):
            kw[name] = _biased(draw, name, rules)
    for decl in extra_fields(rules):  # the release's own fields: mostly at their default, like the switches
        if decl.platforms and kw["platform"] not in decl.platforms:
            continue
        pool = declared_pool(rules, decl)
        if pool and draw(st.integers(0, 3)) == 0:
            kw[decl.name] = draw(st.sampled_from(pool))
    for inv in getattr(rules, "invariants", ()):  # a definition (use_dcp = dcp_size > 1) follows its defining field
        if inv.kind == "definition" and kw.get(inv.equals.field) is not None:
            kw[inv.field] = bool(inv.equals(kw))
    if backend is not None:
        kw["backend"] = backend
    elif manual is False:
        kw["backend"] = None
        for pl in rules.lists:  # nor the MLA prefill registry's own request (vLLM honours one that validates)
            field = pl.mla_prefill.request_field if pl.mla_prefill is not None else ""
            if field in kw:
                kw[field] = None
    elif manual is True:
        kw["backend"] = draw(st.sampled_from(requests(rules)))
    else:
        kw["backend"] = draw(st.one_of(st.none(), st.none(), st.sampled_from(requests(rules))))
    _satisfy_clauses(kw, rules)
    return kw


def _satisfy_clauses(kw: dict[str, Any], rules: RuleSet) -> None:
    """A clause invariant over Config's fields alone (0.21's removed cuDNN prefill switch: vLLM refuses it unless a
    prefill backend is named) refuses some draws: the field the refusal names goes back to its default."""
    fields = set(FIELD_NAMES) | set(rules.fields)
    clauses = [inv for inv in getattr(rules, "invariants", ()) if inv.checks and all(
        lit.field in fields for c in inv.checks for lit in (*c.when, c.require))]
    if not clauses:
        return
    try:
        Config(**kw, vllm=rules.vllm)
    except ConfigError as e:
        if not any(e.field in (lit.field for c in inv.checks for lit in (*c.when, c.require)) for inv in clauses):
            raise
        decl = rules.fields.get(e.field)
        kw[e.field] = decl.default if decl is not None else DEFAULTS.get(e.field)


@st.composite
def configs(draw: Any, rules: RuleSet | None = None, **switches: Any) -> Config:
    """A full, valid Config drawn from the rules' domains (keyword switches as in config_kwargs)."""
    return Config(**draw(config_kwargs(rules, **switches)))


# A hand-picked pool of edge cases beside the generated ones: one per interesting corner of the rules.
_R1 = {"qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128}
EDGE_CASES: tuple[tuple[dict[str, Any], str], ...] = (
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "head_size": 128}, "decode"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "kv_cache_dtype": "fp8_inc"}, "decode"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "float16", "has_sink": True}, "decode"),
    ({"platform": "cuda", "compute_capability": "8.0", "dtype": "bfloat16", "kv_cache_dtype": "fp8"}, "decode"),
    ({"platform": "cuda", "compute_capability": "8.6", "dtype": "float16", "has_sink": True}, "decode"),
    ({"platform": "cuda", "compute_capability": "10.0", "dtype": "bfloat16"}, "decode"),
    ({"platform": "cuda", "compute_capability": "10.0", "dtype": "bfloat16", "has_sink": True}, "decode"),
    ({"platform": "cuda", "compute_capability": "10.0", "dtype": "bfloat16", "head_size": 256}, "decode"),
    ({"platform": "cuda", "compute_capability": "10.0", "dtype": "bfloat16", "has_sink": True,
      "use_trtllm_attention": False}, "decode"),
    ({"platform": "cuda", "compute_capability": "12.0", "dtype": "bfloat16", "has_sink": True}, "decode"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "float32", "head_size": 16}, "decode"),
    ({"platform": "cuda", "compute_capability": "7.5", "dtype": "float16", "head_size": 80}, "decode"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "block_size": 128}, "decode"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "use_mm_prefix": True}, "decode"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "attn_type": "encoder_decoder"}, "decode"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "use_mla": True}, "decode"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "use_mla": True, "kv_cache_dtype": "fp8"}, "decode"),
    ({"platform": "cuda", "compute_capability": "10.0", "dtype": "bfloat16", "use_mla": True, **_R1}, "decode"),
    ({"platform": "cuda", "compute_capability": "10.0", "dtype": "bfloat16", "use_mla": True,
      "qk_nope_head_dim": 64}, "decode"),
    ({"platform": "cuda", "compute_capability": "10.0", "dtype": "bfloat16", "use_mla": True, "use_sparse": True,
      "num_heads": 8, "index_topk": 2048, **_R1}, "decode"),
    ({"platform": "cuda", "compute_capability": "10.0", "dtype": "bfloat16", "use_mla": True, "use_sparse": True,
      "num_heads": 64, "kv_cache_dtype": "fp8_ds_mla"}, "decode"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "use_mla": True, "use_sparse": True}, "decode"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "use_mla": True, "use_sparse": True,
      "kv_cache_dtype": "fp8"}, "decode"),
    ({"platform": "cuda", "compute_capability": "10.0", "dtype": "bfloat16", "use_mla": True, **_R1}, "mla_prefill"),
    ({"platform": "cuda", "compute_capability": "10.0", "dtype": "bfloat16", "use_mla": True, "use_cudnn_prefill": True,
      "use_trtllm_ragged_deepseek_prefill": False, **_R1}, "mla_prefill"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "use_mla": True}, "mla_prefill"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "backend": "FLASHINFER", "head_size": 96}, "decode"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "backend": "TREE_ATTN"}, "decode"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "backend": "FLASH_ATTN_DIFFKV"}, "decode"),
    ({"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "backend": "CPU_ATTN"}, "decode"),
    ({"platform": "rocm", "rocm_arch": "gfx942", "dtype": "bfloat16"}, "decode"),
    ({"platform": "rocm", "rocm_arch": "gfx942", "dtype": "bfloat16", "rocm_use_aiter": True}, "decode"),
    ({"platform": "rocm", "rocm_arch": "gfx1100", "dtype": "bfloat16", "rocm_use_aiter": True}, "decode"),
    ({"platform": "rocm", "rocm_arch": "gfx942", "dtype": "bfloat16", "use_prefill_decode_attention": True}, "decode"),
    ({"platform": "rocm", "rocm_arch": "gfx942", "dtype": "bfloat16", "use_mla": True}, "decode"),
    ({"platform": "rocm", "rocm_arch": "gfx942", "dtype": "bfloat16", "use_mla": True, "block_size": 1}, "decode"),
    ({"platform": "rocm", "rocm_arch": "gfx942", "dtype": "bfloat16", "use_mla": True, "block_size": 1,
      "backend": "TRITON_MLA"}, "decode"),
    ({"platform": "rocm", "rocm_arch": "gfx942", "dtype": "bfloat16", "use_mla": True, "use_sparse": True,
      "block_size": 1}, "decode"),
    ({"platform": "rocm", "rocm_arch": "gfx942", "dtype": "bfloat16", "use_mla": True, "use_sparse": True,
      "kv_cache_dtype": "fp8"}, "decode"),
    ({"platform": "rocm", "rocm_arch": "gfx1100", "dtype": "bfloat16", "backend": "ROCM_AITER_FA"}, "decode"),
    ({"platform": "rocm", "rocm_arch": "gfx942", "dtype": "bfloat16", "backend": "FLASH_ATTN"}, "decode"),
    ({"platform": "rocm", "rocm_arch": "gfx942", "dtype": "bfloat16", "use_mla": True}, "mla_prefill"),
    ({"platform": "cpu", "dtype": "bfloat16"}, "decode"),
    ({"platform": "cpu", "dtype": "float32", "head_size": 48}, "decode"),
    ({"platform": "cpu", "dtype": "bfloat16", "use_mla": True}, "decode"),
    ({"platform": "cpu", "dtype": "bfloat16", "backend": "FLASH_ATTN"}, "decode"),
)


def edge_queries() -> st.SearchStrategy[tuple[Config, str]]:
    """The hand-picked pool (entries naming a backend the active rules lack are skipped)."""
    def make(case: tuple[dict[str, Any], str]) -> tuple[Config, str] | None:
        try:
            return Config(**case[0]), case[1]
        except ConfigError:
            return None
    return st.sampled_from(EDGE_CASES).map(make).filter(lambda q: q is not None)


@st.composite
def queries(draw: Any, rules: RuleSet | None = None, *, edges: bool | None = None, **switches: Any) -> tuple[Config, str]:
    """(config, role): the role is mla_prefill only for MLA configs. With no switches given, one draw in
    five comes from the hand-picked EDGE_CASES pool (edges=False turns that off)."""
    if edges is not False and not switches and rules is None and draw(st.integers(0, 4)) == 0:
        return draw(edge_queries())
    c = draw(configs(rules, **switches))
    return c, draw(st.sampled_from(roles_for(c)))


# ---------------------------------------------------------------------------------------------------
# partial configs
# ---------------------------------------------------------------------------------------------------
FREEABLE = ("dtype", "head_size", "kv_cache_dtype", "block_size", "compute_capability", "has_sink", "attn_type",
            "use_mm_prefix", "flash_attn_version", "backend", "num_heads", "use_trtllm_attention", "platform",
            "rocm_use_aiter", "rocm_arch", "use_sparse", "qk_nope_head_dim")


@st.composite
def partial_configs(draw: Any, rules: RuleSet | None = None, *, max_free: int = 2, fields: Iterable[str] = FREEABLE,
                    **switches: Any) -> Config:
    """A full config with 1..max_free fields set to ANY."""
    rules = rules or rules_now()
    kw = draw(config_kwargs(rules, **switches))
    if fields is FREEABLE:  # the default pool: also the fields only this release declares
        fields = (*FREEABLE, *(d.name for d in extra_fields(rules) if d.category != "hardware"))
    free = draw(st.lists(st.sampled_from(tuple(fields)), min_size=1, max_size=max_free, unique=True))
    for f in free:
        kw[f] = ANY
    if "platform" in free:  # a free platform frees its hardware facts too (they belong to one platform)
        kw["compute_capability"] = ANY
        kw["rocm_arch"] = ANY
        for d in extra_fields(rules):
            if d.category == "hardware" or (d.platforms and d.name in kw):
                kw[d.name] = ANY
    return Config(**kw)


def completions(config: Config, rules: RuleSet | None = None) -> Iterable[Config]:
    """Every valid full Config obtained by giving each free field a value from its pool.

    Hardware facts follow the platform: a compute capability only on cuda, a gfx arch only on rocm.
    """
    rules = rules or rules_now()
    free = list(config.free_fields)
    # platform first, so the hardware facts can follow it
    free.sort(key=lambda f: (f != "platform", f))
    base = {f: getattr(config, f) for f in config.field_names}
    base["vllm"] = config.vllm

    def pool(f: str, kw: dict[str, Any]) -> list[Any]:
        plat = kw.get("platform")
        if f == "compute_capability":
            return field_pool(rules, f) if plat == "cuda" else [None] if plat is not ANY else [None, *field_pool(rules, f)]
        if f == "rocm_arch":
            return field_pool(rules, f) if plat == "rocm" else [None] if plat is not ANY else [None, *field_pool(rules, f)]
        decl = rules.fields.get(f)
        if decl is not None and decl.platforms and f not in FIELD_NAMES and plat is not ANY and plat not in decl.platforms:
            return [decl.default]
        return field_pool(rules, f)

    def rec(i: int, kw: dict[str, Any]) -> Iterable[Config]:
        if i == len(free):
            try:
                yield Config(**kw)
            except ConfigError:
                return
            return
        for v in pool(free[i], kw):
            kw2 = dict(kw)
            kw2[free[i]] = v
            yield from rec(i + 1, kw2)

    yield from rec(0, base)


# ---------------------------------------------------------------------------------------------------
# arbitrary (mostly bad) input for Config
# ---------------------------------------------------------------------------------------------------
class _Weird:
    def __repr__(self) -> str:
        return "<weird>"

    def __str__(self) -> str:
        raise RuntimeError("str() of this object fails")


class _NoEq:
    def __eq__(self, other: object) -> bool:
        raise TypeError("no comparisons")

    __hash__ = None  # type: ignore[assignment]


def junk() -> st.SearchStrategy[Any]:
    """Values of every shape a user (or a JSON file) might pass by mistake."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.binary(max_size=8),
        st.sampled_from(["", " ", "auto", "ANY", "none", "None", "nan", "inf", "-1", "1e9", "9.0", "sm_90", "10.", ".5",
                         "fp8*", "FP8", "bf16", "cuda ", "\x00", "é", "𝟗.𝟎", "٩.٠", "9.0.0", "0x10", "1_000"]),
        st.just(math.nan), st.just(ANY), st.complex_numbers(max_magnitude=10),
        st.builds(_Weird), st.builds(_NoEq), st.just(object()), st.just(Config),
    )
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.tuples(inner, inner), st.dictionaries(st.text(max_size=5), inner, max_size=2),
        st.frozensets(st.integers(), max_size=3)), max_leaves=5)


@st.composite
def config_inputs(draw: Any, rules: RuleSet | None = None) -> dict[str, Any]:
    """Config keyword arguments with some fields replaced by junk, unknown keys, or valid-looking strings."""
    rules = rules or rules_now()
    kw = draw(config_kwargs(rules))
    names = [*FIELD_NAMES, "gpu"]
    for name in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
        kw[name] = draw(st.one_of(junk(), field_values(name, rules) if name != "gpu" else st.sampled_from(
            [*rules.gpus, "h100", "rtx-4090", "no such gpu"])))
    if draw(st.integers(0, 9)) == 0:
        kw[draw(st.text(min_size=1, max_size=12))] = draw(junk())
    if draw(st.integers(0, 9)) == 0:
        for name in draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
            kw.pop(name, None)
    return kw


# ---------------------------------------------------------------------------------------------------
# synthetic rule sets
# ---------------------------------------------------------------------------------------------------
SYN_PLATFORMS = ("cuda", "rocm", "cpu")


@st.composite
def _pred(draw: Any, kind: str) -> Any:
    if kind == "head_size":
        return draw(st.one_of(
            st.lists(st.sampled_from([32, 64, 80, 96, 128, 256, 576]), min_size=1, max_size=4, unique=True).map(sorted),
            st.builds(lambda m, hi: {"multiple_of": m, "max": hi}, st.sampled_from([8, 16, 32]), st.sampled_from([128, 256, 512])),
            st.builds(lambda lo: {"min": lo}, st.sampled_from([16, 32, 64]))))
    if kind == "compute_capability":
        return draw(st.one_of(
            st.builds(lambda lo: {"min": lo}, st.sampled_from(["7.5", "8.0", "9.0", "10.0"])),
            st.builds(lambda lo, hi: {"min": lo, "max": hi}, st.sampled_from(["7.5", "8.0"]), st.sampled_from(["9.0", "12.1"])),
            st.builds(lambda m: {"major_in": m}, st.lists(st.sampled_from([8, 9, 10, 12]), min_size=1, max_size=2, unique=True))))
    raise AssertionError(kind)


_CHECK_FIELDS = {
    "has_sink": st.booleans(), "use_mm_prefix": st.booleans(), "dtype": st.sampled_from(["float16", "bfloat16", "float32"]),
    "kv_cache_dtype": st.sampled_from(["auto", "fp8", "fp8*", "bfloat16"]), "block_size": st.sampled_from([16, 32, 64]),
    "compute_capability": st.sampled_from([{"min": "9.0"}, {"major_in": [10]}, {"max": "8.9"}]),
    "num_heads": st.sampled_from([{"max": 16}, {"present": True}, {"none": True, "eq": 8}]),
    "head_size": st.sampled_from([{"max": 128}, [64, 128], {"multiple_of": 32}]),
    "rocm_use_aiter": st.booleans(), "use_prefill_decode_attention": st.booleans(), "fa_version": st.sampled_from([2, 3]),
}


@st.composite
def _check(draw: Any, i: int) -> dict[str, Any]:
    fields = sorted(_CHECK_FIELDS)
    req_f = draw(st.sampled_from(fields))
    out: dict[str, Any] = {"reason": f"synthetic reason {i} on {req_f}", "require": {req_f: draw(_CHECK_FIELDS[req_f])}}
    if draw(st.booleans()):
        when_f = draw(st.sampled_from([f for f in fields if f != req_f]))
        out["when"] = {when_f: draw(_CHECK_FIELDS[when_f])}
    return out


@st.composite
def _backend(draw: Any, name: str, platforms: list[str], domains: dict[str, list]) -> dict[str, Any]:
    b: dict[str, Any] = {"platforms": platforms, "role": "decode", "summary": f"synthetic {name}"}
    maybe = lambda: draw(st.booleans())  # noqa: E731
    if maybe():
        b["dtypes"] = draw(st.lists(st.sampled_from(domains["dtype"]), min_size=1, unique=True))
    if maybe():
        exact = draw(st.lists(st.sampled_from(domains["kv_cache_dtype"]), min_size=1, max_size=4, unique=True))
        b["kv_cache_dtypes"] = exact + (["fp8*"] if maybe() else [])
    if maybe():
        b["kernel_block_sizes"] = draw(st.lists(st.sampled_from([1, 16, 32, 64, 128]), min_size=1, max_size=3, unique=True))
    if maybe():
        b["head_sizes"] = draw(_pred("head_size"))
    if maybe():
        b["compute_capability"] = draw(_pred("compute_capability"))
    if maybe():
        b["attn_types"] = draw(st.lists(st.sampled_from(domains["attn_type"]), min_size=1, unique=True))
    for flag in ("sink", "mm_prefix", "mla", "sparse"):
        if draw(st.integers(0, 3)) == 0:
            b[flag] = True
    if b.get("sparse"):
        b["mla"] = True
    if draw(st.integers(0, 3)) == 0:
        b["checks"] = [draw(_check(i)) for i in range(draw(st.integers(1, 2)))]
    if draw(st.integers(0, 3)) == 0:
        b["variant_field"] = "fa_version"
        b["variants"] = {
            "V3": {"values": [3], "kv_cache_dtypes": ["auto", "fp8*"], "sink": True},
            "V2": {"values": [2]},
        }
    if draw(st.integers(0, 7)) == 0:
        b["explicit_only"] = True
    return b


_LIST_WHENS = [
    {"use_mla": False, "compute_capability": {"major_in": [10]}},
    {"use_mla": False},
    {"use_mla": True},
    {"num_heads": {"max": 16}},
    {"has_sink": True},
    {"use_sparse": True},
]


@st.composite
def synthetic_rules(draw: Any, domains_doc: dict[str, Any] | None = None, *, max_backends: int = 6) -> dict[str, dict]:
    """Random rule documents {file name: TOML document}: domains.toml (the real one) + synth.toml.

    Backends get random capabilities, custom checks and variants; each platform gets 1..3 priority lists
    (random conditions, random order, random manual mode, guards) and a last catch-all list for the decode
    role, and every non-explicit backend is listed on each of its platforms (the structure checks demand it).
    """
    import tomllib

    from benchmarks.bench_scaling import packaged_domains_text  # without checks of fields it cannot declare
    dom = domains_doc or tomllib.loads(packaged_domains_text())
    domains = dom["fields"]
    n = draw(st.integers(1, max_backends))
    names = [f"SYN_{i}" for i in range(n)]
    backends: dict[str, Any] = {}
    for name in names:
        plats = draw(st.lists(st.sampled_from(SYN_PLATFORMS), min_size=1, max_size=2, unique=True))
        backends[name] = draw(_backend(name, plats, domains))
    platforms: dict[str, Any] = {}
    for plat in SYN_PLATFORMS:
        mine = [b for b in names if plat in backends[b]["platforms"]]
        if not mine:
            continue
        settings: dict[str, Any] = {"validate": draw(st.booleans())}
        lists = []
        for j in range(draw(st.integers(0, 2))):
            when = {"role": "decode", **draw(st.sampled_from(_LIST_WHENS))}
            lists.append({"name": f"{plat} list {j}", "when": when,
                          "entries": draw(st.lists(st.sampled_from(mine), min_size=1, unique=True))})
        lists.append({"name": f"{plat} default", "when": {"role": "decode"},
                      "entries": draw(st.permutations(mine))})
        for pl in lists:
            mode = draw(st.sampled_from(["validate", "ignore", "table"]))
            entries = []
            for e in pl["entries"]:
                if draw(st.integers(0, 3)) == 0:
                    entries.append({"backend": e, "checks": [draw(_check(100 + len(entries)))]})
                else:
                    entries.append(e)
            pl["entries"] = entries
            if mode == "ignore":
                pl["manual"] = "ignore"
                pl["ignore_warning"] = "request {backend} ignored"
            elif mode == "table":
                acc = draw(st.lists(st.sampled_from(mine), min_size=1, unique=True))
                pl["manual_accept"] = [{"backend": a, "checks": [draw(_check(200 + k))]} if draw(st.booleans()) else
                                       {"backend": a} for k, a in enumerate(acc)]
                pl["manual_other"] = "{backend} is not accepted here"
        settings["lists"] = lists
        platforms[plat] = settings
    derived = {"fa_version": {
        "values": [2, 3],
        "cases": [{"when": {"flash_attn_version": 3}, "value": 3}, {"when": {"flash_attn_version": 2}, "value": 2},
                  {"when": {"compute_capability": {"major_in": [9]}}, "value": 3}, {"value": 2}],
    }}
    return {"domains.toml": dom, "synth.toml": {"derived": derived, "backends": backends, "platforms": platforms}}


# ---------------------------------------------------------------------------------------------------
# a small TOML writer (tomllib reads only)
# ---------------------------------------------------------------------------------------------------
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON escapes are TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(str(k))} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def dump_toml(doc: dict[str, Any]) -> str:
    """Top-level tables as [sections] (two levels for backends/platforms/derived), values inline."""
    lines: list[str] = []
    for top, body in doc.items():
        if not isinstance(body, dict):
            lines.append(f"{_key(top)} = {toml_value(body)}")
    for top, body in doc.items():
        if not isinstance(body, dict):
            continue
        if top in ("backends", "platforms", "derived", "aliases") and all(isinstance(x, dict) for x in body.values()):
            for name, table in body.items():
                lines.append(f"\n[{_key(top)}.{_key(name)}]")
                for k, v in table.items():
                    lines.append(f"{_key(k)} = {toml_value(v)}")
        else:
            lines.append(f"\n[{_key(top)}]")
            for k, v in body.items():
                lines.append(f"{_key(k)} = {toml_value(v)}")
    return "\n".join(lines) + "\n"


def write_rules(docs: dict[str, dict], directory: Any) -> None:
    from pathlib import Path
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("*.toml"):
        old.unlink()
    for fname, doc in docs.items():
        (d / fname).write_text(dump_toml(doc), encoding="utf-8")


def packaged_docs(version: str | None = None) -> dict[str, dict]:
    """A release's packaged rules (default: the default release) as raw TOML documents (for editing copies)."""
    from attnsolve.rules import default_version
    from attnsolve.rules.loader import release_documents
    from attnsolve.rules.sets import info
    # an edit folder ([ruleset] base) comes merged into its base's files, as the loader reads it
    return release_documents(info(version or default_version()).path)


# ---------------------------------------------------------------------------------------------------
# kernel shapes
# ---------------------------------------------------------------------------------------------------
@st.composite
def kernel_shapes(draw: Any, *, head_sizes: Iterable[int] = (32, 64, 128), block_sizes: Iterable[int] = (16, 32),
                  max_seqs: int = 3, max_kv: int = 48) -> dict[str, Any]:
    """A small paged-attention problem: sequence lengths, head counts (GQA), head size, block size, dtype."""
    num_seqs = draw(st.integers(1, max_seqs))
    kv_heads = draw(st.sampled_from([1, 2]))
    group = draw(st.sampled_from([1, 2, 4]))
    seq_lens = draw(st.lists(st.integers(1, max_kv), min_size=num_seqs, max_size=num_seqs))
    query_lens = [draw(st.integers(1, min(4, s))) for s in seq_lens]
    return {
        "num_seqs": num_seqs, "seq_lens": seq_lens, "query_lens": query_lens,
        "num_kv_heads": kv_heads, "num_heads": kv_heads * group,
        "head_size": draw(st.sampled_from(list(head_sizes))), "block_size": draw(st.sampled_from(list(block_sizes))),
        "dtype": draw(st.sampled_from(["float16", "bfloat16", "float32"])), "seed": draw(st.integers(0, 2**16)),
    }
