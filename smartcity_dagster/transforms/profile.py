"""What the checks of a clean table need, observed while Spark writes it: no extra pass.

Per column the null count; per numeric or time column its extremes; per string column its
distinct values (bounded: sensors, districts and enums), collected only where the value
changes within a sensor's readings, so the set is fed a few hundred values, not every row.
Per sensor, in `seq` order (the reading order the contract defines), the rows that repeat
the previous key and the meter readings below the previous one, counted with one sample
each. The frame is partitioned by `sensor_id` and sorted by `(sensor_id, seq)` already (see
`clean`), so the window adds no exchange and no sort.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Observation, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

FALL_TOLERANCE_KWH = 1e-9
PREVIOUS = "_previous_{}"


def _previous(name: str) -> Column:
    return F.col(PREVIOUS.format(name))


def _column_stats(frame: DataFrame) -> list[Column]:
    stats = [F.count(F.lit(1)).alias("rows")]
    for field in frame.schema.fields:
        name = field.name
        stats.append(F.count_if(F.col(name).isNull()).alias(f"nulls:{name}"))
        if isinstance(field.dataType, StringType):
            changed = F.col(name).eqNullSafe(_previous(name)) == F.lit(False)
            values = F.collect_set(F.when(changed, F.col(name)))
            stats.append(F.array_sort(values).alias(f"values:{name}"))
        else:
            stats += [F.min(name).alias(f"min:{name}"), F.max(name).alias(f"max:{name}")]
    return stats


def _sequence_stats(broken: Column, alias: str) -> list[Column]:
    sample = F.struct("sensor_id", "seq", "event_time")
    return [
        F.count_if(broken).alias(alias),
        F.min(F.when(broken, sample)).alias(f"sample:{alias}"),
    ]


def profiled(frame: DataFrame, sensor_type: str) -> tuple[DataFrame, Observation]:
    """`frame` unchanged, and the observation its write fills (see the module's docstring)."""
    strings = [f.name for f in frame.schema.fields if isinstance(f.dataType, StringType)]
    lagged = [*strings, "seq"] + (["energy_kwh"] if sensor_type == "energy" else [])
    previous = Window.partitionBy("sensor_id").orderBy("seq")
    flagged = frame.select(
        "*", *[F.lag(name).over(previous).alias(PREVIOUS.format(name)) for name in lagged]
    )
    sequence = _sequence_stats(_previous("seq") == F.col("seq"), "duplicate_keys")
    if sensor_type == "energy":
        fell = _previous("energy_kwh") - F.col("energy_kwh") > FALL_TOLERANCE_KWH
        sequence += _sequence_stats(fell, "meter_falls")
    profile = Observation("profile")
    observed = flagged.observe(profile, *_column_stats(frame), *sequence)
    return observed.select(*frame.columns), profile
