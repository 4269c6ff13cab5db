"""The API over a real socket, served by `smartcity api` (uvicorn), with an API key set."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pyarrow.csv as pacsv
import pytest

from smartcity.layout import table_partition_key
from tests.api_support import DAY, SENSOR, ApiLake, serve_api
from tests.stream_support import worker_env

pytestmark = pytest.mark.integration
KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def server(api_lake: ApiLake) -> Iterator[str]:
    with serve_api(worker_env(api_lake.settings) | {"SMARTCITY_API_KEY": KEY}) as served:
        yield served.base


def test_api_key_guards_api_v1_only(server: str) -> None:
    url = f"{server}/api/v1/sensors/{SENSOR}"
    missing = httpx.get(url)
    assert missing.status_code == 401
    assert missing.json()["detail"].startswith("X-API-Key")
    assert httpx.get(url, headers={"X-API-Key": KEY[:-1] + "x"}).status_code == 401
    good = httpx.get(url, headers={"X-API-Key": KEY})
    assert good.status_code == 200 and good.json()["sensor"]["sensor_id"] == SENSOR
    for open_path in ("/", "/health", "/docs", "/openapi.json", "/metrics"):
        assert httpx.get(f"{server}{open_path}").status_code == 200, open_path


def test_readings_over_the_socket(server: str) -> None:
    response = httpx.get(
        f"{server}/api/v1/sensors/{SENSOR}/readings",
        params={"start": "2026-11-27T00:55:00Z", "end": "2026-11-27T01:05:00Z"},
        headers={"X-API-Key": KEY},
    )
    assert response.status_code == 200
    items = response.json()["items"]
    # across the frontier: the last minutes of the clean hour, the first of the landed one
    assert len(items) == 60
    assert items[0]["event_time"] == "2026-11-27T00:55:00Z"


def test_keep_alive_and_a_streamed_export_over_one_connection(
    server: str, api_lake: ApiLake
) -> None:
    """Each response leaves in one write per loop turn (`smartcity_api.transport`)."""
    with httpx.Client(base_url=server, headers={"X-API-Key": KEY}) as client:
        answers = [client.get("/") for _ in range(20)]
        export = client.get(
            "/api/v1/export/clean_traffic", params={"date": "2026-11-27", "format": "csv"}
        )
        after = client.get(f"/api/v1/sensors/{SENSOR}")
    assert {answer.json()["name"] for answer in answers} == {"smartcity API"}
    assert export.status_code == 200, export.text
    exported = pacsv.read_csv(io.BytesIO(export.content))
    clean = api_lake.lake.read_parquet(table_partition_key("clean_traffic", DAY))
    assert exported.num_rows == clean.num_rows and exported.column_names == clean.column_names
    assert after.status_code == 200 and after.json()["sensor"]["sensor_id"] == SENSOR
