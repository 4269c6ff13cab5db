"""The wire contract: one JSON Schema for a sensor reading, compiled once.

The schema file in this package is the contract of `shared/contracts/`; a test keeps the
two byte-identical so there is never a second, drifting copy.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
import orjson

SCHEMA_VERSION = 1


@cache
def reading_schema() -> dict[str, Any]:
    text = resources.files("smartcity.contracts").joinpath("sensor-reading.schema.json")
    return orjson.loads(text.read_bytes())


@cache
def _compiled_validator() -> Any:
    return fastjsonschema.compile(reading_schema(), formats={"date-time": _is_rfc3339_utc})


def _is_rfc3339_utc(value: str) -> bool:
    """RFC 3339 in UTC with a `Z`, as the contract asks (e.g. 2026-11-27T08:15:00.000Z)."""
    from datetime import datetime

    if not value.endswith("Z") or "T" not in value:
        return False
    try:
        datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        return False
    return True


class ContractError(ValueError):
    """A reading breaks the contract; the message says which rule."""


def validate_reading(reading: Any) -> None:
    """Raise `ContractError` unless `reading` (decoded JSON) satisfies the contract."""
    try:
        _compiled_validator()(reading)
    except fastjsonschema.JsonSchemaValueException as error:
        raise ContractError(error.message) from None
