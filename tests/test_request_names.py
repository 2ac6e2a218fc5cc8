"""Requested backend names are vLLM's registry names (issue 14), and use_dcp follows dcp_size.

vLLM 0.33's `--attention-backend` / `--attention-config.backend` accepts every AttentionBackendEnum member
(vllm/v1/attention/backends/registry.py; config/attention.py validate_backend_before: case-insensitive,
"auto" = automatic); an unknown name fails with "Unknown attention backend: 'X'. Valid options are: ...".
"""

from __future__ import annotations

import pytest

from attnsolve import Config, ConfigError, InvalidBackendError, solve
from attnsolve.config import requestable_backends
from attnsolve.rules import rules_for

# XPU's FLASH_ATTN_MLA_XPU class is a backend of the rules but no registry name (FLASH_ATTN_MLA is requested):
# asking for it is vLLM's unknown-backend error (the closest registry name suggested). The MLA prefill
# kernels stay requestable by name for role="mla_prefill" questions.
NOT_REQUESTABLE_033 = {"FLASH_ATTN_MLA_XPU": "FLASH_ATTN_MLA"}
# vLLM fails these before validating (v1/attention/backends/registry.py: no class path until registered;
# platforms/cuda.py get_attn_backend_cls: the ImportError as the reason; [[platforms.cuda.request_errors]])
REQUEST_ERRORS_033 = {
    "NO_ATTENTION": "Selected backend AttentionBackendEnum.NO_ATTENTION is not valid for this configuration. "
                    "Reason: [ModuleNotFoundError: No module named 'vllm.v1.attention.backends.no_attention']",
    "TORCH_SDPA": "Backend TORCH_SDPA must be registered before use. "
                  "Use register_backend(Backend.TORCH_SDPA, 'your.module.YourClass')",
    "CUSTOM": "Backend CUSTOM must be registered before use. Use register_backend(Backend.CUSTOM, 'your.module.YourClass')",
}


@pytest.mark.parametrize("name", sorted(REQUEST_ERRORS_033))
def test_registry_names_vllm_fails_before_validating_are_its_errors(name):
    cfg = Config(vllm="0.33", gpu="H100", dtype="bfloat16", backend=name.lower())
    assert cfg.backend == name
    with pytest.raises(InvalidBackendError) as err:
        solve(cfg)
    assert str(err.value).splitlines()[0] == REQUEST_ERRORS_033[name]


@pytest.mark.parametrize("name, hit", sorted(NOT_REQUESTABLE_033.items()))
def test_names_that_are_not_requestable_are_refused_with_the_closest(name, hit):
    assert name in rules_for("0.33").backends
    with pytest.raises(ConfigError) as err:
        Config(vllm="0.33", gpu="H100", dtype="bfloat16", backend=name)
    assert err.value.field == "backend" and err.value.suggestion == hit
    assert str(err.value).startswith(f"Unknown attention backend: '{name}'. Valid options are: ")


def test_every_requestable_name_is_accepted_and_auto_means_automatic():
    for version in ("0.17", "0.33"):
        names = requestable_backends(rules_for(version), "cuda")
        assert names and all(Config(vllm=version, gpu="H100", dtype="bfloat16", backend=n).backend == n for n in names)
        assert Config(vllm=version, gpu="H100", dtype="bfloat16", backend="auto").backend is None
    assert set(REQUEST_ERRORS_033) <= requestable_backends(rules_for("0.33"), "cuda")


# vLLM's use_dcp is decode_context_parallel_size > 1 (a definition in the 0.33 rules' [[invariants]]).
def test_use_dcp_follows_dcp_size_and_a_contradiction_names_both():
    base = dict(vllm="0.33", gpu="H100", dtype="bfloat16")
    assert Config(**base, dcp_size=4).use_dcp is True
    assert Config(**base, dcp_size=1).use_dcp is False
    implied = Config(**base, use_dcp=True)
    assert implied.use_dcp is True and implied.dcp_size is None  # some size > 1, not known
    assert Config(**implied.to_dict()) == implied
    assert Config(**base).replace(dcp_size=2).use_dcp is True
    assert Config(**base, dcp_size=8).replace(use_dcp=False).dcp_size == 1
    for bad in (dict(use_dcp=False, dcp_size=4), dict(use_dcp=True, dcp_size=1)):
        with pytest.raises(ConfigError) as err:
            Config(**base, **bad)
        assert err.value.field == "use_dcp" and "dcp_size" in str(err.value)


def test_rocm_fails_the_same_names_with_its_own_texts():
    # vLLM 0.33.0's ROCm selector (harness runner): get_class() refuses the unregistered names the same
    # way; NO_ATTENTION's missing module is an ImportError reason there
    rocm = dict(vllm="0.33", gpu="MI300X", dtype="bfloat16")
    with pytest.raises(InvalidBackendError, match=r"Reason: \['ImportError'\]"):
        solve(Config(**rocm, backend="NO_ATTENTION"))
    with pytest.raises(InvalidBackendError) as err:
        solve(Config(**rocm, backend="TORCH_SDPA"))
    assert str(err.value).splitlines()[0] == REQUEST_ERRORS_033["TORCH_SDPA"]


@pytest.mark.parametrize("name", sorted(REQUEST_ERRORS_033))
def test_select_text_shows_vllms_message_for_a_request_error(name):
    """`select` lists each refused backend with its reasons; a request vLLM refuses before any
    validation has none, so the line carries vLLM's message (it printed a bare "-")."""
    import io

    from attnsolve.cli import run
    out, err = io.StringIO(), io.StringIO()
    code = run(["select", "--vllm", "0.33", "--gpu", "H100", "--attention-backend", name], out, err)
    text = " ".join(out.getvalue().split())
    assert code == 1 and " -\n" not in out.getvalue()
    assert " ".join(REQUEST_ERRORS_033[name].split()) in text
