"""FLEX_ATTENTION (torch.nn.attention.flex_attention over the paged cache) agrees with the reference."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402

from attnsolve.kernels import kernel_for  # noqa: E402
from attnsolve.kernels.flex import flex_paged_attention as flex  # noqa: E402
from attnsolve.kernels.reference import paged_attention_reference  # noqa: E402
from paged_cases import close, make_batch, problems  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/kernels/conftest.py)


def test_flex_is_registered_and_runnable_on_cpu():
    """Registry lookup happens inside a test: discovery imports triton, which must not happen at collection."""
    assert kernel_for("FLEX_ATTENTION", "cpu") is flex


@settings(max_examples=max(5, settings().max_examples // 15))  # eager flex: ~0.1-0.3 s per example
@given(problems(fp8=True, max_len=48))
def test_flex_matches_reference(case):
    (q, kc, vc, md), opts = case
    close(flex(q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts), q.dtype)


@pytest.mark.parametrize("opts", [{}, dict(sliding_window=5), dict(logits_soft_cap=10.0),
                                  dict(sinks=torch.linspace(-1, 2, 8)), dict(causal=False)])
def test_flex_mixed_batch(opts):
    q, kc, vc, md = make_batch([1, 3, 12], [20, 9, 12], 8, 2, 64, 8, seed=5)
    close(flex(q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts), q.dtype)


def test_flex_shared_prefix_blocks():
    """Two sequences sharing physical blocks (prefix caching): the per-sequence lookup keeps them apart."""
    q, kc, vc, md = make_batch([1, 2], [24, 20], 4, 2, 32, 8, seed=6)
    md.block_table[1, :2] = md.block_table[0, :2]
    md._host = None
    close(flex(q, kc, vc, md), paged_attention_reference(q, kc, vc, md), q.dtype)


@pytest.mark.slow
def test_flex_compiled(monkeypatch):
    """The inductor C++ flex template (ATTNSOLVE_FLEX_COMPILE=1), ~6 s to compile."""
    monkeypatch.setenv("ATTNSOLVE_FLEX_COMPILE", "1")
    q, kc, vc, md = make_batch([1, 16], [40, 16], 4, 2, 64, 16, seed=7)
    for opts in (dict(logits_soft_cap=20.0, sliding_window=9), dict(sinks=torch.randn(4))):  # sinks: eager fallback
        with torch.no_grad():
            close(flex(q, kc, vc, md, **opts), paged_attention_reference(q, kc, vc, md, **opts), q.dtype)
    assert os.environ["ATTNSOLVE_FLEX_COMPILE"] == "1"
