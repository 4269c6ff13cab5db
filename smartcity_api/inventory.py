"""Parquet statistics: partitions, rows and bytes per table from file footers, not data.

Rows come from each file's Parquet footer and bytes from the listing, so the cost is one
small read per file, never a scan. The size the same rows would take as JSON is
estimated from a sample: up to `SAMPLE_ROWS` rows of the newest file of each table are
encoded as JSON Lines with orjson, and the mean bytes per row is scaled to the table's
rows. Parquet's "uncompressed size" would not do: it measures Parquet's own encodings
(dictionaries, bit-packed integers), which are already far smaller than JSON text.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pyarrow.parquet as pq

from smartcity.layout import LANDING, TABLES
from smartcity.settings import SENSOR_TYPES
from smartcity_api.store import LakeReader, StoredFile

SAMPLE_ROWS = 1000
FOOTER_READERS = 8
METHOD = (
    "rows from Parquet footers, bytes from the object listing; JSON size estimated by "
    f"encoding up to {SAMPLE_ROWS} rows of the newest file of each table as JSON Lines with "
    "orjson and scaling to the table's rows"
)


def _rows(reader: LakeReader, file: StoredFile) -> int:
    with reader.lake.filesystem.open_input_file(file.path) as source:
        return pq.ParquetFile(source).metadata.num_rows


def _json_bytes_per_row(reader: LakeReader, file: StoredFile) -> float:
    with reader.lake.filesystem.open_input_file(file.path) as source:
        parquet = pq.ParquetFile(source)
        if parquet.metadata.num_rows == 0:
            return 0.0
        sample = next(parquet.iter_batches(batch_size=SAMPLE_ROWS)).to_pylist()
    encoded = sum(len(orjson.dumps(row, option=orjson.OPT_UTC_Z)) + 1 for row in sample)
    return encoded / len(sample)


def _groups(reader: LakeReader) -> Iterable[tuple[str, list[StoredFile]]]:
    """(table name, its files): the landing per type and anomalies, then every table."""
    for name in (*SENSOR_TYPES, "anomalies"):
        files = reader.files(f"{LANDING}/{name}")
        if files:
            yield f"{LANDING}/{name}", files
    by_table: dict[str, list[StoredFile]] = {}
    for file in reader.files(TABLES):
        by_table.setdefault(file.key.split("/")[1], []).append(file)
    yield from sorted(by_table.items())


def parquet_statistics(reader: LakeReader) -> dict[str, Any]:
    groups = list(_groups(reader))
    every_file = [file for _, files in groups for file in files]
    with ThreadPoolExecutor(FOOTER_READERS) as pool:
        rows = dict(zip(every_file, pool.map(lambda f: _rows(reader, f), every_file), strict=True))
    tables = []
    for name, files in groups:
        total_rows = sum(rows[f] for f in files)
        total_bytes = sum(f.size for f in files)
        newest = max(files, key=lambda f: f.key)
        json_bytes = round(_json_bytes_per_row(reader, newest) * total_rows)
        tables.append(
            {
                "table": name,
                "partitions": len({f.key.rsplit("/date=", 1)[-1].split("/")[0] for f in files}),
                "files": len(files),
                "rows": total_rows,
                "bytes": total_bytes,
                "json_bytes_estimate": json_bytes,
                "compression_ratio": round(json_bytes / total_bytes, 2) if total_bytes else None,
            }
        )
    return {"method": METHOD, "tables": tables}
