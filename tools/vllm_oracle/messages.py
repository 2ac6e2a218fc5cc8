"""Every text a rule set quotes from vLLM, looked up in that release's own Python source.

Why it exists: the differential harness stops after selection, so a start-up failure raised when the layer's
implementation is built, a warning logged at layer construction or a model route's error is never compared
with vLLM (docs/fidelity.md, known difference startup-layer-construction). An edit folder inherits such texts
from the release after it; one that release added is then quoted for an older release that never had it
(session 27: FlashInfer's "The DCP prefill wrapper cannot read NVFP4 block scales." is 0.32's, and 0.31 to 0.28
inherited it). This check reads the wheel's sources (the string literals, adjacent literals joined as Python
joins them, f-strings split at their fields) and reports each quoted text with a literal part the release
does not contain.

    python -m tools.vllm_oracle.messages --vllm 0.28.0 [--attnsolve-vllm 0.28]

Exit 0 when every text is found, 1 with the list otherwise, 2 for bad arguments. A text attnsolve writes
itself (its own advice, a reason it words for a condition vLLM leaves unnamed) is listed in OWN_WORDS.
"""

from __future__ import annotations

import ast
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator

from attnsolve.rules.loader import release_documents

from .attnsolve_side import wheel_check_args
from .provision import wheel_path

# The keys whose string values are vLLM's words (messages, reasons, log lines), wherever they appear.
TEXT_KEYS = frozenset({
    "message", "reason", "reason_true", "reason_false", "warning", "log", "error", "no_valid_message",
    "invalid_message", "list_invalid_message", "ignore_warning", "chosen_log", "block_size_failure",
    "manual_log", "selected_log", "override_log", "fallback_log", "mla_prefill_no_valid_message",
    "kv_cache_dtype_hint",
})
# A literal part shorter than this is too common to tell anything (", ", "=", "torch.").
MIN_PART = 12
# A backend named as vLLM's enum prints it ("Using AttentionBackendEnum.ROCM_ATTN backend."): the value of a field.
ENUM_VALUE = re.compile(r"AttentionBackendEnum\.(\{[^{}]*\})")
# A field vLLM fills in its messages: a %-format conversion or a .format() / f-string field.
FIELD = r"%[-#0-9.]*[sdrfx]|\{[^{}]*\}"
# Tables whose texts are attnsolve's words (an invariant's reason explains the configuration space).
OWN_TABLES = frozenset({"invariants.toml.invariants"})
# Texts vLLM does not write: Python's own exception texts (an import that fails), vLLM's repr of a reason list, and
# the 0.17 set's words for branches its MLA prefill decision tree and ROCm's sparse path take without a text of
# their own (docs/fidelity.md, 0.17's advisories).
OWN_WORDS = re.compile(
    r"^cannot import name '|Reason: \['ImportError'\]$|No module named '"
    r"|^model does not have DeepSeek R1 MLA dims |^cuDNN prefill requested \(use_cudnn_prefill=1\) takes precedence$"
    r"|^NVIDIA artifactory not reachable \(trtllm_available=false\)$"
    r"|^disabled by use_trtllm_ragged_deepseek_prefill=0$|^disabled by disable_flashinfer_prefill=1$"
    r"|^not enabled \(use_cudnn_prefill=0\)$|^VLLM_ROCM_USE_AITER_MHA is disabled$"
    r"|^AITER MLA needs a gfx9 GPU \(gfx90a, gfx942, gfx950\) unless block_size is 1$"
    r"|^AITER MLA is not enabled \(VLLM_ROCM_USE_AITER(_MLA)?=0\) and block_size is not 1$"
    r"|^Sparse MLA on ROCm always uses ROCM_AITER_MLA_SPARSE; the requested backend \{backend\} is ignored\.$")


def quoted_texts(documents: dict[str, dict]) -> Iterator[tuple[str, str]]:
    """(where, text) for every string under a TEXT_KEYS key in a release's merged rule files."""
    def walk(node: Any, where: str) -> Iterator[tuple[str, str]]:
        if where in OWN_TABLES:
            return
        if isinstance(node, dict):
            for k, v in node.items():
                here = f"{where}.{k}" if where else str(k)
                if k in TEXT_KEYS:
                    for text in ([v] if isinstance(v, str) else v if isinstance(v, list) else []):
                        if isinstance(text, str):
                            yield here, text
                yield from walk(v, here)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{where}[{i}]")
    for name, doc in documents.items():
        yield from walk(doc, name)


def literal_parts(text: str) -> list[str]:
    """The parts of a rule text between its {placeholders}, long enough to look up."""
    return [p for p in (s.strip() for s in re.split(r"\{[^{}]*\}", text)) if len(p) >= MIN_PART]


def source_strings(wheel: Path) -> str:
    """Every string literal of the wheel's vllm/ Python files, one per line (f-strings: their literal parts;
    %-format and .format() templates as written)."""
    out: list[str] = []
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if not (name.startswith("vllm/") and name.endswith(".py")):
                continue
            try:
                tree = ast.parse(z.read(name).decode("utf-8", "replace"))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    out.append(node.value)
    return "\n".join(out)


def _normalised(text: str) -> str:
    """vLLM's %s / %d / {} fields and attnsolve's {field} placeholders become one marker, so a part's words are
    compared, not the way each side fills them in."""
    text = re.sub(FIELD, "\x00", text)
    # ... and so do the values vLLM interpolates into running text (a backend name, a dtype, a head size): a
    # word with a digit, an underscore or a dot, or an upper-case name
    text = re.sub(r"(?<![\w.])(?:[\w.]*[\d_.][\w.]*|[A-Z][A-Z0-9]+)(?![\w.])", "\x00", text)
    return re.sub(r"\x00(?:\s*\x00)+", "\x00", text)


def _pieces(part: str) -> list[str]:
    """A part cut where vLLM composes its messages from several literals and values: at the field markers, at
    brackets, `=`, `:` and commas (a config's repr, a list of reasons), and before a value vLLM interpolates in
    running text ("found for cuda with ...": a platform name, a backend name)."""
    return [p for p in re.split(r"\x00|[()\[\]=:,]| with | for |\. ", part) if p.strip()]


def missing(documents: dict[str, dict], corpus: str) -> list[tuple[str, str, str]]:
    """(where, text, the first part the release lacks) for each quoted text not found in `corpus`."""
    lines = _normalised(corpus).split("\n")
    hay = "\n".join(lines)
    templates = [t for t in set(lines) if "\x00" in t and len(t.replace("\x00", "")) >= MIN_PART]
    out = []
    seen: set[str] = set()
    raw_lines = corpus.split("\n")
    for where, text in quoted_texts(documents):
        if text in seen or OWN_WORDS.search(text):
            continue
        seen.add(text)
        # vLLM prints a backend enum member with %s / {}: "AttentionBackendEnum.X" is one interpolated value
        text = ENUM_VALUE.sub(r"\1", text)
        whole = _normalised(text)
        checked = 0
        for part in literal_parts(text):
            pieces = [p for p in _pieces(_normalised(part)) if len(p.strip()) >= MIN_PART]
            checked += sum(len(p.strip()) for p in pieces)
            lost = next((p for p in pieces if not _in_source(p, hay) and not _filled_template(p, whole, templates)),
                        None)
            if lost is not None:
                out.append((where, text, lost))
                break
        else:
            # a text of short words and interpolated values only ("Using fp8 KV cache for GLM-5.3-Flash") leaves no
            # piece to look up, and a text without placeholders whose pieces are the smaller part of it
            # ("deepseek_v32 does not yet support XPU.": only " does not yet support " is looked up, a phrase many
            # messages share): it must then be one of the release's messages as a whole
            short = not checked or ("{" not in text and checked < 0.55 * len(text))
            if short and not _composed_in_source(text, raw_lines) and not _joined_literals(text, raw_lines):
                out.append((where, text, text))
    return out


def _composed_in_source(text: str, raw_lines: list[str]) -> bool:
    """Whether `text` (its placeholders standing for any value) is what one of the release's messages prints: a
    %-format or .format() template, or an f-string's literal parts (consecutive lines of the corpus) with any value
    in each field between them and one value-like token before or after."""
    filled = re.sub(r"\{[^{}]*\}", "\x01", text)
    # the text's own words: without the placeholders and the value-like tokens (names with "_" or digits) a field
    # prints ("Using fp8_ds_mla KV cache format for FLASHINFER_MLA_SPARSE_SM120 backend.": key "backend", not "FLASHINFER")
    own = re.sub(r"\S*[_0-9]\S*", "", filled.replace("\x01", ""))
    words = sorted(re.findall(r"[A-Za-z]{4,}", _normalised(own)) or re.findall(r"[A-Za-z]{4,}", _normalised(text)),
                   key=len, reverse=True)  # not a value's letters
    if not words:
        return True
    key = words[0]
    size = len(own)
    escaped_field = re.compile(r"%[-#0-9.]*[sdrfx]|\\\{[^{}]*\\\}")  # FIELD as re.escape() writes it
    for i, line in enumerate(raw_lines):
        if key not in line:
            continue
        for start in range(max(0, i - 3), i + 1):
            for end in range(i, min(len(raw_lines), i + 4)):
                lines = raw_lines[start:end + 1]
                # the template's own words must make most of the text (a field may not stand for its words)
                if sum(len(re.sub(FIELD, "", x)) for x in lines) < 0.5 * size:
                    continue
                seg = [escaped_field.sub(".+?", re.escape(x)) for x in lines]
                # before and after the literal parts: one value-like token, or anything that holds a placeholder
                if re.fullmatch(r"(?:\S*\s?|.*\x01.*?)" + ".*?".join(seg) + r"(?:\s?\S*|.*?\x01.*)", filled, re.S):
                    return True
    return False


def _joined_literals(text: str, raw_lines: list[str]) -> bool:
    """Whether literals of the release, each whole inside `text`, cover almost all of it: a message vLLM joins from
    two strings of its own ("FA4 unavailable: " + the reason fa_version_unsupported_reason(4) returns)."""
    if "{" in text:
        return False
    covered = [False] * len(text)
    for line in set(raw_lines):
        if len(line) >= 8 and line in text:
            at = text.find(line)
            while at >= 0:
                covered[at:at + len(line)] = [True] * len(line)
                at = text.find(line, at + 1)
    return sum(covered) >= 0.9 * len(text)


def _in_source(piece: str, hay: str) -> bool:
    """Whether `piece` is in a literal, or (without its edge spaces) starts or ends one: vLLM joins its messages from
    literals ("Your {gpu} GPU " "has compute capability ..."), so a piece cut at a space may start a literal."""
    core = piece.strip()
    return piece in hay or f"\n{core}" in hay or f"{core}\n" in hay


def _filled_template(piece: str, whole: str, templates: list[str]) -> bool:
    """Whether a source template with fields ("FA4's ... does not support %s, defaulting ...") yields a span of
    the rule text that covers `piece`, each field standing for any words (vLLM fills it with a phrase)."""
    at = whole.find(piece.strip())
    if at < 0:
        return False
    for t in templates:
        chunks = [c for c in t.split("\x00")]
        if not any(len(c.strip()) >= 8 and c.strip() in whole for c in chunks):
            continue
        pattern = "(.+?)".join(f"({re.escape(c)})" for c in chunks)
        end = at + len(piece.strip())
        for m in re.finditer(pattern, whole):
            if not (m.start() <= at and end <= m.end()):
                continue
            # the template's own words must make most of the piece (a field may not stand for what is missing)
            literal = sum(max(0, min(end, m.end(g)) - max(at, m.start(g))) for g in range(1, len(chunks) * 2, 2))
            if literal >= 0.5 * (end - at):
                return True
    return False


def unregistered_architectures(documents: dict[str, dict], registry: str) -> list[tuple[str, str]]:
    """(where, architecture) for each model class a `--model` reader entry names (a field's `architectures` /
    `architecture_keys`) that the release's model registry (model_executor/models/registry.py) does not list: an
    edit folder inherits those too (GraniteSWA* sinks, 0.29's, and DeepseekV4ForConditionalGeneration, 0.30's, were
    read for 0.28 / 0.29 down to 0.23)."""
    out = []
    for name, doc in documents.items():
        for field, decl in (doc.get("fields") or {}).items():
            if not isinstance(decl, dict):
                continue
            for key in ("architectures", "architecture_keys"):
                for arch in decl.get(key) or {}:
                    if f'"{arch}"' not in registry:
                        out.append((f"{name}.fields.{field}.{key}", arch))
    return out


def main(argv: list[str] | None = None) -> int:
    got = wheel_check_args("python -m tools.vllm_oracle.messages", __doc__, "0.28.0", argv, release_documents)
    if got is None:
        return 2
    args, label, docs = got
    corpus = source_strings(wheel_path(args.vllm))
    bad = missing(docs, corpus)
    total = len({t for _, t in quoted_texts(docs)})
    for where, text, part in bad:
        print(f"NOT IN vLLM {args.vllm}: {where}\n    {text}\n    (missing: {part!r})")
    print(f"{total - len(bad)}/{total} quoted texts of the {label} rules found in vLLM {args.vllm}'s source")
    with zipfile.ZipFile(wheel_path(args.vllm)) as z:
        registry = z.read("vllm/model_executor/models/registry.py").decode("utf-8", "replace")
    lost = unregistered_architectures(docs, registry)
    for where, arch in lost:
        print(f"NOT IN vLLM {args.vllm}'s model registry: {where}: {arch}")
    print(f"model architectures the {label} rules read: {'all' if not lost else f'{len(lost)} not'} registered")
    return 1 if bad or lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
