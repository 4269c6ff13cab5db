"""What the checks of a clean table need, at the least cost each part can have.

- Rows, and per column its null count and, for numbers and times, its extremes: from the
  written file's footer, whose statistics the Parquet writer keeps per row group anyway (no
  pass over the data at all).
- Per string column its distinct values (bounded: sensors, districts, enums): from the
  written file's string columns only, which the writer dictionary-encodes (tens of KB for a
  day's 8.6 M rows), so reading them costs less than starting a Spark job would.
- Per sensor, in `seq` order (the reading order the contract defines), the rows that repeat
  the previous key and the meter readings below the previous one, counted with one sample
  each: observed while the table is written, over a window that adds no exchange and no sort
  (in `clean` the frame is partitioned by sensor and sorted by sensor and `seq` already),
  with two aggregates instead of one per column.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, Observation, Window
from pyspark.sql import functions as F

from smartcity.lake import Lake
from smartcity_dagster.tables import TableWrite

FALL_TOLERANCE_KWH = 1e-9
PREVIOUS = "_previous_{}"


def _previous(name: str) -> Column:
    return F.col(PREVIOUS.format(name))


def _sequence_stats(broken: Column, alias: str) -> list[Column]:
    sample = F.struct("sensor_id", "seq", "event_time")
    return [
        F.count_if(broken).alias(alias),
        F.min(F.when(broken, sample)).alias(f"sample:{alias}"),
    ]


def _lagged(sensor_type: str) -> list[str]:
    return ["seq"] + (["energy_kwh"] if sensor_type == "energy" else [])


def previous_columns(sensor_type: str) -> list[str]:
    """The columns `with_previous` adds."""
    return [PREVIOUS.format(name) for name in _lagged(sensor_type)]


def with_previous(frame: DataFrame, sensor_type: str, sensor: list[str]) -> DataFrame:
    """`frame` with each row's previous key (and meter reading) of its sensor in `seq` order;
    `sensor` are the columns that tell sensors apart."""
    previous = Window.partitionBy(*sensor).orderBy("seq")
    return frame.select(
        "*",
        *[F.lag(name).over(previous).alias(PREVIOUS.format(name)) for name in _lagged(sensor_type)],
    )


def observe_sequences(flagged: DataFrame, sensor_type: str) -> tuple[DataFrame, Observation]:
    """`flagged` (see `with_previous`) without the added columns, and the observation of
    repeated keys and falling meters that its write fills."""
    sequence = _sequence_stats(_previous("seq") == F.col("seq"), "duplicate_keys")
    if sensor_type == "energy":
        fell = _previous("energy_kwh") - F.col("energy_kwh") > FALL_TOLERANCE_KWH
        sequence += _sequence_stats(fell, "meter_falls")
    observation = Observation("sequences")
    return flagged.observe(observation, *sequence).drop(*previous_columns(sensor_type)), observation


def footer_stats(write: TableWrite) -> dict[str, Any]:
    """Rows, and per column nulls, and extremes of every column that is not a string, from
    the statistics of each row group in the footer."""
    footer, strings = write.footer, _strings(write)
    stats: dict[str, Any] = {"rows": footer.num_rows}
    for index in range(footer.num_columns):
        name = footer.schema.column(index).path
        chunks = [footer.row_group(g).column(index) for g in range(footer.num_row_groups)]
        if any(chunk.statistics is None for chunk in chunks):
            raise RuntimeError(f"{write.key}: the writer kept no statistics for {name}")
        stats[f"nulls:{name}"] = sum(chunk.statistics.null_count for chunk in chunks)
        if name in strings:
            continue
        bounded = [chunk.statistics for chunk in chunks if chunk.statistics.has_min_max]
        stats[f"min:{name}"] = min((s.min for s in bounded), default=None)
        stats[f"max:{name}"] = max((s.max for s in bounded), default=None)
    return stats


def distinct_strings(write: TableWrite, lake: Lake) -> dict[str, list[str]]:
    """Each string column's distinct values, from the written file's dictionary-encoded
    string columns, one row group at a time."""
    strings = sorted(_strings(write))
    values: dict[str, set[str]] = {name: set() for name in strings}
    if strings:
        with lake.filesystem.open_input_file(lake.path(write.key)) as source:
            parquet = pq.ParquetFile(source, read_dictionary=strings)
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group, columns=strings)
                for name in strings:
                    values[name].update(table.column(name).unique().to_pylist())
    return {f"values:{name}": sorted(found - {None}) for name, found in values.items()}


def table_profile(write: TableWrite, lake: Lake, sequences: Observation) -> dict[str, Any]:
    """The profile the checks read: `write` is the written file, `sequences` the
    observation its write filled."""
    return {**footer_stats(write), **distinct_strings(write, lake), **sequences.get}


def _strings(write: TableWrite) -> set[str]:
    return {
        field.name
        for field in write.schema
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
    }
