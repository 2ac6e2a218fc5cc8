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
