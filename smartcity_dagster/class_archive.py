"""The Spark driver's class archive (the JDK's class data sharing): Spark's classes read,
parsed and verified once per machine instead of at every start of a run.

A local run's driver JVM loads thousands of classes from Spark's jars, most of them on one
core before its first task; mapped from an archive that an earlier JVM wrote, they cost a
fraction of that (measured on 2 cores: the session up and a first job done in 6.3 s instead
of 13.0 s). The archive is written once per JDK, Spark version and jar set, by a JVM that
runs a small simulated day through the daily pipeline, so it holds the classes every step
loads (`smartcity services install --spark`, part of `make jvm`); `spark_config` names it
when it exists. The JVM checks an archive against its own version and classpath and starts
without it if they differ.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from smartcity.services.jvm import CACHE_DIR, JvmSetupError, java_binary

EXERCISE = "smartcity_dagster.exercise"
"""The module whose run writes the archive (named, not imported: it runs the pipeline,
which this module's Spark options are part of)."""


def archive_path() -> Path | None:
    """Where the archive for this JDK and Spark's jars is (or would be); None without Java."""
    import pyspark

    try:
        java = Path(java_binary()).resolve()
    except JvmSetupError:
        return None
    facts = [str(java), str(java.stat().st_mtime_ns), pyspark.__version__]
    for jar in sorted((Path(pyspark.__file__).parent / "jars").glob("*.jar")):
        facts.append(f"{jar.name} {jar.stat().st_size} {jar.stat().st_mtime_ns}")
    digest = hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]
    return CACHE_DIR / f"spark-driver-{pyspark.__version__}-{digest}.jsa"


def driver_options() -> list[str]:
    """The driver JVM's option that maps the archive, if it has been written."""
    archive = archive_path()
    return [f"-XX:SharedArchiveFile={archive}"] if archive and archive.exists() else []


def build_archive() -> Path:
    """Write the archive unless it exists: a child process runs the exercise day, and its
    JVM writes the archive under a scratch name as it exits; the name is then made final,
    so a reader never maps a half-written file."""
    archive = archive_path()
    if archive is None:
        raise JvmSetupError("java not found: install JDK 17+ or set JAVA_HOME")
    if archive.exists():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    scratch = archive.with_name(f"{archive.stem}.{os.getpid()}.tmp")
    # A driver of its own is what the archive is for, whatever Connect server the caller's
    # environment or runtime folder (its services.env) names.
    env = {k: v for k, v in os.environ.items() if k != "SMARTCITY_SPARK_REMOTE"}
    with tempfile.TemporaryDirectory(prefix="smartcity-class-archive-") as runtime:
        result = subprocess.run(
            [sys.executable, "-m", EXERCISE, str(scratch)],
            env=env | {"SMARTCITY_RUNTIME_DIR": runtime},
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0 or not scratch.exists():
        scratch.unlink(missing_ok=True)
        output = (result.stdout + result.stderr)[-3000:]
        raise JvmSetupError(f"the Spark class archive was not written:\n{output}")
    scratch.replace(archive)
    return archive
