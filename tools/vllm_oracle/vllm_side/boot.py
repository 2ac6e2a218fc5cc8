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
# What torch answers vLLM about the host CPU (cpu.host_isa): the rules' defaults until a config sets them.
cpu_isa: dict[str, bool] = {"amx": False, "avx512": True}


def set_cpu_isa(amx: bool, avx512: bool) -> None:
    """The host ISA the next selections see (attnsolve's cpu_amx / cpu_avx512 of the config)."""
    cpu_isa["amx"], cpu_isa["avx512"] = amx, avx512


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
        hook = STUB_IMPORT_HOOKS.get(module.__name__)
        if hook is not None:
            hook()


# what a stubbed extension's import does besides existing (the real .so registers its ops then)
STUB_IMPORT_HOOKS: dict[str, Callable[[], None]] = {}


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


class _UniversalMeta(_AnyAttrMeta):
    """Stand-ins that accept any use at module level: calling one returns a fresh stand-in (as a
    decorator, the function itself), and iteration, indexing, arithmetic and subclassing work, so a
    kernel library's importers define their kernels without running them."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        obj = _UniversalMeta(name, (), {"__module__": cls.__module__})
        setattr(cls, name, obj)
        return obj

    def __call__(cls, *a: Any, **k: Any) -> Any:
        if len(a) == 1 and callable(a[0]) and not k:
            return a[0]
        return _UniversalMeta("call", (), {"__module__": cls.__module__})

    def __iter__(cls) -> Iterator[Any]:
        return iter(())

    def __getitem__(cls, key: Any) -> Any:
        return _UniversalMeta("item", (), {"__module__": cls.__module__})

    def __or__(cls, other: Any) -> Any:
        return cls

    __ror__ = __add__ = __radd__ = __mul__ = __rmul__ = __sub__ = __rsub__ = __or__
    __truediv__ = __rtruediv__ = __floordiv__ = __mod__ = __pow__ = __neg__ = __or__

    def __bool__(cls) -> bool:
        return True

    def __int__(cls) -> int:
        return 0

    __index__ = __len__ = __int__

    def __mro_entries__(cls, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (object,)


class _UniversalModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        obj = _UniversalMeta(name, (), {"__module__": self.__name__})
        setattr(self, name, obj)
        return obj


class _UniversalLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        mod = _UniversalModule(spec.name)
        mod.__file__ = f"<stand-in {spec.name}>"
        mod.__path__ = []
        return mod

    def exec_module(self, module: types.ModuleType) -> None:
        stub_hits.append(module.__name__)


class _StubFinder(importlib.abc.MetaPathFinder):
    def __init__(self, empty: set[str], any_attr: set[str], universal: set[str] = frozenset()):  # type: ignore[assignment]
        self.empty = empty
        self.any_attr = any_attr
        self.universal = universal

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in self.empty:
            return importlib.machinery.ModuleSpec(fullname, _EmptyLoader())
        if fullname.split(".")[0] in self.universal:
            return importlib.machinery.ModuleSpec(fullname, _UniversalLoader(), is_package=True)
        if fullname.split(".")[0] in self.any_attr:
            return importlib.machinery.ModuleSpec(fullname, _AnyAttrLoader(), is_package=True)
        return None


PLATFORM_LIBRARIES = {"cuda": {"tokenspeed_mla", "b12x"}, "rocm": {"aiter"}, "cpu": set(), "xpu": {"vllm_xpu_kernels"}}


# absent libraries stubbed only once transformers has probed its optional dependencies (it would
# take a stub for the real library and ask for its version)
LATE_LIBRARIES = {"torchvision"}


def install_import_stubs(data: VersionData, platform: str) -> None:
    """Compiled extensions -> empty modules; absent libraries -> any-attribute packages."""
    roots = {"flashinfer"} | PLATFORM_LIBRARIES[platform]
    sys.meta_path.insert(0, _StubFinder(set(data.stub_modules), roots & set(data.any_attr_packages)))
    if "triton.active_driver" in data.patches:
        _triton_driver(platform, data)
    if "cuda.flashmla_op_schemas" in data.patches and platform == "cuda":
        STUB_IMPORT_HOOKS["vllm._flashmla_C"] = lambda: _flashmla_op_schemas(data)
    os.environ.setdefault("VLLM_HAS_FLASHINFER_CUBIN", "1")
    _mark("env.VLLM_HAS_FLASHINFER_CUBIN", data)
    os.environ["VLLM_CONFIGURE_LOGGING"] = "0"
    _mark("env.VLLM_CONFIGURE_LOGGING", data)


# the host Triton has no Intel backend: on XPU its NVIDIA driver stands for the XPU one (only
# vllm.triton_utils' "exactly one active driver" test reads the answer)
TRITON_DRIVERS = {"cuda": "nvidia", "rocm": "amd", "xpu": "nvidia"}


def _triton_driver(platform: str, data: VersionData) -> None:
    """Triton's GPU driver probe (torch.cuda.is_available() underneath) answers that the configured
    GPU is present, so vLLM imports the real Triton as on a GPU box instead of its placeholder
    (whose triton.language lacks dtypes that 0.33's kernel modules read at import)."""
    name = TRITON_DRIVERS.get(platform)
    if platform == "cpu" and "triton.cpu_driver" in data.patches:
        name = "nvidia"  # vLLM 0.34 refuses an x86 CPU without Triton: a deployment has triton-cpu
    if name is None:
        return
    try:
        from triton.backends import backends
    except ImportError:
        return
    if name in backends and backends[name].driver is not None:
        backends[name].driver.is_active = staticmethod(lambda: True)
        if platform == "cpu":
            _mark("triton.cpu_driver", data)
        else:
            _mark("triton.active_driver", data)


def _cutlass_capability_queries(data: VersionData) -> None:
    """The compiled CUTLASS capability queries vLLM 0.33 calls at import (quantization-kernel module
    constants such as w8a8_utils.CUTLASS_BLOCK_FP8_SUPPORTED) answer False: never read by attention
    selection, and the value is fixed per process while the GPU changes per config."""
    import torch

    if "cuda.cutlass_capability_queries" not in data.patches:
        return
    ns = torch.ops._C
    for op in ("cutlass_scaled_mm_supports_fp8", "cutlass_scaled_mm_supports_block_fp8",
               "cutlass_scaled_mm_supports_fp4"):
        setattr(ns, op, lambda cuda_device_capability: False)
    _mark("cuda.cutlass_capability_queries", data)


# The operator schemas the wheel's vllm/_flashmla_C.abi3.so registers (read from the 0.33.0 wheel's
# binary): vLLM 0.33 asks hasattr(torch.ops._flashmla_C, ...) whether the build carries the DeepSeek-V4.1
# mega-attention ops (models/deepseek_v41/nvidia/flash_mla_mega_attn.py).  Schemas only, no kernel.
FLASHMLA_OP_SCHEMAS = (
    "fused_norm_rope_attn_rope_cast_fwd(Tensor q, Tensor kv, Tensor indices, float sm_scale, int d_v, Tensor? attn_sink, "
    "Tensor? topk_length, bool enable_q_norm, float rms_norm_eps, Tensor token_positions, bool is_rope_neox_style, "
    "int rope_dim, Tensor cos_sin_cache, int n_wv_group, int num_per_channels, bool use_tma_aligned_col_major_sf, "
    "bool round_sf, bool use_packed_ue8m0, Tensor(d!)? out_fp8=None, Tensor(e!)? out_sf=None) -> Tensor[]",
    "fused_norm_rope_attn_rope_cast_decode(Tensor q, Tensor kv, Tensor indices, float sm_scale, int d_v, "
    "Tensor? attn_sink, Tensor? topk_length, Tensor? extra_kv, Tensor? extra_indices, Tensor? extra_topk_length, "
    "bool enable_q_norm, float rms_norm_eps, Tensor token_positions, bool is_rope_neox_style, int rope_dim, "
    "Tensor cos_sin_cache, int n_wv_group, int num_per_channels, bool use_tma_aligned_col_major_sf, bool round_sf, "
    "bool use_packed_ue8m0, Tensor(d!)? out_fp8=None, Tensor(e!)? out_sf=None) -> Tensor[]",
    "permute_q_b_proj(Tensor q_b_proj, Tensor scale_factors, int h_q, int d_q) -> Tensor[]",
    "permute_wv_proj(Tensor wv_proj, Tensor scale_factors, int wv_group_size, int d_o) -> Tensor[]",
)
_libraries: list[Any] = []  # torch.library objects must outlive the registration


def _flashmla_op_schemas(data: VersionData) -> None:
    """Importing the stubbed vllm._flashmla_C defines the mega-attention op schemas the real
    extension registers (hasattr answers as on a GPU build; calling one would fail: no kernel)."""
    import torch

    lib = torch.library.Library("_flashmla_C", "DEF")
    for schema in FLASHMLA_OP_SCHEMAS:
        lib.define(schema)
    _libraries.append(lib)
    _mark("cuda.flashmla_op_schemas", data)


def _flashinfer_sm90_mla(data: VersionData) -> None:
    """flashinfer.mla.BatchMLAPagedAttentionWrapper.run has FlashInfer >= 0.6.18's keyword-only
    `ckv_scale_arr` (vLLM 0.33 pins flashinfer-python==0.7.2.post1), which vLLM's
    has_flashinfer_sm90_nope_mla() feature-detects by signature; the stub's dummy has none."""
    if "cuda.flashinfer_sm90_mla_signature" not in data.patches:
        return
    import flashinfer.mla as fm

    def run(self: Any, q_nope: Any, q_pe: Any, ckv_cache: Any, kpe_cache: Any, out: Any = None,
            lse: Any = None, return_lse: bool = False, *, ckv_scale_arr: Any = None) -> Any:
        raise RuntimeError("flashinfer stub: BatchMLAPagedAttentionWrapper.run called while selecting")

    fm.BatchMLAPagedAttentionWrapper.run = run
    _mark("cuda.flashinfer_sm90_mla_signature", data)


def set_tokenspeed_mla(available: bool, data: VersionData) -> None:
    """The tokenspeed_mla package importable or not (attnsolve's tokenspeed_mla_available): the
    0.33 wheel requires it on Linux, so the stub package answers; False hides it (a None entry in
    sys.modules makes `import tokenspeed_mla` raise ImportError, as without the package)."""
    if "cuda.tokenspeed_mla_available" not in data.patches:
        return
    if available:
        if sys.modules.get("tokenspeed_mla", 0) is None:
            del sys.modules["tokenspeed_mla"]
    else:
        sys.modules["tokenspeed_mla"] = None  # type: ignore[assignment]
    _mark("cuda.tokenspeed_mla_available", data)


_b12x_paged: list[Any] = []


def set_b12x(available: bool, data: VersionData) -> None:
    """The b12x package (vllm[b12x]) installed or not (attnsolve's b12x_available): vLLM probes it
    once at import (vllm/utils/b12x.py keeps the imported submodules); False drops the paged-attention
    module from that probe's result, as on a box without the package."""
    if "cuda.b12x_available" not in data.patches:
        return
    import vllm.utils.b12x as b

    key = "b12x.attention.paged"
    if not _b12x_paged:
        _b12x_paged.append(b._B12X_SUBMODULES.get(key))
    b._B12X_SUBMODULES[key] = _b12x_paged[0] if available else None
    _mark("cuda.b12x_available", data)


def _aiter_mla_causal(data: VersionData) -> None:
    """aiter.mla.mla_decode_fwd has the `causal` parameter of aiter >= v0.1.20, which vLLM 0.33's
    rocm_aiter_ops.mla_decode_supports_non_causal() feature-detects by signature (raising otherwise);
    the stub's dummy has none."""
    if "rocm.aiter_mla_causal_signature" not in data.patches:
        return
    import aiter.mla as am

    def mla_decode_fwd(q: Any, kv_buffer: Any, o: Any, *args: Any, causal: bool = True, **kwargs: Any) -> Any:
        raise RuntimeError("aiter stub: mla_decode_fwd called while selecting")

    am.mla_decode_fwd = mla_decode_fwd
    _mark("rocm.aiter_mla_causal_signature", data)


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
    elif platform == "xpu":
        cls = _boot_xpu(data)
    else:
        raise ValueError(f"Invalid platform: {platform!r}. Expected cuda, rocm, cpu or xpu.")
    _cutlass_capability_queries(data)
    _preimport_backends(data, platform, rocm_arch)
    _preimport_op_modules(data)
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
    _flashinfer_sm90_mla(data)
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
    if "rocm.torch_device_queries" in data.patches:
        _rocm_torch_queries(data, arch)
    _aiter_mla_causal(data)
    return rocm.RocmPlatform


def _gfx_capability(arch: str) -> tuple[int, int]:
    """The (major, minor) a ROCm torch build reports for a gfx arch: gfx942 -> (9, 4), gfx90a -> (9, 0),
    gfx1100 -> (11, 0) (the digits before the last two are the major, the next one the minor)."""
    digits = arch.removeprefix("gfx")
    return int(digits[:-2]), int(digits[-2], 16)


def _rocm_torch_queries(data: VersionData, arch: str) -> None:
    """0.16's RocmPlatform asks torch for the device (get_device_capability, get_device_properties().gcnArchName)
    where 0.17 parses the arch it read through amdsmi: torch's ROCm build answers from the device, this CPU build
    raises "Torch not compiled with CUDA enabled"; both answer the configured arch here."""
    import torch

    cap = _gfx_capability(arch)
    torch.cuda.get_device_capability = lambda device=None: cap
    torch.cuda.get_device_properties = lambda *a, **k: types.SimpleNamespace(  # type: ignore[assignment]
        multi_processor_count=304, name=f"FakeAMD-{arch}", major=cap[0], minor=cap[1],
        gcnArchName=f"{arch}:sramecc+:xnack-")
    _mark("rocm.torch_device_queries", data)


def _boot_cpu(data: VersionData) -> Any:
    import vllm.platforms as P
    import vllm.platforms.cpu as cpu

    cpu.CpuPlatform.import_kernels = classmethod(lambda klass: None)
    _mark("cpu.import_kernels", data)
    import torch

    # the host's ISA, which vLLM asks torch for at selection time, is the configuration's (set_cpu_isa)
    torch.cpu._is_amx_tile_supported = lambda: cpu_isa["amx"]
    torch.cpu._is_avx512_supported = lambda: cpu_isa["avx512"]
    _mark("cpu.host_isa", data)
    P._current_platform = cpu.CpuPlatform()
    _mark("cpu.current_platform", data)
    return cpu.CpuPlatform


class _OpHandle:
    """Stands for a compiled op the stubbed extension would register (any overload, any attribute)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> "_OpHandle":
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _OpHandle(f"{self._name}.{attr}")

    def __call__(self, *a: Any, **k: Any) -> Any:
        raise RuntimeError(f"compiled op {self._name} called while selecting (the oracle stubs it)")


@contextlib.contextmanager
def _op_handles() -> Iterator[None]:
    """While a module is first imported: torch.ops._C.<op> for an op the stubbed extension did not
    register is an _OpHandle (module-level op references for graph pattern matching)."""
    from torch._ops import _OpNamespace

    orig = _OpNamespace.__getattr__

    def getattr_(self: Any, op_name: str) -> Any:
        try:
            return orig(self, op_name)
        except AttributeError:
            if op_name.startswith("__") or getattr(self, "name", "") not in ("_C", "_C_cache_ops", "_C_custom_ar"):
                raise
            return _OpHandle(f"torch.ops.{self.name}.{op_name}")

    _OpNamespace.__getattr__ = getattr_  # type: ignore[method-assign]
    try:
        yield
    finally:
        _OpNamespace.__getattr__ = orig  # type: ignore[method-assign]


# modules vLLM imports lazily while selecting that reference compiled ops at import
# (0.33: vllm.compilation.backends, for its model_tag, when adaptive verification is on)
OP_HANDLE_MODULES = ("vllm.compilation.backends",)


def _preimport_op_modules(data: VersionData) -> None:
    if "import.compiled_op_handles" not in data.patches:
        return
    import importlib

    with _op_handles():
        for name in OP_HANDLE_MODULES:
            try:
                importlib.import_module(name)
            except Exception as e:  # noqa: BLE001 - recorded; vLLM meets the same error itself
                import_failures[name] = f"{type(e).__name__}: {e}"
    _mark("import.compiled_op_handles", data)


XPU_DEFAULT_NAME = "FakeXPU"
_device_name: list[str] = [XPU_DEFAULT_NAME]


def set_device_name(name: str) -> None:
    """The configured XPU's name (attnsolve's xpu_device, e.g. "Arc A770")."""
    _device_name[0] = name


def _boot_xpu(data: VersionData) -> Any:
    import vllm.platforms as P
    import vllm.platforms.xpu as xpu

    cls = xpu.XPUPlatform
    cls.get_device_name = classmethod(lambda klass, device_id=0: _device_name[0])
    _mark("xpu.get_device_name", data)
    cls.num_compute_units = classmethod(lambda klass, device_id=0: 132)
    _mark("xpu.num_compute_units", data)
    P._current_platform = cls()
    _mark("xpu.current_platform", data)
    return cls


def _preimport_backends(data: VersionData, platform: str, rocm_arch: str = "gfx942") -> None:
    """Import every backend module once with device='cuda'/'xpu' allocations sent to 'meta'."""
    import torch
    import vllm.config  # noqa: F401 - transformers probes its optional libraries first (see LATE_LIBRARIES)
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    late = LATE_LIBRARIES & set(data.any_attr_packages)
    universal = set(data.universal_packages) if platform == "cuda" else set()
    if late or universal:
        sys.meta_path.insert(0, _StubFinder(set(), late, universal))
    originals: dict[str, Callable[..., Any]] = {n: getattr(torch, n) for n in ("empty", "zeros", "ones", "full")}

    def redirect(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            dev = kw.get("device")
            if dev is not None and str(dev).startswith(("cuda", "xpu")):
                kw["device"] = "meta"
            return fn(*a, **kw)
        return wrapper

    orig_props = torch.cuda.get_device_properties
    try:
        for n, f in originals.items():
            setattr(torch, n, redirect(f))
        # gcnArchName: the ROCm arch string; torch's CUDA builds answer the device name there
        arch = f"{rocm_arch}:sramecc+:xnack-" if platform == "rocm" else "FakeGPU"
        torch.cuda.get_device_properties = lambda *a, **k: types.SimpleNamespace(  # type: ignore[assignment]
            multi_processor_count=132, name="FakeGPU", major=_cc[0], minor=_cc[1], gcnArchName=arch)
        for b in AttentionBackendEnum:
            if b.name in ("TORCH_SDPA", "CUSTOM", "NO_ATTENTION") or not b.value:
                continue
            if platform == "rocm" and b.name == "CPU_ATTN":
                continue
            try:
                b.get_class()
            except Exception as e:  # noqa: BLE001 - recorded; vLLM meets the same error itself
                import_failures[b.name] = f"{type(e).__name__}: {e}"
        # platforms/rocm.py reads the GPU arch at import (amdsmi, else torch.cuda.get_device_properties().gcnArchName,
        # which torch's CUDA builds answer with the device name). 0.28 and later import it with some backend module;
        # 0.27's AITER FA imports it lazily in supports_compute_capability, which on this CPU torch would fail outside
        # this patch ("Torch not compiled with CUDA enabled") where a GPU machine's torch answers.
        try:
            importlib.import_module("vllm.platforms.rocm")
        except Exception as e:  # noqa: BLE001 - recorded like a backend's import failure
            import_failures["platforms.rocm"] = f"{type(e).__name__}: {e}"
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
