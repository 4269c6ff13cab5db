"""clean -> daily aggregates, per sensor and per district, per hour and per day.

One long table per type (`level`, `granularity`, `period_start` say which slice a row is),
so a dashboard filters instead of joining four tables.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

CONGESTED = ("high", "severe")
KEYS = {"sensor": ("sensor_id", "district"), "district": ("district",)}
PERIODS = {"hour": "hour", "day": "day"}


def _traffic(_: DataFrame) -> list[Column]:
    vehicles = F.col("vehicle_count")
    speed = F.col("average_speed_kmh")
    congested = F.col("congestion_level").isin(*CONGESTED)
    return [
        F.count(F.lit(1)).alias("readings"),
        F.sum(vehicles).cast("long").alias("vehicles"),
        (F.sum(speed * vehicles) / F.sum(F.when(speed.isNotNull(), vehicles))).alias(
            "mean_speed_kmh"
        ),
        F.percentile_approx(speed, 0.85, 1000).cast("double").alias("p85_speed_kmh"),
        (F.sum(F.when(congested, F.col("interval_s")).otherwise(0.0)) / 60).alias(
            "congestion_minutes"
        ),
    ]


def _weather(_: DataFrame) -> list[Column]:
    stats = []
    for measure in ("temperature_c", "humidity_pct", "pressure_hpa", "wind_speed_ms"):
        stats += [
            F.min(measure).alias(f"{measure}_min"),
            F.avg(measure).alias(f"{measure}_mean"),
            F.max(measure).alias(f"{measure}_max"),
        ]
    return [F.count(F.lit(1)).alias("readings"), *stats, F.sum("precipitation_mm").alias("rain_mm")]


def _energy(_: DataFrame) -> list[Column]:
    peak = F.max_by("event_time", "power_kw")
    return [
        F.count(F.lit(1)).alias("readings"),
        F.sum("kwh_step").alias("kwh_consumed"),
        F.max("power_kw").alias("peak_kw"),
        peak.alias("peak_at"),
        F.avg("power_kw").alias("mean_kw"),
        (F.avg("power_kw") / F.max("power_kw")).alias("load_factor"),
    ]


MEASURES: dict[str, Callable[[DataFrame], list[Column]]] = {
    "traffic": _traffic,
    "weather": _weather,
    "energy": _energy,
}


def _with_energy_steps(clean: DataFrame) -> DataFrame:
    """kWh consumed between a sensor's consecutive readings (the meter only rises)."""
    from pyspark.sql import Window

    order = Window.partitionBy("sensor_id").orderBy("event_time", "seq")
    previous = F.lag("energy_kwh").over(order)
    return clean.withColumn(
        "kwh_step", F.when(previous.isNull(), 0.0).otherwise(F.col("energy_kwh") - previous)
    )


def daily_aggregates(clean: DataFrame, sensor_type: str) -> DataFrame:
    """All four slices (sensor/district x hour/day) of one day's clean table."""
    frame = _with_energy_steps(clean) if sensor_type == "energy" else clean
    slices = []
    for level, keys in KEYS.items():
        for granularity, unit in PERIODS.items():
            period = F.date_trunc(unit, F.col("event_time")).alias("period_start")
            grouped = frame.groupBy(*keys, period).agg(*MEASURES[sensor_type](frame))
            sensor = F.col("sensor_id") if level == "sensor" else F.lit(None).cast("string")
            slices.append(
                grouped.select(
                    F.lit(level).alias("level"),
                    sensor.alias("sensor_id"),
                    "district",
                    F.lit(granularity).alias("granularity"),
                    "period_start",
                    *[c for c in grouped.columns if c not in (*keys, "period_start")],
                )
            )
    combined = slices[0]
    for frame_slice in slices[1:]:
        combined = combined.unionByName(frame_slice)
    return combined.orderBy("level", "granularity", "district", "sensor_id", "period_start")
