"""Advice as text: the one rendering of an explanation, shared by `attnsolve explain`,
`str(explain(config))` and `str(advise(context))`, so every user reads the same answer.

The question is described in the user's terms (GPU name, flags), fixes are the pasteable texts
advice.py wrote, and every line fits WIDTH columns (wrapped, never cut).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .config import ANY
from .render import WIDTH, Style, pad, show, table, width, wrap

# advice.py's types (Advice, Context, LostBackend, Remedy) are read by attribute: this module sits
# below advice.py (advice imports it), so it does not import them back.
Advice = Context = LostBackend = Remedy = Any

__all__ = ["advice_lines", "describe_hardware", "describe_query", "env_lines", "facts_text", "fix_rows",
           "reason_rows"]

_LABEL = " " * 10  # the width of the "Query     " column


# ---------------------------------------------------------------------------------------------
# The question


def describe_hardware(ctx: Context) -> str:
    c = ctx.config
    if c.platform == "cuda":
        cc = show(c.compute_capability)
        return f"{ctx.gpu} (SM {cc})" if ctx.gpu else f"cuda SM {cc}"
    if c.platform == "rocm":
        return f"{ctx.gpu} (rocm {show(c.rocm_arch)})" if ctx.gpu else f"rocm {show(c.rocm_arch)}"
    if c.platform == "cpu":
        return "CPU"
    return f"platform {show(c.platform)}"


def describe_query(ctx: Context, sep: str = ", ", skip: Sequence[str] = ()) -> str:
    """'H100 (SM 9.0), bfloat16, head 128, kv fp8': the question in the user's own terms (fields in
    `skip` are the ones a matrix varies)."""
    c = ctx.config
    hw = "CUDA" if "compute_capability" in skip else "per GPU" if "gpu" in skip else describe_hardware(ctx)
    per_gpu = ctx.dtype_auto and bool({"compute_capability", "gpu"} & set(skip))
    parts: list[str] = [f"vLLM {show(c.vllm)}", hw]
    if "dtype" not in skip:
        dtype = "dtype ANY" if c.dtype is ANY else show(c.dtype)
        parts.append("dtype auto" if per_gpu else dtype + (" (default)" if "dtype" in ctx.defaulted else ""))
    kind = ("sparse MLA" if c.use_mla is True else "sparse (no MLA)") if c.use_sparse is True else \
        "MLA" if c.use_mla is True else None
    if kind:
        parts.append(kind)
    if "head_size" not in skip:
        parts.append(f"head {show(c.head_size)}")
    changed = c.to_dict(only_changed=True)
    kv = changed.get("num_kv_heads") if c.use_mla is not True else None  # (MLA: 1, as its decode is MQA)
    if c.num_heads is not None and "num_heads" not in skip:
        parts.append(f"{show(c.num_heads)} heads/GPU" + (f" ({show(kv)} KV)" if kv is not None else "")
                     + (f" (tp {ctx.tensor_parallel_size})" if ctx.tensor_parallel_size > 1 else ""))
    if "kv_cache_dtype" not in skip:
        parts.append(f"kv {show(c.kv_cache_dtype)}")
    if c.block_size is not None and "block_size" not in skip:
        parts.append(f"block {show(c.block_size)}")
    if c.has_sink is True:
        parts.append("sinks")
    if c.use_mm_prefix is True:
        parts.append("mm prefix")
    if c.attn_type != "decoder":
        parts.append(show(c.attn_type))
    shown = {"vllm", "platform", "dtype", "compute_capability", "rocm_arch", "use_mla", "use_sparse", "head_size", "num_heads",
             "kv_cache_dtype", "block_size", "has_sink", "use_mm_prefix", "attn_type", "backend",
             "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_topk", "dtype_explicit"}
    if c.num_heads is not None and "num_heads" not in skip or c.use_mla is True:
        shown.add("num_kv_heads")
    for k, v in changed.items():
        if k not in shown and k not in skip:
            parts.append(f"{k}={show(v)}")
    if c.backend is not None:
        parts.append(f"requested {show(c.backend)}")
    if ctx.role == "mla_prefill":
        parts.append("MLA prefill")
    return sep.join(parts)


def env_lines(ctx: Context) -> list[str]:
    """The vLLM environment switches that were read (vLLM reads them too), and the notes."""
    out = []
    if ctx.env:
        used = ", ".join(f"{k}={v}" for k, v in ctx.env)
        out.append(f"environment: {used} (read as vLLM reads it; --no-env ignores it)")
    return out + list(ctx.notes)


def facts_text(facts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={show(v)}" for k, v in facts.items())


# ---------------------------------------------------------------------------------------------
# Building blocks


def reason_rows(rows: Sequence[tuple[str, str]], indent: str = "  ") -> list[str]:
    """name  reasons, the reasons wrapped under their column."""
    if not rows:
        return []
    w = max(len(n) for n, _ in rows)
    out: list[str] = []
    if w + len(indent) + 2 > WIDTH // 2:
        for name, text in rows:
            out += [indent + name] + wrap(text, indent=indent + "    ")
        return out
    for name, text in rows:
        out += wrap(text, indent=indent + " " * (w + 2), first=f"{indent}{name:<{w}}  ")
    return out


def fix_rows(fixes: Sequence[Remedy], style: Style, limit: int = 5) -> list[str]:
    """One fix per row, the text then the backend it gets; wrapped under its own column."""
    label = {"setting": "", "version": "  (vLLM version)", "hardware": "  (other hardware)",
             "model": "  (changes the model)"}
    rows = [(f.text, f"{style.arrow} {f.label}{label[f.kind]}") for f in fixes[:limit]]
    laid = table(rows, indent="  ", rule=False)
    if all(width(x) <= WIDTH for x in laid):
        return laid
    # a long fix (a GPU name, a pair of switches) gets its own line; the backends stay in one column
    widest = max(width(b) for _, b in rows)
    col = max((width(a) for a, _ in rows if 4 + width(a) + widest <= WIDTH), default=None)
    out: list[str] = []
    for a, b in rows:
        if col is None:  # not even one row fits two columns: the backend under its fix
            out += wrap(a, indent="    ", first="  ") + wrap(b, indent="      ", first="    ")
        elif width(a) <= col:
            out.append(f"  {pad(a, col)}  {b}")
        else:
            out += wrap(a, indent="    ", first="  ") + [" " * (col + 4) + b]
    return out


def _lost_lines(c: LostBackend) -> list[str]:
    """One higher-priority backend that lost: reasons, the facts against it, the best fixes."""
    lines = wrap("; ".join(c.reasons), indent=" " * 4, first=f"  {c.backend}: ")
    because = f"because {facts_text(c.conflict)}; " if c.conflict else ""
    settings = [f for f in c.fixes if f.kind in ("setting", "version")]
    hardware = [f for f in c.fixes if f.kind == "hardware"]
    model = [f for f in c.fixes if f.kind == "model"]
    if settings:
        first = settings[0]
        more = f" (or {settings[1].text})" if len(settings) > 1 else ""
        lines += wrap(f"{because}fix: {first.text}{more}" + (f"; gives up {first.gives_up}" if first.gives_up else ""),
                      indent=" " * 6, first="    ")
        if hardware:
            keeps = f", keeping {first.gives_up}" if first.gives_up and hardware[0].keeps_intent else ""
            lines += wrap(f"or {hardware[0].text} for {hardware[0].label}{keeps}", indent=" " * 6, first="    ")
    elif hardware or model:
        parts = [f"{f.text} for {f.label}" for f in (hardware[:1] + model[:1])]
        what = "impossible on this GPU; " if hardware else ""
        lines += wrap(f"{because}{what}fix: {', or '.join(parts)}", indent=" " * 6, first="    ")
    else:
        lines += wrap(f"{because}no setting and no other GPU of this vendor helps", indent=" " * 6, first="    ")
    return lines


def _labelled(label: str, text: str) -> list[str]:
    return wrap(text, indent=_LABEL, first=f"{label:<10}")


# ---------------------------------------------------------------------------------------------
# The answer


def advice_lines(a: Advice, ctx: Context, style: Style | None = None) -> list[str]:
    """What `attnsolve explain` prints for `a`, the answer to `ctx` (plain ASCII unless `style`
    says otherwise)."""
    style = style or Style()
    e = a.explanation
    lines = _labelled("Query", describe_query(ctx))
    for n in env_lines(ctx):
        lines += _labelled("Note", n)
    if e.config.is_partial:
        return lines + _partial_lines(a)
    if e.selected is not None:
        return lines + _selected_lines(a, style)
    return lines + _failure_lines(a, style)


def _partial_lines(a: Advice) -> list[str]:
    e = a.explanation
    free = ", ".join(e.config.free_fields)
    if not e.possible:
        out = _labelled("Possible", f"none: with {free} free, no completion selects a backend")
        if a.conflicts:
            out += _labelled("Conflict", facts_text(a.conflicts[0]))
        return out
    out = _labelled("Possible", f"{', '.join(e.possible)}  (the possible backends with {free} free)")
    for backend, when in e.conditions:
        cond = " and ".join(f"{f} in {{{', '.join(show(v) for v in vals)}}}" for f, vals in when.items())
        out += wrap(f"{backend} when {cond}" if cond else f"{backend} always", indent=_LABEL + "  ", first=_LABEL)
    return out


def _selected_lines(a: Advice, style: Style) -> list[str]:
    e = a.explanation
    sel = e.selected + (f" ({e.variant})" if e.variant else "")
    order = [c.backend for c in e.candidates]
    pos = f"#{order.index(e.selected) + 1} of {len(order)}" if e.selected in order else ""
    tag = "requested" if e.requested else pos
    lines = [f"Selected  {style.good(style.bold(sel))}" + (f"  ({tag})" if tag else "")]
    if a.prefill is not None:
        lines += _labelled("Prefill", f"{prefill_text(a.prefill)}  (--role mla_prefill explains it)")
    if a.lost:
        lines += ["", "Higher-priority backends that lost:"]
        not_for_model: dict[str, list[str]] = {}
        for c in a.lost:
            if c.model_conflict:  # irrelevant for this model: one summary line, not a wall
                not_for_model.setdefault(facts_text(c.model_conflict), []).append(c.backend)
                continue
            lines += _lost_lines(c)
        for key, names in not_for_model.items():
            lines += wrap(", ".join(names), indent=" " * 4, first=f"  not for this model ({key}): ")
    for w in e.warnings:
        lines += _labelled("Warning", w)
    if a.startup_error:
        lines += [""] + _labelled("Start-up", f"vLLM refuses to start: {a.startup_error}")
        if a.fixes:
            lines += ["", "Fixes that start, most direct first (each alone is enough):"]
            lines += fix_rows(a.fixes, style)
    if a.hint:
        lines += [""] + wrap(f"hint: {a.hint}", indent="      ", first="")
    return lines


def _failure_lines(a: Advice, style: Style) -> list[str]:
    e = a.explanation
    if not e.candidates and e.message:  # refused before any candidate was validated: vLLM's text
        lines = _labelled("Error", e.message.split("\n", 1)[0])
    else:
        lines = [f"Requested {e.requested} does not fit:" if e.requested
                 else "No valid backend. Candidates in priority order:"]
    lines += reason_rows([(c.backend, "; ".join(c.reasons) or "valid") for c in e.candidates])
    shown = [c for c in a.conflicts if c]
    if shown:
        what = e.requested or "every backend"
        first = shown[0]
        lines += [""] + _labelled("Conflict", facts_text(first) + (
            f"  (together these rule out {what})" if len(first) > 1 else f"  (this alone rules out {what})"))
        seen = {facts_text(first)}
        for other in shown[1:]:
            if facts_text(other) in seen:
                continue
            seen.add(facts_text(other))
            lines += wrap(facts_text(other), indent=_LABEL, first="   also   ")
            if len(seen) >= 3:
                break
    for w in e.warnings:
        lines += _labelled("Warning", w)
    if a.fixes:
        lines += ["", "Fixes, most direct first (each alone is enough):"]
        lines += fix_rows(a.fixes, style)
    lines += [""] + wrap(f"hint: {a.hint}", indent="      ", first="")
    offered = {f.changes.get("vllm") for f in a.fixes if f.kind == "version"}
    for o in a.other_releases:
        if o.vllm in offered:
            continue  # already a fix above
        lines += wrap(f"vLLM {o.vllm} would select {o} for this configuration "
                      f"(attnsolve explain --vllm {o.vllm} ...)", indent="      ", first="note: ")
    return lines


def prefill_text(prefill: Any) -> str:
    """One line for prefill_for's answer: the backend (with vLLM's registry name where it differs) and its
    variant, or vLLM's error when no prefill backend fits."""
    if isinstance(prefill, BaseException):
        return "none fits, vLLM refuses to build the layer: " + str(prefill.args[0] if prefill.args else prefill)
    from .selection import engine_of
    b = engine_of(prefill.config).rules.backends.get(prefill.backend)
    shown = b.display_name if b is not None else prefill.backend
    return str(prefill) + (f" (vLLM: {shown})" if shown != prefill.backend else "")


def prefill_dict(prefill: Any) -> Any:
    """prefill_for's answer as JSON: the Selection's dict, or None (no prefill backend fits: the text says why)."""
    if prefill is None or isinstance(prefill, BaseException):
        return None
    return prefill.to_dict()
