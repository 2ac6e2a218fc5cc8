"""Generated configurations: grids plus random draws from attnsolve's rule-set domains.

An `Item` is one question for both sides: which vLLM entry point (mode), on which platform
process (platform, ROCm arch), for which attnsolve Config fields (cfg).  Domains (dtypes, KV
dtypes, block sizes, attention types, FA versions, ROCm archs, GPU generations, backend names)
are read from the rules through `attnsolve.load_rules()`; only head sizes (an infinite domain)
and the MLA model dimensions are listed here.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

MODES = ("selector", "startup", "mla_prefill")
PLATFORMS = ("cuda", "rocm", "cpu", "xpu")
# vLLM 0.33's new AttentionSelectorConfig inputs (vllm/v1/attention/selector.py): drawn only where
# attnsolve's Config takes them (the rule set declares them); the vLLM side sets each where vLLM
# reads it (the layer's arguments, the VllmConfig, VLLM_BATCH_INVARIANT)
SELECTOR_INPUTS = ("use_per_head_quant_scales", "has_sliding_window", "use_non_causal", "use_batch_invariant",
                   "use_kv_connector", "use_pcp", "use_adaptive_verification", "use_dcp", "use_rswa")
# head sizes: a common set plus odd ones (the rules express head sizes as predicates)
HEADS = (64, 80, 96, 128, 256)
WIDE_HEADS = (32, 40, 64, 72, 80, 96, 100, 112, 128, 160, 192, 256, 512, 576)
# (qk_nope_head_dim, qk_rope_head_dim, v_head_dim) of MLA models: DeepSeek-V3 and smaller variants
MLA_DIMS = ((128, 64, 128), (64, 64, 64), (128, 64, 64))
NUM_HEADS = (None, 1, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class Domains:
    """The value sets configs are drawn from (from the rule set)."""

    dtypes: tuple[str, ...]
    kv_cache_dtypes: tuple[str, ...]
    block_sizes: tuple[int, ...]
    attn_types: tuple[str, ...]
    flash_attn_versions: tuple[int, ...]
    rocm_archs: tuple[str, ...]
    ccs: tuple[str, ...]
    grid_ccs: tuple[str, ...]
    backends: tuple[str, ...]
    platforms: tuple[str, ...] = ("cuda", "rocm", "cpu")
    inputs: tuple[str, ...] = ()  # the SELECTOR_INPUTS attnsolve's Config takes for this version
    # valued inputs a newer rule set declares, with the values drawn (where Config takes them)
    valued: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    # MLA prefill registry names Config takes as mla_prefill_backend (vLLM >= 0.18); empty: 0.17's switches
    prefill_requests: tuple[str, ...] = ()
    # ... and the ones drawn on ROCm: those and AITER's prefill where the release has it (0.24 has none)
    rocm_prefill_requests: tuple[str, ...] = ()
    # ROCm archs where the harness venv has a FlashAttention varlen function (AITER's; versions.toml)
    rocm_fa_from_aiter: tuple[str, ...] = ("gfx1250",)
    # the deprecated MLA prefill switches a release with the prefill registry still takes (0.21: AttentionConfig
    # migrates them onto mla_prefill_backend, or refuses use_cudnn_prefill); empty elsewhere
    switches: tuple[str, ...] = ()
    # platforms whose rules model the MLA layer around prefill selection (an `mla_prefill` step: its decode backend
    # first, sparse layers without a prefill path) or give a layer no prefill backend by a `no_prefill` list
    layer_platforms: tuple[str, ...] = ()
    # AttentionConfig.backend_per_kind's kinds (vLLM >= 0.26: the rules' derived attn_spec_kind); empty before
    kinds: tuple[str, ...] = ()

    def values_of(self, field: str) -> tuple[Any, ...]:
        return dict(self.valued).get(field, ())

    @classmethod
    def from_rules(cls, version: str | None = None) -> "Domains":
        from .attnsolve_side import accepts, load_rules_for

        rules = load_rules_for(version)
        d = rules.domains
        ccs = {str(v["compute_capability"]) for v in rules.gpus.values() if "compute_capability" in v}
        ccs |= set(rules.generations)
        ordered = tuple(sorted(ccs, key=lambda s: tuple(int(x) for x in s.split("."))))
        grid = tuple(c for c in ordered if c in ("7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0")) or ordered
        decode = {b for pl in rules.lists if _role(pl) != "mla_prefill" for b in _list_backends(pl)}
        prefill = {b for pl in rules.lists if _role(pl) == "mla_prefill" for b in _list_backends(pl)}
        # requestable backends: every backend except the MLA-prefill kernels (not vLLM backends; 0.34's
        # ROCM_AITER_FLYDSL_FP8 is in no list, so its role tells) and a
        # platform's own class that is requested under another registry name (`requested_as`: 0.33's
        # FLASH_ATTN_MLA_XPU is --attention-backend FLASH_ATTN_MLA on XPU; no vLLM release knows its name), nor
        # a class only model code builds (`model_built`: 0.33's CPU_V4_MLA_SPARSE; no registry name either)
        backends = tuple(sorted(b for b, be in rules.backends.items()
                                if (b in decode or b not in prefill) and getattr(be, "role", "") != "mla_prefill"
                                and not getattr(be, "requested_as", None)
                                and not getattr(be, "model_built", False)))
        requests = _prefill_requests(rules, version)
        switches = tuple(f for f in PREFILL_SWITCHES if f in rules.fields) if requests else ()
        aiter = ("ROCM_AITER_FA",) if accepts("mla_prefill_backend", "ROCM_AITER_FA", version) else ()
        return cls(dtypes=tuple(d["dtype"]), kv_cache_dtypes=tuple(d["kv_cache_dtype"]),
                   block_sizes=tuple(d["block_size"]), attn_types=tuple(d["attn_type"]),
                   flash_attn_versions=tuple(d["flash_attn_version"]), rocm_archs=tuple(d["rocm_arch"]),
                   ccs=ordered, grid_ccs=grid, backends=backends,
                   platforms=tuple(p for p in PLATFORMS if p in d.get("platform", ("cuda", "rocm", "cpu"))),
                   inputs=tuple(f for f in SELECTOR_INPUTS if accepts(f, True, version)),
                   valued=_valued(rules, version), prefill_requests=requests, rocm_prefill_requests=requests + aiter,
                   switches=switches,
                   layer_platforms=tuple(sorted({pl.platform for pl in rules.lists
                                                 if getattr(pl, "no_prefill", False)
                                                 or getattr(pl, "mla_prefill", None) is not None})),
                   kinds=tuple(rules.derived["attn_spec_kind"].values) if "attn_spec_kind" in rules.derived else ())


def _prefill_requests(rules: Any, version: str | None) -> tuple[str, ...]:
    """The MLA prefill registry names of the CUDA prefill backends, where Config takes a prefill request."""
    from .attnsolve_side import accepts

    names = tuple(sorted({getattr(b, "vllm_name", "") or b.name for b in rules.backends.values()
                          if getattr(b, "role", "") == "mla_prefill" and "cuda" in getattr(b, "platforms", ())}))
    return names if names and accepts("mla_prefill_backend", names[0], version) else ()


def _valued(rules: Any, version: str | None) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """Valued inputs of newer rule sets the vLLM side can give: KV heads (the stand-in model
    config), the decode context-parallel size (parallel config), the XPU device name and the
    tokenspeed_mla package's absence (the worker hides the stub package)."""
    from .attnsolve_side import accepts

    xpus = tuple(sorted(n for n, g in getattr(rules, "gpus", {}).items() if g.get("platform") == "xpu"))
    wanted = (("num_kv_heads", (1, 2, 4, 8)), ("dcp_size", (2, 4, 8)), ("xpu_device", xpus),
              ("tokenspeed_mla_available", (False,)), ("kv_lora_rank", (512,)))
    return tuple((f, vals) for f, vals in wanted if vals and accepts(f, vals[0], version))


def _role(pl: Any) -> str | None:
    for lit in getattr(pl, "when", ()):
        if getattr(lit, "field", None) == "role":
            return getattr(lit.pred, "eq", None)
    return None


def _list_backends(pl: Any) -> tuple[str, ...]:
    for name in ("backends", "order", "entries"):
        v = getattr(pl, name, None)
        if isinstance(v, (tuple, list)):
            return tuple(x if isinstance(x, str) else getattr(x, "backend", str(x)) for x in v)
    return ()


@dataclass(frozen=True)
class Item:
    """One configuration for both sides."""

    id: str
    category: str
    mode: str
    platform: str
    cfg: Mapping[str, Any]

    @property
    def process(self) -> tuple[str, str]:
        """(platform, rocm arch): configs sharing it run in one vLLM process."""
        return (self.platform, str(self.cfg.get("rocm_arch") or "") if self.platform == "rocm" else "")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "category": self.category, "mode": self.mode, "platform": self.platform,
                "cfg": dict(self.cfg)}


def base(platform: str = "cuda", **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = dict(platform=platform, dtype="bfloat16", kv_cache_dtype="auto", block_size=None,
                             head_size=128, use_mla=False, use_sparse=False, has_sink=False, use_mm_prefix=False,
                             attn_type="decoder", num_heads=None, backend=None)
    if platform == "cuda":
        d["compute_capability"] = "9.0"
    d.update(kw)
    return d


# -- grids -------------------------------------------------------------------------------------
def grid_standard(D: Domains) -> Iterator[dict[str, Any]]:
    blocks = (None, 16, 32, 64, 128)
    kvs = tuple(k for k in D.kv_cache_dtypes if k not in ("fp8_inc", "fp8_ds_mla"))
    for cc, dt, kv, bs, hs in itertools.product(D.grid_ccs, D.dtypes, kvs, blocks, HEADS):
        yield base(compute_capability=cc, dtype=dt, kv_cache_dtype=kv, block_size=bs, head_size=hs)


def grid_mla(D: Domains) -> Iterator[dict[str, Any]]:
    kvs = tuple(k for k in D.kv_cache_dtypes if k != "fp8_inc")
    for cc, dt, kv, bs, sp, nh in itertools.product(D.grid_ccs, D.dtypes, kvs, (None, 16, 32, 64, 128),
                                                    (False, True), (None, 16, 128)):
        yield base(compute_capability=cc, dtype=dt, kv_cache_dtype=kv, block_size=bs, head_size=576,
                   use_mla=True, use_sparse=sp, num_heads=nh)


def grid_features(D: Domains) -> Iterator[dict[str, Any]]:
    kvs = tuple(k for k in D.kv_cache_dtypes if k not in ("fp8_inc", "fp8_ds_mla"))
    for cc, dt, kv, hs in itertools.product(D.grid_ccs, D.dtypes, kvs, HEADS):
        yield base(compute_capability=cc, dtype=dt, kv_cache_dtype=kv, head_size=hs, has_sink=True)
        yield base(compute_capability=cc, dtype=dt, kv_cache_dtype=kv, head_size=hs, use_mm_prefix=True)
        for at in D.attn_types:
            if at != "decoder":
                yield base(compute_capability=cc, dtype=dt, kv_cache_dtype=kv, head_size=hs, attn_type=at)


def grid_requested(D: Domains, seed: int = 99) -> Iterator[dict[str, Any]]:
    """Every backend requested on home configs of each generation and on a random sample."""
    rng = random.Random(seed)
    samples = []
    for cc in D.grid_ccs:
        samples += [base(compute_capability=cc), base(compute_capability=cc, use_mla=True, head_size=576),
                    base(compute_capability=cc, use_mla=True, use_sparse=True, head_size=576)]
    for _ in range(60):
        mla = rng.random() < 0.4
        samples.append(base(compute_capability=rng.choice(D.grid_ccs), dtype=rng.choice(D.dtypes),
                            kv_cache_dtype=rng.choice(D.kv_cache_dtypes[:5]), head_size=576 if mla else rng.choice(HEADS),
                            use_mla=mla, use_sparse=mla and rng.random() < 0.4, has_sink=rng.random() < 0.2,
                            block_size=rng.choice((None, 16, 32, 64, 128))))
    for s in samples:
        for b in D.backends:
            yield dict(s, backend=b)


def grid_startup(D: Domains) -> Iterator[dict[str, Any]]:
    """MLA with model facts (start-up forces backends and block sizes from them)."""
    kvs = tuple(k for k in D.kv_cache_dtypes if k != "fp8_inc")
    for cc, dt, kv, sp, qk, bs, nh in itertools.product(D.grid_ccs, D.dtypes, kvs, (False, True), (128, 64),
                                                        (None, 16, 64), (None, 16, 128)):
        dims = next(m for m in MLA_DIMS if m[0] == qk)
        d = base(compute_capability=cc, dtype=dt, kv_cache_dtype=kv, block_size=bs, head_size=576, use_mla=True,
                 use_sparse=sp, num_heads=nh, qk_nope_head_dim=dims[0], qk_rope_head_dim=dims[1], v_head_dim=dims[2])
        if sp:
            d["index_topk"] = 2048
        yield d
    for cc, dt, kv, hs in itertools.product(D.grid_ccs, D.dtypes, ("auto", "fp8"), HEADS):
        yield base(compute_capability=cc, dtype=dt, kv_cache_dtype=kv, head_size=hs)


# vLLM 0.33's MLA prefill registry: FlashAttention's layouts (prefill/flash_attn.py) and one it refuses.
# Its NoPE layout (256, 0, 256) is left out: attnsolve's Config takes no qk_rope_head_dim of 0 yet.
PREFILL_DIMS = ((128, 64, 128), (192, 64, 256), (64, 64, 128), (128, 64, 64))
PREFILL_SWITCHES = ("use_trtllm_ragged_deepseek_prefill", "disable_flashinfer_prefill", "use_cudnn_prefill")


def _prefill_registry(D: Domains, cc: str, dims: Any, dtype: str, sparse: bool, kv: str, request: Any,
                      fav: Any, num_heads: Any = None) -> dict[str, Any]:
    """An MLA layer asking the prefill registry (vLLM >= 0.18).  tokenspeed-mla is absent from the
    harness venv, so the config says so (its prefill backend answers the install hint)."""
    c = base(compute_capability=cc, dtype=dtype, kv_cache_dtype=kv, use_mla=True, head_size=576, use_sparse=sparse,
             num_heads=num_heads, tokenspeed_mla_available=False)
    if sparse and not dims:  # a sparse layer exists only in a model with index_topk (and its dimensions)
        dims = PREFILL_DIMS[0]
    if dims:
        c.update(qk_nope_head_dim=dims[0], qk_rope_head_dim=dims[1], v_head_dim=dims[2],
                 head_size=512 + dims[1])  # kv_lora_rank 512 + qk_rope_head_dim, as MLAAttention builds it
        if sparse:
            c["index_topk"] = 2048
    if request is not None:
        c["mla_prefill_backend"] = request
    if fav is not None:
        c["flash_attn_version"] = fav
    return c


def grid_mla_prefill(D: Domains) -> Iterator[dict[str, Any]]:
    ccs = D.grid_ccs + tuple(c for c in ("10.3", "11.0") if c in D.ccs)
    if D.prefill_requests:
        for cc, dims, dt, sp, kv, req, fav in itertools.product(
                ccs, (None,) + PREFILL_DIMS, ("bfloat16", "float16"), (False, True), ("auto", "fp8"),
                (None,) + D.prefill_requests, (None,) + D.flash_attn_versions):
            yield _prefill_registry(D, cc, dims, dt, sp, kv, req, fav)
        # the deprecated switches (0.21), alone and in pairs, with and without a prefill request
        for on in [(f,) for f in D.switches] + list(itertools.combinations(D.switches, 2)):
            for cc, req in itertools.product(("9.0", "10.0"), (None, "FLASHINFER", "TRTLLM_RAGGED")):
                if req is None or req in D.prefill_requests:
                    yield {**_prefill_registry(D, cc, PREFILL_DIMS[0], "bfloat16", False, "auto", req, None),
                           **{f: True for f in on}}
        return
    for cc, dims, fav_ok, trt, dis, cud, tav, fav in itertools.product(
            ccs, (None,) + MLA_DIMS, (True, False), (True, False), (False, True), (False, True), (True, False),
            (None,) + D.flash_attn_versions):
        c = base(compute_capability=cc, use_mla=True, head_size=576, flashinfer_available=fav_ok,
                 use_trtllm_ragged_deepseek_prefill=trt, disable_flashinfer_prefill=dis, use_cudnn_prefill=cud,
                 trtllm_available=tav)
        if dims:
            c.update(qk_nope_head_dim=dims[0], qk_rope_head_dim=dims[1], v_head_dim=dims[2])
        if fav is not None:
            c["flash_attn_version"] = fav
        yield c
    # sparse layers (DeepSeek-V3.2 style): before the registry their decode backend's impl decides whether the layer
    # has a prefill path at all (the harness asks the decode backend first where versions.toml says so)
    for cc, dt, kv, nh in itertools.product(ccs, ("bfloat16", "float16"), ("auto", "fp8", "fp8_ds_mla"),
                                            (None, 16, 128)):
        yield base(compute_capability=cc, dtype=dt, kv_cache_dtype=kv, use_mla=True, use_sparse=True, head_size=576,
                   num_heads=nh, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, index_topk=2048)


ROCM_STD_BACKENDS = (None, "TRITON_ATTN", "ROCM_ATTN", "ROCM_AITER_FA", "ROCM_AITER_UNIFIED_ATTN", "FLEX_ATTENTION",
                     "FLASH_ATTN")
ROCM_MLA_BACKENDS = (None, "TRITON_MLA", "ROCM_AITER_MLA", "ROCM_AITER_TRITON_MLA", "FLASHMLA", "TRITON_ATTN")


def _rocm_flags(a: bool, mha: bool, mla: bool, uni: bool) -> dict[str, Any]:
    return dict(rocm_use_aiter=a, rocm_use_aiter_mha=mha, rocm_use_aiter_mla=mla, rocm_use_aiter_unified_attention=uni)


def grid_rocm(D: Domains, arch: str) -> Iterator[dict[str, Any]]:
    switches = list(itertools.product((False, True), repeat=4))
    for sw, pda, kv, bs, be in itertools.product(switches, (False, True), ("auto", "fp8"), (None, 1, 16),
                                                 ROCM_STD_BACKENDS):
        yield base("rocm", kv_cache_dtype=kv, block_size=bs, backend=be, rocm_arch=arch,
                   use_prefill_decode_attention=pda, **_rocm_flags(*sw))
    for sw, kv, bs, sp, be in itertools.product(switches, ("auto", "fp8"), (None, 1, 16), (False, True),
                                                ROCM_MLA_BACKENDS):
        yield base("rocm", kv_cache_dtype=kv, block_size=bs, backend=be, use_mla=True, use_sparse=sp, head_size=576,
                   rocm_arch=arch, **_rocm_flags(*sw))


def grid_cpu(D: Domains) -> Iterator[dict[str, Any]]:
    for dt, kv, hs, (mla, sp), at, be in itertools.product(
            D.dtypes, ("auto", "bfloat16", "fp8"), (64, 80, 96, 100, 128, 256, 576),
            ((False, False), (True, False), (True, True)), D.attn_types, (None, "CPU_ATTN", "FLASH_ATTN")):
        yield base("cpu", dtype=dt, kv_cache_dtype=kv, head_size=hs, use_mla=mla, use_sparse=sp, attn_type=at,
                   backend=be)


def grid_inputs(D: Domains) -> Iterator[dict[str, Any]]:
    """Each new selector input switched on, alone, on standard and MLA layers of every grid GPU."""
    for field, cc, mla in itertools.product(D.inputs, D.grid_ccs, (False, True)):
        d = base(compute_capability=cc, head_size=576 if mla else 128, use_mla=mla, **{field: True})
        if mla and field == "use_rswa":  # a model config (see _draw_inputs): an MLA model's has its dims
            d.update(qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
        yield d


def grid_xpu(D: Domains) -> Iterator[dict[str, Any]]:
    kvs = tuple(k for k in D.kv_cache_dtypes if k in ("auto", "bfloat16", "fp8") or k.startswith("turboquant"))
    backends = (None, "FLASH_ATTN", "TRITON_ATTN", "TRITON_FLASH_ATTN", "TRITON_MLA", "FLASH_ATTN_MLA")
    for dt, kv, hs, (mla, sp), mm, be in itertools.product(
            D.dtypes, kvs, (64, 128, 256, 576), ((False, False), (True, False), (True, True)), (False, True),
            backends):
        if mla and hs != 576 or (mm and mla):
            continue
        d = base("xpu", dtype=dt, kv_cache_dtype=kv, head_size=hs, use_mla=mla, use_sparse=sp, use_mm_prefix=mm,
                 backend=be if be is None or be in D.backends else None)
        yield d
    for field in D.inputs:
        yield base("xpu", **{field: True})


def _draw_inputs(D: Domains, rng: random.Random, d: dict[str, Any], p: float = 0.08) -> dict[str, Any]:
    for field in D.inputs:
        if rng.random() < p:
            d[field] = True
    for field in D.switches:  # rarer: use_cudnn_prefill makes the whole configuration a refusal
        if rng.random() < p / 4:
            d[field] = True
    if d.get("use_rswa") and d.get("use_mla") and d.get("qk_nope_head_dim") is None:
        # use_rswa is a model fact (model_config.rswa_window): it needs a model config, and an MLA
        # model's config has its dimensions (vLLM reads them without a default)
        d.update(qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
    if D.kinds and rng.random() < 0.12:  # per-KV-cache-group requests: one or two entries, mostly kinds a layer has
        kinds = [k for k in ("full_attention", "sliding_window", "mla_attention", "sliding_window_mla",
                             "encoder_only_attention", "cross_attention") if k in D.kinds]
        if rng.random() < 0.1:
            kinds = list(D.kinds)
        d["backend_per_kind"] = {k: rng.choice(D.backends) for k in rng.sample(kinds, rng.choice((1, 1, 2)))}
    if D.valued:
        heads = D.values_of("num_kv_heads")
        if heads and d.get("num_heads") and rng.random() < 0.3:
            d["num_kv_heads"] = rng.choice([h for h in heads if d["num_heads"] % h == 0] + [d["num_heads"]])
        if d.get("use_dcp") and D.values_of("dcp_size"):
            d["dcp_size"] = rng.choice(D.values_of("dcp_size"))
        if d.get("platform") == "xpu" and D.values_of("xpu_device") and rng.random() < 0.5:
            d["xpu_device"] = rng.choice(D.values_of("xpu_device"))
        if d.get("platform") == "cuda" and d.get("use_mla") and D.values_of("tokenspeed_mla_available") \
                and rng.random() < 0.1:
            d["tokenspeed_mla_available"] = False  # a box without the tokenspeed-mla package
    return d


# -- random ------------------------------------------------------------------------------------
def random_cuda(D: Domains, rng: random.Random, *, startup: bool = False) -> dict[str, Any]:
    use_mla = rng.random() < (0.6 if startup else 0.35)
    d = base(compute_capability=rng.choice(D.ccs), dtype=rng.choice(D.dtypes),
             kv_cache_dtype=rng.choice(D.kv_cache_dtypes), block_size=rng.choice((None,) + D.block_sizes),
             head_size=(576 if rng.random() < 0.85 else rng.choice(WIDE_HEADS)) if use_mla else rng.choice(WIDE_HEADS),
             use_mla=use_mla, use_sparse=use_mla and rng.random() < 0.4, has_sink=rng.random() < 0.2,
             use_mm_prefix=rng.random() < 0.15,
             attn_type=rng.choice(D.attn_types) if rng.random() < 0.25 else "decoder",
             num_heads=rng.choice(NUM_HEADS),
             backend=rng.choice(D.backends) if rng.random() < 0.2 else None)
    if rng.random() < 0.3:
        d["flash_attn_version"] = rng.choice(D.flash_attn_versions)
    if rng.random() < 0.3:
        d["use_trtllm_attention"] = rng.choice((True, False))
    if rng.random() < 0.2:
        d["trtllm_available"] = False
    if use_mla and (startup or rng.random() < 0.3):
        dims = rng.choice(MLA_DIMS)
        d.update(qk_nope_head_dim=dims[0], qk_rope_head_dim=dims[1], v_head_dim=dims[2])
        # a sparse layer exists only in a model with index_topk (vLLM's DeepSeek-V3.2 code decides
        # use_sparse by it, and the start-up hook reads it): start-up models always have it
        if d["use_sparse"] and (startup or rng.random() < 0.7):
            d["index_topk"] = 2048
    return _draw_inputs(D, rng, d)


def random_mla_prefill(D: Domains, rng: random.Random) -> dict[str, Any]:
    if D.prefill_requests:
        d = _prefill_registry(D, rng.choice(D.ccs), rng.choice(PREFILL_DIMS) if rng.random() < 0.85 else None,
                              rng.choice(D.dtypes), rng.random() < 0.35,
                              rng.choice(D.kv_cache_dtypes) if rng.random() < 0.2 else
                              rng.choice(("auto", "auto", "fp8", "fp8_e4m3", "bfloat16")),
                              rng.choice(D.prefill_requests) if rng.random() < 0.25 else None,
                              rng.choice(D.flash_attn_versions) if rng.random() < 0.3 else None,
                              rng.choice(NUM_HEADS))
        return _draw_inputs(D, rng, d, p=0.04)
    d = base(compute_capability=rng.choice(D.ccs), dtype=rng.choice(D.dtypes), use_mla=True, head_size=576,
             flashinfer_available=rng.random() < 0.8, use_trtllm_ragged_deepseek_prefill=rng.random() < 0.7,
             disable_flashinfer_prefill=rng.random() < 0.3, use_cudnn_prefill=rng.random() < 0.3,
             trtllm_available=rng.random() < 0.8)
    for switch in PREFILL_SWITCHES:  # left unset: both sides take the release's own default (0.18.1 changed one)
        if rng.random() < 0.25:
            del d[switch]
    if rng.random() < 0.8:
        dims = rng.choice(MLA_DIMS)
        d.update(qk_nope_head_dim=dims[0], qk_rope_head_dim=dims[1], v_head_dim=dims[2])
    if rng.random() < 0.4:
        d["flash_attn_version"] = rng.choice(D.flash_attn_versions)
    if rng.random() < 0.2:  # a sparse layer (its decode backend decides whether it has a prefill path)
        d.update(use_sparse=True, index_topk=2048, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                 kv_cache_dtype=rng.choice(("auto", "fp8", "fp8_ds_mla")), num_heads=rng.choice((None, 16, 128)))
    return d


def random_mla_prefill_other(D: Domains, rng: random.Random, platform: str) -> dict[str, Any]:
    """An MLA layer asking the prefill registry on ROCm, CPU or XPU (vLLM >= 0.18).  ROCm: flash-attn is
    absent from the harness venv (rocm_flash_attn_found = false, as there)."""
    sparse = platform != "cpu" and rng.random() < 0.3
    dims = rng.choice(PREFILL_DIMS) if sparse or rng.random() < 0.85 else None
    d = base(platform, dtype=rng.choice(D.dtypes), kv_cache_dtype=rng.choice(("auto", "auto", "fp8", "bfloat16")),
             use_mla=True, head_size=576, use_sparse=sparse, tokenspeed_mla_available=False)
    if dims:
        d.update(qk_nope_head_dim=dims[0], qk_rope_head_dim=dims[1], v_head_dim=dims[2], head_size=512 + dims[1])
        if sparse:
            d["index_topk"] = 2048
    if rng.random() < 0.25:  # XPU: FLASH_ATTN only (attnsolve declares the other prefill backends for CUDA)
        d["mla_prefill_backend"] = rng.choice(D.rocm_prefill_requests if platform == "rocm"
                                              else D.prefill_requests if platform == "cpu" else ("FLASH_ATTN",))
    if platform == "rocm":
        arch = rng.choice(D.rocm_archs)  # flash-attn is absent; from 0.27 gfx1250 imports aiter's (present, as assumed)
        d.update(rocm_arch=arch, rocm_flash_attn_found=arch in D.rocm_fa_from_aiter,
                 **_rocm_flags(*(rng.random() < 0.5 for _ in range(4))))
        d.pop("rocm_use_aiter_unified_attention", None)  # gone at 0.33
    if platform == "xpu" and D.values_of("xpu_device") and rng.random() < 0.3:
        d["xpu_device"] = rng.choice(D.values_of("xpu_device"))
    return d


def random_prefill_layer_rocm(D: Domains, rng: random.Random) -> dict[str, Any]:
    """An MLA layer's prefill question on ROCm before the prefill registry (0.16 to 0.20): vLLM's layer selects its
    decode backend first (a failure there is the layer's); a sparse one (ROCm's sparse branch) is a
    SparseMLAAttentionImpl with no prefill path, a dense one's MLACommonImpl takes FlashAttention's varlen prefill (from
    upstream flash-attn: without it, its RuntimeError)."""
    dims = rng.choice(PREFILL_DIMS)
    sparse = rng.random() < 0.6
    d = base("rocm", rocm_arch=rng.choice(D.rocm_archs), dtype=rng.choice(D.dtypes),
             kv_cache_dtype=rng.choice(("auto", "auto", "fp8", "bfloat16")),
             block_size=rng.choice((None, 1, 1, 16, 64)), use_mla=True, use_sparse=sparse,
             qk_nope_head_dim=dims[0], qk_rope_head_dim=dims[1], v_head_dim=dims[2], head_size=512 + dims[1],
             backend=rng.choice(ROCM_MLA_BACKENDS) if rng.random() < 0.2 else None,
             **_rocm_flags(*(rng.random() < 0.5 for _ in range(4))))
    if rng.random() < 0.4:  # without upstream flash-attn (the worker runs mla_attention.py's import as that build)
        d["rocm_flash_attn_found"] = False
    if sparse:
        d["index_topk"] = 2048
    return d


def random_prefill_layer_xpu(D: Domains, rng: random.Random) -> dict[str, Any]:
    """An MLA layer's prefill question on XPU before the prefill registry (0.16 to 0.20): the layer's decode backend
    first (XPU's MLA list; a sparse layer's fails or has no prefill path), then a dense layer's MLACommonImpl."""
    dims = rng.choice(PREFILL_DIMS)
    sparse = rng.random() < 0.4
    d = base("xpu", dtype=rng.choice(D.dtypes), kv_cache_dtype=rng.choice(("auto", "auto", "fp8", "bfloat16")),
             block_size=rng.choice((None, 1, 16, 64)), use_mla=True, use_sparse=sparse,
             qk_nope_head_dim=dims[0], qk_rope_head_dim=dims[1], v_head_dim=dims[2], head_size=512 + dims[1],
             backend=rng.choice(D.backends) if rng.random() < 0.2 else None)
    if sparse:
        d["index_topk"] = 2048
    if D.values_of("xpu_device") and rng.random() < 0.3:
        d["xpu_device"] = rng.choice(D.values_of("xpu_device"))
    return d


def random_rocm(D: Domains, rng: random.Random) -> dict[str, Any]:
    use_mla = rng.random() < 0.4
    d = base("rocm", rocm_arch=rng.choice(D.rocm_archs), dtype=rng.choice(D.dtypes),
             kv_cache_dtype=rng.choice(D.kv_cache_dtypes[:5]), block_size=rng.choice((None,) + D.block_sizes),
             head_size=576 if use_mla else rng.choice(WIDE_HEADS), use_mla=use_mla,
             use_sparse=use_mla and rng.random() < 0.3, has_sink=rng.random() < 0.15,
             attn_type=rng.choice(D.attn_types) if rng.random() < 0.2 else "decoder",
             backend=rng.choice((ROCM_MLA_BACKENDS if use_mla else ROCM_STD_BACKENDS)) if rng.random() < 0.3 else None,
             use_prefill_decode_attention=rng.random() < 0.2,
             **_rocm_flags(*(rng.random() < 0.5 for _ in range(4))))
    if rng.random() < 0.08:  # any registry name now and then: another platform's backend requested on ROCm
        d["backend"] = rng.choice(D.backends)  # (session 43: FLASH_ATTN_MLA's CUDA-only check was never asked)
    return _draw_inputs(D, rng, d)


def random_xpu(D: Domains, rng: random.Random) -> dict[str, Any]:
    use_mla = rng.random() < 0.3
    d = base("xpu", dtype=rng.choice(D.dtypes), kv_cache_dtype=rng.choice(D.kv_cache_dtypes),
             block_size=rng.choice((None,) + D.block_sizes),
             head_size=576 if use_mla else rng.choice(WIDE_HEADS), use_mla=use_mla,
             use_sparse=use_mla and rng.random() < 0.3, has_sink=rng.random() < 0.15,
             use_mm_prefix=rng.random() < 0.2,
             attn_type=rng.choice(D.attn_types) if rng.random() < 0.2 else "decoder",
             backend=rng.choice(D.backends) if rng.random() < 0.3 else None)
    return _draw_inputs(D, rng, d)


def random_cpu(D: Domains, rng: random.Random) -> dict[str, Any]:
    use_mla = rng.random() < 0.3
    d = base("cpu", dtype=rng.choice(D.dtypes), kv_cache_dtype=rng.choice(D.kv_cache_dtypes[:5]),
             block_size=rng.choice((None,) + D.block_sizes),
             head_size=576 if use_mla and rng.random() < 0.7 else rng.choice(WIDE_HEADS), use_mla=use_mla,
             use_sparse=use_mla and rng.random() < 0.3, has_sink=rng.random() < 0.15,
             attn_type=rng.choice(D.attn_types),
             backend=rng.choice((None, "CPU_ATTN", "FLASH_ATTN", "TRITON_ATTN", "FLEX_ATTENTION")))
    if rng.random() < 0.08:  # any registry name now and then (the CPU MLA backends, another platform's)
        d["backend"] = rng.choice(D.backends)
    return _draw_inputs(D, rng, d)


def random_startup_other(D: Domains, rng: random.Random, platform: str) -> dict[str, Any]:
    """A layer at start-up on ROCm, CPU or XPU: the platform's own draw, with an MLA layer's model
    dimensions (start-up always has a model; a sparse layer's model has index_topk)."""
    d = {"rocm": random_rocm, "cpu": random_cpu, "xpu": random_xpu}[platform](D, rng)
    if d.get("use_mla"):
        dims = rng.choice(MLA_DIMS)
        d.update(qk_nope_head_dim=dims[0], qk_rope_head_dim=dims[1], v_head_dim=dims[2])
        if d.get("use_sparse"):
            d["index_topk"] = 2048
    return d


# -- the plan ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """A category: platform, mode, and how its configs are made (grid or random)."""

    category: str
    platform: str
    mode: str
    grid: Callable[[Domains], Iterator[dict[str, Any]]] | None = None
    draw: Callable[[Domains, random.Random], dict[str, Any]] | None = None
    share: float = 0.0  # fraction of --n for a random source


def sources(D: Domains) -> list[Source]:
    out = [
        Source("grid", "cuda", "selector", grid=grid_standard),
        Source("mla", "cuda", "selector", grid=grid_mla),
        Source("features", "cuda", "selector", grid=grid_features),
        Source("requested", "cuda", "selector", grid=grid_requested),
        Source("random", "cuda", "selector", draw=random_cuda, share=0.45),
        Source("startup", "cuda", "startup", grid=grid_startup),
        Source("random_startup", "cuda", "startup", draw=lambda d, r: random_cuda(d, r, startup=True), share=0.1),
        Source("mla_prefill", "cuda", "mla_prefill", grid=grid_mla_prefill),
        Source("random_mla_prefill", "cuda", "mla_prefill", draw=random_mla_prefill, share=0.1),
        Source("cpu", "cpu", "selector", grid=grid_cpu),
        Source("random_cpu", "cpu", "selector", draw=random_cpu, share=0.1),
        Source("random_rocm", "rocm", "selector", draw=random_rocm, share=0.25),
    ]
    if D.inputs:
        out.append(Source("inputs", "cuda", "selector", grid=grid_inputs))
    for arch in D.rocm_archs:
        out.append(Source(f"rocm_{arch}", "rocm", "selector", grid=lambda d, a=arch: grid_rocm(d, a)))
    if "xpu" in D.platforms:
        out += [Source("xpu", "xpu", "selector", grid=grid_xpu),
                Source("random_xpu", "xpu", "selector", draw=random_xpu, share=0.1)]
    if D.prefill_requests:  # the prefill registry (vLLM >= 0.18) on every platform (last: the others' seeds stay)
        out += [Source(f"random_mla_prefill_{p}", p, "mla_prefill", share=0.03,
                       draw=lambda d, r, p=p: random_mla_prefill_other(d, r, p)) for p in ("rocm", "cpu", "xpu")]
    else:  # 0.16 to 0.20: the MLA layer's prefill question on ROCm and XPU too
        if "rocm" in D.layer_platforms:
            out.append(Source("random_prefill_layer_rocm", "rocm", "mla_prefill", share=0.02,
                              draw=random_prefill_layer_rocm))
        if "xpu" in D.layer_platforms and "xpu" in D.platforms:
            out.append(Source("random_prefill_layer_xpu", "xpu", "mla_prefill", share=0.02,
                              draw=random_prefill_layer_xpu))
    # start-up on the other platforms (last again: every earlier source keeps its draws): their hooks set the
    # block size, force backends and refuse configurations before any layer asks the selector
    out += [Source(f"random_startup_{p}", p, "startup", share=0.05, draw=lambda d, r, p=p: random_startup_other(d, r, p))
            for p in ("rocm", "cpu", "xpu")]
    return [s for s in out if s.platform in D.platforms]


def generate(D: Domains, *, n_random: int, platforms: Sequence[str] = PLATFORMS, modes: Sequence[str] = MODES,
             sample: int | None = None, seed: int = 1234) -> list[Item]:
    """Every grid config plus `n_random` random ones (split by share) for the chosen platforms
    and modes.  `sample`: instead of whole grids, about that many grid configs spread evenly
    over the categories (a deterministic stride), for CI."""
    chosen = [s for s in sources(D) if s.platform in platforms and s.mode in modes]
    items: list[Item] = []
    grids = [s for s in chosen if s.grid]
    per_grid = max(1, sample // max(1, len(grids))) if sample is not None else None
    for s in grids:
        assert s.grid is not None
        cfgs = list(s.grid(D))
        if per_grid is not None and len(cfgs) > per_grid:
            stride = len(cfgs) / per_grid
            cfgs = [cfgs[int(i * stride)] for i in range(per_grid)]
        items += [Item(f"{s.category}-{i}", s.category, s.mode, s.platform, _mla_model(D, s.mode, c))
                  for i, c in enumerate(cfgs)]
    draws = [s for s in chosen if s.draw]
    total = sum(s.share for s in draws) or 1.0
    for k, s in enumerate(draws):
        assert s.draw is not None
        rng = random.Random(seed * 1000 + k)
        count = round(n_random * s.share / total)
        items += [Item(f"{s.category}-{i}", s.category, s.mode, s.platform, _mla_model(D, s.mode, s.draw(D, rng)))
                  for i in range(count)]
    return items


def _mla_model(D: Domains, mode: str, d: dict[str, Any]) -> dict[str, Any]:
    """An MLA layer of a model with known dimensions is a real MLA model's layer: its head size is
    kv_lora_rank + qk_rope_head_dim (MLAAttention), so the rank is a positive fact both sides are
    told (where the rule set takes kv_lora_rank; the vLLM side's stand-in model config carries it).
    Not for mla_prefill mode (its own generator)."""
    if mode == "mla_prefill" or not D.values_of("kv_lora_rank") or not d.get("use_mla"):
        return d
    rope = d.get("qk_rope_head_dim")
    if rope is None or d.get("kv_lora_rank") is not None:
        return d
    if int(d.get("head_size") or 576) <= int(rope):
        d["head_size"] = 576  # no model has a non-positive rank
    d["kv_lora_rank"] = int(d.get("head_size") or 576) - int(rope)
    return d
