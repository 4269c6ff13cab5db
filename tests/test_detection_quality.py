"""Detection quality at every reporting interval, and false alarms on a quiet week.

The simulator's readings go through the worker's own windows and rules in batches
(`tests/detection_support.py`); days, seeds and intervals vary so that no floor holds only
for the demo's day. The stream test (`test_stream_detection.py`) runs the same through Kafka.
"""

from __future__ import annotations

import math

import pytest

from smartcity_stream.baselines import Seasonal
from smartcity_stream.rules import RuleConfig
from tests.detection_support import simulate_detection

NOV_27_MS = 1_795_737_600_000  # 2026-11-27T00:00:00Z, a Friday
HOUR_MS = 3_600_000
WARMUP_MS = int(RuleConfig().baseline_warmup_s * 1000)


@pytest.mark.parametrize(
    ("interval_s", "hours", "seed", "start_hour", "floor"),
    [
        (10, 6, 3, 28, 0.9),  # Saturday from 04:00
        (10, 6, 9, 101, 0.9),  # Tuesday, the morning rush hour
        (60, 24, 11, 48, 0.9),  # a Sunday
        (60, 24, 5, 120, 0.9),  # a Wednesday
        (600, 168, 1, 0, 0.8),  # a week
    ],
)
def test_each_planted_kind_holds_its_floor(
    interval_s: int, hours: int, seed: int, start_hour: int, floor: float
) -> None:
    start_ms = NOV_27_MS + start_hour * HOUR_MS
    run = simulate_detection(interval_s, hours, start_ms, seed=seed, anomaly_rate_per_hour=0.2)
    quality = run.quality(start_ms + WARMUP_MS)
    for kind, q in quality.items():
        print(
            f"{interval_s:4} s {kind:26} planted {q.planted:5} detected {q.detected:5} "
            f"precision {q.precision:.3f} recall {q.recall:.3f}"
        )
    assert len(quality) == 6
    for kind, q in quality.items():
        assert q.planted >= 4, (kind, q)
        assert q.precision >= floor, (kind, q)
        assert q.recall >= floor, (kind, q)


@pytest.mark.parametrize(("interval_s", "seed", "start_day"), [(600, 7, 3), (300, 13, 10)])
def test_a_quiet_week_raises_at_most_one_false_alarm_per_100_sensor_days(
    interval_s: int, seed: int, start_day: int
) -> None:
    start_ms = NOV_27_MS + start_day * 24 * HOUR_MS
    run = simulate_detection(interval_s, 168, start_ms, seed=seed, anomaly_rate_per_hour=0.0)
    rates = run.alarms_per_100_sensor_days()
    for kind, rate in rates.items():
        print(f"{interval_s:4} s {kind:26} {rate:.2f} false alarms per 100 sensor-days")
    assert run.planted == []
    assert len(rates) == 10
    assert all(rate <= 1.0 for rate in rates.values()), rates


def test_a_second_week_knows_the_rush_hour() -> None:
    """Once a week has taught each road its hours, a rush-hour jam that falls fast is that
    road's Monday, not an anomaly: week two raises fewer false alarms than week one."""
    run = simulate_detection(600, 14 * 24, NOV_27_MS, seed=3, anomaly_rate_per_hour=0.0)
    second_week = NOV_27_MS + 7 * 24 * HOUR_MS
    first = [d for d in run.detections if d[2] < second_week]
    second = [d for d in run.detections if d[2] >= second_week]
    print(f"false alarms: week one {len(first)}, week two {len(second)}")
    assert len(second) < len(first) / 2


def test_the_weekly_expectation_is_a_slope_between_hours() -> None:
    season = Seasonal()
    week_ms = 168 * HOUR_MS
    ramp = [NOV_27_MS + 6 * HOUR_MS + m * 60_000 for m in range(120)]  # 06:00 to 08:00
    assert all(math.isnan(e) for e in season.learn(ramp, [100.0 + m for m in range(120)]))
    season.learn([ramp[-1] + HOUR_MS], [math.nan])  # the next hour closes 07:00-08:00
    at = [ramp[30] + week_ms, ramp[60] + week_ms, ramp[75] + week_ms]  # 06:30, 07:00, 07:15
    assert season.learn(at, [math.nan] * 3) == pytest.approx([129.5, 159.5, 174.5])
