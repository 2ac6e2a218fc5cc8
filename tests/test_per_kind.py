"""vLLM's per-KV-cache-group requests (AttentionConfig.backend_per_kind, vLLM 0.26 on), resolved into one layer's request.

The reference restates vLLM's `get_attn_spec_kind` (v1/attention/selector.py, the same in 0.26 to 0.34) and the
lookup in `get_attn_backend`; the rules hold the kind as the derived fact `attn_spec_kind`. The harness compares the
resolved request with vLLM's own selection (tools/vllm_oracle draws backend_per_kind from 0.26 on).
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import pytest
from hypothesis import given, settings, strategies as st

from attnsolve import Config, ConfigError
from attnsolve.cli import main
from attnsolve.per_kind import HookReadsRequest, apply_backend_per_kind, kinds_of, layer_kind, parse_map
from attnsolve.rules import rules_for, versions

KINDS = ("full_attention", "mla_attention", "sliding_window", "sliding_window_mla", "mamba", "chunked_local_attention",
         "sink_full_attention", "encoder_only_attention", "cross_attention", "unknown")
NEWER = tuple(v for v in versions() if tuple(int(p) for p in v.split(".")[:2]) >= (0, 26))


def _reference_kind(use_mla: bool, has_sliding_window: bool, attn_type: str) -> str:
    if attn_type == "encoder_only":
        return "encoder_only_attention"
    if attn_type == "encoder_decoder":
        return "cross_attention"
    if use_mla:
        return "sliding_window_mla" if has_sliding_window else "mla_attention"
    return "sliding_window" if has_sliding_window else "full_attention"


def test_the_setting_exists_from_026():
    for v in versions():
        want = KINDS if v in NEWER else ()
        assert set(kinds_of(Config(vllm=v, gpu="H100", dtype="bfloat16"))) == set(want), v


@settings(deadline=None, max_examples=60)
@given(release=st.sampled_from(NEWER), use_mla=st.booleans(), window=st.booleans(),
       attn_type=st.sampled_from(["decoder", "encoder", "encoder_only", "encoder_decoder"]))
def test_the_layer_kind_is_vllms(release, use_mla, window, attn_type):
    kw = dict(use_mla=True, head_size=576) if use_mla else {}
    try:
        cfg = Config(vllm=release, gpu="H100", dtype="bfloat16", has_sliding_window=window, attn_type=attn_type, **kw)
    except ConfigError:
        return  # a combination the release's invariants refuse (not a layer vLLM builds)
    assert layer_kind(cfg) == _reference_kind(use_mla, window, attn_type)


def test_the_entry_for_the_layers_kind_is_its_request():
    base = Config(gpu="H100", dtype="bfloat16", has_sliding_window=True, backend="FLASH_ATTN")
    got = apply_backend_per_kind(base, {"sliding_window": "triton_attn", "full_attention": "FLASHINFER"})
    assert (got.kind, got.entry, got.config.backend) == ("sliding_window", "TRITON_ATTN", "TRITON_ATTN")
    assert "replaces --attention-backend FLASH_ATTN" in got.note
    full = apply_backend_per_kind(base.replace(has_sliding_window=False), "sliding_window=TRITON_ATTN")
    assert full.entry is None and full.config.backend == "FLASH_ATTN" and "full_attention" in full.note


def test_model_code_that_picks_the_backend_never_sees_an_entry():
    """MiMo-V2's model code builds its layers with the backend it reads from --attention-backend: no lookup by kind."""
    cfg = Config(vllm="0.33", gpu="H100", dtype="bfloat16", model_route="mimo_v2", head_size=128, head_size_v=64,
                 backend="FLASH_ATTN_DIFFKV")
    got = apply_backend_per_kind(cfg, {"full_attention": "TRITON_ATTN_DIFFKV"})
    assert got.entry is None and got.config is cfg and "model's own code" in got.note


def test_an_entry_a_hook_reads_differently_is_refused():
    """MiniMax-M3's request hook reads the global --attention-backend: an MSA entry would be seen by the layer only."""
    with pytest.raises(HookReadsRequest) as e:
        apply_backend_per_kind(Config(gpu="H100", dtype="bfloat16"), {"full_attention": "TRITON_MSA"})
    assert "is not modelled here" in str(e.value) and e.value.field == "backend_per_kind"


@pytest.mark.parametrize("value, needle", [
    ('{"sliding_windw": "TRITON_ATTN"}', "Unknown KV cache group kind 'sliding_windw' in backend_per_kind. Valid kinds "
                                         "are: chunked_local_attention, cross_attention"),
    ("sliding_window=NO_SUCH", "backend_per_kind['sliding_window']"),
    ("sliding_window", "Expected a JSON object"),
    ("{not json", "not a JSON object"),
    ('["a"]', "Expected a JSON object"),
    ('{"full_attention": 3}', "Expected a JSON object"),
])
def test_bad_maps_name_the_setting(value, needle):
    with pytest.raises(ConfigError) as e:
        apply_backend_per_kind(Config(gpu="H100", dtype="bfloat16"), value)
    assert e.value.field == "backend_per_kind" and needle in str(e.value)


def test_an_unknown_kind_suggests_the_closest():
    with pytest.raises(ConfigError) as e:
        apply_backend_per_kind(Config(gpu="H100", dtype="bfloat16"), {"sliding_windw": "TRITON_ATTN"})
    assert e.value.suggestion == "sliding_window" and e.value.vllm_text.startswith("Unknown KV cache group kind")


def test_a_release_without_the_setting_says_so():
    with pytest.raises(ConfigError) as e:
        apply_backend_per_kind(Config(vllm="0.25", gpu="H100", dtype="bfloat16"), {"full_attention": "FLASHINFER"})
    assert "vLLM 0.25 has no backend_per_kind" in str(e.value)


def test_parse_map_spellings():
    assert parse_map({"a": "B"}) == parse_map('{"a": "B"}') == parse_map(" a = B ,") == {"a": "B"}


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_cli_takes_vllms_spelling_and_fixes_spell_the_entry():
    code, out, _ = _run("select", "--gpu", "H100", "--has-sliding-window", "--json",
                        "--attention-config.backend_per_kind", '{"sliding_window": "TRITON_ATTN"}')
    res = json.loads(out)["result"]
    assert code == 0 and res["selected"] == "TRITON_ATTN" and res["manual"]
    code, out, _ = _run("explain", "--gpu", "H100", "--has-sliding-window", "--dtype", "float32",
                        "--backend-per-kind", "sliding_window=FLASHINFER")
    assert code == 1 and "drop backend_per_kind's sliding_window entry (automatic selection)" in out
    code, _, err = _run("select", "--gpu", "H100", "--backend-per-kind", "sliding_windw=TRITON_ATTN")
    assert code == 2 and "Unknown KV cache group kind 'sliding_windw'" in err and "Traceback" not in err


def test_matrix_cells_take_their_own_kinds_entry():
    """Over use_mla, the MLA cells are mla_attention layers: their entry applies there and not elsewhere."""
    code, out, _ = _run("matrix", "--gpu", "H100", "--json", "--backend-per-kind", "mla_attention=TRITON_MLA",
                        "--over", "use_mla")
    rows = {r["values"]["use_mla"]: r["backend"] for r in json.loads(out)["result"]["rows"]}
    assert code == 0 and rows == {"true": "TRITON_MLA", "false": "FLASH_ATTN"}
