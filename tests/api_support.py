"""A lake for the API tests: written by the real stream worker, plus one partly built day.

`api_lake` produces 90 minutes of the default city (10 s interval, 2 % duplicates, planted
anomalies) into this run's own topics, runs the real stream worker until idle, and then
builds the batch tables of the day's first hour, the way a materialization while the day
is still going looks. Until `smartcity_dagster` lands, those tables are written here with
pyarrow in the format docs/lake.md describes (clean = landing deduplicated by
(sensor_id, seq), lowest offset first, plus the registry's district and coordinates).
One reading of `REJECTED` is left out of the clean table, as a rejected row would be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message

from simulator.registry import registry_table
from smartcity.lake import Lake
from smartcity.layout import LANDING, quality_key, table_partition_key
from smartcity.settings import Settings
from smartcity_api.app import create_app
from smartcity_api.metrics import route_template
from smartcity_stream.anomalies import ANOMALY_SCHEMA
from smartcity_stream.landing import landing_schema
from tests.stream_support import Produced, isolated, produce_simulation, start_worker

DAY = date(2026, 11, 27)
START = datetime(2026, 11, 27, tzinfo=UTC)
STEPS = 540  # 90 minutes at 10 s: hour 00 is built, half of hour 01 is only landed
INTERVAL_MS = 10_000
SENSOR = "TRAFFIC_0001"
REJECTED_INDEX = 100  # the 101st reading of SENSOR's day is "rejected" by the batch layer


@dataclass(frozen=True)
class ApiLake:
    settings: Settings
    produced: Produced
    rejected_seq: int

    @property
    def lake(self) -> Lake:
        return Lake.from_settings(self.settings)


def _landing(lake: Lake, sensor_type: str, hour: int | None = None) -> pa.Table:
    prefix = f"{LANDING}/{sensor_type}/date={DAY}"
    if hour is not None:
        prefix += f"/hour={hour:02d}"
    paths = [i.path for i in lake.list_files(prefix) if i.path.endswith(".parquet")]
    dataset = ds.dataset(paths, schema=landing_schema(sensor_type), filesystem=lake.filesystem)
    return dataset.to_table()


def _deduplicated(table: pa.Table) -> pa.Table:
    table = table.sort_by(
        [("sensor_id", "ascending"), ("seq", "ascending"), ("kafka_offset", "ascending")]
    )
    ids, seqs = table.column("sensor_id").to_pylist(), table.column("seq").to_pylist()
    keep = [i for i in range(len(ids)) if i == 0 or (ids[i], seqs[i]) != (ids[i - 1], seqs[i - 1])]
    return table.take(keep)


def _with_registry(table: pa.Table) -> pa.Table:
    registry = registry_table().select(["sensor_id", "district", "latitude", "longitude"])
    joined = table.join(registry, "sensor_id", join_type="left outer")
    return joined.sort_by([("sensor_id", "ascending"), ("seq", "ascending")])


def _aggregates(clean: pa.Table) -> pa.Table:
    """A `daily_traffic_aggregates` partition: sensor and district level, hour and day."""
    hours = pc.floor_temporal(clean.column("event_time"), unit="hour")
    base = clean.append_column("period_hour", hours)
    rows = []
    for level, keys in (("sensor", ["sensor_id", "district"]), ("district", ["district"])):
        for granularity, period in (("hour", ["period_hour"]), ("day", [])):
            grouped = base.group_by(keys + period).aggregate(
                [("seq", "count"), ("vehicle_count", "sum"), ("average_speed_kmh", "mean")]
            )
            for row in grouped.to_pylist():
                rows.append(
                    {
                        "level": level,
                        "sensor_id": row.get("sensor_id"),
                        "district": row["district"],
                        "granularity": granularity,
                        "period_start": row.get("period_hour", START),
                        "readings": row["seq_count"],
                        "vehicles": row["vehicle_count_sum"],
                        "mean_speed_kmh": row["average_speed_kmh_mean"],
                        "p85_speed_kmh": float("nan"),  # NaN must reach clients as null
                        "congestion_minutes": 0.0,
                    }
                )
    return pa.Table.from_pylist(rows)


def _anomaly_events(lake: Lake) -> pa.Table:
    """The first hour's stream anomalies as found by both layers, plus one batch-only one."""
    paths = [
        i.path
        for i in lake.list_files(f"{LANDING}/anomalies/date={DAY}/hour=00")
        if i.path.endswith(".parquet")
    ]
    stream = ds.dataset(paths, schema=ANOMALY_SCHEMA, filesystem=lake.filesystem).to_table()
    rows = [{**row, "district": None, "source": "both"} for row in stream.to_pylist()]
    rows.append(
        {
            **rows[0],
            "anomaly_id": "batch-only-0001",
            "kind": "gap",
            "values": orjson.dumps({"missing": 3}).decode(),
            "source": "batch",
        }
    )
    return pa.Table.from_pylist(rows)


def _quality(asset: str, passed: bool) -> bytes:
    return orjson.dumps(
        {
            "asset": asset,
            "partition": DAY.isoformat(),
            "materialized_at": "2026-11-27T01:05:00+00:00",
            "checks": [
                {
                    "name": "schema",
                    "passed": passed,
                    "severity": "ERROR",
                    "blocking": True,
                    "metadata": {"failures": 0 if passed else 1},
                }
            ],
        }
    )


def build_tables(lake: Lake, hour: int | None = 0) -> int:
    """Write the day's batch tables from the landing of one hour (None: the whole day);
    returns the rejected reading's seq."""
    clean = _with_registry(_deduplicated(_landing(lake, "traffic", hour=hour)))
    clean = clean.combine_chunks()
    ours = pc.equal(clean.column("sensor_id"), SENSOR).to_pylist()
    positions = [i for i, mine in enumerate(ours) if mine]
    rejected = positions[REJECTED_INDEX]
    rejected_seq = clean.column("seq")[rejected].as_py()
    clean = clean.filter(pa.array([i != rejected for i in range(clean.num_rows)]))
    lake.write_parquet(table_partition_key("clean_traffic", DAY), clean)
    lake.write_parquet(table_partition_key("daily_traffic_aggregates", DAY), _aggregates(clean))
    lake.write_parquet(table_partition_key("anomaly_events", DAY), _anomaly_events(lake))
    lake.write_bytes(quality_key("clean_traffic", DAY), _quality("clean_traffic", True))
    lake.write_bytes(
        quality_key("daily_traffic_aggregates", DAY), _quality("daily_traffic_aggregates", False)
    )
    return rejected_seq


def _run_worker_to_idle(settings: Settings, attempts: int = 2) -> None:
    """The real worker until idle; a run that fails (e.g. a broker still warming up its
    coordinator) is simply started again: it resumes from its committed offsets."""
    for attempt in range(attempts):
        worker = start_worker(settings, "--until-idle", "4")
        _, stderr = worker.communicate(timeout=300)
        if worker.returncode == 0:
            return
        assert attempt + 1 < attempts, stderr.decode()[-2000:]


@pytest.fixture(scope="session")
def api_lake(live_settings: Settings) -> ApiLake:
    settings = isolated(live_settings, "api")
    produced = produce_simulation(
        settings,
        steps=STEPS,
        interval_ms=INTERVAL_MS,
        faults="duplicate=0.02",
        anomaly_rate_per_hour=1.0,
    )
    _run_worker_to_idle(settings)
    rejected_seq = build_tables(Lake.from_settings(settings))
    return ApiLake(settings, produced, rejected_seq)


@pytest.fixture(scope="session")
def api_client(api_lake: ApiLake) -> Iterator[TestClient]:
    """The app in-process (fast); `test_api_http` covers the real socket."""
    with TestClient(create_app(api_lake.settings)) as client:
        yield client


def expected_seqs(api_lake: ApiLake, sensor_id: str) -> set[int]:
    """What the producer had acknowledged for the sensor, minus what the batch rejected."""
    seqs = {seq for sensor, seq in api_lake.produced.readings if sensor == sensor_id}
    return seqs - {api_lake.rejected_seq} if sensor_id == SENSOR else seqs


def landing_table(api_lake: ApiLake, sensor_type: str) -> pa.Table:
    return _landing(api_lake.lake, sensor_type)


def asgi_get(
    app: ASGIApp, path: str, query_string: bytes = b"", key: bytes | None = None
) -> tuple[int, bytes, str]:
    """One GET straight through an ASGI app: status, last body, the route the metrics see."""
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query_string}
    scope["headers"] = [(b"x-api-key", key)] if key is not None else []
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], sent[-1]["body"], route_template(scope)
