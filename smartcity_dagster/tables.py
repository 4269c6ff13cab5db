"""Asset tables in the lake: one Parquet file per date partition, replaced whole.

Spark writes a partition into a staging folder in parallel (one part file per task, no
`coalesce(1)` that would squeeze the whole computation into one task), the parts are
concatenated row group by row group into one file, and that file is moved to
`tables/<asset>/date=D/part-0.parquet`: readers (the API, DuckDB, the next asset) always see
a complete file at a fixed key, and a re-run replaces it instead of adding. Files that are
already Parquet of the table's schema (a day's large landing files) are published the same
way without Spark writing them first (`copy_partition`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import DataFrame

from smartcity.lake import Lake
from smartcity.layout import table_dir, table_partition_key
from smartcity_dagster.concat import concatenate
from smartcity_dagster.spark import spark_url


@dataclass(frozen=True)
class TableWrite:
    """What one partition write produced, for the materialization's metadata."""

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


def write_partition(frame: DataFrame, lake: Lake, asset: str, day: str) -> TableWrite:
    staging = f"{table_dir(asset)}/_staging/{day}-{uuid.uuid4().hex[:8]}"
    frame.write.mode("overwrite").parquet(spark_url(lake, f"{staging}/parts"))
    parts = sorted(
        info.path.removeprefix(lake.root + "/")
        for info in lake.list_files(f"{staging}/parts")
        if info.path.endswith(".parquet")
    )
    if not parts:
        raise RuntimeError(f"Spark wrote no Parquet file into {staging}")
    return _publish(frame.sparkSession, lake, parts, staging, asset, day)


def copy_partition(spark: Any, lake: Lake, sources: list[str], asset: str, day: str) -> TableWrite:
    """The row groups of the Parquet files `sources` (lake keys, one schema), in order, as
    the partition: their compressed pages are copied, nothing is decoded or encoded."""
    staging = f"{table_dir(asset)}/_staging/{day}-{uuid.uuid4().hex[:8]}"
    return _publish(spark, lake, sources, staging, asset, day)


def _publish(
    spark: Any, lake: Lake, parts: list[str], staging: str, asset: str, day: str
) -> TableWrite:
    single = f"{staging}/single.parquet"
    concatenate(spark, [spark_url(lake, part) for part in parts], spark_url(lake, single))
    key = table_partition_key(asset, day)
    target = lake.path(key)
    lake.filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
    lake.filesystem.move(lake.path(single), target)
    if lake.filesystem.get_file_info(lake.path(staging)).type != pafs.FileType.NotFound:
        lake.filesystem.delete_dir(lake.path(staging))
    return describe(lake, key)


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
