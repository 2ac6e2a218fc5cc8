"""Every CPU-runnable backend under ``torch.inference_mode`` (how vLLM runs its model): inference tensors
have no version counter, so the per-state memos of the metadata checks and scale reads are not kept, and an
in-place update between calls is still seen."""

from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")

from paged_cases import close, make_batch  # noqa: E402

from attnsolve.kernels import AttentionMetadata, kernel_for, runnable_backends  # noqa: E402
from attnsolve.kernels.reference import mla_decode_reference, paged_attention_reference  # noqa: E402

BACKENDS = sorted(runnable_backends("cpu"))  # (the Triton ones too where TRITON_INTERPRET=1)
MLA = {b for b in BACKENDS if "kv_cache" in inspect.signature(kernel_for(b)).parameters}  # (query, kv_cache, md)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in MLA])
def test_paged_backends(backend):
    k = kernel_for(backend)
    with torch.inference_mode():
        q, kc, vc, md = make_batch([1, 3], [40, 23], 4, 2, 64, 16, dtype=torch.float32)
        close(k(q, kc, vc, md), paged_attention_reference(q, kc, vc, md), torch.float32)
        md.seq_lens += 1  # in place, between two calls of one "step"
        close(k(q, kc, vc, md), paged_attention_reference(q, kc, vc, md), torch.float32)
        md.block_table[1, 0] = kc.shape[0]  # out of range: seen, and refused in vLLM's words
        with pytest.raises(ValueError, match="block_table entries"):
            k(q, kc, vc, md)
        md.block_table[1, 0] = 0
        ks = torch.tensor(0.5)
        a = k(q, kc, vc, md, k_scale=ks)
        ks.fill_(2.0)  # a scale tensor updated in place is read again
        close(k(q, kc, vc, md, k_scale=ks), paged_attention_reference(q, kc, vc, md, k_scale=2.0), torch.float32)
        assert not torch.equal(a, k(q, kc, vc, md, k_scale=ks))


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b in MLA])
def test_mla_backends(backend):
    k = kernel_for(backend)
    g = torch.Generator().manual_seed(0)
    lora, rope, bs, dtype = 64, 16, 16, torch.bfloat16
    with torch.inference_mode():
        bt = torch.randperm(8, generator=g).to(torch.int32).view(2, 4)
        md = AttentionMetadata(torch.tensor([0, 1, 2], dtype=torch.int32), torch.tensor([40, 23], dtype=torch.int32), bt)
        q = torch.randn(2, 8, lora + rope, generator=g).to(dtype)
        kv = torch.randn(8, bs, lora + rope, generator=g).to(dtype)
        for _ in range(2):
            out = k(q, kv, md, kv_lora_rank=lora)
            ref = mla_decode_reference(q, kv, md, kv_lora_rank=lora)
            torch.testing.assert_close(out.float(), ref.float(), atol=3e-2, rtol=3e-2)
            md.seq_lens += 5
