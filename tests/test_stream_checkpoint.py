"""A worker's detection state through a checkpoint: a restart that restores it finds what
an uninterrupted run finds, at every interval."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from smartcity.lake import Lake
from smartcity.layout import checkpoint_key
from smartcity.settings import Settings
from smartcity_stream.checkpoint import (
    Checkpoint,
    drop_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
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
    assert [f.kind for f in engine.evaluate(sag, NOV_27_MS)] == ["voltage_out_of_tolerance"]
    saved = orjson.loads(
        orjson.dumps(
            engine.export(["ENERGY_0001", "ENERGY_0002"]), option=orjson.OPT_SERIALIZE_NUMPY
        )
    )
    assert list(saved) == ["ENERGY_0001"]
    restored = RuleEngine(RuleConfig(), sensors)
    restored.restore(saved)
    assert restored.evaluate({**sag, "seq": 1}, NOV_27_MS + 60_000) == []
    windows = TumblingWindows()
    windows.add("p0", "ENERGY_0001", "energy", NOV_27_MS, {"power_kw": 100.0})
    reopened = TumblingWindows()
    reopened.restore("p0", orjson.loads(orjson.dumps(windows.export("p0"))))
    window = reopened.add("p0", "ENERGY_0001", "energy", NOV_27_MS + 1_000, {"power_kw": 50.0})
    assert window is not None and window.count == 2 and window.mean("power_kw") == 75.0
    assert reopened.watermark_ms("p0") == windows.watermark_ms("p0") + 1_000


def test_a_claim_finds_the_checkpoint_of_the_committed_offset_and_drops_older_ones(
    tmp_path: Path,
) -> None:
    """The state the committed offset names is found; those before it go; one ahead of it
    (a round that never committed) stays for its replay to write again."""
    lake = Lake.from_settings(Settings(_env_file=None, lake_uri=tmp_path.as_uri()))
    lake.ensure_root()
    topic = "smartcity.readings.energy"
    for offset in (100, 200, 300):
        state = Checkpoint(offset, {"max_event_ms": offset, "windows": []}, {"E": {"o": offset}})
        save_checkpoint(lake, topic, 1, offset, state.encode())
    assert load_checkpoint(lake, topic, 1, 50) is None
    found = load_checkpoint(lake, topic, 1, 200)
    assert found == Checkpoint(200, {"max_event_ms": 200, "windows": []}, {"E": {"o": 200}})
    assert not lake.exists(checkpoint_key(topic, 1, 100))
    assert lake.exists(checkpoint_key(topic, 1, 300))
    assert load_checkpoint(lake, topic, 2, 200) is None
    drop_checkpoint(lake, topic, 1, 200)
    drop_checkpoint(lake, topic, 1, 200)
    assert load_checkpoint(lake, topic, 1, 200) is None
