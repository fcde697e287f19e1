"""Fresh virtual environments with this checkout's wirebus installed as a user would.

``installed_venv(extras)`` gives a venv with ``pip install 'wirebus[extras]'`` of
a wheel built from this checkout (the dependencies from the package registry,
through the pip cache in ``.cache/pip``). The venv is kept under
``.cache/venvs/`` keyed by the extras and the hash of ``pyproject.toml``, so only
the first run downloads; every run reinstalls the wheel itself (``--no-deps``),
so the venv always holds this checkout's code. Venvs of an older ``pyproject.toml``
unused for a week are removed. A file lock keeps concurrent
test runs from building one venv twice.

Example::

    venv = installed_venv("")             # pip install wirebus
    subprocess.run([venv / "bin" / "wirebus", "--version"], check=True)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
PIP_TIMEOUT = 600
STALE_DAYS = 7


def clean_env(venv: Path, **extra: str) -> dict[str, str]:
    """The environment of a shell where only ``venv`` is activated: no PYTHONPATH, no
    WIREBUS_* settings, the venv's ``bin`` first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WIREBUS_", "PYTHON", "VIRTUAL_ENV", "PYTEST"))
    }
    project = (str(ROOT), str((ROOT / ".venv").resolve()), sys.prefix)  # the checkout's venv
    path = [p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(project)]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    env["VIRTUAL_ENV"] = str(venv)
    env["PIP_CACHE_DIR"] = str(CACHE / "pip")
    env.update(extra)
    return env


def installed_venv(extras: str) -> Path:
    """A venv with ``wirebus[extras]`` of this checkout installed (``""``: no extras)."""
    digest = hashlib.sha1((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    name = f"{extras.replace(',', '-') or 'plain'}-{digest}"
    venv = CACHE / "venvs" / name
    venv.parent.mkdir(parents=True, exist_ok=True)
    with _locked(venv.parent / f"{name}.lock"), tempfile.TemporaryDirectory() as tmp:
        wheel = _build_wheel(Path(tmp))
        ready = venv / ".wirebus-ready"
        if not ready.exists():
            shutil.rmtree(venv, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(venv)], venv)
            requirement = f"wirebus[{extras}] @ {wheel.as_uri()}" if extras else str(wheel)
            _pip(venv, "install", "-q", requirement)
            ready.touch()
        _pip(venv, "install", "-q", "--no-deps", "--force-reinstall", str(wheel))
        ready.touch()  # last used: what _forget_stale goes by
    _forget_stale(venv)
    return venv


def _forget_stale(current: Path) -> None:
    """Remove venvs of the same extras for an older pyproject.toml, unused for STALE_DAYS."""
    extras = current.name.rsplit("-", 1)[0]
    for venv in current.parent.glob(f"{extras}-*"):
        ready = venv / ".wirebus-ready"
        if venv == current or not venv.is_dir() or venv.name.rsplit("-", 1)[0] != extras:
            continue
        if ready.exists() and time.time() - ready.stat().st_mtime > STALE_DAYS * 86400:
            with _locked(venv.parent / f"{venv.name}.lock"):
                shutil.rmtree(venv, ignore_errors=True)


def _build_wheel(tmp: Path) -> Path:
    """A wheel of this checkout, built from a copy (no build/ or egg-info left in the tree)."""
    source = tmp / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    out = tmp / "wheel"
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    _run([*command, "-w", str(out), str(source)], source)
    [wheel] = out.glob("wirebus-*.whl")
    return wheel


def _pip(venv: Path, *args: str) -> None:
    _run([str(venv / "bin" / "python"), "-m", "pip", *args], venv)


def _run(command: list[str], venv: Path) -> None:
    env = clean_env(venv, PIP_DISABLE_PIP_VERSION_CHECK="1")
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
