"""The stream-fed sensor over a sequence of progress manifests: new date, late data, nothing."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import orjson
import pytest

from smartcity.lake import Lake
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_dagster.progress import complete_dates
from smartcity_stream.progress import PartitionProgress, save_progress

PREFIX = "smartcity."


def manifest(sensor_type: str, watermark: str, hours: dict[str, dict[str, dict[str, int]]]):
    return PartitionProgress(
        topic=f"{PREFIX}{sensor_type}",
        partition=0,
        committed_offset=10,
        watermark=watermark,
        hours=hours,
    )


def day_files(day: str, *names: str) -> dict[str, dict[str, dict[str, int]]]:
    return {day: {"23": {name: 100 for name in names}}}


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    for name in ("SMARTCITY_KAFKA_BOOTSTRAP", "SMARTCITY_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SMARTCITY_LAKE_URI", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("SMARTCITY_TOPIC_PREFIX", PREFIX)
    monkeypatch.setenv("SMARTCITY_RUNTIME_DIR", str(tmp_path / "runtime"))
    return Lake.from_settings(Settings(_env_file=None, lake_uri=(tmp_path / "lake").as_uri()))


def publish(lake: Lake, watermark: str, *names: str) -> None:
    for sensor_type in SENSOR_TYPES:
        save_progress(lake, manifest(sensor_type, watermark, day_files("2026-11-27", *names)))


def evaluate(cursor: str | None) -> dg.SensorResult:
    from smartcity_dagster.sensors import stream_progress_sensor

    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor)
        return stream_progress_sensor(context)


def test_sensor_follows_the_worker(lake: Lake) -> None:
    publish(lake, "2026-11-27T23:10:00+00:00", "p0-0-99.parquet")
    incomplete = evaluate(None)
    assert incomplete.run_requests == []

    publish(lake, "2026-11-28T00:05:00+00:00", "p0-0-99.parquet")
    complete = evaluate(incomplete.cursor)
    assert [r.partition_key for r in complete.run_requests] == ["2026-11-27"]

    nothing_new = evaluate(complete.cursor)
    assert nothing_new.run_requests == []

    publish(lake, "2026-11-28T00:30:00+00:00", "p0-0-99.parquet", "p0-150-151.parquet")
    late = evaluate(nothing_new.cursor)
    assert [r.partition_key for r in late.run_requests] == ["2026-11-27"]
    assert late.run_requests[0].run_key != complete.run_requests[0].run_key
    assert orjson.loads(late.cursor)["2026-11-27"] != orjson.loads(complete.cursor)["2026-11-27"]


def test_a_type_without_progress_holds_the_date_back() -> None:
    topics = {f"{PREFIX}{t}" for t in SENSOR_TYPES}
    only_two = [
        manifest(t, "2026-11-29T00:00:00+00:00", day_files("2026-11-27", "a"))
        for t in SENSOR_TYPES[:2]
    ]
    assert complete_dates(only_two, topics, {}) == {}
    all_three = [
        *only_two,
        manifest("energy", "2026-11-29T00:00:00+00:00", day_files("2026-11-27", "a")),
    ]
    assert list(complete_dates(all_three, topics, {})) == ["2026-11-27"]
