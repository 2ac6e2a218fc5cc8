"""Runs bad kernel inputs described as JSON (from ``test_fuzz_kernels.py``) in a child process.

Reads a list of cases on stdin; for each prints ``START i`` (flushed, so a crash names its case)
then ``OK i``, ``ERR i <ExceptionType>`` or ``BAD i <why>``.  Allowed outcomes: a result of the
right shape and dtype, ``ValueError`` or ``KernelUnavailableError``; anything else is ``BAD``.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import warnings

import torch

from attnsolve.kernels import AttentionMetadata, KernelUnavailableError, paged_attention
from attnsolve.kernels.cpu import cpu_attn_impl
from attnsolve.kernels.flex import flex_paged_attention
from attnsolve.kernels.reference import paged_attention_reference

KERNELS = {
    "cpu_ext": functools.partial(cpu_attn_impl, use_ext=None),
    "cpu_torch": functools.partial(cpu_attn_impl, use_ext=False),
    "cpu_tiled": functools.partial(cpu_attn_impl, use_ext=False, use_flash=False),
    "flex": flex_paged_attention,
    "reference": paged_attention_reference,
    "dispatch": paged_attention,
}
DTYPES = {n: getattr(torch, n) for n in ("float32", "bfloat16", "float16", "float64", "int32", "int8", "uint8",
                                         "int16", "int64", "bool", "complex64", "float8_e4m3fn")}


def _value(v):
    """JSON stand-ins for values JSON cannot hold."""
    if isinstance(v, dict) and "special" in v:
        s = v["special"]
        if s in ("nan", "inf", "-inf"):
            return float(s)
        if s == "tensor":
            return torch.tensor(v["data"], dtype=DTYPES[v.get("dtype", "float32")])
        if s == "tuple":
            return tuple(v["data"])
    return v


def build(case):
    g = torch.Generator().manual_seed(case.get("seed", 0))
    q_lens, seq_lens = case["q_lens"], case["seq_lens"]
    H, hkv, D, bs = case["H"], case["hkv"], case["D"], case["bs"]
    nblk = [-(-s // bs) for s in seq_lens]
    nb = sum(nblk) + 2
    bt = torch.zeros(len(seq_lens), max(nblk + [1]), dtype=torch.int32)
    k = 0
    for i, n in enumerate(nblk):
        bt[i, :n] = torch.arange(k, k + n, dtype=torch.int32)
        k += n
    kc = torch.randn(nb, bs, hkv, D, generator=g)
    vc = torch.randn(nb, bs, hkv, D, generator=g)
    qsl = torch.zeros(len(q_lens) + 1, dtype=torch.int32)
    qsl[1:] = torch.tensor(q_lens, dtype=torch.int32).cumsum(0)
    q = torch.randn(int(qsl[-1]), H, D, generator=g)
    sl = torch.tensor(seq_lens, dtype=torch.int32)
    kw = {}
    m, arg = case["mutation"], _value(case.get("arg"))
    if m == "meta":
        t = {"block_table": bt, "seq_lens": sl, "query_start_loc": qsl, "query": q, "key_cache": kc}[arg]
        t = t.to("meta")
        bt, sl, qsl, q, kc = (t if n == arg else x for n, x in (("block_table", bt), ("seq_lens", sl),
                                                                 ("query_start_loc", qsl), ("query", q),
                                                                 ("key_cache", kc)))
    elif m == "sinks_meta":
        kw["sinks"] = torch.zeros(H, device="meta")
    elif m == "bt_dtype":
        bt = bt.to(DTYPES[arg])
    elif m == "bt_value":
        bt = bt.long()
        bt[case["row"] % bt.shape[0], 0] = arg
    elif m == "sl_value":
        sl = sl.long()
        sl[case["row"] % sl.shape[0]] = arg
    elif m == "qsl_value":
        qsl = qsl.long()
        qsl[case["row"] % qsl.shape[0]] = arg
    elif m == "query_dtype":
        q = q.to(DTYPES[arg])
    elif m == "cache_dtype":
        kc = kc.to(DTYPES[arg])
        if case.get("both", True):
            vc = vc.to(DTYPES[arg])
    elif m == "query_view":
        q = {"stride2": lambda: torch.randn(q.shape[0], H, 2 * D)[:, :, ::2],
             "expand_tokens": lambda: torch.randn(1, H, D).expand(q.shape[0], H, D),
             "expand_heads": lambda: torch.randn(q.shape[0], 1, D).expand(q.shape[0], H, D),
             "expand_last": lambda: torch.randn(q.shape[0], H, 1).expand(q.shape[0], H, D),
             "transposed": lambda: torch.randn(H, q.shape[0], D).transpose(0, 1)}[arg]()
    elif m == "cache_view":
        if arg == "split":
            kv = torch.randn(nb, 2, bs, hkv, D)
            kc, vc = kv[:, 0], kv[:, 1]
        elif arg == "hnd":
            kc = torch.randn(nb, hkv, bs, D).permute(0, 2, 1, 3)
            vc = torch.randn(nb, hkv, bs, D).permute(0, 2, 1, 3)
        elif arg == "expanded":
            kc = kc[:, :1].expand_as(kc)
        elif arg == "last_strided":
            kc = torch.randn(nb, bs, hkv, 2 * D)[..., ::2]
    elif m == "shape":
        if arg == "q2d":
            q = q[:, 0]
        elif arg == "cache5d":
            kc = kc.unsqueeze(0)
        elif arg == "heads_not_divisible" and H > 1:
            q = q[:, : H - 1] if (H - 1) % hkv else q[:, :1].expand(q.shape[0], 3, D)
        elif arg == "zero_kv_heads":
            kc, vc = kc[:, :, :0], vc[:, :, :0]
        elif arg == "zero_block":
            kc, vc = kc[:, :0], vc[:, :0]
        elif arg == "d_mismatch":
            kc = kc[..., : D // 2]
        elif arg == "bt_rows":
            bt = bt[:0]
        elif arg == "empty_query":
            q = q[:0]
    elif m == "nan":
        if arg == "query":
            q[0, 0, 0] = math.nan
        elif arg == "unused_blocks":
            kc[-2:], vc[-2:] = math.nan, math.nan
        elif arg == "inf_query":
            q[0] = math.inf
    elif m == "option":
        kw[case["name"]] = arg
    md = AttentionMetadata(qsl, sl, bt)
    return q, kc, vc, md, kw


def main() -> int:
    cases = json.load(sys.stdin)
    warnings.simplefilter("ignore")
    for i, case in enumerate(cases):
        print(f"START {i}", flush=True)
        try:
            q, kc, vc, md, kw = build(case)
        except Exception as e:  # the case could not be built (e.g. a mutation that torch itself refuses)
            print(f"SKIP {i} {type(e).__name__}", flush=True)
            continue
        try:
            out = KERNELS[case["kernel"]](q, kc, vc, md, **kw)
        except (ValueError, KernelUnavailableError) as e:
            msg = str(e)
            if isinstance(e, ValueError) and not (msg.startswith("Expected") or "Expected" in msg):
                print(f"BAD {i} ValueError without the 'Expected ..., but got ...' form: {msg[:200]}", flush=True)
            else:
                print(f"ERR {i} {type(e).__name__}", flush=True)
            continue
        except Exception as e:
            print(f"BAD {i} {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        if kw.get("return_lse"):
            out = out[0]
        want = (q.shape[0], q.shape[1], vc.shape[3])
        # an fp8 query is widened to bfloat16 and the output is bfloat16 (docs/kernels.md, `q_scale`)
        want_dtype = torch.bfloat16 if q.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else q.dtype
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != want or out.dtype != want_dtype:
            print(f"BAD {i} result shape/dtype {getattr(out, 'shape', None)} {getattr(out, 'dtype', None)}, "
                  f"expected {want} {want_dtype}", flush=True)
            continue
        if case["mutation"] == "nan" and case.get("arg") == "query" and not torch.isnan(out[0, 0]).all():
            print(f"BAD {i} a NaN query row gave no NaN", flush=True)
            continue
        if case["mutation"] == "nan" and case.get("arg") == "unused_blocks" and torch.isnan(out).any():
            print(f"BAD {i} NaN from unused blocks reached the output", flush=True)
            continue
        print(f"OK {i}", flush=True)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
