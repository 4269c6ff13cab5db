"""The demo's warm start: a Spark session made in a thread of its own is the one the run
finds and the one the demo stops at its end (left running, its JVM is killed under it and
pyspark's threads print tracebacks after the quiet console has given the terminal back)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    """
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    from smartcity.demo import stop_spark
    from smartcity.settings import Settings
    from smartcity_dagster.warm_start import SparkWarmStart

    SparkWarmStart(Settings(_env_file=None)).wait()
    found = SparkSession.builder.getOrCreate()
    print("same session:", found is SparkSession.active())
    stop_spark()
    try:
        SparkSession.active()
        print("stopped: no")
    except PySparkRuntimeError:
        print("stopped: yes")
    """
)


def test_the_session_started_in_a_thread_is_the_runs_and_is_stopped() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-2:] == ["same session: True", "stopped: yes"], done.stdout
