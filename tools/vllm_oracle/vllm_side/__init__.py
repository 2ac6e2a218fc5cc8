"""Code that runs inside the isolated vLLM venv (stdlib + torch + vLLM only; never attnsolve)."""
