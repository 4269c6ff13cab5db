"""Reading history: clean + landing merge, pagination without gaps or repeats, bad input."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.fs as pafs
import pytest
from fastapi.testclient import TestClient

from smartcity.lake import Lake
from smartcity.layout import table_partition_key
from smartcity_api.app import create_app
from tests.api_support import DAY, SENSOR, START, ApiLake, expected_seqs, landing_table

pytestmark = pytest.mark.integration

END = (START + timedelta(hours=3)).isoformat()
URL = "/api/v1/sensors/{}/readings"


def all_pages(client: TestClient, sensor_id: str, limit: int) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        params = {"start": START.isoformat(), "end": END, "limit": limit}
        response = client.get(
            URL.format(sensor_id), params=params | ({"cursor": cursor} if cursor else {})
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == len(body["items"]) <= limit
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_partly_built_day_is_clean_then_landing_without_gaps_or_repeats(
    api_client: TestClient, api_lake: ApiLake
) -> None:
    pages = all_pages(api_client, SENSOR, limit=97)
    items = [item for page in pages for item in page]
    seqs = [item["seq"] for item in items]
    assert len(seqs) == len(set(seqs)), "a reading was served twice"
    assert set(seqs) == expected_seqs(api_lake, SENSOR)
    assert max(item["event_time"] for item in items) >= "2026-11-27T01:"  # landing beyond
    keys = [(item["event_time"], item["seq"]) for item in items]
    assert keys == sorted(keys)
    assert all(len(page) == 97 for page in pages[:-1])
    assert items[0]["vehicle_count"] is not None and "kafka_offset" not in items[0]


def test_hour_00_comes_from_the_clean_table(
    api_client: TestClient, api_lake: ApiLake, tmp_path: Path
) -> None:
    """A reading the batch layer kept out of the clean table is not served, though the
    landing holds it. On a copy of the lake whose clean partition lacks one reading of
    hour 00 (as a rejected row would be missing)."""
    settings = api_lake.settings.model_copy(update={"lake_uri": tmp_path.as_uri()})
    copy = Lake.from_settings(settings)
    pafs.copy_files(
        api_lake.lake.root,
        copy.root,
        source_filesystem=api_lake.lake.filesystem,
        destination_filesystem=copy.filesystem,
    )
    key = table_partition_key("clean_traffic", DAY)
    clean = copy.read_parquet(key)
    ours = pc.equal(clean.column("sensor_id"), SENSOR)
    left_out = clean.filter(ours).column("seq")[100].as_py()
    copy.write_parquet(
        key, clean.filter(pc.invert(pc.and_(ours, pc.equal(clean.column("seq"), left_out))))
    )
    params = {"start": START.isoformat(), "end": END, "limit": 10_000}
    with TestClient(create_app(settings)) as client:
        served = {
            item["seq"] for item in client.get(URL.format(SENSOR), params=params).json()["items"]
        }
        count = client.get(f"/api/v1/sensors/{SENSOR}").json()["record_count"]
    assert served == expected_seqs(api_lake, SENSOR) - {left_out}
    assert count == len(served)
    full = api_client.get(URL.format(SENSOR), params=params).json()["items"]
    assert left_out in {item["seq"] for item in full}


def test_landing_duplicates_are_served_once(api_client: TestClient, api_lake: ApiLake) -> None:
    table = landing_table(api_lake, "traffic")
    landed = table.filter(pc.greater_equal(pc.hour(table.column("event_time")), 1))
    counts = landed.group_by(["sensor_id", "seq"]).aggregate([("kafka_offset", "count")])
    doubled = counts.filter(pc.greater(counts.column("kafka_offset_count"), 1))
    assert doubled.num_rows > 0, "the fixture should have landed duplicates after hour 00"
    sensor_id = doubled.column("sensor_id")[0].as_py()
    items = [item for page in all_pages(api_client, sensor_id, limit=10_000) for item in page]
    assert len(items) == len(expected_seqs(api_lake, sensor_id))
    assert {item["seq"] for item in items} == expected_seqs(api_lake, sensor_id)


def test_a_cursor_always_gives_the_same_next_page(api_client: TestClient) -> None:
    params = {"start": START.isoformat(), "end": END, "limit": 50}
    first = api_client.get(URL.format(SENSOR), params=params).json()
    again = [
        api_client.get(URL.format(SENSOR), params=params | {"cursor": first["next_cursor"]}).json()
        for _ in range(2)
    ]
    assert again[0] == again[1]
    assert again[0]["items"][0]["seq"] > first["items"][-1]["seq"]


def test_a_range_inside_one_hour(api_client: TestClient, api_lake: ApiLake) -> None:
    params = {"start": "2026-11-27T01:10:00Z", "end": "2026-11-27T01:20:00Z"}
    items = api_client.get(URL.format(SENSOR), params=params).json()["items"]
    assert len(items) == 60  # 10 minutes at 10 s
    assert all("2026-11-27T01:10" <= item["event_time"] < "2026-11-27T01:20" for item in items)


@pytest.mark.parametrize(
    ("path", "params", "status", "names"),
    [
        (URL.format(SENSOR), {"start": END, "end": START.isoformat()}, 422, "end"),
        (URL.format(SENSOR), {"start": "2026-11-27T00:00:00", "end": END}, 422, "start"),
        (URL.format(SENSOR), {"start": "yesterday", "end": END}, 422, "start"),
        (URL.format(SENSOR), {"end": END}, 422, "start"),
        (URL.format(SENSOR), {"start": "2026-01-01T00:00:00Z", "end": END}, 422, "end"),
        (URL.format(SENSOR), {"start": START.isoformat(), "end": END, "limit": 0}, 422, "limit"),
        (
            URL.format(SENSOR),
            {"start": START.isoformat(), "end": END, "limit": 10_001},
            422,
            "limit",
        ),
        (
            URL.format(SENSOR),
            {"start": START.isoformat(), "end": END, "cursor": "nope!"},
            422,
            "cursor",
        ),
        (URL.format("TRAFFIC_9999"), {"start": START.isoformat(), "end": END}, 404, "sensor_id"),
        (URL.format("TRAFFIC..01"), {"start": START.isoformat(), "end": END}, 422, "sensor_id"),
        (URL.format("..%2F..%2Fetc"), {"start": START.isoformat(), "end": END}, 422, "sensor_id"),
        ("/api/v1/sensors/TRAFFIC_0001%2Fx", {}, 422, "sensor_id"),
        ("/api/v1/sensors/traffic_0001", {}, 422, "sensor_id"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_parameter(
    api_client: TestClient, path: str, params: dict[str, Any], status: int, names: str
) -> None:
    response = api_client.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(names), response.json()


def test_a_large_clean_partition_is_read_a_sensor_at_a_time(
    api_client: TestClient, api_lake: ApiLake
) -> None:
    app = create_app(api_lake.settings)
    app.state.reader.whole_read_bytes = 0  # every partition counts as large
    params = {"start": START.isoformat(), "end": END, "limit": 10_000}
    with TestClient(app) as client:
        for sensor in (SENSOR, "TRAFFIC_0002"):
            alone = client.get(URL.format(sensor), params=params).json()
            shared = api_client.get(URL.format(sensor), params=params).json()
            assert alone == shared and alone["count"] > 360
