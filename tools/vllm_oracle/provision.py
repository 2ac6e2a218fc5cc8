"""Fetch a vLLM release wheel and build an isolated venv that can import its selector.

Everything lives in a cache directory (default ~/.cache/attnsolve-oracle, or
$ATTNSOLVE_ORACLE_CACHE), never in the repository; a wheel or venv already there is reused.
The venv gets the wheel (--no-deps), the pure-Python packages import needs (versions.toml) and
torch: the harness interpreter's own torch when it has the pinned version (a .pth line), else
the CPU build from the PyTorch index.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .versions import VersionData

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def cache_dir() -> Path:
    env = os.environ.get("ATTNSOLVE_ORACLE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "attnsolve-oracle"


def _log(msg: str) -> None:
    print(f"[provision] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str]) -> None:
    _log(" ".join(cmd))
    subprocess.run(cmd, check=True, stdout=sys.stderr)


def wheel_path(version: str, root: Path | None = None) -> Path:
    """The cached wheel of `version`, downloaded with pip when absent."""
    wheels = (root or cache_dir()) / "wheels"
    found = sorted(wheels.glob(f"vllm-{version}-*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", f"vllm=={version}", "--no-deps", "--only-binary", ":all:",
          "-d", str(wheels), "-q"])
    found = sorted(wheels.glob(f"vllm-{version}-*.whl"))
    if not found:
        raise RuntimeError(f"pip download vllm=={version} left no wheel in {wheels}")
    return found[0]


def venv_python(version: str, root: Path | None = None) -> Path:
    return (root or cache_dir()) / f"venv-{version}" / "bin" / "python"


def _host_torch_dir(want: str) -> Path | None:
    """site-packages holding this interpreter's torch, when it is the pinned version."""
    try:
        import importlib.metadata as md

        have = md.version("torch")
    except Exception:  # noqa: BLE001 - no torch here
        return None
    if have.split("+")[0] != want:
        return None
    import importlib.util

    spec = importlib.util.find_spec("torch")
    return Path(spec.origin).parent.parent if spec and spec.origin else None


def _host_torch_current(venv: Path, want: str) -> bool:
    """Whether a reused venv's borrowed torch (the .pth line naming the site-packages of the interpreter that built
    it) still exists; where it does not (a venv built from another checkout: CI's clone, a deleted .venv), the line
    is pointed at this interpreter's torch when it has the pinned version. False: the venv must be built again."""
    pth = next(iter(sorted((venv / "lib").glob("python*/site-packages/zz-oracle-host-torch.pth"))), None)
    if pth is None or Path(pth.read_text().strip()).is_dir():
        return True
    here = _host_torch_dir(want)
    if here is None:
        return False
    pth.write_text(f"{here}\n")
    _log(f"venv {venv.name}: its torch moved; reusing torch {want} from {here}")
    return True


def ensure_venv(data: VersionData, root: Path | None = None) -> Path:
    """The python of a venv with vLLM `data.version` importable (built once, then reused)."""
    root = root or cache_dir()
    py = venv_python(data.version, root)
    marker = py.parent.parent / ".oracle-ready"
    deps_file = py.parent.parent / ".oracle-deps"
    if marker.exists() and not _host_torch_current(py.parent.parent, data.torch):
        marker.unlink()  # its torch was another checkout's, now gone, and this interpreter has none to lend
    if marker.exists():
        have = deps_file.read_text().splitlines() if deps_file.exists() else []
        if have != list(data.deps):
            # versions.toml gained packages: add them in place (a venv in use elsewhere keeps working)
            _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"] + list(data.deps))
            deps_file.write_text("\n".join(data.deps) + "\n")
        return py
    whl = wheel_path(data.version, root)
    venv = py.parent.parent
    _run([sys.executable, "-m", "venv", "--clear", str(venv)])
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    torch_dir = _host_torch_dir(data.torch)
    if torch_dir is not None:
        site = next((venv / "lib").glob("python*/site-packages"))
        # appended after the venv's own site-packages: the venv's packages win
        (site / "zz-oracle-host-torch.pth").write_text(f"{torch_dir}\n")
        _log(f"reusing torch {data.torch} from {torch_dir}")
    else:
        _run(pip + [f"torch=={data.torch}", "--index-url", TORCH_CPU_INDEX])
    _run(pip + ["--no-deps", str(whl)])
    _run(pip + list(data.deps))
    # the real check: boot vLLM's CUDA platform with the stubs and import every backend
    repo = Path(__file__).resolve().parents[2]
    check = subprocess.run([str(py), "-m", "tools.vllm_oracle.vllm_side.worker", "--vllm", data.version,
                            "--platform", "cuda", "--patches"], capture_output=True, text=True, cwd=repo,
                           env={**os.environ, "PYTHONPATH": str(repo)})
    if check.returncode != 0:
        raise RuntimeError(f"venv {venv}: vLLM {data.version} does not boot (a package import needs is "
                           f"missing from versions.toml?):\n{check.stderr[-3000:]}")
    marker.write_text(check.stdout.strip().splitlines()[-1] + "\n")
    deps_file.write_text("\n".join(data.deps) + "\n")
    return py
