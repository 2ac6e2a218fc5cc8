"""Per-vLLM-version data (versions.toml): import dependencies and the stub/patch list.

Stdlib only: imported both by the harness and, inside the isolated vLLM venv, by the worker.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

DATA = Path(__file__).with_name("versions.toml")


@dataclass(frozen=True)
class VersionData:
    """What one vLLM release needs to import and run its selector on a CPU-only machine."""

    version: str
    key: str
    torch: str
    deps: tuple[str, ...]
    stub_modules: Mapping[str, str]
    any_attr_packages: Mapping[str, str]
    patches: Mapping[str, str]
    # absent libraries whose importers run module-level code on them (decorators, calls): stand-ins
    # that accept any use (CUDA boxes only)
    universal_packages: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # ROCm archs whose FlashAttention varlen function comes from AITER's Triton MHA (present in the harness venv,
    # where upstream flash-attn is absent): the configs drawn there say rocm_flash_attn_found = true
    rocm_fa_from_aiter: tuple[str, ...] = ()

    def patch_lines(self) -> list[str]:
        """Every stub and patch with why, one line each (what --patches prints)."""
        lines = [f"stub module {n}: empty module ({why})" for n, why in self.stub_modules.items()]
        lines += [f"stub package {n} (+ any submodule): {why}" for n, why in self.any_attr_packages.items()]
        lines += [f"stand-in package {n} (+ any submodule, any use): {why}" for n, why in self.universal_packages.items()]
        lines += [f"{pid}: {why}" for pid, why in self.patches.items()]
        return lines


def version_key(version: str) -> str:
    """'0.17.0' -> '0.17' (a patch release uses its minor's entry)."""
    parts = version.strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        raise ValueError(f"Invalid vLLM version: {version!r}. Expected a release like '0.17.0'.")
    return f"{int(parts[0])}.{int(parts[1])}"


def _raw() -> dict[str, Any]:
    with DATA.open("rb") as f:
        return tomllib.load(f)["versions"]


def known_versions() -> tuple[str, ...]:
    return tuple(_raw())


def load_version(version: str) -> VersionData:
    """The merged data for `version`, following `inherit`; ValueError naming the known keys."""
    raw = _raw()
    key = version_key(version)
    if key not in raw:
        raise ValueError(f"Invalid vLLM version: {version!r}. Known: {', '.join(sorted(raw))} "
                         f"(add a [versions.\"{key}\"] table to {DATA.name}).")
    chain: list[dict[str, Any]] = []
    k: str | None = key
    while k is not None:
        if k not in raw or any(c is raw[k] for c in chain):
            raise ValueError(f"{DATA.name}: bad inherit chain at {k!r}")
        chain.append(raw[k])
        k = raw[k].get("inherit")
    tables = ("stub_modules", "any_attr_packages", "universal_packages", "patches")
    merged: dict[str, Any] = {"torch": "", "deps": [], "rocm_fa_from_aiter": [], **{t: {} for t in tables}}
    for entry in reversed(chain):
        for name in ("torch", "deps", "rocm_fa_from_aiter"):
            if name in entry:
                merged[name] = entry[name]
        for name in tables:
            merged[name] = {**merged[name], **entry.get(name, {})}
        for name in entry.get("drop_patches", ()):  # an inherited patch whose target this release lacks
            merged["patches"].pop(name, None)
    return VersionData(version=version, key=key, torch=merged["torch"], deps=tuple(merged["deps"]),
                       stub_modules=merged["stub_modules"], any_attr_packages=merged["any_attr_packages"],
                       patches=merged["patches"], universal_packages=merged["universal_packages"],
                       rocm_fa_from_aiter=tuple(merged["rocm_fa_from_aiter"]))
