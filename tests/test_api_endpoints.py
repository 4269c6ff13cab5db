"""Every endpoint against the lake the real stream worker wrote (see `api_support`)."""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from smartcity.lake import Lake
from smartcity.layout import table_partition_key
from smartcity.registry import import_registry, load_registry
from smartcity.settings import SENSOR_TYPES
from smartcity_api.app import create_app
from smartcity_api.readings import History
from tests.api_support import (
    DAY,
    INTERVAL_MS,
    SENSOR,
    START,
    ApiLake,
    expected_seqs,
    landing_table,
)

pytestmark = pytest.mark.integration
RANGE = {"start": "2026-11-27T00:00:00Z", "end": "2026-11-28T00:00:00Z"}
FIRST_SEQ = int(START.timestamp() * 1000) // INTERVAL_MS


def test_root_and_health(api_client: TestClient) -> None:
    assert api_client.get("/").json()["docs"] == "/docs"
    response = api_client.get("/health")
    assert response.status_code == 200
    body = response.json()
    components = body["components"]
    assert components["lake"]["status"] == "ok"
    assert components["kafka"]["status"] == "ok"
    assert components["live_state"]["status"] in ("ok", "degraded")  # the worker has exited
    last = components["assets"]["info"]["last_materialization"]
    assert last["clean_traffic"]["partition"] == DAY.isoformat()
    assert body["status"] in ("ok", "degraded")


def test_health_is_503_when_the_lake_cannot_be_read(api_lake: ApiLake) -> None:
    broken = api_lake.settings.model_copy(update={"s3_endpoint": "http://127.0.0.1:9"})
    with TestClient(create_app(broken)) as client:
        response = client.get("/health")
        assert response.status_code == 503
        assert response.json()["status"] == "down"
        assert client.get("/api/v1/sensors/latest").status_code == 503


def test_sensors_filters_and_pages(api_client: TestClient) -> None:
    body = api_client.get("/api/v1/sensors").json()
    assert body["total"] == 210 and len(body["items"]) == 100
    weather = api_client.get("/api/v1/sensors", params={"sensor_type": "weather"}).json()
    assert weather["total"] == 10
    assert {s["sensor_type"] for s in weather["items"]} == {"weather"}
    district = body["items"][0]["district"]
    in_district = api_client.get("/api/v1/sensors", params={"district": district}).json()
    assert {s["district"] for s in in_district["items"]} == {district}
    ids = [
        s["sensor_id"]
        for offset in range(0, 210, 64)
        for s in api_client.get("/api/v1/sensors", params={"offset": offset, "limit": 64}).json()[
            "items"
        ]
    ]
    assert len(ids) == len(set(ids)) == 210


def test_latest_is_each_sensors_newest_reading(api_client: TestClient, api_lake: ApiLake) -> None:
    body = api_client.get("/api/v1/sensors/latest").json()
    assert body["count"] == 210
    newest: dict[str, int] = defaultdict(int)
    for sensor_id, seq in api_lake.produced.readings:
        newest[sensor_id] = max(newest[sensor_id], seq)
    assert {item["sensor_id"]: item["seq"] for item in body["items"]} == newest
    energy = api_client.get(
        "/api/v1/sensors/latest", params={"sensor_type": "energy", "limit": 5}
    ).json()
    assert energy["count"] == 5 and all(i["power_kw"] is not None for i in energy["items"])
    district = body["items"][0]["district"]
    local = api_client.get("/api/v1/sensors/latest", params={"district": district}).json()
    assert local["count"] >= 1 and {i["district"] for i in local["items"]} == {district}


def test_sensor_detail(api_client: TestClient, api_lake: ApiLake) -> None:
    body = api_client.get(f"/api/v1/sensors/{SENSOR}").json()
    assert body["sensor"]["sensor_type"] == "traffic"
    assert body["latest"]["sensor_id"] == SENSOR
    assert body["record_count"] == len(expected_seqs(api_lake, SENSOR))
    assert api_client.get("/api/v1/sensors/ENERGY_9999").status_code == 404


def _scanned_counts(api_lake: ApiLake, sensor_type: str) -> dict[str, int]:
    """Each sensor's readings counted from whole tables: its clean rows, plus the distinct
    landed `seq`s above its frontier (the clean table's highest `seq` of the sensor)."""
    clean = api_lake.lake.read_parquet(table_partition_key(f"clean_{sensor_type}", DAY))
    frontiers = {
        row["sensor_id"]: row["seq_max"]
        for row in clean.group_by("sensor_id").aggregate([("seq", "max")]).to_pylist()
    }
    landed = landing_table(api_lake, sensor_type).select(["sensor_id", "seq"]).to_pylist()
    beyond = {
        (row["sensor_id"], row["seq"])
        for row in landed
        if row["seq"] > frontiers.get(row["sensor_id"], -1)
    }
    counts = Counter(clean.column("sensor_id").to_pylist())
    return dict(counts + Counter(sensor for sensor, _ in beyond))


def test_record_counts_equal_a_full_scan(api_client: TestClient, api_lake: ApiLake) -> None:
    """The count comes from a per-partition index and the landing beyond each frontier; it
    must be the number the hour blocks of the whole day hold, and a scan of whole tables."""
    reader = api_client.app.state.reader
    for sensor_type in SENSOR_TYPES:
        scanned = _scanned_counts(api_lake, sensor_type)
        ids = [s for s, row in reader.sensors().items() if row["sensor_type"] == sensor_type]
        assert ids and set(scanned) == set(ids)
        for sensor_id in ids:
            body = api_client.get(f"/api/v1/sensors/{sensor_id}").json()
            assert body["record_count"] == scanned[sensor_id], sensor_id
            assert body["record_count"] == len(expected_seqs(api_lake, sensor_id)), sensor_id
        history = History(reader, sensor_type, ids[0])
        blocks = sum(len(history.block(DAY, hour).items) for hour in range(24))
        assert history.count() == blocks == scanned[ids[0]]


def test_sensor_latest(api_client: TestClient) -> None:
    detail = api_client.get(f"/api/v1/sensors/{SENSOR}").json()
    latest = api_client.get(f"/api/v1/sensors/{SENSOR}/latest")
    assert latest.status_code == 200
    assert latest.json() == detail["latest"]
    unknown = api_client.get("/api/v1/sensors/ENERGY_9999/latest")
    assert unknown.status_code == 404
    assert "ENERGY_9999" in unknown.json()["detail"]


def test_daily_aggregates(api_client: TestClient, api_lake: ApiLake) -> None:
    url = "/api/v1/aggregates/daily"
    day = api_client.get(url, params={"date": DAY.isoformat(), "sensor_type": "traffic"}).json()
    assert day["table"] == "daily_traffic_aggregates" and day["granularity"] == "day"
    assert {row["level"] for row in day["items"]} == {"sensor", "district"}
    one = api_client.get(
        url,
        params={
            "date": DAY.isoformat(),
            "sensor_type": "traffic",
            "sensor_id": SENSOR,
            "granularity": "hour",
        },
    ).json()
    assert [row["sensor_id"] for row in one["items"]] == [SENSOR]
    hour_00 = {seq for seq in expected_seqs(api_lake, SENSOR) if seq < FIRST_SEQ + 360}
    assert one["items"][0]["readings"] == len(hour_00) == 360  # only hour 00 was built
    district = one["items"][0]["district"]
    local = api_client.get(
        url, params={"date": DAY.isoformat(), "sensor_type": "traffic", "district": district}
    ).json()
    assert {row["district"] for row in local["items"]} == {district}
    for params, status, name in [
        ({"date": "2026-11-28", "sensor_type": "traffic"}, 404, "date"),
        ({"date": "2026-11-26", "sensor_type": "weather"}, 404, "date"),
        ({"date": "2026-13-01", "sensor_type": "traffic"}, 422, "date"),
        ({"sensor_type": "traffic"}, 422, "date"),
        ({"date": DAY.isoformat(), "sensor_type": "bikes"}, 422, "sensor_type"),
        (
            {"date": DAY.isoformat(), "sensor_type": "traffic", "granularity": "week"},
            422,
            "granularity",
        ),
        (
            {"date": DAY.isoformat(), "sensor_type": "traffic", "sensor_id": "WEATHER_0001"},
            422,
            "sensor_id",
        ),
    ]:
        response = api_client.get(url, params=params)
        assert response.status_code == status, (params, response.text)
        assert response.json()["detail"].startswith(name), response.json()


def test_anomalies_by_source(api_client: TestClient, api_lake: ApiLake) -> None:
    url = "/api/v1/anomalies"
    every = api_client.get(url, params=RANGE).json()["items"]
    stream = api_client.get(url, params=RANGE | {"source": "stream"}).json()["items"]
    batch = api_client.get(url, params=RANGE | {"source": "batch"}).json()["items"]
    events = api_lake.lake.read_parquet(table_partition_key("anomaly_events", DAY)).to_pylist()
    by_batch = {e["anomaly_id"] for e in events if e["source"] in ("batch", "both")}
    assert by_batch and {a["anomaly_id"] for a in batch} == by_batch
    assert {a["source"] for a in stream} == {"both", "stream"}
    landed_later = {a["anomaly_id"] for a in stream} - {e["anomaly_id"] for e in events}
    assert landed_later, "hour 01 is only landed: its stream anomalies come from the landing"
    assert all(
        a["event_time"] >= "2026-11-27T01:" for a in stream if a["anomaly_id"] in landed_later
    )
    assert len(every) == len(stream) + sum(a["source"] == "batch" for a in batch)
    assert len({a["anomaly_id"] for a in every}) == len(every)
    assert every == sorted(every, key=lambda a: (a["event_time"], a["anomaly_id"]))
    assert all(isinstance(a["values"], dict) for a in every)
    assert all(a["district"] for a in every if a["source"] == "stream")
    first = every[0]
    narrowed = api_client.get(
        url, params=RANGE | {"kind": first["kind"], "sensor_id": first["sensor_id"]}
    ).json()["items"]
    assert narrowed and all(
        (a["kind"], a["sensor_id"]) == (first["kind"], first["sensor_id"]) for a in narrowed
    )
    limited = api_client.get(url, params=RANGE | {"limit": 2}).json()
    assert limited["count"] == 2 and limited["truncated"]
    for params, name in [
        ({"start": RANGE["end"], "end": RANGE["start"]}, "end"),
        (RANGE | {"source": "both"}, "source"),
        (RANGE | {"sensor_id": "../x"}, "sensor_id"),
        ({"start": "2026-11-27"}, "start"),
    ]:
        response = api_client.get(url, params=params)
        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith(name)


def test_quality(api_client: TestClient) -> None:
    body = api_client.get("/api/v1/quality").json()
    built = {f"{layer}_{t}" for layer in ("raw", "clean") for t in SENSOR_TYPES}
    assert {r["asset"] for r in body["items"]} == built
    clean = api_client.get("/api/v1/quality", params={"asset": "clean_traffic"}).json()["items"]
    checks = {c["name"]: c for c in clean[0]["checks"]}
    assert checks["no_loss"]["passed"] and checks["no_loss"]["blocking"]
    assert not checks["freshness"]["passed"], "the date was built an hour into the day"
    other_day = api_client.get("/api/v1/quality", params={"date": "2026-11-26"}).json()
    assert other_day["count"] == 0
    unknown = api_client.get("/api/v1/quality", params={"asset": "nope"})
    assert unknown.status_code == 404 and unknown.json()["detail"].startswith("asset")


def test_kafka_statistics(api_client: TestClient, api_lake: ApiLake) -> None:
    body = api_client.get("/api/v1/statistics/kafka").json()
    assert body["group"] == "smartcity-stream"
    topics = {t["topic"]: t for t in body["topics"]}
    traffic = topics[api_lake.settings.reading_topic("traffic")]
    assert len(traffic["partitions"]) == 3
    assert traffic["end_offset_total"] >= sum(
        1 for sensor, _ in api_lake.produced.readings if sensor.startswith("TRAFFIC")
    )
    assert traffic["lag_total"] == 0  # the worker ran until idle


def test_parquet_statistics(api_client: TestClient, api_lake: ApiLake) -> None:
    body = api_client.get("/api/v1/statistics/parquet").json()
    tables = {t["table"]: t for t in body["tables"]}
    assert tables["landing/traffic"]["rows"] == landing_table(api_lake, "traffic").num_rows
    clean = api_lake.lake.read_parquet(table_partition_key("clean_traffic", DAY))
    assert tables["clean_traffic"]["rows"] == clean.num_rows
    assert tables["clean_traffic"]["partitions"] == 1
    assert all(t["compression_ratio"] > 2 for t in tables.values() if t["rows"] > 1000)
    assert "orjson" in body["method"]


def test_export_parquet_and_csv(api_client: TestClient, api_lake: ApiLake) -> None:
    clean = api_lake.lake.read_parquet(table_partition_key("clean_traffic", DAY))
    url = "/api/v1/export/clean_traffic"
    parquet = api_client.get(url, params={"date": DAY.isoformat()})
    assert parquet.headers["content-type"] == "application/vnd.apache.parquet"
    assert pq.read_table(io.BytesIO(parquet.content)).equals(clean)
    csv = api_client.get(url, params={"date": DAY.isoformat(), "format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    table = pacsv.read_csv(io.BytesIO(csv.content))
    assert table.num_rows == clean.num_rows and table.column_names == clean.column_names
    assert pc.sum(table.column("seq")).as_py() == pc.sum(clean.column("seq")).as_py()
    for path, params, status, name in [
        ("/api/v1/export/raw_secrets", {"date": DAY.isoformat()}, 404, "table"),
        ("/api/v1/export/raw_secrets", {}, 404, "table"),
        ("/api/v1/export/clean_weather", {"date": "2026-11-26"}, 404, "date"),
        (url, {"date": DAY.isoformat(), "format": "xlsx"}, 422, "format"),
        (url, {}, 422, "date"),
    ]:
        response = api_client.get(path, params=params)
        assert response.status_code == status, response.text
        assert response.json()["detail"].startswith(name)
    unknown = api_client.get("/api/v1/export/raw_secrets").json()["detail"]
    assert all(table in unknown for table in ("clean_traffic", "daily_energy_aggregates"))


def test_metrics_count_requests_by_route_template(api_client: TestClient) -> None:
    api_client.get(f"/api/v1/sensors/{SENSOR}")
    api_client.get("/api/v1/sensors/TRAFFIC_9999")
    text = api_client.get("/metrics").text
    assert (
        'smartcity_api_requests_total{method="GET",route="/api/v1/sensors/{sensor_id}",'
        'status="404"}' in text
    )
    assert (
        'smartcity_api_request_seconds_bucket{le="0.005",route="/api/v1/sensors/{sensor_id}"}'
        in text
    )
    assert "TRAFFIC_9999" not in text


def test_cors_origins_are_configurable(api_lake: ApiLake) -> None:
    settings = api_lake.settings.model_copy(update={"api_cors_origins": "https://city.example"})
    with TestClient(create_app(settings)) as client:
        response = client.options(
            "/api/v1/sensors",
            headers={"Origin": "https://city.example", "Access-Control-Request-Method": "GET"},
        )
        assert response.headers["access-control-allow-origin"] == "https://city.example"
        other = client.get("/", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_a_partition_in_several_part_files_reads_as_one(
    api_client: TestClient, api_lake: ApiLake, tmp_path: Path
) -> None:
    """Spark writes a partition as several part files: every route must see them all."""
    settings = api_lake.settings.model_copy(update={"lake_uri": tmp_path.as_uri()})
    split = Lake.from_settings(settings)
    import_registry(split, load_registry(api_lake.lake).table)
    for table in ("clean_traffic", "daily_traffic_aggregates"):
        whole = api_lake.lake.read_parquet(table_partition_key(table, DAY))
        half = whole.num_rows // 2
        folder = table_partition_key(table, DAY).rsplit("/", 1)[0]
        split.write_parquet(f"{folder}/part-0.parquet", whole.slice(0, half))
        split.write_parquet(f"{folder}/part-1.parquet", whole.slice(half))
    day = {"date": DAY.isoformat()}
    hour = {"start": "2026-11-27T00:00:00Z", "end": "2026-11-27T01:00:00Z", "limit": 10_000}
    with TestClient(create_app(settings)) as client:
        for path, params in [
            ("/api/v1/aggregates/daily", day | {"sensor_type": "traffic", "granularity": "hour"}),
            (f"/api/v1/sensors/{SENSOR}/readings", hour),
        ]:
            assert (
                client.get(path, params=params).json() == api_client.get(path, params=params).json()
            )
        exported = client.get("/api/v1/export/clean_traffic", params=day)
        original = api_client.get("/api/v1/export/clean_traffic", params=day)
        assert pq.read_table(io.BytesIO(exported.content)).equals(
            pq.read_table(io.BytesIO(original.content))
        )
        csv = client.get("/api/v1/export/clean_traffic", params=day | {"format": "csv"})
        assert (
            csv.content
            == api_client.get(
                "/api/v1/export/clean_traffic", params=day | {"format": "csv"}
            ).content
        )
