"""The lake on the real S3 server and on a local folder, through the same code path."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smartcity.lake import Lake
from smartcity.settings import Settings

TABLE = pa.table(
    {
        "sensor_id": [f"TRAFFIC_{i:04d}" for i in range(1000)],
        "seq": pa.array(range(1000), pa.int64()),
        "average_speed_kmh": [None if i % 7 == 0 else 40.5 + i % 30 for i in range(1000)],
    }
)


def _roundtrip(lake: Lake) -> None:
    key = "landing/traffic/date=2026-11-27/hour=08/p0-0-999.parquet"
    size = lake.write_parquet(key, TABLE)
    assert size > 0
    assert lake.exists(key)
    assert lake.read_parquet(key).equals(TABLE)
    metadata = pq.read_metadata(lake.path(key), filesystem=lake.filesystem)
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    lake.write_parquet(key, TABLE)
    assert [info.path for info in lake.list_files("landing/traffic")] == [lake.path(key)]


@pytest.mark.integration
def test_parquet_roundtrip_on_the_s3_server(live_settings: Settings) -> None:
    own = live_settings.model_copy(update={"lake_uri": f"{live_settings.lake_uri}-roundtrip"})
    lake = Lake.from_settings(own)
    assert lake.bucket == live_settings.lake_uri.removeprefix("s3://").split("/")[0]
    _roundtrip(lake)


def test_parquet_roundtrip_on_a_local_folder(tmp_path: Path) -> None:
    lake = Lake.from_settings(Settings(_env_file=None, lake_uri=(tmp_path / "lake").as_uri()))
    lake.ensure_root()
    _roundtrip(lake)
