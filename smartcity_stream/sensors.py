"""The sensors the worker accepts: the registry table from the lake, else the default city.

The simulator publishes its registry to the lake (`tables/sensor_registry/`) when it starts,
so a city simulated with other counts is known to the worker without configuration.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from simulator.registry import registry_table
from smartcity.lake import Lake
from smartcity.layout import registry_key


def registry_from_lake(lake: Lake) -> pa.Table:
    key = registry_key()
    return lake.read_parquet(key) if lake.exists(key) else registry_table()


def sensors_by_id(table: pa.Table) -> dict[str, dict[str, Any]]:
    """sensor_id -> its registry row (capacity, nominal voltage, district...)."""
    return {row["sensor_id"]: row for row in table.to_pylist()}
