"""On a CPU with AMX tiles the C++ kernels take their AMX paths by default, so the AVX-512 paths
that every CPU without AMX runs (``vdpbf16ps`` scores and P·V, the float32 MLA products) would go
untested here. These tests rerun the CPU_ATTN and CPU_MLA test modules in child processes with
the switches that turn AMX off (the switches are read once per process), and CPU_ATTN's once with
the fp16 split path forced on at every group size (by default it runs from 10 query heads per KV
head, which the module's hypothesis cases rarely draw)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from paged_cases import amx_decode_host

HERE = Path(__file__).resolve().parent
needs_amx = pytest.mark.skipif(not amx_decode_host(), reason="no AMX here: the default run already covers these paths")


@needs_amx
@pytest.mark.parametrize("switch,value", [("ATTNSOLVE_CPU_AMX", "0"), ("ATTNSOLVE_CPU_AMX_PV", "0"),
                                          ("ATTNSOLVE_CPU_AMX_F16", "1")])
def test_kernels_with_amx_switched(switch, value):
    env = dict(os.environ, **{switch: value})
    if env.get("HYPOTHESIS_PROFILE") == "ci":  # the parent ran every example once on the default path
        env["HYPOTHESIS_PROFILE"] = "ci-child"
    files = [str(HERE / "test_cpu_attn.py")]
    if switch == "ATTNSOLVE_CPU_AMX":  # CPU MLA has one switch for its AMX path
        files.append(str(HERE / "test_cpu_mla.py"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files],
                       env=env, capture_output=True, text=True, timeout=900, cwd=HERE.parent.parent)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


@needs_amx
def test_pipelined_amx_decode_is_bit_identical_to_one_tile_at_a_time(tmp_path):
    """The pipelined AMX path (tile i's scores beside tile i-1's P·V) does the same operations on the
    accumulators in the same order as one tile at a time (ATTNSOLVE_CPU_PIPE=0): outputs are equal bit for bit."""
    sys.path.insert(0, str(HERE))
    import pipe_cases as cases

    out = tmp_path / "one_tile.pt"
    env = dict(os.environ, ATTNSOLVE_CPU_PIPE="0")
    r = subprocess.run([sys.executable, str(HERE / "pipe_cases.py"), str(out)], env=env,
                       capture_output=True, text=True, timeout=600, cwd=HERE.parent.parent)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    import torch

    one_tile = torch.load(out)
    piped = cases.outputs()
    assert len(piped) == len(one_tile) == len(cases.CASES)
    for i, (a, b) in enumerate(zip(piped, one_tile)):
        assert torch.equal(a, b), f"case {i}: {cases.CASES[i]}: max difference {(a.float() - b.float()).abs().max()}"


@pytest.mark.parametrize("switch", ["ATTNSOLVE_CPU_PREFETCH_SBS", "ATTNSOLVE_CPU_QUAD", "ATTNSOLVE_CPU_OUTER"])
def test_scheduling_switches_never_change_a_decode(tmp_path, switch):
    """Switches that only reschedule the vector path give outputs equal bit for bit, in float32, float16 and
    bfloat16 and with fp8 caches (run on any CPU; a switch is read once per process, so both settings run in
    children): the prefetch order (ATTNSOLVE_CPU_PREFETCH_SBS: the next tile's K and V side by side during the
    scores, or split between the scores and P·V, the default on every CPU since session 34) only moves loads in
    time; four tokens per step in the bf16 scores (ATTNSOLVE_CPU_QUAD, on by default) does each score's
    products in the same order as two tokens per step; the float32 outer-product scores (ATTNSOLVE_CPU_OUTER, on
    by default from 16 query heads per KV head) sum each score's products in the dot-product pairs' order."""
    dtypes = ["float32", "float16", "bfloat16"]
    runs = []
    for value in ("0", "1"):
        out = tmp_path / f"switch{value}.pt"
        env = dict(os.environ, **{switch: value})
        r = subprocess.run([sys.executable, str(HERE / "pipe_cases.py"), str(out), *dtypes], env=env,
                           capture_output=True, text=True, timeout=600, cwd=HERE.parent.parent)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        import torch

        runs.append(torch.load(out))
    off, on = runs
    assert len(off) == len(on) > 0
    for i, (a, b) in enumerate(zip(off, on)):
        assert torch.equal(a, b), f"output {i}: max difference {(a.float() - b.float()).abs().max()}"
