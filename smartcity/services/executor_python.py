"""The Python that a Spark cluster's executors run: pandas, pyarrow and numpy, and nothing else.

Executors import only what their Python has or what the driver ships, so this environment
deliberately lacks the project: a job that forgets to ship its code fails here the way it
would on a real cluster, instead of quietly importing the driver's venv. The three libraries
have the driver's exact versions (Arrow batches and pickled frames cross between the two).
It is a venv of the driver's own base interpreter, built once into a user-level cache under
a name that includes those versions, so an upgrade in the driver builds a fresh one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from smartcity.services.kept import exclusive

CACHE_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smartcity" / "spark-executor"
)
PACKAGES = ("pandas", "pyarrow", "numpy")
_DONE = "smartcity-requirements.txt"
"""Written last, holding the pinned requirements: a half-built environment has none."""


class ExecutorPythonError(RuntimeError):
    """The executors' environment could not be built (no base interpreter, pip failed)."""


def requirements() -> list[str]:
    """`name==version` of each package as installed in the driver's environment."""
    return [f"{name}=={version(name)}" for name in PACKAGES]


def environment_dir() -> Path:
    pins = "\n".join(requirements())
    digest = hashlib.sha256(pins.encode()).hexdigest()[:12]
    return CACHE_DIR / f"py{sys.version_info.major}.{sys.version_info.minor}-{digest}"


def executor_python() -> Path:
    """The environment's interpreter, building the environment the first time (minutes)."""
    home = environment_dir()
    python = home / "bin" / "python"
    pins = requirements()
    if _complete(home, pins):
        return python
    with exclusive(CACHE_DIR / f"{home.name}.lock"):  # another process may be building it
        if not _complete(home, pins):
            _build(home, pins)
    return python


def _complete(home: Path, pins: list[str]) -> bool:
    done = home / _DONE
    return done.exists() and done.read_text().split() == pins


def _base_interpreter() -> str:
    """The interpreter the driver's venv was made from: same Python, none of its packages."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = shutil.which(name, path=str(Path(sys.base_prefix) / "bin"))
    if not found:
        raise ExecutorPythonError(f"{name} not found in {sys.base_prefix}/bin")
    return found


def _build(home: Path, pins: list[str]) -> None:
    shutil.rmtree(home, ignore_errors=True)
    steps = (
        [_base_interpreter(), "-m", "venv", str(home)],
        [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", *pins],
    )
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, env=clean_env, check=False)
        if result.returncode != 0:
            shutil.rmtree(home, ignore_errors=True)
            raise ExecutorPythonError(
                f"building the executors' Python in {home} failed at `{' '.join(step[:4])}`: "
                f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}"
            )
    (home / _DONE).write_text("\n".join(pins) + "\n")
