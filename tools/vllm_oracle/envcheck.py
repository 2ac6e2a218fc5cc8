"""Every environment variable a rule set declares, read by that release's own envs.py lambda.

Why it exists: the differential harness hands vLLM field values, never a variable's text, so it cannot see a
rule set that declares a variable its release does not have (the 0.17 set declared VLLM_ATTENTION_BACKEND,
which no vLLM from 0.17.0 on reads) or reads the text another way than vLLM (VLLM_ROCM_USE_AITER=yes is off
in vLLM). This check takes `environment_variables` from the wheel's vllm/envs.py (by `ast`, no import), runs
each declared variable's lambda (or, for a variable a release reads elsewhere, the reading function READERS
names) on a set of texts with a stand-in `os.getenv`, and compares the value (or the
ValueError) with attnsolve's reading (`env_reads`, attnsolve/config/env_reading.py).

    python -m tools.vllm_oracle.envcheck --vllm 0.17.0 [--attnsolve-vllm 0.17]

Exit 0 when every declared variable exists and reads alike, 1 with the differences, 2 for bad arguments.
"""

from __future__ import annotations

import ast
import types
import zipfile
from typing import Any, Callable

from attnsolve.config.env_reading import read_variable
from attnsolve.errors import ConfigError
from attnsolve.rules import load_rules

from .attnsolve_side import wheel_check_args
from .provision import wheel_path

# Texts a user may set: the spellings of on and off, spaces, signs, non-ASCII digits, nonsense, None = unset.
TEXTS: tuple[str | None, ...] = (None, "1", "0", "true", "True", "TRUE", "false", "False", "yes", "no", "on",
                                 "off", " 1", "1 ", "2", "-1", "+1", "1_0", "01", "\u0661", "\u00b2", "1.0", "x")
# Variables older rule sets declared or users still set, that a release may not read (reported, not failed).
STALE = ("VLLM_ATTENTION_BACKEND", "VLLM_FLASH_ATTN_VERSION", "VLLM_USE_TRTLLM_ATTENTION",
         "VLLM_V1_USE_PREFILL_DECODE_ATTENTION", "VLLM_USE_CUDNN_PREFILL", "VLLM_USE_TRTLLM_RAGGED_DEEPSEEK_PREFILL")


def envs_lambdas(envs_source: str) -> dict[str, Callable[[dict[str, str]], Any]]:
    """variable -> f(environ) from the `environment_variables` dict literal of vllm/envs.py."""
    tree = ast.parse(envs_source)
    table = None
    for node in ast.walk(tree):
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == "environment_variables" and isinstance(node.value, ast.Dict):
            table = node.value
    if table is None:
        raise ValueError("vllm/envs.py has no environment_variables dict literal")
    out: dict[str, Callable[[dict[str, str]], Any]] = {}
    for key, value in zip(table.keys, table.values):
        if isinstance(key, ast.Constant) and isinstance(key.value, str) and isinstance(value, ast.Lambda):
            code = compile(ast.Expression(value), f"envs.py:{key.value}", "eval")
            out[key.value] = _runner(code)
    return out


# Variables a release reads outside envs.py: (module file, the function that reads the text). vLLM 0.18 reads
# VLLM_BATCH_INVARIANT once, at import of its batch-invariance module (0.19 moved it into envs.py).
READERS = {"VLLM_BATCH_INVARIANT": ("vllm/model_executor/layers/batch_invariant.py", "_read_vllm_batch_invariant")}


def module_readers(read: Callable[[str], str | None]) -> dict[str, Callable[[dict[str, str]], Any]]:
    """variable -> f(environ) for READERS whose function the wheel has (`read`: a wheel file's text, or None):
    the function compiled alone from the module's source, called with the stand-in `os`."""
    out: dict[str, Callable[[dict[str, str]], Any]] = {}
    for variable, (path, name) in READERS.items():
        source = read(path)
        fn = next((n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name),
                  None) if source is not None else None
        if fn is None:
            continue
        fn.returns = None
        call = ast.Call(func=ast.Name(name, ast.Load()), args=[], keywords=[])
        module = ast.Module(body=[fn, ast.Assign(targets=[ast.Name("_value", ast.Store())], value=call)],
                            type_ignores=[])
        out[variable] = _module_runner(compile(ast.fix_missing_locations(module), f"{path}:{name}", "exec"))
    return out


def _module_runner(code: Any) -> Callable[[dict[str, str]], Any]:
    def run(environ: dict[str, str]) -> Any:
        fake_os = types.SimpleNamespace(environ=dict(environ), getenv=lambda name, default=None: environ.get(name, default))
        namespace: dict[str, Any] = {"os": fake_os, "__builtins__": __builtins__}
        exec(code, namespace)  # noqa: S102 - vLLM's own reader, no I/O
        return namespace["_value"]
    return run


def _runner(code: Any) -> Callable[[dict[str, str]], Any]:
    def run(environ: dict[str, str]) -> Any:
        # the only module the reading lambdas use: os.getenv / os.environ.get
        fake_os = types.SimpleNamespace(environ=dict(environ), getenv=lambda name, default=None: environ.get(name, default))
        fn = eval(code, {"os": fake_os, "__builtins__": __builtins__})  # noqa: S307 - vLLM's own lambda, no I/O
        return fn()
    return run


def differences(rules: Any, lambdas: dict[str, Callable[[dict[str, str]], Any]]) -> list[str]:
    """One line per declared variable the release lacks, or per text read differently."""
    out = []
    for name, decl in rules.fields.items():
        if not decl.env:
            continue
        fn = lambdas.get(decl.env)
        if fn is None:
            out.append(f"{decl.env} (fields.{name}): not in this release's envs.py (nor read by a module READERS names)")
            continue
        for text in TEXTS:
            try:
                vllm_value: Any = bool(fn({} if text is None else {decl.env: text}))
            except ValueError as e:
                vllm_value = f"ValueError: {e}"
            if text is None:  # unset: vLLM's default against the field's
                if decl.default is not None and vllm_value is not bool(decl.default) and \
                        decl.env_reads != "int_sets_true":
                    out.append(f"{decl.env} unset: vLLM reads {vllm_value}, fields.{name} defaults to {decl.default}")
                continue
            try:
                ours = read_variable(decl.env, text, name, decl.env_reads).value
            except ConfigError as e:
                ours = e.vllm_text
            if decl.env_reads == "int_sets_true" and ours is None:
                ours = False  # "changes nothing" is vLLM's False for a variable that can only turn a check off
            if ours != vllm_value:
                out.append(f"{decl.env}={text!r}: vLLM reads {vllm_value!r}, attnsolve {ours!r} (env_reads = "
                           f"{decl.env_reads!r})")
    return out


def main(argv: list[str] | None = None) -> int:
    got = wheel_check_args("python -m tools.vllm_oracle.envcheck", __doc__, "0.17.0", argv, load_rules)
    if got is None:
        return 2
    args, label, rules = got
    with zipfile.ZipFile(wheel_path(args.vllm)) as z:
        lambdas = envs_lambdas(z.read("vllm/envs.py").decode("utf-8", "replace"))
        names = set(z.namelist())
        lambdas = {**module_readers(lambda f: z.read(f).decode("utf-8", "replace") if f in names else None),
                   **lambdas}  # envs.py's own reading first, where it has one
    bad = differences(rules, lambdas)
    for line in bad:
        print(f"DIFFERS in vLLM {args.vllm}: {line}")
    declared = sorted(d.env for d in rules.fields.values() if d.env)
    print(f"{len(declared)} environment variables of the {label} rules checked against vLLM {args.vllm}'s envs.py "
          f"({len(TEXTS)} texts each): {'all read alike' if not bad else f'{len(bad)} differences'}")
    stale = [v for v in STALE if v in lambdas and v not in declared]
    if stale:
        print(f"read by vLLM {args.vllm} but not declared (check whether selection reads them): {', '.join(stale)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
