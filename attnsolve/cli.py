"""`attnsolve`: which attention backend vLLM picks, why not the others, and the smallest fix.

Each verb is an argument declaration, a thin adapter and a plain function returning a frozen
`Result` (data, text, exit code), printed as text or, with --json, as a versioned envelope
`{"schema": "attnsolve/1", "command": ..., "exit_code": ..., "result": ...}`.

Exit codes: 0 selected / success, 1 no valid backend or the requested backend does not fit
(or `docs --check` found drift), 2 bad input. Errors go to stderr; no traceback reaches the user.

Start-up: this module imports only the standard library and attnsolve's light core; the solver
runs inside the verbs, torch only in `backends` (for the "runnable here" column, when installed).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import IO, Any, Callable, Mapping, Sequence

from .exitcodes import ExitCode
from .render import WIDTH, Style, table, width, wrap

SCHEMA = "attnsolve/1"
EXIT_OK = ExitCode.OK
EXIT_NO_BACKEND = ExitCode.NO_BACKEND
EXIT_BAD_INPUT = ExitCode.BAD_INPUT
COMMANDS = ("select", "explain", "backends", "matrix", "docs", "upgrade")
PROG = "attnsolve"


# ---------------------------------------------------------------------------------------------
# Results and errors


@dataclass(frozen=True)
class Result:
    """What a verb answers: JSON-ready data, the text form and the exit code."""

    command: str
    data: Mapping[str, Any]
    text: str
    exit_code: int = EXIT_OK

    def envelope(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "command": self.command, "exit_code": self.exit_code, "result": dict(self.data)}


class UsageError(Exception):
    """Bad command-line input: printed to stderr, exit 2. `hint` is printed last."""

    def __init__(self, message: str, details: Sequence[str] = (), hint: str | None = None):
        self.message = message
        self.details = tuple(details)
        self.hint = hint
        super().__init__(message)

    def lines(self) -> list[str]:
        out = wrap(f"{PROG}: error: {self.message}", indent="    ", first="")
        for d in self.details:
            out += wrap(d, indent="    ", first="  ")
        if self.hint:
            out += wrap(self.hint, indent="    ", first="  ")
        return out


# ---------------------------------------------------------------------------------------------
# Flags: one per Config field, vLLM's spellings where vLLM has them


@dataclass(frozen=True)
class Flag:
    field: str
    names: tuple[str, ...]
    metavar: str
    help: str
    boolean: bool = False


_AC = "--attention-config."
FLAGS: tuple[Flag, ...] = (
    # hardware
    Flag("gpu", ("--gpu",), "NAME", "GPU name as you or nvidia-smi / rocm-smi spell it, e.g. H100, "
         "'NVIDIA A100-SXM4-80GB', MI300X, CPU; auto = this machine's GPU (sets platform and compute capability)"),
    Flag("platform", ("--platform",), "NAME", "cuda, rocm or cpu"),
    Flag("compute_capability", ("--compute-capability", "--cc"), "X.Y", "CUDA compute capability, e.g. 9.0, 10.0, "
         "12.0 (implies --platform cuda)"),
    Flag("rocm_arch", ("--rocm-arch",), "GFX", "ROCm gfx arch, e.g. gfx942 (default on rocm; implies --platform rocm)"),
    # model
    Flag("dtype", ("--dtype",), "DTYPE", "model dtype: float16, bfloat16, float32 (default: vLLM's --dtype auto for "
         "the --model on this GPU, else bfloat16)"),
    Flag("head_size", ("--head-size",), "N", "attention head size (default 128; 576 for MLA)"),
    Flag("num_heads", ("--num-heads",), "N", "query heads of the model (num_attention_heads); divided by "
         "--tensor-parallel-size to get heads per GPU"),
    Flag("use_mla", ("--use-mla",), "BOOL", "MLA (DeepSeek-style latent attention) layers", boolean=True),
    Flag("use_sparse", ("--use-sparse",), "BOOL", "sparse MLA with a top-k indexer (DeepSeek-V3.2)", boolean=True),
    Flag("has_sink", ("--has-sink",), "BOOL", "attention sinks (gpt-oss)", boolean=True),
    Flag("use_mm_prefix", ("--use-mm-prefix",), "BOOL", "multimodal prefix LM: bidirectional attention over image tokens", boolean=True),
    Flag("attn_type", ("--attn-type",), "TYPE", "decoder, encoder, encoder_only or encoder_decoder"),
    Flag("qk_nope_head_dim", ("--qk-nope-head-dim",), "N", "MLA qk_nope_head_dim (model config)"),
    Flag("qk_rope_head_dim", ("--qk-rope-head-dim",), "N", "MLA qk_rope_head_dim (model config)"),
    Flag("v_head_dim", ("--v-head-dim",), "N", "MLA v_head_dim (model config)"),
    Flag("index_topk", ("--index-topk",), "N", "sparse MLA indexer top-k (model config)"),
    # cache and selection
    Flag("kv_cache_dtype", ("--kv-cache-dtype",), "DTYPE", "KV cache dtype: auto, bfloat16, fp8, fp8_e4m3, fp8_e5m2, ..."),
    Flag("block_size", ("--block-size",), "N", "KV cache block size (default: unset, as at vLLM start-up)"),
    Flag("backend", ("--attention-backend", _AC + "backend", "-ac.backend"), "NAME",
         "request a backend (validated, never replaced); default automatic"),
    # switches (vLLM --attention-config.* and environment variables)
    Flag("flash_attn_version", ("--flash-attn-version", _AC + "flash_attn_version", "-ac.flash_attn_version"), "N",
         "FlashAttention version 2 or 3 (VLLM_FLASH_ATTN_VERSION)"),
    Flag("use_trtllm_attention", ("--use-trtllm-attention", _AC + "use_trtllm_attention", "-ac.use_trtllm_attention"),
         "BOOL", "FlashInfer TRT-LLM kernels (default auto; VLLM_USE_TRTLLM_ATTENTION)", boolean=True),
    Flag("trtllm_available", ("--trtllm-available",), "BOOL", "TRT-LLM cubins downloadable (default true)", boolean=True),
    Flag("flashinfer_available", ("--flashinfer-available",), "BOOL", "flashinfer installed (default true)", boolean=True),
    Flag("rocm_use_aiter", ("--rocm-use-aiter",), "BOOL", "VLLM_ROCM_USE_AITER (default false)", boolean=True),
    Flag("rocm_use_aiter_mha", ("--rocm-use-aiter-mha",), "BOOL", "VLLM_ROCM_USE_AITER_MHA (default true)", boolean=True),
    Flag("rocm_use_aiter_mla", ("--rocm-use-aiter-mla",), "BOOL", "VLLM_ROCM_USE_AITER_MLA (default true)", boolean=True),
    Flag("rocm_use_aiter_unified_attention", ("--rocm-use-aiter-unified-attention",), "BOOL",
         "VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION (default false)", boolean=True),
    Flag("use_prefill_decode_attention", ("--use-prefill-decode-attention", _AC + "use_prefill_decode_attention"),
         "BOOL", "ROCm prefill-decode attention (default false)", boolean=True),
    Flag("use_trtllm_ragged_deepseek_prefill", ("--use-trtllm-ragged-deepseek-prefill",
         _AC + "use_trtllm_ragged_deepseek_prefill", "-ac.use_trtllm_ragged_deepseek_prefill"), "BOOL",
         "MLA prefill: TRT-LLM ragged (default true)", boolean=True),
    Flag("disable_flashinfer_prefill", ("--disable-flashinfer-prefill", _AC + "disable_flashinfer_prefill",
         "-ac.disable_flashinfer_prefill"), "BOOL", "MLA prefill: disable FlashInfer (default false)", boolean=True),
    Flag("use_cudnn_prefill", ("--use-cudnn-prefill", _AC + "use_cudnn_prefill", "-ac.use_cudnn_prefill"), "BOOL",
         "MLA prefill: cuDNN (default false)", boolean=True),
    # release
    Flag("vllm", ("--vllm",), "VERSION", "the vLLM release to answer for, e.g. 0.17 or 0.33.0 "
         "(default: the newest supported; $ATTNSOLVE_VLLM)"),
)
FLAG_OF: dict[str, str] = {f.field: f.names[0] for f in FLAGS}
FLAG_OF.update({"role": "--role", "model": "--model", "tensor_parallel_size": "--tensor-parallel-size",
                "over": "--over"})
_GROUPS = (("hardware", 0, 4), ("model (--model fills these from config.json)", 4, 16),
           ("KV cache and backend", 16, 19), ("switches (vLLM --attention-config.* / environment)", 19, len(FLAGS) - 1),
           ("vLLM release", len(FLAGS) - 1, len(FLAGS)))


def _fit(text: str) -> str:
    """Lines past WIDTH (long option spellings argparse does not wrap) wrapped under their indent."""
    out: list[str] = []
    for line in text.split("\n"):
        if width(line) <= WIDTH:
            out.append(line)
            continue
        lead = line[: len(line) - len(line.lstrip())]
        out += wrap(line.strip(), indent=lead + "  ", first=lead)
    return "\n".join(out)


class _Help(argparse.HelpFormatter):
    """argparse's help at WIDTH columns whatever the terminal, never a line past it."""

    def __init__(self, prog: str, **kw: Any) -> None:
        kw.setdefault("width", WIDTH)
        kw.setdefault("max_help_position", 30)
        super().__init__(prog, **kw)

    def format_help(self) -> str:
        return _fit(super().format_help())


class _RawHelp(argparse.RawDescriptionHelpFormatter, _Help):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with errors raised (exit 2 by main) instead of printed-and-exited, help at WIDTH."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        if kw.get("formatter_class") in (None, argparse.HelpFormatter):
            kw["formatter_class"] = _Help
        elif kw.get("formatter_class") is argparse.RawDescriptionHelpFormatter:
            kw["formatter_class"] = _RawHelp
        super().__init__(*args, **kw)

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(message, hint=f"usage: {self.format_usage().strip().removeprefix('usage: ')}")


def query_rules() -> Any:
    """The rule set this command line asks about (--vllm, else the default release)."""
    from .config import parse_vllm
    from .rules import rules_for
    try:
        return rules_for(parse_vllm(_ARGV_VLLM))
    except Exception:  # a bad --vllm is reported by Config with its accepted values
        return rules_for(parse_vllm(None))


_ARGV_VLLM: str | None = None  # --vllm's value, read before the parser is built (its flags depend on it)


def declared_flags(rules: Any) -> tuple[Flag, ...]:
    """Flags of the fields a release's rules declare beyond the common ones (schema as data)."""
    out = []
    for name, decl in rules.fields.items():
        if name in FLAG_OF:
            continue
        names = decl.flags or (decl.flag,)
        text = decl.help or name.replace("_", " ")
        extra = [x for x in (f"vLLM: {decl.vllm}" if decl.vllm else "", decl.env or "",
                             f"default {decl.default}" if decl.default is not None else (decl.unset and f"unset: {decl.unset}"))
                 if x]
        out.append(Flag(name, tuple(names), decl.metavar if decl.metavar != "VALUE" else
                        ("BOOL" if decl.kind in ("bool", "tristate") else "N" if decl.kind == "int" else "VALUE"),
                        text + (f" ({'; '.join(extra)})" if extra else ""), boolean=decl.kind in ("bool", "tristate")))
    return tuple(out)


def _scan_vllm(argv: Sequence[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--vllm" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--vllm="):
            return a.split("=", 1)[1]
    return None


def _add_flag(g: Any, f: Flag) -> None:
    if f.boolean:
        g.add_argument(*f.names, dest=f.field, metavar=f.metavar, nargs="?", const="true", default=None,
                       help=f.help + " (bare flag = true)")
    else:
        g.add_argument(*f.names, dest=f.field, metavar=f.metavar, default=None, help=f.help)


def _add_query_flags(p: argparse.ArgumentParser) -> None:
    rules = query_rules()
    extra = declared_flags(rules)
    for category in ("hardware", "model", "setting"):
        mine = [f for f in extra if rules.fields[f.field].category == category]
        if mine:
            g = p.add_argument_group(f"{category} inputs of vLLM {rules.vllm or 'custom'} (declared by its rules)")
            for f in mine:
                _add_flag(g, f)
    for title, lo, hi in _GROUPS:
        g = p.add_argument_group(title)
        for f in FLAGS[lo:hi]:
            if f.boolean:
                g.add_argument(*f.names, dest=f.field, metavar=f.metavar, nargs="?", const="true", default=None,
                               help=f.help + " (bare flag = true)")
            else:
                g.add_argument(*f.names, dest=f.field, metavar=f.metavar, default=None, help=f.help)
        if lo == 4:
            g.add_argument("--model", metavar="PATH", help="Hugging Face config.json, its directory, or a repo id "
                           "(e.g. deepseek-ai/DeepSeek-V3) in the local Hugging Face cache: derives head size, "
                           "heads, MLA, sparse, sinks, attention type, dtype")
            g.add_argument("--tensor-parallel-size", "-tp", dest="tensor_parallel_size", metavar="N", default=None,
                           help="tensor-parallel size: heads per GPU = num heads / N (default 1)")
    p.add_argument("--no-env", action="store_true",
                   help="ignore vLLM's environment switches (VLLM_ATTENTION_BACKEND, VLLM_FLASH_ATTN_VERSION, "
                        "VLLM_ROCM_USE_AITER*, ...); by default they are read as vLLM reads them, flags win")
    p.add_argument("--from-env", action="store_true", help=argparse.SUPPRESS)  # the default now; kept working
    p.add_argument("--role", metavar="ROLE", default=None,
                   help="decode (default; MLA decode for MLA models) or mla_prefill")


_parser_cache: dict[tuple[str | None, int], argparse.ArgumentParser] = {}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s sub-parser gets its (many) flags, which keeps start-up short."""
    key = (command, id(query_rules()))
    if key in _parser_cache:
        return _parser_cache[key]
    full = lambda verb: command == verb  # noqa: E731
    common = _Parser(add_help=False, allow_abbrev=False)
    common.add_argument("--json", action="store_true", help="print the versioned JSON envelope instead of text")
    top = _Parser(prog=PROG, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                  description="Which attention backend vLLM selects, why not the others, and the smallest fix.",
                  epilog="examples:\n"
                         "  attnsolve select --gpu H100 --model examples/llama3-8b.json\n"
                         "  attnsolve explain --gpu H100 --model examples/deepseek-v3.json \\\n"
                         "      --kv-cache-dtype fp8\n"
                         "  attnsolve matrix --model examples/gpt-oss-20b.json \\\n"
                         "      --over compute_capability,kv_cache_dtype\n"
                         "  attnsolve backends\n"
                         "  attnsolve docs --check\n\n"
                         "exit codes: 0 selected/success, 1 no valid backend (or docs drift), 2 bad input,\n"
                         "  3 internal error (see docs/user-guide.md)")
    top.add_argument("--json", dest="json_top", action="store_true", help="JSON output (also accepted after the command)")
    top.add_argument("--version", action="store_true", help="print the version and exit")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("select", parents=[common], help="the backend vLLM selects", allow_abbrev=False,
                       description="Print the backend vLLM selects for the configuration (and the variant).")
    if full("select"):
        _add_query_flags(p)
    p = sub.add_parser("explain", parents=[common], help="why this backend, why not the others, the smallest fix",
                       allow_abbrev=False, description="Selected backend, why each higher-priority backend lost, "
                       "the minimal conflict and the smallest fixes.")
    if full("explain"):
        _add_query_flags(p)
    p = sub.add_parser("matrix", parents=[common], help="selection over free fields (e.g. GPU x KV dtype)",
                       allow_abbrev=False, description="Selection for every combination of the --over fields "
                       "(the rest from the flags). Default --over compute_capability,kv_cache_dtype.")
    if full("matrix"):
        _add_query_flags(p)
    p.add_argument("--over", action="append", metavar="FIELDS",
                   help="comma-separated fields (compute_capability, kv_cache_dtype, dtype, block_size, head_size, "
                        "...), or FIELD=V1,V2 for chosen values; repeatable")
    p.add_argument("--long", action="store_true", help="one line per combination instead of a grid")
    p.add_argument("--max-cells", metavar="N", default=None, help="refuse grids above N cells (default 10000)")
    p.add_argument("--all", action="store_true", dest="all_space",
                   help="coverage report over the whole configuration space: holes (configs no backend supports) "
                        "per platform / GPU generation, and backends never selected automatically")
    p = sub.add_parser("upgrade", parents=[common], help="what moving to another vLLM release changes",
                       allow_abbrev=False, description="Answer the configuration with two vLLM releases: for a "
                       "full configuration (e.g. --model) what changes and why; otherwise, over the model facts "
                       "not given, how many configurations change backend, grouped old -> new with an example.")
    if full("upgrade"):
        _add_query_flags(p)
    p.add_argument("--from", dest="from_version", metavar="VERSION", required=full("upgrade"),
                   help="the release you run now, e.g. 0.17")
    p.add_argument("--to", dest="to_version", metavar="VERSION", default=None,
                   help="the release you consider (default: the newest supported)")
    p = sub.add_parser("backends", parents=[common], help="all backends: platform, role, priority, capabilities",
                       allow_abbrev=False, description="Every backend with its platform, role, priority position "
                       "per GPU generation and a one-line summary.")
    p.add_argument("--platform", metavar="NAME", default=None, help="only this platform (cuda, rocm, cpu)")
    p.add_argument("--no-runnable", action="store_true", help="skip the 'runnable here' column (needs torch)")
    p.add_argument("--vllm", metavar="VERSION", default=None, help="the release whose backends to list")
    p = sub.add_parser("docs", parents=[common], help="generate docs/attention_backends.md (--check: compare)",
                       allow_abbrev=False, description="Write the backend capability document generated from "
                       "the rules; --check exits 1 with a diff when the file differs.")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 with a unified diff on drift")
    p.add_argument("--output", "-o", metavar="PATH", default=None,
                   help="file to write or check (default docs/attention_backends.md for the default release, "
                        "docs/attention_backends-vllm-X.md for another; '-' for stdout)")
    p.add_argument("--vllm", metavar="VERSION", default=None,
                   help="the release whose rules to document (default: the default release)")
    _parser_cache[key] = top
    return top


def _option_strings(parser: argparse.ArgumentParser, command: str | None) -> list[str]:
    opts = [s for a in parser._actions for s in a.option_strings]
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction) and command in a.choices:
            opts += [s for b in a.choices[command]._actions for s in b.option_strings]
    return sorted(set(opts))


def _closest(value: str, options: Sequence[str]) -> str | None:
    from .errors import closest
    return closest(value, options)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    global _ARGV_VLLM
    argv = list(argv)
    _ARGV_VLLM = _scan_vllm(argv)
    if "upgrade" in argv:  # its flags are the target release's (--to, default the newest)
        to = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--to"), None)
        from .rules import versions
        _ARGV_VLLM = to or versions()[-1]
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    if command is not None and command not in COMMANDS and argv.index(command) == _first_positional(argv):
        hit = _closest(command, COMMANDS)
        raise UsageError(f"unknown command {command!r}", [f"commands: {', '.join(COMMANDS)}"],
                         hint=f"did you mean '{PROG} {hit}'?" if hit else f"run '{PROG} --help'")
    ns, extra = parser.parse_known_args(argv)
    if extra:
        bad = extra[0]
        name = bad.split("=", 1)[0]
        if name.startswith("-"):
            opts = _option_strings(parser, ns.command)
            hit = _closest(name, opts)
            raise UsageError(f"unknown option {name!r}" + (f" for '{ns.command}'" if ns.command else ""),
                             hint=f"did you mean {hit}?" if hit else f"run '{PROG} {ns.command or ''} --help'".replace("  ", " "))
        raise UsageError(f"unexpected argument {bad!r}", hint="every value belongs to a flag, e.g. --gpu H100")
    return ns


def _first_positional(argv: list[str]) -> int:
    for i, a in enumerate(argv):
        if not a.startswith("-"):
            return i
    return -1


# ---------------------------------------------------------------------------------------------
# The query: flags (+ model config, + environment) -> Config


@dataclass(frozen=True)
class Query:
    config: Any
    role: str | None
    notes: tuple[str, ...] = ()
    model: Any = None
    gpu: str | None = None
    tensor_parallel_size: int = 1
    total_heads: int | None = None
    defaulted: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # vLLM environment switches read from the process
    user_fields: frozenset[str] = frozenset()  # Config fields the user set by a flag
    dtype_auto: bool = False  # the dtype is vLLM's --dtype auto for the --model (depends on the GPU)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(only_changed=True), "role": self.role, "gpu": self.gpu,
                "tensor_parallel_size": self.tensor_parallel_size, "model": None if self.model is None else self.model.path,
                "notes": list(self.notes), "defaulted": list(self.defaulted),
                "env": {k: v for k, v in self.env}}

    def context(self) -> Any:
        """The advice layer's view of the question."""
        from .advice import Context
        from .modelconfig import FLOAT16_NOT_SUPPORTED
        m = self.model
        f16 = m is None or not ({m.model_type, m.extra.get("text_model_type")} & FLOAT16_NOT_SUPPORTED)
        return Context(self.config, self.role, self.gpu, self.user_fields, self.tensor_parallel_size,
                       self.total_heads, bool(m is not None and m.sparse_kv_rewrite), f16)


def _int_flag(name: str, value: Any) -> int:
    from .config import _as_int
    return _as_int(name, value, optional=False)


def read_env(environ: Mapping[str, str]) -> tuple[tuple[str, str, str], ...]:
    """vLLM's environment switches set in `environ`: (variable, value, Config field)."""
    declared = {d.env: name for name, d in query_rules().fields.items() if d.env}
    if not declared:  # a rule set without declarations: the common fields' variables
        from .config import _ENV_VARS
        declared = dict(_ENV_VARS)
    return tuple((var, environ[var], name) for var, name in declared.items() if environ.get(var, "") != "")


def build_query(ns: argparse.Namespace, *, need_hardware: bool = True, free: Sequence[str] = (),
                environ: Mapping[str, str] | None = None) -> Query:
    """Flags, --model and the environment into a validated Config (ConfigError / UsageError on bad input).

    Precedence: flags > environment (as vLLM reads it, unless --no-env) > --model > defaults.
    """
    import os
    from .config import Config
    from .errors import ConfigError
    fields: dict[str, Any] = {}
    notes: list[str] = []
    model = None
    if getattr(ns, "model", None):
        from .modelconfig import read_model_config
        model = read_model_config(ns.model)
        fields.update(model.fields)
        fields.pop("dtype", None)  # resolved below, once the hardware is known
        notes += [f"model {model.path}: {n}" for n in model.notes]
        from .modelconfig import declared_model_fields
        declared, declared_notes = declared_model_fields(model, query_rules())
        fields.update(declared)
        notes += [f"model {model.path}: {n}" for n in declared_notes]
    env: tuple[tuple[str, str, str], ...] = ()
    if not getattr(ns, "no_env", False):
        env = read_env(os.environ if environ is None else environ)
    explicit = {f.field: getattr(ns, f.field) for f in (*FLAGS, *declared_flags(query_rules()))
                if getattr(ns, f.field, None) is not None}
    used_env = tuple((var, value) for var, value, name in env if name not in explicit)
    fields.update({name: value for var, value, name in env if name not in explicit})
    fields.update(explicit)
    gpu = fields.get("gpu")
    if isinstance(gpu, str):
        from .gpus import canonical, detect_local, resolve
        if gpu.strip().lower() == "auto":
            found = detect_local()
            notes.append(f"--gpu auto: {found.source} reports {found.raw!r} = {found.name}")
            fields["gpu"] = found.name
        elif canonical(gpu) is not None and canonical(gpu) != gpu:
            fields["gpu"] = resolve(gpu)
    tp = 1
    if getattr(ns, "tensor_parallel_size", None) is not None:
        tp = _int_flag("tensor_parallel_size", ns.tensor_parallel_size)
    total = None
    if "num_heads" in fields:
        total = _int_flag("num_heads", fields["num_heads"])
        if total % tp:
            raise ConfigError("tensor_parallel_size", tp, f"a divisor of the number of query heads ({total})")
        fields["num_heads"] = total // tp
    defaulted: list[str] = []
    hardware = {"gpu", "platform", "compute_capability", "rocm_arch"}
    if not (hardware & set(fields)) and not (hardware & set(free)):
        if need_hardware or not ({"compute_capability", "gpu"} & set(free)):
            raise UsageError("no hardware given", ["the backend depends on the GPU: give --gpu NAME "
                             "(e.g. H100, B200, RTX 5090, MI300X, CPU, or auto for this machine's GPU) "
                             "or --compute-capability 9.0"], hint="e.g. --gpu H100")
    # a compute capability alone means CUDA, a gfx arch alone ROCm
    if "platform" not in fields and "gpu" not in fields:
        if "compute_capability" in fields:
            fields["platform"] = "cuda"
        elif "rocm_arch" in fields:
            fields["platform"] = "rocm"
    if "gpu" in free and not (hardware & set(fields)):  # matrix over GPU names: the first stands in
        fields["gpu"] = next(v for n, v in getattr(ns, "over_values", {}).items() if n == "gpu")
    if "compute_capability" in free:  # matrix over GPU generations: any CUDA GPU stands in for the base
        from .rules import default_rules
        if not (hardware & set(fields)):
            fields.update(platform="cuda", compute_capability=next(iter(default_rules().generations)))
    if "dtype" not in fields:
        if model is not None and "dtype" not in free:
            fields["dtype"] = _model_dtype(model, fields, notes)
        else:
            fields["dtype"] = "bfloat16"
            defaulted.append("dtype")
    if model is not None:
        from .modelconfig import apply_model_rewrites
        fields, rewrites = apply_model_rewrites(model, fields)
        notes += list(rewrites)
    role = getattr(ns, "role", None)
    if role is not None:
        from .solver.facts import parse_role
        role = parse_role(role)
    user = frozenset(explicit) | frozenset(name for _, _, name in env)
    env_fields = {var: name for var, _, name in env if name not in explicit}
    try:
        config = Config(**fields)
    except ConfigError as e:  # name the source of the bad value: flag, model file key or environment variable
        from .cli_guards import blame, sources
        raise blame(e, sources(model, env_fields, explicit)) from None
    return Query(config=config, role=role, notes=tuple(notes), model=model,
                 gpu=fields.get("gpu") if isinstance(fields.get("gpu"), str) else None,
                 tensor_parallel_size=tp, total_heads=total, defaulted=tuple(defaulted), env=used_env,
                 user_fields=user, dtype_auto=model is not None and "dtype" not in explicit)


def _model_dtype(model: Any, fields: Mapping[str, Any], notes: list[str]) -> str:
    """vLLM's --dtype auto for the model on the hardware in `fields` (a note when it differs)."""
    from .config import Config
    from .modelconfig import resolve_dtype
    hw = {k: fields[k] for k in ("gpu", "platform", "compute_capability", "rocm_arch") if k in fields}
    probe = Config(dtype="float32", **hw)
    dtype, note = resolve_dtype(model, str(probe.platform), probe.compute_capability)
    if note:
        notes.append(note)
    return dtype


# ---------------------------------------------------------------------------------------------
# Describing a query in the user's own terms (flags, GPU names)


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "unset"
    if isinstance(v, tuple) and len(v) == 2:
        return f"{v[0]}.{v[1]}"
    return str(v)


def describe_hardware(q: Query) -> str:
    c = q.config
    if c.platform == "cuda":
        cc = _show(c.compute_capability)
        return f"{q.gpu} (SM {cc})" if q.gpu else f"cuda SM {cc}"
    if c.platform == "rocm":
        return f"{q.gpu} (rocm {c.rocm_arch})" if q.gpu else f"rocm {c.rocm_arch}"
    return "CPU"


def describe_query(q: Query, sep: str = ", ", skip: Sequence[str] = ()) -> str:
    c = q.config
    hw = "CUDA" if "compute_capability" in skip else "per GPU" if "gpu" in skip else describe_hardware(q)
    per_gpu = q.dtype_auto and bool({"compute_capability", "gpu"} & set(skip))
    parts = [f"vLLM {c.vllm}", hw, "dtype auto" if per_gpu else c.dtype + (" (default)" if "dtype" in q.defaulted else "")]
    kind = "sparse MLA" if c.use_sparse is True else "MLA" if c.use_mla is True else None
    if kind:
        parts.append(kind)
    parts.append(f"head {c.head_size}")
    if c.num_heads is not None:
        parts.append(f"{c.num_heads} heads/GPU" + (f" (tp {q.tensor_parallel_size})" if q.tensor_parallel_size > 1 else ""))
    parts.append(f"kv {c.kv_cache_dtype}")
    if c.block_size is not None:
        parts.append(f"block {c.block_size}")
    if c.has_sink is True:
        parts.append("sinks")
    if c.use_mm_prefix is True:
        parts.append("mm prefix")
    if c.attn_type != "decoder":
        parts.append(str(c.attn_type))
    shown = {"vllm", "platform", "dtype", "compute_capability", "rocm_arch", "use_mla", "use_sparse", "head_size", "num_heads",
             "kv_cache_dtype", "block_size", "has_sink", "use_mm_prefix", "attn_type", "backend",
             "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_topk"}
    parts = [p for p in parts if not any(str(p).startswith(prefix) for prefix in
                                         [{"dtype": c.dtype, "head_size": "head ", "kv_cache_dtype": "kv ",
                                           "block_size": "block ", "num_heads": f"{c.num_heads} heads"}.get(k, "\0")
                                          for k in skip])]
    for k, v in c.to_dict(only_changed=True).items():
        if k not in shown and k not in skip:
            parts.append(f"{k}={_show(v)}")
    if c.backend is not None:
        parts.append(f"requested {c.backend}")
    if q.role == "mla_prefill":
        parts.append("MLA prefill")
    return sep.join(str(p) for p in parts)


def _env_line(q: Query) -> list[str]:
    if not q.env:
        return []
    used = ", ".join(f"{k}={v}" for k, v in q.env)
    return [f"environment: {used} (read as vLLM reads it; --no-env ignores it)"]


def _facts(facts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_show(v)}" for k, v in facts.items())


# ---------------------------------------------------------------------------------------------
# Verbs


def _prefill(q: Query) -> Any:
    """For an MLA model asked about decode: the MLA prefill backend too (vLLM picks both)."""
    if q.role is not None or q.config.use_mla is not True:
        return None
    from .errors import ConfigError, SelectionError
    from .selection import solve
    try:
        return solve(q.config, role="mla_prefill")
    except (SelectionError, ConfigError):
        return None


def cmd_select(q: Query, style: Style) -> Result:
    from .errors import InvalidBackendError, SelectionError
    from .selection import solve
    prefill = _prefill(q)
    base: dict[str, Any] = {"requested": q.config.backend, "prefill": None if prefill is None else prefill.to_dict(),
                            "query": q.to_dict()}
    try:
        sel = solve(q.config, role=q.role)
    except SelectionError as e:
        head = (f"{e.backend} (requested) does not fit {describe_query(q)}" if isinstance(e, InvalidBackendError)
                else f"No valid attention backend for {describe_query(q)}")
        lines = wrap(head + ":") + _reason_rows([(b, "; ".join(r) or "-") for b, r in e.reasons.items()])
        for n in [*_env_line(q), *q.notes]:
            lines += wrap(n, indent="    ", first="note: ")
        lines += wrap("hint: 'attnsolve explain' with the same flags gives the conflict and the fix",
                      indent="      ", first="")
        from .solver.facts import parse_role
        data = {"selected": None, "variant": None, "role": parse_role(q.role), "manual": q.config.backend is not None,
                "priority_list": None, "preferred_block_size": None,
                "rejected": [{"backend": b, "reasons": list(r)} for b, r in e.reasons.items()],
                "warnings": [], "config": q.config.to_dict(), "error": str(e),
                "startup_error": getattr(e, "startup_error", None), **base}
        return Result("select", data, "\n".join(lines), EXIT_NO_BACKEND)
    startup = getattr(sel, "startup_error", None)
    lines = [style.bold(str(sel)) + ("  (requested)" if sel.manual and q.config.backend else "")
             + f"  [vLLM {q.config.vllm}]"]
    if sel.rejected:
        groups: dict[tuple[str, ...], list[str]] = {}  # backends that lost for the same reasons: one line
        for r in sel.rejected:
            groups.setdefault(r.reasons, []).append(r.backend)
        for reasons, names in groups.items():
            lines += wrap(f"{', '.join(names)}: {'; '.join(reasons)}", indent="      ", first="  not ")
    data = {**sel.to_dict(), "error": startup, "startup_error": startup, **base}
    if prefill is not None:
        lines += wrap(f"{prefill} (MLA prefill backend)", indent="    ", first="  prefill: ")
    if startup:  # vLLM's selector answers, but vLLM refuses to start: a failing answer
        lines += wrap(f"vLLM selects {sel} but refuses to start: {startup}", indent="    ", first="  error: ")
    for w in sel.warnings:
        lines += wrap(w, indent="    ", first="  warning: ")
    for n in [*_env_line(q), *q.notes]:
        lines += wrap(n, indent="    ", first="  note: ")
    if startup:
        lines += wrap("hint: 'attnsolve explain' with the same flags gives a fix that starts", indent="      ",
                      first="")
    return Result("select", data, "\n".join(lines), EXIT_NO_BACKEND if startup else EXIT_OK)


def _reason_rows(rows: Sequence[tuple[str, str]], indent: str = "  ") -> list[str]:
    """name  reasons, the reasons wrapped under their column."""
    if not rows:
        return []
    w = max(len(n) for n, _ in rows)
    if w + len(indent) + 2 > WIDTH // 2:
        out: list[str] = []
        for name, text in rows:
            out += [indent + name] + wrap(text, indent=indent + "    ")
        return out
    out = []
    for name, text in rows:
        out += wrap(text, indent=indent + " " * (w + 2), first=f"{indent}{name:<{w}}  ")
    return out


def _fix_rows(fixes: Sequence[Any], style: Style, limit: int = 5) -> list[str]:
    """One fix per row, the text then the backend it gets; wrapped under its own column."""
    label = {"setting": "", "version": "  (vLLM version)", "hardware": "  (other hardware)",
             "model": "  (changes the model)"}
    rows = [(f.text, f"{style.arrow} {f.label}{label[f.kind]}") for f in fixes[:limit]]
    laid = table(rows, indent="  ", rule=False)
    if all(width(x) <= WIDTH for x in laid):
        return laid
    out: list[str] = []
    for a, b in rows:  # too wide for two columns: the backend on its own line under the fix
        out += wrap(a, indent="    ", first="  ") + wrap(b, indent="      ", first="    ")
    return out


def _lost_lines(c: Any, style: Style) -> list[str]:
    """One higher-priority backend that lost: reasons, the facts against it, the best fixes."""
    lines = wrap("; ".join(c.reasons), indent=" " * 4, first=f"  {c.backend}: ")
    because = f"because {_facts(c.conflict)}; " if c.conflict else ""
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


def cmd_explain(q: Query, style: Style) -> Result:
    from .advice import advise
    a = advise(q.context())
    e = a.explanation
    lines = wrap(describe_query(q), indent="          ", first="Query     ")
    for n in [*_env_line(q), *q.notes]:
        lines += wrap(n, indent="          ", first="Note      ")
    prefill = _prefill(q) if e.selected is not None else None
    lost = [c for c in e.candidates if not c.valid] if e.selected is None else \
        [c for c in e.candidates[: [c.backend for c in e.candidates].index(e.selected)]] \
        if e.selected in [c.backend for c in e.candidates] else []
    data: dict[str, Any] = {**a.to_dict(), "query": q.to_dict(), "error": e.message or None,
                            "prefill": None if prefill is None else prefill.to_dict(),
                            "rejected": [{"backend": c.backend, "reasons": list(c.reasons)} for c in lost]}
    if e.selected is not None:
        sel = e.selected + (f" ({e.variant})" if e.variant else "")
        order = [c.backend for c in e.candidates]
        pos = f"#{order.index(e.selected) + 1} of {len(order)}" if e.selected in order else ""
        tag = "requested" if e.requested else pos
        lines.append(f"Selected  {style.good(style.bold(sel))}" + (f"  ({tag})" if tag else ""))
        if prefill is not None:
            lines += wrap(f"{prefill}  (--role mla_prefill explains it)", indent="          ",
                          first="Prefill   ")
        if a.lost:
            lines += ["", "Higher-priority backends that lost:"]
            not_for_model: dict[str, list[str]] = {}
            for c in a.lost:
                if c.model_conflict:  # irrelevant for this model: one summary line, not a wall
                    not_for_model.setdefault(_facts(c.model_conflict), []).append(c.backend)
                    continue
                lines += _lost_lines(c, style)
            for key, names in not_for_model.items():
                lines += wrap(", ".join(names), indent=" " * 4, first=f"  not for this model ({key}): ")
        for w in e.warnings:
            lines += wrap(w, indent="          ", first="Warning   ")
        if a.startup_error:
            lines += [""] + wrap(f"vLLM refuses to start: {a.startup_error}", indent="          ",
                                 first="Start-up  ")
            if a.fixes:
                lines += ["", "Fixes that start, most direct first (each alone is enough):"]
                lines += _fix_rows(a.fixes, style)
        if a.hint:
            lines += [""] + wrap(f"hint: {a.hint}", indent="      ", first="")
        return Result("explain", data, "\n".join(lines), EXIT_NO_BACKEND if a.startup_error else EXIT_OK)
    # nothing fits (or the requested backend does not)
    lines.append(f"Requested {e.requested} does not fit:" if e.requested
                 else "No valid backend. Candidates in priority order:")
    lines += _reason_rows([(c.backend, "; ".join(c.reasons) or "valid") for c in e.candidates])
    shown = [c for c in a.conflicts if c]
    if shown:
        what = e.requested or "every backend"
        first = shown[0]
        lines += [""] + wrap(_facts(first) + (f"  (together these rule out {what})" if len(first) > 1
                                              else f"  (this alone rules out {what})"),
                              indent="          ", first="Conflict  ")
        seen = {_facts(first)}
        for other in shown[1:]:
            if _facts(other) in seen:
                continue
            seen.add(_facts(other))
            lines += wrap(_facts(other), indent="          ", first="   also   ")
            if len(seen) >= 3:
                break
    for w in e.warnings:
        lines += wrap(w, indent="          ", first="Warning   ")
    if a.fixes:
        lines += ["", "Fixes, most direct first (each alone is enough):"]
        lines += _fix_rows(a.fixes, style)
    lines += [""] + wrap(f"hint: {a.hint}", indent="      ", first="")
    others = other_releases_that_fit(q.config, q.role)
    data["other_releases"] = [o.to_dict() for o in others]
    for o in others:
        lines += wrap(f"vLLM {o.vllm} would select {o} for this configuration "
                      f"(attnsolve explain --vllm {o.vllm} ...)", indent="      ", first="note: ")
    return Result("explain", data, "\n".join(lines), EXIT_NO_BACKEND)


def other_releases_that_fit(config: Any, role: str | None) -> list[Any]:
    """The other supported vLLM releases whose selection succeeds for this configuration."""
    from .versions import in_release, outcome, vllm_versions
    out = []
    for v in vllm_versions():
        if v == config.vllm:
            continue
        try:
            o = outcome(in_release(config, v), role)
        except Exception:  # a field the other release reads differently, or a draft set that does not load
            continue
        if o.backend is not None and o.error is None:
            out.append(o)
    return out


def cmd_upgrade(q: Query, old: str, new: str, free: Sequence[str]) -> Result:
    from .config import ANY
    from .versions import compare_versions
    config = q.config.replace(**{f: ANY for f in free}) if free else q.config
    cmp = compare_versions(config, old, new, role=q.role)
    lines = wrap(describe_query(q, skip=tuple(free)), indent="          ", first="Query     ")
    for n in q.notes:
        lines += wrap(n, indent="          ", first="Note      ")
    for line in cmp.lines():
        lines += wrap(line, indent="      ")
    return Result("upgrade", {**cmp.to_dict(), "query": q.to_dict()}, "\n".join(lines), EXIT_OK)


def _over_values(rules: Any, name: str, values: list[str] | None) -> list[Any]:
    if values is not None:
        return values
    if name == "compute_capability":
        return list(rules.generations)
    if name in rules.domains:
        vals = list(rules.domains[name])
        return [None, *vals] if name in ("block_size", "flash_attn_version") else vals
    from .solver.domains import BOOLS, representatives
    if name in BOOLS:
        return [False, True]
    if name == "backend":
        return [None, *sorted(rules.backends)]
    reps = list(representatives(rules, name))
    return sorted(reps, key=lambda v: (v is not None, v if isinstance(v, (int, float)) else str(v)))


def parse_over(items: Sequence[str] | None) -> list[tuple[str, list[str] | None]]:
    from .config import FIELD_NAMES
    from .errors import ConfigError
    items = list(items or ["compute_capability,kv_cache_dtype"])
    out: list[tuple[str, list[str] | None]] = []
    names = list(FIELD_NAMES)
    for item in items:
        parts = [item] if "=" in item else [p for p in item.split(",") if p.strip()]
        for part in parts:
            name, _, vals = part.partition("=")
            key = name.strip().lstrip("-").replace("-", "_")
            if key == "gpu" and vals:  # GPU names: each brings its platform and compute capability
                from .gpus import resolve
                out.append(("gpu", [resolve(v.strip()) for v in vals.split(",") if v.strip()]))
                continue
            key = {"gpu": "compute_capability", "cc": "compute_capability", "attention_backend": "backend"}.get(key, key)
            if key not in names:
                raise ConfigError("over", name, names, suggestion=_closest(key, names))
            values = [v.strip() for v in vals.split(",") if v.strip()] if vals else None
            out.append((key, values))
    if len({k for k, _ in out}) != len(out):
        raise UsageError("a field appears twice in --over", hint="name each field once")
    return out


def cmd_coverage() -> Result:
    """`matrix --all`: the whole-space sweep's coverage report (holes and dead rules)."""
    from .coverage import coverage_report
    report = coverage_report(all_fields=True)
    return Result("matrix", report.to_dict(), _fit(str(report).rstrip("\n")) + "\n", EXIT_OK)


def _with_hardware(q: Query, base: Any, changes: Mapping[str, Any]) -> Any:
    """`base` with `changes`; a GPU name replaces the hardware, and a --model's dtype is resolved
    again for the new hardware (vLLM's --dtype auto depends on the GPU)."""
    from .config import Config
    changes = dict(changes)
    data = base.to_dict()
    if "gpu" in changes:
        data.update(platform=None, compute_capability=None, rocm_arch=None)
    data.update(changes)
    cfg = Config(**data)
    if q.model is not None and "dtype" not in q.user_fields and "dtype" not in changes and \
            {"gpu", "compute_capability", "platform", "rocm_arch"} & set(changes):
        from .modelconfig import resolve_dtype
        dtype, _ = resolve_dtype(q.model, str(cfg.platform), cfg.compute_capability)
        if dtype != cfg.dtype:
            cfg = Config(**{**cfg.to_dict(), "dtype": dtype, **({"gpu": changes["gpu"]} if "gpu" in changes else {})})
    return cfg


def cmd_matrix(q: Query, over: list[tuple[str, list[str] | None]], long: bool, style: Style,
               max_cells: int | None = None, progress: IO[str] | None = None) -> Result:
    import itertools
    from .errors import ConfigError, SelectionError
    from .rules import default_rules
    from .selection import solve
    rules = default_rules()
    names = [n for n, _ in over]
    value_lists = [_over_values(rules, n, v) for n, v in over]
    base = q.config
    rows: list[dict[str, Any]] = []
    rewritten: set[str] = set()
    from .cli_guards import DEFAULT_MAX_CELLS, check_cells, progress as _progress
    total = check_cells(names, value_lists, DEFAULT_MAX_CELLS if max_cells is None else max_cells)
    for combo in _progress(itertools.product(*value_lists), total, progress):
        changes = dict(zip(names, combo))
        cell: dict[str, Any] = {"values": {n: _show(v) for n, v in changes.items()}}
        try:
            if q.model is not None and "kv_cache_dtype" in changes:
                from .modelconfig import apply_model_rewrites
                fixed, notes = apply_model_rewrites(q.model, dict(changes))
                if notes:
                    cell["note"] = notes[0]
                    rewritten.add(str(changes["kv_cache_dtype"]))
                changes = fixed
            cfg = _with_hardware(q, base, changes)
            if "compute_capability" in changes and cfg.platform != "cuda":
                raise ConfigError("compute_capability", changes["compute_capability"], "platform cuda")
            sel = solve(cfg, role=q.role)
            cell.update(backend=sel.backend, variant=sel.variant, label=str(sel))
        except SelectionError as e:
            first = next((r[0] for r in e.reasons.values() if r), str(e))
            cell.update(backend=None, variant=None, label="-", reason=first)
        except ConfigError as e:
            if any(getattr(e, "field", None) == n for n in names) or "compute_capability" in names:
                cell.update(backend=None, variant=None, label="n/a", invalid=str(e))
            else:
                raise
        rows.append(cell)
    data = {"over": names, "rows": rows, "query": q.to_dict()}
    head = wrap(f"{describe_query(q, skip=names)}; over {', '.join(names)}", indent="  ")
    lines = head
    if len(names) == 2 and not long:
        lines += _grid(names, value_lists, rows, style)
    else:
        lines += [""] + table([[*(r["values"][n] for n in names), r["label"]] for r in rows], headers=[*names, "selected"])
    legend = []
    if any(r["label"] == "-" for r in rows):
        legend.append("- = no valid backend")
    if any(r["label"] == "n/a" for r in rows):
        legend.append("n/a = not a valid combination")
    if rewritten:
        legend.append(f"kv {', '.join(sorted(rewritten))} rewritten to fp8_ds_mla by the DeepSeek-V3.2 model "
                      "config, as vLLM does")
    if legend:
        lines += [""] + [x for item in legend for x in wrap(item)]
    code = EXIT_OK
    return Result("matrix", data, "\n".join(lines), code)


def _grid(names: list[str], value_lists: list[list[Any]], rows: list[dict[str, Any]], style: Style) -> list[str]:
    r_vals, c_vals = [_show(v) for v in value_lists[0]], [_show(v) for v in value_lists[1]]
    cells = {(r["values"][names[0]], r["values"][names[1]]): r["label"] for r in rows}

    def grid_lines(code: Callable[[str], str]) -> list[str]:
        body = [[rv, *(code(cells.get((rv, cv), "")) for cv in c_vals)] for rv in r_vals]
        return table(body, headers=[names[0], *c_vals])

    full = grid_lines(lambda s: s)
    if max(len(x) for x in full) <= WIDTH:
        return [""] + full
    seen: dict[str, str] = {}
    for r in rows:
        if r["label"] not in ("-", "n/a") and r["label"] not in seen:
            seen[r["label"]] = chr(ord("A") + len(seen)) if len(seen) < 26 else str(len(seen))
    out = [""] + grid_lines(lambda s: seen.get(s, s))
    out += [""] + [f"  {k} = {v}" for v, k in seen.items()]
    return out


def cmd_backends(platform: str | None, runnable: bool, style: Style, version: str | None = None) -> Result:
    from .docs import backend_rows
    from .rules import rules_for
    rows = backend_rows(platform, rules_for(version) if version else None)
    here: set[str] | None = None
    devices: list[str] = []
    if runnable:
        import importlib.util
        if importlib.util.find_spec("torch") is not None:
            try:
                from .kernels.registry import devices as kernel_devices, runnable_backends
                devices = kernel_devices()
                here = set()
                for d in devices:
                    here |= set(runnable_backends(d))
            except Exception:  # noqa: BLE001 - the column is optional
                here = None
    lines: list[str] = []
    for section in ("standard", "MLA decode", "MLA prefill"):
        part = [r for r in rows if r["kind"] == section]
        if not part:
            continue
        lines += ["", style.bold(f"{section} backends")]
        for r in part:
            if here is not None:
                r["runnable_here"] = r["name"] in here
            run = "" if here is None else ("runnable here: " + (style.yes if r["name"] in here else style.no))
            lines.append(f"  {r['name']:<24}{', '.join(r['platforms']):<12}{run}".rstrip())
            lines += wrap(r["priority_text"], indent=" " * 16, first="      priority: ")
            lines += wrap(r["summary"], indent=" " * 6)
    if here is not None:
        lines += ["", f"runnable here = a registered kernel runs on this machine ({', '.join(devices)})"]
    data = {"backends": rows, "runnable_checked": here is not None, "devices": devices}
    return Result("backends", data, "\n".join(lines[1:] if lines and lines[0] == "" else lines), EXIT_OK)


def cmd_docs(check: bool, output: str, version: str | None = None) -> Result:
    """Write or check the generated document; the result always has path, up_to_date, changed, diff."""
    from .docs import check_doc, generate_doc, write_doc
    from .rules import override, rules_for
    rules = override() or (rules_for(version) if version else None)
    if output == "-":
        text = generate_doc(rules)
        return Result("docs", {"path": None, "up_to_date": None, "changed": None, "diff": None},
                      text.rstrip("\n"), EXIT_OK)
    if check:
        diff = check_doc(output, rules)
        if diff:
            text = diff.rstrip("\n") + f"\n\n{output} is out of date; run 'attnsolve docs' to regenerate it."
            return Result("docs", {"path": output, "up_to_date": False, "changed": None, "diff": diff}, text,
                          EXIT_NO_BACKEND)
        return Result("docs", {"path": output, "up_to_date": True, "changed": None, "diff": None},
                      f"{output} is up to date.", EXIT_OK)
    changed = write_doc(output, rules)
    return Result("docs", {"path": output, "up_to_date": True, "changed": changed, "diff": None},
                  f"{'wrote' if changed else 'unchanged:'} {output}", EXIT_OK)


# ---------------------------------------------------------------------------------------------
# The outer function: parse, run, print, map errors to exit codes


def _config_error_lines(e: Any) -> list[str]:
    field_ = str(getattr(e, "field", ""))
    if field_.startswith(("model", "/")) or ":" in field_ or getattr(e, "hint", None):
        return UsageError(str(e), hint=getattr(e, "hint", None) or "fix the file or drop --model").lines()
    flag = FLAG_OF.get(field_, "--" + field_.replace("_", "-"))
    value = e.value
    shown = value if isinstance(value, str) else _show(value)
    msg = str(e)
    for cut in (" Did you mean",):
        if cut in msg:
            msg = msg[: msg.index(cut)]
    details = []
    if msg.startswith(f"Invalid {field_}:"):
        acc = e.accepted
        details.append("accepted: " + (acc if isinstance(acc, str) else ", ".join(_show(a) for a in acc)))
    else:
        details.append(msg)
    hint = None
    if e.suggestion is not None:
        hint = f"did you mean {flag} {e.suggestion}?"
    return UsageError(f"invalid {flag} {shown!r}", details, hint).lines()


def _verb_select(ns: argparse.Namespace, style: Style) -> Result:
    return cmd_select(build_query(ns), style)


def _verb_explain(ns: argparse.Namespace, style: Style) -> Result:
    return cmd_explain(build_query(ns), style)


def _verb_matrix(ns: argparse.Namespace, style: Style) -> Result:
    if getattr(ns, "all_space", False):
        return cmd_coverage()
    from . import cli_guards as guards
    over = parse_over(ns.over or guards.default_over(guards.platform_hint(ns)))
    ns.over_values = {n: v[0] for n, v in over if v}
    q = build_query(ns, need_hardware=False, free=[n for n, _ in over])
    guards.check_over_platform([n for n, _ in over], q.config.platform)
    return cmd_matrix(q, over, ns.long, style, max_cells=guards.max_cells(ns.max_cells), progress=getattr(ns, "stderr", None))


# Model facts left free by `upgrade` when neither a flag nor --model gives them.
UPGRADE_FREE = ("dtype", "head_size", "kv_cache_dtype", "use_mla", "has_sink")


def _verb_upgrade(ns: argparse.Namespace, style: Style) -> Result:
    from .config import parse_vllm
    from .rules import versions
    old = parse_vllm(ns.from_version)
    new = parse_vllm(ns.to_version) if ns.to_version else versions()[-1]
    ns.vllm = new
    q = build_query(ns)
    given = set(q.user_fields) | (set(q.model.fields) if q.model is not None else set())
    free = () if q.model is not None else tuple(f for f in UPGRADE_FREE if f not in given)
    return cmd_upgrade(q, old, new, free)


def _verb_backends(ns: argparse.Namespace, style: Style) -> Result:
    platform = ns.platform
    if platform is not None:
        from .config import Config
        platform = Config(platform=platform, dtype="bfloat16",
                          compute_capability="9.0" if str(platform).lower() in ("cuda", "gpu", "nvidia")
                          else None).platform
    from .config import parse_vllm
    return cmd_backends(platform, not ns.no_runnable, style, parse_vllm(ns.vllm))


def _verb_docs(ns: argparse.Namespace, style: Style) -> Result:
    from .cli_guards import check_docs_output
    from .config import parse_vllm
    from .docs import doc_path
    version = parse_vllm(ns.vllm)
    output = ns.output if ns.output is not None else doc_path(version)
    check_docs_output(output, ns.check)
    return cmd_docs(ns.check, output, version)


# Each verb: parsed flags -> a frozen Result (data, text, exit code).
VERBS: dict[str, Callable[[argparse.Namespace, Style], Result]] = {
    "select": _verb_select, "explain": _verb_explain, "matrix": _verb_matrix, "backends": _verb_backends,
    "docs": _verb_docs, "upgrade": _verb_upgrade,
}


def run(argv: Sequence[str], stdout: IO[str], stderr: IO[str]) -> int:
    from .errors import ConfigError
    style = Style.for_stream(stdout)
    try:
        ns = parse_args(argv)
        if ns.version:
            from . import __version__
            stdout.write(f"attnsolve {__version__}\n")
            return EXIT_OK
        if ns.command is None:
            stderr.write(build_parser().format_help())
            _json_error(argv, stdout, {"message": "no command given", "details": [f"commands: {', '.join(COMMANDS)}"],
                                       "hint": f"run '{PROG} --help'"})
            return EXIT_BAD_INPUT
        as_json = bool(getattr(ns, "json", False) or ns.json_top)
        ns.stderr = stderr  # matrix reports progress on long sweeps there
        result = VERBS[ns.command](ns, style)
        if as_json:
            import json
            _emit(stdout, json.dumps(result.envelope(), indent=2, sort_keys=False, default=_json_default) + "\n")
        else:
            _emit(stdout, result.text + "\n")
        return result.exit_code
    except UsageError as e:
        stderr.write("\n".join(e.lines()) + "\n")
        _json_error(argv, stdout, {"message": e.message, "details": list(e.details), "hint": e.hint})
        return EXIT_BAD_INPUT
    except ConfigError as e:
        stderr.write("\n".join(_config_error_lines(e)) + "\n")
        flag = FLAG_OF.get(str(e.field), None)
        accepted = e.accepted if isinstance(e.accepted, str) else [_show(a) for a in e.accepted]
        _json_error(argv, stdout, {"message": str(e), "field": str(e.field), "flag": flag,
                                   "value": e.value if isinstance(e.value, (str, int, float, bool, type(None)))
                                   else str(e.value), "accepted": accepted, "suggestion": e.suggestion})
        return EXIT_BAD_INPUT
    except SystemExit as e:  # argparse --help
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_BAD_INPUT)
        return code
    except BrokenPipeError:  # `attnsolve ... | head`: stop quietly, and keep Python's exit flush quiet too
        import os
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_OK
    except KeyboardInterrupt:
        stderr.write(f"{PROG}: interrupted\n")
        return ExitCode.INTERRUPTED
    except Exception as e:  # noqa: BLE001 - never a traceback; say it is our bug
        from .rules import RulesError
        if isinstance(e, RulesError):
            stderr.write(f"{PROG}: error: the rules are invalid\n{e}\n")
            return EXIT_BAD_INPUT
        stderr.write(f"{PROG}: internal error: {type(e).__name__}: {e}\n"
                     "  this is a bug in attnsolve; please report it with the command line\n")
        return ExitCode.INTERNAL


def _emit(stream: IO[str], text: str) -> None:
    """Write text; characters the stream's encoding lacks become escapes instead of an error."""
    try:
        stream.write(text)
    except UnicodeEncodeError:
        enc = getattr(stream, "encoding", None) or "ascii"
        stream.write(text.encode(enc, "backslashreplace").decode(enc))


def _json_error(argv: Sequence[str], stdout: IO[str], error: dict[str, Any]) -> None:
    """With --json, bad input also gets an envelope on stdout (exit_code 2, `error` instead of `result`)."""
    if "--json" not in argv:
        return
    import json
    command = next((a for a in argv if a in COMMANDS), None)
    env = {"schema": SCHEMA, "command": command, "exit_code": EXIT_BAD_INPUT, "error": error}
    stdout.write(json.dumps(env, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: `attnsolve ...`; returns the exit code (tests call it in-process)."""
    return run(sys.argv[1:] if argv is None else argv, sys.stdout, sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
