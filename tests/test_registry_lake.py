"""`smartcity sensors` on an S3 lake, and a running worker that takes a new registry version."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from uuid import uuid4

import orjson
import pyarrow as pa
import pytest
from confluent_kafka import Producer

from simulator.registry import build_registry
from smartcity.kafka import client_config
from smartcity.lake import Lake
from smartcity.layout import registry_current_key
from smartcity.registry import import_registry, load_registry, write_table
from smartcity.settings import Settings
from tests.stream_support import SMARTCITY, consume_all, isolated, landed, worker_env

pytestmark = pytest.mark.integration


def sensors(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SMARTCITY, "sensors", *args],
        env=worker_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_export_list_on_the_s3_lake(live_settings: Settings, tmp_path: Path) -> None:
    settings = isolated(live_settings, "reg")
    lake = Lake.from_settings(settings)
    assert sensors(settings, "list").returncode == 2  # nothing imported yet, and it says so

    city = build_registry({"traffic": 6, "weather": 2, "energy": 4}).table()
    first = tmp_path / "city.geojson"
    first.write_bytes(write_table(city, "geojson"))
    done = sensors(settings, "import", str(first))
    assert done.returncode == 0, done.stderr
    assert "12 sensors (4 energy, 6 traffic, 2 weather) imported as registry version 1" in (
        done.stdout
    )

    exported = tmp_path / "exported.csv"
    assert sensors(settings, "export", "-o", str(exported)).returncode == 0
    again = sensors(settings, "import", str(exported))
    assert "unchanged, still registry version 1" in again.stdout, again.stderr

    bad = exported.read_text().splitlines()
    tram = next(i for i, line in enumerate(bad) if ",traffic," in line)
    bad[tram] = bad[tram].replace(",traffic,", ",tram,")
    bad.append(bad[1])  # a repeated id
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join(bad) + "\n")
    refused = sensors(settings, "import", str(broken))
    assert refused.returncode == 2
    assert f"broken.csv: line {tram + 1}, sensor_type" in refused.stderr
    assert f"broken.csv: line {len(bad)}, sensor_id:" in refused.stderr
    assert "nothing imported" in refused.stderr
    assert orjson.loads(lake.read_bytes(registry_current_key()))["version"] == 1

    grown = build_registry({"traffic": 7, "weather": 2, "energy": 4}).table()
    second = tmp_path / "grown.parquet"
    second.write_bytes(write_table(grown, "parquet"))
    assert "registry version 2" in sensors(settings, "import", str(second)).stdout
    listed = sensors(settings, "list", "--type", "weather")
    assert listed.returncode == 0, listed.stderr
    assert "registry version 2: 2 of 13" in listed.stdout
    assert "WEATHER_0001" in listed.stdout and "TRAFFIC_0000" not in listed.stdout
    assert load_registry(lake).table.equals(grown.sort_by("sensor_id"))


def _reading(sensor_id: str, seq: int) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "sensor_id": sensor_id,
            "sensor_type": "traffic",
            "event_time": f"2026-12-01T10:{seq // 60:02d}:{seq % 60:02d}.000Z",
            "seq": seq,
            "vehicle_count": 3,
            "average_speed_kmh": 41.5,
            "occupancy_pct": 7.0,
            "congestion_level": "low",
        }
    )


def _dead_lettered(settings: Settings) -> dict[int, str]:
    """seq -> reason of every dead letter (each test reads with a group of its own)."""
    return {
        orjson.loads(message.value())["seq"]: dict(message.headers())["reason"].decode()
        for message in consume_all(settings, settings.topic("deadletter"), f"dlq-{uuid4().hex}")
    }


def test_a_running_worker_takes_a_newly_imported_sensor(live_settings: Settings) -> None:
    """Readings of a sensor the registry lacks are dead-lettered as unknown; once a version
    with it is imported, the same worker lands them, without a restart. Each reading ends
    in exactly one of the two places."""
    settings = isolated(live_settings, "regw")
    lake = Lake.from_settings(settings)
    city = build_registry({"traffic": 3, "weather": 1, "energy": 1}).table()
    newcomer = "TRAFFIC_0042"
    import_registry(lake, city)
    worker = subprocess.Popen(
        [SMARTCITY, "stream", "--metrics-port", "0", "--until-idle", "8"],
        env={**worker_env(settings), "SMARTCITY_REGISTRY_REFRESH_S": "0.5"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    producer = Producer(client_config(settings, **{"enable.idempotence": True}))
    topic = settings.reading_topic("traffic")

    def send(seq: int) -> None:
        producer.produce(topic, key=newcomer.encode(), value=_reading(newcomer, seq))
        assert producer.flush(30) == 0

    send(0)
    deadline = time.monotonic() + 60
    while 0 not in _dead_lettered(settings) and time.monotonic() < deadline:
        time.sleep(0.5)
    row = {**city.slice(0, 1).to_pylist()[0], "sensor_id": newcomer}
    import_registry(lake, pa.concat_tables([city, pa.Table.from_pylist([row], city.schema)]))
    seq = 1
    while time.monotonic() < deadline:
        send(seq)
        seq += 1
        time.sleep(0.5)
        _, tables = landed(lake, "traffic")
        if tables and newcomer in tables[0].column("sensor_id").to_pylist():
            break
    _, stderr = worker.communicate(timeout=120)
    assert worker.returncode == 0, stderr.decode()[-2000:]
    dead = _dead_lettered(settings)
    _, tables = landed(lake, "traffic")
    rows = tables[0].to_pylist()
    landed_seqs = {row["seq"] for row in rows if row["sensor_id"] == newcomer}
    assert dead[0] == "unknown_sensor"
    assert landed_seqs, "the new sensor's readings never landed"
    assert set(dead) | landed_seqs == set(range(seq))
    assert not set(dead) & landed_seqs
    assert max(dead) < min(landed_seqs)  # once taken, always taken
