"""The tables the API knows by name: the Dagster assets of the architecture page.

The names are fixed by the architecture; they are spelled here from the sensor types so
that export, quality and statistics agree on one list.
"""

from __future__ import annotations

from smartcity.settings import SENSOR_TYPES


def clean_table(sensor_type: str) -> str:
    return f"clean_{sensor_type}"


def aggregates_table(sensor_type: str) -> str:
    return f"daily_{sensor_type}_aggregates"


ANOMALY_EVENTS = "anomaly_events"
EXPORTABLE: tuple[str, ...] = tuple(
    name for t in SENSOR_TYPES for name in (clean_table(t), aggregates_table(t))
)
"""What `/export/{table}` serves: a date partition of a clean or aggregate table."""

ASSETS: tuple[str, ...] = (
    *(f"raw_{t}" for t in SENSOR_TYPES),
    *(clean_table(t) for t in SENSOR_TYPES),
    *(aggregates_table(t) for t in SENSOR_TYPES),
    "anomaly_summary",
    "sensor_registry",
)
"""The software-defined assets whose check results `quality/` holds."""
