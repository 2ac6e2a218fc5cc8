"""Tables the selection builds once per rule set answer what the per-call code they replace answered.

- the kernel block sizes (selection.blocks.kernel_sizes) of every backend, for every value of its variant
  field, an unset one and one no variant names, are those of the variant Backend.variant_for picks;
- the after-selection rewrites (selection.lines.after_rewrites) are each list's rewrites at that stage, in order.
"""

from __future__ import annotations

import pytest

from attnsolve.rules import rules_for, versions
from attnsolve.selection.blocks import _kernel_sizes_of, kernel_sizes
from attnsolve.selection.lines import after_rewrites


@pytest.mark.parametrize("version", versions())
def test_kernel_sizes_table_equals_the_variant_lookup(version: str) -> None:
    rules = rules_for(version)
    for name, b in rules.backends.items():
        values = [None, "no-such-variant", 12345, *(x for v in b.variants for x in v.values)]
        for value in values:
            facts = {b.variant_field: value} if b.variant_field else {}
            expected = _kernel_sizes_of(rules, b, b.variant_for(value) if b.variant_field else None)
            assert kernel_sizes(rules, name, facts) == expected, (name, value)
        assert kernel_sizes(rules, name, None) == _kernel_sizes_of(rules, b, None)


@pytest.mark.parametrize("version", versions())
def test_after_rewrites_are_the_lists_after_selection_rewrites(version: str) -> None:
    rules = rules_for(version)
    for pl in rules.lists:
        assert after_rewrites(rules, pl) == tuple(rw for rw in pl.rewrites if rw.stage == "after_selection")
