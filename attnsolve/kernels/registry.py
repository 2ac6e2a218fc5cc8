"""Kernel registry: backend name -> implementation, plus "what can run here".

Registering a kernel is one decorator::

    from attnsolve.kernels.registry import register_kernel

    @register_kernel("CPU_ATTN", devices=("cpu",))
    def cpu_attn(query, key_cache, value_cache, md, *, scale=None, causal=True, ...):
        ...

``devices`` are platform names as in ``Config.platform`` (``"cpu"``, ``"cuda"``,
``"rocm"``); ``requires`` are importable package names (checked with
``importlib.util.find_spec``, without importing them); ``check`` is an optional
``callable(device: str) -> str | None`` returning why the kernel cannot run on that
device (``None`` = it can).

Kernel modules are discovered lazily, on the first registry query, by importing the
fixed tuple ``_KERNEL_MODULES``.  A module that does not exist (yet), or whose
optional package is missing, is skipped; any other import error is not hidden: it is
recorded and reported as the reason the module's backends are unavailable.

This module does not import torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable

__all__ = [
    "KernelUnavailableError",
    "generation",
    "register_kernel",
    "kernel_for",
    "runnable_backends",
    "registered_backends",
    "unavailable_reasons",
    "import_errors",
    "override_kernel",
]

_KERNEL_MODULES = (
    "attnsolve.kernels.cpu",
    "attnsolve.kernels.flex",
    "attnsolve.kernels.triton_attn",
    "attnsolve.kernels.triton_mla",
    "attnsolve.kernels.cpu_mla",
    "attnsolve.kernels.adapters",
)

_PLATFORMS = ("cpu", "cuda", "rocm")


class KernelUnavailableError(RuntimeError):
    """A backend was selected (or asked for) but no runnable kernel exists for it here.

    Attributes (data; the text is made in ``__str__``):
      backend:     the backend name, e.g. ``"FLASH_ATTN"``.
      missing:     tuple of reasons it cannot run (missing package, GPU, registration).
      alternative: the backend the solver picks among the runnable ones, or ``None``.
      device:      the platform asked about, or ``None``.
      runnable:    the backends runnable on that platform (may be empty).
    """

    def __init__(
        self,
        backend: str,
        missing: Iterable[str] | str = (),
        alternative: str | None = None,
        *,
        device: str | None = None,
        runnable: Iterable[str] = (),
    ) -> None:
        self.backend = backend
        self.missing = (missing,) if isinstance(missing, str) else tuple(missing)
        self.alternative = alternative
        self.device = device
        self.runnable = tuple(sorted(runnable))
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" on {self.device}" if self.device else ""
        why = "; ".join(self.missing) if self.missing else "no reason recorded"
        text = f"Backend {self.backend!r} has no runnable kernel{where}: {why}."
        if self.alternative:
            text += f" The solver's pick among the runnable backends is {self.alternative!r}:"
            text += f" pass backend={self.alternative!r} to use it."
        elif self.runnable:
            text += f" Runnable here: {list(self.runnable)}."
        else:
            text += " No backend is runnable here."
        return text

    def __reduce__(self):  # keep pickling (e.g. across processes) working
        return (
            _rebuild_error,
            (self.backend, self.missing, self.alternative, self.device, self.runnable),
        )


def _rebuild_error(backend, missing, alternative, device, runnable):
    return KernelUnavailableError(backend, missing, alternative, device=device, runnable=runnable)


@dataclass(frozen=True, slots=True)
class _Entry:
    backend: str
    fn: Callable
    devices: tuple[str, ...]
    requires: tuple[str, ...]
    check: Callable[[str], str | None] | None
    module: str


_REGISTRY: dict[str, _Entry] = {}
# module name -> reason it could not be imported (only for real failures / missing packages)
_IMPORT_ERRORS: dict[str, str] = {}
_discovered = False
_discovering = False  # True while the discovering thread imports (it holds _lock)
# bumped on every registration: callers caching kernel_for() results compare it
_generation = 0
_lock = threading.RLock()
_spec_cache: dict[str, bool] = {}


def _normalise_device(device: str) -> str:
    """``"cuda:0"`` -> ``"cuda"``; platform names pass through."""
    d = str(device).split(":", 1)[0].lower()
    return d


def register_kernel(
    backend: str,
    *,
    devices: Iterable[str] = ("cpu",),
    requires: Iterable[str] = (),
    check: Callable[[str], str | None] | None = None,
):
    """Decorator registering ``fn`` as the kernel for ``backend``.

    Re-registering a backend replaces the previous entry (last one wins), so a module
    reload or a test override works.
    """
    devs = tuple(_normalise_device(d) for d in devices)
    for d in devs:
        if d not in _PLATFORMS:
            raise ValueError(f"Expected devices among {list(_PLATFORMS)}, but got {d!r}.")
    reqs = tuple(requires)

    def deco(fn):
        global _generation
        with _lock:
            _generation += 1
            _REGISTRY[backend] = _Entry(
                backend, fn, devs, reqs, check, getattr(fn, "__module__", "?")
            )
        return fn

    return deco


@contextmanager
def override_kernel(backend: str, fn: Callable, **register_kwargs):
    """Temporarily register ``fn`` for ``backend`` (tests, experiments); restores in ``finally``."""
    global _generation
    _discover()
    with _lock:
        old = _REGISTRY.get(backend)
    register_kernel(backend, **register_kwargs)(fn)
    try:
        yield fn
    finally:
        with _lock:
            if old is None:
                _REGISTRY.pop(backend, None)
            else:
                _REGISTRY[backend] = old
            _generation += 1


def _have_package(name: str) -> bool:
    hit = _spec_cache.get(name)
    if hit is None:
        try:
            hit = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            hit = False
        _spec_cache[name] = hit
    return hit


def _discover() -> None:
    """Import the kernel modules once.  Thread-safe: other threads wait on the lock until every
    import has finished ("done" is set only then); a kernel module that queries the registry while
    it is being imported (same thread, re-entrant lock) sees the registrations made so far."""
    global _discovered, _discovering
    if _discovered:
        return
    with _lock:
        if _discovered or _discovering:
            return
        _discovering = True
        try:
            for mod in _KERNEL_MODULES:
                try:
                    importlib.import_module(mod)
                except ModuleNotFoundError as e:
                    missing = e.name or ""
                    # The kernel module itself (or a parent) does not exist yet: nothing to say.
                    if missing and (mod == missing or mod.startswith(missing + ".")):
                        continue
                    _IMPORT_ERRORS[mod] = f"{mod} needs package {missing!r}, which is not installed"
                except Exception as e:  # never hide a real bug: record it as the reason
                    _IMPORT_ERRORS[mod] = f"importing {mod} failed: {type(e).__name__}: {e}"
        finally:
            _discovering = False
            _discovered = True


def generation() -> int:
    """A counter bumped by every ``register_kernel``: caches of ``kernel_for`` results key on it."""
    _discover()
    return _generation


def import_errors() -> dict[str, str]:
    """Kernel modules that failed to import, with the reason (after discovery)."""
    _discover()
    return dict(_IMPORT_ERRORS)


def registered_backends() -> frozenset[str]:
    """Names of all backends with a registered kernel (runnable here or not)."""
    _discover()
    return frozenset(_REGISTRY)


def unavailable_reasons(backend: str, device: str | None = None) -> tuple[str, ...]:
    """Why ``backend``'s kernel cannot run on ``device`` (empty tuple = it can).

    With ``device=None`` only registration and required packages are checked.
    """
    _discover()
    entry = _REGISTRY.get(backend)
    if entry is None:
        reasons = [f"no kernel is registered for {backend!r} in attnsolve.kernels"]
        if _IMPORT_ERRORS:
            reasons += [f"({v})" for v in _IMPORT_ERRORS.values()]
        return tuple(reasons)
    reasons = []
    for pkg in entry.requires:
        if not _have_package(pkg):
            reasons.append(f"package {pkg!r} is not installed")
    if device is not None:
        dev = _normalise_device(device)
        if dev not in entry.devices:
            reasons.append(
                f"its kernel runs on {'/'.join(entry.devices)}, not {dev}"
                + (" (needs a GPU)" if dev == "cpu" else "")
            )
        elif not reasons and entry.check is not None:
            why = entry.check(dev)
            if why:
                reasons.append(why)
    return tuple(reasons)


def devices() -> list[str]:
    """The devices this machine can run kernels on: cpu, plus cuda when torch sees a GPU (torch imported here)."""
    if not _have_package("torch"):
        return []
    import torch
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def runnable_backends(device: str) -> frozenset[str]:
    """Backends whose kernel can run on ``device`` (a platform name or ``"cuda:0"``)."""
    _discover()
    return frozenset(b for b in list(_REGISTRY) if not unavailable_reasons(b, device))


def kernel_for(backend: str, device: str | None = None) -> Callable:
    """The kernel registered for ``backend``; raises ``KernelUnavailableError`` if none can run.

    ``device`` (optional) additionally checks that it runs on that platform.
    """
    reasons = unavailable_reasons(backend, device)
    if reasons:
        runnable = runnable_backends(device) if device is not None else frozenset()
        raise KernelUnavailableError(backend, reasons, None, device=device, runnable=runnable)
    return _REGISTRY[backend].fn
