"""``CPU_MLA`` / ``AMX_MLA``: MLA attention over the latent cache on CPU, dense and sparse top-k.

Semantics exactly as ``attnsolve.kernels.reference.mla_decode_reference`` (and
``TRITON_MLA``):

* ``query [num_tokens, num_heads, kv_lora_rank + rope_dim]`` (absorbed: latent part, then
  rope part), varlen batch in the paged layout of ``attnsolve.kernels.metadata``;
* ``kv_cache [num_blocks, block_size, kv_lora_rank + rope_dim]`` (or with a ``1`` head dim
  before the last): one latent "KV head" shared by all query heads (MQA);
* ``scores = scale * q . k`` over all dims, ``scale`` defaulting to ``query.shape[-1] ** -0.5``;
  ``output = softmax(scores) @ kv[..., :kv_lora_rank]`` -> ``[num_tokens, num_heads, kv_lora_rank]``;
* dense: causal within the sequence (rows aligned to the end); sparse (``topk_indices
  [num_tokens, topk]``, token positions within the sequence, ``-1`` = padding): each query
  attends exactly to the listed positions (a repeated index counts repeatedly).

How (two paths, both float32 throughout, both tested on every case):

* the C++ kernel (``_cpu_mla_ext``, built like ``_cpu_ext`` on first use): one pass over each
  query token's latent rows (dense: positions ``0..p``; sparse: its listed positions), each
  row widened once and used for all heads (scores, online softmax, ``P · V`` over the first
  ``kv_lora_rank`` columns), long row lists split among threads and merged exactly;
* without a compiler (or ``ATTNSOLVE_CPU_EXT=0``): every sequence's latent rows are gathered
  into a reused buffer, widened to float32, and torch's CPU flash kernel
  (``aten._scaled_dot_product_flash_attention_for_cpu``) attends with them as both keys and
  values (it needs equal K and V sizes; the output keeps the first ``kv_lora_rank`` columns),
  heads folded into query rows in one group per thread.

Float32 because the peers' tolerance (``assert_close`` defaults, atol 1e-5) leaves no room for
16-bit scores, probabilities or partial results; the output is rounded to the query dtype once.
Rows past ``seq_len`` are never read, sparse padding (``-1``) is skipped, so NaN or stale slots
past ``seq_len`` never reach the output, while a NaN inside ``seq_len`` does (it is data).

vLLM 0.33 facts kept here: ``AMX_MLA`` needs a CPU with AMX tiles and a bfloat16 model.
"""

from __future__ import annotations

import math

import torch

from attnsolve.kernels import _cpu_mla_ext
from attnsolve.kernels.registry import register_kernel

__all__ = ["cpu_mla_attention"]

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
# every tensor these kernels make names its device: under torch.set_default_device("cuda") (or "meta") a factory
# call without one made a tensor whose pointer the C++ kernels then wrote through (a segfault)
_CPU = torch.device("cpu")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_buffers: dict[str, torch.Tensor] = {}


def _buffer(name: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A reused flat buffer (avoids first-touching fresh pages on every decode step)."""
    buf = _buffers.get(name)
    if buf is None or buf.dtype != dtype or buf.numel() < numel:
        buf = torch.empty(max(numel, 1), dtype=dtype, device=_CPU)
        if numel * buf.element_size() <= 1 << 29:  # keep at most 512 MiB around
            _buffers[name] = buf
    return buf[:numel]


def _groups(num_heads: int) -> int:
    """Head groups per call: one per thread where the heads divide evenly."""
    g = max(1, min(torch.get_num_threads(), num_heads))
    while num_heads % g:
        g -= 1
    return g


def _validate(query: torch.Tensor, kv_cache: torch.Tensor, kv_lora_rank: int) -> torch.Tensor:
    if kv_cache.dim() == 4:
        if kv_cache.shape[2] != 1:
            raise ValueError(f"Expected one latent KV head, but got kv_cache shape {tuple(kv_cache.shape)}.")
        kv_cache = kv_cache.squeeze(2)
    if query.dim() != 3 or kv_cache.dim() != 3:
        raise ValueError(
            "Expected query [num_tokens, num_heads, kv_lora_rank + rope_dim] and kv_cache "
            f"[num_blocks, block_size, kv_lora_rank + rope_dim], but got {tuple(query.shape)} "
            f"and {tuple(kv_cache.shape)}."
        )
    if query.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"Expected query dtype among float16/bfloat16/float32, but got {query.dtype}.")
    if kv_cache.dtype != query.dtype:
        raise ValueError(
            f"Expected kv_cache dtype {query.dtype} like the query (kv_cache_dtype 'auto'), "
            f"but got {kv_cache.dtype}."
        )
    dq = query.shape[2]
    if kv_cache.shape[-1] != dq:
        raise ValueError(f"Expected kv_cache last dim {dq} (like the query), but got {kv_cache.shape[-1]}.")
    if not 0 < kv_lora_rank <= dq:
        raise ValueError(f"Expected 0 < kv_lora_rank <= {dq}, but got {kv_lora_rank}.")
    for name, t in (("query", query), ("kv_cache", kv_cache)):
        if t.device.type != "cpu":
            raise ValueError(f"Expected {name} on cpu for CPU_MLA, but got {t.device}.")
    return kv_cache


def _gather_rows(flat: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``flat[rows]`` as float32 in a reused buffer (16-bit caches: gathered, then widened)."""
    n, d = rows.numel(), flat.shape[-1]
    out = _buffer("kv32", n * d, torch.float32).view(n, d)
    if flat.dtype == torch.float32:
        return torch.index_select(flat, 0, rows, out=out)
    raw = _buffer("kv16", n * d, flat.dtype).view(n, d)
    torch.index_select(flat, 0, rows, out=raw)
    return out.copy_(raw)


def _gather_blocks(cache: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """``cache[blocks]`` as float32 ``[len(blocks), block_size, D]`` in a reused buffer."""
    nb, bs, d = blocks.numel(), cache.shape[1], cache.shape[2]
    out = _buffer("kv32", nb * bs * d, torch.float32).view(nb, bs, d)
    if cache.dtype == torch.float32:
        return torch.index_select(cache, 0, blocks, out=out)
    raw = _buffer("kv16", nb * bs * d, cache.dtype).view(nb, bs, d)
    torch.index_select(cache, 0, blocks, out=raw)
    return out.copy_(raw)


def _fold(q: torch.Tensor, groups: int) -> torch.Tensor:
    """``[n, H, D]`` -> ``[1, G, n * H/G, D]``: group ``g`` holds heads ``g*H/G ..``, rows token-major."""
    n, h, d = q.shape
    return q.view(n, groups, h // groups, d).transpose(0, 1).reshape(1, groups, n * (h // groups), d)


def _unfold(o: torch.Tensor, n: int, h: int, groups: int) -> torch.Tensor:
    """Inverse of ``_fold`` for the output ``[B, G, n * H/G, D]`` (``B`` = 1)."""
    d = o.shape[-1]
    return o.view(groups, n, h // groups, d).transpose(0, 1).reshape(n, h, d)


def _dense(query, kv_cache, md, out, scale, lora, qsl, sl) -> None:
    num_blocks, bs, dq = kv_cache.shape
    h = query.shape[1]
    groups = _groups(h)
    bt = md.block_table
    for i, L in enumerate(sl):
        q0, q1 = qsl[i], qsl[i + 1]
        n = q1 - q0
        if n == 0:
            continue
        if n > L:
            raise ValueError(f"Expected query rows <= seq_len for sequence {i}, but got {n} > {L}.")
        nblk = -(-L // bs)
        blocks = bt[i, :nblk].to(torch.long)
        if int(blocks.min()) < 0 or int(blocks.max()) >= num_blocks:
            raise ValueError(
                f"Expected block_table[{i}, :{nblk}] within [0, {num_blocks}), but got "
                f"{blocks.tolist() if nblk <= 8 else [int(blocks.min()), int(blocks.max())]}."
            )
        kv = _gather_blocks(kv_cache, blocks).view(1, 1, nblk * bs, dq)[:, :, :L]  # rows past seq_len unused
        q = _fold(query[q0:q1].float(), groups)
        mask = None
        if n > 1:  # causal, rows aligned to the end: token j sees keys <= L - n + j
            pos_q = torch.arange(L - n, L, device=_CPU).repeat_interleave(h // groups).unsqueeze(1)
            allowed = torch.arange(L, device=_CPU).unsqueeze(0) <= pos_q
            mask = torch.zeros(allowed.shape, device=_CPU).masked_fill_(~allowed, -math.inf)
            mask = mask.view(1, 1, *allowed.shape)
        o, _ = _flash(q, kv, kv, attn_mask=mask, scale=scale)
        out[q0:q1] = _unfold(o, n, h, groups)[..., :lora]  # float32 -> query dtype, rounded once


def _sparse(query, kv_cache, md, out, scale, lora, qsl, sl, topk_indices) -> None:
    num_blocks, bs, dq = kv_cache.shape
    t, h, _ = query.shape
    if topk_indices.dim() != 2 or topk_indices.shape[0] != t:
        raise ValueError(f"Expected topk_indices [num_tokens={t}, topk], but got {tuple(topk_indices.shape)}.")
    topk = int(topk_indices.shape[1])
    if topk == 0:
        out.zero_()
        return
    idx = topk_indices.to(torch.long)
    # sequence of every token, its length and block-table row
    counts = torch.tensor([qsl[i + 1] - qsl[i] for i in range(len(sl))], dtype=torch.long, device=_CPU)
    seq_of = torch.repeat_interleave(torch.arange(len(sl), device=_CPU), counts)
    lens = torch.tensor(sl, dtype=torch.long, device=_CPU)[seq_of].unsqueeze(1)
    valid = idx >= 0
    if bool((idx >= lens).any()):
        bad = int((idx >= lens).nonzero()[0, 0])
        raise ValueError(
            f"Expected topk_indices < seq_len for every token, but token {bad} (sequence "
            f"{int(seq_of[bad])}, seq_len {int(lens[bad])}) lists {int(idx[bad].max())}."
        )
    pos = idx.clamp(min=0)
    blocks = md.block_table.to(torch.long)[seq_of.unsqueeze(1), pos // bs]
    if bool(((blocks < 0) | (blocks >= num_blocks)).any()):
        raise ValueError(f"Expected block_table entries within [0, {num_blocks}) for the listed positions.")
    slots = (blocks * bs + pos % bs).view(-1)
    flat = kv_cache.reshape(num_blocks * bs, dq)  # a view for the usual contiguous cache
    kv = _gather_rows(flat, slots)
    pad = (~valid).view(-1)
    mask = None
    if bool(pad.any()):
        kv.index_fill_(0, pad.nonzero().view(-1), 0)  # padding rows may point at NaN slots
        mask = torch.zeros(t, 1, 1, topk, device=_CPU).masked_fill_(~valid.view(t, 1, 1, topk), -math.inf)
    groups = _groups(h)
    q = query.float().view(t, groups, h // groups, dq)
    kv4 = kv.view(t, 1, topk, dq)
    o, _ = _flash(q, kv4, kv4, attn_mask=mask, scale=scale)
    out.copy_(o.view(t, h, dq)[..., :lora])
    if mask is not None:  # a row with only padding sees nothing: zeros, as the reference
        empty = ~valid.any(dim=1)
        if bool(empty.any()):
            out[empty] = 0


_DTYPE_CODES = {getattr(torch, name): code for name, code in _cpu_mla_ext.DTYPE_CODES.items()}


def _work_items(nrows: list[int]) -> tuple[int, int]:
    """(rows per item, item count): items of at most ``chunk`` rows, about two per thread over all the rows."""
    total = sum(nrows)
    nthr = torch.get_num_threads()
    chunk = max(64, min(1024, -(-total // (2 * nthr))))
    chunk = -(-chunk // 16) * 16
    return chunk, sum(max(1, -(-n // chunk)) for n in nrows)


def _dense_plan(qsl: list[int], sl: list[int], bs: int, bt_cols: int) -> tuple:
    """What a dense call derives from the host lists: the per-sequence checks (raised here), each token's
    sequence and row count as int32 tensors, the work split and its item table.  Kept per metadata state
    (``AttentionMetadata.plan``): every layer of a decode step after the first reuses it."""
    counts = [qsl[i + 1] - qsl[i] for i in range(len(sl))]
    limits: list[int] = []
    for i, L in enumerate(sl):
        n = counts[i]
        if n > L:
            raise ValueError(f"Expected query rows <= seq_len for sequence {i}, but got {n} > {L}.")
        nblk = -(-L // bs)
        if n and nblk > bt_cols:
            raise ValueError(f"Expected block_table with >= {nblk} columns for seq_len {L}, but got {bt_cols}.")
        limits += range(L - n + 1, L + 1)
    tok_seq = torch.tensor([i for i, n in enumerate(counts) for _ in range(n)], dtype=torch.int32, device=_CPU)
    chunk, n_items = _work_items(limits)
    return (tok_seq, torch.tensor(limits, dtype=torch.int32, device=_CPU), chunk, n_items,
            torch.empty(3 * n_items, dtype=torch.int32, device=_CPU))


def _run_ext(lib, query, kv_cache, md, out, scale, lora, qsl, sl, topk_indices) -> None:
    """The C++ kernel: validation here (shapes, lengths, indices), the pass over rows there."""
    t, h, dq = query.shape
    num_blocks, bs, _ = kv_cache.shape
    if kv_cache.stride(-1) != 1:
        kv_cache = kv_cache.contiguous()
    bt = md.block_table.to(torch.int32).contiguous()
    if topk_indices is None:
        tok_seq, tok_limit, chunk, n_items, items = md.plan(
            "cpu_mla_dense", (bs, bt.shape[1], torch.get_num_threads()),
            lambda: _dense_plan(qsl, sl, bs, bt.shape[1]))
        topk_t, k, stopk = None, 0, 0
    else:
        counts = [qsl[i + 1] - qsl[i] for i in range(len(sl))]
        tok_seq = torch.repeat_interleave(torch.arange(len(sl), dtype=torch.int32, device=_CPU),
                                          torch.tensor(counts, device=_CPU))
        if topk_indices.dim() != 2 or topk_indices.shape[0] != t:
            raise ValueError(f"Expected topk_indices [num_tokens={t}, topk], but got {tuple(topk_indices.shape)}.")
        topk_t = topk_indices.to(torch.int32).contiguous()
        k = int(topk_t.shape[1])
        lens = torch.tensor(sl, dtype=torch.int32, device=_CPU)[tok_seq.long()].unsqueeze(1)
        if bool((topk_t >= lens).any()):
            bad = int((topk_t >= lens).nonzero()[0, 0])
            raise ValueError(
                f"Expected topk_indices < seq_len for every token, but token {bad} (sequence "
                f"{int(tok_seq[bad])}, seq_len {int(lens[bad])}) lists {int(topk_t[bad].max())}."
            )
        tok_limit = tok_seq
        stopk = topk_t.stride(0)
        chunk, n_items = _work_items([k] * t)
        items = torch.empty(3 * n_items, dtype=torch.int32, device=_CPU)
    scratch = torch.empty(n_items * h * (lora + 2), dtype=torch.float32, device=_CPU)
    res = out if out.is_contiguous() else torch.empty_like(out)
    rc = lib.mla_attend(
        query.data_ptr(), query.stride(0), query.stride(1),
        kv_cache.data_ptr(), kv_cache.stride(0), kv_cache.stride(1), num_blocks,
        _DTYPE_CODES[query.dtype], bs, dq, lora, h, t,
        tok_seq.data_ptr(), tok_limit.data_ptr(), bt.data_ptr(), bt.stride(0),
        topk_t.data_ptr() if topk_t is not None else None, k, stopk,
        scale, res.data_ptr(), res.stride(0), res.stride(1),
        scratch.data_ptr(), items.data_ptr(), n_items, chunk,
    )
    if rc == -2:
        raise ValueError(f"Expected every block_table entry a sequence uses within [0, {num_blocks}).")
    if rc != 0:
        raise RuntimeError(f"CPU_MLA extension failed (code {rc}).")
    if res is not out:
        out.copy_(res)


def cpu_mla_attention(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    md,
    *,
    kv_lora_rank: int = 512,
    scale=None,
    topk_indices: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    use_ext: bool | None = None,
) -> torch.Tensor:
    """MLA attention over a paged latent cache on CPU; see the module docstring.

    ``use_ext``: ``None`` uses the C++ kernel when it builds here, else the torch path;
    ``True`` requires it (``RuntimeError`` naming why not); ``False`` forces the torch path.
    """
    kv_cache = _validate(query, kv_cache, kv_lora_rank)
    t, h, dq = query.shape
    if out is None:
        out = torch.empty(t, h, kv_lora_rank, dtype=query.dtype, device=_CPU)
    elif out.shape != (t, h, kv_lora_rank) or out.dtype != query.dtype:
        raise ValueError(
            f"Expected out of shape {(t, h, kv_lora_rank)} and dtype {query.dtype}, "
            f"but got {tuple(out.shape)} and {out.dtype}."
        )
    bt_shape = tuple(md.block_table.shape)
    md.plan("validated", (t, bt_shape), lambda: md.validate(t) or bt_shape)  # once per metadata state
    qsl, sl = md.host_lists()
    if t == 0 or not sl:
        return out
    scale = dq ** -0.5 if scale is None else float(scale)
    if query.stride(-1) != 1:
        query = query.contiguous()
    lib = _cpu_mla_ext.load() if use_ext is not False else None
    if use_ext is True and lib is None:
        raise RuntimeError(f"the CPU_MLA C++ extension is unavailable: {_cpu_mla_ext.reason()}")
    if lib is not None:
        _run_ext(lib, query, kv_cache, md, out, scale, kv_lora_rank, qsl, sl, topk_indices)
    elif topk_indices is None:
        _dense(query, kv_cache, md, out, scale, kv_lora_rank, qsl, sl)
    else:
        _sparse(query, kv_cache, md, out, scale, kv_lora_rank, qsl, sl, topk_indices)
    return out


@register_kernel("CPU_MLA", devices=("cpu",))
def cpu_mla(query, kv_cache, md, *, kv_lora_rank=512, scale=None, topk_indices=None):
    """The registered ``CPU_MLA`` kernel (see ``cpu_mla_attention``)."""
    return cpu_mla_attention(query, kv_cache, md, kv_lora_rank=kv_lora_rank, scale=scale, topk_indices=topk_indices)


def _amx_check(device: str) -> str | None:
    try:
        has_amx = bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:
        has_amx = False
    return None if has_amx else "AMX_MLA needs a CPU with AMX tiles (this one has none); CPU_MLA runs here"


@register_kernel("AMX_MLA", devices=("cpu",), check=_amx_check)
def amx_mla(query, kv_cache, md, *, kv_lora_rank=512, scale=None, topk_indices=None):
    """``AMX_MLA``: the same kernel (oneDNN uses AMX tiles for bf16); bfloat16 only, as vLLM's."""
    if query.dtype != torch.bfloat16:
        raise ValueError(f"Expected query dtype bfloat16 for AMX_MLA (as vLLM's), but got {query.dtype}; "
                         "CPU_MLA takes float16/bfloat16/float32.")
    return cpu_mla_attention(query, kv_cache, md, kv_lora_rank=kv_lora_rank, scale=scale, topk_indices=topk_indices)
