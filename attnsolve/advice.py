"""Advice: the fixes a vLLM user can act on, ranked, and written the way they are typed.

`explain` (explain.py / diagnosis.py) finds minimal conflicts and smallest fixes over Config
fields. This layer turns them into advice for a person launching vLLM:

- fixes are searched per goal (a higher-priority backend that lost, or any backend when nothing
  fits) over what the user can change, and every one is verified by re-solving;
- they are ranked by what the user can change: settings and environment switches first, then the
  vLLM version, then the hardware; model facts only when the user gave them as a flag. A fix that
  keeps the user's intent (an fp8 KV cache stays fp8) outranks one that drops it;
- each is written ready to paste: `vllm serve` flags, `--attention-config.*` keys or environment
  variables; hardware fixes name real GPUs of the nearest newer generation of the same vendor.

`attnsolve explain` and `str(explain(config))` print the same Advice (advice_text.py); its
`to_dict()` is the JSON result.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from .config import ANY, Config, format_cc
from .errors import ConfigError, SelectionError
from .advice_text import prefill_dict, prefill_text
from .explain import Explanation, Verdict, explain, request_conflicts
from .render import show as _show

__all__ = ["Advice", "Context", "LostBackend", "Remedy", "advise", "change_text", "other_releases", "prefill_dict", "prefill_for", "prefill_text", "KINDS"]

# Ranked kinds of fix: what a user can change, most easily first.
KINDS = ("setting", "version", "hardware", "model")

# vLLM spellings of the settings: `vllm serve` flags, --attention-config keys, environment variables.
_SERVE_FLAGS = {"kv_cache_dtype": "--kv-cache-dtype", "block_size": "--block-size", "dtype": "--dtype",
                "backend": "--attention-backend"}
_ATTENTION_CONFIG = ("flash_attn_version", "use_trtllm_attention", "use_prefill_decode_attention",
                     "use_trtllm_ragged_deepseek_prefill", "disable_flashinfer_prefill", "use_cudnn_prefill")
_ENV_SWITCHES = {"rocm_use_aiter": "VLLM_ROCM_USE_AITER", "rocm_use_aiter_mha": "VLLM_ROCM_USE_AITER_MHA",
                 "rocm_use_aiter_mla": "VLLM_ROCM_USE_AITER_MLA",
                 "rocm_use_aiter_unified_attention": "VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION"}
_INSTALL = {"flashinfer_available": "install FlashInfer (pip install flashinfer-python)",
            "trtllm_available": "let FlashInfer download its TRT-LLM kernels (network access at start-up)"}
_HARDWARE = ("platform", "compute_capability", "rocm_arch")
# Model facts: offered as a fix only when the user typed them as an attnsolve flag (a what-if).
_MODEL = ("head_size", "use_mla", "use_sparse", "has_sink", "use_mm_prefix", "attn_type", "qk_nope_head_dim",
          "qk_rope_head_dim", "v_head_dim", "index_topk")
_MODEL_FLAGS = {f: "--" + f.replace("_", "-") for f in _MODEL}
_FP8 = "fp8"


@dataclass(frozen=True)
class Context:
    """The question as the user asked it: the Config plus what came from their own flags.

    The CLI builds one from flags, --model and the environment (attnsolve/query.py); the API
    builds one from a Config with `Context.of`, counting every field set away from its default
    as the user's own."""

    config: Config
    role: str | None = None
    gpu: str | None = None
    user_fields: frozenset[str] = frozenset()  # Config fields set by a flag (not by --model)
    tensor_parallel_size: int = 1
    total_heads: int | None = None  # query heads of the model before tensor parallelism
    sparse_kv_rewrite: bool = False  # DeepSeek-V3.2: an fp8 KV cache becomes fp8_ds_mla
    float16_ok: bool = True  # False for model types vLLM refuses to run in float16
    notes: tuple[str, ...] = ()  # what the model reader and --gpu auto resolved, said to the user
    env: tuple[tuple[str, str], ...] = ()  # vLLM environment switches read from the process
    defaulted: tuple[str, ...] = ()  # fields nobody gave (shown as "(default)")
    dtype_auto: bool = False  # the dtype is vLLM's --dtype auto for the model (depends on the GPU)
    model_path: str | None = None
    available: frozenset[str] | None = None  # backends installed (None: all)

    @classmethod
    def of(cls, config: Config, role: str | None = None, available: Iterable[str] | None = None) -> "Context":
        """An API question: every field set away from its default counts as the user's."""
        given = frozenset(config.to_dict(only_changed=True)) - {"platform", "dtype"}
        heads = config.num_heads if isinstance(config.num_heads, int) else None
        return cls(config, role, config.gpu if isinstance(config.gpu, str) else None, given, total_heads=heads,
                   available=None if available is None else frozenset(available))

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(only_changed=True), "role": self.role, "gpu": self.gpu,
                "tensor_parallel_size": self.tensor_parallel_size, "model": self.model_path,
                "notes": list(self.notes), "defaulted": list(self.defaulted), "env": dict(self.env)}


@dataclass(frozen=True)
class Remedy:
    """One fix: the Config changes, the backend they get, the kind, and the text to paste."""

    changes: Mapping[str, Any]
    selects: str
    kind: str
    text: str
    keeps_intent: bool = True
    gpus: tuple[str, ...] = ()
    variant: str | None = None
    gives_up: str | None = None  # what the user chose and this fix drops ("the fp8 KV cache")

    @property
    def label(self) -> str:
        return self.selects + (f" ({self.variant})" if self.variant else "")

    def to_dict(self) -> dict[str, Any]:
        return {"changes": dict(self.changes), "selects": self.selects, "variant": self.variant, "kind": self.kind,
                "text": self.text, "keeps_intent": self.keeps_intent, "gives_up": self.gives_up,
                "gpus": list(self.gpus)}


@dataclass(frozen=True)
class LostBackend:
    """A higher-priority backend that lost: vLLM's reasons, the facts that rule it out, the fixes."""

    backend: str
    reasons: tuple[str, ...]
    conflict: Mapping[str, Any]
    fixes: tuple[Remedy, ...]
    hardware_only: bool
    model_conflict: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "reasons": list(self.reasons), "conflict": dict(self.conflict),
                "fixes": [f.to_dict() for f in self.fixes], "hardware_only": self.hardware_only,
                "model_conflict": None if self.model_conflict is None else dict(self.model_conflict)}


@dataclass(frozen=True)
class Advice:
    """An explanation with the advice around it: lost backends, ranked fixes, the one-line hint."""

    explanation: Explanation
    lost: tuple[LostBackend, ...] = ()
    fixes: tuple[Remedy, ...] = ()
    hint: str = ""
    hardware_only: bool = False
    conflicts: tuple[Mapping[str, Any], ...] = ()  # shown conflicts (noise such as platform=cuda removed)
    startup_error: str | None = None  # vLLM selects a backend but refuses to start (its own text)
    context: Context | None = None  # the question (None: Context.of the explanation's config)
    prefill: Any = None  # for an MLA model asked about decode: the MLA prefill Selection vLLM also picks
    other_releases: tuple[Any, ...] = ()  # on failure: versions.Outcome of other vLLM releases that select one

    @property
    def rejected(self) -> tuple[Verdict, ...]:
        """The candidates that lost: every one on failure, those above the selected one on success."""
        e = self.explanation
        if e.selected is None:
            return tuple(c for c in e.candidates if not c.valid)
        order = [c.backend for c in e.candidates]
        return tuple(e.candidates[: order.index(e.selected)]) if e.selected in order else ()

    def to_dict(self) -> dict[str, Any]:
        """One JSON shape on success and failure (docs/attnsolve-output.schema.json)."""
        ctx = self.context or Context.of(self.explanation.config, self.explanation.role)
        data = self.explanation.to_dict()
        data.update(fixes=[f.to_dict() for f in self.fixes], lost=[x.to_dict() for x in self.lost],
                    hint=self.hint, hardware_only=self.hardware_only, startup_error=self.startup_error,
                    query=ctx.to_dict(), error=self.explanation.message or None,
                    prefill=prefill_dict(self.prefill),
                    rejected=[{"backend": c.backend, "reasons": list(c.reasons)} for c in self.rejected],
                    other_releases=[o.to_dict() for o in self.other_releases])
        return data

    def lines(self, style: Any = None) -> list[str]:
        """The text `attnsolve explain` prints (attnsolve/advice_text.py)."""
        from .advice_text import advice_lines
        e = self.explanation
        return advice_lines(self, self.context or Context.of(e.config, e.role), style)

    def __str__(self) -> str:
        return "\n".join(self.lines())


# ---------------------------------------------------------------------------------------------
# Writing a change the way a vLLM user types it


def gpu_text(names: Sequence[str], facts: Mapping[str, Any], older: bool = False) -> str:
    """'an H100 or H200 (Hopper, SM 9.0)'."""
    from .gpus import generation_name
    shown = " or ".join(names)
    article = "an" if shown[:1].upper() in "AEFHILMNORSX" else "a"
    return f"{article} {shown} ({generation_name(facts)}" + (", an older generation)" if older else ")")


def change_text(ctx: Context, name: str, value: Any) -> str:
    """One change, ready to paste: a `vllm serve` flag, an --attention-config key or an env var."""
    if name == "backend":
        return "drop --attention-backend (automatic selection)" if value is None else f"--attention-backend {value}"
    if name in _SERVE_FLAGS:
        return f"drop {_SERVE_FLAGS[name]}" if value is None else f"{_SERVE_FLAGS[name]} {_show(value)}"
    if name in _ATTENTION_CONFIG:
        key = f"--attention-config.{name}"
        return f"drop {key}" if value is None else f"{key} {_show(value)}"
    if name in _ENV_SWITCHES:
        return f"{_ENV_SWITCHES[name]}={1 if value else 0}"
    if name in _INSTALL:
        return _INSTALL[name] if value else f"without {name.removesuffix('_available')}"
    if name == "num_heads" and isinstance(value, int):
        if ctx.total_heads and ctx.total_heads % value == 0:
            return f"--tensor-parallel-size {ctx.total_heads // value}"
        return f"--num-heads {value * ctx.tensor_parallel_size}"
    if name in _HARDWARE:
        return f"{name}={_show(value)}"
    declared = _declared_fields(ctx.config).get(name)
    if declared is not None and name not in _MODEL_FLAGS:
        spelled = _declared_spelling(declared, value)
        if spelled:
            return spelled
    return f"{_MODEL_FLAGS.get(name, '--' + name.replace('_', '-'))} {_show(value)}"


def _declared_spelling(decl: Any, value: Any) -> str | None:
    """How vLLM spells a field the release declares: its environment variable, its
    --attention-config key, or the `vllm serve` flag its declaration names; None when the
    declaration names no pasteable spelling (a model fact, an installed package...)."""
    if decl.name.endswith("_available"):
        package = decl.name.removesuffix("_available")
        return f"install {package}" if value else f"without {package}"
    if decl.env:
        if value is None:
            return f"unset {decl.env}"
        return f"{decl.env}={(1 if value else 0) if isinstance(value, bool) else _show(value)}"
    keys = [f for f in decl.flags if f.startswith("--attention-config.")]
    words = (decl.vllm or "").split()
    if not keys and words and words[0].startswith("--") and (len(words) == 1 or words[1][:1] in "(o"):
        keys = [words[0]]
    if not keys:
        return None
    return f"drop {keys[0]}" if value is None else f"{keys[0]} {_show(value)}"


def _is_model_fact(ctx: Context, name: str) -> bool:
    if name in _MODEL:
        return True
    if name in _SERVE_FLAGS or name == "num_heads":  # --dtype, --tensor-parallel-size: typed at vllm serve
        return False
    decl = _declared_fields(ctx.config).get(name)
    return decl is not None and decl.category == "model" and name not in _HARDWARE


def _kind(ctx: Context, changes: Mapping[str, Any]) -> str:
    declared = _declared_fields(ctx.config)
    if any(f in _HARDWARE or getattr(declared.get(f), "category", "") == "hardware" for f in changes):
        return "hardware"
    if any(_is_model_fact(ctx, f) for f in changes):
        return "model"
    return "setting"


def _gives_up(ctx: Context, changes: Mapping[str, Any]) -> str | None:
    """What the fix gives up of the user's choices (fp8 KV, float32, a requested backend, a model
    fact), or None when it keeps them."""
    c = ctx.config
    for f, v in changes.items():
        if f == "kv_cache_dtype":
            was, now = str(c.kv_cache_dtype), str(v)
            if was.startswith(_FP8) and not now.startswith(_FP8):
                return "the fp8 KV cache"
            if now.startswith(_FP8) and not was.startswith(_FP8):
                return f"the {was} KV cache"
        elif f == "dtype":
            if "float32" in (c.dtype, v) or "dtype" in ctx.user_fields:
                return f"{c.dtype} weights"
        elif f == "backend":
            if c.backend is not None:
                return f"the requested {c.backend}"
        elif _is_model_fact(ctx, f):
            return f"{f}={_show(getattr(c, f))}"
        elif f in ctx.user_fields and f != "num_heads" and _kind(ctx, {f: v}) == "setting":
            return f"your {change_text(ctx, f, getattr(c, f))}"  # a switch the user set on purpose
    return None


def _named_sizes(rules: Any) -> frozenset[int]:
    """The head sizes some backend names in its rules (64, 128, 256, 576...): real models' sizes."""
    out: set[int] = set()
    for b in rules.backends.values():
        pred = getattr(getattr(b, "caps", None), "head_sizes", None)
        if pred is not None and pred.in_:
            out |= {v for v in pred.in_ if isinstance(v, int)}
    return frozenset(out)


def _plausible(rules: Any, name: str, value: Any) -> bool:
    """A model fact a real model could have: a head size some backend names, a dimension that is a
    multiple of 16 (not the 255 next to 256 that only tells 'any other size')."""
    if name not in _MODEL or isinstance(value, bool) or not isinstance(value, int):
        return True
    if name == "head_size":
        return value in _named_sizes(rules)
    return value % 16 == 0


def _applicable(ctx: Context, changes: Mapping[str, Any]) -> bool:
    """Whether the user can make this change: model facts only when typed as a flag (and then only
    real values); a per-GPU head count only through --tensor-parallel-size unless typed."""
    from .selection import compiled_rules
    rules = compiled_rules(ctx.config).rules
    for k, v in changes.items():
        if _is_model_fact(ctx, k) and (k not in ctx.user_fields or not _plausible(rules, k, v)):
            return False
        if k == "num_heads" and "num_heads" not in ctx.user_fields and not (
                ctx.total_heads and isinstance(v, int) and v > 0 and ctx.total_heads % v == 0):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Candidate changes, per kind


def _settings(ctx: Context) -> list[tuple[str, Any]]:
    """Every single setting change worth trying, nearest first within a field."""
    from .modelconfig import supported_dtypes
    from .selection import compiled_rules
    c = ctx.config
    dom = compiled_rules(c).rules.domains
    out: list[tuple[str, Any]] = []
    kv_values = list(dom["kv_cache_dtype"])
    if ctx.sparse_kv_rewrite:  # the model turns every fp8 spelling into fp8_ds_mla
        kv_values = [v for v in kv_values if not v.startswith(_FP8) or v == "fp8_ds_mla"]
    # fp8 spellings first for an fp8 user (keeps intent), "auto" first otherwise
    fp8_user = str(c.kv_cache_dtype).startswith(_FP8)
    kv_values.sort(key=lambda v: (v.startswith(_FP8) != fp8_user, v != "auto"))
    out += [("kv_cache_dtype", v) for v in kv_values if v != c.kv_cache_dtype]
    out += [("block_size", v) for v in (None, *dom["block_size"]) if v != c.block_size]
    if c.platform is not None:
        dts = supported_dtypes(str(c.platform), c.compute_capability)
        out += [("dtype", v) for v in dts if v != c.dtype and (v != "float16" or ctx.float16_ok)]
    if c.platform == "cuda":
        out += [("flash_attn_version", v) for v in (None, *dom["flash_attn_version"]) if v != c.flash_attn_version]
        out += [("use_trtllm_attention", v) for v in (None, True, False) if v != c.use_trtllm_attention]
        for f in ("flashinfer_available", "trtllm_available"):
            if getattr(c, f) is False:
                out.append((f, True))
    if c.platform == "rocm":
        for f in (*_ENV_SWITCHES, "use_prefill_decode_attention"):
            out.append((f, not getattr(c, f)))
    declared = _declared_fields(c)
    if ctx.role == "mla_prefill":
        for f in ("use_trtllm_ragged_deepseek_prefill", "disable_flashinfer_prefill", "use_cudnn_prefill"):
            if f in declared:
                out.append((f, not getattr(c, f)))
    out += _declared_settings(ctx, {f for f, _ in out}, dom)
    if ctx.total_heads and c.num_heads is not None:
        for tp in (1, 2, 4, 8, 16):
            if ctx.total_heads % tp == 0 and ctx.total_heads // tp != c.num_heads:
                out.append(("num_heads", ctx.total_heads // tp))
    return out


def _declared_settings(ctx: Context, done: set[str], dom: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The release's other declared settings worth trying: switches the user set (undo them),
    environment switches and packages that are off (a release's new inputs, with no code here)."""
    c = ctx.config
    out: list[tuple[str, Any]] = []
    for name, decl in _declared_fields(c).items():
        if name in done or name in ("backend", "block_size", "kv_cache_dtype", "dtype", "dtype_explicit", "num_heads"):
            continue
        if decl.category != "setting" or (decl.platforms and c.platform not in decl.platforms):
            continue
        value = getattr(c, name, None)
        if value is ANY:
            continue
        user = name in ctx.user_fields
        if not (user or decl.env or (name.endswith("_available") and value is False)):
            continue
        if decl.kind == "bool":
            values: list[Any] = [not value] if isinstance(value, bool) else [True, False]
        elif decl.kind == "tristate":
            values = [v for v in (None, True, False) if v is not value]
        elif decl.kind in ("enum", "int") and name in dom:
            values = [v for v in (None, *dom[name]) if v != value and (v is not None or decl.default is None)]
        else:
            continue
        out += [(name, v) for v in values]
    return out


def _hardware(ctx: Context) -> list[tuple[dict[str, Any], tuple[str, ...], Mapping[str, Any], bool]]:
    """(changes, GPU names, GPU facts, older) per other generation of the same vendor, nearest
    newer first; on CPU, GPUs of both vendors (a fix there is 'use a GPU')."""
    from .gpus import nearest_first, suggestable
    c = ctx.config
    out: list[tuple[dict[str, Any], tuple[str, ...], Mapping[str, Any], bool]] = []

    def group(rows: Iterable[tuple[str, Mapping[str, Any], bool]]) -> None:
        seen: dict[tuple[Any, Any], int] = {}
        for name, g, older in rows:
            key = (g.get("compute_capability"), g.get("rocm_arch"))
            if key in seen:
                i = seen[key]
                ch, names, facts, old = out[i]
                out[i] = (ch, (*names, name), facts, old)
                continue
            changes: dict[str, Any] = {}
            if g.get("platform") != c.platform:
                changes["platform"] = g.get("platform")
            if "compute_capability" in g:
                changes["compute_capability"] = str(g["compute_capability"])
            if "rocm_arch" in g:
                changes["rocm_arch"] = g["rocm_arch"]
            seen[key] = len(out)
            out.append((changes, (name,), g, older))

    if c.platform == "cpu":
        for plat in ("cuda", "rocm"):
            rows = [(n, g, False) for n, g in suggestable(plat)
                    if plat != "cuda" or str(g.get("compute_capability")) >= "8.0"]
            group(rows)
        return out
    current: dict[str, Any] = {"platform": c.platform}
    if c.compute_capability is not None:
        current["compute_capability"] = format_cc(c.compute_capability)
    if c.rocm_arch is not None:
        current["rocm_arch"] = c.rocm_arch
    group(nearest_first(str(c.platform), current))
    return out


def _model_changes(ctx: Context) -> list[tuple[str, Any]]:
    """Model facts the user typed as a flag, with nearby values."""
    from .diagnosis import _candidate_values
    from .selection import compiled_rules
    rules = compiled_rules(ctx.config).rules
    out: list[tuple[str, Any]] = []
    for f in (*_MODEL, *(n for n in _declared_fields(ctx.config) if n not in _MODEL and _is_model_fact(ctx, n))):
        if f in ctx.user_fields:
            values = [v for v in _candidate_values(rules, f, getattr(ctx.config, f)) if _plausible(rules, f, v)]
            if f == "head_size":  # the sizes backends name, nearest first
                near = sorted(_named_sizes(rules) - {ctx.config.head_size},
                              key=lambda v: abs(v - ctx.config.head_size) if isinstance(ctx.config.head_size, int) else v)
                values = list(dict.fromkeys([*near, *values]))
            out += [(f, v) for v in values[:6]]
    return out


# ---------------------------------------------------------------------------------------------
# Search: verified fixes for a goal


Goal = Callable[[Config], "tuple[str, str | None] | None"]  # config -> (backend, variant) it gets, or None


def _try(ctx: Context, changes: Mapping[str, Any], goal: Goal) -> tuple[str, str | None] | None:
    fields = dict(changes)
    if any(k in _HARDWARE for k in fields):
        fields["gpu"] = None  # the new hardware replaces the named GPU
    if "dtype" in fields and "dtype_explicit" in _declared_fields(ctx.config):
        fields["dtype_explicit"] = True  # the fix is typed as --dtype X: vLLM's start-up checks it as given
    kv = fields.get("kv_cache_dtype")
    if ctx.sparse_kv_rewrite and isinstance(kv, str) and kv.startswith(_FP8):
        fields["kv_cache_dtype"] = "fp8_ds_mla"
    try:
        cfg = ctx.config.replace(**fields)
    except ConfigError:
        return None
    return goal(cfg)


def _auto_goal(ctx: Context, target: str | None) -> Goal:
    """Selection (automatic, or the config's requested backend) gets `target` and vLLM starts
    with it (any backend when target is None)."""
    from .selection import solve_uncached
    from .solver.facts import parse_role
    role = parse_role(ctx.role)

    def goal(cfg: Config) -> tuple[str, str | None] | None:
        try:
            sel = solve_uncached(cfg, role, ctx.available)
        except (SelectionError, ConfigError):
            return None
        if getattr(sel, "startup_error", None):
            return None  # vLLM selects it but refuses to start: not a fix
        return (sel.backend, sel.variant) if target is None or sel.backend == target else None

    return goal


def _remedy(ctx: Context, changes: Mapping[str, Any], got: tuple[str, str | None], gpus: tuple[str, ...] = (),
            facts: Mapping[str, Any] | None = None, older: bool = False) -> Remedy:
    kind = _kind(ctx, changes)
    parts = []
    hw = {k: v for k, v in changes.items() if k in _HARDWARE}
    if hw:
        text = gpu_text(gpus, facts or {}, older) if gpus else ", ".join(f"{k}={_show(v)}" for k, v in hw.items())
        parts.append(("use a GPU: " if ctx.config.platform == "cpu" else "use ") + text)
    parts += [change_text(ctx, k, v) for k, v in changes.items() if k not in _HARDWARE]
    lost = _gives_up(ctx, changes)
    return Remedy(dict(changes), got[0], kind, " and ".join(parts), lost is None, tuple(gpus), got[1], lost)


def _search(ctx: Context, goal: Goal, *, request: str | None = None, limit: int = 6) -> list[Remedy]:
    """Verified fixes, ranked: settings (singles, then pairs), a requested backend, the version,
    hardware (alone, then with one setting), then model facts the user typed."""
    found: list[Remedy] = []
    singles = _settings(ctx)
    working: list[frozenset[str]] = []
    for f, v in singles:
        got = _try(ctx, {f: v}, goal)
        if got:
            found.append(_remedy(ctx, {f: v}, got))
            working.append(frozenset({f}))
    if not found:
        for (f1, v1), (f2, v2) in itertools.combinations(singles, 2):
            if f1 == f2:
                continue
            got = _try(ctx, {f1: v1, f2: v2}, goal)
            if got:
                found.append(_remedy(ctx, {f1: v1, f2: v2}, got))
                if len(found) >= limit:
                    break
    if request is not None and ctx.config.backend is None:
        got = _try(ctx, {"backend": request}, _auto_goal(ctx, None))
        if got:
            found.append(_remedy(ctx, {"backend": request}, got))
    found += _version_fixes(ctx, goal)
    hardware = _hardware(ctx)
    hw_found = 0
    for changes, names, facts, older in hardware:
        got = _try(ctx, changes, goal)
        if got:
            found.append(_remedy(ctx, changes, got, names, facts, older))
            hw_found += 1
            if hw_found >= 2:
                break
    if not hw_found and not found:
        for (changes, names, facts, older), (f, v) in itertools.product(hardware[:4], singles):
            both = {**changes, f: v}
            got = _try(ctx, both, goal)
            if got:
                found.append(_remedy(ctx, both, got, names, facts, older))
                break
    for f, v in _model_changes(ctx):
        got = _try(ctx, {f: v}, goal)
        if got:
            found.append(_remedy(ctx, {f: v}, got))
            break
    return _rank(found)


def _version_fixes(ctx: Context, goal: Goal) -> list[Remedy]:
    """Fixes from another vLLM release: the same question asked of each other release attnsolve
    has rules for, kept where that release reaches the goal (newer releases first)."""
    from .versions import in_release, vllm_versions
    current = ctx.config.vllm
    out: list[Remedy] = []
    for v in sorted((v for v in vllm_versions() if v != current), key=_release_key, reverse=True):
        try:
            got = goal(in_release(ctx.config, v))
        except (ConfigError, SelectionError):
            continue  # a field that release does not take, or a draft set that cannot answer
        if got:
            older = current is not None and _release_key(v) < _release_key(current)
            text = f"pip install vllm=={_wheel_version(v)}" + (" (an older release)" if older else "")
            gives_up = f"vLLM {current}" if older else None  # a downgrade drops what the newer release brings
            out.append(Remedy({"vllm": v}, got[0], "version", text, not older, (), got[1], gives_up))
    return out


def _release_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _wheel_version(version: str) -> str:
    """'0.33' -> '0.33.0': the release the rule set was read from (its wheel)."""
    return version if version.count(".") >= 2 else version + ".0"


def _loss(fix: Remedy) -> int:
    """How much of the user's intent a fix drops: nothing, a tuning switch they set (a pinned FA
    version), or a choice that changes what runs (the fp8 KV cache, float32 weights, a model fact)."""
    if fix.keeps_intent:
        return 0
    return 1 if (fix.gives_up or "").startswith("your ") else 2


def _rank(fixes: Sequence[Remedy]) -> list[Remedy]:
    unique: dict[tuple[tuple[str, str], ...], Remedy] = {}
    for f in fixes:
        unique.setdefault(tuple(sorted((k, repr(v)) for k, v in f.changes.items())), f)
    order = list(unique.values())
    ranked = sorted(order, key=lambda f: (KINDS.index(f.kind), _loss(f), "backend" in f.changes,
                                          len(f.changes), order.index(f)))
    # the same fields changed for the same result (block size 16, 32, 64...): the nearest two
    out: list[Remedy] = []
    per: dict[tuple[frozenset[str], str], int] = {}
    for f in ranked:
        key = (frozenset(f.changes), f.selects)
        per[key] = per.get(key, 0) + 1
        if per[key] <= 2:
            out.append(f)
    return out


# ---------------------------------------------------------------------------------------------
# Lost backends and failures


def _drop_noise(conflict: Mapping[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    """The facts worth showing of a minimal conflict. A GPU platform is implied by the GPU (a CPU is
    shown: it is the cause). With the question's context, facts nobody gave that sit at the
    release's declared default (use_rswa=false, block_size unset ...) are left out too: in a release
    with many selection inputs a minimal conflict names every default that closes an escape route,
    and the user needs the ones they chose and the hardware."""
    shown = {k: v for k, v in conflict.items() if not (k == "platform" and v in ("cuda", "rocm"))}
    if ctx is not None:
        declared = _declared_fields(ctx.config)
        chosen = {k: v for k, v in shown.items()
                  if k in ctx.user_fields or k in _HARDWARE or k not in declared or v != declared[k].default}
        shown = chosen or shown
    return shown if shown else dict(conflict)


def _declared_fields(config: Config) -> Mapping[str, Any]:
    """The release's field declarations (name -> FieldDecl)."""
    from .selection import compiled_rules
    return getattr(compiled_rules(config).rules, "fields", None) or {}


def lost_backend(ctx: Context, backend: str, reasons: Sequence[str]) -> LostBackend:
    """Why `backend` (higher priority than the selected one) lost, and what gets it."""
    from .config import ANY
    conflict: dict[str, Any] = {}
    model_conflict = None
    try:  # the conflicts only: the fixes are searched below, as the user can apply them
        conflicts = request_conflicts(ctx.config.replace(backend=backend), role=ctx.role, available=ctx.available,
                                      max_conflicts=2)  # bounded: per lost backend
        if conflicts:
            conflict = _drop_noise(conflicts[0], ctx)
            model_conflict = next((dict(c) for c in conflicts if c and all(
                f in _MODEL and f not in ctx.user_fields for f in c)), None)
    except (ConfigError, SelectionError):
        pass
    fixes = _search(ctx, _auto_goal(ctx, backend), request=backend) if ctx.config.is_partial is False else []
    if ANY in conflict.values():
        conflict = {}
    usable = [f for f in fixes if f.kind in ("setting", "version")]
    hardware_only = not usable and any(f.kind == "hardware" for f in fixes)
    if usable or any(f.kind == "hardware" for f in fixes):
        model_conflict = None if usable else model_conflict
    return LostBackend(backend, tuple(reasons), conflict, tuple(fixes), hardware_only, model_conflict)


def failure_fixes(ctx: Context, e: Explanation) -> list[Remedy]:
    """Fixes for a configuration that selects nothing (or not the requested backend): the
    diagnosis' minimal fixes the user can apply, plus the searched ones, ranked."""
    goal = _auto_goal(ctx, None) if e.requested is None else _auto_goal(ctx, e.requested)
    found: list[Remedy] = []
    for f in e.fixes:
        changes = dict(f.changes)
        if not _applicable(ctx, changes):
            continue  # e.g. a model fact from the model's config: not something the user can set
        if "platform" in changes:
            continue
        if any(k in _HARDWARE for k in changes):
            continue  # hardware is searched below, with GPU names
        got = _try(ctx, changes, goal)
        if got:
            found.append(_remedy(ctx, changes, got))
    found += _search(ctx, goal)
    if e.requested is not None:
        got = _try(ctx, {"backend": None}, _auto_goal(ctx, None))
        if got:
            found.append(_remedy(ctx, {"backend": None}, got))
    return _rank(found)


def _startup_error(ctx: Context) -> str | None:
    """vLLM's start-up failure text for the selected backend (Selection.startup_error, where the
    rules model vLLM's start-up), or None when vLLM starts."""
    from .selection import solve_uncached
    from .solver.facts import parse_role
    try:
        sel = solve_uncached(ctx.config, parse_role(ctx.role), ctx.available)
    except (SelectionError, ConfigError):
        return None
    return getattr(sel, "startup_error", None)


def _success_hint(selected: str, losts: Sequence[LostBackend]) -> str:
    """One line: the setting that gets a higher-priority backend (keeping the user's choices if
    one does), else why the selected backend is the best on this GPU and what hardware would do."""
    pairs = [(x, f) for x in losts for f in x.fixes]
    keep = next(((x, f) for x, f in pairs if f.kind in ("setting", "version") and f.keeps_intent), None)
    drop = next(((x, f) for x, f in pairs if f.kind in ("setting", "version")), None)
    hw = next(((x, f) for x, f in pairs if f.kind == "hardware" and f.keeps_intent), None)
    if keep is not None:
        return f"{keep[1].text} gets {keep[1].label}"
    if not losts:
        return ""
    if drop is not None:
        f = drop[1]
        hint = (f"{selected} is the best this GPU offers with {f.gives_up}; {f.text} gets {f.label} "
                f"but gives up {f.gives_up}")
        if hw is not None:
            hint += f"; {hw[1].label} keeps it on {hw[1].text.removeprefix('use ')}"
        return hint
    hint = f"{selected} is the best this GPU offers for this configuration; no setting gets a higher-priority backend"
    if hw is not None:
        hint += f"; {hw[1].text} to get {hw[1].label}"
    return hint


def _best_setting(fixes: Sequence[Remedy]) -> Remedy | None:
    return next((f for f in fixes if f.kind in ("setting", "version")), None)


def prefill_for(ctx: Context) -> Any:
    """For an MLA model asked about decode: the MLA prefill Selection vLLM also picks, or the SelectionError
    its layer raises when none fits (vLLM >= 0.18's prefill registry), or None (not an MLA decode question)."""
    if ctx.role is not None or ctx.config.use_mla is not True or ctx.config.is_partial:
        return None
    from .selection import solve
    try:
        return solve(ctx.config, role="mla_prefill", available=ctx.available)
    except SelectionError as e:  # the layer's failure, where vLLM's MLA layer asks a prefill registry (0.33)
        from .selection import compiled_rules, prefill_step
        return e if prefill_step(compiled_rules(ctx.config), ctx.config) is not None else None
    except ConfigError:
        return None


def other_releases(ctx: Context) -> tuple[Any, ...]:
    """The other vLLM releases attnsolve knows whose selection succeeds for this configuration."""
    from .versions import in_release, outcome, vllm_versions
    out = []
    for v in vllm_versions():
        if v == ctx.config.vllm:
            continue
        try:
            o = outcome(in_release(ctx.config, v), ctx.role)
        except Exception:  # noqa: BLE001 - a field the other release reads differently, a draft set that fails
            continue
        if o.backend is not None and o.error is None:
            out.append(o)
    return tuple(out)


def advise(ctx: Context, *, lost: bool = True, explanation: Explanation | None = None) -> Advice:
    """The explanation of `ctx.config` with ranked, pasteable fixes and a one-line hint
    (`explanation`: one already computed for this question, reused)."""
    e = explanation if explanation is not None else explain(ctx.config, role=ctx.role, available=ctx.available)
    if e.config.is_partial:
        return Advice(e, hint="", conflicts=_shown_conflicts(e.conflicts, ctx), context=ctx)
    if e.selected is not None:
        before = []
        for c in e.candidates:
            if c.backend == e.selected:
                break
            before.append(c)
        losts = tuple(lost_backend(ctx, c.backend, c.reasons) for c in before) if lost else ()
        sel = e.selected + (f" ({e.variant})" if e.variant else "")
        prefill = prefill_for(ctx)
        startup = _startup_error(ctx)
        if startup is not None:  # vLLM's selector answers, its start-up refuses: fixes that start
            fixes = _search(ctx, _auto_goal(ctx, None) if ctx.config.backend is None
                            else _auto_goal(ctx, ctx.config.backend))
            first = _best_setting(fixes) or (fixes[0] if fixes else None)
            hint = (f"vLLM refuses to start with {sel}; {first.text} starts with {first.label}" if first
                    else f"vLLM refuses to start with {sel}; no change of one or two settings helps")
            return Advice(e, losts, tuple(fixes), hint, False, startup_error=startup, context=ctx, prefill=prefill)
        return Advice(e, losts, hint=_success_hint(sel, losts), hardware_only=False, context=ctx, prefill=prefill)
    fixes = failure_fixes(ctx, e)
    setting = _best_setting(fixes)
    hardware = next((f for f in fixes if f.kind == "hardware"), None)
    what = e.requested or "any backend"
    where = "on a CPU" if ctx.config.platform == "cpu" else "on this GPU"
    if setting is not None and setting.kind == "version":
        hint = (f"no setting makes {what} valid {where} for this model in vLLM {ctx.config.vllm}; "
                f"{setting.text} to get {setting.label}")
        if hardware is not None:
            hint += f"; or {hardware.text} to get {hardware.label}"
    elif setting is not None:
        hint = setting.text
        keeper = next((f for f in fixes if f.keeps_intent and f.kind in ("setting", "version", "hardware")), None)
        if setting.gives_up and keeper is not None and keeper.kind in ("version", "hardware"):
            hint += f" (gives up {setting.gives_up}; {keeper.text} keeps it, with {keeper.label})"
        elif setting.gives_up:
            hint += f" (gives up {setting.gives_up})"
    elif ctx.config.platform == "cpu" and hardware is not None:
        hint = f"no setting makes {what} valid on a CPU for this model; {hardware.text} to get {hardware.label}"
    elif hardware is not None:
        hint = (f"only other hardware helps: no setting makes {what} valid on this GPU; {hardware.text} "
                f"to get {hardware.label}")
    elif fixes:
        hint = f"no setting helps with this model; {fixes[0].text}"
    else:
        hint = "no change of one or two settings helps; see the reasons above"
    hardware_only = setting is None and hardware is not None
    return Advice(e, (), tuple(fixes), hint, hardware_only, _shown_conflicts(e.conflicts, ctx), context=ctx,
                  other_releases=other_releases(ctx))


def _shown_conflicts(conflicts: Iterable[Mapping[str, Any]], ctx: Context | None = None) -> tuple[Mapping[str, Any], ...]:
    """Conflicts without noise (GPU platform, untouched defaults), none repeating or containing one
    shown before."""
    out: list[dict[str, Any]] = []
    for c in conflicts:
        d = _drop_noise(c, ctx)
        if d and not any(set(o.items()) <= set(d.items()) for o in out):
            out.append(d)
    return tuple(out)


def _explanation_text(e: Explanation) -> str:
    """`str(explain(config))`: the advice for the explanation's own question."""
    ctx = Context.of(e.config, None if e.role == "decode" else e.role, e.available)
    return str(advise(ctx, explanation=e))


Explanation.text_hook = _explanation_text
