"""Where each release's document lives, and which release is the newest.

Why a module: the file name (doc_path) and the regenerate command printed in the page (docs_page)
must agree on which release is the newest.
"""

from __future__ import annotations

DEFAULT_PATH = "docs/attention_backends.md"


def _newest() -> str | None:
    """The newest released set: its document is DEFAULT_PATH whatever $ATTNSOLVE_VLLM says, so a
    release's file name depends on the packaged sets only, never on the caller's environment."""
    from .rules.sets import versions
    released = versions(include_drafts=False) or versions()
    return released[-1] if released else None


def doc_path(version: str) -> str:
    """Where a release's document lives: the newest release's at DEFAULT_PATH, older ones beside it."""
    return DEFAULT_PATH if version == _newest() else f"docs/attention_backends-vllm-{version}.md"
