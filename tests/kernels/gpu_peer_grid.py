"""The peers' kernel-test grids on a CUDA device: compiled Triton, FLEX on CUDA, the adapters, dispatch.

``test_peer_grid.py`` runs the grids on CPU (CPU_ATTN at the peers' sizes, FLEX and Triton's
interpreter at small sizes). Here the same cases (``peer_grid_cases.py``), the same tensors and
the same float64 reference (``peer_grid_run.py``, computed on the GPU) run at the **peers' own
sizes** against every backend that runs on this device:

* ``TRITON_ATTN`` and ``TRITON_MLA`` compiled (``TRITON_INTERPRET`` must be unset);
* ``FLEX_ATTENTION`` on CUDA, ``FLASH_ATTN`` (flash-attn, or its SDPA fallback without it),
  ``FLASHINFER`` when installed: a backend that refuses a case (``KernelUnavailableError``)
  is counted as refused with its reason, not as a failure;
* ``paged_attention`` (dispatch): the backend the rules select for these tensors on this GPU,
  and whether its answer matches the reference.

Run: ``python tests/kernels/gpu_peer_grid.py [--per-source N | --full] [--json FILE]``; exit code
1 when any case fails (a wrong answer, NaN, or an unexpected exception). ``-m gpu`` tests call it
(``test_gpu_peer_grid.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent.parent)]

import torch  # noqa: E402

import peer_grid_cases as grid  # noqa: E402
from peer_grid_run import _lay_out, build, check, mla_build, mla_reference, page_size_1, reference, sample  # noqa: E402
from peer_grid_cases import case_id  # noqa: E402

from attnsolve.kernels import KernelUnavailableError, kernel_for, paged_attention  # noqa: E402
from attnsolve.kernels.dispatch import resolve  # noqa: E402
from attnsolve.kernels.metadata import AttentionMetadata  # noqa: E402

PAGED_BACKENDS = ("TRITON_ATTN", "FLEX_ATTENTION", "FLASH_ATTN", "FLASHINFER")
GPU_CACHE_BYTES = 256 << 20  # one K or V pool at most this large (built on the host, then copied)
DEV = "cuda"  # --device cpu: a smoke run of the harness itself (the kernels on CPU are test_peer_grid.py's)


def _to_gpu(case, q, kc, vc, md, kw):
    """The case's tensors on the GPU, the cache layout (HND view, K/V split) rebuilt there."""
    k, v = kc.contiguous().to(DEV), vc.contiguous().to(DEV)
    k, v = _lay_out(k, v, case.layout)
    mdc = AttentionMetadata(md.query_start_loc.to(DEV), md.seq_lens.to(DEV), md.block_table.to(DEV))
    kwc = {n: (x.to(DEV) if isinstance(x, torch.Tensor) else x) for n, x in kw.items()}
    return q.to(DEV), k, v, mdc, kwc


def _outcome(fn, case, q, k, v, md, kw, ref) -> tuple[str, str]:
    """("pass" | "fail" | "refused" | "error", detail)."""
    try:
        out = fn(q, k, v, md, **kw)
        if DEV == "cuda":
            torch.cuda.synchronize()
    except KernelUnavailableError as e:
        return "refused", str(e).splitlines()[0][:200]
    except Exception as e:  # noqa: BLE001  (recorded, the run goes on)
        return "error", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    try:
        check(case, out.cpu(), ref, q.cpu())
    except AssertionError as e:
        err = (out.float().cpu() - ref.float()).abs().nan_to_num(float("inf")).max().item()
        return "fail", f"max abs error {err:.3g} (atol {case.atol}, rtol {case.rtol}): {str(e).splitlines()[0][:120]}"
    return "pass", ""


def runnable(backends, results) -> dict:
    """{backend: kernel} for the backends that run here; the others recorded once, with the reason."""
    fns = {}
    for b in backends:
        try:
            fns[b] = kernel_for(b, DEV)
        except KernelUnavailableError as e:
            results.append({"grid": "-", "case": "-", "source": "-", "backend": b, "status": "not runnable",
                            "detail": str(e).splitlines()[0][:240]})
    return fns


def run_paged(cases, backends, results):
    fns = runnable(backends, results)
    for case in cases:
        cid = case_id(case)
        q, kc, vc, md, kw, (kd, vd) = build(case, cache_bytes=GPU_CACHE_BYTES)
        qg, k, v, mdg, kwg = _to_gpu(case, q, kc, vc, md, kw)
        ref = reference(case, qg, mdg, kwg, kd.to(DEV), vd.to(DEV)).cpu()
        del kd, vd
        # page_size_1 cases: both page sizes against the reference with vLLM's paged tolerance
        # (the case's own tolerance is the peer's equality of the two, reported in detail)
        checked = replace(case, atol=1.5e-2, rtol=1e-2) if case.compare == "page_size_1" else case
        for b, fn in fns.items():
            status, detail = _outcome(fn, checked, qg, k, v, mdg, kwg, ref)
            if status == "pass" and case.compare == "page_size_1":
                k1, v1, md1 = page_size_1(k, v, mdg)
                status, detail = _outcome(fn, checked, qg, k1, v1, md1, kwg, ref)
                if status == "pass":
                    a_, b_ = fn(qg, k, v, mdg, **kwg).float(), fn(qg, k1, v1, md1, **kwg).float()
                    diff = (a_ - b_).abs().max().item()
                    detail = f"page size 16 vs 1: max difference {diff:.3g} (peer's tolerance {case.atol})"
                else:
                    detail = "page size 1: " + detail
            results.append({"grid": "paged", "case": cid, "source": case.source, "backend": b,
                            "status": status, "detail": detail})
        # dispatch: what the rules pick for these tensors here, and its answer
        try:
            sel, _ = resolve(qg, k, sinks=kwg.get("sinks"))
            chosen = sel.backend
            status, detail = _outcome(paged_attention, checked, qg, k, v, mdg, kwg, ref)
        except KernelUnavailableError as e:
            chosen, status, detail = getattr(e, "backend", "?"), "refused", str(e).splitlines()[0][:200]
        except Exception as e:  # noqa: BLE001  (a ConfigError/SelectionError names the unsupported config)
            chosen, status, detail = "-", "refused", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        results.append({"grid": "paged", "case": cid, "source": case.source, "backend": f"dispatch->{chosen}",
                        "status": status, "detail": detail})
        del qg, k, v, mdg, kwg
        if DEV == "cuda":
            torch.cuda.empty_cache()


def run_mla(cases, results):
    fn = runnable(["TRITON_MLA"], results).get("TRITON_MLA")
    for case in cases if fn else []:
        q, kv, md = mla_build(case)
        qg, kvg = q.to(DEV), kv.to(DEV)
        mdg = AttentionMetadata(md.query_start_loc.to(DEV), md.seq_lens.to(DEV), md.block_table.to(DEV))
        ref = mla_reference(case, qg, kvg, mdg).cpu()
        try:
            out = fn(qg, kvg, mdg, kv_lora_rank=case.kv_lora_rank, scale=case.head_size ** -0.5,
                     topk_indices=None).cpu()
            ok = not out.isnan().any().item()
            torch.testing.assert_close(out, ref.to(q.dtype), atol=case.atol, rtol=case.rtol)
            status, detail = ("pass", "") if ok else ("fail", "NaN in the output")
        except AssertionError:
            err = (out.double() - ref.double()).abs().max().item()
            status, detail = "fail", f"max abs error {err:.3g} (atol {case.atol}, rtol {case.rtol})"
        except Exception as e:  # noqa: BLE001
            status, detail = "error", f"{type(e).__name__}: {str(e)[:200]}"
        results.append({"grid": "mla", "case": case_id(case), "source": case.source, "backend": "TRITON_MLA",
                        "status": status, "detail": detail})


class _Saved(list):
    """The outcomes, written to ``--json`` after every case: a run stopped at its time limit (the GPU
    session's step is killed, no clean-up runs) keeps every case it finished."""

    def __init__(self, path: str | None):
        super().__init__()
        self.path = path

    def append(self, row: dict) -> None:
        super().append(row)
        self.save()

    def save(self) -> None:
        if self.path:
            Path(self.path).write_text(json.dumps(list(self), indent=1))


def summarise(results) -> str:
    by = defaultdict(Counter)
    for r in results:
        by[r["backend"]][r["status"]] += 1
    lines = ["| backend | cases | pass | fail | error | refused |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for b in sorted(by):
        c = by[b]
        if "not runnable" in c:
            continue
        lines.append(f"| {b} | {sum(c.values())} | {c['pass']} | {c['fail']} | {c['error']} | {c['refused']} |")
    for r in results:
        if r["status"] == "not runnable":
            lines.append(f"| {r['backend']} | not runnable here: {r['detail']} | | | | |")
    bad = [r for r in results if r["status"] in ("fail", "error")]
    if bad:
        lines.append("")
        lines.append("Failures:")
        lines += [f"- {r['backend']} {r['case']}: {r['status']}: {r['detail']}" for r in bad[:40]]
    refused = Counter((r["backend"], r["detail"][:110]) for r in results if r["status"] == "refused")
    if refused:
        lines.append("")
        lines.append("Refusals (backend: reason, count):")
        lines += [f"- {b}: {why} ({n})" for (b, why), n in refused.most_common(12)]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--per-source", type=int, default=2, help="cases of every source test (plus the feature cover)")
    ap.add_argument("--full", action="store_true", help="every case of the grids")
    ap.add_argument("--backends", default=",".join(PAGED_BACKENDS))
    ap.add_argument("--json", help="write every case's outcome to this file")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, default=0, help="at most this many paged cases (0: no limit)")
    ap.add_argument("--mla", default="yes", choices=("yes", "no"), help="run the MLA grid (TRITON_MLA)")
    a = ap.parse_args(argv)
    global DEV
    DEV = a.device
    if DEV == "cpu":
        global GPU_CACHE_BYTES
        GPU_CACHE_BYTES = 8 << 20
    elif os.environ.get("TRITON_INTERPRET"):
        print("TRITON_INTERPRET is set: unset it (this runs the compiled kernels)")
        return 2
    if DEV == "cuda" and not torch.cuda.is_available():
        print(f"no CUDA device (torch {torch.__version__})")
        return 2
    cases = grid.paged_cases()
    cases = cases if a.full else sample(cases, a.per_source)
    if DEV == "cpu":  # the smoke run: the small sizes test_peer_grid.py uses
        cases = [grid.small(c) for c in cases]
    if a.limit:
        cases = cases[: a.limit]
    mla = grid.mla_cases() if a.mla == "yes" else []
    t0 = time.perf_counter()
    results = _Saved(a.json)
    try:
        run_mla(mla, results)  # first: six cases, cheap; the paged grid may compile FLEX graphs for minutes
        run_paged(cases, [b for b in a.backends.split(",") if b], results)
    except Exception:  # noqa: BLE001  (print what ran before the harness broke)
        traceback.print_exc()
        results.append({"grid": "-", "case": "-", "source": "-", "backend": "harness", "status": "error",
                        "detail": traceback.format_exc().splitlines()[-1][:200]})
    name = torch.cuda.get_device_name() if DEV == "cuda" else "cpu"
    sizes = "small" if DEV == "cpu" else "the peers'"
    print(f"# {name}, torch {torch.__version__}, {len(cases)} paged + {len(mla)} MLA cases "
          f"at {sizes} sizes, {time.perf_counter() - t0:.0f} s")
    print(summarise(results))
    results.save()
    return 1 if any(r["status"] in ("fail", "error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
