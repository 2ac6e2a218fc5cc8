"""The kernel benchmark's memory helpers: the read-only twin reads exactly the decode's rows, cold rounds
put the reduction before every timed call, and the reduction is sized from the cache the OS reports."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from attnsolve.kernels import AttentionMetadata  # noqa: E402
from benchmarks import memory  # noqa: E402
from paged_cases import make_batch  # noqa: E402


def _expected_sum(kc: torch.Tensor, vc: torch.Tensor, md: AttentionMetadata) -> int:
    """The int64 sum (mod 2**64, as the C loop wraps) of every K and V row the decode of ``md`` reads."""
    bs = kc.shape[1]
    total = 0
    for i, L in enumerate(md.seq_lens.tolist()):
        for t in range(L):
            b = int(md.block_table[i, t // bs])
            for cache in (kc, vc):
                total += int(cache[b, t % bs].contiguous().view(torch.int64).sum())
    total %= 1 << 64
    return total - (1 << 64) if total >= 1 << 63 else total


@pytest.mark.parametrize("dtype,hkv,d,bs", [(torch.bfloat16, 2, 64, 16), (torch.float32, 1, 32, 8),
                                            (torch.float8_e4m3fn, 4, 128, 16)])
def test_read_only_twin_reads_exactly_the_decode_rows(dtype, hkv, d, bs):
    lens = [37, 80, 1]  # spare blocks and junk block-table padding must not be read
    _, kc, vc, md = make_batch([1, 1, 1], lens, hkv, hkv, d, bs, dtype=torch.bfloat16, cache_dtype=dtype, seed=3)
    fn = memory.read_paged_fn(kc, vc, md, threads=2)
    if fn is None:
        pytest.skip(f"no compiler for the benchmark helper: {memory.reason()}")
    assert fn() == _expected_sum(kc, vc, md)


def test_read_only_twin_declines_layouts_it_does_not_cover():
    kc = torch.zeros(4, 16, 1, 16, dtype=torch.bfloat16)  # 32-byte rows: not whole cache lines
    md = AttentionMetadata(torch.tensor([0, 1], dtype=torch.int32), torch.tensor([20], dtype=torch.int32),
                           torch.tensor([[0, 1]], dtype=torch.int32))
    assert memory.read_paged_fn(kc, kc.clone(), md) is None
    wide = torch.zeros(4, 16, 2, 64, dtype=torch.bfloat16)
    assert memory.read_paged_fn(wide.transpose(1, 2).contiguous().transpose(1, 2), wide, md) is None


def test_cold_rounds_runs_the_reduction_before_every_timed_call():
    calls: list[str] = []
    subjects = [lambda: calls.append("a"), lambda: calls.append("b")]
    best, best_red = memory.cold_rounds(subjects, lambda: calls.append("r"), rounds=2)
    assert len(best) == 2 and best_red >= 0
    timed = calls[3:]  # after the warm-up calls (reduction, a, b)
    assert timed == ["r", "a", "r", "b", "r", "a", "r", "b"]


def test_reduction_is_larger_than_the_reported_cache():
    assert memory.REDUCTION_MIN_BYTES >= 128 << 20
    assert memory.REDUCTION_MIN_BYTES >= min(2 << 30, 2 * memory.l3_bytes())
    _, nbytes = memory.reduction_for(1 << 20)
    assert nbytes >= memory.REDUCTION_MIN_BYTES - 4


def test_in_l2_metadata_keeps_the_decode_and_reads_a_few_blocks():
    """The in-L2 twin of a decode: the same rows, lengths and table shape, every entry one of the first few
    physical blocks (their K and V within ``IN_L2_BYTES``), so the kernel does the same arithmetic from L2."""
    _, kc, vc, md = make_batch([1, 1], [300, 70], 8, 8, 128, 16, dtype=torch.bfloat16, seed=4)
    block_bytes = kc[0].numel() * kc.element_size()  # 32 KiB: 8 blocks of K and V in 512 KiB
    twin = memory.in_l2_metadata(md, block_bytes)
    assert torch.equal(twin.query_start_loc, md.query_start_loc) and torch.equal(twin.seq_lens, md.seq_lens)
    assert twin.block_table.shape == md.block_table.shape and twin.block_table.dtype == torch.int32
    used = set(twin.block_table.flatten().tolist())
    assert used == set(range(memory.IN_L2_BYTES // (2 * block_bytes)))
    assert 2 * block_bytes * len(used) <= memory.IN_L2_BYTES
    huge = memory.in_l2_metadata(md, memory.IN_L2_BYTES)  # a block larger than the budget: one block
    assert set(huge.block_table.flatten().tolist()) == {0}


def test_in_l2_problem_is_the_same_decode_on_small_blocks():
    """A cache of 128-token blocks seen as 16-token blocks of the same memory: every logical block onto the first
    few, and the kernel's answer for it equals its answer for the same table written at block size 128 (tiles sit at
    absolute multiples of 16 tokens, so the page size does not change the arithmetic)."""
    from attnsolve.kernels import AttentionMetadata, kernel_for

    q, kc, vc, md = make_batch([1, 1], [300, 70], 8, 2, 64, 128, dtype=torch.float32, seed=5)
    k2, v2, twin = memory.in_l2_problem(kc, vc, md)
    assert k2.shape[1] == 16 and k2.data_ptr() == kc.data_ptr() and k2.numel() == kc.numel()
    assert twin.block_table.shape == (2, 19)  # ceil(300 / 16) columns
    used = set(twin.block_table.flatten().tolist())
    assert 2 * k2[0].numel() * k2.element_size() * len(used) <= memory.IN_L2_BYTES
    # the same positions through 128-token blocks: block 0 holds the first 128 tokens of physical 16-blocks 0..7
    cpu = kernel_for("CPU_ATTN")
    n16 = twin.block_table.shape[1]
    same = torch.equal(twin.block_table, (torch.arange(2 * n16, dtype=torch.int32) % len(used)).view(2, n16))
    assert same
    out_small = cpu(q, k2, v2, twin)
    gathered = k2[twin.block_table.long()].reshape(2, -1, 2, 64)  # [seq, 16 * n16, hkv, d]
    vgathered = v2[twin.block_table.long()].reshape(2, -1, 2, 64)
    pad = -(-gathered.shape[1] // 128) * 128 - gathered.shape[1]
    kc128 = torch.nn.functional.pad(gathered, (0, 0, 0, 0, 0, pad)).reshape(-1, 128, 2, 64).contiguous()
    vc128 = torch.nn.functional.pad(vgathered, (0, 0, 0, 0, 0, pad)).reshape(-1, 128, 2, 64).contiguous()
    per = kc128.shape[0] // 2
    bt = torch.arange(2 * per, dtype=torch.int32).view(2, per)
    md128 = AttentionMetadata(md.query_start_loc, md.seq_lens, bt)
    assert torch.equal(out_small, cpu(q, kc128, vc128, md128))
