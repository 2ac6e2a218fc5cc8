"""GPU names: the spellings tools print, reduced to the rules' GPU table, and GPUs to suggest.

The table itself is data (`[gpus]` in attnsolve/rules/vllm-0.17/domains.toml). This module only knows how
people and tools spell GPU names: `nvidia-smi` ("NVIDIA H100 80GB HBM3"),
`torch.cuda.get_device_name()` ("NVIDIA A100-SXM4-80GB", "Tesla V100-SXM2-32GB") and `rocm-smi`
("AMD Instinct MI300X"), and which GPU to name when a fix needs other hardware (same vendor, the
nearest newer generation first). `--gpu auto` reads the local GPU with the same tools.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ConfigError, closest, safe_repr

# Words that only say who made the part, its memory or its form factor; dropped before matching. "Ti" and
# "SUPER" name faster parts of the same chip generation (an RTX 4070 Ti is SM 8.9 like the RTX 4070).
_NOISE = re.compile(
    r"\b(nvidia|geforce|tesla|quadro|amd|instinct|radeon(?! ai)|intel|graphics|generation|gpu|ti|super|"
    r"sxm\d?|pcie|nvl|hbm\d?e?|oam|mxm|vf|server|edition|blackwell|workstation|max-q|"
    r"\d+\s?gb|\d+g)\b", re.I)


def gpu_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_MARKS = re.compile(r"\((r|tm)\)", re.I)  # "Intel(R) Arc(TM) B580 Graphics"


def _table(table: Mapping[str, Mapping[str, Any]] | None = None) -> Mapping[str, Mapping[str, Any]]:
    """The GPU table of the release asked (the default release's without one)."""
    if table is not None:
        return table
    from .rules import default_rules
    return default_rules().gpus


def _stripped(name: str) -> str:
    return _NOISE.sub(" ", _MARKS.sub(" ", name).replace("-", " ").replace("_", " "))


def canonical(name: str, table: Mapping[str, Mapping[str, Any]] | None = None) -> str | None:
    """The table name for `name` as a person or a tool spells it, or None when it is not known."""
    if not isinstance(name, str) or not name.strip():
        return None
    table = _table(table)
    keys = {gpu_key(k): k for k in table}
    if gpu_key(name) in keys:
        return keys[gpu_key(name)]
    # "A100-SXM4-80GB", "H100 80GB HBM3", "NVIDIA RTX 6000 Ada Generation": dashes to spaces, noise out
    key = gpu_key(_stripped(name))
    if not key:
        return None
    if key in keys:
        return keys[key]
    bare = {gpu_key(_stripped(k)): k for k in table}  # "Data Center GPU Max 1550" without its noise word
    if key in bare:
        return bare[key]
    # "MI300" (rocm-smi's series name): a unique architecture among the names it starts
    starts = [k for g, k in keys.items() if g.startswith(key) and len(key) >= 3 and g[len(key):].isalpha()]
    facts = {(table[k].get("platform"), table[k].get("compute_capability"), table[k].get("rocm_arch")) for k in starts}
    if starts and len(facts) == 1:
        return next((k for k in starts if table[k].get("suggest")), starts[0])
    return None


def vendor(name: str) -> str | None:
    """'nvidia', 'amd' or None, from the spelling alone (for suggestions within the vendor)."""
    low = name.lower()
    if re.search(r"\b(amd|instinct|radeon)\b|\bmi\d|\brx\s?\d|gfx", low):
        return "amd"
    if re.search(r"nvidia|geforce|tesla|quadro|\brtx\b|^[abhlvt]\d|^g[bh]\d|jetson|dgx", low):
        return "nvidia"
    if re.search(r"\bintel\b|\barc\b|data center gpu max", low):
        return "intel"
    return None


def _vendor_of(facts: Mapping[str, Any]) -> str:
    return {"cuda": "nvidia", "rocm": "amd", "xpu": "intel"}.get(str(facts.get("platform")), "cpu")


def generation_name(facts: Mapping[str, Any]) -> str:
    """'Hopper, SM 9.0', 'CDNA 3, gfx942' or 'CPU'."""
    from .rules import default_rules
    if facts.get("platform") == "cuda":
        cc = str(facts.get("compute_capability"))
        label = default_rules().generations.get(cc, f"SM {cc}")
        return label.replace(" (", ", ").rstrip(")")
    if facts.get("platform") == "rocm":
        return f"{facts.get('family', 'ROCm')}, {facts.get('rocm_arch')}"
    if facts.get("platform") == "xpu":
        return str(facts.get("family", "Intel XPU"))
    return "CPU"


def resolve(name: Any, table: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The table name for `name` (in `table`, the release's GPU table); ConfigError naming the
    closest GPU of the same vendor otherwise."""
    asked = _table(table)
    hit = canonical(name, asked) if isinstance(name, str) else None
    if hit is not None:
        return hit
    release = _release_with(name) if isinstance(name, str) else None
    if release is not None:
        raise ConfigError("gpu", name, "a GPU this vLLM release runs on", message=(
            f"GPU {name!r} ({release[1]}) is not in this vLLM release's GPU table; vLLM {release[0]} "
            f"knows it (--vllm {release[0]})."))
    table = asked
    names = sorted(table)
    suggestion = None
    detail = ""
    if isinstance(name, str):
        v = vendor(name)
        pool = [n for n in names if v is None or _vendor_of(table[n]) == v]
        stripped = _stripped(name)
        suggestion = closest(stripped.strip() or name, pool)
        if suggestion is not None:
            detail = f" ({generation_name(table[suggestion])})"
    maker = {"nvidia": "NVIDIA ", "amd": "AMD ", "intel": "Intel "}.get(_vendor_of(table[suggestion]), "") if suggestion else ""
    closest_text = (f" The closest known {maker}name is {suggestion}{detail}: check it is the same generation."
                    if suggestion else "")
    raise ConfigError("gpu", name, "a known GPU name: " + ", ".join(names), suggestion=suggestion,
                      message=f"Unknown GPU {safe_repr(name)}.{closest_text}"
                      + (f" Did you mean {suggestion!r}?" if suggestion else "")
                      + " Known GPUs: " + ", ".join(names) + ".")


def _release_with(name: str) -> tuple[str, str] | None:
    """(release, GPU name) of the newest packaged release whose GPU table knows `name`."""
    from .rules import rules_for
    from .rules.sets import versions
    for version in reversed(versions()):
        try:
            hit = canonical(name, rules_for(version).gpus)
        except Exception:  # noqa: BLE001 - a release whose rules do not load answers nothing here
            continue
        if hit is not None:
            return version, hit
    return None


def suggestable(platform: str) -> list[tuple[str, Mapping[str, Any]]]:
    """The GPUs a hardware fix may name on `platform`, in table order."""
    return [(n, g) for n, g in _table().items() if g.get("platform") == platform and g.get("suggest")]


def _rank(g: Mapping[str, Any]) -> tuple[int, ...]:
    if g.get("compute_capability") is not None:
        a, _, b = str(g["compute_capability"]).partition(".")
        return (int(a), int(b or 0))
    from .rules import default_rules
    arches = list(default_rules().domains.get("rocm_arch", ()))
    order = {"gfx906": 0, "gfx908": 1, "gfx90a": 2, "gfx942": 3, "gfx950": 4}
    arch = str(g.get("rocm_arch"))
    return (order.get(arch, 10 + (arches.index(arch) if arch in arches else 0)),)


def nearest_first(platform: str, current: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], bool]]:
    """Suggestable GPUs other than the current generation: newer ones nearest first, then older ones
    nearest first; the flag says 'older'."""
    here = _rank(current)
    rows = [(n, g) for n, g in suggestable(platform) if _rank(g) != here]
    newer = sorted((r for r in rows if _rank(r[1]) > here), key=lambda r: _rank(r[1]))
    older = sorted((r for r in rows if _rank(r[1]) < here), key=lambda r: _rank(r[1]), reverse=True)
    return [(n, g, False) for n, g in newer] + [(n, g, True) for n, g in older]


# ---------------------------------------------------------------------------------------------
# --gpu auto


@dataclass(frozen=True)
class Detected:
    """The local GPU as a tool reported it."""

    name: str       # the table name (or "CPU")
    raw: str        # what the tool printed
    source: str     # nvidia-smi, rocm-smi, torch


def _run(argv: list[str], timeout: float = 10.0) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _from_nvidia_smi() -> tuple[str, str] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    out = _run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    first = next((line.strip() for line in (out or "").splitlines() if line.strip()), None)
    return None if first is None else (first, "nvidia-smi")


def _from_rocm_smi() -> tuple[str, str] | None:
    if shutil.which("rocm-smi") is None:
        return None
    out = _run(["rocm-smi", "--showproductname"]) or ""
    for key in ("Card Series", "Card series", "Card Model", "Marketing Name"):
        for line in out.splitlines():
            if key in line and ":" in line:
                value = line.rsplit(":", 1)[1].strip()
                if value:
                    return value, "rocm-smi"
    return None


def _from_torch() -> tuple[str, str] | None:
    # in a child process: the CLI itself never imports torch
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return None
    code = "import torch\nprint(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    out = _run([sys.executable, "-c", code], timeout=60.0)
    name = (out or "").strip().splitlines()[-1:] if out else []
    return (name[0], "torch") if name and name[0] else None


def detect_local() -> Detected:
    """The local GPU from nvidia-smi, rocm-smi or torch; ConfigError saying what was tried when none."""
    tried = []
    for probe, label in ((_from_nvidia_smi, "nvidia-smi"), (_from_rocm_smi, "rocm-smi"), (_from_torch, "torch")):
        got = probe()
        if got is None:
            tried.append(label)
            continue
        raw, source = got
        return Detected(resolve(raw), raw, source)
    raise ConfigError("gpu", "auto", "a GPU name (e.g. H100, MI300X, CPU)", message=(
        "Invalid --gpu 'auto': no local GPU found (asked " + ", ".join(tried)
        + "; none is installed or none reports a GPU). Give the GPU by name, e.g. --gpu H100, "
        "or --gpu CPU."))
