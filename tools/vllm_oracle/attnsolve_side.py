"""attnsolve's answer for an Item, through its public API only (solve, Config, the errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from attnsolve import Config, ConfigError, InvalidBackendError, NoValidBackendError, solve

from .versions import version_key

try:
    # The same selection as solve() without the explanation solve() attaches to every failure
    # (conflicts and fixes: ~0.3 s each, most of a 20,000-config run); the answer compared (backend,
    # variant, reasons, vLLM's message, warnings, block size) is identical.
    from attnsolve.selection import solve_uncached as _select
except ImportError:  # pragma: no cover - an attnsolve without it: the public entry point
    _select = solve

ROLE_OF_MODE = {"selector": None, "startup": None, "mla_prefill": "mla_prefill"}

# The version plumbing, one switch: True once attnsolve's Config takes `vllm=` (the engine per rule
# set, issue 13); then every question names the release compared with and the rule set of that
# release answers.  Until then attnsolve answers with its one rule set, whatever --vllm says.
PASS_VLLM_VERSION = "vllm" in getattr(Config, "__dataclass_fields__", {})


def rule_set_label(version: str) -> str:
    """The attnsolve rule set that answers vLLM `version` ("0.18.1" has its own; "0.20.2" is 0.20's): attnsolve's
    own resolution, so the harness compares what a user asking for that release gets."""
    from attnsolve.rules import release_for

    return release_for(version) or version_key(version)


def make_config(cfg: Mapping[str, Any], version: str | None = None) -> Config:
    """attnsolve's Config for a generated configuration (for `version` where Config takes one)."""
    kw = dict(cfg)
    kw.pop("backend_per_kind", None)  # not a Config field: answer() resolves it into the layer's request
    if PASS_VLLM_VERSION and version is not None:
        kw["vllm"] = rule_set_label(version)
    return Config(**kw)


def load_rules_for(version: str | None = None) -> Any:
    """The rule set attnsolve answers `version` with: that release's packaged set (or the folder
    $ATTNSOLVE_RULES names, which replaces every release); ValueError naming the releases
    attnsolve has when it has none for `version`.  Without the version switch: the active set."""
    from attnsolve import rules as R

    if not (PASS_VLLM_VERSION and version is not None):
        return R.default_rules()
    key = rule_set_label(version)
    try:
        return R.rules_for(key)
    except KeyError:
        raise ValueError(f"attnsolve has no rule set for vLLM {key} (it has "
                         f"{', '.join(R.versions())})") from None
    except R.RulesError as e:
        lines = str(e).splitlines()
        raise ValueError(f"attnsolve's rule set for vLLM {key} does not load: " + "\n".join(lines[:6])
                         + (f"\n  ... ({len(lines) - 6} more lines)" if len(lines) > 6 else "")
                         + "\n(--attnsolve-vllm names the rule set to compare with instead)") from None


def accepts(field: str, value: Any, version: str | None = None) -> bool:
    """Whether attnsolve's Config (for `version`) takes `field`: a selection input only some rule
    sets declare (vLLM 0.33's use_pcp, has_sliding_window...) is drawn only where it is one."""
    probe = {"platform": "cuda", "compute_capability": "9.0", "dtype": "bfloat16", "head_size": 128, field: value}
    try:
        make_config(probe, version)
    except (ConfigError, TypeError):
        return False
    return True


def vllm_part(message: str) -> str:
    """The vLLM part of an attnsolve error message: its first line (explanations follow)."""
    return message.split("\n", 1)[0]


def kind_of(text: str) -> str:
    """The error kind of a vLLM text, as the worker classifies vLLM's ValueErrors."""
    if text.startswith("Selected backend"):
        return "invalid_backend"
    if text.startswith("No valid attention backend"):
        return "no_valid"
    return "startup"  # another refusal: error vs error, the message decides


def answer(cfg: Mapping[str, Any], mode: str, version: str | None = None) -> dict[str, Any]:
    """{ok, backend, variant, rejected, warnings, preferred_block_size, startup_error} or
    {ok: False, kind, error, reasons}.  In startup mode a start-up failure attnsolve predicts
    (Selection.startup_error / the error's startup_error, where the rules provide it) is the
    answer: vLLM's start-up raises it."""
    try:
        config = make_config(cfg, version)
        if mode == "startup" and "dtype_explicit" in config.field_names:
            config = config.replace(dtype_explicit=True)  # vLLM's worker checks the dtype it is given
        if cfg.get("backend_per_kind"):  # the entry for the layer's kind is its request (attnsolve/per_kind.py)
            from attnsolve.per_kind import apply_backend_per_kind

            config = apply_backend_per_kind(config, cfg["backend_per_kind"]).config
    except ConfigError as e:
        from attnsolve.per_kind import HookReadsRequest

        if isinstance(e, HookReadsRequest):  # a per-kind entry a hook reads differently: attnsolve does not answer
            return {"ok": False, "kind": "not_modelled", "error": str(e), "field": e.field}
        kind = "unknown_backend" if e.field == "backend" else "config_error"
        # vLLM's own refusal where the rules know it (ConfigError.vllm_text), else attnsolve's whole text
        return {"ok": False, "kind": kind, "error": e.vllm_text or str(e), "field": e.field}
    role = ROLE_OF_MODE[mode]
    try:
        s = _select(config, role=role) if role else _select(config)
    except (InvalidBackendError, NoValidBackendError) as e:
        startup = getattr(e, "startup_error", None)
        if mode == "startup" and startup and vllm_part(str(e)) != startup:
            return {"ok": False, "kind": kind_of(startup), "error": startup, "reasons": {}, "startup": True}
        if isinstance(e, InvalidBackendError):
            return {"ok": False, "kind": "invalid_backend", "error": vllm_part(str(e)),
                    "reasons": {k: list(v) for k, v in e.reasons.items()}}
        return {"ok": False, "kind": "no_valid", "error": vllm_part(str(e)),
                "reasons": {k: list(v) for k, v in e.reasons.items()}}
    except ConfigError as e:
        return {"ok": False, "kind": "config_error", "error": str(e), "field": e.field}
    if role == "mla_prefill":
        return _prefill_answer(s, version)
    startup = getattr(s, "startup_error", None)
    if mode == "startup" and startup:
        return {"ok": False, "kind": kind_of(startup), "error": startup, "reasons": {}, "startup": True}
    return {"ok": True, "backend": _vllm_name(s.backend, version), "variant": s.variant,
            "rejected": {r.backend: list(r.reasons) for r in s.rejected}, "warnings": list(s.warnings),
            "preferred_block_size": s.preferred_block_size, "startup_error": startup}


def _vllm_name(backend: str, version: str | None) -> str:
    """The name vLLM reports for a backend: a platform's own class outside vLLM's registry (0.33's
    FLASH_ATTN_MLA_XPU, `requested_as` FLASH_ATTN_MLA) or one only model code builds (`model_built`:
    0.32's DeepSeek-V4.1 ROCm class, which calls itself ROCM_FLASHMLA_SPARSE_DSV4) goes by its
    get_name(), as the vLLM side reports it."""
    b = load_rules_for(version).backends.get(backend)
    if b is not None and (getattr(b, "requested_as", None) or getattr(b, "model_built", False)):
        return getattr(b, "get_name", "") or backend
    return backend


def _prefill_answer(s: Any, version: str | None) -> dict[str, Any]:
    """An MLA prefill Selection under the names vLLM prints (a rule set's `vllm_name`: 0.33's prefill
    registry names; NO_PREFILL, the layer without a prefill backend, as it is), with its INFO lines."""
    rules = load_rules_for(version)

    def shown(name: str) -> str:
        b = rules.backends.get(name)
        return b.display_name if b is not None else name

    return {"ok": True, "backend": shown(s.backend), "variant": s.variant,
            "rejected": {shown(r.backend): list(r.reasons) for r in s.rejected}, "warnings": list(s.warnings),
            "logs": list(getattr(s, "logs", ())), "preferred_block_size": s.preferred_block_size,
            "startup_error": getattr(s, "startup_error", None)}


def wheel_check_args(prog: str, doc: str | None, example: str, argv: list[str] | None,
                     load: Callable[[Path], Any]) -> Any:
    """The arguments of the wheel checks (messages, envcheck, defaults): (args, rule set label, load(its folder)), or
    None after printing why --vllm / --attnsolve-vllm name no rule set that loads (the caller exits 2)."""
    import argparse
    import sys

    from attnsolve.rules import info, release_for

    ap = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])
    ap.add_argument("--vllm", required=True, help=f"the vLLM release whose wheel is read, e.g. {example}")
    ap.add_argument("--attnsolve-vllm", default=None, help="the rule set to check (default: the one for --vllm)")
    args = ap.parse_args(argv)
    asked = args.attnsolve_vllm or args.vllm
    label = release_for(asked)
    try:
        if label is None:
            raise ValueError(f"attnsolve has no rule set for vLLM {asked}")
        return args, label, load(Path(info(label).path))
    except Exception as e:  # noqa: BLE001 - a release without a rule set that loads is an argument error
        print(f"error: {e}", file=sys.stderr)
        return None
