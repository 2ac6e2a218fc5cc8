"""The block-table range check runs once per table state, and again after any in-place change."""

from __future__ import annotations

import pytest
import torch

from attnsolve.kernels import validate
from attnsolve.kernels.metadata import AttentionMetadata
from attnsolve.kernels.validate import check_paged


def _problem():
    q = torch.randn(2, 4, 16)
    k = torch.randn(6, 4, 2, 16)
    md = AttentionMetadata(torch.tensor([0, 1, 2], dtype=torch.int32), torch.tensor([5, 3], dtype=torch.int32),
                           torch.tensor([[0, 1], [2, 5]], dtype=torch.int32))
    return q, k, md


def test_repeated_call_reads_the_table_once(monkeypatch):
    calls = []
    real = validate.check_block_table
    monkeypatch.setattr(validate, "check_block_table", lambda *a: (calls.append(1), real(*a))[1])
    q, k, md = _problem()
    for _ in range(3):
        check_paged(q, k, k, md)
    assert len(calls) == 1
    md.seq_lens[1] = 4  # in place: the lens change, so the table is checked again
    check_paged(q, k, k, md)
    assert len(calls) == 2


def test_in_place_edit_of_the_table_is_rechecked():
    q, k, md = _problem()
    check_paged(q, k, k, md)
    md.block_table[0, 1] = 6  # out of range for 6 blocks, written in place after a passing check
    with pytest.raises(ValueError, match=r"block_table entries in \[0, num_blocks=6\)"):
        check_paged(q, k, k, md)


def test_unused_bad_column_becomes_used():
    """A table that passed with a bad id past a sequence's end fails once that sequence grows."""
    q, k, md = _problem()
    md.block_table[1, 1] = 99  # sequence 1 (3 tokens, block 4) does not use column 1 yet
    check_paged(q, k, k, md)
    md.seq_lens[1] = 7  # in place, same longest-sequence block count (2): the cache must not hide it
    with pytest.raises(ValueError, match="block_table entries"):
        check_paged(q, k, k, md)


def test_scale_tensors_are_read_once_per_state(monkeypatch):
    """A one-element scale tensor (a host sync on a GPU) is read once; an in-place update or a new
    tensor is read again."""
    reads = []
    real_item = torch.Tensor.item

    class Spy(torch.Tensor):
        def item(self):
            reads.append(1)
            return real_item(self)

    q, k, md = _problem()
    ks = torch.tensor([0.5]).as_subclass(Spy)
    for _ in range(3):
        assert check_paged(q, k, k, md, k_scale=ks).k_scale == 0.5
    assert len(reads) == 1
    ks.fill_(2.0)  # in place: read again
    assert check_paged(q, k, k, md, k_scale=ks).k_scale == 2.0
    assert len(reads) == 2
    other = torch.tensor([3.0]).as_subclass(Spy)
    assert check_paged(q, k, k, md, k_scale=other).k_scale == 3.0
    assert len(reads) == 3
    view = torch.tensor([1.0, 7.0]).as_subclass(Spy)[1:]  # an update through the base is seen too
    assert check_paged(q, k, k, md, v_scale=view).v_scale == 7.0
    view._base.mul_(2)
    assert check_paged(q, k, k, md, v_scale=view).v_scale == 14.0


def test_sequence_checks_run_once_per_metadata_state(monkeypatch):
    """Every layer of a step passes the same metadata: the O(batch) checks run once per state."""
    calls = []
    real = validate._check_seqs
    monkeypatch.setattr(validate, "_check_seqs", lambda *a: (calls.append(1), real(*a))[1])
    q, k, md = _problem()
    for _ in range(4):
        c = check_paged(q, k, k, md)
    assert len(calls) == 1 and c.qsl == (0, 1, 2) and c.lens == (5, 3)
    md.seq_lens.add_(1)  # the next decode step, in place: checked again, new lengths seen
    assert check_paged(q, k, k, md).lens == (6, 4) and len(calls) == 2
    md.seq_lens[0] = 9  # in place, past the table's 2 blocks x 4 slots: refused
    with pytest.raises(ValueError, match=r"seq_lens <= block_table columns \* block_size = 8"):
        check_paged(q, k, k, md)


def test_memo_does_not_hide_a_different_call():
    """The same metadata with another causal flag or query length is checked again."""
    q, k, _ = _problem()
    md = AttentionMetadata(torch.tensor([0, 4], dtype=torch.int32), torch.tensor([3], dtype=torch.int32),
                           torch.tensor([[0]], dtype=torch.int32))
    q4 = torch.randn(4, 4, 16)
    assert check_paged(q4, k, k, md, causal=False).lens == (3,)  # cross-attention: 4 rows, 3 keys
    with pytest.raises(ValueError, match="query rows <= seq_len"):
        check_paged(q4, k, k, md, causal=True)
    with pytest.raises(ValueError, match="end at num_tokens=3"):
        check_paged(q4[:3], k, k, md, causal=False)


def test_decode_rows_follow_in_place_edits():
    """decode_rows (the fast decode path's one memo lookup, given the host key it read once) answers as
    decode_keys / longest_run do, and again after an in-place edit of the host tensors."""
    _, _, md = _problem()
    assert md.decode_rows(4) == (md.decode_keys(4), md.longest_run(4)) == (8, 1)
    assert md.decode_rows(4, md.host_key()) == (8, 1)
    md.seq_lens[0] = 6
    assert md.decode_rows(4, md.host_key()) == (9, 1)
    md.query_start_loc[1] = 0  # sequence 0 has no row now: not a decode batch
    assert md.decode_rows(4) == (None, 2) and md.decode_keys(4) is None and md.longest_run(4) == 2
