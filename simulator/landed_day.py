"""A simulated day landed as the worker lands it, without Kafka in between.

For what needs a whole day in the lake quickly and the same way every time (the batch
benchmark, the exercise run that writes Spark's class archive): the default city is imported
as the registry, and the simulator's readings go straight into the worker's landing files,
one file per hour and type, with the Kafka offsets invented (partition 0, counting from 0
per type). The platform finds this function through the `smartcity.sample_data` entry
point, so it never imports the simulator.
"""

from __future__ import annotations

import orjson

from simulator.registry import build_registry
from simulator.simulation import Simulation, SimulationConfig
from smartcity.lake import Lake
from smartcity.registry import import_registry
from smartcity.settings import SENSOR_TYPES
from smartcity_stream.landing import landing_files, rows_to_table, write_files

HOURS = 24


def land_simulated_day(lake: Lake, start_ms: int, interval_s: float) -> int:
    """Land the 24 hours from `start_ms` of every sensor reporting each `interval_s`;
    returns the readings landed."""
    registry = build_registry()
    import_registry(lake, registry.table())
    simulation = Simulation(
        registry, SimulationConfig(start_ms=start_ms, interval_ms=int(interval_s * 1000))
    )
    steps_per_hour = max(1, int(3600 / interval_s))
    offsets = dict.fromkeys(SENSOR_TYPES, 0)
    total = 0
    for _ in range(HOURS):
        rows: dict[str, list[dict]] = {t: [] for t in SENSOR_TYPES}
        for _ in range(steps_per_hour):
            for batch in simulation.next_step():
                for _, value, _, _ in batch.messages:
                    reading = orjson.loads(value)
                    reading["kafka_partition"] = 0
                    reading["kafka_offset"] = offsets[batch.sensor_type]
                    offsets[batch.sensor_type] += 1
                    rows[batch.sensor_type].append(reading)
        for sensor_type, hour_rows in rows.items():
            write_files(lake, landing_files(sensor_type, 0, rows_to_table(sensor_type, hour_rows)))
            total += len(hour_rows)
    return total
