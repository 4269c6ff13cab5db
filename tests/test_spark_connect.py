"""The kept Spark Connect server (`smartcity services up --spark`): runs of `smartcity
materialize` from the same folder take their session from it, start no JVM of their own, and
build the same tables as a run with its own driver; on the standalone cluster too."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.landed_day import land_simulated_day
from smartcity.lake import Lake
from smartcity.layout import TABLES
from smartcity.services import manager, spark_connect
from smartcity.services.processes import family, free_port, stop
from smartcity.settings import Settings, SettingsError, load_settings, settings_env
from smartcity_dagster.spark import (
    CONNECT_LONGEST_WAIT_MS,
    CONNECT_TOKEN_VARIABLE,
    connect_retry_policy,
    spark_config,
)
from tests.stream_support import SMARTCITY
from tests.test_spark_cluster import (
    DAY,
    _first_difference,
    assert_materialize_stops_with_one_line,
    published,
)

INTERVAL_S = 600.0
"""Every sensor every 10 minutes (the cluster's test takes 15)."""


def test_a_remote_session_is_configured_by_its_address_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CONNECT_TOKEN_VARIABLE, raising=False)
    with socket.create_server(("127.0.0.1", 0)) as listening:
        remote = f"sc://localhost:{listening.getsockname()[1]}"
        settings = Settings(_env_file=None, spark_remote=remote, spark_connect_token="s3cret")
        config = spark_config(settings)
    assert config == {"spark.remote": remote}
    assert os.environ[CONNECT_TOKEN_VARIABLE] == "s3cret", "the client reads its token there"


JITTER_MS = 500
"""The most Spark Connect's default policy adds to a wait of 2 s or more."""


@given(st.floats(min_value=0.001, max_value=3600))
def test_a_runs_client_retries_for_its_patience_and_not_much_longer(patience_s: float) -> None:
    """The waits Spark Connect's own policy state hands out, until it gives up."""
    state = connect_retry_policy(patience_s).to_state()
    waits: list[int] = []
    while (wait := state.next_attempt()) is not None:
        waits.append(wait)
    assert sum(waits) >= patience_s * 1000
    assert sum(waits[:-1]) < patience_s * 1000 + JITTER_MS * len(waits)
    assert max(waits) <= CONNECT_LONGEST_WAIT_MS + JITTER_MS


def test_a_remote_where_no_server_answers_stops_materialize_with_one_line(
    tmp_path: Path,
) -> None:
    """Not the Connect client's retries, which would wait for its patience (two minutes)."""
    remote = f"sc://localhost:{free_port()}"
    variables = {"SMARTCITY_SPARK_REMOTE": remote}
    assert_materialize_stops_with_one_line(tmp_path, variables, f"SMARTCITY_SPARK_REMOTE {remote}")


def test_a_remote_that_is_not_a_connect_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SMARTCITY_SPARK_REMOTE", "spark://127.0.0.1:7077")
    with pytest.raises(SettingsError, match=r"^SMARTCITY_SPARK_REMOTE"):
        load_settings()


def _environment(process: psutil.Process) -> dict[str, str]:
    """The environment of a process listed a moment ago; none for one that has ended since
    (a zombie's, not yet reaped, cannot be read either)."""
    try:
        return process.environ()
    except psutil.NoSuchProcess:
        return {}


def _run_watching_for_a_jvm(command: list[str], cwd: Path, env: dict[str, str]) -> set[str]:
    """Run `command` to its end; the names of the processes it started meanwhile."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    root = psutil.Process(process.pid)
    seen: set[str] = set()
    deadline = time.monotonic() + 900
    while process.poll() is None:
        assert time.monotonic() < deadline, f"{command} still runs after 15 minutes"
        with contextlib.suppress(psutil.NoSuchProcess):
            seen |= {child.name() for child in root.children(recursive=True)}
        time.sleep(0.1)
    stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr[-3000:] + stdout[-3000:]
    return seen


def _python_workers_end(server_pid: int, within_s: float = 180.0) -> bool:
    """Whether the server's Python processes (the anomaly detector's workers) all exit once
    the runs are over: a long-lived server must not keep a process for every session it
    served (with Spark's Python daemon, one per session stays until the server stops)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.NoSuchProcess):
            if not [p for p in family(server_pid) if "python" in p.name()]:
                return True
        time.sleep(1)
    return False


def _query(remote: str, token: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A query from a Connect client of its own with `token`."""
    query = (
        "from pyspark.sql import SparkSession\n"
        f"SparkSession.builder.remote({remote!r}).getOrCreate().range(1).collect()"
    )
    env = {k: v for k, v in os.environ.items() if k != CONNECT_TOKEN_VARIABLE}
    return subprocess.run(
        [sys.executable, "-c", query],
        cwd=cwd,
        env={**env, CONNECT_TOKEN_VARIABLE: token},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTCITY_", "AWS_"))}
    env.pop("DAGSTER_HOME", None)
    env.pop(CONNECT_TOKEN_VARIABLE, None)
    return env | settings_env(settings)


@pytest.mark.integration
def test_runs_share_the_kept_server_and_build_what_their_own_driver_builds(
    tmp_path: Path,
) -> None:
    kept = Settings(
        _env_file=None, lake_uri=(tmp_path / "lake").as_uri(), runtime_dir=tmp_path / "kept"
    )
    start = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
    land_simulated_day(Lake.from_settings(kept), int(start.timestamp() * 1000), INTERVAL_S)
    own = kept.model_copy(
        update={"lake_uri": (tmp_path / "own-lake").as_uri(), "runtime_dir": tmp_path / "own"}
    )
    Lake.from_settings(kept).copy_into(Lake.from_settings(own))
    materialize = [SMARTCITY, "materialize", "--date", DAY]

    up = subprocess.run(
        [SMARTCITY, "services", "up", "--no-kafka", "--no-s3", "--spark"],
        cwd=tmp_path,
        env=_env(kept) | {CONNECT_TOKEN_VARIABLE: "exported-in-the-shell"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert up.returncode == 0, up.stderr
    assert "SMARTCITY_SPARK_REMOTE=sc://localhost:" in up.stdout
    try:
        server = manager.recorded(kept)[spark_connect.NAME]
        token = server.env["SMARTCITY_SPARK_CONNECT_TOKEN"]
        remote = server.env["SMARTCITY_SPARK_REMOTE"]
        assert _query(remote, token, tmp_path).returncode == 0
        refused = _query(remote, "not-" + token, tmp_path)
        assert refused.returncode != 0 and "UNAUTHENTICATED" in refused.stderr, refused.stderr
        workers = family(server.pid)
        inheriting = [p.pid for p in workers if CONNECT_TOKEN_VARIABLE in _environment(p)]
        assert inheriting == [], "the server's Python workers would inherit its token"
        for _ in range(2):  # the second run finds the server's JVM warm
            started = _run_watching_for_a_jvm(materialize, tmp_path, _env(kept))
            assert "java" not in started, f"a run on the kept server started {started}"
        server = manager.recorded(kept)[spark_connect.NAME]
        assert _python_workers_end(server.pid), "the runs' Python processes outlive them"
    finally:
        down = subprocess.run(
            [SMARTCITY, "services", "down"],
            cwd=tmp_path,
            env=_env(kept),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert spark_connect.NAME in down.stdout, down.stdout + down.stderr

    started = _run_watching_for_a_jvm(materialize, tmp_path, _env(own))
    assert "java" in started, "without the server, a run has a driver of its own"
    with_server, with_own = published(Lake.from_settings(kept)), published(Lake.from_settings(own))
    assert with_server.keys() == with_own.keys()
    assert "anomaly_summary" in with_server
    differ = {
        name: _first_difference(with_own[name], with_server[name])
        for name in with_own
        if not with_own[name].equals(with_server[name])
    }
    assert not differ, differ


@pytest.mark.integration
def test_runs_on_the_clusters_kept_server_ship_their_own_code(
    cluster_settings: Settings, tmp_path: Path
) -> None:
    """The server as the standalone cluster's application: the executors' Python lacks the
    project, and the server, a JVM application, ships no Python files; the run's session
    carries the code its anomaly detector needs."""
    lake = cluster_settings.model_copy(update={"lake_uri": f"{cluster_settings.lake_uri}/kept"})
    start = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
    land_simulated_day(Lake.from_settings(lake), int(start.timestamp() * 1000), 900.0)
    server = spark_connect.start(lake.model_copy(update={"runtime_dir": tmp_path / "server"}))
    try:
        remote = lake.model_copy(
            update={
                "runtime_dir": tmp_path / "run",
                "spark_remote": server.env["SMARTCITY_SPARK_REMOTE"],
                "spark_connect_token": server.env["SMARTCITY_SPARK_CONNECT_TOKEN"],
            }
        )
        started = _run_watching_for_a_jvm(
            [SMARTCITY, "materialize", "--date", DAY], tmp_path, _env(remote)
        )
    finally:
        stop(server)
    assert "java" not in started, f"a run on the kept server started {started}"
    tables = published(Lake.from_settings(lake))
    assert tables["anomaly_summary"].num_rows > 0, "the detector ran on the executors"


PATIENCE_S = 20
"""How long the run's client retries its lost server here (120 s by default)."""
GIVES_UP_WITHIN_S = 300
"""Only to catch a run that waits: Spark Connect's default policy would wait 10 minutes."""


@pytest.mark.integration
def test_a_run_that_loses_its_server_fails_in_one_line_and_a_retry_builds_the_day(
    tmp_path: Path,
) -> None:
    """The server SIGKILLed while a run writes its tables: the run's client retries for its
    patience (`SMARTCITY_SPARK_CONNECT_PATIENCE_S`), then the run fails in one line; once
    `up` has started the server again, the retry publishes a day that passes every check."""
    settings = Settings(
        _env_file=None, lake_uri=(tmp_path / "lake").as_uri(), runtime_dir=tmp_path / "kept"
    )
    start = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
    land_simulated_day(Lake.from_settings(settings), int(start.timestamp() * 1000), INTERVAL_S)
    lake = Lake.from_settings(settings)
    up = [SMARTCITY, "services", "up", "--no-kafka", "--no-s3", "--spark"]
    materialize = [SMARTCITY, "materialize", "--date", DAY]
    env = {**_env(settings), "SMARTCITY_SPARK_CONNECT_PATIENCE_S": str(PATIENCE_S)}
    subprocess.run(up, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    run = subprocess.Popen(
        materialize, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 600
        while not _spark_wrote_a_table(lake) and run.poll() is None:
            assert time.monotonic() < deadline, "the run wrote no table in 10 minutes"
            time.sleep(0.2)
        server = manager.recorded(settings)[spark_connect.NAME]
        for process in family(server.pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        _, stderr = run.communicate(timeout=GIVES_UP_WITHIN_S)
        assert run.returncode != 0, "the run's server is gone"
        failed = [line for line in stderr.decode().splitlines() if line.startswith("error:")]
        assert len(failed) == 1, stderr.decode()[-3000:]

        subprocess.run(up, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
        started = _run_watching_for_a_jvm(materialize, tmp_path, env)
        assert "java" not in started, f"the retry on the restarted server started {started}"
    finally:
        if run.poll() is None:
            run.kill()
        subprocess.run(
            [SMARTCITY, "services", "down"], cwd=tmp_path, env=env, timeout=120, check=False
        )
    tables = published(lake)
    assert {"raw_traffic", "clean_traffic", "anomaly_summary"} <= tables.keys()
    assert all(table.num_rows > 0 for name, table in tables.items() if name.startswith("raw_"))


def _spark_wrote_a_table(lake: Lake) -> bool:
    """A raw table staged or published: the run's session is at work (the registry, written
    before, is not Spark's)."""
    return any(f"{TABLES}/raw_" in info.path for info in lake.list_files(TABLES))
