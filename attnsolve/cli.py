"""`attnsolve`: which attention backend vLLM picks, why not the others, and the smallest fix.

This module declares the flags, parses them and prints; each verb is a function in
attnsolve/verbs.py (dispatched from its VERBS table) returning a frozen `Result` (data, text, exit
code), printed as text or, with --json, as a versioned envelope
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
from typing import IO, Any, Sequence

from .exitcodes import ExitCode
from .query import PROG, UsageError
from .render import WIDTH, Style
from .render import fit as _fit
from .render import show as _show
from .verbs import SCHEMA, Result  # noqa: F401 - re-exported

EXIT_OK = ExitCode.OK
EXIT_NO_BACKEND = ExitCode.NO_BACKEND
EXIT_BAD_INPUT = ExitCode.BAD_INPUT
COMMANDS = ("select", "explain", "backends", "matrix", "docs", "upgrade")


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
         "FlashAttention version 2 or 3 (default: vLLM's per-GPU choice)"),
    Flag("use_trtllm_attention", ("--use-trtllm-attention", _AC + "use_trtllm_attention", "-ac.use_trtllm_attention"),
         "BOOL", "FlashInfer TRT-LLM kernels (default auto)", boolean=True),
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
                "backend_per_kind": "--backend-per-kind",
                "over": "--over"})
_GROUPS = (("hardware", 0, 4), ("model (--model fills these from config.json)", 4, 16),
           ("KV cache and backend", 16, 19), ("switches (vLLM --attention-config.* / environment)", 19, len(FLAGS) - 1),
           ("vLLM release", len(FLAGS) - 1, len(FLAGS)))


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
                        # argparse formats help with %: a rule's text is data, so its % are escaped
                        (text + (f" ({'; '.join(extra)})" if extra else "")).replace("%", "%%"),
                        boolean=decl.kind in ("bool", "tristate")))
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
        if lo == 16:  # vLLM 0.26's per-KV-cache-group requests: resolved into this layer's request (per_kind.py)
            g.add_argument("--backend-per-kind", _AC + "backend_per_kind", "-ac.backend_per_kind",
                           dest="backend_per_kind", metavar="MAP", default=None,
                           help='per-KV-cache-group requests (vLLM >= 0.26), a JSON object such as '
                                '{"sliding_window": "TRITON_ATTN"} or kind=BACKEND[,kind=BACKEND]: the entry for '
                                "this layer's kind replaces --attention-backend")
        if lo == 4:
            g.add_argument("--model", metavar="PATH", help="Hugging Face config.json, its directory, or a repo id "
                           "(e.g. deepseek-ai/DeepSeek-V3) in the local Hugging Face cache: derives head size, "
                           "heads, MLA, sparse, sinks, attention type, dtype")
            g.add_argument("--tensor-parallel-size", "-tp", dest="tensor_parallel_size", metavar="N", default=None,
                           help="tensor-parallel size: heads per GPU = num heads / N (default 1)")
    p.add_argument("--no-env", action="store_true",
                   help="ignore vLLM's environment switches (VLLM_ROCM_USE_AITER*, VLLM_BATCH_INVARIANT, ... as the "
                        "release reads them); by default they are read as vLLM reads them, flags win")
    p.add_argument("--from-env", action="store_true", help=argparse.SUPPRESS)  # the default now; kept working
    p.add_argument("--role", metavar="ROLE", default=None,
                   help="decode (default; MLA decode for MLA models) or mla_prefill")


_parser_cache: dict[tuple[str | None, int], argparse.ArgumentParser] = {}


_QUERY_VERBS = ("select", "explain", "matrix", "upgrade")  # the verbs whose sub-parser takes the query flags


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s sub-parser gets its (many) flags, which keeps start-up short."""
    # only the query verbs' flags come from the rules: --help and the other verbs build without loading a
    # rule set (loading 0.33's took ~70 of --help's ~150 ms)
    key = (command, id(query_rules()) if command in _QUERY_VERBS else None)
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
# The outer function: parse, run the verb (attnsolve/verbs.py), print, map errors to exit codes


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
        ns.stderr = stderr  # matrix reports progress on long sweeps there
        from .verbs import VERBS
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
            stderr.write(f"{PROG}: error: the rules are invalid\n{_fit(str(e))}\n")
            _json_error(argv, stdout, {"message": "the rules are invalid", "details": str(e).splitlines(),
                                       "hint": None})
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
