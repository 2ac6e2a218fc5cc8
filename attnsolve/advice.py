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

Why this module: it is the entry point, `advise`, over modules of one idea each: the values
(advice_types.py), the field tables (advice_fields.py), writing a change (advice_spelling.py), judging
it (advice_kinds.py), the changes worth trying (advice_candidates.py), other releases
(advice_releases.py), the verified, ranked search (advice_search.py) and what lost (advice_lost.py).
Every name advice had is still importable from here; the search's modules load on first use, not at
`import attnsolve`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, Sequence

from .advice_text import prefill_dict, prefill_text
from .advice_types import Advice, Context, LostBackend, Remedy
from .errors import ConfigError, SelectionError
from .explain import Explanation, explain
from .selection.result import NO_PREFILL

if TYPE_CHECKING:  # at run time these come from __getattr__ below, on first use
    from .advice_fields import KINDS
    from .advice_releases import other_releases
    from .advice_spelling import change_text

__all__ = ["Advice", "Context", "LostBackend", "Remedy", "advise", "change_text", "other_releases", "prefill_dict", "prefill_for", "prefill_text", "KINDS"]

# The names advice had that now live in its parts, by module: `attnsolve.advice.X` reads them from there.
_MOVED = {
    "advice_fields": ("KINDS", "_SERVE_FLAGS", "_ATTENTION_CONFIG", "_ENV_SWITCHES", "_INSTALL", "_HARDWARE",
                      "_MODEL", "_MODEL_FLAGS", "_FP8", "_declared_fields"),
    "advice_types": ("Goal",),
    "advice_spelling": ("gpu_text", "change_text", "_declared_spelling"),
    "advice_kinds": ("_is_model_fact", "_kind", "_gives_up", "_named_sizes", "_plausible", "_applicable"),
    "advice_candidates": ("_settings", "_declared_settings", "_hardware", "_model_changes"),
    "advice_releases": ("_version_fixes", "_release_key", "_wheel_version", "other_releases"),
    "advice_search": ("_try", "_auto_goal", "_remedy", "_search", "_loss", "_rank"),
    "advice_lost": ("_drop_noise", "lost_backend", "failure_fixes", "_shown_conflicts"),
}
_HOME = {name: module for module, names in _MOVED.items() for name in names}


def __getattr__(name: str) -> Any:
    """A name advice had before its parts moved out, read from its module (imported on first use)."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __package__), name)


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


def _no_prefill_hint(ctx: Context, e: Explanation) -> str:
    """Why an MLA layer has no prefill backend: the decode backend it runs every token through. Where vLLM logs
    nothing about it (0.17 to 0.20's sparse layers) this line is the only reason an answer shows."""
    from .selection import solve
    try:
        decode = solve(ctx.config, available=ctx.available).backend
    except SelectionError as err:  # 0.16/0.17 answer the prefill question alone: the layer cannot start
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (f"no prefill backend, but the layer's decode selection fails, so vLLM's MLA layer fails before "
                f"it runs: {first} ('attnsolve explain --role decode' with the same flags gives the fixes)")
    said = "" if e.warnings else "; vLLM logs nothing about it"
    return (f"no prefill backend: the layer sends every token through its decode backend {decode}'s top-k MQA path "
            f"(vLLM {ctx.config.vllm} builds no prefill path for it{said})")


def prefill_for(ctx: Context) -> Any:
    """For an MLA model asked about decode: the MLA prefill Selection vLLM also picks, or the SelectionError
    its layer raises when none fits (vLLM >= 0.21's prefill registry), or None (not an MLA decode question)."""
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


def advise(ctx: Context, *, lost: bool = True, explanation: Explanation | None = None) -> Advice:
    """The explanation of `ctx.config` with ranked, pasteable fixes and a one-line hint
    (`explanation`: one already computed for this question, reused)."""
    # the search's modules, loaded on first use rather than at `import attnsolve`
    from .advice_lost import _shown_conflicts, failure_fixes, lost_backend
    from .advice_releases import other_releases
    from .advice_search import _auto_goal, _rank, _search, _without_request
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
            if ctx.config.backend is not None and (drop := _without_request(ctx)) is not None:
                fixes = _rank([*fixes, drop])  # the request itself is a setting: without it, what starts
            first = _best_setting(fixes) or (fixes[0] if fixes else None)
            hint = (f"vLLM refuses to start with {sel}; {first.text} starts with {first.label}" if first
                    else f"vLLM refuses to start with {sel}; no change of one or two settings helps")
            return Advice(e, losts, tuple(fixes), hint, False, startup_error=startup, context=ctx, prefill=prefill)
        hint = _no_prefill_hint(ctx, e) if e.selected == NO_PREFILL else _success_hint(sel, losts)
        return Advice(e, losts, hint=hint, hardware_only=False, context=ctx, prefill=prefill)
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


def _explanation_text(e: Explanation) -> str:
    """`str(explain(config))`: the advice for the explanation's own question."""
    ctx = Context.of(e.config, None if e.role == "decode" else e.role, e.available)
    return str(advise(ctx, explanation=e))


Explanation.text_hook = _explanation_text
