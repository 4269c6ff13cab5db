"""`smartcity simulate --backfill-date` against the real broker: the summary matches the topics."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from confluent_kafka import Consumer
from typer.testing import CliRunner

from simulator.registry import build_registry
from smartcity.cli import app
from smartcity.kafka import client_config
from smartcity.lake import Lake
from smartcity.registry import REGISTRY_SCHEMA, import_registry, load_registry
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity.topics import create_topics
from tests.simulator_support import classify, known_ids
from tests.stream_support import isolated

pytestmark = pytest.mark.integration


def _env(settings: Settings, runtime: Path) -> dict[str, str]:
    env = {
        "SMARTCITY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SMARTCITY_TOPIC_PREFIX": settings.topic_prefix,
        "SMARTCITY_LAKE_URI": settings.lake_uri,
        "SMARTCITY_RUNTIME_DIR": str(runtime),
    }
    if settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key:
        env["SMARTCITY_S3_ENDPOINT"] = settings.s3_endpoint
        env["SMARTCITY_S3_ACCESS_KEY"] = settings.s3_access_key.get_secret_value()
        env["SMARTCITY_S3_SECRET_KEY"] = settings.s3_secret_key.get_secret_value()
    return env


def _read_topic(settings: Settings, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": f"simulator-test-{topic}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    idle = 0
    while len(values) < expected or idle < 2:
        batch = consumer.consume(10_000, timeout=1.0)
        idle = 0 if batch else idle + 1
        assert idle < 30, f"{topic}: {len(values)} of {expected} messages after 30 s idle"
        values += [m.value() for m in batch if m.error() is None]
    consumer.close()
    return values


def test_backfill_summary_matches_what_is_on_the_topics(
    live_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = live_settings.model_copy(
        update={"topic_prefix": f"{live_settings.topic_prefix}sim."}
    )
    create_topics(settings)
    for name, value in _env(settings, tmp_path).items():
        monkeypatch.setenv(name, value)
    summary_path, truth_path = tmp_path / "summary.json", tmp_path / "truth.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--backfill-date",
            "2026-11-27T07:00",
            "--duration",
            "20m",
            "--interval",
            "5s",
            "--faults",
            "all=0.005",
            "--anomaly-rate",
            "2",
            "--summary",
            str(summary_path),
            "--ground-truth",
            str(truth_path),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = orjson.loads(summary_path.read_bytes())
    assert summary["steps"] == 240 and not summary["interrupted"]
    assert summary["first_event_time"] == "2026-11-27T07:00:00.000Z"
    assert summary["end_event_time"] == "2026-11-27T07:20:00.000Z"

    registry = build_registry()
    on_topics = {
        t: classify(
            _read_topic(settings, settings.reading_topic(t), summary["topics"][t]["acknowledged"]),
            known_ids(registry),
        )
        for t in SENSOR_TYPES
    }
    readings = set().union(*(census.readings for census in on_topics.values()))
    acknowledged = sum(t["readings_acknowledged"] for t in summary["topics"].values())
    assert len(readings) == acknowledged == 240 * 210
    for sensor_type, census in on_topics.items():
        topic = summary["topics"][sensor_type]
        faults_on_topic = {kind: census.kinds[kind] for kind in topic["faults"]}
        assert faults_on_topic == topic["faults"], sensor_type
        assert sum(census.kinds.values()) == topic["acknowledged"] == topic["produced"]
    assert sum(sum(t["faults"].values()) for t in summary["topics"].values()) > 1000
    last = summary["last_acknowledged_seq"]
    assert len(last) == 210
    assert last["TRAFFIC_0000"] == max(seq for sid, seq in readings if sid == "TRAFFIC_0000")
    truth = [orjson.loads(line) for line in truth_path.read_bytes().splitlines()]
    assert truth and all(t["start"] < t["end"] <= summary["end_event_time"] for t in truth)


def test_simulate_takes_the_registry_in_the_lake(
    live_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A city's own registry drives the simulator; a count asked for imports a new city."""
    settings = isolated(live_settings, "simreg")
    lake = Lake.from_settings(settings)
    rows = build_registry({"traffic": 3, "weather": 1, "energy": 2}).table().to_pylist()
    for row in rows:
        row["sensor_id"] = row["sensor_id"].replace("_000", "_070")
    import_registry(lake, pa.Table.from_pylist(rows, schema=REGISTRY_SCHEMA))
    for name, value in _env(settings, tmp_path).items():
        monkeypatch.setenv(name, value)
    summary_path = tmp_path / "summary.json"
    backfill = ["simulate", "--backfill-date", "2026-11-27", "--duration", "10m"]
    options = ["--interval", "60s", "--summary", str(summary_path), "--no-progress"]
    result = CliRunner().invoke(app, [*backfill, *options])
    assert result.exit_code == 0, result.output
    summary = orjson.loads(summary_path.read_bytes())
    assert summary["sensors"] == {"traffic": 3, "weather": 1, "energy": 2}
    assert set(summary["last_acknowledged_seq"]) == {row["sensor_id"] for row in rows}
    assert load_registry(lake).version == 1

    result = CliRunner().invoke(app, [*backfill, *options, "--sensors", "21"])
    assert result.exit_code == 0, result.output
    imported = load_registry(lake)
    assert (imported.version, imported.table.num_rows) == (2, 21)
