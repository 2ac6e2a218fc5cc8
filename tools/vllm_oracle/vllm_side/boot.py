"""Make a vLLM release's own selector importable and runnable on a CPU-only machine.

Applies exactly the stubs and patches listed for the version in versions.toml (and nothing
else); `applied` records which ones actually ran, so the list printed by --patches and the
code cannot drift (tests check both directions).  Selection logic, `validate_configuration`
and `supports_*` are never touched.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import types
from typing import Any, Callable, Iterator

from ..versions import VersionData

applied: list[str] = []
import_failures: dict[str, str] = {}
stub_hits: list[str] = []
_cc: list[int] = [9, 0]


def _mark(pid: str, data: VersionData) -> None:
    if pid not in data.patches:
        raise RuntimeError(f"patch {pid!r} is applied but not listed in versions.toml for {data.key}")
    if pid not in applied:
        applied.append(pid)


class _EmptyLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        mod = types.ModuleType(spec.name)
        mod.__file__ = f"<stub {spec.name}>"
        return mod

    def exec_module(self, module: types.ModuleType) -> None:
        stub_hits.append(module.__name__)


class _AnyAttrMeta(type):
    """Dummy classes whose class attributes are dummy classes too (X.run, X.Config...)."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        obj = _AnyAttrMeta(name, (), {"__module__": cls.__module__})
        setattr(cls, name, obj)
        return obj


class _AnyAttrModule(types.ModuleType):
    """A module whose every public attribute is a fresh dummy class."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        obj = _AnyAttrMeta(name, (), {"__module__": self.__name__})
        setattr(self, name, obj)
        return obj


class _AnyAttrLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        mod = _AnyAttrModule(spec.name)
        mod.__file__ = f"<stub {spec.name}>"
        mod.__path__ = []
        return mod

    def exec_module(self, module: types.ModuleType) -> None:
        stub_hits.append(module.__name__)


class _StubFinder(importlib.abc.MetaPathFinder):
    def __init__(self, empty: set[str], any_attr: set[str]):
        self.empty = empty
        self.any_attr = any_attr

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in self.empty:
            return importlib.machinery.ModuleSpec(fullname, _EmptyLoader())
        if fullname.split(".")[0] in self.any_attr:
            return importlib.machinery.ModuleSpec(fullname, _AnyAttrLoader(), is_package=True)
        return None


def install_import_stubs(data: VersionData, platform: str) -> None:
    """Compiled extensions -> empty modules; absent libraries -> any-attribute packages."""
    roots = {"flashinfer"} | ({"aiter"} if platform == "rocm" else set())
    sys.meta_path.insert(0, _StubFinder(set(data.stub_modules), roots & set(data.any_attr_packages)))
    os.environ.setdefault("VLLM_HAS_FLASHINFER_CUBIN", "1")
    _mark("env.VLLM_HAS_FLASHINFER_CUBIN", data)
    os.environ["VLLM_CONFIGURE_LOGGING"] = "0"
    _mark("env.VLLM_CONFIGURE_LOGGING", data)


def set_capability(major: int, minor: int, data: VersionData) -> None:
    """The fake GPU's compute capability; clears the caches that captured the old one."""
    if _cc == [major, minor]:
        return
    _cc[:] = [major, minor]
    clear_capability_caches(data)


def _clear_module_caches(module: Any) -> None:
    for name in dir(module):
        fn = getattr(module, name, None)
        if callable(fn) and hasattr(fn, "cache_clear") and getattr(fn, "__module__", None) == module.__name__:
            fn.cache_clear()


def clear_capability_caches(data: VersionData) -> None:
    import vllm.platforms.cuda as cuda
    import vllm.utils.flashinfer as fi

    _clear_module_caches(fi)
    _clear_module_caches(cuda)
    with contextlib.suppress(ImportError):
        import vllm.v1.attention.ops.flashmla as fm

        _clear_module_caches(fm)
    _mark("cuda.capability_caches", data)


def boot(data: VersionData, platform: str, rocm_arch: str = "gfx942") -> Any:
    """Install the stubs, import vLLM's platform for `platform`, make it current; returns its class."""
    install_import_stubs(data, platform)
    if platform == "cuda":
        cls = _boot_cuda(data)
    elif platform == "rocm":
        cls = _boot_rocm(data, rocm_arch)
    elif platform == "cpu":
        cls = _boot_cpu(data)
    else:
        raise ValueError(f"Invalid platform: {platform!r}. Expected cuda, rocm or cpu.")
    _preimport_backends(data, platform)
    return cls


def _boot_cuda(data: VersionData) -> Any:
    import torch
    import vllm.platforms as P
    import vllm.platforms.cuda as cuda
    from vllm.platforms.interface import DeviceCapability

    cls = cuda.CudaPlatform
    cls.get_device_capability = classmethod(lambda klass, device_id=0: DeviceCapability(*_cc))
    _mark("cuda.get_device_capability", data)
    torch.cuda.get_device_capability = lambda device=None: (_cc[0], _cc[1])
    _mark("cuda.torch_device_capability", data)
    cls.get_device_name = classmethod(lambda klass, device_id=0: "CUDA")
    _mark("cuda.get_device_name", data)
    cls.num_compute_units = classmethod(lambda klass, device_id=0: 132)
    _mark("cuda.num_compute_units", data)
    P._current_platform = cls()
    _mark("cuda.current_platform", data)
    _artifactory_offline(data)
    return cls


def _artifactory_offline(data: VersionData) -> None:
    import vllm.utils.flashinfer as fi

    def has_nvidia_artifactory() -> bool:
        return bool(fi.has_flashinfer_cubin())  # the network probe answers False: no route here

    # not memoised: the cubin switch changes per config (a cache here would outlive it)
    fi.has_nvidia_artifactory = has_nvidia_artifactory
    _mark("cuda.artifactory_offline", data)


def _boot_rocm(data: VersionData, arch: str) -> Any:
    amdsmi = types.ModuleType("amdsmi")
    amdsmi.__file__ = "<stub amdsmi>"
    amdsmi.__path__ = []  # type: ignore[attr-defined]
    amdsmi.__spec__ = importlib.machinery.ModuleSpec("amdsmi", None, is_package=True)
    info = {"target_graphics_version": arch, "market_name": f"FakeAMD-{arch}"}
    attrs: dict[str, Any] = {
        "amdsmi_init": lambda *a, **k: None, "amdsmi_shut_down": lambda *a, **k: None,
        "amdsmi_get_processor_handles": lambda *a, **k: ["dev0"],
        "amdsmi_get_gpu_asic_info": lambda *a, **k: dict(info),
        "amdsmi_topo_get_link_type": lambda *a, **k: {"type": 0},
        "amdsmi_topo_get_numa_node_number": lambda *a, **k: 0,
        "amdsmi_get_gpu_device_uuid": lambda *a, **k: "00000000-0000-0000-0000-000000000000",
        "amdsmi_get_gpu_memory_total": lambda *a, **k: 192 << 30,
        "AmdSmiMemoryType": types.SimpleNamespace(VRAM=0, VIS_VRAM=1, GTT=2),
        "AmdSmiException": type("AmdSmiException", (Exception,), {}),
    }
    for k, v in attrs.items():
        setattr(amdsmi, k, v)
    sys.modules["amdsmi"] = amdsmi
    _mark("rocm.amdsmi", data)
    import vllm.platforms as P
    import vllm.platforms.rocm as rocm

    P._current_platform = rocm.RocmPlatform()
    _mark("rocm.current_platform", data)
    return rocm.RocmPlatform


def _boot_cpu(data: VersionData) -> Any:
    import vllm.platforms as P
    import vllm.platforms.cpu as cpu

    cpu.CpuPlatform.import_kernels = classmethod(lambda klass: None)
    _mark("cpu.import_kernels", data)
    P._current_platform = cpu.CpuPlatform()
    _mark("cpu.current_platform", data)
    return cpu.CpuPlatform


def _preimport_backends(data: VersionData, platform: str) -> None:
    """Import every backend module once with device='cuda' allocations sent to 'meta'."""
    import torch
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    originals: dict[str, Callable[..., Any]] = {n: getattr(torch, n) for n in ("empty", "zeros", "ones", "full")}

    def redirect(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            dev = kw.get("device")
            if dev is not None and str(dev).startswith("cuda"):
                kw["device"] = "meta"
            return fn(*a, **kw)
        return wrapper

    orig_props = torch.cuda.get_device_properties
    try:
        for n, f in originals.items():
            setattr(torch, n, redirect(f))
        torch.cuda.get_device_properties = lambda *a, **k: types.SimpleNamespace(  # type: ignore[assignment]
            multi_processor_count=132, name="FakeGPU", major=_cc[0], minor=_cc[1])
        for b in AttentionBackendEnum:
            if b.name in ("TORCH_SDPA", "CUSTOM", "NO_ATTENTION") or not b.value:
                continue
            if platform == "rocm" and b.name == "CPU_ATTN":
                continue
            try:
                b.get_class()
            except Exception as e:  # noqa: BLE001 - recorded; vLLM meets the same error itself
                import_failures[b.name] = f"{type(e).__name__}: {e}"
    finally:
        for n, f in originals.items():
            setattr(torch, n, f)
        torch.cuda.get_device_properties = orig_props  # type: ignore[assignment]
    _mark("import.meta_allocations", data)


class WarningCapture(logging.Handler):
    """Collects the INFO and WARNING records vLLM logs while one config is selected."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.messages: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelno, record.getMessage()))


@contextlib.contextmanager
def capture_warnings(data: VersionData) -> Iterator[list[tuple[int, str]]]:
    """(level, text) of what vLLM logs during the block; the *_once caches are cleared first."""
    import vllm.logger as vl

    for name in dir(vl):
        fn = getattr(vl, name, None)
        if callable(fn) and hasattr(fn, "cache_clear"):
            fn.cache_clear()
    _mark("logger.warning_once", data)
    handler = WarningCapture()
    logger = logging.getLogger("vllm")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
