"""Dispatch: tensors -> Config -> solve -> the registered kernel; errors; torch.compile; the registry."""

from __future__ import annotations

import math
import pickle
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")

from attnsolve import Config  # noqa: E402
from attnsolve.kernels import (  # noqa: E402
    AttentionMetadata,
    KernelUnavailableError,
    infer_config,
    kernel_for,
    paged_attention,
    paged_attention_op,
    registered_backends,
    runnable_backends,
)
from attnsolve.kernels import dispatch, registry  # noqa: E402
from attnsolve.kernels.dispatch import _host_cpu_facts  # noqa: E402
from attnsolve.kernels.reference import paged_attention_reference  # noqa: E402
from paged_cases import close, make_batch  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/kernels/conftest.py)


@pytest.fixture
def batch():
    return make_batch([1, 5, 2], [17, 5, 30], 8, 2, 64, 16, seed=11)


def test_paged_attention_matches_reference(batch):
    q, kc, vc, md = batch
    opts = dict(sliding_window=8, logits_soft_cap=20.0, sinks=torch.randn(8))
    close(paged_attention(q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts), q.dtype)


def test_metadata_reused_across_decode_steps():
    """vLLM updates persistent metadata buffers in place every step: each step sees the new lengths."""
    q, kc, vc, md = make_batch([1, 1], [5, 9], 4, 2, 32, 8, seed=14)
    for _ in range(4):
        close(paged_attention(q, kc, vc, md), paged_attention_reference(q, kc, vc, md), q.dtype)
        md.seq_lens += 1


def test_selected_kernel_is_the_one_that_ran(batch):
    q, kc, vc, md = batch
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return torch.zeros_like(args[0])

    with registry.override_kernel("CPU_ATTN", spy, devices=("cpu",)):
        out = paged_attention(q, kc, vc, md, scale=0.5, sliding_window=3)
    assert calls == [dict(scale=0.5, causal=True, sliding_window=3, logits_soft_cap=None, sinks=None,
                          k_scale=None, v_scale=None)]
    assert out.abs().sum() == 0
    # the real kernel is back (the dispatch cache follows the registry)
    close(paged_attention(q, kc, vc, md), paged_attention_reference(q, kc, vc, md), q.dtype)


def test_requested_backend_ignored_on_cpu_with_warning(batch):
    q, kc, vc, md = batch
    dispatch.clear_cache()
    with pytest.warns(dispatch.SelectionWarning, match="Cannot use AttentionBackendEnum.FLEX_ATTENTION backend on CPU"):
        out = paged_attention(q, kc, vc, md, backend="FLEX_ATTENTION")
    close(out, paged_attention_reference(q, kc, vc, md), q.dtype)


def test_selection_is_cached_per_config_key(batch, monkeypatch):
    q, kc, vc, md = batch
    dispatch.clear_cache()
    seen = []
    real = dispatch.solve
    monkeypatch.setattr(dispatch, "solve", lambda cfg, **kw: seen.append(cfg) or real(cfg, **kw))
    for _ in range(3):
        paged_attention(q, kc, vc, md)
    paged_attention(q[:, :4], kc[:, :, :1], vc[:, :, :1], md)  # 4 heads: another key
    assert len(seen) == 2


@pytest.mark.parametrize("dtype,cache,kv", [
    (torch.float16, None, "auto"), (torch.bfloat16, None, "auto"), (torch.float32, None, "auto"),
    (torch.bfloat16, torch.float8_e4m3fn, "fp8"), (torch.float16, torch.float8_e5m2, "fp8_e5m2"),
    (torch.float32, torch.bfloat16, "bfloat16"),
])
@pytest.mark.parametrize("sinks", [False, True])
def test_config_inference_equals_hand_written(dtype, cache, kv, sinks):
    q, kc, _, _ = make_batch([1], [5], 12, 4, 80, 32, dtype=dtype, cache_dtype=cache)
    got = infer_config(q, kc, sinks=torch.zeros(12) if sinks else None, backend="CPU_ATTN")
    want = Config(platform="cpu", dtype=str(dtype)[6:], compute_capability=None, kv_cache_dtype=kv, head_size=80,
                  block_size=32, has_sink=sinks, num_heads=12, backend="CPU_ATTN", use_mla=False, use_sparse=False)
    # the host CPU's facts a release declares (cpu_amx, cpu_avx512 at 0.33) come from torch, as vLLM reads
    # them: an AMX host infers cpu_amx=True whatever the rules' default
    host = {f: v for f, v in _host_cpu_facts().items() if f in want.field_names}
    want = want.replace(**host) if host else want
    assert got == want and hash(got) == hash(want)


@pytest.mark.parametrize("bs", [5, 48, 96])
def test_block_size_outside_config_domain_runs(bs):
    """#17 item 7: dispatch runs block sizes kernel_for runs; selection asks about gcd(bs, 256)."""
    from attnsolve.kernels.dispatch import selection_block_size

    q, kc, vc, md = make_batch([1, 20], [60, 100], 4, 2, 32, bs)
    assert infer_config(q, kc).block_size == selection_block_size(bs) == math.gcd(bs, 256)
    close(paged_attention(q, kc, vc, md), paged_attention_reference(q, kc, vc, md), q.dtype)


def test_bad_devices_and_dtypes():
    q, kc, vc, md = make_batch([1], [10], 4, 2, 32, 8)
    with pytest.raises(ValueError, match="Expected tensors on cpu or cuda"):
        infer_config(q.to("meta"), kc)
    with pytest.raises(ValueError, match="query dtype"):
        infer_config(q.double(), kc)
    with pytest.raises(ValueError, match="key_cache dtype"):
        infer_config(q, kc.half())


def test_unavailable_kernel_names_backend_reason_and_alternative(batch, monkeypatch):
    """An H100 bf16 config selects FLASH_ATTN (no kernel here); the solver's pick among runnable ones is named."""
    q, kc, vc, md = make_batch([1, 5], [17, 5], 8, 2, 64, 16, dtype=torch.bfloat16, seed=12)
    dispatch.clear_cache()
    monkeypatch.setattr(dispatch, "_platform", lambda device: ("cuda", (9, 0)))

    def fake(*a, **k):
        return torch.zeros_like(a[0])

    with registry.override_kernel("TRITON_ATTN", fake, devices=("cuda",)), \
            registry.override_kernel("FLEX_ATTENTION", fake, devices=("cuda",)):
        with pytest.raises(KernelUnavailableError) as ei:
            paged_attention(q, kc, vc, md)
        e = ei.value
        assert isinstance(e, RuntimeError)
        assert e.backend == "FLASH_ATTN"
        assert e.missing and e.missing == registry.unavailable_reasons("FLASH_ATTN", "cuda")
        assert e.alternative in {"TRITON_ATTN", "FLEX_ATTENTION"}
        text = str(e)
        assert "FLASH_ATTN" in text and e.missing[0] in text and repr(e.alternative) in text
        # asking for the alternative runs it
        out = paged_attention(q, kc, vc, md, backend=e.alternative)
        assert out.abs().sum() == 0
    dispatch.clear_cache()


def test_error_without_any_runnable_kernel_and_pickling():
    with pytest.raises(KernelUnavailableError) as ei:
        kernel_for("FLASHINFER", "cuda")
    e = ei.value
    assert e.backend == "FLASHINFER" and e.alternative is None and e.device == "cuda"
    assert "FLASHINFER" in str(e)
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.backend, e2.missing, e2.alternative, str(e2)) == (e.backend, e.missing, e.alternative, str(e))
    with pytest.raises(KernelUnavailableError, match="runs on cpu, not cuda"):
        kernel_for("CPU_ATTN", "cuda:0")


def test_registry_contents():
    assert {"CPU_ATTN", "FLEX_ATTENTION"} <= registered_backends()
    assert {"CPU_ATTN", "FLEX_ATTENTION"} <= runnable_backends("cpu")
    assert "CPU_ATTN" not in runnable_backends("cuda")
    if not torch.cuda.is_available():
        assert "FLEX_ATTENTION" not in runnable_backends("cuda")
    assert callable(kernel_for("CPU_ATTN"))


def test_discovery_tolerates_missing_modules_and_records_broken_ones(tmp_path, monkeypatch):
    (tmp_path / "attnsolve_broken_kmod.py").write_text("raise ZeroDivisionError('boom')\n")
    (tmp_path / "attnsolve_optional_kmod.py").write_text("import attnsolve_no_such_package\n")
    (tmp_path / "attnsolve_good_kmod.py").write_text(
        "from attnsolve.kernels.registry import register_kernel\n"
        "@register_kernel('TEST_BACKEND', devices=('cpu',), requires=('attnsolve_no_such_package',))\n"
        "def k(*a, **kw):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_KERNEL_MODULES", ("attnsolve.kernels.not_written_yet", "attnsolve_broken_kmod",
                                                      "attnsolve_optional_kmod", "attnsolve_good_kmod"))
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_IMPORT_ERRORS", {})
    monkeypatch.setattr(registry, "_discovered", False)
    try:
        errs = registry.import_errors()
        assert set(errs) == {"attnsolve_broken_kmod", "attnsolve_optional_kmod"}
        assert "ZeroDivisionError: boom" in errs["attnsolve_broken_kmod"]
        assert "attnsolve_no_such_package" in errs["attnsolve_optional_kmod"]
        assert registry.registered_backends() == {"TEST_BACKEND"}
        assert registry.runnable_backends("cpu") == frozenset()
        with pytest.raises(KernelUnavailableError, match="package 'attnsolve_no_such_package' is not installed"):
            registry.kernel_for("TEST_BACKEND")
    finally:
        for m in ("attnsolve_broken_kmod", "attnsolve_optional_kmod", "attnsolve_good_kmod"):
            sys.modules.pop(m, None)


def test_custom_op_and_fake(batch):
    q, kc, vc, md = batch
    out = paged_attention_op(q, kc, vc, md.query_start_loc, md.seq_lens, md.block_table, sliding_window=4)
    close(out, paged_attention_reference(q, kc, vc, md, sliding_window=4), q.dtype)
    from torch._subclasses.fake_tensor import FakeTensorMode

    vc32 = vc[..., :32].contiguous()
    mode = FakeTensorMode()
    f = [mode.from_tensor(t) for t in (q, kc, vc32, md.query_start_loc, md.seq_lens, md.block_table)]
    with mode:
        fo = paged_attention_op(*f)
        assert fo.shape == (q.shape[0], q.shape[1], 32) and fo.dtype == q.dtype
    torch.library.opcheck(paged_attention_op, (q, kc, vc, md.query_start_loc, md.seq_lens, md.block_table),
                          test_utils=("test_schema", "test_faketensor"))


def test_torch_compile_fullgraph(batch):
    q, kc, vc, md = batch

    def layer(q, kc, vc, qsl, sl, bt, sinks):
        out = paged_attention(q * 2, kc, vc, AttentionMetadata(qsl, sl, bt), sinks=sinks, logits_soft_cap=30.0,
                              k_scale=1.0, v_scale=1.0)
        return out.relu() + 1

    sinks = torch.randn(8)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = compiled(q, kc, vc, md.query_start_loc, md.seq_lens, md.block_table, sinks)
    want = layer(q, kc, vc, md.query_start_loc, md.seq_lens, md.block_table, sinks)
    close(got, want, q.dtype)
