"""Asset tables in the lake: one Parquet file per date partition, written, then published.

Spark writes a partition's new version into a staging folder in parallel (one part file
per task, no `coalesce(1)` that would squeeze the whole computation into one task), and the
parts are concatenated row group by row group into one staged file. Nothing reads it there
but the checks: only `publish_partition` moves it to `tables/<asset>/date=D/part-0.parquet`,
one rename on a local folder and one object copy on S3, so readers (the API, DuckDB, the
next asset) see the old file or the new one at a fixed key, never a mix or nothing. A version
that fails a blocking check is moved aside instead (`set_aside`) and the published one
stays. Files that are already Parquet of the table's schema (a day's large landing files)
are staged the same way without Spark writing them first (`copy_partition`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import DataFrame

from smartcity.lake import Lake
from smartcity.layout import staged_key, staging_dir, table_partition_key
from smartcity_dagster.concat import concatenate
from smartcity_dagster.spark import spark_url


@dataclass(frozen=True)
class TableWrite:
    """What one partition write produced, for the checks and the materialization's metadata;
    `key` is where the file is now (staged, published or set aside)."""

    key: str
    rows: int
    bytes: int
    uncompressed_bytes: int
    preview: list[dict[str, Any]]
    schema: pa.Schema
    footer: pq.FileMetaData

    @property
    def compression_ratio(self) -> float:
        return self.uncompressed_bytes / self.bytes if self.bytes else 0.0


def _token() -> str:
    return uuid.uuid4().hex[:8]


def write_partition(frame: DataFrame, lake: Lake, asset: str, day: str) -> TableWrite:
    """A new version of the partition, staged (see `publish_partition`)."""
    token = _token()
    parts_dir = f"{staging_dir(asset, day, token)}/parts"
    frame.write.mode("overwrite").parquet(spark_url(lake, parts_dir))
    parts = sorted(
        info.path.removeprefix(lake.root + "/")
        for info in lake.list_files(parts_dir)
        if info.path.endswith(".parquet")
    )
    if not parts:
        raise RuntimeError(f"Spark wrote no Parquet file into {parts_dir}")
    staged = _concatenate(frame.sparkSession, lake, parts, staged_key(asset, day, token))
    lake.filesystem.delete_dir(lake.path(parts_dir))
    return staged


def copy_partition(spark: Any, lake: Lake, sources: list[str], asset: str, day: str) -> TableWrite:
    """The row groups of the Parquet files `sources` (lake keys, one schema), in order, as
    the partition's staged version: their compressed pages are copied, nothing is decoded
    or encoded."""
    return _concatenate(spark, lake, sources, staged_key(asset, day, _token()))


def stage_table(lake: Lake, table: pa.Table, asset: str, day: str) -> TableWrite:
    """A partition computed in the driver (a small table), staged like Spark's."""
    key = staged_key(asset, day, _token())
    lake.write_parquet(key, table)
    return describe(lake, key)


def _concatenate(spark: Any, lake: Lake, parts: list[str], key: str) -> TableWrite:
    concatenate(spark, [spark_url(lake, part) for part in parts], spark_url(lake, key))
    return describe(lake, key)


def publish_partition(lake: Lake, staged: TableWrite, asset: str, day: str) -> TableWrite:
    """Replace the published partition by the staged version: one move per partition key."""
    return _move(lake, staged, table_partition_key(asset, day))


def set_aside(lake: Lake, staged: TableWrite, key: str) -> TableWrite:
    """Keep a staged version that must not be published at `key`, out of the tables."""
    return _move(lake, staged, key)


def _move(lake: Lake, staged: TableWrite, key: str) -> TableWrite:
    target = lake.path(key)
    lake.filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
    lake.filesystem.move(lake.path(staged.key), target)
    folder = lake.path(staged.key.rsplit("/", 1)[0])
    if lake.filesystem.get_file_info(folder).type != pafs.FileType.NotFound:
        lake.filesystem.delete_dir(folder)
    return replace(staged, key=key)


def describe(lake: Lake, key: str) -> TableWrite:
    """Rows, sizes, the footer (its statistics serve the checks) and a five-row preview,
    from the footer and the first batch only."""
    with lake.filesystem.open_input_file(lake.path(key)) as source:
        parquet = pq.ParquetFile(source)
        meta = parquet.metadata
        uncompressed = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        first = next(parquet.iter_batches(batch_size=5), None)
        preview = first.to_pylist() if first is not None else []
        size = source.size()
    return TableWrite(key, meta.num_rows, size, uncompressed, preview, parquet.schema_arrow, meta)


def read_partition(spark: Any, lake: Lake, asset: str, day: str) -> DataFrame:
    return spark.read.parquet(spark_url(lake, table_partition_key(asset, day)))
