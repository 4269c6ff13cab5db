"""What every partitioned asset does around its own logic: dates of the run, metadata."""

from __future__ import annotations

from typing import Any

import dagster as dg

from smartcity_dagster.tables import TableWrite


def run_dates(context: dg.AssetExecutionContext) -> list[str]:
    """The date partitions of this run: one, or a whole range in a single-run backfill."""
    return list(context.partition_keys)


def table_metadata(writes: dict[str, TableWrite], **extra: Any) -> dict[str, Any]:
    """Rows, bytes, compression ratio and a preview of the partitions written."""
    rows = sum(w.rows for w in writes.values())
    size = sum(w.bytes for w in writes.values())
    raw_size = sum(w.uncompressed_bytes for w in writes.values())
    last = writes[max(writes)] if writes else None
    metadata: dict[str, Any] = {
        "dagster/row_count": rows,
        "bytes": dg.MetadataValue.int(size),
        "compression_ratio": round(raw_size / size, 2) if size else 0.0,
        "partitions_written": sorted(writes),
        "paths": [w.key for w in writes.values()],
        **extra,
    }
    if last and last.preview:
        metadata["preview"] = dg.MetadataValue.md(_markdown(last.preview))
    return metadata


def _markdown(rows: list[dict[str, Any]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[c]) for c in header) + " |" for row in rows]
    return "\n".join(lines)
