"""clean -> daily aggregates, per sensor and per district, per hour and per day.

One long table per type (`level`, `granularity`, `period_start` say which slice a row is),
so a dashboard filters instead of joining four tables.

The day's rows are read once: one aggregation per sensor and hour keeps mergeable partials
(sums, counts, extremes, the hour's speeds for the 85th percentile, the meter's first and
last reading), and grouping sets over those few thousand rows give all four slices.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

CONGESTED = ("high", "severe")
EXACT = "decimal(38,9)"
"""Sums are taken in decimal, which is exact: float addition depends on its order, and the
order differs between local mode and a cluster, so a float sum would make the table depend
on how Spark split the day."""
WEATHER_MEASURES = ("temperature_c", "humidity_pct", "pressure_hpa", "wind_speed_ms")
SLICES = [
    ["district", "sensor_id", "hour"],
    ["district", "sensor_id"],
    ["district", "hour"],
    ["district"],
]
ORDER = ("level", "granularity", "district", "sensor_id", "period_start")
"""The table's row order: a row's slice, then its place in the slice."""


@dataclass(frozen=True)
class Measures:
    """A type's measures in three steps: per sensor and hour over the clean rows
    (`partials`), over partials for any slice (`merged`), and the published columns."""

    partials: list[Column]
    merged: list[Column]
    final: list[Column]


def _exact_sum(column: Column | str, name: str) -> Column:
    value = F.col(column) if isinstance(column, str) else column
    return F.sum(value.cast(EXACT)).alias(name)


def _sums(*names: str) -> list[Column]:
    return [_exact_sum(name, name) for name in names]


def _double(name: str) -> Column:
    return F.col(name).cast("double")


def _quantile(values: Column, share: float) -> Column:
    """The `share` quantile of an array of values, interpolated between its two nearest
    ranks as Spark's `percentile` and DuckDB's `quantile_cont` do. Exact, so independent of
    the order the values arrived in, which a quantile sketch merged across tasks is not."""
    ordered = F.array_sort(values)
    position = (F.size(ordered) - 1) * share
    below = F.floor(position).cast("int")
    low = F.try_element_at(ordered, below + 1)
    high = F.try_element_at(ordered, F.least(below + 2, F.size(ordered)))
    return low + (position - below) * (high - low)


def _traffic() -> Measures:
    vehicles, speed = F.col("vehicle_count"), F.col("average_speed_kmh")
    congested = F.col("congestion_level").isin(*CONGESTED)
    return Measures(
        partials=[
            F.sum(vehicles).alias("vehicles"),
            _exact_sum(speed * vehicles, "speed_x_vehicles"),
            F.sum(F.when(speed.isNotNull(), vehicles)).alias("vehicles_with_speed"),
            F.count(speed).alias("speeds"),
            F.collect_list(speed).alias("speed_values"),
            _exact_sum(F.when(congested, F.col("interval_s")).otherwise(0.0), "congested_s"),
        ],
        merged=[
            *_sums("vehicles", "speed_x_vehicles", "vehicles_with_speed", "speeds", "congested_s"),
            F.flatten(F.collect_list("speed_values")).alias("speed_values"),
        ],
        final=[
            F.col("vehicles").cast("long").alias("vehicles"),
            (_double("speed_x_vehicles") / _double("vehicles_with_speed")).alias("mean_speed_kmh"),
            F.when(F.col("speeds") > 0, _quantile(F.col("speed_values"), 0.85)).alias(
                "p85_speed_kmh"
            ),
            (_double("congested_s") / 60).alias("congestion_minutes"),
        ],
    )


def _weather() -> Measures:
    partials, merged, final = [], [], []
    for measure in WEATHER_MEASURES:
        partials += [
            F.min(measure).alias(f"{measure}_min"),
            _exact_sum(measure, f"{measure}_sum"),
            F.count(measure).alias(f"{measure}_n"),
            F.max(measure).alias(f"{measure}_max"),
        ]
        merged += [
            F.min(f"{measure}_min").alias(f"{measure}_min"),
            *_sums(f"{measure}_sum", f"{measure}_n"),
            F.max(f"{measure}_max").alias(f"{measure}_max"),
        ]
        final += [
            F.col(f"{measure}_min"),
            (_double(f"{measure}_sum") / F.col(f"{measure}_n")).alias(f"{measure}_mean"),
            F.col(f"{measure}_max"),
        ]
    partials.append(_exact_sum("precipitation_mm", "rain_mm"))
    return Measures(partials, [*merged, *_sums("rain_mm")], [*final, _double("rain_mm")])


def _energy() -> Measures:
    """The meter's first and last reading of an hour are taken in `seq` order, the order in
    which the contract says a sensor reads: a single long keeps every buffer fixed-width, so
    Spark aggregates in a compiled hash map instead of sorting the day's rows."""
    power = F.col("power_kw")
    return Measures(
        partials=[
            F.min_by("energy_kwh", "seq").alias("first_kwh"),
            F.max_by("energy_kwh", "seq").alias("last_kwh"),
            F.max(power).alias("peak_kw"),
            F.max_by("event_time", power).alias("peak_at"),
            _exact_sum(power, "power_sum"),
            F.count(power).alias("power_n"),
        ],
        merged=[
            *_sums("kwh_consumed", "power_sum", "power_n"),
            F.max("peak_kw").alias("peak_kw"),
            F.max_by("peak_at", "peak_kw").alias("peak_at"),
        ],
        final=[
            _double("kwh_consumed"),
            F.col("peak_kw"),
            F.col("peak_at"),
            (_double("power_sum") / F.col("power_n")).alias("mean_kw"),
            (_double("power_sum") / F.col("power_n") / F.col("peak_kw")).alias("load_factor"),
        ],
    )


def _with_kwh_consumed(hours: DataFrame) -> DataFrame:
    """kWh a meter advanced from the sensor's previous reading to its last one of the hour:
    the sum of the steps between consecutive readings of the hour (the first reading of the
    day has no step), which telescopes to last - previous hour's last."""
    previous = F.lag("last_kwh").over(Window.partitionBy("sensor_id").orderBy("hour"))
    return hours.withColumn(
        "kwh_consumed", F.col("last_kwh") - F.coalesce(previous, F.col("first_kwh"))
    )


MEASURES = {"traffic": _traffic, "weather": _weather, "energy": _energy}


def daily_aggregates(clean: DataFrame, sensor_type: str) -> DataFrame:
    """All four slices (sensor/district x hour/day) of one day's clean table, unordered
    (the table is written in `ORDER`)."""
    measures = MEASURES[sensor_type]()
    hours = clean.groupBy(
        "district", "sensor_id", F.date_trunc("hour", "event_time").alias("hour")
    ).agg(F.count(F.lit(1)).alias("readings"), *measures.partials)
    if sensor_type == "energy":
        hours = _with_kwh_consumed(hours)
    day = F.date_trunc("day", F.min("hour"))
    slices = hours.groupingSets(SLICES, "district", "sensor_id", "hour").agg(
        F.sum("readings").alias("readings"),
        *measures.merged,
        F.grouping("sensor_id").alias("_by_district"),
        F.grouping("hour").alias("_by_day"),
        day.alias("_day"),
    )
    by_district, by_day = F.col("_by_district") == 1, F.col("_by_day") == 1
    return slices.select(
        F.when(by_district, "district").otherwise("sensor").alias("level"),
        "sensor_id",
        "district",
        F.when(by_day, "day").otherwise("hour").alias("granularity"),
        F.when(by_day, F.col("_day")).otherwise(F.col("hour")).alias("period_start"),
        F.col("readings").cast("long").alias("readings"),
        *measures.final,
    )
