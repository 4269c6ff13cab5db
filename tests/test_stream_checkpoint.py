"""A worker's detection state through a checkpoint: a restart that restores it finds what
an uninterrupted run finds, at every interval."""

from __future__ import annotations

import orjson
import pytest

from smartcity_stream.rules import RuleConfig, RuleEngine
from smartcity_stream.windows import TumblingWindows
from tests.detection_support import simulate_detection

NOV_27_MS = 1_795_737_600_000


@pytest.mark.parametrize(
    ("interval_s", "hours", "restart_at_step", "seed"),
    [(10, 3, 611, 2), (60, 24, 777, 8), (600, 72, 201, 4)],
)
def test_a_restored_restart_finds_what_an_uninterrupted_run_finds(
    interval_s: int, hours: int, restart_at_step: int, seed: int
) -> None:
    start_ms = NOV_27_MS + 5 * 3_600_000
    whole = simulate_detection(interval_s, hours, start_ms, seed=seed)
    restarted = simulate_detection(
        interval_s, hours, start_ms, seed=seed, restart_at_step=restart_at_step
    )
    restart_ms = start_ms + restart_at_step * interval_s * 1000
    assert sum(1 for d in whole.detections if d[2] >= restart_ms) >= 10
    assert sorted(restarted.detections) == sorted(whole.detections)


def test_a_checkpoint_is_json_and_keeps_episodes_open() -> None:
    """An episode open at the checkpoint stays one episode after it: a replayed or
    continued anomaly is not published again."""
    sensors = {"ENERGY_0001": {"nominal_voltage_v": 230.0}}
    engine = RuleEngine(RuleConfig(), sensors)
    sag = {
        "sensor_id": "ENERGY_0001",
        "sensor_type": "energy",
        "seq": 0,
        "power_kw": 100.0,
        "voltage_v": 190.0,
        "current_a": 500.0,
    }
    assert [f.kind for f in engine.evaluate(sag, NOV_27_MS, None)] == ["voltage_out_of_tolerance"]
    saved = orjson.loads(
        orjson.dumps(
            engine.export(["ENERGY_0001", "ENERGY_0002"]), option=orjson.OPT_SERIALIZE_NUMPY
        )
    )
    assert list(saved) == ["ENERGY_0001"]
    restored = RuleEngine(RuleConfig(), sensors)
    restored.restore(saved)
    assert restored.evaluate({**sag, "seq": 1}, NOV_27_MS + 60_000, None) == []
    windows = TumblingWindows()
    windows.add("p0", "ENERGY_0001", "energy", NOV_27_MS, {"power_kw": 100.0})
    reopened = TumblingWindows()
    reopened.restore("p0", orjson.loads(orjson.dumps(windows.export("p0"))))
    window = reopened.add("p0", "ENERGY_0001", "energy", NOV_27_MS + 1_000, {"power_kw": 50.0})
    assert window is not None and window.count == 2 and window.mean("power_kw") == 75.0
    assert reopened.watermark_ms("p0") == windows.watermark_ms("p0") + 1_000
