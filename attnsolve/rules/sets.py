"""The packaged rule sets: one folder per vLLM release (`vllm-<major>.<minor>/`, or `vllm-<major>.<minor>.<patch>/`
for a patch release whose selection differs from its minor's), found on disk.

Why a module of its own: which releases attnsolve answers for is data (a new folder is a new
release); everything that needs "the rules of vLLM X" asks here, and nothing else lists folders.
A set whose `[ruleset]` says `status = "draft"` is loadable by name but never the default.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .labels import minor_of, parse_version, release_key
from .loader import RULES_ROOT

_FOLDER = re.compile(r"^vllm-(\d+)\.(\d+)(?:\.([1-9]\d*))?$")
# Environment variable that picks the default release (tests pin the release their facts are for).
DEFAULT_ENV = "ATTNSOLVE_VLLM"


@dataclass(frozen=True, slots=True)
class RuleSetInfo:
    """A packaged rule set: its release label ("0.17", "0.18.1"), folder, and whether it is a draft."""

    version: str
    path: Path
    draft: bool

    @property
    def key(self) -> tuple[int, int, int]:
        return release_key(self.version)


# Rule sets loaded from elsewhere (tests' damaged copies) that per-rule-set caches keep beside the packaged releases'.
OTHER_RULE_SETS_KEPT = 16


def per_rules_limit() -> int:
    """How many rule sets a per-rule-set cache holds before it starts over: every packaged release plus a few
    others. A fixed 16 made every such cache start over on each pass through 18 releases (a version fix asks them
    all), which tripled the suite's time."""
    return len(packaged_sets()) + OTHER_RULE_SETS_KEPT


@lru_cache(maxsize=1)
def packaged_sets() -> tuple[RuleSetInfo, ...]:
    """Every packaged rule set, oldest release first."""
    found = []
    for folder in RULES_ROOT.iterdir():
        m = _FOLDER.match(folder.name)
        if not m or not folder.is_dir():
            continue
        draft = False
        meta = folder / "ruleset.toml"
        if meta.is_file():
            try:
                draft = tomllib.loads(meta.read_text()).get("ruleset", {}).get("status") == "draft"
            except (OSError, tomllib.TOMLDecodeError):
                draft = False  # the loader reports the malformed file when the set is loaded
        label = f"{int(m.group(1))}.{int(m.group(2))}" + (f".{int(m.group(3))}" if m.group(3) else "")
        found.append(RuleSetInfo(label, folder, draft))
    return tuple(sorted(found, key=lambda s: s.key))


def versions(*, include_drafts: bool = True) -> tuple[str, ...]:
    """Release labels of the packaged sets, oldest first."""
    return tuple(s.version for s in packaged_sets() if include_drafts or not s.draft)


def default_version() -> str:
    """$ATTNSOLVE_VLLM when it names a packaged set, else the newest set that is not a draft."""
    raw = os.environ.get(DEFAULT_ENV, "")
    hit = _default_memo.get(raw)
    if hit is not None and hit[0] is packaged_sets():
        return hit[1]
    env = release_for(raw)
    if env is not None:
        label = env
    else:
        stable = versions(include_drafts=False) or versions()
        label = stable[-1]
    _default_memo[raw] = (packaged_sets(), label)  # Config() asks on every construction: keep it cheap
    return label


_default_memo: dict[str, tuple[tuple[RuleSetInfo, ...], str]] = {}


def release_for(text: object) -> str | None:
    """The packaged rule set that answers for a release spelling: the release's own ("0.18.1", "0.20"), else,
    for a patch release without one, the newest set of its minor at or below it ("0.20.2" -> "0.20": its
    selection code is 0.20's; `patch_releases` in that set's ruleset.toml lists the patches checked so).
    None when the spelling is no release or its minor has no set."""
    label = parse_version(text)
    if label is None:
        return None
    known = versions()
    if label in known:
        return label
    minor, want = minor_of(label), release_key(label)
    below = [v for v in known if minor_of(v) == minor and release_key(v) <= want]
    return max(below, key=release_key) if below else None


def info(version: str) -> RuleSetInfo:
    for s in packaged_sets():
        if s.version == version:
            return s
    raise KeyError(version)
