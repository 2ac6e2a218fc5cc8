"""Every `--attention-config.X` setting a rule set declares, its default against the release's own AttentionConfig.

Why it exists: the differential harness hands vLLM explicit values for most settings, so a release that changes
only a default is invisible to it. vLLM 0.18.1 did exactly that: AttentionConfig.use_trtllm_ragged_deepseek_prefill
went back to True in a patch release, and attnsolve answered 0.18.1 with 0.18.0's False. This check reads the
AttentionConfig dataclass of the wheel's vllm/config/attention.py (by `ast`, no import) and compares each field's
default with the default of the rule field whose flags or `vllm` text name `--attention-config.<field>`.

    python -m tools.vllm_oracle.defaults --vllm 0.18.1 [--attnsolve-vllm 0.18.1]

Exit 0 when every such default agrees, 1 with the differences, 2 for bad arguments.
"""

from __future__ import annotations

import ast
import re
import zipfile
from typing import Any

from attnsolve.rules import load_rules

from .attnsolve_side import wheel_check_args
from .provision import wheel_path

_NAMED = re.compile(r"--attention-config\.(\w+)")
_NO_DEFAULT = object()
# (minor release, AttentionConfig field, vLLM's default, attnsolve's): read alike by that release, with why.
ALIKE: dict[tuple[str, str, Any, Any], str] = {
    ("0.21", "disable_flashinfer_prefill", None, False):
        "0.21's AttentionConfig.__post_init__ reads it only as `if self.disable_flashinfer_prefill:` (deprecated; "
        "a true value migrates to mla_prefill_backend=FLASH_ATTN), so None and False are the same setting",
}


def attention_config_defaults(source: str) -> dict[str, Any]:
    """AttentionConfig's annotated fields -> their literal default (a non-literal default is left out)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "AttentionConfig":
            out: dict[str, Any] = {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
                    try:
                        out[item.target.id] = ast.literal_eval(item.value)
                    except ValueError:
                        continue  # field(default_factory=...), an enum member: not a settings default
            return out
    raise ValueError("vllm/config/attention.py has no AttentionConfig class")


def declared_settings(rules: Any) -> dict[str, tuple[str, Any]]:
    """AttentionConfig field -> (rule field, its default) for every rule field that names one."""
    out: dict[str, tuple[str, Any]] = {}
    for name, decl in rules.fields.items():
        text = " ".join(decl.flags or ()) + " " + (decl.vllm or "")
        for attr in _NAMED.findall(text):
            out.setdefault(attr, (name, decl.default))
    return out


def differences(rules: Any, vllm_defaults: dict[str, Any]) -> list[str]:
    """One line per declared setting whose default differs from vLLM's (ALIKE: the pairs a release reads alike)."""
    minor = ".".join(str(rules.vllm).split(".")[:2])
    bad = []
    for attr, (field, ours) in sorted(declared_settings(rules).items()):
        theirs = vllm_defaults.get(attr, _NO_DEFAULT)
        if theirs is _NO_DEFAULT:
            continue  # a field without a literal default (the backend enum) or one a rule names in passing
        if (type(theirs) is not type(ours) or theirs != ours) and (minor, attr, theirs, ours) not in ALIKE:
            bad.append(f"{field}: attnsolve default {ours!r}, vLLM AttentionConfig.{attr} = {theirs!r}")
    return bad


def main(argv: list[str] | None = None) -> int:
    got = wheel_check_args("python -m tools.vllm_oracle.defaults", __doc__, "0.18.1", argv, load_rules)
    if got is None:
        return 2
    args, label, rules = got
    with zipfile.ZipFile(wheel_path(args.vllm)) as z:
        theirs = attention_config_defaults(z.read("vllm/config/attention.py").decode("utf-8", "replace"))
    bad = differences(rules, theirs)
    for line in bad:
        print(f"DIFFERS in vLLM {args.vllm}: {line}")
    checked = [a for a in declared_settings(rules) if a in theirs]
    print(f"{len(checked)} AttentionConfig defaults of the {label} rules checked against vLLM {args.vllm}'s "
          f"config/attention.py: {'all alike' if not bad else f'{len(bad)} differences'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
