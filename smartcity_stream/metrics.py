"""The worker's Prometheus metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

CONSUMED = Counter(
    "smartcity_stream_messages_consumed_total", "Messages consumed.", ["topic"], registry=REGISTRY
)
LANDED = Counter(
    "smartcity_stream_rows_landed_total", "Valid rows landed.", ["sensor_type"], registry=REGISTRY
)
LANDED_BYTES = Counter(
    "smartcity_stream_landed_bytes_total",
    "Parquet bytes landed.",
    ["sensor_type"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "smartcity_stream_dead_letters_total",
    "Messages sent to the dead-letter topic.",
    ["reason"],
    registry=REGISTRY,
)
ANOMALIES = Counter(
    "smartcity_stream_anomalies_total",
    "Anomalies detected.",
    ["kind", "severity"],
    registry=REGISTRY,
)
LATE_EVENTS = Counter(
    "smartcity_stream_late_events_total",
    "Events later than the allowed lateness.",
    registry=REGISTRY,
)
WRITE_ERRORS = Counter(
    "smartcity_stream_landing_write_errors_total",
    "Failed landing writes (retried).",
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "smartcity_stream_consumer_lag",
    "Messages behind the end of the partition.",
    ["topic", "partition"],
    registry=REGISTRY,
)
WATERMARK = Gauge(
    "smartcity_stream_watermark_seconds",
    "Event-time watermark (Unix seconds).",
    ["topic", "partition"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "smartcity_stream_batch_seconds",
    "Time to check and detect on one consumed batch (its landing comes later, in a round).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
LANDING_SECONDS = Histogram(
    "smartcity_stream_landing_seconds",
    "Time to land one round of buffered rows: intent, Parquet files, acknowledgements, "
    "commit, progress.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
EVENT_TO_ANOMALY = Histogram(
    "smartcity_stream_event_to_anomaly_seconds",
    "From a reading's event time to its anomaly's publication.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)

# The Grafana city map needs each traffic sensor's place and latest state, and Prometheus
# cannot read the lake's live state: so the place rides along as labels. That is a fixed
# set of series (one per traffic sensor, 100 in the default city), not unbounded cardinality.
SENSOR_CONGESTION = Gauge(
    "smartcity_stream_sensor_congestion_level",
    "Latest congestion level of a traffic sensor: 0 low, 1 medium, 2 high, 3 severe.",
    ["sensor_id", "district", "latitude", "longitude"],
    registry=REGISTRY,
)
CONGESTION_LEVELS = {"low": 0, "medium": 1, "high": 2, "severe": 3}
# Each sensor's labelled gauge, looked up once: `labels()` costs tens of µs per call.
_congestion_gauges: dict[str, Gauge] = {}


def record_congestion(latest: dict[str, str | None], sensors: dict[str, dict[str, Any]]) -> None:
    """Set the gauge once per sensor per batch from its last reading's level (readings of
    other types carry none), not once per reading."""
    for sensor_id, level in latest.items():
        sensor = sensors.get(sensor_id)
        if sensor is None or level not in CONGESTION_LEVELS:
            continue
        gauge = _congestion_gauges.get(sensor_id)
        if gauge is None:
            gauge = _congestion_gauges[sensor_id] = SENSOR_CONGESTION.labels(
                sensor_id, sensor["district"], str(sensor["latitude"]), str(sensor["longitude"])
            )
        gauge.set(CONGESTION_LEVELS[level])
