"""GPU launch choices fitted to shared memory (pure functions; the compiled sizes are checked against the
estimate in test_triton_compile.py) and the retry when Triton still refuses a default launch."""

from __future__ import annotations

import pytest

from triton_import import import_interpreted

torch, L, _ = import_interpreted("attnsolve.kernels.triton_launch")
from triton.runtime.errors import OutOfResources  # noqa: E402


def test_fit_shrinks_the_key_tile_first_then_the_rows():
    # bf16 head 128 prefill fits an H200 as preferred; float32 head 256 does not (the H200's refusal)
    assert L.fit_shared_memory(128, 64, q_row=128, kv_key=256, elem_bytes=2, limit=232448) == (128, 64)
    bm, tile = L.fit_shared_memory(128, 64, q_row=256, kv_key=512, elem_bytes=4, p_bytes=4, limit=232448)
    assert (bm, tile) == (128, 32)  # the key tile gives way first
    assert L.shared_memory_estimate(bm, tile, 256, 512, 4, 4) <= 232448 < L.shared_memory_estimate(128, 64, 256, 512, 4, 4)
    # a smaller device: the rows give way once the tile is at 16
    bm, tile = L.fit_shared_memory(128, 64, q_row=256, kv_key=512, elem_bytes=4, p_bytes=4, limit=101376)
    assert (bm, tile) == (32, 16)
    # never below the rows one KV head's query heads need: returned at the floor, Triton decides
    assert L.fit_shared_memory(32, 16, q_row=4096, kv_key=8192, elem_bytes=4, limit=1000, least_block_m=32) == (32, 16)


def test_estimate_counts_each_part():
    assert L.shared_memory_estimate(16, 64, 128, 256, 2) == int(1.05 * 2 * (16 * 128 + 64 * 256))
    assert L.shared_memory_estimate(16, 64, 128, 256, 4, 4) == int(1.05 * (4 * (16 * 128 + 64 * 256) + 4 * 16 * 64 + 1024))


def _refusing(max_tile: int, max_rows: int, calls: list):
    def launch(block_m: int, tile: int) -> str:
        calls.append((block_m, tile))
        if tile > max_tile or block_m > max_rows:
            raise OutOfResources(300000, 232448, "shared memory")
        return f"ran {block_m}x{tile}"
    return launch


def test_run_fitted_retries_smaller_and_remembers():
    calls: list = []
    key = ("test", "retry")
    assert L.run_fitted(_refusing(16, 64, calls), 128, 64, shape_key=key) == "ran 64x16"
    assert calls == [(128, 64), (128, 32), (128, 16), (64, 16)]
    assert L.remembered(key, 128, 64) == (64, 16)  # the next call of this shape starts there
    assert L.remembered(("test", "other"), 128, 64) == (128, 64)


def test_run_fitted_keeps_a_launch_the_caller_chose_and_stops_at_the_floor():
    with pytest.raises(OutOfResources):
        L.run_fitted(_refusing(16, 64, []), 128, 64, shape_key=("test", "chosen"), chosen_by_caller=True)
    calls: list = []
    with pytest.raises(OutOfResources):
        L.run_fitted(_refusing(8, 8, calls), 32, 32, shape_key=("test", "floor"), least_block_m=32)
    assert calls == [(32, 32), (32, 16)]
    assert L.remembered(("test", "floor"), 32, 32) == (32, 32)


@pytest.mark.parametrize("programs,segments", [(8, 16), (64, 8), (132, 1), (40, 8), (100, 4), (264, 1)])
def test_split_kv_segments_aim_at_two_programs_per_sm(monkeypatch, programs, segments):
    monkeypatch.setitem(L._SM_COUNT, 0, 132)
    assert L.split_kv_segments(torch.device("cuda", 0), programs) == segments
    assert L.split_kv_segments(torch.device("cpu"), programs) == 1
