"""The reconciliation of the stream's anomalies with the batch's, on hand-made sets where
the first-come order decides: two candidates for one stream anomaly, two stream anomalies
after one batch anomaly, another sensor, another kind, the edge of the gap."""

from __future__ import annotations

from typing import Any

from smartcity_dagster.transforms.anomalies import reconcile
from smartcity_stream.anomalies import anomaly_table

T0 = 1_795_737_600_000
GAP_MS = 300_000


def anomaly(source: str, sensor: str, kind: str, at_s: int) -> dict[str, Any]:
    millis = T0 + at_s * 1000
    return {
        "anomaly_id": f"{source}:{sensor}:{kind}:{at_s}",
        "sensor_id": sensor,
        "sensor_type": "traffic",
        "kind": kind,
        "severity": "warning",
        "event_time": millis,
        "window_start": millis,
        "window_end": millis,
        "detected_at": millis,
        "values": {},
    }


def sources(stream: list[tuple], batch: list[tuple]) -> dict[str, str]:
    events = reconcile(
        anomaly_table([anomaly("stream", *a) for a in stream]),
        anomaly_table([anomaly("batch", *a) for a in batch]),
        {"TRAFFIC_0001": "centre", "TRAFFIC_0002": "north"},
        GAP_MS,
    )
    assert events["district"].notna().all()
    return dict(zip(events["anomaly_id"], events["source"], strict=True))


def test_each_stream_anomaly_takes_the_first_free_batch_anomaly_within_the_gap() -> None:
    found = sources(
        stream=[
            ("TRAFFIC_0001", "high_volume", 1000),
            ("TRAFFIC_0001", "high_volume", 1100),  # the same batch anomaly is taken
            ("TRAFFIC_0001", "stuck_sensor", 5000),  # two candidates: the first is taken
            ("TRAFFIC_0002", "high_volume", 1000),  # another sensor: none
            ("TRAFFIC_0001", "speed_anomaly", 9000),  # exactly the gap away
        ],
        batch=[
            ("TRAFFIC_0001", "high_volume", 1050),
            ("TRAFFIC_0001", "stuck_sensor", 4800),
            ("TRAFFIC_0001", "stuck_sensor", 5150),  # nearer, but second
            ("TRAFFIC_0001", "speed_anomaly", 9300),
            ("TRAFFIC_0001", "speed_anomaly", 9301),  # beyond the gap
        ],
    )
    assert found == {
        "stream:TRAFFIC_0001:high_volume:1000": "both",
        "stream:TRAFFIC_0001:high_volume:1100": "stream",
        "stream:TRAFFIC_0001:stuck_sensor:5000": "both",
        "stream:TRAFFIC_0002:high_volume:1000": "stream",
        "stream:TRAFFIC_0001:speed_anomaly:9000": "both",
        "batch:TRAFFIC_0001:stuck_sensor:5150": "batch",
        "batch:TRAFFIC_0001:speed_anomaly:9301": "batch",
    }


def test_no_anomalies_on_either_side() -> None:
    assert sources([], []) == {}
    assert sources([("TRAFFIC_0001", "high_volume", 10)], []) == {
        "stream:TRAFFIC_0001:high_volume:10": "stream"
    }
    assert sources([], [("TRAFFIC_0001", "high_volume", 10)]) == {
        "batch:TRAFFIC_0001:high_volume:10": "batch"
    }
