"""Where things live in the lake: every key is built here and nowhere else.

Writers (the stream worker, the assets) and readers (the sensor, the API) import these
functions, so the layout of the architecture page is written down exactly once.
"""

from __future__ import annotations

import re
from datetime import date

LANDING = "landing"
PROGRESS = f"{LANDING}/_progress"
STATE = f"{LANDING}/_state"
LIVE = "live"
TABLES = "tables"
QUALITY = "quality"
REGISTRY = "registry"
_LANDING_NAME = re.compile(r"/p(\d+)-(\d+)-(\d+)\.parquet$")


def landing_dir(sensor_type: str, day: date | str, hour: int | None = None) -> str:
    base = f"{LANDING}/{sensor_type}/date={day}"
    return base if hour is None else f"{base}/hour={hour:02d}"


def landing_key(
    sensor_type: str, day: date | str, hour: int, partition: int, first: int, last: int
) -> str:
    """A landing file's name derives from its Kafka offsets: a replay rewrites the same key."""
    return f"{landing_dir(sensor_type, day, hour)}/p{partition}-{first}-{last}.parquet"


def landing_offsets(key: str) -> tuple[int, int, int] | None:
    """The Kafka partition, first and last offset a `landing_key` was named by, else None."""
    found = _LANDING_NAME.search(key)
    return None if found is None else (int(found[1]), int(found[2]), int(found[3]))


def anomaly_landing_key(
    sensor_type: str, day: date | str, hour: int, partition: int, first: int, last: int
) -> str:
    """The stream's anomalies of one segment, named by the readings' source offsets."""
    name = f"{sensor_type}-p{partition}-{first}-{last}.parquet"
    return f"{LANDING}/anomalies/date={day}/hour={hour:02d}/{name}"


def progress_key(topic: str, partition: int) -> str:
    return f"{PROGRESS}/{topic}/p{partition}.json"


def checkpoint_dir(topic: str, partition: int) -> str:
    """The stream's detection checkpoints of one topic-partition."""
    return f"{STATE}/{topic}/p{partition}"


def checkpoint_key(topic: str, partition: int, offset: int) -> str:
    """Detection state after every message before `offset`, named by it: zstd-compressed
    JSON, its suffix `.zstd`, since Arrow's streams would undo a `.zst` on every read."""
    return f"{checkpoint_dir(topic, partition)}/o{offset}.json.zstd"


def live_key(worker_id: str, name: str) -> str:
    return f"{LIVE}/{worker_id}/{name}"


def table_dir(asset: str) -> str:
    return f"{TABLES}/{asset}"


def table_partition_key(asset: str, day: date | str) -> str:
    """A date partition of an asset's table: one file, replaced whole on a re-run."""
    return f"{table_dir(asset)}/date={day}/part-0.parquet"


def staging_dir(asset: str, day: date | str, token: str) -> str:
    """Where one run writes a partition's new version (Spark's parts, then the one file)
    before its checks decide whether it is published; outside every `date=` folder, so
    readers of the table never list it as a partition."""
    return f"{table_dir(asset)}/_staging/{day}-{token}"


def staged_key(asset: str, day: date | str, token: str) -> str:
    """The staged version of a partition: the file the checks read, then publish moves."""
    return f"{staging_dir(asset, day, token)}/part-0.parquet"


def registry_key() -> str:
    """The published `sensor_registry` table (the Dagster asset's output)."""
    return f"{table_dir('sensor_registry')}/sensor_registry.parquet"


def registry_version_key(version: int) -> str:
    """One imported registry version: written once, never changed."""
    return f"{REGISTRY}/versions/v{version:06d}.parquet"


def registry_current_key() -> str:
    """Which registry version is in force (JSON: version, sensors, digest, imported_at)."""
    return f"{REGISTRY}/current.json"


def quality_key(asset: str, day: date | str) -> str:
    """Check results of one materialized partition (what the API's /quality serves)."""
    return f"{QUALITY}/{asset}/date={day}.json"


def rejected_dir(asset: str, day: date | str, version: str) -> str:
    """A version of a partition that failed a blocking check and was never published (the
    published one stayed), kept for inspection. Its own folder under `quality/_rejected/`:
    the API reads every `.json` under `quality/<asset>/` as a date's check results."""
    return f"{QUALITY}/_rejected/{asset}/date={day}/{version}"


def rejected_key(asset: str, day: date | str, version: str) -> str:
    return f"{rejected_dir(asset, day, version)}/part-0.parquet"


def rejected_checks_key(asset: str, day: date | str, version: str) -> str:
    """The check results that rejected the version beside them."""
    return f"{rejected_dir(asset, day, version)}/checks.json"


def check_failures_key() -> str:
    """Counts of failed asset checks kept by the alert sensor (served as a metric by the API)."""
    return "alerts/check_failures.json"
