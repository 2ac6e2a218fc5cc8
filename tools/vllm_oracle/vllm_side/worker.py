"""Run vLLM's own selector on a batch of configurations (inside the isolated venv).

    python -m tools.vllm_oracle.vllm_side.worker --vllm 0.17.0 --platform cuda \
        [--rocm-arch gfx942] IN.jsonl OUT.jsonl
    python -m tools.vllm_oracle.vllm_side.worker --vllm 0.17.0 --platform cuda --patches

Each input line is {"id", "mode", "cfg"} (cfg: attnsolve Config fields); each output line is the
raw vLLM answer (see `select`).  Entry points, per mode:
  selector     vllm.v1.attention.selector.get_attn_backend, called as an Attention layer calls
               it, inside set_current_vllm_config; the structured per-backend reasons are read
               again through the platform's get_valid_backends / validate_configuration;
  startup      the platform's check_and_update_config(vllm_config) first (it may force a
               backend and sets the KV block size), then the selector as above;
  mla_prefill  0.16/0.17: vLLM's MLA prefill predicates (use_trtllm_ragged_deepseek_prefill,
               use_flashinfer_prefill, use_cudnn_prefill) in MLACommonImpl's order; releases
               with the MLA prefill registry (0.33): the layer's decode backend first, then
               MLAAttention.__init__'s own prefill statement (see _mla_prefill_registry).
One process per platform (and ROCm arch): the platform is a module-level fact in vLLM.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import os
import sys
import traceback
import types
from typing import Any, Callable

from ..versions import VersionData, load_version
from . import boot

ROCM_ENV = {"rocm_use_aiter": ("VLLM_ROCM_USE_AITER", False),
            "rocm_use_aiter_mha": ("VLLM_ROCM_USE_AITER_MHA", True),
            "rocm_use_aiter_mla": ("VLLM_ROCM_USE_AITER_MLA", True),
            "rocm_use_aiter_unified_attention": ("VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION", False),
            "use_prefill_decode_attention": ("VLLM_V1_USE_PREFILL_DECODE_ATTENTION", False)}


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class ModelFacts(types.SimpleNamespace):
    """Stand-in model_config carrying only the model facts selection reads (an input, not a
    patch); any other model_config attribute reads as None.  Its hf_config is a plain namespace
    holding only the given facts, since vLLM tests some with hasattr.  The head counts vLLM 0.33's
    FlashInfer asks for (query heads per GPU, KV heads) are the config's num_heads and num_kv_heads;
    unknown KV heads are the query heads (no GQA), unknown query heads 1."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None

    def get_num_attention_heads(self, parallel_config: Any = None) -> int:
        return int(self.num_heads or 1)

    def get_num_kv_heads(self, parallel_config: Any = None) -> int:
        return int(self.num_kv_heads or self.get_num_attention_heads())

    def get_head_size(self) -> int:
        return int(self.head_size or 0)


MODEL_KEYS = ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_topk", "kv_lora_rank")
# vLLM 0.33's AttentionSelectorConfig inputs the layer passes to get_attn_backend itself
LAYER_INPUTS = ("use_per_head_quant_scales", "has_sliding_window")
# ... and those it reads from the VllmConfig / environment (see _vllm_config): attnsolve field -> how
CONFIG_INPUTS = ("use_non_causal", "use_batch_invariant", "use_kv_connector", "use_pcp", "use_dcp",
                 "use_adaptive_verification", "use_rswa")


def model_facts(cfg: dict[str, Any], always: bool = False) -> ModelFacts | None:
    """The stand-in model_config for a config (an input, not a patch): its hf config holds only
    the given model facts (vLLM asks hasattr(hf_config, "index_topk")).  A non-MLA layer is a
    model without MLA fields, known exactly (vLLM reads a missing qk_nope_head_dim as 1); an MLA
    layer without its dimensions is a model whose dimensions attnsolve was not told: no model
    config, as in vLLM's own selector tests, so vLLM skips the model checks as attnsolve does."""
    given = {k: cfg[k] for k in MODEL_KEYS if cfg.get(k) is not None}
    if not given and cfg.get("use_mla") and not always and not cfg.get("use_rswa"):
        return None
    if cfg.get("use_mla") and "kv_lora_rank" not in given and cfg.get("qk_rope_head_dim") is not None:
        # an MLA layer's head size is kv_lora_rank + qk_rope_head_dim (MLAAttention), so the rank is known
        given["kv_lora_rank"] = int(cfg.get("head_size") or 576) - int(cfg["qk_rope_head_dim"])
    hf = types.SimpleNamespace(**given)
    # use_rswa: vLLM reads model_config.rswa_window is not None (a model with a rolling sliding window);
    # attn_type: the model's kind (ModelConfig.attn_type), which ROCm reads; encoder and cross-attention
    # layers exist only in encoder-decoder models, encoder-only layers only in encoder-only ones
    layer = cfg.get("attn_type") or "decoder"
    kind = "encoder_decoder" if cfg.get("encoder_decoder_model") or layer in ("encoder", "encoder_decoder") \
        else "encoder_only" if layer == "encoder_only" else "decoder"
    # is_mm_prefix_lm: the layer's use_mm_prefix comes from the model (attention.py: model_config.is_mm_prefix_lm),
    # and 0.33's FlashAttention reads it again (the FA4 head-256 fallback)
    return ModelFacts(hf_text_config=hf, hf_config=hf, is_hybrid=False, is_mm_prefix_lm=bool(cfg.get("use_mm_prefix")),
                      attn_type=kind,
                      use_mla=bool(cfg.get("use_mla")), num_heads=cfg.get("num_heads"),
                      num_kv_heads=cfg.get("num_kv_heads"), head_size=cfg.get("head_size"),
                      rswa_window=cfg.get("rswa_window") or (4096 if cfg.get("use_rswa") else None))


def error_kind(text: str) -> str:
    """vLLM's ValueErrors by their text: a requested backend that is invalid, no valid backend,
    or another refusal (ROCm/CPU decision trees, start-up checks)."""
    if text.startswith("Selected backend"):
        return "invalid_backend"
    if text.startswith("No valid attention backend"):
        return "no_valid"
    return "ValueError"


def _worker_function(name: str) -> Callable[..., Any]:
    """A function of vllm/v1/worker/utils.py, compiled from the release's own source with the module-level helpers
    it calls. Importing the module pulls in model code (0.17: quantization kernels queried at import, which the
    stubbed extension lacks) and logs lines of its own; the function itself needs only MultipleOf. Annotations are
    dropped (they name classes the module imports)."""
    import importlib.util

    from vllm.v1.attention.backend import MultipleOf

    spec = importlib.util.find_spec("vllm.v1.worker.utils")
    assert spec is not None and spec.origin is not None
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    if name not in defs:  # 0.16: a static method of GPUModelRunner (v1/worker/gpu_model_runner.py), same body
        spec = importlib.util.find_spec("vllm.v1.worker.gpu_model_runner")
        assert spec is not None and spec.origin is not None
        with open(spec.origin, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        runner = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GPUModelRunner")
        defs = {n.name: n for n in runner.body if isinstance(n, ast.FunctionDef) and n.name == name}
    wanted, todo = [], [name]
    while todo:  # the function and the module-level functions it calls
        fn = defs[todo.pop()]
        if fn in wanted:
            continue
        wanted.append(fn)
        todo += [n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id in defs and defs[n.id] not in wanted]
    for fn in wanted:
        fn.decorator_list = []
        for node in ast.walk(fn):
            if isinstance(node, ast.arg):
                node.annotation = None
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                node.returns = None
    namespace: dict[str, Any] = {"MultipleOf": MultipleOf}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), spec.origin, "exec"), namespace)
    return namespace[name]


def _cc(v: Any) -> tuple[int, int]:
    a, _, b = str(v).partition(".")
    return int(a), int(b or 0)


class Oracle:
    """One booted vLLM platform answering configs."""

    def __init__(self, data: VersionData, platform: str, rocm_arch: str = "gfx942"):
        self.data = data
        self.platform = platform
        self.rocm_arch = rocm_arch
        self.cls = boot.boot(data, platform, rocm_arch)
        import torch
        import vllm.config as C
        import vllm.v1.attention.selector as S
        from vllm.v1.attention.backends.registry import AttentionBackendEnum

        self.torch, self.C, self.S, self.E = torch, C, S, AttentionBackendEnum
        self.dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
        self.cubin = os.environ.get("VLLM_HAS_FLASHINFER_CUBIN") == "1"
        self.seen: list[Any] = []
        self._select_src = self._spy_selector_configs()
        self._common_block_size_fn: Callable[..., int] | None = None

    def _spy_selector_configs(self) -> str:
        """Record the AttentionSelectorConfig vLLM's get_attn_backend builds (every input as vLLM
        fills it from the layer, the VllmConfig and the environment) on its way to the platform's
        get_attn_backend_cls, which is then called unchanged.  Returns that method's source."""
        func = self.cls.get_attn_backend_cls.__func__
        seen = self.seen

        def get_attn_backend_cls(klass: Any, *args: Any, **kwargs: Any) -> Any:
            sc = kwargs.get("attn_selector_config", args[1] if len(args) > 1 else None)
            seen.append(sc)
            return func(klass, *args, **kwargs)

        get_attn_backend_cls.__wrapped__ = func  # type: ignore[attr-defined]
        self.cls.get_attn_backend_cls = classmethod(get_attn_backend_cls)
        boot._mark("observe.selector_config", self.data)
        return inspect.getsource(func)

    # -- inputs ---------------------------------------------------------------------------
    def _set_env(self, cfg: dict[str, Any]) -> None:
        """vLLM's environment switches for this config (TRT-LLM cubins, ROCm AITER flags)."""
        import vllm.envs as envs

        changed = False
        want = cfg.get("trtllm_available", True) is not False
        if want != self.cubin:
            os.environ["VLLM_HAS_FLASHINFER_CUBIN"] = "1" if want else "0"
            self.cubin = want
            changed = True
        invariant = "1" if cfg.get("use_batch_invariant") else "0"
        if os.environ.get("VLLM_BATCH_INVARIANT", "0") != invariant:
            os.environ["VLLM_BATCH_INVARIANT"] = invariant  # vLLM's own switch (envs.VLLM_BATCH_INVARIANT)
            changed = True
        if self.platform == "cpu":  # the host ISA is the config's, not the harness machine's (cpu.host_isa)
            amx, avx512 = cfg.get("cpu_amx"), cfg.get("cpu_avx512")
            boot.set_cpu_isa(False if amx is None else bool(amx), True if avx512 is None else bool(avx512))
        if self.platform == "rocm":
            for field, (var, default) in ROCM_ENV.items():
                v = cfg.get(field)
                val = "1" if (default if v is None else v) else "0"
                if os.environ.get(var) != val:
                    os.environ[var] = val
                    changed = True
        if changed:
            if "env.batch_invariant_module_flag" in self.data.patches:  # 0.18: read once, at the module's import
                from vllm.model_executor.layers import batch_invariant as BI

                boot._mark("env.batch_invariant_module_flag", self.data)
                BI.VLLM_BATCH_INVARIANT = BI._read_vllm_batch_invariant()
            if hasattr(envs, "disable_envs_cache"):
                envs.disable_envs_cache()
            if self.platform == "cuda":
                boot.clear_capability_caches(self.data)
            if self.platform == "rocm":
                from vllm._aiter_ops import rocm_aiter_ops

                rocm_aiter_ops.refresh_env_variables()

    def _vllm_config(self, cfg: dict[str, Any], mode: str) -> Any:
        C, E = self.C, self.E
        att: dict[str, Any] = {}
        fields = getattr(C.AttentionConfig, "__dataclass_fields__", {})
        if cfg.get("backend"):
            att["backend"] = E[cfg["backend"].upper()]
        if cfg.get("backend_per_kind") and "backend_per_kind" in fields:  # vLLM >= 0.26: per-KV-cache-group requests
            att["backend_per_kind"] = dict(cfg["backend_per_kind"])  # names parsed by AttentionConfig's own validator
        for k in ("flash_attn_version", "use_trtllm_attention", "use_prefill_decode_attention",
                  "disable_flashinfer_prefill", "use_cudnn_prefill", "use_trtllm_ragged_deepseek_prefill",
                  "use_non_causal"):
            if cfg.get(k) is not None and k in fields:
                if k == "use_prefill_decode_attention" and not cfg[k]:
                    continue
                att[k] = int(cfg[k]) if k == "flash_attn_version" else bool(cfg[k])
        if cfg.get("mla_prefill_backend") and "mla_prefill_backend" in fields:
            # vLLM parses the registry name; one VllmConfig serves the layer's decode selection and its prefill
            # (0.21's AttentionConfig reads it before refusing its deprecated cuDNN prefill switch)
            att["mla_prefill_backend"] = cfg["mla_prefill_backend"]
        vc = C.VllmConfig(attention_config=C.AttentionConfig(**att))
        self._run_cache_dtype(vc, cfg)
        model = model_facts(cfg)
        if mode == "mla_prefill" and "mla_prefill_backend" in fields:
            # the prefill registry reads model_config.dtype and the dims (0 when absent, as attnsolve
            # renders unknown dims); the decode step before it asks as selector mode does
            model = model_facts(cfg, always=True)
            model.dtype = self.dtypes[cfg.get("dtype") or "bfloat16"]
        if model is not None:
            object.__setattr__(vc, "model_config", model)
        self._config_inputs(vc, cfg)
        return vc

    def _config_inputs(self, vc: Any, cfg: dict[str, Any]) -> None:
        """The selector inputs vLLM 0.33 reads from the VllmConfig, set where vLLM reads them (inputs,
        not patches): context parallelism sizes > 1, a KV-transfer connector, adaptive verification.
        Assigned after construction: their cross-checks need a distributed set-up, not selection."""
        pc = vc.parallel_config
        if cfg.get("use_pcp"):
            object.__setattr__(pc, "prefill_context_parallel_size", 2)
        if cfg.get("use_dcp") or (cfg.get("dcp_size") or 1) > 1:
            object.__setattr__(pc, "decode_context_parallel_size", int(cfg.get("dcp_size") or 2))
        if cfg.get("use_kv_connector"):
            object.__setattr__(vc, "kv_transfer_config",
                               self.C.KVTransferConfig(kv_connector="NixlConnector", kv_role="kv_both"))
        if cfg.get("use_adaptive_verification"):
            object.__setattr__(vc, "speculative_config", ModelFacts(enable_adaptive_verification=True))
        if cfg.get("use_non_causal") and "use_non_causal" not in getattr(self.C.AttentionConfig, "__dataclass_fields__", {}):
            # 0.20 has no AttentionConfig.use_non_causal: its selector derives it from a DFlash speculative
            # config (v1/attention/selector.py: speculative_config.method == "dflash"), which is the input here
            object.__setattr__(vc, "speculative_config", ModelFacts(method="dflash"))

    def _run_cache_dtype(self, vc: Any, cfg: dict[str, Any]) -> None:
        """The run's KV-cache dtype (--kv-cache-dtype: cache_config.cache_dtype), which the layer passes
        to the selector and which 0.33's FlashAttention reads again run-wide (FA4's head-256 fallback,
        the SM 9.x FP8 page); set where versions.toml lists input.cache_dtype (an input, not a patch)."""
        data = self.data
        kv = cfg.get("kv_cache_dtype")
        if "input.cache_dtype" not in data.patches or not kv:
            return
        vc.cache_config.cache_dtype = kv
        boot._mark("input.cache_dtype", data)

    def _set_block_size(self, vc: Any, block_size: int | None) -> None:
        cc = vc.cache_config
        cc.block_size = block_size
        if hasattr(cc, "user_specified_block_size"):
            object.__setattr__(cc, "user_specified_block_size", block_size is not None)

    # -- modes ------------------------------------------------------------------------------
    def select(self, cfg: dict[str, Any], mode: str) -> dict[str, Any]:
        if self.platform == "cuda":
            major, minor = _cc(cfg.get("compute_capability", "9.0"))
            boot.set_capability(major, minor, self.data)
        if self.platform == "xpu":
            boot.set_device_name(cfg.get("xpu_device") or boot.XPU_DEFAULT_NAME)
        self._set_env(cfg)
        if self.platform == "cuda":
            boot.set_tokenspeed_mla(cfg.get("tokenspeed_mla_available", True) is not False, self.data)
            boot.set_b12x(cfg.get("b12x_available", True) is not False, self.data)
        if mode == "mla_prefill":
            return self._mla_prefill(cfg)
        saved = dict(os.environ) if mode == "startup" else None
        try:
            with boot.capture_warnings(self.data) as logged:
                out = self._select(cfg, mode, logged)
        finally:
            if saved is not None:  # CPU's start-up hook sets process variables (LD_PRELOAD, thread counts): per item
                os.environ.clear()
                os.environ.update(saved)
        out["warnings"] = [m for level, m in logged if level >= 30]
        out["logged"] = [m for level, m in logged if level < 30]
        return out

    def _selector_config(self, cfg: dict[str, Any], block_size: int | None) -> Any:
        S = self.S
        use_mla = bool(cfg.get("use_mla"))
        values = dict(head_size=cfg.get("head_size") or (576 if use_mla else 128),
                      dtype=self.dtypes[cfg.get("dtype") or "bfloat16"],
                      kv_cache_dtype=cfg.get("kv_cache_dtype") or "auto", block_size=block_size,
                      use_mla=use_mla, has_sink=bool(cfg.get("has_sink")), use_sparse=bool(cfg.get("use_sparse")),
                      use_mm_prefix=bool(cfg.get("use_mm_prefix")), attn_type=self._attn_type(cfg),
                      **{k: bool(cfg.get(k)) for k in LAYER_INPUTS + CONFIG_INPUTS})
        # only the fields this release has (the NamedTuple's own defaults for the rest)
        return S.AttentionSelectorConfig(**{k: v for k, v in values.items() if k in S.AttentionSelectorConfig._fields})

    def _attn_type(self, cfg: dict[str, Any]) -> Any:
        """The layer's attention type as real layers pass it: vLLM's AttentionType member (a str Enum;
        texts print it as AttentionType.DECODER), where versions.toml lists input.attn_type_enum."""
        name = cfg.get("attn_type") or "decoder"
        data = self.data
        if "input.attn_type_enum" not in data.patches:
            return name
        from vllm.v1.attention.backend import AttentionType

        boot._mark("input.attn_type_enum", data)
        return AttentionType(name)

    def _select(self, cfg: dict[str, Any], mode: str, warnings: list[tuple[int, str]]) -> dict[str, Any]:
        S, E = self.S, self.E
        if cfg.get("backend") and cfg["backend"].upper() not in E.__members__:
            return {"ok": False, "kind": "unknown_backend", "error": f"Unknown attention backend: '{cfg['backend'].upper()}'"}
        try:
            vc = self._vllm_config(cfg, mode)
        except ValueError as e:  # vLLM refuses the configuration itself (0.21's removed cuDNN prefill switch)
            return {"ok": False, "kind": "config_error", "error": _validation_text(e)}
        warnings.clear()  # only what the start-up hook and the selector log counts
        block = cfg.get("block_size")
        self._set_block_size(vc, block)
        out: dict[str, Any] = {}
        if mode == "startup":
            if vc.model_config is None:  # start-up always has a model (the generator gives MLA ones dims)
                object.__setattr__(vc, "model_config", model_facts(cfg, always=True))
            if isinstance(vc.model_config, ModelFacts) and vc.model_config.max_model_len is None:
                vc.model_config.max_model_len = 8192  # a model has one: CPU's hook sizes MLA batches from it
            try:
                self.cls.check_and_update_config(vc)
            except (ValueError, RuntimeError) as e:  # the hook's own refusal (XPU: batch invariance with a quantized
                # KV cache; 0.17 CPU: a quantized KV cache with chunked prefill or prefix caching, both on by default)
                kind = error_kind(str(e)) if isinstance(e, ValueError) else type(e).__name__
                return {"ok": False, "kind": kind, "error": str(e)}
            be = vc.attention_config.backend
            out["startup_backend"] = be.name if be is not None else None
            out["startup_block_size"] = vc.cache_config.block_size
            block = vc.cache_config.block_size
            # the worker's device check (before any attention layer asks for a backend)
            if hasattr(self.cls, "check_if_supports_dtype"):
                boot._mark("cuda.check_if_supports_dtype", self.data)
                try:
                    self.cls.check_if_supports_dtype(self.dtypes[cfg.get("dtype") or "bfloat16"])
                except ValueError as e:
                    return {**out, "ok": False, "kind": error_kind(str(e)), "error": str(e)}
                except NotImplementedError:  # the base Platform's: CPU's worker has no device dtype check
                    pass
            if cfg.get("use_batch_invariant") and "startup.batch_invariance_gate" in self.data.patches:
                refused = self._batch_invariance_gate(vc)
                if refused is not None:
                    return {**out, "ok": False, "kind": "RuntimeError", "error": refused}
        use_mla = bool(cfg.get("use_mla"))
        sel_cfg = self._selector_config(cfg, block)
        with self.C.set_current_vllm_config(vc):
            S._cached_get_attn_backend.cache_clear()
            kwargs: dict[str, Any] = dict(use_mla=use_mla, has_sink=sel_cfg.has_sink, use_sparse=sel_cfg.use_sparse,
                                          use_mm_prefix=sel_cfg.use_mm_prefix, attn_type=sel_cfg.attn_type,
                                          num_heads=cfg.get("num_heads"),
                                          **{k: bool(cfg.get(k)) for k in LAYER_INPUTS})
            kwargs = {k: v for k, v in kwargs.items() if _accepts(S.get_attn_backend, k)}
            args: list[Any] = [sel_cfg.head_size, sel_cfg.dtype, sel_cfg.kv_cache_dtype]
            if _accepts(S.get_attn_backend, "block_size"):
                args.append(block)
            self.seen.clear()
            try:
                bc = S.get_attn_backend(*args, **kwargs)
                out.update(ok=True, backend=self._enum_name(bc), get_name=bc.get_name())
                if mode == "startup" and not getattr(vc.cache_config, "user_specified_block_size", True):
                    self._executor_block_size(out, vc, bc)
                if mode == "startup":
                    built = self._rocm_impl_init(bc, sel_cfg, cfg)
                    if built is not None:
                        return {**out, "ok": False, "kind": built[0], "error": built[1]}
                    failure = self._common_block_size(out.get("startup_block_size", block), bc, sel_cfg)
                    if failure is not None:
                        return {**out, "ok": False, "kind": "ValueError", "error": failure}
            except ValueError as e:
                out.update(ok=False, error=str(e))
            except (AssertionError, RuntimeError, NotImplementedError) as e:
                return {**out, "ok": False, "kind": type(e).__name__, "error": str(e)}
            if self.seen and self.seen[-1] is not None:
                sel_cfg = self.seen[-1]  # exactly what vLLM built from the inputs
                out["selector_config"] = {k: str(v) for k, v in sel_cfg._asdict().items()}
            if self.platform == "cuda":
                self._cuda_details(out, vc, sel_cfg, cfg)
            elif not out["ok"]:
                out["kind"] = error_kind(out["error"])
        return out

    def _batch_invariance_gate(self, vc: Any) -> str | None:
        """The worker's batch-invariance gate (0.19: init_worker_distributed_environment calls
        init_batch_invariance(attention_config.backend) after the device's dtype check, before any layer exists):
        vLLM's own override_envs_for_invariance on the backend check_and_update_config left, its RuntimeError text
        or None. The variables it sets for the run (NCCL, cuBLAS workspace ...) are put back after it."""
        from vllm.model_executor.layers import batch_invariant as BI

        boot._mark("startup.batch_invariance_gate", self.data)
        saved = dict(os.environ)
        try:
            BI.override_envs_for_invariance(vc.attention_config.backend)
        except RuntimeError as e:
            return str(e)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return None

    def _rocm_impl_init(self, bc: Any, sel_cfg: Any, cfg: dict[str, Any]) -> tuple[str, str] | None:
        """0.16 / 0.17 on ROCm: the chosen ROCM_ATTN or ROCM_AITER_UNIFIED_ATTN layer's impl built as the model's
        Attention layer builds it (RocmAttentionImpl.__init__ validates the head size and, at 0.16, refuses encoder
        self-attention; both run before any device work): (exception class, text), or None."""
        if self.platform != "rocm" or "startup.rocm_impl_init" not in self.data.patches:
            return None
        if self._enum_name(bc) not in ("ROCM_ATTN", "ROCM_AITER_UNIFIED_ATTN"):
            return None
        boot._mark("startup.rocm_impl_init", self.data)
        heads = int(cfg.get("num_heads") or 8)
        try:
            bc.get_impl_cls()(heads, sel_cfg.head_size, sel_cfg.head_size ** -0.5, heads, None, None,
                              str(sel_cfg.kv_cache_dtype), None, sel_cfg.attn_type)
        except (ValueError, NotImplementedError) as e:
            return type(e).__name__, str(e)
        return None

    def _common_block_size(self, block: int | None, bc: Any, sel_cfg: Any) -> str | None:
        """The model runner's kernel block size for the layer's KV cache group (v1/worker/utils.py
        select_common_block_size, when the KV cache is laid out after the model loads): vLLM's own function on the
        chosen backend and the start-up block size; its ValueError text, or None. Encoder self-attention has no KV
        cache group (an encoder-only layer's EncoderOnlyAttentionSpec is skipped, an encoder layer has no spec)."""
        attn_type = str(getattr(sel_cfg, "attn_type", "")).lower().rsplit(".", 1)[-1]
        if block is None or attn_type in ("encoder", "encoder_only"):
            return None
        boot._mark("startup.common_block_size", self.data)
        if self._common_block_size_fn is None:
            self._common_block_size_fn = _worker_function("select_common_block_size")
        fn = self._common_block_size_fn
        params = list(inspect.signature(fn).parameters)
        group = [types.SimpleNamespace(backend=bc)] if "attn_groups" in params else [bc]  # 0.17: AttentionGroups
        try:
            fn(block, group)
        except ValueError as e:
            return str(e)
        return None

    def _executor_block_size(self, out: dict[str, Any], vc: Any, bc: Any) -> None:
        """Where the start-up hook leaves the KV block size unset (0.33), the executor sets it once the
        model's layers have their backends (Platform.update_block_size_for_backend, phase 1): the
        backend's preferred size for vLLM's default, computed here by vLLM's own
        _preferred_block_size_for_backends for the one backend the layer chose."""
        data = self.data
        if "startup.executor_block_size" not in data.patches:
            return
        from vllm.config.cache import CacheConfig

        boot._mark("startup.executor_block_size", data)
        if "update_block_size_for_backend" in vars(self.cls):
            # the platform's own override, run as the executor runs it (ROCm 0.18, XPU 0.18-0.19, CPU 0.19-0.20: a
            # no-op, the start-up hook's size stays; CPU 0.22-0.30: hybrid models only; CPU 0.31+: its own default,
            # 128; XPU 0.20+: the generic step, then its GDN alignment), with the model's attention layers being the one
            # layer asked about (every release finds them through get_layers_from_vllm_config, imported where called)
            import vllm.config.vllm as VC

            layer = types.SimpleNamespace(get_attn_backend=lambda: bc)
            found = VC.get_layers_from_vllm_config
            VC.get_layers_from_vllm_config = lambda *args, **kwargs: {"model.layers.0.self_attn.attn": layer}
            try:
                self.cls.update_block_size_for_backend(vc)
            finally:
                VC.get_layers_from_vllm_config = found
            out["startup_block_size"] = vc.cache_config.block_size
        elif hasattr(self.cls, "_preferred_block_size_for_backends"):
            out["startup_block_size"] = self.cls._preferred_block_size_for_backends(
                [bc], CacheConfig.DEFAULT_BLOCK_SIZE, vc)
        else:  # 0.30: phase 1 asks the one backend directly, under the run's config
            from vllm.config.vllm import set_current_vllm_config

            with set_current_vllm_config(vc):
                out["startup_block_size"] = bc.get_preferred_block_size(CacheConfig.DEFAULT_BLOCK_SIZE)

    def _enum_name(self, bc: Any) -> str:
        qual = f"{bc.__module__}.{bc.__qualname__}"
        for b in self.E:
            if b.value and b.get_path() == qual:
                return b.name
        # a platform's own subclass outside the registry (0.33 XPU: XPUFlashAttnMLABackend) goes
        # by the name it reports, when that is a backend name
        name = bc.get_name() if hasattr(bc, "get_name") else None
        return name if name in self.E.__members__ else qual

    def _reasons_of(self, backend: Any, cap: Any, sc: Any) -> list[str] | None:
        """The backend's reasons as validate_configuration returns them; None where it raises a ValueError
        (0.34's AITER MLA with adaptive verification and DCP): the selection's error is then that text."""
        try:
            return list(backend.get_class().validate_configuration(device_capability=cap, **sc._asdict()))
        except (ImportError, OSError) as e:
            return [f"{type(e).__name__}: {e}"]
        except ValueError:
            return None

    def _cuda_details(self, out: dict[str, Any], vc: Any, sel_cfg: Any, cfg: dict[str, Any]) -> None:
        """Structured reasons (as get_attn_backend_cls computes them) and the variant facts."""
        import vllm.platforms.cuda as cuda

        cls = self.cls
        cap = cls.get_device_capability()
        # 0.16/0.17 drop the block size before validating; later releases keep it
        sc = sel_cfg._replace(block_size=None) if "block_size=None" in self._select_src else sel_cfg
        requested = vc.attention_config.backend
        per_kind = getattr(vc.attention_config, "backend_per_kind", None)
        if per_kind:  # the layer's request as get_attn_backend looks its kind up (vLLM >= 0.26)
            kind = self.S.get_attn_spec_kind(use_mla=bool(cfg.get("use_mla")),
                                        has_sliding_window=bool(getattr(sc, "has_sliding_window", False)),
                                        attn_type=sc.attn_type)
            requested = per_kind.get(kind.value, requested)
        num_heads = cfg.get("num_heads")
        if requested is not None:
            reasons = self._reasons_of(requested, cap, sc)
            out["reasons"] = {requested.name: [] if reasons is None else reasons}  # raised: no reasons
            if not out["ok"]:
                out["kind"] = "invalid_backend"
        else:
            kw = {"num_heads": num_heads} if _accepts(cls.get_valid_backends, "num_heads") else {}
            _, reasons = cls.get_valid_backends(cap, sc, **kw)
            out["reasons"] = {b.name: list(r[1] if isinstance(r, tuple) else r) for b, r in reasons.items()}
            f = cuda._get_backend_priorities
            inner = getattr(f, "__wrapped__", f)
            pkw: dict[str, Any] = {"use_mla": sc.use_mla, "device_capability": cap}
            extra = dict(num_heads=num_heads, kv_cache_dtype=sc.kv_cache_dtype,
                         use_non_causal=getattr(sc, "use_non_causal", False), head_size=sc.head_size,
                         use_mm_prefix=sc.use_mm_prefix)
            pkw.update({k: v for k, v in extra.items() if _accepts(inner, k)})
            params = list(inspect.signature(inner).parameters)
            out["priority"] = [b.name for b in f(**{k: v for k, v in pkw.items() if k in params})]
            if not out["ok"]:
                out["kind"] = "no_valid"
        if not out["ok"] and out.get("kind") == "invalid_backend":
            msg = out["error"]
            i = msg.find("Reason: ")
            if i >= 0:
                try:
                    if ast.literal_eval(msg[i + 8:]) != out["reasons"][requested.name]:
                        out["reason_parse_mismatch"] = True
                except (ValueError, SyntaxError):
                    pass
        if out["ok"] and out["backend"] == "FLASH_ATTN":
            # the layer's version (FlashAttentionImpl asks with its head size), with what resolving it logs
            import vllm.v1.attention.backends.fa_utils as fa

            g = fa.get_flash_attn_version
            if _accepts(g, "supports_fa4_hd256"):
                # 0.32+: FlashAttentionImpl.__init__'s own call opts into FA4's Blackwell head-256 kernel
                # (flash_attn.py: requires_alibi, head_size, has_sinks, requires_softcap, supports_fa4_hd256=True);
                # the bare call would fall back to FA2 there without a word
                out["fa_version"] = g(requires_alibi=bool(cfg.get("use_alibi")), head_size=sc.head_size,
                                      has_sinks=bool(sc.has_sink), requires_softcap=bool(cfg.get("has_logit_softcap")),
                                      supports_fa4_hd256=True)
            else:  # FlashAttentionImpl.__init__'s own call, whatever it passes (0.27: the sliding window, sinks)
                out["fa_version"] = self._impl_fa_call(cfg, sc, g)
            if "flash_attn.impl_upgrade" in self.data.patches:
                out["fa_version"] = self._impl_fa_version(out["fa_version"], sc.head_size)
        elif out["ok"] and out["backend"] == "FLASH_ATTN_DIFFKV":
            import vllm.v1.attention.backends.fa_utils as fa

            g = fa.get_flash_attn_version
            if _accepts(g, "head_size_v"):
                # 0.33+: FlashAttentionDiffKVImpl re-derives the version it runs with its class's V head size (128
                # unless a model set another), ALiBi and sinks (flash_attn_diffkv.py)
                from vllm.v1.attention.backends.flash_attn_diffkv import FlashAttentionDiffKVBackend as DiffKV

                out["fa_version"] = g(requires_alibi=bool(cfg.get("use_alibi")), head_size=sc.head_size,
                                      head_size_v=DiffKV.head_size_v, has_sinks=bool(sc.has_sink))
            else:  # 0.17: FlashAttentionImpl's own call, which the DiffKV impl keeps
                out["fa_version"] = g(head_size=sc.head_size) if _accepts(g, "head_size") else g()
        if out["ok"] and out["backend"] == "FLASHINFER":
            import vllm.utils.flashinfer as fi

            forced = fi.force_use_trtllm_attention() if hasattr(fi, "force_use_trtllm_attention") else None
            out["trtllm"] = bool(fi.supports_trtllm_attention()) and forced is not False

    def _impl_fa_call(self, cfg: dict[str, Any], sc: Any, g: Any) -> Any:
        """FlashAttentionImpl.__init__'s `self.vllm_flash_attn_version = get_flash_attn_version(...)` statement, compiled
        from the release's source and run with the layer's arguments as the config gives them (ALiBi slopes, a
        sliding window, sinks, a soft cap: present or not), so the version is the one the layer asks for (0.27 passes
        requires_local_attention and has_sinks; 0.17 to 0.28 requires_alibi)."""
        import textwrap

        from vllm.v1.attention.backends import flash_attn as FA

        code = getattr(self, "_impl_fa_call_code", None)
        if code is None:
            tree = ast.parse(textwrap.dedent(inspect.getsource(FA.FlashAttentionImpl.__init__)))
            stmts = [st for st in ast.walk(tree) if isinstance(st, ast.Assign)
                     and ast.unparse(st.targets[0]) == "self.vllm_flash_attn_version"
                     and "get_flash_attn_version" in ast.unparse(st.value)]
            if len(stmts) != 1:
                raise RuntimeError(f"FlashAttentionImpl.__init__: {len(stmts)} get_flash_attn_version statements")
            code = self._impl_fa_call_code = compile(ast.Module(body=stmts, type_ignores=[]),
                                                     "<FlashAttentionImpl.__init__ get_flash_attn_version>", "exec")
        cap = 30.0 if cfg.get("has_logit_softcap") else 0
        layer = types.SimpleNamespace(logits_soft_cap=cap)
        local = {"self": layer, "head_size": sc.head_size,
                 "alibi_slopes": [0.5] if cfg.get("use_alibi") else None,
                 "sliding_window": 4096 if getattr(sc, "has_sliding_window", False) or cfg.get("has_sliding_window")
                 else None,
                 "sinks": object() if getattr(sc, "has_sink", False) else None,
                 "logits_soft_cap": cap or None}
        exec(code, dict(vars(FA), get_flash_attn_version=g), local)  # noqa: S102 - vLLM's own statement
        return layer.vllm_flash_attn_version

    def _impl_fa_version(self, version: Any, head_size: int) -> Any:
        """FlashAttentionImpl.__init__'s own statements after its get_flash_attn_version call that change the version
        (0.20: FA3 -> FA4 for head_size > 256 on SM 9.x), compiled from the release's source and run with a stand-in
        layer, as the layer runs them."""
        import textwrap

        from vllm.v1.attention.backends import flash_attn as FA

        code = getattr(self, "_impl_fa_code", None)
        if code is None:
            tree = ast.parse(textwrap.dedent(inspect.getsource(FA.FlashAttentionImpl.__init__)))
            stmts = [st for st in tree.body[0].body  # type: ignore[attr-defined]
                     if isinstance(st, ast.If) and "self.vllm_flash_attn_version =" in ast.unparse(st)]
            code = self._impl_fa_code = compile(ast.Module(body=stmts, type_ignores=[]),
                                                "<FlashAttentionImpl.__init__ FA version>", "exec")
        boot._mark("flash_attn.impl_upgrade", self.data)
        layer = types.SimpleNamespace(vllm_flash_attn_version=version)
        exec(code, dict(vars(FA)), {"self": layer, "head_size": head_size})  # noqa: S102 - vLLM's own statement
        return layer.vllm_flash_attn_version

    def _mla_prefill(self, cfg: dict[str, Any]) -> dict[str, Any]:
        try:
            import vllm.v1.attention.backends.mla.prefill.selector as PS  # the registry (vLLM >= 0.18)
        except ImportError:
            return self._mla_prefill_predicates(cfg)
        with boot.capture_warnings(self.data) as logged:
            out = self._mla_prefill_registry(cfg, PS, logged)
        out["warnings"] = [m for level, m in logged if level >= 30]
        out["logged"] = [m for level, m in logged if level < 30]
        return out

    def _mla_prefill_registry(self, cfg: dict[str, Any], PS: Any, logged: list[tuple[int, str]]) -> dict[str, Any]:
        """The MLA prefill backend as MLAAttention.__init__ gets it: the decode backend first (a failure
        there is the layer's failure), its KV-cache dtype canonicalised, then the layer's own prefill
        statement (`if self.impl.is_sparse and not (...): ... else: try: get_mla_prefill_backend(...)`),
        taken from vLLM's source and run with a stand-in layer; the chosen prefill backend is then
        constructed as the layer constructs it (its FA version).  Structured reasons: every prefill
        backend's validate_configuration result, observed in the order vLLM asked."""
        import vllm.model_executor.layers.attention.mla_attention as M

        dec = self._select(cfg, "selector", logged)  # as selector mode asks it (same model config)
        if not dec.get("ok"):  # compared in selector mode; here only that the layer fails before prefill
            return {**{k: v for k, v in dec.items() if k in ("ok", "kind", "error")}, "stage": "decode"}
        if dec["backend"] not in self.E.__members__:
            return {"ok": False, "kind": "crash", "error": f"decode backend outside the registry: {dec['backend']}"}
        backend_cls = self.E[dec["backend"]].get_class()
        kv = self._canonical_kv(M, backend_cls, cfg.get("kv_cache_dtype") or "auto")
        layer = self._mla_layer(cfg, backend_cls, kv)
        vc = self._vllm_config(cfg, "mla_prefill")
        seen = self._observe_prefill_validation()
        seen.clear()
        chosen: list[Any] = []

        def get_mla_prefill_backend(vllm_config: Any) -> Any:  # vLLM's, its answer recorded
            chosen.append(PS.get_mla_prefill_backend(vllm_config))
            return chosen[-1]

        scope = dict(vars(M), get_mla_prefill_backend=get_mla_prefill_backend)
        local = {"self": layer, "vllm_config": vc, "prefill_backend_cls": None}
        logged.clear()  # only what the prefill step logs counts (the decode step's lines: selector mode)
        out: dict[str, Any] = {"decode_backend": dec["backend"], "kv_cache_dtype": kv}
        with self.C.set_current_vllm_config(vc):
            PS._auto_select_mla_prefill_backend.cache_clear()
            try:
                exec(self._layer_prefill_code(M), scope, local)  # noqa: S102 - vLLM's own statement
            except ValueError as e:
                text = str(e)
                kind = ("invalid_backend" if text.startswith("Selected MLA prefill backend")
                        else "no_valid" if text.startswith("No valid") else "ValueError")
                return {**out, "ok": False, "kind": kind, "error": text, "reasons": dict(seen),
                        "priority": list(seen)}
            except Exception as e:  # noqa: BLE001 - constructing the chosen backend needs a device
                if not chosen:
                    raise
                out["construct_error"] = f"{type(e).__name__}: {e}"
        out["priority"] = list(seen)
        out["reasons"] = dict(seen)
        if not chosen:  # skipped, or a sparse layer's failure swallowed: the top-k MQA path only
            out.update(ok=True, backend="NO_PREFILL")
            return out
        out.update(ok=True, backend=self._prefill_enum_name(chosen[-1]))
        if self.platform == "cuda" and hasattr(layer.prefill_backend, "vllm_flash_attn_version"):
            out["fa_version"] = layer.prefill_backend.vllm_flash_attn_version  # FLASH_ATTN's, as it built it
        return out

    def _layer_decode(self, cfg: dict[str, Any]) -> dict[str, Any] | None:
        """The MLA layer's decode backend first, as MLAAttention.__init__ selects it before its impl exists (0.16 to
        0.20): the layer's failure there (stage "decode"), or NO_PREFILL when the chosen impl is a
        SparseMLAAttentionImpl (no prefill path); None when the prefill switches decide."""
        boot._mark("mla_prefill.decode_first", self.data)
        with boot.capture_warnings(self.data) as logged:
            dec = self._select(cfg, "selector", logged)
        if not dec.get("ok"):
            return {**{k: v for k, v in dec.items() if k in ("ok", "kind", "error")}, "stage": "decode"}
        if dec["backend"] in self.E.__members__ and _no_prefill_layer(self.E[dec["backend"]].get_class()):
            return {"ok": True, "backend": "NO_PREFILL", "decode_backend": dec["backend"]}
        return None

    def _mla_layer(self, cfg: dict[str, Any], backend_cls: Any, kv: str) -> Any:
        """A stand-in MLAAttention with what its prefill statement reads: the layer's dimensions and
        its impl's is_sparse / supports_dense_mha_prefill, the latter as the impl's own __init__
        statements that assign it leave it (run from vLLM's source: the rest of an impl's
        construction needs a device)."""
        import textwrap

        import vllm.model_executor.layers.attention.mla_attention as M

        nope, rope, v = (int(cfg.get(k) or 0) for k in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"))
        head = int(cfg.get("head_size") or 576)
        rank = int(cfg.get("kv_lora_rank") or head - rope)
        heads = int(cfg.get("num_heads") or 128)
        impl_cls = backend_cls.get_impl_cls()
        # (an impl's supports_dense_mha_prefill is 0.27's, its is_sparse 0.26's; older layer statements do not read them)
        impl = types.SimpleNamespace(is_sparse=getattr(impl_cls, "is_sparse", False),
                                     supports_dense_mha_prefill=getattr(impl_cls, "supports_dense_mha_prefill", True),
                                     qk_nope_head_dim=nope, qk_rope_head_dim=rope, v_head_dim=v, kv_lora_rank=rank,
                                     num_heads=heads, head_size=head, kv_cache_dtype=kv)
        args = dict(self=impl, num_heads=heads, head_size=head, kv_cache_dtype=kv, sinks=None, kv_lora_rank=rank,
                    qk_nope_head_dim=nope, qk_rope_head_dim=rope, v_head_dim=v, qk_head_dim=nope + rope)
        for klass in reversed(impl_cls.__mro__):
            init = klass.__dict__.get("__init__")
            if init is None or not hasattr(init, "__code__"):
                continue
            try:
                tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
            except (OSError, TypeError, SyntaxError):
                continue
            for stmt in tree.body[0].body:  # type: ignore[attr-defined]
                if isinstance(stmt, (ast.If, ast.Assign)) and "self.supports_dense_mha_prefill" in ast.unparse(stmt):
                    code = compile(ast.Module(body=[stmt], type_ignores=[]), f"<{klass.__qualname__}.__init__>", "exec")
                    exec(code, sys.modules[klass.__module__].__dict__, dict(args))  # noqa: S102
        data = self.data
        if "mla_prefill.layer_statement" in data.patches:  # listed where the registry exists (0.33)
            boot._mark("mla_prefill.layer_statement", data)
        # (the layer's own supports_dense_mha_prefill is 0.29's; 0.28's statement reads the impl's alone)
        return types.SimpleNamespace(impl=impl, supports_dense_mha_prefill=getattr(M.MLAAttention, "supports_dense_mha_prefill", True),
                                     num_heads=heads, scale=1.0, kv_lora_rank=rank, qk_nope_head_dim=nope,
                                     qk_rope_head_dim=rope, v_head_dim=v, prefill_backend=None)

    def _canonical_kv(self, M: Any, backend_cls: Any, kv: str) -> str:
        """The KV-cache dtype MLAAttention.__init__ hands on: vLLM's _canonicalize_sparse_mla_kv_cache_dtype from
        0.24 on; 0.23's inline `if ... == 'FLASHMLA_SPARSE' ...: kv_cache_dtype = 'fp8_ds_mla'` statement, compiled
        from its source and run with a stand-in layer and cache config."""
        if hasattr(M, "_canonicalize_sparse_mla_kv_cache_dtype"):
            return M._canonicalize_sparse_mla_kv_cache_dtype(backend_cls, kv)
        code = getattr(self, "_canonical_kv_code", None)
        if code is None:
            import textwrap

            tree = ast.parse(textwrap.dedent(inspect.getsource(M.MLAAttention.__init__)))
            body = tree.body[0].body  # type: ignore[attr-defined]
            stmt = next(s for s in body if isinstance(s, ast.If) and "'FLASHMLA_SPARSE'" in ast.unparse(s.test)
                        and "fp8_ds_mla" in ast.unparse(s.test))
            code = self._canonical_kv_code = compile(ast.Module(body=[stmt], type_ignores=[]),
                                                     "<MLAAttention.__init__ KV dtype>", "exec")
        local = {"self": types.SimpleNamespace(attn_backend=backend_cls), "kv_cache_dtype": kv,
                 "cache_config": types.SimpleNamespace(cache_dtype=kv)}
        exec(code, dict(vars(M)), local)  # noqa: S102 - vLLM's own statement
        return str(local["kv_cache_dtype"])

    def _layer_prefill_code(self, M: Any) -> Any:
        """MLAAttention.__init__'s prefill statement, compiled from vLLM's source."""
        code = getattr(self, "_prefill_code", None)
        if code is None:
            import textwrap

            tree = ast.parse(textwrap.dedent(inspect.getsource(M.MLAAttention.__init__)))
            body = tree.body[0].body  # type: ignore[attr-defined]
            # an `if` around the prefill backend's `try` from 0.27 on (the dense-MHA skip); 0.26's is the `try` itself;
            # 0.25's two plain statements (the class from get_mla_prefill_backend, then the backend constructed from it)
            i = next(k for k, s in enumerate(body) if "get_mla_prefill_backend" in ast.unparse(s))
            stmts = body[i:i + 1] if isinstance(body[i], (ast.If, ast.Try)) else body[i:i + 2]
            code = self._prefill_code = compile(ast.Module(body=stmts, type_ignores=[]),
                                                "<MLAAttention.__init__ prefill>", "exec")
        return code

    def _observe_prefill_validation(self) -> dict[str, list[str]]:
        """Record every prefill backend's validate_configuration answer (by its registry name, in
        the order vLLM asks); each original runs unchanged."""
        seen = getattr(self, "_prefill_seen", None)
        if seen is not None:
            return seen
        from vllm.v1.attention.backends.mla.prefill.registry import MLAPrefillBackendEnum as PE

        seen = self._prefill_seen = {}
        classes = []
        for member in PE:
            if not member.value:
                continue
            try:
                classes.append((member.name, member.get_class()))
            except ImportError:
                continue
        originals = [(name, klass, klass.validate_configuration.__func__) for name, klass in classes]
        for name, klass, func in originals:
            def validate(k: Any, *a: Any, _f: Any = func, _n: str = name, **kw: Any) -> Any:
                got = _f(k, *a, **kw)
                seen[_n] = list(got)
                return got

            klass.validate_configuration = classmethod(validate)
        data = self.data
        if "observe.mla_prefill_validation" in data.patches:
            boot._mark("observe.mla_prefill_validation", data)
        return seen

    def _prefill_enum_name(self, klass: Any) -> str:
        from vllm.v1.attention.backends.mla.prefill.registry import MLAPrefillBackendEnum as PE

        qual = f"{klass.__module__}.{klass.__qualname__}"
        for member in PE:
            if member.value and member.get_path() == qual:
                return member.name
        return qual

    def _mla_prefill_predicates(self, cfg: dict[str, Any]) -> dict[str, Any]:
        import vllm.model_executor.layers.attention.mla_attention as M
        import vllm.utils.flashinfer as fi
        import vllm.v1.attention.backends.fa_utils as fa

        if "mla_prefill.decode_first" in self.data.patches:
            layer = self._layer_decode(cfg)
            if layer is not None:  # the layer failed at its decode backend, or has no prefill path
                return layer

        M.has_nvidia_artifactory = fi.has_nvidia_artifactory  # imported by name: the offline one
        available = cfg.get("flashinfer_available", True) is not False
        M.has_flashinfer = (lambda: True) if available else (lambda: False)
        boot._mark("mla_prefill.has_flashinfer", self.data)
        vc = self._vllm_config(cfg, "mla_prefill")
        preds = [("TRTLLM_RAGGED_DEEPSEEK", "use_trtllm_ragged_deepseek_prefill"),
                 ("FLASHINFER_PREFILL", "use_flashinfer_prefill"), ("CUDNN_PREFILL", "use_cudnn_prefill")]
        for _, name in preds:
            fn = getattr(M, name, None)
            if fn is not None and hasattr(fn, "cache_clear"):
                fn.cache_clear()
        out: dict[str, Any] = {"ok": True}
        with self.C.set_current_vllm_config(vc):
            for backend, name in preds:
                fn = getattr(M, name, None)
                if fn is not None and fn():
                    out["backend"] = backend
                    break
            else:
                refusal = self._fa_prefill_refusal(cfg, M)
                if refusal is not None:  # MLACommonImpl.__init__'s RuntimeError: the layer cannot be built
                    return {"ok": False, "kind": "no_valid", "error": refusal}
                out["backend"] = "FLASH_ATTN_PREFILL"
                hd = (cfg.get("qk_nope_head_dim") or 0) + (cfg.get("qk_rope_head_dim") or 0)
                g = fa.get_flash_attn_version
                out["fa_version"] = g(head_size=hd or None) if _accepts(g, "head_size") else g()
        return out

    def _fa_prefill_refusal(self, cfg: dict[str, Any], M: Any) -> str | None:
        """MLACommonImpl.__init__'s FlashAttention prefill as a ROCm or XPU build runs it (0.16 to 0.20): mla_attention.py's
        own module-level import of flash_attn_varlen_func re-run with that build's modules (vllm.vllm_flash_attn
        raises ImportError without CUDA's _vllm_fa2_C / _vllm_fa3_C; upstream flash_attn as the config's
        rocm_flash_attn_found says; XPU's vllm._xpu_ops present), then the impl's own `if flash_attn_varlen_func is
        None: raise RuntimeError(...)`: its text, or None. On CUDA the venv's own import is the build's."""
        if self.platform == "cuda" or "mla_prefill.fa_import_per_build" not in self.data.patches:
            return None
        code = getattr(self, "_fa_import_code", None)
        if code is None:
            import textwrap

            tree = ast.parse(inspect.getsource(M))
            imp = [st for st in tree.body if isinstance(st, ast.Try) and "vllm.vllm_flash_attn" in ast.unparse(st)
                   and "flash_attn_varlen_func" in ast.unparse(st)]
            init = ast.parse(textwrap.dedent(inspect.getsource(M.MLACommonImpl.__init__)))
            check = [n for n in ast.walk(init) if isinstance(n, ast.If)
                     and ast.unparse(n.test) == "flash_attn_varlen_func is None"]
            if len(imp) != 1 or len(check) != 1:
                raise RuntimeError(f"mla_attention.py: {len(imp)} flash_attn import statements, {len(check)} checks")
            code = self._fa_import_code = (
                compile(ast.Module(body=imp, type_ignores=[]), "<mla_attention.py flash_attn import>", "exec"),
                compile(ast.fix_missing_locations(ast.Module(body=[ast.If(test=check[0].test, body=check[0].body,
                                                                          orelse=[])], type_ignores=[])),
                        "<MLACommonImpl.__init__ FlashAttention check>", "exec"))
        boot._mark("mla_prefill.fa_import_per_build", self.data)
        import builtins

        def varlen(*a: Any, **k: Any) -> Any:  # stands for a build's kernel: selection never calls it
            raise RuntimeError("a stand-in for a build's FlashAttention varlen kernel")

        present = {"vllm._xpu_ops": types.SimpleNamespace(xpu_ops=types.SimpleNamespace(flash_attn_varlen_func=varlen))}
        absent = {"vllm.vllm_flash_attn"}
        if cfg.get("rocm_flash_attn_found", True) is False:
            absent.add("flash_attn")
        else:
            present["flash_attn"] = types.SimpleNamespace(flash_attn_varlen_func=varlen)
        real = builtins.__import__

        def build_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
            if name in absent:
                raise ImportError(f"No module named {name!r} in a {self.platform} build")
            if name in present:
                return present[name]
            return real(name, globals, locals, fromlist, level)

        scope = dict(vars(M), __builtins__=dict(vars(builtins), __import__=build_import))
        exec(code[0], scope)  # noqa: S102 - vLLM's own module-level statement
        try:
            exec(code[1], scope)  # noqa: S102 - vLLM's own statement
        except RuntimeError as e:
            return str(e)
        return None


def _no_prefill_layer(backend_cls: Any) -> bool:
    """Whether the decode backend's implementation is one of vLLM's SparseMLAAttentionImpl (0.17 to 0.20): such a
    layer sends every token through forward_mqa, and its impl's __init__ never reads the prefill switches."""
    from vllm.v1.attention.backend import SparseMLAAttentionImpl

    return issubclass(backend_cls.get_impl_cls(), SparseMLAAttentionImpl)


def run_batch(oracle: Oracle, lines: list[str]) -> list[dict[str, Any]]:
    results = []
    for line in lines:
        item = json.loads(line)
        try:
            r = oracle.select(item["cfg"], item["mode"])
        except Exception as e:  # noqa: BLE001 - a crash of vLLM's own code is a result too
            r = {"ok": False, "kind": "crash", "error": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()[-1500:]}
        r["id"] = item["id"]
        results.append(r)
    return results


def _validation_text(e: ValueError) -> str:
    """vLLM's own refusal inside pydantic's ValidationError (its config dataclasses validate with pydantic, which
    wraps the ValueError a __post_init__ raises in "1 validation error for AttentionConfig ..."), else the text."""
    errors = getattr(e, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
        except Exception:  # noqa: BLE001 - not pydantic's: the text as it is
            return str(e)
        inner = (first.get("ctx") or {}).get("error")
        return str(inner) if inner is not None else str(first.get("msg", e))
    return str(e)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tools.vllm_oracle.vllm_side.worker")
    ap.add_argument("--vllm", required=True)
    ap.add_argument("--platform", required=True, choices=("cuda", "rocm", "cpu", "xpu"))
    ap.add_argument("--rocm-arch", default="gfx942")
    ap.add_argument("--patches", action="store_true", help="boot, then print the stubs/patches applied as JSON")
    ap.add_argument("paths", nargs="*")
    a = ap.parse_args(argv)
    data = load_version(a.vllm)
    oracle = Oracle(data, a.platform, a.rocm_arch)
    if a.patches:
        if a.platform == "cuda":
            oracle.select({"compute_capability": "8.0"}, "selector")
        json.dump({"applied": boot.applied, "stub_hits": sorted(set(boot.stub_hits)),
                   "import_failures": boot.import_failures}, sys.stdout)
        return 0
    src, dst = a.paths
    with open(src) as f:
        lines = [ln for ln in f if ln.strip()]
    results = run_batch(oracle, lines)
    with open(dst, "w") as g:
        for r in results:
            g.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
