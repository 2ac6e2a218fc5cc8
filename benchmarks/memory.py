"""The memory side of the kernel benchmarks: a reduction that reads from memory, cold rounds, and
the read-only twin of a paged decode (the ceiling column).

Why each exists (measured on the 2-core Xeon VM of 4 Dec 2026, which reports a 480 MiB L3):

* The reduction must be larger than the cache, or both it and the kernel it is compared with run
  from cache.  A 64 MiB ``x.sum()`` repeated read at 55 GB/s, 128 MiB and more at 23-28 GB/s; and
  a bf16 decode over a 16 MiB paged cache took 0.74 ms right after a 128 MiB sum (its cache had
  survived it: the L3 keeps lines that a stream only passes through) but 1.21 ms after a 1 GiB sum.
  So the reduction reads ``max(128 MiB, 2 x the L3 the OS reports)`` (at most 2 GiB).
* ``cold_rounds`` times each subject right after such a reduction, so every kernel call starts with
  its cache evicted, as in a real decode step where the other layers' weights and caches pass through
  the L3 between two calls on the same layer.
* ``in_l2_metadata`` maps every logical block of a decode onto a few physical ones, so the kernel does the same
  arithmetic on K and V rows that stay in L2: the rate it computes at.  With the reduction's rate R and that rate
  C, reads and arithmetic one after the other give C / (C + R) of R (2-vCPU Zen 4 VM, session 30: the kernel's
  cold rates sat near that bound, e.g. fp16 16-17 GB/s with C 38.5 and R ~30, whatever the prefetch distance);
  full overlap would give min(C, R).
* ``read_paged`` reads exactly the K and V rows a decode reads, through the block table, with no
  attention math: the rate the cache's layout allows (shuffled blocks of 16 tokens are 4 to 32 KiB
  apart; every block is a fresh run of pages for the hardware prefetchers).  It is a diagnostic
  beside the goal, not the goal's baseline.
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

__all__ = ["l3_bytes", "REDUCTION_MIN_BYTES", "reduction_for", "cold_rounds", "read_paged_fn", "in_l2_metadata",
           "in_l2_problem", "IN_L2_BYTES"]

CSRC = Path(__file__).resolve().parent / "csrc"


def l3_bytes() -> int:
    """The largest cache the OS reports (Linux sysfs; 0 when it reports none)."""
    best = 0
    for d in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (d / "size").read_text().strip().upper()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text[:-1] if text[-1:] in ("K", "M", "G") else text
        if digits.isdigit():
            best = max(best, int(digits) * mult)
    return best


REDUCTION_MIN_BYTES = max(128 << 20, min(2 << 30, 2 * l3_bytes()))


def reduction_for(nbytes: int) -> tuple[Callable[[], Any], int]:
    """A reduction (``x.sum()`` over float32) of ``max(nbytes, REDUCTION_MIN_BYTES)`` bytes, and that size.

    Timed before each kernel call, it gives the read rate the kernel is held to under the same load
    and evicts the kernel's cache (see the module docstring).  Rates, not times, are compared."""
    size = max(nbytes, REDUCTION_MIN_BYTES)
    x = torch.ones(size // 4, dtype=torch.float32)
    return (lambda: x.sum()), x.numel() * 4


def cold_rounds(subjects: list[Callable[[], Any]], reduction: Callable[[], Any], rounds: int,
                clock: Callable[[], float] = time.perf_counter) -> tuple[list[float], float]:
    """Best time of each subject over ``rounds`` rounds, each call right after the reduction (so it
    starts cold), and the reduction's best time over all its runs.  One warm-up call each first."""
    reduction()
    for fn in subjects:
        fn()
    best = [float("inf")] * len(subjects)
    best_red = float("inf")
    for _ in range(rounds):
        for i, fn in enumerate(subjects):
            t = clock()
            reduction()
            best_red = min(best_red, clock() - t)
            t = clock()
            fn()
            best[i] = min(best[i], clock() - t)
    return best, best_red


_lib: dict[str, Any] = {}


def _load() -> Optional[Any]:
    if "fn" not in _lib:
        try:
            from attnsolve.kernels._cpp_build import FLAGS, build

            lib = ctypes.CDLL(str(build("read_paged", (FLAGS,), csrc=CSRC)))
            fn = lib.attnsolve_read_paged
            I64, I, P = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
            fn.restype = I64
            fn.argtypes = [P, P, I64, I64, P, I64, P, I, I, I, I]
            _lib["fn"], _lib["reason"] = fn, None
        except Exception as e:  # no compiler: the benchmark runs without the ceiling column
            _lib["fn"], _lib["reason"] = None, f"{type(e).__name__}: {e}"
    return _lib["fn"]


def read_paged_fn(kc: torch.Tensor, vc: torch.Tensor, md, threads: Optional[int] = None
                  ) -> Optional[Callable[[], int]]:
    """A call that reads every K and V row the decode of ``md`` reads (no math), or ``None`` without a
    compiler or for caches it does not cover (non-contiguous, rows not a multiple of 64 bytes)."""
    fn = _load()
    nb, bs, hkv, d = kc.shape
    row = hkv * d * kc.element_size()
    if (fn is None or not kc.is_contiguous() or not vc.is_contiguous() or vc.shape != kc.shape
            or vc.dtype != kc.dtype or row % 64):
        return None
    threads = threads or torch.get_num_threads()
    bt = md.block_table.to(torch.int32).contiguous()
    sl = md.seq_lens.to(torch.int32).contiguous()
    total = int(sl.sum())
    chunk = min(2048, max(256, -(-total // (4 * threads))))  # the decode kernel's chunks (cpu._decode_ext)
    chunk = -(-chunk // bs) * bs

    def run() -> int:
        return fn(kc.data_ptr(), vc.data_ptr(), bs * row, row, bt.data_ptr(), bt.stride(0), sl.data_ptr(),
                  sl.numel(), bs, chunk, threads)

    run.keep = (bt, sl)  # type: ignore[attr-defined]  # the tensors the pointers refer to
    return run


def reason() -> Optional[str]:
    """Why ``read_paged_fn`` returns ``None`` (after a failed build)."""
    return _lib.get("reason")


IN_L2_BYTES = 512 << 10  # K and V of the physical blocks an in-L2 decode reads (half this VM's 1 MiB L2 per core)


def in_l2_metadata(md, block_bytes: int):
    """``md`` with every logical block mapped onto the first few physical blocks (their K and V at most
    ``IN_L2_BYTES``): the same decode, the same arithmetic, from rows that stay in L2 after the first pass."""
    from attnsolve.kernels import AttentionMetadata

    bt = md.block_table
    nphys = max(1, min(IN_L2_BYTES // (2 * block_bytes), int(bt.max()) + 1))  # (never past the blocks it uses)
    table = (torch.arange(bt.numel(), dtype=torch.int32) % nphys).view_as(bt).contiguous()
    return AttentionMetadata(md.query_start_loc, md.seq_lens, table)


def in_l2_problem(kc: torch.Tensor, vc: torch.Tensor, md, block: int = 16):
    """``(kc, vc, md)`` of ``in_l2_metadata`` for a contiguous ``[blocks, bs, Hkv, D]`` cache of any block size: the
    same memory seen as blocks of ``block`` tokens (one block of 128 tokens of 8 KV heads of 128 bf16 is already
    256 KiB, K and V twice that), every logical block mapped onto the first few.  The kernel's tiles sit at
    absolute multiples of 16 tokens whatever the block size, so the arithmetic is the decode's own."""
    from attnsolve.kernels import AttentionMetadata

    nb, bs, hkv, d = kc.shape
    if bs % block or not kc.is_contiguous() or not vc.is_contiguous():
        return kc, vc, in_l2_metadata(md, kc[0].numel() * kc.element_size())
    k2, v2 = kc.view(nb * (bs // block), block, hkv, d), vc.view(nb * (bs // block), block, hkv, vc.shape[-1])
    b = md.block_table.shape[0]
    longest = int(md.seq_lens.max())
    flat = AttentionMetadata(md.query_start_loc, md.seq_lens,
                             torch.zeros(b, -(-longest // block), dtype=torch.int32))
    return k2, v2, in_l2_metadata(flat, k2[0].numel() * k2.element_size())
