"""The project's code for a cluster's executors: one zip built on the driver.

A cluster's executors run a Python of their own (`SMARTCITY_SPARK_EXECUTOR_PYTHON`) with
numpy, pandas and pyarrow but without this project, so the code a task runs (today the
anomaly detector that `applyInPandas` sends) must travel with the application. Spark ships a
zip named in `spark.submit.pyFiles` to every executor and puts it on the Python path of its
workers. A zip is imported by `zipimport`, which loads pure Python only: whatever the
executors import from the shipped packages may itself import only the standard library,
numpy, pandas, pyarrow, pyspark and shipped code.

The zip is cached under a name derived from the sources' content: the same sources are
zipped once, an edit gives a new name (which Spark also needs: it refuses a second file of
one name with other content).

A session of a Spark Connect server gets the zip another way (`ship_to_session`): the server
is a JVM application, and `spark.submit.pyFiles` is shipped by pyspark's Python driver only.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from importlib.util import find_spec
from pathlib import Path

from pyspark.sql import SparkSession

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smartcity" / "pyfiles"

SHIPPED_PACKAGES = ("smartcity_dagster", "smartcity_stream")
"""The packages of the code that runs on executors (the transforms and the stream's rules,
windows and columns they reuse)."""

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # no build time in the entries: same sources, same bytes


def _sources(packages: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """(name in the zip, content) of every Python source of `packages`, in a stable order."""
    sources = []
    for package in packages:
        spec = find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"{package} is not an importable package")
        root = Path(next(iter(spec.submodule_search_locations)))
        sources += [
            (f"{package}/{path.relative_to(root).as_posix()}", path.read_bytes())
            for path in sorted(root.rglob("*.py"))
        ]
    return sources


def code_zip(packages: tuple[str, ...] = SHIPPED_PACKAGES) -> Path:
    """The zip of `packages` for `spark.submit.pyFiles`, built when its sources changed."""
    sources = _sources(packages)
    digest = hashlib.sha256()
    for name, content in sources:
        digest.update(name.encode() + b"\0" + content + b"\0")
    target = CACHE_DIR / f"smartcity-code-{digest.hexdigest()[:16]}.zip"
    if target.exists():
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    scratch = target.with_suffix(f".{os.getpid()}.tmp")
    with zipfile.ZipFile(scratch, "w") as archive:
        for name, content in sources:
            archive.writestr(zipfile.ZipInfo(name, _FIXED_TIME), content)
    scratch.replace(target)
    return target


_SHIPPED_SESSIONS: set[str] = set()


def ship_to_session(spark: SparkSession) -> None:
    """The zip as an artifact of a Spark Connect session, once per session (a process may run
    several runs on one, as the bench does; the step calls this before its threads): the Python
    workers of its tasks, on the server's executors, import it first. So they run the code
    of this run's client, whatever the server started with. A classic session's driver
    shipped the zip already, as `spark.submit.pyFiles`."""
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    if not isinstance(spark, ConnectSession):
        return
    if spark.session_id not in _SHIPPED_SESSIONS:
        spark.addArtifacts(str(code_zip()), pyfile=True)
        _SHIPPED_SESSIONS.add(spark.session_id)
