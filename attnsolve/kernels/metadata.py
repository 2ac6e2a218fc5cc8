"""``AttentionMetadata``: the varlen batch description of vLLM's paged layout.

Layout (documented once, precisely, in ``docs/kernels.md``):

* ``query [num_tokens, num_heads, head_size]``: the query rows of a batch that mixes
  prefill and decode; sequence ``i`` owns rows ``query_start_loc[i]:query_start_loc[i+1]``.
* Those rows are the *last* ``n_i = query_start_loc[i+1] - query_start_loc[i]`` positions
  of the sequence's ``seq_lens[i]`` tokens of context: row ``j`` has position
  ``seq_lens[i] - n_i + j`` (decode: ``n_i == 1``, position ``seq_lens[i] - 1``).
* ``key_cache`` / ``value_cache [num_blocks, block_size, num_kv_heads, head_size]``:
  token ``t`` of sequence ``i`` lives at block ``block_table[i, t // block_size]``,
  slot ``t % block_size``.  Entries of ``block_table`` past a sequence's last block are
  ignored (any value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, TypeVar

import torch

_P = TypeVar("_P")

__all__ = ["AttentionMetadata", "tensor_version"]


def tensor_version(t: torch.Tensor) -> int | None:
    """``t._version`` (bumped by every in-place update), or None for an inference tensor, which has no
    version counter (vLLM runs its model under ``torch.inference_mode``): memos keyed on it are then
    not kept, and every call checks again."""
    return None if t.is_inference() else t._version


@dataclass(eq=False)
class AttentionMetadata:
    """int32 tensors ``query_start_loc [batch+1]``, ``seq_lens [batch]``, ``block_table [batch, max_blocks]``."""

    query_start_loc: torch.Tensor
    seq_lens: torch.Tensor
    block_table: torch.Tensor
    _host: tuple | None = field(default=None, repr=False, compare=False)
    _ids_checked: tuple | None = field(default=None, repr=False, compare=False)
    _seqs_checked: tuple | None = field(default=None, repr=False, compare=False)
    _decode_rows: tuple | None = field(default=None, repr=False, compare=False)
    _plans: dict | None = field(default=None, repr=False, compare=False)

    def host_key(self) -> tuple:
        """Identity and version of the two host-read tensors: equal keys mean equal ``host_lists()``
        (a key holding None, from inference tensors, is equal to nothing: see ``tensor_version``)."""
        qsl, sl = self.query_start_loc, self.seq_lens
        return (id(qsl), tensor_version(qsl), id(sl), tensor_version(sl))

    def checked_seqs(self, key: tuple) -> tuple | None:
        """``(qsl, lens)`` as tuples when the per-sequence checks passed for ``key`` already.

        Every layer of an engine step calls with the same metadata: the O(batch) checks run once
        per step (per metadata state), not once per layer."""
        memo = self._seqs_checked
        return memo[1] if memo is not None and memo[0] == key and None not in key[0] else None

    def mark_seqs_checked(self, key: tuple, lists: tuple) -> None:
        if None not in key[0]:
            self._seqs_checked = (key, lists)

    def decode_keys(self, max_rows: int) -> int | None:
        """The total key count when every sequence has 1 to ``max_rows`` query rows (a decode batch), else None;
        once per metadata state (``host_key``), like ``checked_seqs``."""
        return self.decode_rows(max_rows)[0]

    def longest_run(self, max_rows: int) -> int:
        """The most query rows of one sequence (from the same memo as ``decode_keys``)."""
        return self.decode_rows(max_rows)[1]

    def decode_rows(self, max_rows: int, host_key: tuple | None = None) -> tuple[int | None, int]:
        """``(decode_keys(max_rows), longest_run(max_rows))`` from one memo lookup.  host_key: ``self.host_key()``
        when the caller has it (each version read is a call into torch, and a decode call's Python runs cold
        when the step's weights have streamed through the caches)."""
        memo = self._decode_memo(max_rows, host_key)
        return memo[1], memo[2]

    def _decode_memo(self, max_rows: int, host_key: tuple | None = None) -> tuple:
        key = (self.host_key() if host_key is None else host_key, max_rows)
        memo = self._decode_rows
        if memo is None or memo[0] != key or None in key[0]:
            q, s = self.host_lists()
            runs = [q[i + 1] - q[i] for i in range(len(s))]
            ok = bool(s) and all(1 <= r <= max_rows for r in runs)
            memo = self._decode_rows = (key, sum(s) if ok else None, max(runs, default=0))
        return memo

    def plan(self, name: str, key: tuple, build: Callable[[], _P]) -> _P:
        """``build()``, kept per metadata state (``host_key``) and ``key`` under ``name``: what a kernel derives
        from the host lists (per-token arrays, work items, checks that passed) is built by the first layer of an
        engine step and reused by the others.  An exception from ``build`` keeps nothing; inference tensors
        (no version counter) keep nothing either, so every call builds again."""
        full = (self.host_key(), key)
        plans = self._plans
        if plans is None:
            plans = self._plans = {}
        hit = plans.get(name)
        if hit is not None and hit[0] == full:
            return hit[1]
        value = build()
        if None not in full[0]:
            plans[name] = (full, value)
        return value

    def block_ids_checked(self, key: tuple) -> bool:
        """Whether ``key`` (table identity and version, seq_lens, block_size, num_blocks) was checked already.

        The range check reads the table on its device (a host sync on a GPU); a repeated call
        with an unchanged table skips it, an in-place update (``_version``) re-checks."""
        return self._ids_checked == key and key[1] is not None

    def mark_block_ids_checked(self, key: tuple) -> None:
        if key[1] is not None:
            self._ids_checked = key

    @property
    def batch_size(self) -> int:
        return int(self.seq_lens.shape[0])

    def host_lists(self) -> tuple[list[int], list[int]]:
        """``(query_start_loc, seq_lens)`` as Python lists.

        Cached per tensor identity and version counter, so metadata reused across steps with
        in-place updates (``seq_lens += 1``, ``copy_``), as vLLM does with persistent buffers,
        is re-read, while a repeated call with unchanged tensors costs no device-to-host copy.
        """
        qsl, sl = self.query_start_loc, self.seq_lens
        key = self.host_key()
        host = self._host
        if host is None or host[0] != key or None in key:
            host = self._host = (key, qsl.tolist(), sl.tolist())
        return host[1], host[2]

    def validate(self, num_tokens: int) -> None:
        """Check shapes and the per-sequence invariants; raises ``ValueError``."""
        qsl, sl, bt = self.query_start_loc, self.seq_lens, self.block_table
        if qsl.dim() != 1 or sl.dim() != 1 or bt.dim() != 2:
            raise ValueError(
                "Expected query_start_loc [batch+1], seq_lens [batch], block_table [batch, max_blocks], "
                f"but got shapes {tuple(qsl.shape)}, {tuple(sl.shape)}, {tuple(bt.shape)}."
            )
        b = sl.shape[0]
        if qsl.shape[0] != b + 1 or bt.shape[0] != b:
            raise ValueError(
                f"Expected query_start_loc of length batch+1={b + 1} and block_table with {b} rows, "
                f"but got {qsl.shape[0]} and {bt.shape[0]}."
            )
        q, s = self.host_lists()
        if q[0] != 0 or q[-1] != num_tokens:
            raise ValueError(
                f"Expected query_start_loc to start at 0 and end at num_tokens={num_tokens}, "
                f"but got {q[0]} .. {q[-1]}."
            )
        for i in range(b):
            n = q[i + 1] - q[i]
            if n < 0 or n > s[i]:
                raise ValueError(
                    f"Expected 0 <= query rows <= seq_len for sequence {i}, but got {n} rows "
                    f"and seq_len {s[i]}."
                )
