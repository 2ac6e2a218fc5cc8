"""One answer for API, JSON and text (issue #16): `str(explain(config))` prints what
`attnsolve explain` prints for the same question, the JSON `result` is the same Advice's
`to_dict()`, and every verb is a function in the VERBS table returning a frozen Result."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from attnsolve import ANY, Config, explain
from attnsolve.advice import Context, advise
from attnsolve.cli import COMMANDS, FLAG_OF, parse_args, run
from attnsolve.render import Style, show
from attnsolve.rules import rules_for
from attnsolve.verbs import VERBS, Result

from strategies import budget, configs


# The drawn-config round trips and the verbs run for every release; the hand-picked cases (GPUs, backends and
# answers of vLLM 0.17) are pinned to 0.17 per test.
pytestmark = [pytest.mark.usefixtures("no_vllm_env"), pytest.mark.every_release]
V017 = pytest.mark.vllm("0.17")
EX = Path(__file__).resolve().parents[1] / "examples"


def flags_for(config: Config) -> list[str]:
    """The command line that asks the same question as `config`."""
    argv = ["--no-env"]
    hardware = ("platform", "compute_capability", "rocm_arch")
    if config.gpu is not None:
        argv += ["--gpu", config.gpu]
    declared = rules_for(config.vllm).fields
    for field, value in config.to_dict(only_changed=True).items():
        if value is None and field in declared and declared[field].default is not None:
            continue  # unknown, as another flag implies it (use_dcp alone: the DCP size is not known)
        if config.gpu is None or field not in hardware:
            flags = declared[field].flags if field in declared else ()
            flag = FLAG_OF.get(field) or (flags[0] if flags else "--" + field.replace("_", "-"))
            argv += [flag, show(value)]
    if "dtype_explicit" in config.field_names and config.dtype_explicit is False:
        argv += ["--dtype-explicit", "false"]  # --dtype alone is explicit; Config's dtype is not unless told
    return argv


def cli(verb: str, argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run([verb, *argv], out, err)
    assert not err.getvalue(), err.getvalue()
    return code, out.getvalue()


CASES = [
    Config(vllm="0.17", platform="cuda", gpu="H100", dtype="bfloat16", kv_cache_dtype="fp8", head_size=20),  # nothing fits
    Config(vllm="0.17", platform="cuda", gpu="A100", dtype="bfloat16", kv_cache_dtype="fp8"),  # FLASH_ATTN lost
    Config(vllm="0.17", platform="cuda", gpu="B200", dtype="bfloat16", use_mla=True, backend="FLASHMLA"),  # request fails
    Config(vllm="0.17", platform="rocm", rocm_arch="gfx942", dtype="bfloat16", use_mla=True, use_sparse=True),  # start-up fails
    Config(vllm="0.17", platform="cuda", gpu="H100", dtype="bfloat16", use_mla=True),  # MLA: the prefill line too
    Config(vllm="0.17", platform="cpu", dtype="bfloat16", use_mla=True),
]


@V017
@pytest.mark.parametrize("config", CASES, ids=lambda c: repr(c)[7:70])
def test_api_text_is_the_cli_text(config):
    code, out = cli("explain", flags_for(config))
    assert str(explain(config)) == out.rstrip("\n")
    exp = explain(config)
    assert code == (0 if exp.selected is not None and advise(Context.of(config)).startup_error is None else 1)


@V017
@pytest.mark.parametrize("config", CASES[:3], ids=lambda c: repr(c)[7:70])
def test_json_result_is_the_advice_dict(config):
    _, out = cli("explain", [*flags_for(config), "--json"])
    result = json.loads(out)["result"]
    want = json.loads(json.dumps(advise(Context.of(config)).to_dict(), default=str))
    assert result == want


@settings(max_examples=budget(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_api_text_is_the_cli_text_for_drawn_configs(config):
    """Configs drawn from the rules' domains: the API prints exactly the CLI's advice."""
    _, out = cli("explain", flags_for(config))
    assert str(explain(config)) == out.rstrip("\n")


@V017
def test_partial_config_text_lists_possible_backends():
    cfg = Config(vllm="0.17", platform="cuda", gpu="H100", dtype="bfloat16", kv_cache_dtype=ANY)
    text = str(explain(cfg))
    assert any(x.startswith("Possible  ") for x in text.splitlines())
    assert "kv_cache_dtype free" in text
    code, out = cli("explain", ["--no-env", "--gpu", "H100", "--dtype", "bfloat16", "--kv-cache-dtype", "ANY"])
    assert code == 0 and out.rstrip("\n") == text
    code, out = cli("explain", ["--no-env", "--gpu", "A100", "--kv-cache-dtype", "ANY", "--block-size", "ANY"])
    possible = next(x for x in out.splitlines() if x.startswith("Possible  "))
    assert code == 0 and "FLASH_ATTN" in possible  # several possible backends: not a failure
    code, out = cli("explain", ["--no-env", "--gpu", "CPU", "--use-mla", "--head-size", "ANY"])
    assert code == 1 and "no completion selects a backend" in out


def test_every_command_is_a_verb_returning_a_frozen_result(tmp_path):
    assert set(VERBS) == set(COMMANDS)
    argv = {"select": ["--gpu", "H100"], "explain": ["--gpu", "H100"], "matrix": ["--gpu", "H100", "--over",
            "block_size"], "backends": ["--no-runnable"], "docs": ["-o", "-"],
            "upgrade": ["--from", "0.17", "--to", "0.17", "--gpu", "H100", "--model", str(EX / "llama3-8b.json")]}
    query_verbs = ("select", "explain", "matrix", "upgrade")
    for verb, fn in VERBS.items():
        result = fn(parse_args([verb, "--no-env", *argv[verb]] if verb in query_verbs else [verb, *argv[verb]]),
                    Style())
        assert isinstance(result, Result) and result.command == verb
        with pytest.raises(dataclasses.FrozenInstanceError):
            result.exit_code = 3  # type: ignore[misc]
