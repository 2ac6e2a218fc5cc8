"""The project's differential harness: vLLM's own attention-backend selector vs attnsolve.

`python -m tools.vllm_oracle --vllm 0.17.0` fetches the release wheel into a cache directory,
builds an isolated venv, runs vLLM's selector (with the stubs listed by --patches) on generated
configurations and compares every answer with attnsolve's.  See docs/fidelity.md.

This package's top level imports nothing heavy: vllm_side/ runs inside the vLLM venv and must
not import attnsolve.
"""
