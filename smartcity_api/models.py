"""Response models: the OpenAPI contract of every route.

Row models are derived from the Arrow schemas the writers use (`landing_schema`,
`REGISTRY_SCHEMA`, `ANOMALY_SCHEMA`; the aggregates' columns as docs/lake.md states them),
so a column added to the lake appears in the API's docs without a second copy of the
schema. They are strict: a row with a column they do not declare, or without one they
do, breaks the contract, so the schemathesis test and the endpoint tests, run on tables the
real assets built, fail when the writers drift. Handlers serialise rows with orjson
directly (`responses.json_response`); these models document the shape, and the
schemathesis test holds the responses to it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, create_model

from smartcity.registry import REGISTRY_SCHEMA
from smartcity.settings import SENSOR_TYPES
from smartcity_stream.anomalies import ANOMALY_SCHEMA
from smartcity_stream.landing import landing_schema
from smartcity_stream.live import latest_schema

Status = Literal["ok", "degraded", "down"]
KAFKA_COLUMNS = ("kafka_partition", "kafka_offset")


def _python_type(arrow_type: pa.DataType) -> Any:
    if pa.types.is_timestamp(arrow_type):
        return datetime
    if pa.types.is_integer(arrow_type):
        return int
    if pa.types.is_floating(arrow_type):
        return float
    if pa.types.is_boolean(arrow_type):
        return bool
    return str


STRICT = ConfigDict(extra="forbid")
"""Row models whose schema is ours refuse a column they do not declare and require every one
they do: a column the writers add or drop fails the schemathesis test instead of reaching
clients unannounced."""


def arrow_model(
    name: str,
    schema: pa.Schema,
    required: tuple[str, ...],
    doc: str,
    extra: dict[str, Any] | None = None,
) -> type[BaseModel]:
    """A strict pydantic model with one field per column, every key present (rows are
    rendered from whole tables); only `required` columns are non-null. `extra` adds fields
    or overrides a column's."""
    fields: dict[str, Any] = {}
    for field in schema:
        python = _python_type(field.type)
        fields[field.name] = (python if field.name in required else python | None, ...)
    fields.update(extra or {})
    return create_model(name, __doc__=doc, __config__=STRICT, **fields)  # type: ignore[call-overload]


def reading_schema_without_kafka(schema: pa.Schema) -> pa.Schema:
    """`schema` without the Kafka coordinates, which clients never see."""
    return pa.schema([f for f in schema if f.name not in KAFKA_COLUMNS])


_READING_KEYS = ("sensor_id", "sensor_type", "event_time", "seq")


def _reading_model(sensor_type: str) -> type[BaseModel]:
    return arrow_model(
        f"{sensor_type.title()}Reading",
        reading_schema_without_kafka(landing_schema(sensor_type)),
        _READING_KEYS,
        f"One {sensor_type} reading: the columns the stream worker lands, without Kafka's.",
        {"sensor_type": (Literal[sensor_type], ...)},  # type: ignore[valid-type]
    )


Reading = Annotated[
    Union[tuple(_reading_model(t) for t in SENSOR_TYPES)],  # type: ignore[misc]  # noqa: UP007
    Field(discriminator="sensor_type"),
]
"""A reading of any type; its `sensor_type` says which columns it has."""
LatestReading = arrow_model(
    "LatestReading",
    reading_schema_without_kafka(latest_schema()),
    _READING_KEYS,
    "The newest reading of a sensor in the live state, with its district; measures of other "
    "sensor types are null.",
    {"district": (str | None, ...)},
)
Sensor = arrow_model(
    "Sensor",
    REGISTRY_SCHEMA,
    ("sensor_id", "sensor_type", "district", "latitude", "longitude"),
    "A sensor of the registry; type-specific attributes are null for other types.",
)
Anomaly = arrow_model(
    "Anomaly",
    pa.schema([f for f in ANOMALY_SCHEMA if f.name != "values"]),
    ("anomaly_id", "sensor_id", "kind", "event_time"),
    "An anomaly, detected by the stream worker or the batch layer.",
    {
        "values": (dict[str, Any] | None, ...),
        "district": (str | None, ...),
        "source": (Literal["stream", "batch", "both"], ...),
    },
)

_AGGREGATE_KEYS = pa.schema(
    [
        ("level", pa.string()),
        ("sensor_id", pa.string()),
        ("district", pa.string()),
        ("granularity", pa.string()),
        ("period_start", pa.timestamp("ms", "UTC")),
        ("readings", pa.int64()),
    ]
)
_STATS = ("min", "mean", "max")
AGGREGATE_MEASURES: dict[str, pa.Schema] = {
    "traffic": pa.schema(
        [
            ("vehicles", pa.int64()),
            ("mean_speed_kmh", pa.float64()),
            ("p85_speed_kmh", pa.float64()),
            ("congestion_minutes", pa.float64()),
        ]
    ),
    "weather": pa.schema(
        [
            *(
                (f"{measure}_{stat}", pa.float64())
                for measure in ("temperature_c", "humidity_pct", "pressure_hpa", "wind_speed_ms")
                for stat in _STATS
            ),
            ("rain_mm", pa.float64()),
        ]
    ),
    "energy": pa.schema(
        [
            ("kwh_consumed", pa.float64()),
            ("peak_kw", pa.float64()),
            ("peak_at", pa.timestamp("ms", "UTC")),
            ("mean_kw", pa.float64()),
            ("load_factor", pa.float64()),
        ]
    ),
}
"""The measures of each type's `daily_<type>_aggregates` table, as docs/lake.md states the
table: the API's promise about those rows, which the real assets are tested against."""


def _aggregate_model(sensor_type: str) -> type[BaseModel]:
    schema = pa.schema([*_AGGREGATE_KEYS, *AGGREGATE_MEASURES[sensor_type]])
    return arrow_model(
        f"{sensor_type.title()}AggregateRow",
        schema,
        ("level", "granularity", "period_start"),
        f"One row of `daily_{sensor_type}_aggregates`: a sensor's or a district's hour or day.",
        {
            "level": (Literal["sensor", "district"], ...),
            "granularity": (Literal["hour", "day"], ...),
        },
    )


AggregateRow = Union[tuple(_aggregate_model(t) for t in SENSOR_TYPES)]  # type: ignore[misc]  # noqa: UP007
"""A row of one type's aggregates table (the request's `sensor_type` says which)."""


class ErrorResponse(BaseModel):
    """What went wrong and what to send instead."""

    detail: str = Field(examples=["limit: must be at most 10000, got 20000"])


class Root(BaseModel):
    name: str
    version: str
    docs: str
    openapi: str
    health: str
    metrics: str


class Component(BaseModel):
    status: Status
    detail: str
    checked_at: datetime
    info: dict[str, Any] = Field(default_factory=dict)


class Health(BaseModel):
    """`down` means the API cannot serve data (the lake is unreachable): HTTP 503."""

    status: Status
    components: dict[str, Component]


class SensorPage(BaseModel):
    items: list[Sensor]  # type: ignore[valid-type]
    total: int = Field(description="sensors matching the filters, over all pages")
    offset: int
    limit: int


class LatestList(BaseModel):
    items: list[LatestReading]  # type: ignore[valid-type]
    count: int


class SensorDetail(BaseModel):
    sensor: Sensor  # type: ignore[valid-type]
    latest: LatestReading | None  # type: ignore[valid-type]
    record_count: int = Field(
        description="readings of this sensor stored in the lake (clean tables, then landing), "
        "without duplicates"
    )


class ReadingPage(BaseModel):
    sensor_id: str
    sensor_type: str
    items: list[Reading]  # type: ignore[valid-type]
    count: int
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


class AggregateList(BaseModel):
    table: str
    date: str
    granularity: Literal["hour", "day"]
    items: list[AggregateRow]
    count: int


class AnomalyList(BaseModel):
    items: list[Anomaly]  # type: ignore[valid-type]
    count: int
    truncated: bool = Field(description="more anomalies matched than `limit`")


class QualityCheck(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    passed: bool
    severity: str | None = None
    blocking: bool | None = None
    metadata: dict[str, Any] | None = None


class QualityRecord(BaseModel):
    """The check results written beside one materialized partition."""

    model_config = ConfigDict(extra="allow")

    asset: str
    partition: str
    materialized_at: str | None = None
    checks: list[QualityCheck]


class QualityList(BaseModel):
    items: list[QualityRecord]
    count: int


class KafkaPartition(BaseModel):
    partition: int
    end_offset: int
    committed_offset: int | None = Field(description="the group's committed offset, if any")
    lag: int | None


class KafkaTopic(BaseModel):
    topic: str
    partitions: list[KafkaPartition]
    end_offset_total: int
    lag_total: int | None


class KafkaStatistics(BaseModel):
    group: str
    topics: list[KafkaTopic]


class ParquetTable(BaseModel):
    table: str = Field(examples=["clean_traffic", "landing/traffic"])
    partitions: int
    files: int
    rows: int
    bytes: int
    json_bytes_estimate: int
    compression_ratio: float | None = Field(description="estimated JSON Lines size / Parquet size")


class ParquetStatistics(BaseModel):
    method: str
    tables: list[ParquetTable]


class RejectedReading(BaseModel):
    """A posted reading that was not produced, and why (the dead-letter topic's reasons)."""

    index: int = Field(description="0-based position in the JSON array, or line number - 1")
    reason: str = Field(
        examples=["out_of_contract", "malformed_json", "integer_overflow", "unknown_sensor"]
    )
    error: str = Field(examples=["humidity_pct: Input should be less than or equal to 100"])


class IngestReport(BaseModel):
    detail: str
    received: int = Field(description="readings in the request")
    accepted: int = Field(description="valid readings acknowledged by Kafka")
    rejected: list[RejectedReading]


class IngestAccepted(IngestReport):
    """202: Kafka acknowledged every valid reading; the invalid ones were not produced."""


class IngestRejected(IngestReport):
    """422: no reading of the request was valid; nothing was produced."""


class IngestUnconfirmed(IngestReport):
    """503: Kafka did not confirm some valid readings in time. Resending the whole request is
    safe: the batch layer keeps one reading per (sensor_id, seq)."""

    unconfirmed: int = Field(description="valid readings Kafka did not confirm")
