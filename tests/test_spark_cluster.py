"""Spark on a cluster the platform does not own: the executors' Python has numpy, pandas and
pyarrow but not this project, so the driver ships the code (a zip) and the jars, and a day
built there, even with a worker lost mid-run, is the day built in local mode, row for row."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pyarrow as pa
import pytest
from pyspark import cloudpickle

from simulator.landed_day import land_simulated_day
from smartcity.lake import Lake
from smartcity.layout import TABLES, table_partition_key
from smartcity.services import manager, spark_cluster
from smartcity.services.processes import free_port
from smartcity.settings import SENSOR_TYPES, Settings, SettingsError, settings_env
from smartcity_dagster import shipping
from smartcity_dagster.spark import on_loopback, spark_config
from smartcity_dagster.transforms.anomalies import sensor_detector
from smartcity_stream.rules import RuleConfig
from tests.stream_support import worker_env

REPO = Path(__file__).resolve().parents[1]
SMARTCITY = str(REPO / ".venv" / "bin" / "smartcity")
DAY = "2026-11-27"
INTERVAL_S = 900.0
"""Every sensor every 15 minutes: a small day (about 20,000 readings) that still reaches
every step and some anomalies."""

EXECUTOR_PACKAGES = {"numpy", "pandas", "pyarrow", "pyspark", "py4j", "dateutil", "pytz", "tzdata"}
"""What an executor's Python has besides the standard library: the three libraries, what
pandas needs, and the pyspark that Spark's worker puts on its path."""

UNPICKLE_AND_RUN = """
import json, pickle, sys
import pandas  # the executors' packages and what they import are theirs
import pyarrow as pa
import pyspark.cloudpickle
before = set(sys.modules)
detector = pickle.loads(sys.stdin.buffer.read())
rows = pa.Table.from_pylist(json.loads(sys.argv[1]))
rows = rows.set_column(
    rows.schema.get_field_index("event_time"),
    "event_time",
    rows.column("event_time").cast(pa.timestamp("ms", tz="UTC")),
)
found = detector(rows)
print(json.dumps({"new": sorted(set(sys.modules) - before), "found": found.num_rows}))
"""


def traffic_rows(count: int) -> list[dict[str, object]]:
    """One road's readings, a minute apart, the last ones far too fast (an anomaly)."""
    start = 1_795_737_600_000
    return [
        {
            "sensor_id": "TRAFFIC_0001",
            "sensor_type": "traffic",
            "seq": seq,
            "event_time": start + seq * 60_000,
            "interval_s": 60,
            "vehicle_count": 12,
            "average_speed_kmh": 180.0 if seq > count - 3 else 45.0,
            "occupancy_pct": 10.0,
            "congestion_level": "low",
        }
        for seq in range(count)
    ]


def test_the_executors_code_imports_only_what_their_python_has() -> None:
    """The anomaly detector, pickled as Spark pickles it, then loaded and run in a fresh
    Python: every module that brings in is from the standard library, the executors'
    packages or the shipped zip (no pydantic, orjson, dagster, nothing compiled of ours)."""
    detector = sensor_detector({"TRAFFIC_0001": {"speed_limit_kmh": 50}}, RuleConfig())
    done = subprocess.run(
        [sys.executable, "-c", UNPICKLE_AND_RUN, json.dumps(traffic_rows(20))],
        input=cloudpickle.dumps(detector),
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = json.loads(done.stdout)
    assert report["found"] >= 1, "the detector ran the rules"
    allowed = set(sys.stdlib_module_names) | EXECUTOR_PACKAGES | set(shipping.SHIPPED_PACKAGES)
    outside = {name.split(".")[0] for name in report["new"]} - allowed
    assert not outside, f"executors lack {sorted(outside)}"


def test_the_code_zip_is_rebuilt_when_a_source_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "src" / "shipped_example"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""An example."""\n')
    (package / "rules.py").write_text("LIMIT = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.setattr(shipping, "CACHE_DIR", tmp_path / "cache")

    first = shipping.code_zip(("shipped_example",))
    assert shipping.code_zip(("shipped_example",)) == first
    (package / "rules.py").write_text("LIMIT = 2\n")
    second = shipping.code_zip(("shipped_example",))

    assert second != first and first.exists()
    probe = "import shipped_example.rules as r; print(r.LIMIT, r.__file__)"
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(second)!r}); {probe}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["2", f"{second}/shipped_example/rules.py"]


def test_an_unreachable_master_stops_materialize_with_one_line(tmp_path: Path) -> None:
    master = f"spark://127.0.0.1:{free_port()}"
    variables = {
        "SMARTCITY_SPARK_MASTER": master,
        "SMARTCITY_SPARK_EXECUTOR_PYTHON": sys.executable,
    }
    assert_materialize_stops_with_one_line(tmp_path, variables, f"SMARTCITY_SPARK_MASTER {master}")


def assert_materialize_stops_with_one_line(
    tmp_path: Path, variables: dict[str, str], naming: str
) -> None:
    """`smartcity materialize` with `variables` exits 2 at once, with one `error:` line that
    says `naming`."""
    settings = Settings(_env_file=None, lake_uri=(tmp_path / "lake").as_uri())
    env = {
        **worker_env(settings),
        "SMARTCITY_RUNTIME_DIR": str(tmp_path / "runtime"),
        **variables,
    }
    done = subprocess.run(
        [SMARTCITY, "materialize", "--date", DAY],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert len(errors) == 1 and naming in errors[0], done.stderr


def test_a_cluster_without_an_executor_python_is_refused() -> None:
    settings = Settings(_env_file=None, spark_master=f"spark://127.0.0.1:{free_port()}")
    with pytest.raises(SettingsError, match=r"^SMARTCITY_SPARK_EXECUTOR_PYTHON is not set"):
        spark_config(settings)


def test_an_s3_lake_without_keys_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(
        _env_file=None, lake_uri="s3://smartcity/lake", s3_endpoint="http://127.0.0.1:9"
    )
    with pytest.raises(SettingsError, match=r"^SMARTCITY_S3_ACCESS_KEY and SMARTCITY_S3_SECRET"):
        spark_config(settings)


def materialize_command(settings: Settings, runtime: Path) -> dict[str, object]:
    """`smartcity materialize --date DAY` as a user runs it (`subprocess` arguments), with
    `settings` in its environment only (no AWS variables of this process: the keys come
    from the settings) and a runtime folder of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTCITY_", "AWS_"))}
    env.pop("DAGSTER_HOME", None)
    own = settings.model_copy(update={"runtime_dir": runtime})
    return {
        "args": [SMARTCITY, "materialize", "--date", DAY],
        "cwd": REPO,
        "env": env | settings_env(own),
        "text": True,
    }


def materialize(settings: Settings, runtime: Path) -> None:
    done = subprocess.run(
        **materialize_command(settings, runtime), capture_output=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]


def materialize_losing_a_worker(settings: Settings, runtime: Path) -> int:
    """`materialize` on the cluster with one Spark worker and its executor SIGKILLed once the
    run has written its first table (a machine lost mid-run); the worker starts again after
    the run. Returns the attempts the day took: 1 when Spark's task retries finished the
    run, 2 when the run failed, saying so in one line, and a retry succeeded."""
    name = spark_cluster.WORKER_NAMES[-1]
    worker = manager.recorded(settings)[name].process()
    assert worker is not None, f"{name} is not running"
    lake = Lake.from_settings(settings)
    run = subprocess.Popen(
        **materialize_command(settings, runtime), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 600
        while not lake.list_files(TABLES) and run.poll() is None:
            assert time.monotonic() < deadline, "the run wrote no table in 10 minutes"
            time.sleep(0.2)
        for process in [worker, *worker.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        _, stderr = run.communicate(timeout=900)
    finally:
        manager.up(settings, [name])
    if run.returncode == 0:
        return 1
    failed = [line for line in stderr.splitlines() if line.startswith("error: materializing")]
    assert len(failed) == 1, stderr[-3000:]
    materialize(settings, runtime.with_name(f"{runtime.name}-retry"))
    return 2


def published(lake: Lake) -> dict[str, pa.Table]:
    """Every table published for DAY, sorted on its columns (row order is Spark's choice)."""
    assets = sorted(
        {info.path.split(f"{TABLES}/", 1)[1].split("/")[0] for info in lake.list_files(TABLES)}
    )
    tables = {}
    for asset in assets:
        key = table_partition_key(asset, DAY)
        if lake.exists(key):
            table = lake.read_parquet(key)
            keys = [f.name for f in table.schema if not pa.types.is_nested(f.type)]
            tables[asset] = table.sort_by([(name, "ascending") for name in keys])
    return tables


@pytest.mark.integration
def test_same_answer_in_local_mode_and_on_the_cluster(
    cluster_settings: Settings, tmp_path: Path
) -> None:
    """The day built in local mode on a lake folder and on the standalone cluster on MinIO,
    where a worker is lost mid-run: every published table equal, row for row."""
    landed = Settings(_env_file=None, lake_uri=(tmp_path / "lake").as_uri())
    start = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
    land_simulated_day(Lake.from_settings(landed), int(start.timestamp() * 1000), INTERVAL_S)
    remote = Lake.from_settings(cluster_settings)
    Lake.from_settings(landed).copy_into(remote)

    materialize(landed, tmp_path / "local-runtime")
    attempts = materialize_losing_a_worker(cluster_settings, tmp_path / "cluster-runtime")
    print(f"the cluster built the day in {attempts} attempt(s) with a worker lost mid-run")

    local, cluster = published(Lake.from_settings(landed)), published(remote)
    expected = {
        *(f"{stage}_{t}" for stage in ("raw", "clean") for t in SENSOR_TYPES),
        *(f"daily_{t}_aggregates" for t in SENSOR_TYPES),
        "anomaly_summary",
    }
    assert expected <= local.keys()
    assert local.keys() == cluster.keys()
    assert local["anomaly_summary"].num_rows > 0, "the day has anomalies to compare"
    differ = {
        name: _first_difference(local[name], cluster[name])
        for name in local
        if not local[name].equals(cluster[name])
    }
    assert not differ, differ


def _first_difference(local: pa.Table, cluster: pa.Table) -> str:
    """Where two tables part, for the report: their shapes, or per differing column how
    many rows differ and a first pair of values."""
    if local.num_rows != cluster.num_rows or local.schema != cluster.schema:
        return f"{local.num_rows} rows {local.schema} vs {cluster.num_rows} rows {cluster.schema}"
    parts = []
    for name in local.column_names:
        left, right = local[name].to_pylist(), cluster[name].to_pylist()
        rows = [row for row, (a, b) in enumerate(zip(left, right, strict=True)) if a != b]
        if rows:
            first = rows[0]
            parts.append(f"{name}: {len(rows)} rows, e.g. {left[first]!r} vs {right[first]!r}")
    return "; ".join(parts)


@pytest.mark.parametrize(
    ("master", "loopback"),
    [
        ("local[*]", True),
        ("spark://127.0.0.1:7077", True),
        ("spark://localhost:7077,127.0.0.2:7078", True),
        ("spark://spark-master:7077", False),
        ("spark://127.0.0.1:7077,spark-standby:7077", False),
    ],
)
def test_the_driver_stays_on_loopback_only_for_a_master_there(master: str, loopback: bool) -> None:
    """A compose service's executors must reach the driver at the host's own address."""
    assert on_loopback(master) is loopback


def test_a_run_takes_at_most_its_cores_of_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)  # restored after: spark_config sets it
    with socket.create_server(("127.0.0.1", 0)) as master:
        settings = Settings(
            _env_file=None,
            spark_master=f"spark://127.0.0.1:{master.getsockname()[1]}",
            spark_executor_python=sys.executable,
            spark_cores_max=3,
        )
        config = spark_config(settings)
    assert config["spark.cores.max"] == "3"
    assert "spark.driver.host" in config, "a master on loopback keeps the driver there"
