"""One table cell, or one piece of a rule in prose, as text.

Why a module: the standard, MLA and prefill tables and the prose sections must write the same fact
(dtypes, KV dtypes, block and head sizes, compute capability, a condition, a reason) the same way.
"""

from __future__ import annotations

from .rules.model import Capabilities, Literal, Pred, RuleSet, format_cc

YES, NO = "\u2705", "\u274c"
_DTYPE_SHORT = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}
_ATTN_TYPE = {"decoder": "Decoder", "encoder": "Encoder", "encoder_only": "Encoder Only",
              "encoder_decoder": "Enc-Dec"}


def dtypes_cell(caps: Capabilities, rules: RuleSet) -> str:
    if caps.dtypes is None:
        return "Any"
    order = list(rules.domains["dtype"])
    return ", ".join(_DTYPE_SHORT.get(d, d) for d in sorted(caps.dtypes, key=order.index))


def kv_cell(caps: Capabilities, rules: RuleSet) -> str:
    if caps.kv_cache_dtypes is None:
        return "Any"
    dom = list(rules.domains["kv_cache_dtype"])
    pred = Pred(in_=frozenset(k for k in caps.kv_cache_dtypes if not k.endswith("*")),
                prefixes=tuple(k[:-1] for k in caps.kv_cache_dtypes if k.endswith("*")))
    return ", ".join(f"`{k}`" for k in dom if pred(k))


def block_cell(caps: Capabilities, rules: RuleSet) -> str:
    dom = [b for b in rules.domains["block_size"] if isinstance(b, int)]
    exact = caps.get("exact_block_sizes")  # an exact list replaces the multiples (0.33's B12X: 64 or 128)
    if exact is not None:
        return ", ".join(str(b) for b in sorted(exact))
    if caps.kernel_block_sizes is None:
        return "Any"
    ok = [b for b in dom if any(b % k == 0 for k in caps.kernel_block_sizes)]
    if ok == dom:
        return "Any"
    m = min(caps.kernel_block_sizes)
    if ok == [b for b in dom if b % m == 0]:
        return f"%{m}"
    return ", ".join(str(b) for b in ok)


def head_cell(caps: Capabilities) -> str:
    p = caps.head_sizes
    if p is None:
        return "Any"
    if p.in_ is not None and p.min is None and p.max is None and p.multiple_of is None and not p.negate:
        return ", ".join(str(v) for v in sorted(p.in_))
    parts = []
    if p.multiple_of:
        parts.append(" or ".join(f"%{m}" for m in p.multiple_of))
    if p.min is not None:
        parts.append(f"\u2265{p.min}")
    if p.max is not None:
        parts.append(f"\u2264{p.max}")
    return ", ".join(parts) if parts else p.describe("head_size")


def flag_cell(value: bool | None) -> str:
    return YES if value else NO


def attn_cell(caps: Capabilities, rules: RuleSet) -> str:
    if caps.attn_types is None or set(caps.attn_types) >= set(rules.domains["attn_type"]):
        return "All"
    order = list(rules.domains["attn_type"])
    return ", ".join(_ATTN_TYPE.get(t, t) for t in sorted(caps.attn_types, key=order.index))


def cc_pred_text(p: Pred | None) -> str:
    if p is None:
        return "Any"
    if p.major_in is not None and p.min is None and p.max is None:
        majors = sorted(p.major_in)
        if len(majors) > 1 and majors == list(range(majors[0], majors[-1] + 1)):
            return f"{majors[0]}.x-{majors[-1]}.x"
        return ", ".join(f"{m}.x" for m in majors)
    if p.in_ is not None and p.min is None and p.max is None and p.major_in is None and not p.negate:
        return ", ".join(format_cc(c) for c in sorted(p.in_))
    if p.min is not None and p.max is not None:
        return f"{format_cc(p.min)}-{format_cc(p.max)}"
    if p.min is not None:
        return f"\u2265{format_cc(p.min)}"
    if p.max is not None:
        return f"\u2264{format_cc(p.max)}"
    return p.describe("compute_capability")


def lit_text(lit: Literal) -> str:
    return f"{lit.field} {lit.pred.describe(lit.field)}".replace("= true", "on").replace("= false", "off") \
        if lit.pred.eq in (True, False) else f"{lit.field} {lit.pred.describe(lit.field)}"


def reason_text(reason: str) -> str:
    """A reason template for prose: placeholders shown as <field>, outer spaces trimmed."""
    import re
    return re.sub(r"\{(\w+)(\|[^}]*)?\}", r"<\1>", reason.strip())
