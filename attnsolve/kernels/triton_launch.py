"""GPU launch choices for the Triton kernels: rows and keys per program, warps, split-KV segments.

Chosen from the shapes and the device's properties alone (no host sync, nothing read from device
memory), then fitted to the device's shared memory: a Triton kernel whose tiles need more shared
memory than one program may have does not launch at all ("out of resource: shared memory").  The
H200 ran into that with the prefill tiles tuned for 16-bit head size 128 on a float32 head 256
(128 x 64 tiles: 296 KB asked, 227 KB there).  So the defaults shrink the key tile, then the row
block, until an estimate fits; if Triton still refuses a default launch, the launch is retried
smaller and the smaller pair remembered for that problem shape (``run_fitted``).

The estimate is what Triton 3.6 allocates for these kernels, read from ahead-of-time compiles for
sm80/sm86/sm90 (tests/kernels/test_triton_compile.py checks it against every fitted default): the
query rows and one key and one value tile, each in the compute type (an fp8 cache is converted
before it is staged; the gathered loads through the block table are not multi-buffered), plus a
``rows x keys`` scratch for P where the kernel stages it (float32 "ieee" dots; TRITON_MLA's two-term P).
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

R = TypeVar("R")

# Headroom over the estimate (the compiles above stay within 1.03 of it).
SCRATCH_FACTOR = 1.05
# Shared memory per block when the device does not say (the smallest of the sm80+ parts, sm86/89).
FALLBACK_SHARED_BYTES = 99 * 1024

_SM_COUNT: dict[int, int] = {}
_SHARED_BYTES: dict[int, int] = {}
_SHRUNK: dict[tuple, tuple[int, int]] = {}  # problem shape -> the (block_m, tile) that launched


def pow2_at_least(n: int, least: int = 1) -> int:
    """The smallest power of two >= ``n`` and >= ``least`` (host arithmetic; ``triton.next_power_of_2``
    is a constexpr function in Triton 3.9 and costs several microseconds per host call)."""
    return max(least, 1 << (max(n, 1) - 1).bit_length())


def _index(dev: torch.device) -> int:
    return dev.index if dev.index is not None else torch.cuda.current_device()


def sm_count(dev: torch.device) -> int:
    """The GPU's multiprocessor count (cached per device index)."""
    idx = _index(dev)
    sms = _SM_COUNT.get(idx)
    if sms is None:
        sms = _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return sms


def shared_memory_limit(dev: torch.device) -> int:
    """Bytes of shared memory one program may use there (the opt-in maximum Triton checks against)."""
    idx = _index(dev)
    limit = _SHARED_BYTES.get(idx)
    if limit is None:
        props = torch.cuda.get_device_properties(idx)
        limit = int(getattr(props, "shared_memory_per_block_optin", 0) or 0) or FALLBACK_SHARED_BYTES
        _SHARED_BYTES[idx] = limit
    return limit


def shared_memory_estimate(block_m: int, tile: int, q_row: int, kv_key: int, elem_bytes: int,
                           p_bytes: int = 0) -> int:
    """Bytes of shared memory a program asks for: ``block_m`` query rows of ``q_row`` elements, one tile of
    ``tile`` keys of ``kv_key`` elements (key and value together), ``elem_bytes`` each (the compute type),
    and a scratch of ``p_bytes`` per score for P where the kernel stages it (float32 dots: 4; TRITON_MLA's
    two-term P: 8); times the headroom."""
    scratch = p_bytes * block_m * tile + 1024 if p_bytes else 0
    return int(SCRATCH_FACTOR * (elem_bytes * (block_m * q_row + tile * kv_key) + scratch))


def fit_shared_memory(block_m: int, tile: int, *, q_row: int, kv_key: int, elem_bytes: int, limit: int,
                      least_block_m: int = 16, p_bytes: int = 0) -> tuple[int, int]:
    """The largest ``(block_m, tile)`` at most the given pair whose estimate fits ``limit``: halve the key
    tile first (down to 16; a smaller tile costs loop steps), then the row block (down to ``least_block_m``,
    the rows one KV head's query heads need).  At the floor the pair is returned as is (Triton decides)."""
    while shared_memory_estimate(block_m, tile, q_row, kv_key, elem_bytes, p_bytes) > limit:
        if tile > 16:
            tile //= 2
        elif block_m > least_block_m:
            block_m //= 2
        else:
            break
    return block_m, tile


def gpu_launch(num_tokens: int, num_seqs: int, queries_per_kv: int) -> tuple[int, int, int | None]:
    """Preferred ``(block_m, tile, num_warps)`` on a GPU for head size 128 in 16 bits, from the shapes alone.

    Measured on an H200 (docs/gpu_kernels.md, launch sweeps; identical launches there differ by up to
    15% between measurements, so only larger gaps decided): decode batches take 16 rows per program,
    128-key tiles and 4 warps (the second run, with edge-only masks: 1.27x the 64-key tiles at batch 64
    4k, 1.59x with 8 split-KV segments at batch 8 16k; the 32-key tiles were slower in both); a batch whose
    sequences average enough rows to fill 128-row programs (prefill) takes 128 rows, 64-key tiles and 8
    warps (1.55x vLLM's 16-row programs on a 2k causal prefill).  Larger heads or wider elements are
    fitted afterwards (``fit_shared_memory``)."""
    rows_per_seq = num_tokens / max(num_seqs, 1)
    if rows_per_seq * queries_per_kv >= 128:
        return 128, 64, 8
    return 16, 128, 4


def split_kv_segments(dev: torch.device, programs: int) -> int:
    """Split-KV segments for a GPU launch of ``programs`` programs that would leave SMs idle:
    enough for about two programs per SM, at most 16 (a power of two; 1 on CPU).  Two: with the
    128-key decode tiles, 8 segments ran a batch-8 16k decode (64 programs) 1.26x faster than 16
    and 1.42x faster than 4 on an H200."""
    if dev.type == "cpu":
        return 1
    sms = sm_count(dev)
    if programs >= sms:
        return 1
    return min(16, pow2_at_least(-(-2 * sms // max(programs, 1))))


def default_segments(dev: torch.device, num_tokens: int, num_seqs: int, num_kv_heads: int) -> int:
    """Split-KV only for a decode-only batch (one row per sequence)."""
    if num_tokens != num_seqs:
        return 1
    return split_kv_segments(dev, num_seqs * num_kv_heads)


def launch_options(num_warps: int | None, num_stages: int | None) -> dict:
    """Triton launch options given by the caller (a GPU tuning sweep); none means Triton's defaults."""
    opts = {}
    if num_warps is not None:
        opts["num_warps"] = int(num_warps)
    if num_stages is not None:
        opts["num_stages"] = int(num_stages)
    return opts


def remembered(shape_key: tuple, block_m: int, tile: int) -> tuple[int, int]:
    """The pair a previous call of this problem shape had to shrink to, else the given one."""
    return _SHRUNK.get(shape_key, (block_m, tile))


def run_fitted(launch: Callable[[int, int], R], block_m: int, tile: int, *, shape_key: tuple,
               least_block_m: int = 16, chosen_by_caller: bool = False) -> R:
    """Run ``launch(block_m, tile)``; when Triton refuses it for lack of shared memory (or registers),
    retry with the tile halved, then the row block, and remember what launched for ``shape_key``.
    A pair the caller chose is launched as given: its refusal is the caller's answer."""
    from triton.runtime.errors import OutOfResources

    shrunk = False
    while True:
        try:
            result = launch(block_m, tile)
        except OutOfResources:
            if chosen_by_caller or (tile <= 16 and block_m <= least_block_m):
                raise
            if tile > 16:
                tile //= 2
            else:
                block_m //= 2
            shrunk = True
            continue
        if shrunk:
            _SHRUNK[shape_key] = (block_m, tile)
        return result
