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
from .render import WIDTH, Style, table, wrap

SCHEMA = "attnsolve/1"
EXIT_OK = ExitCode.OK
EXIT_NO_BACKEND = ExitCode.NO_BACKEND
EXIT_BAD_INPUT = ExitCode.BAD_INPUT
COMMANDS = ("select", "explain", "backends", "matrix", "docs")
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
    Flag("gpu", ("--gpu",), "NAME", "GPU name, e.g. H100, B200, RTX 5090, MI300X, CPU (sets platform and compute capability)"),
    Flag("platform", ("--platform",), "NAME", "cuda, rocm or cpu"),
    Flag("compute_capability", ("--compute-capability", "--cc"), "X.Y", "CUDA compute capability, e.g. 9.0, 10.0, 12.0"),
    Flag("rocm_arch", ("--rocm-arch",), "GFX", "ROCm gfx arch, e.g. gfx942 (default on rocm)"),
    # model
    Flag("dtype", ("--dtype",), "DTYPE", "model dtype: float16, bfloat16, float32 (default: the model's, else bfloat16)"),
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
)
FLAG_OF: dict[str, str] = {f.field: f.names[0] for f in FLAGS}
FLAG_OF.update({"role": "--role", "model": "--model", "tensor_parallel_size": "--tensor-parallel-size",
                "over": "--over"})
_GROUPS = (("hardware", 0, 4), ("model (--model fills these from config.json)", 4, 16),
           ("KV cache and backend", 16, 19), ("switches (vLLM --attention-config.* / environment)", 19, len(FLAGS)))


class _Parser(argparse.ArgumentParser):
    """argparse with errors raised (exit 2 by main) instead of printed-and-exited."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(message, hint=f"usage: {self.format_usage().strip().removeprefix('usage: ')}")


def _add_query_flags(p: argparse.ArgumentParser) -> None:
    for title, lo, hi in _GROUPS:
        g = p.add_argument_group(title)
        for f in FLAGS[lo:hi]:
            if f.boolean:
                g.add_argument(*f.names, dest=f.field, metavar=f.metavar, nargs="?", const="true", default=None,
                               help=f.help + " (bare flag = true)")
            else:
                g.add_argument(*f.names, dest=f.field, metavar=f.metavar, default=None, help=f.help)
        if lo == 4:
            g.add_argument("--model", metavar="PATH", help="Hugging Face config.json (or its directory): "
                           "derives head size, heads, MLA, sparse, sinks, dtype")
            g.add_argument("--tensor-parallel-size", "-tp", dest="tensor_parallel_size", metavar="N", default=None,
                           help="tensor-parallel size: heads per GPU = num heads / N (default 1)")
    p.add_argument("--from-env", action="store_true",
                   help="also read vLLM's environment switches (VLLM_ATTENTION_BACKEND, VLLM_FLASH_ATTN_VERSION, "
                        "VLLM_ROCM_USE_AITER*, ...); flags win")
    p.add_argument("--role", metavar="ROLE", default=None,
                   help="decode (default; MLA decode for MLA models) or mla_prefill")


_parser_cache: dict[str | None, argparse.ArgumentParser] = {}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s sub-parser gets its (many) flags, which keeps start-up short."""
    if command in _parser_cache:
        return _parser_cache[command]
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
    p = sub.add_parser("backends", parents=[common], help="all backends: platform, role, priority, capabilities",
                       allow_abbrev=False, description="Every backend with its platform, role, priority position "
                       "per GPU generation and a one-line summary.")
    p.add_argument("--platform", metavar="NAME", default=None, help="only this platform (cuda, rocm, cpu)")
    p.add_argument("--no-runnable", action="store_true", help="skip the 'runnable here' column (needs torch)")
    p = sub.add_parser("docs", parents=[common], help="generate docs/attention_backends.md (--check: compare)",
                       allow_abbrev=False, description="Write the backend capability document generated from "
                       "the rules; --check exits 1 with a diff when the file differs.")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 with a unified diff on drift")
    p.add_argument("--output", "-o", metavar="PATH", default="docs/attention_backends.md",
                   help="file to write or check (default docs/attention_backends.md; '-' for stdout)")
    _parser_cache[command] = top
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
    argv = list(argv)
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
# The query: flags (+ model config) -> Config


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

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(only_changed=True), "role": self.role, "gpu": self.gpu,
                "tensor_parallel_size": self.tensor_parallel_size, "model": None if self.model is None else self.model.path,
                "notes": list(self.notes), "defaulted": list(self.defaulted)}


def _int_flag(name: str, value: Any) -> int:
    from .config import _as_int
    return _as_int(name, value, optional=False)


def build_query(ns: argparse.Namespace, *, need_hardware: bool = True, free: Sequence[str] = ()) -> Query:
    """Flags and --model into a validated Config (ConfigError / UsageError on bad input)."""
    from .config import Config
    from .errors import ConfigError
    fields: dict[str, Any] = {}
    notes: list[str] = []
    model = None
    if getattr(ns, "model", None):
        from .modelconfig import read_model_config
        model = read_model_config(ns.model)
        fields.update(model.fields)
        notes += [f"model {model.path}: {n}" for n in model.notes]
    env_fields: dict[str, str] = {}
    if getattr(ns, "from_env", False):
        import os
        from .config import _ENV_VARS
        for var, name in _ENV_VARS.items():
            if os.environ.get(var, "") != "":
                fields[name] = os.environ[var]
                env_fields[var] = name
                notes.append(f"from the environment: {var}={os.environ[var]}")
    explicit = {f.field: getattr(ns, f.field) for f in FLAGS if getattr(ns, f.field, None) is not None}
    fields.update(explicit)
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
        if need_hardware or "compute_capability" not in free:
            raise UsageError("no hardware given", ["the backend depends on the GPU: give --gpu NAME "
                             "(e.g. H100, B200, RTX 5090, MI300X, CPU) or --platform cuda --compute-capability 9.0"],
                             hint="e.g. --gpu H100")
    if "dtype" not in fields:
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
    if "compute_capability" in free:  # matrix over GPU generations: any CUDA GPU stands in for the base
        from .rules import default_rules
        if not (hardware & set(fields)):
            fields.update(platform="cuda", compute_capability=next(iter(default_rules().generations)))
    try:
        config = Config(**fields)
    except ConfigError as e:  # name the source of the bad value: flag, model file key or environment variable
        from .cli_guards import blame, sources
        raise blame(e, sources(model, env_fields, explicit)) from None
    return Query(config=config, role=role, notes=tuple(notes), model=model,
                 gpu=fields.get("gpu") if isinstance(fields.get("gpu"), str) else None,
                 tensor_parallel_size=tp, total_heads=total, defaulted=tuple(defaulted))


# ---------------------------------------------------------------------------------------------
# Describing a query and a fix in the user's own terms (flags, GPU names)


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
    hw = "CUDA" if "compute_capability" in skip else describe_hardware(q)
    parts = [hw, c.dtype + (" (default)" if "dtype" in q.defaulted else "")]
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
    shown = {"platform", "dtype", "compute_capability", "rocm_arch", "use_mla", "use_sparse", "head_size", "num_heads",
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


def _gpu_names(cc: str, limit: int = 2) -> list[str]:
    from .rules import default_rules
    return [n for n, g in default_rules().gpus.items() if str(g.get("compute_capability")) == cc][:limit]


def change_text(q: Query, name: str, value: Any) -> str:
    """One change as the flag the user would type."""
    flag = FLAG_OF.get(name, "--" + name.replace("_", "-"))
    if name == "backend" and value is None:
        return "drop --attention-backend (automatic selection)"
    if name == "compute_capability":
        cc = _show(value)
        gpus = _gpu_names(cc)
        if q.gpu and gpus:
            return f"--gpu {gpus[0]} (SM {cc})"
        return f"--compute-capability {cc}" + (f" (e.g. {', '.join(gpus)})" if gpus else "")
    if name == "num_heads" and isinstance(value, int):
        if q.total_heads and q.total_heads % value == 0 and q.total_heads // value > 1:
            return f"--tensor-parallel-size {q.total_heads // value} ({value} heads/GPU)"
        return f"--num-heads {value * q.tensor_parallel_size}"
    if value is None:
        return f"drop {flag}"
    return f"{flag} {_show(value)}"


def fix_text(q: Query, changes: Mapping[str, Any]) -> str:
    return " ".join(change_text(q, k, v) for k, v in changes.items())


# ---------------------------------------------------------------------------------------------
# Verbs


def cmd_select(q: Query, style: Style) -> Result:
    from .errors import InvalidBackendError, SelectionError
    from .selection import solve
    try:
        sel = solve(q.config, role=q.role)
    except SelectionError as e:
        head = (f"{e.backend} (requested) does not fit {describe_query(q)}" if isinstance(e, InvalidBackendError)
                else f"No valid attention backend for {describe_query(q)}")
        lines = wrap(head + ":") + _reason_rows([(b, "; ".join(r) or "-") for b, r in e.reasons.items()])
        for n in q.notes:
            lines += wrap(n, indent="    ", first="note: ")
        lines.append("hint: 'attnsolve explain' with the same flags gives the conflict and the fix")
        data = {"selected": None, "requested": getattr(e, "backend", None), "error": str(e),
                "reasons": {b: list(r) for b, r in e.reasons.items()}, "query": q.to_dict()}
        return Result("select", data, "\n".join(lines), EXIT_NO_BACKEND)
    lines = [style.bold(str(sel)) + ("  (requested)" if sel.manual and q.config.backend else "")]
    if sel.rejected:
        groups: dict[tuple[str, ...], list[str]] = {}  # backends that lost for the same reasons: one line
        for r in sel.rejected:
            groups.setdefault(r.reasons, []).append(r.backend)
        for reasons, names in groups.items():
            lines += wrap(f"{', '.join(names)}: {'; '.join(reasons)}", indent="      ", first="  not ")
    data = {**sel.to_dict(), "query": q.to_dict()}
    prefill = _prefill(q)
    if prefill is not None:
        data["prefill"] = prefill.to_dict()
        lines.append(f"  prefill: {prefill} (MLA prefill backend)")
    for w in sel.warnings:
        lines += wrap(w, indent="    ", first="  warning: ")
    for n in q.notes:
        lines += wrap(n, indent="    ", first="  note: ")
    return Result("select", data, "\n".join(lines), EXIT_OK)


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


# vLLM serving flags the explanation layer counts as model facts: the user sets them at launch
# (--dtype casts the weights; heads per GPU follow --tensor-parallel-size).
_LAUNCH_SETTINGS = frozenset({"dtype", "num_heads"})


def _field_kind(name: str) -> str:
    from .explain import category
    return "setting" if name in _LAUNCH_SETTINGS else {"tunable": "setting"}.get(category(name), category(name))


def _fix_kind(changes: Mapping[str, Any]) -> str:
    """'setting' (serving flags or the requested backend), 'hardware' (touches the GPU) or 'model'."""
    kinds = {_field_kind(f) for f in changes if f != "backend"}
    if "hardware" in kinds:
        return "hardware"
    return "model" if "model" in kinds else "setting"


def _sorted_fixes(fixes: Sequence[Any]) -> list[Any]:
    order = {"setting": 0, "hardware": 1, "model": 2}
    return sorted(fixes, key=lambda f: order[_fix_kind(f.changes)])


def _why_lost(q: Query, backend: str) -> dict[str, Any]:
    """For one higher-priority backend that lost: its minimal conflict and its smallest fixes by kind."""
    from .explain import explain
    try:
        e = explain(q.config.replace(backend=backend), role=q.role)
    except Exception:  # noqa: BLE001 - a best-effort hint, never fatal
        return {"conflict": {}, "fixes": [], "hardware_only": False}
    fixes = [f for f in _sorted_fixes(e.fixes) if "backend" not in f.changes]
    model_only = next((dict(c) for c in e.conflicts if c and all(_field_kind(f) == "model" for f in c)), None)
    return {"conflict": dict(e.conflict), "hardware_only": e.hardware_only, "model_conflict": model_only,
            "fixes": [{**f.to_dict(), "kind": _fix_kind(f.changes)} for f in fixes]}


def _reason_rows(rows: Sequence[tuple[str, str]], indent: str = "  ") -> list[str]:
    """name  reasons, the reasons wrapped under their column."""
    if not rows:
        return []
    w = max(len(n) for n, _ in rows)
    out: list[str] = []
    for name, text in rows:
        out += wrap(text, indent=indent + " " * (w + 2), first=f"{indent}{name:<{w}}  ")
    return out


def _with(q: Query, changes: Mapping[str, Any]) -> str:
    """Changes read after 'runs with': 'no --block-size and --gpu H100 (SM 9.0)'."""
    return " and ".join(change_text(q, k, v).replace("drop ", "no ", 1) for k, v in changes.items())


def _model_change_text(q: Query, changes: Mapping[str, Any]) -> str:
    """'a model with has_sink=false (and --kv-cache-dtype bfloat16)': model facts, then flags."""
    model = {k: v for k, v in changes.items() if _field_kind(k) == "model"}
    rest = {k: v for k, v in changes.items() if k not in model}
    text = "a model with " + ", ".join(f"{k}={_show(v)}" for k, v in model.items())
    return text + (f" (and {fix_text(q, rest)})" if rest else "")


def _lost_lines(q: Query, c: Any, why: Mapping[str, Any]) -> tuple[list[str], str | None]:
    lines = wrap("; ".join(c.reasons), indent=" " * 4, first=f"  {c.backend}: ")
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for f in why["fixes"]:
        by_kind.setdefault(f["kind"], []).append(f)
    hint = None
    cause = ", ".join(f"{k}={_show(v)}" for k, v in why["conflict"].items())
    because = f"because {cause}; " if cause else ""
    if "setting" in by_kind and not why["hardware_only"]:
        text = fix_text(q, by_kind["setting"][0]["changes"])
        lines += wrap(f"{because}fix: {text}", indent=" " * 6, first="    ")
        hint = f"{text} gets {c.backend}"
    else:
        parts = []
        if "hardware" in by_kind:
            parts.append(_with(q, by_kind["hardware"][0]["changes"]))
        if "model" in by_kind and not why["hardware_only"]:
            parts.append(_model_change_text(q, by_kind["model"][0]["changes"]))
        what = "impossible on this GPU" if why["hardware_only"] or "hardware" in by_kind else \
            "no setting helps with this model"
        lines += wrap(because + what + ("; runs with " + ", or ".join(parts) if parts else ""), indent=" " * 6,
                      first="    ")
    return lines, hint


def cmd_explain(q: Query, style: Style) -> Result:
    from .explain import explain
    e = explain(q.config, role=q.role)
    lines = wrap(describe_query(q), indent="          ", first="Query     ")
    for n in q.notes:
        lines += wrap(n, indent="          ", first="Note      ")
    data: dict[str, Any] = {**e.to_dict(), "query": q.to_dict(), "lost": []}
    if e.selected is not None:
        sel = e.selected + (f" ({e.variant})" if e.variant else "")
        order = [c.backend for c in e.candidates]
        pos = f"#{order.index(e.selected) + 1} of {len(order)}" if e.selected in order else ""
        tag = "requested" if e.requested else pos
        lines.append(f"Selected  {style.good(style.bold(sel))}" + (f"  ({tag})" if tag else ""))
        prefill = _prefill(q)
        if prefill is not None:
            data["prefill"] = prefill.to_dict()
            lines.append(f"Prefill   {prefill}  (MLA prefill; --role mla_prefill explains it)")
        before = []
        for c in e.candidates:
            if c.backend == e.selected:
                break
            before.append(c)
        hints: list[str] = []
        if before:
            lines += ["", "Higher-priority backends that lost:"]
            not_for_model: dict[str, list[str]] = {}
            for c in before:
                why = _why_lost(q, c.backend)
                data["lost"].append({"backend": c.backend, "reasons": list(c.reasons), **why})
                if why.get("model_conflict"):  # irrelevant for this model: one summary line, not a wall
                    key = ", ".join(f"{k}={_show(v)}" for k, v in why["model_conflict"].items())
                    not_for_model.setdefault(key, []).append(c.backend)
                    continue
                more, hint = _lost_lines(q, c, why)
                lines += more
                if hint:
                    hints.append(hint)
            for key, names in not_for_model.items():
                lines += wrap(", ".join(names), indent=" " * 4, first=f"  not for this model ({key}): ")
        for w in e.warnings:
            lines += wrap(w, indent="          ", first="Warning   ")
        if before:
            lines.append("")
            lines += wrap(f"hint: {hints[0]}" if hints else
                          f"hint: {sel} is the best this GPU offers for this configuration; "
                          "no setting gets a higher-priority backend", indent="      ", first="")
        return Result("explain", data, "\n".join(lines), EXIT_OK)
    # nothing fits (or the requested backend does not)
    lines.append(f"Requested {e.requested} does not fit:" if e.requested
                 else "No valid backend. Candidates in priority order:")
    lines += _reason_rows([(c.backend, "; ".join(c.reasons) or "valid") for c in e.candidates])
    if e.conflict:
        lines += [""] + wrap(", ".join(f"{k}={_show(v)}" for k, v in e.conflict.items())
                              + ("  (together these rule out " + (e.requested or "every backend") + ")"
                                 if len(e.conflict) > 1 else "  (this alone rules out "
                                 + (e.requested or "every backend") + ")"),
                              indent="          ", first="Conflict  ")
        for other in e.conflicts[1:3]:
            lines += wrap(", ".join(f"{k}={_show(v)}" for k, v in other.items()), indent="          ",
                          first="   also   ")
    for w in e.warnings:
        lines += wrap(w, indent="          ", first="Warning   ")
    fixes = _sorted_fixes(e.fixes)
    data["fixes"] = [{**f.to_dict(), "kind": _fix_kind(f.changes)} for f in fixes]
    if fixes:
        lines += ["", "Smallest fixes (each alone is enough):"]
        label = {"setting": "", "hardware": "  (other hardware)", "model": "  (changes the model)"}
        rows = [(fix_text(q, f.changes), f"{style.arrow} {f.selects}{label[_fix_kind(f.changes)]}") for f in fixes[:5]]
        laid = table(rows, indent="  ")
        if max(len(x) for x in laid) > WIDTH:
            laid = [x for a, b in rows for x in wrap(f"{a}  {b}", indent="      ", first="  ")]
        lines += laid
    settings = [f for f in fixes if _fix_kind(f.changes) == "setting"]
    hardware = [f for f in fixes if _fix_kind(f.changes) == "hardware"]
    lines.append("")
    what = e.requested or "any backend"
    if settings:
        lines += wrap(f"hint: {fix_text(q, settings[0].changes)}", indent="      ", first="")
    elif e.hardware_only or hardware:
        where = f"; e.g. {fix_text(q, hardware[0].changes)} {style.arrow} {hardware[0].selects}" if hardware else ""
        model = " for this model" if any(_fix_kind(f.changes) == "model" for f in fixes) else ""
        lines += wrap(f"hint: only other hardware helps: no setting makes {what} valid on "
                      f"{describe_hardware(q)}{model}{where}", indent="      ", first="")
    elif fixes:
        lines += wrap(f"hint: no setting helps with this model; {fix_text(q, fixes[0].changes)}", indent="      ", first="")
    else:
        lines += wrap("hint: no change of one to three fields helps; see the reasons above", indent="      ", first="")
    return Result("explain", data, "\n".join(lines), EXIT_NO_BACKEND)


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
    return Result("matrix", report.to_dict(), str(report).rstrip("\n") + "\n", EXIT_OK)


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
            cfg = base.replace(**changes)
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


def cmd_backends(platform: str | None, runnable: bool, style: Style) -> Result:
    from .docs import backend_rows
    rows = backend_rows(platform)
    here: set[str] | None = None
    devices: list[str] = []
    if runnable:
        import importlib.util
        if importlib.util.find_spec("torch") is not None:
            try:
                from .kernels.registry import runnable_backends
                import torch  # noqa: F401 - only to ask for CUDA
                devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
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


def cmd_docs(check: bool, output: str) -> Result:
    from .docs import check_doc, generate_doc, write_doc
    if output == "-":
        text = generate_doc()
        return Result("docs", {"written": None, "changed": None}, text.rstrip("\n"), EXIT_OK)
    if check:
        diff = check_doc(output)
        if diff:
            text = diff.rstrip("\n") + f"\n\n{output} is out of date; run 'attnsolve docs' to regenerate it."
            return Result("docs", {"path": output, "up_to_date": False, "diff": diff}, text, EXIT_NO_BACKEND)
        return Result("docs", {"path": output, "up_to_date": True}, f"{output} is up to date.", EXIT_OK)
    changed = write_doc(output)
    return Result("docs", {"path": output, "changed": changed},
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
        if ns.command in ("select", "explain"):
            q = build_query(ns)
            result = (cmd_select if ns.command == "select" else cmd_explain)(q, style)
        elif ns.command == "matrix" and getattr(ns, "all_space", False):
            result = cmd_coverage()
        elif ns.command == "matrix":
            from . import cli_guards as guards
            over = parse_over(ns.over or guards.default_over(guards.platform_hint(ns)))
            q = build_query(ns, need_hardware=False, free=[n for n, _ in over])
            guards.check_over_platform([n for n, _ in over], q.config.platform)
            result = cmd_matrix(q, over, ns.long, style, max_cells=guards.max_cells(ns.max_cells), progress=stderr)
        elif ns.command == "backends":
            if ns.platform is not None:
                from .config import Config
                ns.platform = Config(platform=ns.platform, dtype="bfloat16",
                                     compute_capability="9.0" if str(ns.platform).lower() in ("cuda", "gpu", "nvidia")
                                     else None).platform
            result = cmd_backends(ns.platform, not ns.no_runnable, style)
        else:
            from .cli_guards import check_docs_output
            check_docs_output(ns.output, ns.check)
            result = cmd_docs(ns.check, ns.output)
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
