"""What the checks of a clean table read of the written file, at the least cost each part
can have.

- Rows, and per column its null count and, for numbers and times, its extremes: from the
  written file's footer, whose statistics the Parquet writer keeps per row group anyway (no
  pass over the data at all). `null_rates` and `freshness` need no more.
- Every row, for Pandera (`contract_schema`): the file streamed in batches of Arrow record
  batches into pandas frames that stay in Arrow memory, in the Dagster step's process, each
  row with the key of the row before it in (sensor_id, seq) order. `clean` writes a
  sensor's rows together and in `seq` order, so that row is the one before in the file
  (across a batch boundary, the last row of the batch before); a file in any other order
  is found out from its key columns alone, which are then sorted alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from smartcity.lake import Lake
from smartcity_dagster.tables import TableWrite

BATCH_ROWS = 1 << 20
KEY = ("sensor_id", "seq")
METER = "energy_kwh"
PREVIOUS = "previous_"

Before = Callable[[pa.Table, int], pa.Table]
"""The key columns of the rows before a batch's rows (its key columns, its first row's
position in the file), in (sensor_id, seq) order; nulls before the first row."""


def key_columns(sensor_type: str) -> list[str]:
    """What the checks across rows compare with the row before: the key, and the meter."""
    return [*KEY, *([METER] if sensor_type == "energy" else [])]


def row_batches(
    write: TableWrite, lake: Lake, sensor_type: str, batch_rows: int = BATCH_ROWS
) -> Iterator[pd.DataFrame]:
    """The written file's rows, `batch_rows` at a time, indexed by their position in the
    file, each with the key columns of the row before it (`PREVIOUS` + name), so a batch
    is judged alone and a repeated key or a falling meter across a boundary still shows.

    `pd.ArrowDtype` columns keep the Arrow buffers: no Python object per string, and
    Pandera's checks run on Arrow's kernels."""
    keys = key_columns(sensor_type)
    with lake.filesystem.open_input_file(lake.path(write.key)) as source:
        order = _key_order(source)
        before = (
            _after_last_row(keys, write.schema) if order is None else _by_key(source, keys, order)
        )
        parquet, start = pq.ParquetFile(source), 0
        for batch in parquet.iter_batches(batch_size=batch_rows):
            table = pa.Table.from_batches([batch])
            previous = before(table.select(keys), start)
            for name in keys:
                table = table.append_column(PREVIOUS + name, previous.column(name))
            frame = table.to_pandas(types_mapper=pd.ArrowDtype)
            frame.index = pd.RangeIndex(start, start + table.num_rows)
            start += table.num_rows
            yield frame


def _key_order(source: Any) -> np.ndarray | None:
    """None if the file is in (sensor_id, seq) order, else its row positions in that order.
    Sensors compare by the rank of their id in the dictionary the writer keeps, so no
    string is compared per row."""
    table = pq.ParquetFile(source, read_dictionary=["sensor_id"]).read(columns=list(KEY))
    ids = table.column("sensor_id").unify_dictionaries().combine_chunks()
    sensor = np.asarray(pc.rank(ids.dictionary), dtype=np.int32)[np.asarray(ids.indices)]
    seq = table.column("seq").to_numpy()
    same = sensor[1:] == sensor[:-1]
    ordered = (sensor[1:] > sensor[:-1]) | (same & (seq[1:] >= seq[:-1]))
    return None if ordered.all() else np.lexsort((seq, sensor))


def _after_last_row(keys: list[str], schema: pa.Schema) -> Before:
    """For a file in key order: the batch shifted by one row, after the last row of the
    batch before (the only state kept from batch to batch)."""
    last = pa.table({name: pa.nulls(1, schema.field(name).type) for name in keys})

    def before(batch: pa.Table, start: int) -> pa.Table:
        nonlocal last
        shifted = pa.concat_tables(
            [last, batch.slice(0, batch.num_rows - 1)], promote_options="default"
        )
        last = batch.slice(batch.num_rows - 1)
        return shifted

    return before


def _by_key(source: Any, keys: list[str], order: np.ndarray) -> Before:
    """For a file in another order: each row's predecessor among the key columns, read
    whole and sorted (by `order`), not the whole table."""
    table = pq.ParquetFile(source).read(columns=keys)
    previous = np.full(table.num_rows, -1, dtype=np.int64)
    previous[order[1:]] = order[:-1]

    def before(batch: pa.Table, start: int) -> pa.Table:
        positions = previous[start : start + batch.num_rows]
        return table.take(pa.array(positions, mask=positions < 0))

    return before


def table_profile(write: TableWrite) -> dict[str, Any]:
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


def _strings(write: TableWrite) -> set[str]:
    return {
        field.name
        for field in write.schema
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
    }
