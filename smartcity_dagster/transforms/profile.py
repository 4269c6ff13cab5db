"""What the checks of a clean table read of the written file's footer: rows, and per
column its null count and, for numbers and times, its extremes, from the statistics the
Parquet writer keeps per row group anyway (no pass over the data at all). `null_rates` and
`freshness` need no more; the driver reads the footer alone.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from smartcity_dagster.tables import TableWrite


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
