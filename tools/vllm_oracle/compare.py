"""Compare one vLLM answer with attnsolve's, per category (pure: no vLLM, no attnsolve).

Categories (each compared only where both sides say something about it):
  outcome     the selected backend, or the error kind (no_valid / invalid_backend / other)
  variant     FLASH_ATTN and MLA prefill FA version, FLASHINFER TRT-LLM vs native
  reasons     CUDA: each higher-priority backend that lost (success) or every backend (error),
              with vLLM's reason strings, order included
  message     errors: vLLM's exception text vs the vLLM part of attnsolve's message, exactly
  warnings    successes: every WARNING vLLM logs while selecting is in Selection.warnings, and
              every Selection.warnings entry is something vLLM logs (INFO or WARNING)
  block_size  startup mode: the KV block size after the start-up hook vs preferred_block_size
  logs        MLA prefill registry (vLLM >= 0.18): every INFO line vLLM logs while the layer gets its
              prefill backend is in Selection.logs (or .warnings), and every Selection.logs line is
              something vLLM logs
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any, Mapping

CATEGORIES = ("outcome", "variant", "reasons", "message", "warnings", "block_size", "logs")
FA_VARIANT = {2: "FA2", 3: "FA3", 4: "FA4"}
_ERROR_KINDS = ("no_valid", "invalid_backend", "unknown_backend")


@dataclass(frozen=True)
class Check:
    """One category's verdict for one config; `signature` names the disagreement class."""

    category: str
    agree: bool
    signature: str = ""
    vllm: Any = None
    attnsolve: Any = None


def outcome_of(r: Mapping[str, Any]) -> str:
    if r.get("ok"):
        return str(r.get("backend"))
    return "ERR:" + str(r.get("kind") or "error")


def same_outcome(ov: str, oa: str) -> bool:
    """Equal backends, or error vs error: the kinds must match only where both sides classify
    it (vLLM's ValueError texts: no valid backend / selected backend invalid / unknown name);
    vLLM's other exception types (RuntimeError, AssertionError...) have no attnsolve class, so
    there the message comparison decides."""
    if ov == oa:
        return True
    if not (ov.startswith("ERR:") and oa.startswith("ERR:")):
        return False
    kv, ka = ov[4:], oa[4:]
    return not (kv in _ERROR_KINDS and ka in _ERROR_KINDS)


def vllm_variant(v: Mapping[str, Any]) -> str | None:
    if "fa_version" in v:  # None: vLLM detects no FA version (the layer fails later) -> variant NONE
        return FA_VARIANT.get(v["fa_version"], "NONE" if v["fa_version"] is None else str(v["fa_version"]))
    if "trtllm" in v:
        return "TRTLLM" if v["trtllm"] else "NATIVE"
    return None


def vllm_rejected(v: Mapping[str, Any]) -> dict[str, list[str]]:
    """Higher-priority backends that lost, with vLLM's reasons (priority order up to the winner)."""
    out: dict[str, list[str]] = {}
    reasons = v.get("reasons") or {}
    for b in v.get("priority") or []:
        if b == v.get("backend"):
            break
        if b in reasons:
            out[b] = list(reasons[b])
    return out


def reason_diff(vr: Mapping[str, list[str]], ar: Mapping[str, list[str]]) -> list[str]:
    """Per backend: what only vLLM says, what only attnsolve says (or 'order')."""
    diffs = []
    for b in sorted(set(vr) | set(ar)):
        x, y = vr.get(b), ar.get(b)
        if x == y:
            continue
        if x is not None and y is not None and sorted(x) == sorted(y):
            diffs.append(f"{b}: order")
            continue
        only_v = [r for r in (x or []) if r not in (y or [])]
        only_a = [r for r in (y or []) if r not in (x or [])]
        tag = " (absent in vllm)" if x is None else " (absent in attnsolve)" if y is None else ""
        diffs.append(f"{b}: vllm-only={only_v} attnsolve-only={only_a}{tag}")
    return diffs


def message_signature(vmsg: str, amsg: str) -> str:
    """Coarse class of a message difference: quoting, enum names, the config repr, or other."""
    if vmsg.replace("AttentionBackendEnum.", "") == amsg.replace("AttentionBackendEnum.", ""):
        return "backend names (AttentionBackendEnum.X vs X)"
    if vmsg == amsg.replace("'", ""):
        return "reasons quoted"
    vi, ai = vmsg.find("Reasons: "), amsg.find("Reasons: ")
    if vi >= 0 and ai >= 0 and vmsg[vi:] == amsg[ai:]:
        return "config repr differs"
    if vi >= 0 and ai >= 0 and vmsg[vi:] == amsg[ai:].replace("'", ""):
        return "config repr differs; reasons quoted"
    vr, ar = _reason_list(vmsg), _reason_list(amsg)
    if vr is not None and ar is not None and vmsg[:vmsg.find("Reason: ")] == amsg[:amsg.find("Reason: ")]:
        return (f"reason list differs: vllm-only={[r for r in vr if r not in ar]} "
                f"attnsolve-only={[r for r in ar if r not in vr]}")
    return "text differs"


_IMPORT_ERROR = re.compile(r"^ImportError: (.*) \((?:/|[A-Za-z]:\\)[^()]*\.py\)$")


def _without_import_path(msg: str) -> str:
    """An ImportError that crashed vLLM's worker, as the rules state it: the exception's text without the worker's
    "ImportError: " prefix and the file path of the module it was importing from (the oracle's venv; a user's
    install has another). vLLM 0.28 on CPU fails so when an MLA layer picks FlashAttention's prefill class."""
    m = _IMPORT_ERROR.match(msg)
    return m.group(1) if m else msg


def _reason_list(msg: str) -> list[str] | None:
    """The `Reason: [...]` list of vLLM's selected-backend-invalid message, if it has one."""
    i = msg.find("Reason: [")
    if i < 0:
        return None
    try:
        got = ast.literal_eval(msg[i + 8:])
    except (ValueError, SyntaxError):
        return None
    return [str(r) for r in got] if isinstance(got, list) else None


def compare(mode: str, platform: str, v: Mapping[str, Any], a: Mapping[str, Any]) -> list[Check]:
    """Every category that applies to this pair, agreeing or not."""
    checks: list[Check] = []
    ov, oa = outcome_of(v), outcome_of(a)
    if not same_outcome(ov, oa):
        # a start-up failure is named by its text: each is its own class
        tail = f" ({str(a.get('error', ''))[:70]})" if oa == "ERR:startup" else \
            f" ({str(v.get('error', ''))[:70]})" if ov.startswith("ERR:") and ov[4:] not in _ERROR_KINDS else ""
        if v.get("stage") == "decode":  # the MLA layer's decode backend: a selector-mode question
            tail += " (vLLM failed at the layer's decode selection)"
        return [Check("outcome", False, f"outcome vllm={ov} attnsolve={oa}{tail}", v.get("error") or ov,
                      a.get("error") or oa)]
    checks.append(Check("outcome", True))
    if v.get("stage") == "decode":  # the MLA layer failed at its decode backend: selector mode compares that
        return checks
    if v.get("ok"):
        if "fa_version" in v or "trtllm" in v:
            want, got = vllm_variant(v), a.get("variant")
            checks.append(Check("variant", want == got, f"variant {ov} vllm={want} attnsolve={got}", want, got))
        if platform == "cuda" and (mode != "mla_prefill" or "priority" in v) and "reasons" in v:
            vr, ar = vllm_rejected(v), dict(a.get("rejected") or {})
            checks.append(Check("reasons", vr == ar, "reasons " + "; ".join(reason_diff(vr, ar)), vr, ar))
        if "warnings" in v:
            vw, aw = sorted(set(v.get("warnings") or [])), sorted(set(a.get("warnings") or []))
            logged = set(vw) | set(v.get("logged") or [])
            missing = [w for w in vw if w not in aw]       # vLLM warned, attnsolve did not
            extra = [w for w in aw if w not in logged]     # attnsolve warns what vLLM never logs
            checks.append(Check("warnings", not missing and not extra,
                                f"warnings vllm-only={missing} attnsolve-only={extra}", vw, aw))
        if mode == "mla_prefill" and "logged" in v:  # the prefill registry's INFO lines
            vi, al = set(v.get("logged") or []), set(a.get("logs") or [])
            missing = sorted(vi - al - set(a.get("warnings") or []))
            extra = sorted(al - vi - set(v.get("warnings") or []))
            checks.append(Check("logs", not missing and not extra, f"logs vllm-only={missing} attnsolve-only={extra}",
                                sorted(vi), sorted(al)))
        if mode == "startup" and "startup_block_size" in v:
            vb, ab = v.get("startup_block_size"), a.get("preferred_block_size")
            checks.append(Check("block_size", vb == ab, f"block_size {ov} vllm={vb} attnsolve={ab}", vb, ab))
    else:
        if platform == "cuda" and "reasons" in v and oa in ("ERR:no_valid", "ERR:invalid_backend") and not a.get("startup"):
            vr, ar = dict(v.get("reasons") or {}), dict(a.get("reasons") or {})
            checks.append(Check("reasons", vr == ar, "reasons " + "; ".join(reason_diff(vr, ar)), vr, ar))
        vmsg, amsg = _without_import_path(str(v.get("error", ""))), str(a.get("error", ""))
        # a refusal outside selection (start-up checks, other exception types) is named by its text
        tail = f" (vllm: {vmsg[:70]})" if ov[4:] not in _ERROR_KINDS else ""
        checks.append(Check("message", vmsg == amsg, f"message {oa} {message_signature(vmsg, amsg)}{tail}",
                            vmsg, amsg))
    return checks
