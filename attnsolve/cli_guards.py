"""The CLI's input guards, kept out of cli.py: who supplied a bad value (flag, model file key,
environment variable), the matrix size cap and progress, and the docs output path.

Why: an error must name the source the user can fix. `invalid --head-size` for a value read from
the model file, or `invalid --attention-backend` for VLLM_ATTENTION_BACKEND, sends the user to a
flag they never typed.
"""

from __future__ import annotations

import math
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

from .errors import ConfigError, safe_repr

DEFAULT_MAX_CELLS = 10_000   # `matrix` grids above this need --max-cells N (about 2 ms a cell)
PROGRESS_CELLS = 2_000       # grids at least this large report progress on stderr
MAX_CELLS_LIMIT = 10_000_000

# Which config.json key(s) a model-derived field comes from (see modelconfig.py).
MODEL_KEYS: Mapping[str, str] = {
    "head_size": "head_dim (or hidden_size / num_attention_heads; for MLA kv_lora_rank + qk_rope_head_dim)",
    "num_heads": "num_attention_heads", "dtype": "torch_dtype", "use_mla": "kv_lora_rank",
    "use_sparse": "index_topk", "index_topk": "index_topk", "has_sink": "model_type",
    "use_mm_prefix": "model_type", "qk_nope_head_dim": "qk_nope_head_dim", "qk_rope_head_dim": "qk_rope_head_dim",
    "v_head_dim": "v_head_dim", "kv_cache_dtype": "index_topk (DeepSeek-V3.2 rewrite)",
}


class SourcedError(ConfigError):
    """A ConfigError re-addressed to where the value came from; `field` is 'PATH:KEY' or 'env:VAR'
    and `hint` says what to fix."""

    def __init__(self, field: str, value: Any, accepted: Any, message: str, hint: str):
        super().__init__(field, value, accepted, message=message)
        self.hint = hint


def sources(model: Any, env: Mapping[str, str], flags: Iterable[str]) -> dict[str, tuple[str, str]]:
    """field -> (kind, where) for the fields a query's values came from; later sources win as in
    build_query: model file, then environment (read by default; --no-env), then flags."""
    out: dict[str, tuple[str, str]] = {}
    if model is not None:
        for f in model.fields:
            out[f] = ("model", str(model.path))
    for var, name in env.items():
        out[name] = ("env", var)
    for f in flags:
        out[f] = ("flag", f)
    return out


def blame(e: ConfigError, origin: Mapping[str, tuple[str, str]]) -> ConfigError:
    """`e` re-addressed to the model file key or environment variable its value came from (a flag's
    error, or one with no recorded source, is returned unchanged)."""
    src = origin.get(str(e.field))
    if src is None or src[0] == "flag":
        return e
    kind, where = src
    accepted = e.accepted if isinstance(e.accepted, str) else ", ".join(str(a) for a in e.accepted)
    detail = "" if str(e).startswith(f"Invalid {e.field}:") else f" ({e})"
    if kind == "model":
        key = MODEL_KEYS.get(str(e.field), str(e.field))
        return SourcedError(f"{where}:{e.field}", e.value, e.accepted,
                            f"Invalid model config {where}: {e.field} {safe_repr(e.value)} derived from key {key}. "
                            f"Expected {accepted}.{detail}",
                            hint=f"fix {where}, or override it with the flag for {e.field}")
    if getattr(e, "variable", None) == where:  # vLLM's own failure on the text, naming the variable: kept whole
        return SourcedError(f"env:{where}", e.value, e.accepted, str(e), hint=f"fix or unset {where}, or pass --no-env")
    return SourcedError(f"env:{where}", e.value, e.accepted,
                        f"Invalid environment variable {where}={safe_repr(e.value)} (read as vLLM reads it). "
                        f"Expected {accepted}.{detail}",
                        hint=f"fix or unset {where}, or pass --no-env")


def file_error(flag: str, problem: Exception) -> ConfigError:
    """A FileProblem for a path given by `flag` (e.g. docs -o) as a ConfigError the CLI exits 2 on."""
    return SourcedError(flag.lstrip("-").replace("-", "_"), str(getattr(problem, "path", "")), "a regular file",
                        f"invalid {flag} {getattr(problem, 'path', '')!r}: {getattr(problem, 'reason', problem)}",
                        hint=f"give {flag} a regular file path")


def check_docs_output(output: str, check: bool) -> None:
    """`docs [--check] -o PATH`: PATH must be a regular file (or, when writing, absent in an existing
    directory); ConfigError otherwise, before anything is read or written."""
    import os
    from .safe_io import DOC_MAX_BYTES, FileProblem, check_writable, read_text
    if output == "-":
        return
    try:
        if os.path.lexists(output):
            read_text(output, max_bytes=DOC_MAX_BYTES)  # regular, not huge, UTF-8: what check_doc reads
        if not check:
            check_writable(output)
    except FileProblem as p:
        raise file_error("--output", p) from None


def default_over(platform_hint: str | None) -> list[str] | None:
    """`matrix` without --over on a non-CUDA platform: compute capability is a CUDA fact, so sweep
    dtype x KV dtype instead of an all-n/a GPU table. None keeps the usual default."""
    if platform_hint in ("rocm", "cpu"):
        return ["dtype,kv_cache_dtype"]
    return None


def platform_hint(ns: Any) -> str | None:
    """The platform the matrix flags name (--gpu NAME or --platform), None when unknown or CUDA."""
    from .config import Config
    try:
        if getattr(ns, "gpu", None) is not None:
            return Config(gpu=ns.gpu, dtype="bfloat16").platform
        if getattr(ns, "platform", None) is not None and getattr(ns, "compute_capability", None) is None:
            return Config(platform=ns.platform, dtype="bfloat16",
                          compute_capability="9.0" if str(ns.platform).strip().lower() in ("cuda", "gpu", "nvidia")
                          else None).platform
    except ConfigError:
        return None  # the query itself reports the bad flag
    if getattr(ns, "rocm_arch", None) is not None and getattr(ns, "compute_capability", None) is None:
        return "rocm"  # a gfx arch alone implies ROCm, as in Config
    return None


def check_over_platform(names: Sequence[str], platform: Any) -> None:
    """--over compute_capability on a ROCm or CPU query would be a table of n/a: refuse it."""
    if "compute_capability" in names and platform in ("rocm", "cpu"):
        raise SourcedError("over", "compute_capability", f"fields other than compute_capability on platform {platform}",
                           f"invalid --over compute_capability: the query is on platform {platform}, and a compute "
                           "capability is a CUDA fact (every cell would be n/a)",
                           hint="use e.g. --over dtype,kv_cache_dtype, or a CUDA --gpu")


def max_cells(value: Any) -> int:
    """--max-cells N (default DEFAULT_MAX_CELLS)."""
    if value is None:
        return DEFAULT_MAX_CELLS
    from .config import int_text
    n = int_text(str(value))
    if n is None or not 1 <= n <= MAX_CELLS_LIMIT:
        raise ConfigError("max_cells", value, f"an integer from 1 to {MAX_CELLS_LIMIT}")
    return n


def check_cells(names: Sequence[str], value_lists: Sequence[Sequence[Any]], limit: int) -> int:
    """The grid's cell count; ConfigError (exit 2, naming the count) when it exceeds `limit`."""
    cells = math.prod(len(v) for v in value_lists)
    if cells > limit:
        sizes = " x ".join(f"{len(v)} {n}" for n, v in zip(names, value_lists))
        raise SourcedError("max_cells", cells, f"at most {limit} cells",
                           f"matrix of {cells} cells ({sizes}) is larger than the limit of {limit} cells",
                           hint=f"narrow --over (FIELD=V1,V2 picks values) or raise the limit with --max-cells {cells}")
    return cells


def progress(items: Iterable[Any], total: int, stream: IO[str] | None) -> Iterator[Any]:
    """`items`, reporting every tenth of a long grid (>= PROGRESS_CELLS cells) on `stream`."""
    if stream is None or total < PROGRESS_CELLS:
        yield from items
        return
    step = max(1, total // 10)
    for i, item in enumerate(items, 1):
        yield item
        if i % step == 0 and i < total:
            stream.write(f"attnsolve: matrix: {i} of {total} cells\n")
            stream.flush()
