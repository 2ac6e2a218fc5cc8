"""The peers' kernel-test grids (``peer_grid_cases.py``) against every CPU-runnable backend.

Reference: written here from the peers' documented semantics, not from any attnsolve code:
float64; causal rows aligned to the end of the sequence; window ``w`` sees ``t > p - w``
(causal) or ``|t - p| <= w - 1`` (encoder, vLLM's ``window_size = (w - 1, w - 1)``);
soft-cap on ``scale · q · k``; ALiBi ``slope[h] · (t - p)`` added after it; one sink logit per
head in the denominator; query head ``h`` reads KV head ``h // group``; fp8 dequantised by
``k_scale`` / ``v_scale`` (per tensor or per (sequence, KV head)); default scale
``head_size ** -0.5``.  Every cache slot that no sequence uses holds NaN, so a kernel that
reads past ``seq_len`` (or a masked slot without guarding it) fails with "Likely read out of
bounds", as vLLM's MLA CPU test asserts.

Backends: CPU_ATTN at the peers' sizes through ``paged_attention`` (``kernel_for("CPU_ATTN")``
where dispatch would refuse the config, e.g. block size 48 or 96); FLEX_ATTENTION (eager) and
TRITON_ATTN (``TRITON_INTERPRET=1``) at ``peer_grid_cases.small`` sizes through ``kernel_for``
(on CPU vLLM always selects CPU_ATTN, so dispatch never reaches them); the MLA grid against
CPU_MLA at the peer's sizes and TRITON_MLA (interpreter) at a quarter of the length.

How much runs: a deterministic sample (every source test, every feature) by default and in
the ``ci`` profile, about two minutes on 2 cores; ``ATTNSOLVE_PEER_GRID=<n>`` takes ``n`` cases of
every source test; the whole grid with ``HYPOTHESIS_PROFILE=nightly``, ``--runslow`` or ``ATTNSOLVE_PEER_GRID=full``.  The tolerances are the peers' (see the case fields).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest

from triton_import import import_interpreted  # noqa: E402

torch, _triton_attn, _ = import_interpreted("attnsolve.kernels.triton_attn")
_, _triton_mla, _ = import_interpreted("attnsolve.kernels.triton_mla")  # @triton.jit decides at import

import peer_grid_cases as grid  # noqa: E402
import sizes  # noqa: E402
from paged_cases import amx_decode_host  # noqa: E402
from peer_grid_cases import MlaCase, PagedCase, case_id  # noqa: E402

from attnsolve import ConfigError, SelectionError  # noqa: E402
from attnsolve.kernels import KernelUnavailableError, kernel_for, paged_attention  # noqa: E402
from attnsolve.kernels.dispatch import resolve  # noqa: E402

INTERPRETED = _triton_attn.is_interpreted()
FULL = os.environ.get("ATTNSOLVE_PEER_GRID") == "full" or sizes.FULL  # nightly profile or --runslow

from peer_grid_run import build, check, cost, features, mla_build, mla_reference, page_size_1, reference, sample  # noqa: E402,F401


_ALL = grid.paged_cases()
_SMALL_ALL = [grid.small(c) for c in _ALL]
if FULL:
    CPU_CASES = _ALL
    SMALL_CASES = _SMALL_ALL
else:  # ATTNSOLVE_PEER_GRID=<n>: n cases of every source test (plus the feature cover), small sizes
    _n = os.environ.get("ATTNSOLVE_PEER_GRID", "")
    SMALL_CASES = sample(_SMALL_ALL, int(_n) if _n.isdigit() else 1)
    # CPU_ATTN at the peers' own sizes too: the cheapest case of every source test whose
    # reference stays small (decode-heavy batches; the 2k-8k-token prefills run nightly)
    by_source: dict[str, PagedCase] = {}
    for c in _ALL:
        if c.source not in by_source or cost(c) < cost(by_source[c.source]):
            by_source[c.source] = c
    CPU_CASES = [c for c in by_source.values() if cost(c) <= 5e8]


def _ids(cases):
    seen: dict[str, int] = {}
    out = []
    for c in cases:
        base = case_id(c)
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return out


# ----------------------------------------------------------------------------- running

def _cpu_attn_kernel(q, kc, kw):
    """``paged_attention`` when dispatch selects CPU_ATTN for these tensors, else ``kernel_for``."""
    try:
        sel, _ = resolve(q, kc, sinks=kw.get("sinks"))
        if sel.backend == "CPU_ATTN":
            return paged_attention
    except (ConfigError, SelectionError, KernelUnavailableError, ValueError):
        pass
    return kernel_for("CPU_ATTN", "cpu")



def _run(backend: str, case: PagedCase):
    q, kc, vc, md, kw, (kd, vd) = build(case)
    fn = _cpu_attn_kernel(q, kc, kw) if backend == "CPU_ATTN" else kernel_for(backend, "cpu")
    out = fn(q, kc, vc, md, **kw)
    if case.compare == "page_size_1":
        # the same memory as a cache of page size 1: out must agree (the peer's torch.allclose)
        k1, v1, md1 = page_size_1(kc, vc, md)
        fn1 = _cpu_attn_kernel(q, k1, kw) if backend == "CPU_ATTN" else fn
        out1 = fn1(q, k1, v1, md1, **kw)
        assert not out1.isnan().any(), "Likely read out of bounds (page size 1)"
        # both against the reference first, with vLLM's paged-attention tolerance
        ref = reference(case, q, md, kw, kd, vd)
        check(replace(case, atol=1.5e-2, rtol=1e-2), out, ref, q)
        check(replace(case, atol=1.5e-2, rtol=1e-2), out1, ref, q)
        if backend == "CPU_ATTN" and amx_decode_host():
            # On a CPU with AMX tiles the bf16 scores of 16-row groups inside one block come from AMX
            # (a page of 1 has no such groups): the two agree to ~1 bf16 ulp there (docs/kernels.md).
            torch.testing.assert_close(out.float(), out1.float(), atol=2e-3, rtol=8e-3)
        else:
            # CPU_ATTN steps its online softmax over tiles at absolute multiples of 32 tokens and splits
            # rows into chunks of whole tiles, whatever the page size: the peer's equality holds (#17 item 7)
            torch.testing.assert_close(out, out1, atol=case.atol, rtol=case.rtol)
        return
    check(case, out, reference(case, q, md, kw, kd, vd), q)


@pytest.mark.parametrize("case", CPU_CASES, ids=_ids(CPU_CASES))
def test_cpu_attn_peer_sizes(case):
    _run("CPU_ATTN", case)


@pytest.mark.parametrize("case", SMALL_CASES, ids=_ids(SMALL_CASES))
def test_cpu_attn_small(case):
    _run("CPU_ATTN", case)


@pytest.mark.parametrize("case", SMALL_CASES, ids=_ids(SMALL_CASES))
def test_flex_small(case):
    _run("FLEX_ATTENTION", case)


@pytest.fixture
def _interpret_env(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.mark.skipif(not INTERPRETED, reason="triton was imported in compile mode in this process: "
                    "these cases run in a subprocess (test_triton_cases_in_interpreter_subprocess)")
@pytest.mark.usefixtures("_interpret_env")
@pytest.mark.parametrize("case", SMALL_CASES, ids=_ids(SMALL_CASES))
def test_triton_small(case):
    _run("TRITON_ATTN", case)


# ----------------------------------------------------------------------------- MLA

MLA_CASES = grid.mla_cases()



def _mla_run(backend: str, case: MlaCase):
    q, kv, md = mla_build(case)
    out = kernel_for(backend, "cpu")(q, kv, md, kv_lora_rank=case.kv_lora_rank, scale=case.head_size ** -0.5,
                                      topk_indices=None)
    assert not out.isnan().any(), "Likely read out of bounds"
    torch.testing.assert_close(out, mla_reference(case, q, kv, md).to(q.dtype), atol=case.atol, rtol=case.rtol)


@pytest.mark.parametrize("case", MLA_CASES, ids=_ids(MLA_CASES))
def test_cpu_mla_peer_grid(case):
    _mla_run("CPU_MLA", case)


_MLA_SMALL = [replace(c, seq_lens=tuple(max(2, n // 4) for n in c.seq_lens)) for c in MLA_CASES]
_MLA_SMALL = _MLA_SMALL if FULL else _MLA_SMALL[1::2]  # the varlen ones in CI


@pytest.mark.skipif(not INTERPRETED, reason="triton was imported in compile mode in this process: "
                    "these cases run in a subprocess (test_triton_cases_in_interpreter_subprocess)")
@pytest.mark.usefixtures("_interpret_env")
@pytest.mark.parametrize("case", _MLA_SMALL, ids=_ids(_MLA_SMALL))
def test_triton_mla_peer_grid(case):
    _mla_run("TRITON_MLA", case)


@pytest.mark.skipif(INTERPRETED, reason="triton runs in interpreter mode in this process already")
def test_triton_cases_in_interpreter_subprocess():
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                        "-k", "test_triton_small or test_triton_mla_peer_grid"],
                       env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


# ----------------------------------------------------------------------------- the grid itself

def test_grid_is_the_peers():
    """Sizes of the ported grids (a change to the data shows up here) and the sample's coverage."""
    counts: dict[str, int] = {}
    for c in _ALL:
        counts[c.source] = counts.get(c.source, 0) + 1
    assert counts["test_cpu_attn.py::test_varlen_with_paged_kv_normal_vec"] == 3 * 3 * 3 * 3 * 2 * 2 * 3
    assert counts["test_triton_unified_attention.py::test_triton_unified_attn"] == 2 * 3 * 2 * 4 * 2 * 2 * 2
    assert counts["test_flash_attn.py::test_varlen_with_paged_kv"] == 2 * 2 * 5 * 2 * 2 * 2 * 2
    assert counts["test_triton_decode_attention.py::test_decode_attention"] == 2 * 2 * 2 * 3 * 2
    assert len(counts) == 14 and len(MLA_CASES) == 6
    got = set().union(*(features(c) for c in sample(_SMALL_ALL)))
    assert got >= set().union(*(features(c) for c in _SMALL_ALL))
    # repeated blocks really occur in the randint tables (a physical block twice in one row)
    unified = [c for c in _ALL if c.source.startswith("test_triton_unified")][0]
    md = build(unified)[3]
    assert any(len(set(r)) < len(r) for r in md.block_table.tolist())
