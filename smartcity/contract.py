"""The wire contract: one JSON Schema for a sensor reading, and two validators derived from it.

The schema file in this package is the contract of `shared/contracts/`; a test keeps the two
byte-identical so there is never a second, drifting copy. `validate_reading` runs the schema
itself (fastjsonschema); `ReadingDecoder` compiles the same schema into pydantic types whose
Rust core decodes and checks a message in a few microseconds, which the stream worker needs
at tens of thousands of messages per second. A property test holds the two to the same
verdicts; the decoder alone also rejects integers beyond 64 bits, which the schema allows
and the lake cannot hold.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache, lru_cache
from importlib import resources
from typing import Annotated, Any, Literal, Union

import fastjsonschema
import orjson
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic import create_model as _create_model

SCHEMA_VERSION = 1
SENSOR_TYPE_FIELD = "sensor_type"
_RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


class ContractError(ValueError):
    """A reading breaks the contract; the message says which rule, `reason` names the class."""

    def __init__(self, message: str, reason: str = "out_of_contract") -> None:
        super().__init__(message)
        self.reason = reason


@cache
def reading_schema() -> dict[str, Any]:
    text = resources.files("smartcity.contracts").joinpath("sensor-reading.schema.json")
    return orjson.loads(text.read_bytes())


def type_properties(sensor_type: str) -> tuple[dict[str, list[dict[str, Any]]], set[str]]:
    """One reading type's properties, each with its specs in the order they apply (the
    common one, then the type's branch), and the names it requires.

    JSON Schema applies both specs of a property, so a branch's `pattern` adds to the common
    one (`^ENERGY_` and the common id format) instead of replacing it.
    """
    schema = reading_schema()
    branch = next(
        b["then"]
        for b in schema["allOf"]
        if b["if"]["properties"][SENSOR_TYPE_FIELD]["const"] == sensor_type
    )
    specs: dict[str, list[dict[str, Any]]] = {}
    for properties in (schema["properties"], branch["properties"]):
        for name, spec in properties.items():
            specs.setdefault(name, []).append(spec)
    return specs, set(schema["required"]) | set(branch["required"])


def is_rfc3339_utc(value: str) -> bool:
    """RFC 3339 in UTC with a `Z`, as the contract asks (e.g. 2026-11-27T08:15:00.000Z)."""
    if not _RFC3339_UTC.match(value):
        return False
    try:
        datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        return False
    return True


@cache
def _schema_validator() -> Any:
    return fastjsonschema.compile(reading_schema(), formats={"date-time": is_rfc3339_utc})


def validate_reading(reading: Any) -> None:
    """Raise `ContractError` unless `reading` (decoded JSON) satisfies the contract."""
    try:
        _schema_validator()(reading)
    except fastjsonschema.JsonSchemaValueException as error:
        raise ContractError(error.message) from None


@lru_cache(maxsize=65_536)
def _check_time(value: str) -> str:
    """Cached: the sensors of a city share each step's timestamp, so nearly every call hits."""
    if not is_rfc3339_utc(value):
        raise ValueError("event_time must be RFC 3339 in UTC ending in Z")
    return value


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer is any number without a fraction: 7.0 is one, "7" and true are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT64 = Field(ge=INT64_MIN, le=INT64_MAX)
"""JSON Schema's integers have no size, the lake's columns are 64 bits: a reading whose
integer does not fit is rejected here (reason `integer_overflow`) instead of failing the
landing of the whole batch it came in."""

_JSON_TYPES: dict[str, Any] = {
    "integer": Annotated[int, _INT64, BeforeValidator(_json_integer)],
    "number": float,
    "string": str,
    "null": None,
}
# Integers written as integers only: checked in Rust alone, no Python call per field.
_PLAIN_INTEGERS = {**_JSON_TYPES, "integer": Annotated[int, _INT64]}


def _annotation(spec: dict[str, Any], types: dict[str, Any]) -> Any:
    """A pydantic annotation for one property of the schema's subset used by the contract."""
    if "const" in spec:
        return Literal[spec["const"]]
    if "enum" in spec:
        return Literal[tuple(spec["enum"])]
    kinds = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    bounds = {
        "ge": spec.get("minimum"),
        "le": spec.get("maximum"),
        "gt": spec.get("exclusiveMinimum"),
        "pattern": spec.get("pattern"),
    }
    constraints = Field(**{k: v for k, v in bounds.items() if v is not None})
    base = [types[kind] for kind in kinds if kind != "null"]
    annotated: Any = Annotated[base[0], constraints]
    if spec.get("format") == "date-time":
        annotated = Annotated[str, AfterValidator(_check_time)]
    return annotated | None if "null" in kinds else annotated


def _also_matches(pattern: str) -> AfterValidator:
    compiled = re.compile(pattern)

    @lru_cache(maxsize=65_536)
    def check(value: str) -> str:
        """Cached: a city has a few hundred sensor ids."""
        if not compiled.search(value):
            raise ValueError(f"must match {pattern}")
        return value

    return AfterValidator(check)


def _reading_model(sensor_type: str, then: dict[str, Any], types: dict[str, Any]) -> Any:
    """One reading type: the schema's common properties refined by its `then` branch."""
    schema = reading_schema()
    base, branch = schema["properties"], then["properties"]
    required = set(schema["required"]) | set(then["required"])
    fields: dict[str, Any] = {}
    for name in {**base, **branch}:
        spec = {**base.get(name, {}), **branch.get(name, {})}
        if name == SENSOR_TYPE_FIELD:
            annotation: Any = Literal[sensor_type]
        else:
            spec["pattern"] = base.get(name, spec).get("pattern")
            annotation = _annotation(spec, types)
            if name in base and name in branch and "pattern" in branch[name]:
                annotation = Annotated[annotation, _also_matches(branch[name]["pattern"])]
        fields[name] = (annotation, ...) if name in required else (annotation | None, None)
    return _create_model(
        f"{sensor_type.title()}Reading",
        __config__=ConfigDict(strict=True, extra="ignore"),
        **fields,
    )


@cache
def _reading_adapter(plain_integers: bool = False) -> TypeAdapter[Any]:
    types = _PLAIN_INTEGERS if plain_integers else _JSON_TYPES
    models = []
    for branch in reading_schema()["allOf"]:
        sensor_type = branch["if"]["properties"][SENSOR_TYPE_FIELD]["const"]
        models.append(_reading_model(sensor_type, branch["then"], types))
    return TypeAdapter(Annotated[Union[tuple(models)], Field(discriminator=SENSOR_TYPE_FIELD)])  # noqa: UP007


class ReadingDecoder:
    """Decode and check raw message bytes in one step; the contract compiled for speed.

    Two translations of the contract: one that takes integers only as JSON integers (all in
    Rust) and the full one (also 7.0 for an integer, through a Python check per integer
    field). What the first accepts the second accepts identically, so it decides the
    common case; whatever it rejects is decided, with the full one's error, by the second.
    """

    def __init__(self) -> None:
        self._plain = _reading_adapter(plain_integers=True).validator.validate_json
        self._adapter = _reading_adapter()

    def decode(self, raw: bytes) -> dict[str, Any]:
        """The reading as a dict of contract fields, or `ContractError` naming the rule."""
        try:
            return self._plain(raw).__dict__
        except ValidationError:
            pass
        try:
            return self._adapter.validate_json(raw).__dict__
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            if first["type"] == "json_invalid":
                raise ContractError(first["msg"], reason="malformed_json") from None
            where = ".".join(str(part) for part in first["loc"][1:] or first["loc"])
            limit = first.get("ctx", {})
            if limit.get("le") == INT64_MAX or limit.get("ge") == INT64_MIN:
                message = f"{where}: {first['input']} does not fit in a 64-bit integer"
                raise ContractError(message, reason="integer_overflow") from None
            raise ContractError(f"{where}: {first['msg']}" if where else first["msg"]) from None
