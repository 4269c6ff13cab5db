"""The registry's contract: one JSON Schema per sensor row, and the Arrow schema of the table.

The JSON Schema file beside the reading contract (`smartcity/contracts/`) is the source of
truth; a row is judged by it, and the table's columns follow its properties. Rules that span
rows (an id appears once) cannot be said in JSON Schema and are checked here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
import orjson
import pyarrow as pa

from smartcity.contract import is_rfc3339_utc

DEFAULT_ACTIVE = True
MAX_PROBLEMS_SHOWN = 20

REGISTRY_SCHEMA = pa.schema(
    [
        pa.field("sensor_id", pa.string(), nullable=False),
        pa.field("sensor_type", pa.string(), nullable=False),
        pa.field("district", pa.string(), nullable=False),
        pa.field("latitude", pa.float64(), nullable=False),
        pa.field("longitude", pa.float64(), nullable=False),
        pa.field("interval_s", pa.float64(), nullable=False),
        pa.field("installed_at", pa.timestamp("ms", tz="UTC")),
        pa.field("active", pa.bool_(), nullable=False),
        pa.field("road_class", pa.string()),
        pa.field("lanes", pa.int32()),
        pa.field("speed_limit_kmh", pa.int32()),
        pa.field("capacity_vph", pa.int32()),
        pa.field("elevation_m", pa.float64()),
        pa.field("load_profile", pa.string()),
        pa.field("feeder_capacity_kw", pa.float64()),
        pa.field("nominal_voltage_v", pa.float64()),
    ]
)
"""The `sensor_registry` table: one row per sensor, type-specific columns null elsewhere."""
_FIELDS = ", ".join(REGISTRY_SCHEMA.names)


class RegistryError(ValueError):
    """A registry that cannot be taken; `problems` names each row and field at fault."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        lines = [*shown, *([f"... and {more} more"] if more else [])]
        super().__init__("; ".join(lines))


@cache
def registry_row_schema() -> dict[str, Any]:
    text = resources.files("smartcity.contracts").joinpath("sensor-registry.schema.json")
    return orjson.loads(text.read_bytes())


@cache
def _row_validator() -> Any:
    return fastjsonschema.compile(registry_row_schema(), formats={"date-time": is_rfc3339_utc})


def field_types(name: str) -> list[str]:
    """The JSON types a property may take (`number`, `null`...), as the schema lists them."""
    spec = registry_row_schema()["properties"][name]
    if "type" in spec:
        return spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    return ["string"]


def row_problem(row: Mapping[str, Any]) -> str | None:
    """What is wrong with one row (the field and the rule), or None if the contract holds."""
    try:
        _row_validator()(dict(row))
    except fastjsonschema.JsonSchemaValueException as error:
        schema = registry_row_schema()
        if error.rule == "required":
            missing = [name for name in schema["required"] if name not in row]
            return f"{', '.join(missing)}: required"
        if error.rule == "additionalProperties":
            unknown = sorted(set(row) - set(schema["properties"]))
            return f"{', '.join(unknown)}: not a registry field (the fields: {_FIELDS})"
        field = error.name.removeprefix("data").lstrip(".") or "row"
        message = error.message.removeprefix(error.name).strip()
        return f"{field}: {message} (got {error.value!r})"
    return None


def validated_table(rows: Iterable[tuple[str, Mapping[str, Any]]]) -> pa.Table:
    """The registry table of `rows` (each with the label an error names it by, such as
    `row 3`), or `RegistryError` listing every row that breaks the contract and every
    repeated id. Nothing is returned unless every row is valid."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    columns: dict[str, list[Any]] = {field.name: [] for field in REGISTRY_SCHEMA}
    for label, row in rows:
        problem = row_problem(row)
        if problem is not None:
            problems.append(f"{label}, {problem}")
            continue
        sensor_id = row["sensor_id"]
        if sensor_id in seen:
            problems.append(f"{label}, sensor_id: {sensor_id} repeats {seen[sensor_id]}")
            continue
        seen[sensor_id] = label
        for name, column in columns.items():
            column.append(_column_value(name, row.get(name)))
    if problems:
        raise RegistryError(problems)
    if not seen:
        raise RegistryError(["the registry has no sensors"])
    return pa.table(columns, schema=REGISTRY_SCHEMA).sort_by("sensor_id")


def _column_value(name: str, value: Any) -> Any:
    if name == "active":
        return DEFAULT_ACTIVE if value is None else value
    if name == "installed_at" and value is not None:
        return datetime.fromisoformat(value.removesuffix("Z") + "+00:00").astimezone(UTC)
    return value


def table_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The table's rows as the contract writes them (times as RFC 3339 `Z` strings)."""
    rows = table.to_pylist()
    for row in rows:
        installed = row.get("installed_at")
        if isinstance(installed, datetime):
            row["installed_at"] = installed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return rows
