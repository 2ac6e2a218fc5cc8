"""One validation step for paged-attention inputs, run by every kernel before any pointer reaches native code.

``check_paged(...)`` returns a frozen ``Paged`` with the inputs normalised (window as
``(left, right)``, scales as floats or a ``[num_seqs, num_kv_heads]`` float32 tensor, the metadata
as host lists and int32 tensors whose values were range-checked *before* the narrowing cast,
query/caches with a unit last stride).  Every refusal is a ``ValueError`` in the
"Expected ..., but got ..." form naming the argument (see ``docs/kernels.md``).

Why one module: the C++ and Triton kernels read raw pointers; a block table on another device
(the meta device has no storage), an int64 id that wraps when narrowed, a float block table or a
strided last dimension would read wrong memory.  Checking in one place keeps every kernel's
promise the same.
"""

from __future__ import annotations

import math
import numbers
import operator
import weakref
from dataclasses import dataclass
from typing import Sequence

import torch

from attnsolve.kernels.metadata import tensor_version

__all__ = ["Paged", "MLA", "check_paged", "check_mla", "check_window", "check_scale_arg", "check_mm_ranges", "check_block_table",
           "tensor_scalar",
           "INT_DTYPES", "FLOAT_DTYPES", "FP8_DTYPES", "UNBOUNDED"]

INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
_INT32_MAX = 2**31 - 1
UNBOUNDED = _INT32_MAX  # a window side at least this wide reaches every position


def _names(dtypes) -> str:
    return "/".join(str(d).replace("torch.", "") for d in dtypes)


def _fail(what: str, got) -> ValueError:
    return ValueError(f"Expected {what}, but got {got}.")


def _tensor(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise _fail(f"{name} a torch.Tensor", f"{type(x).__name__} {x!r:.60}")
    if x.device.type == "meta":
        raise _fail(f"{name} on a real device (cpu/cuda), not meta", f"device {x.device}")
    return x


def _same_device(name: str, t: torch.Tensor, dev: torch.device, *, host_ok: bool) -> None:
    if t.device == dev or (host_ok and t.device.type == "cpu"):
        return
    where = f"{dev}" + (" (or cpu)" if host_ok and dev.type != "cpu" else "")
    raise _fail(f"{name} on {where} like the query", f"device {t.device}")


def _int_arg(name: str, x) -> int:
    if isinstance(x, bool):
        raise _fail(f"{name} an integer", f"bool {x}")
    if isinstance(x, torch.Tensor):
        if x.numel() != 1 or x.dtype not in INT_DTYPES:
            raise _fail(f"{name} an integer", f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}")
        return int(x.item())
    try:
        return operator.index(x)
    except TypeError:
        raise _fail(f"{name} an integer", f"{type(x).__name__} {x!r:.60}") from None


def check_window(sliding_window, causal: bool) -> tuple[int, int] | None:
    """``(left, right)`` keys ``p - left <= t <= p + right`` (``UNBOUNDED`` = no limit), or ``None`` = no window.

    int ``w``: ``0``/``None`` no window; ``w > 0`` causal ``(w - 1, 0)``, non-causal ``(w - 1, w - 1)``;
    a tuple ``(left, right)`` with ``-1`` = unbounded side.  Large values are clamped, never truncated.
    """
    if sliding_window is None:
        return None
    if isinstance(sliding_window, (tuple, list)):
        if len(sliding_window) != 2:
            raise _fail("sliding_window an int or a (left, right) pair", f"{sliding_window!r:.60}")
        left, right = (_int_arg("sliding_window", v) for v in sliding_window)
        if left < -1 or right < -1:
            raise _fail("sliding_window (left, right) entries >= -1 (-1: unbounded side)", f"{(left, right)}")
        left = UNBOUNDED if left == -1 else min(left, UNBOUNDED)
        right = UNBOUNDED if right == -1 else min(right, UNBOUNDED)
        if causal:
            right = 0
        if left >= UNBOUNDED and right >= UNBOUNDED:
            return None
        if left >= UNBOUNDED and causal:
            return None
        return left, right
    w = _int_arg("sliding_window", sliding_window)
    if w < 0:
        raise _fail("sliding_window >= 0 (0 or None: no window; a (left, right) pair for one-sided windows)", w)
    if w == 0 or w > UNBOUNDED:
        return None
    return (w - 1, 0) if causal else (w - 1, w - 1)


_SCALARS: dict[int, tuple] = {}  # id -> (weakref, _version, value): one-element tensors already read


def tensor_scalar(x: torch.Tensor) -> float:
    """The value of a one-element tensor, read once per tensor state.

    Reading a GPU tensor is a host sync; an engine passes the same scale tensors (a layer's
    ``k_scale``, a soft-cap) on every call, so the value is kept per tensor identity and
    ``_version`` (an in-place update is read again; a new tensor at a reused id is not
    mistaken for the old one: the weak reference must still point at it)."""
    version = tensor_version(x)
    hit = _SCALARS.get(id(x))
    if hit is not None and hit[0]() is x and hit[1] == version and version is not None:
        return hit[2]
    value = float(x.detach().reshape(()).item())
    if version is None:  # an inference tensor: no version counter, read every time
        return value
    if len(_SCALARS) >= 256:
        _SCALARS.clear()
    try:
        _SCALARS[id(x)] = (weakref.ref(x), version, value)
    except TypeError:  # a tensor subclass without weak references: read every time
        pass
    return value


def _q_scale(x) -> float:
    """The query's descale (per tensor): ``None`` is 1; a real number or a one-element tensor."""
    if x is None:
        return 1.0
    if isinstance(x, torch.Tensor):
        _tensor("q_scale", x)
        if x.numel() != 1 or not (x.dtype.is_floating_point or x.dtype in INT_DTYPES):
            raise _fail("q_scale a real number or a one-element tensor (one descale for the whole query; vLLM "
                        "expands layer._q_scale, a single value)", f"shape {tuple(x.shape)}, {x.dtype}")
        return tensor_scalar(x)
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise _fail("q_scale a real number", f"{type(x).__name__} {x!r:.60}")
    return float(x)


def check_scale_arg(name: str, x, num_seqs: int, num_kv_heads: int, device: torch.device):
    """A float (per tensor) or a ``[num_seqs, num_kv_heads]`` float32 tensor on ``device``."""
    if x is None:
        return 1.0
    if isinstance(x, torch.Tensor):
        _tensor(name, x)
        if not (x.dtype.is_floating_point or x.dtype in INT_DTYPES):
            raise _fail(f"{name} a real number or tensor", f"dtype {x.dtype}")
        if x.numel() == 1:
            return tensor_scalar(x)
        if tuple(x.shape) != (num_seqs, num_kv_heads):
            raise _fail(f"{name} a float, a 0-d tensor or a [num_seqs, num_kv_heads] = [{num_seqs}, "
                        f"{num_kv_heads}] tensor", f"shape {tuple(x.shape)}")
        _same_device(name, x, device, host_ok=True)
        return x.detach().to(device=device, dtype=torch.float32).contiguous()
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise _fail(f"{name} a real number", f"{type(x).__name__} {x!r:.60}")
    return float(x)


def check_mm_ranges(mm_prefix_ranges, num_seqs: int) -> tuple[tuple[tuple[int, int], ...], ...] | None:
    """Per sequence, half-open ``[start, end)`` ranges with ``0 <= start <= end`` (``None`` = none)."""
    if mm_prefix_ranges is None:
        return None
    if isinstance(mm_prefix_ranges, torch.Tensor):  # the custom op's [num_seqs, max_ranges, 2] form
        t = _tensor("mm_prefix_ranges", mm_prefix_ranges)
        if t.dtype not in INT_DTYPES or t.dim() != 3 or t.shape[2] != 2:
            raise _fail("mm_prefix_ranges an integer [num_seqs, max_ranges, 2] tensor",
                        f"shape {tuple(t.shape)} and dtype {t.dtype}")
        mm_prefix_ranges = [[tuple(r) for r in row if r[0] != r[1]] for row in t.tolist()]
    if isinstance(mm_prefix_ranges, (str, bytes)) or not isinstance(mm_prefix_ranges, Sequence):
        raise _fail("mm_prefix_ranges a sequence (one list of (start, end) ranges per sequence)",
                    f"{type(mm_prefix_ranges).__name__}")
    if len(mm_prefix_ranges) != num_seqs:
        raise _fail(f"mm_prefix_ranges with one entry per sequence ({num_seqs})", f"{len(mm_prefix_ranges)} entries")
    out = []
    for i, ranges in enumerate(mm_prefix_ranges):
        if ranges is None:
            out.append(())
            continue
        if isinstance(ranges, (str, bytes)) or not isinstance(ranges, Sequence):
            raise _fail(f"mm_prefix_ranges[{i}] a sequence of (start, end) pairs", f"{type(ranges).__name__}")
        seq = []
        for r in ranges:
            if isinstance(r, (str, bytes)) or not isinstance(r, Sequence) or len(r) != 2:
                raise _fail(f"mm_prefix_ranges[{i}] entries (start, end) pairs", f"{r!r:.60}")
            s, e = _int_arg(f"mm_prefix_ranges[{i}] start", r[0]), _int_arg(f"mm_prefix_ranges[{i}] end", r[1])
            if not 0 <= s <= e:
                raise _fail(f"mm_prefix_ranges[{i}] half-open ranges [start, end) with 0 <= start <= end", (s, e))
            if s < e:
                seq.append((min(s, _INT32_MAX), min(e, _INT32_MAX)))
        out.append(tuple(seq))
    return tuple(out) if any(out) else None


def _index_tensor(name: str, t, dev: torch.device, dim: int) -> torch.Tensor:
    t = _tensor(name, t)
    if t.dtype not in INT_DTYPES:
        raise _fail(f"{name} an integer tensor ({_names(INT_DTYPES)})", f"dtype {t.dtype}")
    if t.dim() != dim:
        raise _fail(f"{name} with {dim} dimension{'s' if dim > 1 else ''}", f"shape {tuple(t.shape)}")
    _same_device(name, t, dev, host_ok=True)
    return t


def _check_block_ids(md, bt: torch.Tensor, lens: Sequence[int], block_size: int, num_blocks: int) -> None:
    """``check_block_table`` once per table state: metadata reused across calls (the same tensor,
    unchanged ``_version``) costs no device read; user objects without the cache check every call."""
    if bt is not md.block_table or not hasattr(md, "block_ids_checked"):
        check_block_table(bt, lens, block_size, num_blocks)
        return
    key = (id(bt), tensor_version(bt), lens if isinstance(lens, tuple) else tuple(lens), block_size, num_blocks)
    if not md.block_ids_checked(key):
        check_block_table(bt, lens, block_size, num_blocks)
        md.mark_block_ids_checked(key)


def check_block_table(bt: torch.Tensor, lens: Sequence[int], block_size: int, num_blocks: int) -> None:
    """Every block id a sequence uses (the first ``ceil(L / block_size)`` of its row) lies in
    ``[0, num_blocks)``; checked on the table's own integer dtype, before any narrowing cast."""
    if not lens:
        return
    most = -(-max(lens) // block_size)
    if most == 0:
        return
    lo, hi = torch.aminmax(bt[:, :most])  # fast path (one op): every column any sequence uses is in range
    if int(lo) >= 0 and int(hi) < num_blocks:
        return
    nblk = torch.tensor([-(-L // block_size) for L in lens], dtype=torch.long, device=bt.device)
    used = torch.arange(bt.shape[1], device=bt.device).unsqueeze(0) < nblk.unsqueeze(1)
    vals = bt.long() if bt.dtype != torch.int64 else bt  # widening: exact
    bad = used & ((vals < 0) | (vals >= num_blocks))
    if bool(bad.any()):
        i = int(bad.any(dim=1).nonzero()[0, 0])
        got = vals[i][bad[i]].tolist()[:8]
        raise _fail(f"block_table entries in [0, num_blocks={num_blocks}) for the blocks sequence {i} uses",
                    f"{got}")


@dataclass(frozen=True, eq=False)
class Paged:
    """Checked, normalised paged-attention inputs (see ``check_paged``)."""

    query: torch.Tensor
    key_cache: torch.Tensor
    value_cache: torch.Tensor
    qsl: tuple[int, ...]
    lens: tuple[int, ...]
    query_start_loc: torch.Tensor  # int32, contiguous, on the query's device
    seq_lens: torch.Tensor  # int32, contiguous, on the query's device
    block_table: torch.Tensor  # int32, contiguous, on the query's device, used ids in range
    scale: float
    causal: bool
    window: tuple[int, int] | None
    cap: float | None
    sinks: torch.Tensor | None  # float32 [H]
    k_scale: float | torch.Tensor
    v_scale: float | torch.Tensor
    alibi: torch.Tensor | None  # float32 [H]
    mm: tuple[tuple[tuple[int, int], ...], ...] | None
    return_lse: bool

    @property
    def per_seq_scales(self) -> bool:
        return isinstance(self.k_scale, torch.Tensor) or isinstance(self.v_scale, torch.Tensor)


def _float_vector(name: str, x, n: int, what: str, dev: torch.device) -> torch.Tensor | None:
    if x is None:
        return None
    x = _tensor(name, x)
    if not x.dtype.is_floating_point:
        raise _fail(f"{name} a floating-point tensor", f"dtype {x.dtype}")
    if x.numel() != n or x.dim() != 1:
        raise _fail(f"{name} of shape [{n}] ({what})", f"shape {tuple(x.shape)}")
    _same_device(name, x, dev, host_ok=True)
    return x.detach().to(device=dev, dtype=torch.float32).contiguous()


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    """A view whose last dimension has stride 1 (a copy only when it has not)."""
    return t if (t.stride(-1) == 1 or t.shape[-1] <= 1) else t.contiguous()


def _checked_seqs(md, T: int, B: int, cap_tokens: int, causal: bool, allow_cross: bool,
                  host_key: tuple | None = None) -> tuple[tuple, tuple]:
    """``_check_seqs`` once per metadata state (``AttentionMetadata`` keeps the memo; other metadata
    objects are checked on every call).  host_key: ``md.host_key()`` when the caller has it."""
    if not hasattr(md, "checked_seqs"):
        return _check_seqs(md, T, B, cap_tokens, causal, allow_cross)
    key = (md.host_key() if host_key is None else host_key, T, cap_tokens, bool(causal), allow_cross)
    checked = md.checked_seqs(key)
    if checked is None:
        checked = _check_seqs(md, T, B, cap_tokens, causal, allow_cross)
        md.mark_seqs_checked(key, checked)
    return checked


def _check_seqs(md, T: int, B: int, cap_tokens: int, causal, allow_cross: bool) -> tuple[tuple, tuple]:
    """The per-sequence checks of ``check_paged``; returns ``(query_start_loc, seq_lens)`` as tuples."""
    q, s = md.host_lists()
    if not q or q[0] != 0 or q[-1] != T:
        raise _fail(f"query_start_loc to start at 0 and end at num_tokens={T}", f"{q[:1]} .. {q[-1:]}")
    for i in range(B):
        n, L = q[i + 1] - q[i], s[i]
        if n < 0:
            raise _fail("query_start_loc non-decreasing", f"{q[i]} then {q[i + 1]} at sequence {i}")
        if not 0 <= L <= _INT32_MAX:
            raise _fail(f"0 <= seq_lens <= {_INT32_MAX}", f"{L} for sequence {i}")
        if L > cap_tokens:
            raise _fail(f"seq_lens <= block_table columns * block_size = {cap_tokens}",
                        f"a sequence of {L} tokens (sequence {i})")
        if n > L and (causal or not allow_cross):
            what = "query rows <= seq_len" + ("" if allow_cross else " (this kernel has no n > L cross-attention)")
            raise _fail(f"{what} for sequence {i} (causal=True)" if causal else f"{what} for sequence {i}",
                        f"{n} rows and seq_len {L}")
    return tuple(q), tuple(s)


def check_paged(
    query, key_cache, value_cache, md, *, scale=None, causal=True, sliding_window=None, logits_soft_cap=None,
    sinks=None, k_scale=None, v_scale=None, alibi_slopes=None, mm_prefix_ranges=None, return_lse=False,
    query_dtypes=FLOAT_DTYPES, cache_dtypes=FLOAT_DTYPES + FP8_DTYPES, same_head_size: bool = False,
    allow_cross: bool = True, q_scale=None,
) -> Paged:
    """Validate and normalise one paged-attention call (layout and semantics: ``docs/kernels.md``).

    An fp8 query (``float8_e4m3fn``/``float8_e5m2``, vLLM's quantized query) is widened to bfloat16,
    which holds every fp8 value exactly, and its descale ``q_scale`` is folded into the softmax scale
    (scores are ``scale * q_scale * q . k``, as vLLM's kernels compute them): every kernel taking a
    bfloat16 query then takes it, and the output is bfloat16."""
    if not all(hasattr(md, a) for a in ("query_start_loc", "seq_lens", "block_table", "host_lists")):
        raise _fail("md an AttentionMetadata (query_start_loc, seq_lens, block_table)", f"{type(md).__name__}")
    query = _tensor("query", query)
    key_cache = _tensor("key_cache", key_cache)
    value_cache = _tensor("value_cache", value_cache)
    if query.dim() != 3:
        raise _fail("query [num_tokens, num_heads, head_size]", f"shape {tuple(query.shape)}")
    if key_cache.dim() != 4 or value_cache.dim() != 4:
        raise _fail("key_cache/value_cache [num_blocks, block_size, num_kv_heads, head_size]",
                    f"shapes {tuple(key_cache.shape)} and {tuple(value_cache.shape)}")
    qs = _q_scale(q_scale)
    if query.dtype in FP8_DTYPES:
        query = query.to(torch.bfloat16)  # exact: bf16 has the exponent range and more mantissa bits
    if query.dtype not in query_dtypes:
        raise _fail(f"query dtype {_names(query_dtypes + FP8_DTYPES)}", query.dtype)
    if key_cache.dtype not in cache_dtypes or value_cache.dtype != key_cache.dtype:
        raise _fail(f"key_cache and value_cache of one dtype among {_names(cache_dtypes)}",
                    f"{key_cache.dtype} and {value_cache.dtype}")
    dev = query.device
    for name, t in (("key_cache", key_cache), ("value_cache", value_cache)):
        _same_device(name, t, dev, host_ok=False)
    T, H, D = query.shape
    nb, bs, hkv, dk = key_cache.shape
    dv = value_cache.shape[3]
    if tuple(value_cache.shape[:3]) != (nb, bs, hkv) or dk != D:
        raise _fail(f"key_cache [num_blocks, block_size, num_kv_heads, {D}] and value_cache with the same first "
                    "three dims", f"{tuple(key_cache.shape)} and {tuple(value_cache.shape)}")
    if same_head_size and dv != D:
        raise _fail(f"value_cache head size {D} (like the key's)", dv)
    if H == 0 or D == 0 or dv == 0 or bs == 0:
        raise _fail("num_heads, head_size and block_size >= 1",
                    f"query {tuple(query.shape)}, caches {tuple(key_cache.shape)}/{tuple(value_cache.shape)}")
    if hkv == 0 or H % hkv:
        raise _fail("num_heads divisible by num_kv_heads", f"{H} and {hkv}")

    qsl_t = _index_tensor("query_start_loc", md.query_start_loc, dev, 1)
    sl_t = _index_tensor("seq_lens", md.seq_lens, dev, 1)
    bt_t = _index_tensor("block_table", md.block_table, dev, 2)
    B = sl_t.shape[0]
    if qsl_t.shape[0] != B + 1 or bt_t.shape[0] != B:
        raise _fail(f"query_start_loc of length batch+1={B + 1} and block_table with {B} rows",
                    f"{qsl_t.shape[0]} and {bt_t.shape[0]}")
    if isinstance(causal, torch.Tensor) or not isinstance(causal, (bool, int)):
        raise _fail("causal a bool", f"{type(causal).__name__}")
    cap_tokens = bt_t.shape[1] * bs
    q, s = _checked_seqs(md, T, B, cap_tokens, causal, allow_cross)
    _check_block_ids(md, bt_t, s, bs, nb)
    causal = bool(causal)
    window = check_window(sliding_window, causal)
    if window is not None and not causal and any(q[i + 1] - q[i] > s[i] for i in range(B)):
        raise _fail("no sliding_window with cross-attention (query rows > seq_len: rows have no position)",
                    f"sliding_window={sliding_window!r}")

    if scale is None:
        sc = D ** -0.5
    elif isinstance(scale, torch.Tensor):
        if scale.numel() != 1 or not scale.dtype.is_floating_point:
            raise _fail("scale a real number or a one-element float tensor", f"shape {tuple(scale.shape)}, {scale.dtype}")
        sc = tensor_scalar(scale)
    elif isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise _fail("scale a real number", f"{type(scale).__name__} {scale!r:.60}")
    else:
        sc = float(scale)  # NaN and inf are allowed: they propagate (NaN output), as in torch's SDPA
    sc *= qs

    cap = None
    if logits_soft_cap is not None:
        if isinstance(logits_soft_cap, torch.Tensor) and logits_soft_cap.numel() == 1:
            logits_soft_cap = tensor_scalar(logits_soft_cap)
        if isinstance(logits_soft_cap, bool) or not isinstance(logits_soft_cap, numbers.Real):
            raise _fail("logits_soft_cap a real number", f"{type(logits_soft_cap).__name__}")
        c = float(logits_soft_cap)
        if c != 0.0:
            if not (math.isfinite(c) and c > 0):
                raise _fail("logits_soft_cap a finite number > 0 (None or 0: no soft-cap)", c)
            cap = c

    sinks_t = _float_vector("sinks", sinks, H, "one logit per query head", dev)
    alibi_t = _float_vector("alibi_slopes", alibi_slopes, H, "one slope per query head", dev)
    ks = check_scale_arg("k_scale", k_scale, B, hkv, dev)
    vs = check_scale_arg("v_scale", v_scale, B, hkv, dev)
    mm = check_mm_ranges(mm_prefix_ranges, B)
    if not isinstance(return_lse, (bool, int)) or isinstance(return_lse, torch.Tensor):
        raise _fail("return_lse a bool", f"{type(return_lse).__name__}")

    def int32(t: torch.Tensor) -> torch.Tensor:  # values already range-checked: the cast is exact
        if t.dtype == torch.int32 and t.device == dev and t.is_contiguous():
            return t  # the common case, without a dispatcher round trip
        t = t.to(device=dev, dtype=torch.int32)
        return t if t.is_contiguous() else t.contiguous()

    if bt_t.numel() and bt_t.dtype == torch.int64:
        # entries past a sequence's last block may hold anything: clamp them before narrowing
        lo, hi = int(bt_t.min()), int(bt_t.max())
        if lo < -(2**31) or hi > _INT32_MAX:
            nblk = torch.tensor([-(-L // bs) for L in s], dtype=torch.long, device=bt_t.device)
            used = torch.arange(bt_t.shape[1], device=bt_t.device).unsqueeze(0) < nblk.unsqueeze(1)
            bt_t = torch.where(used, bt_t, torch.zeros_like(bt_t))
    for name, t in (("query_start_loc", qsl_t), ("seq_lens", sl_t)):
        if t.numel() and t.dtype == torch.int64 and (int(t.min()) < -(2**31) or int(t.max()) > _INT32_MAX):
            raise _fail(f"{name} values within int32", f"{[int(t.min()), int(t.max())]}")
    return Paged(
        query=_unit_last(query), key_cache=_unit_last(key_cache), value_cache=_unit_last(value_cache),
        qsl=q, lens=s, query_start_loc=int32(qsl_t), seq_lens=int32(sl_t), block_table=int32(bt_t),
        scale=sc, causal=causal, window=window, cap=cap, sinks=sinks_t, k_scale=ks, v_scale=vs, alibi=alibi_t,
        mm=mm, return_lse=bool(return_lse),
    )


@dataclass(frozen=True, eq=False)
class MLA:
    """Checked MLA inputs (see ``check_mla``)."""

    query: torch.Tensor
    kv_cache: torch.Tensor  # [num_blocks, block_size, kv_lora_rank + rope_dim], unit last stride
    qsl: tuple[int, ...]
    lens: tuple[int, ...]
    query_start_loc: torch.Tensor  # int32 on the query's device
    seq_lens: torch.Tensor
    block_table: torch.Tensor
    scale: float
    topk_indices: torch.Tensor | None  # int32 [num_tokens, topk], values in [-1, seq_len)


def check_mla(query, kv_cache, md, *, kv_lora_rank=512, scale=None, topk_indices=None,
              query_dtypes=FLOAT_DTYPES, cache_dtypes=FLOAT_DTYPES + FP8_DTYPES) -> MLA:
    """The MLA counterpart of ``check_paged`` (layout: ``docs/kernels.md``, MLA reference)."""
    query = _tensor("query", query)
    kv_cache = _tensor("kv_cache", kv_cache)
    if kv_cache.dim() == 4:
        if kv_cache.shape[2] != 1:
            raise _fail("one latent KV head (kv_cache [num_blocks, block_size, 1, D])", f"shape {tuple(kv_cache.shape)}")
        kv_cache = kv_cache.squeeze(2)
    if query.dim() != 3 or kv_cache.dim() != 3:
        raise _fail("query [num_tokens, num_heads, kv_lora_rank + rope_dim] and kv_cache "
                    "[num_blocks, block_size, kv_lora_rank + rope_dim]",
                    f"{tuple(query.shape)} and {tuple(kv_cache.shape)}")
    if query.dtype not in query_dtypes:
        raise _fail(f"query dtype {_names(query_dtypes)}", query.dtype)
    if kv_cache.dtype not in cache_dtypes:
        raise _fail(f"kv_cache dtype {_names(cache_dtypes)}", kv_cache.dtype)
    dev = query.device
    _same_device("kv_cache", kv_cache, dev, host_ok=False)
    T, H, Dq = query.shape
    nb, bs, dk = kv_cache.shape
    if dk != Dq:
        raise _fail(f"kv_cache last dim {Dq} (like the query)", dk)
    r = _int_arg("kv_lora_rank", kv_lora_rank)
    if not 0 < r <= Dq:
        raise _fail(f"0 < kv_lora_rank <= {Dq}", r)
    if H == 0 or bs == 0:
        raise _fail("num_heads and block_size >= 1", f"query {tuple(query.shape)}, kv_cache {tuple(kv_cache.shape)}")
    if not all(hasattr(md, a) for a in ("query_start_loc", "seq_lens", "block_table", "host_lists")):
        raise _fail("md an AttentionMetadata (query_start_loc, seq_lens, block_table)", f"{type(md).__name__}")
    qsl_t = _index_tensor("query_start_loc", md.query_start_loc, dev, 1)
    sl_t = _index_tensor("seq_lens", md.seq_lens, dev, 1)
    bt_t = _index_tensor("block_table", md.block_table, dev, 2)
    B = sl_t.shape[0]
    if qsl_t.shape[0] != B + 1 or bt_t.shape[0] != B:
        raise _fail(f"query_start_loc of length batch+1={B + 1} and block_table with {B} rows",
                    f"{qsl_t.shape[0]} and {bt_t.shape[0]}")
    q, s = _checked_seqs(md, T, B, bt_t.shape[1] * bs, True, False)  # MLA rows are causal, never n > L
    _check_block_ids(md, bt_t, s, bs, nb)
    if scale is None:
        sc = Dq ** -0.5
    elif isinstance(scale, torch.Tensor) and scale.numel() == 1:
        sc = tensor_scalar(scale)
    elif isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise _fail("scale a real number", f"{type(scale).__name__}")
    else:
        sc = float(scale)
    topk = None
    if topk_indices is not None:
        t = _index_tensor("topk_indices", topk_indices, dev, 2)
        if t.shape[0] != T:
            raise _fail(f"topk_indices [num_tokens={T}, topk]", f"shape {tuple(t.shape)}")
        if t.numel():
            row_len = torch.repeat_interleave(torch.tensor(s, dtype=torch.long, device="cpu"),
                                              torch.tensor([q[i + 1] - q[i] for i in range(B)], device="cpu"),
                                              output_size=T)
            tl_ = t.cpu().long()
            bad = (tl_ < -1) | (tl_ >= row_len.unsqueeze(1))
            if bool(bad.any()):
                row = int(bad.any(dim=1).nonzero()[0, 0])
                raise _fail(f"topk_indices in [-1, seq_len={int(row_len[row])}) for query row {row}",
                            f"{tl_[row][bad[row]].tolist()[:8]}")
        topk = t.to(device=dev, dtype=torch.int32).contiguous()

    def int32(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=dev, dtype=torch.int32).contiguous()

    if bt_t.numel() and bt_t.dtype == torch.int64 and (int(bt_t.min()) < -(2**31) or int(bt_t.max()) > _INT32_MAX):
        nblk = torch.tensor([-(-L // bs) for L in s], dtype=torch.long, device=bt_t.device)
        used = torch.arange(bt_t.shape[1], device=bt_t.device).unsqueeze(0) < nblk.unsqueeze(1)
        bt_t = torch.where(used, bt_t, torch.zeros_like(bt_t))
    return MLA(query=_unit_last(query), kv_cache=_unit_last(kv_cache), qsl=q, lens=s,
               query_start_loc=int32(qsl_t), seq_lens=int32(sl_t), block_table=int32(bt_t), scale=sc,
               topk_indices=topk)
