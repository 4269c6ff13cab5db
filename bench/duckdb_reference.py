"""The batch day in DuckDB: the tables of Spark's assets, from the same landing files.

The fair reference for `bench_batch`: every step does the work of its Dagster asset
(`smartcity_dagster.transforms`) and writes its tables as zstd Parquet, in the lake's layout
under another root, so that `compare` can hold the two engines' outputs row for row:

- `raw_<type>`: the day's landing files in Kafka partition and offset order;
- `clean_<type>` and `clean_<type>_rejects`: the contract's rules (the same reasons, in the
  same order, as `transforms.clean.contract_rules`) and the registry, the first copy of each
  (sensor_id, seq) by Kafka partition and offset winning; clean rows carry the registry's
  district and coordinates, rejects their reason;
- `daily_<type>_aggregates`: per sensor and hour, partials that merge (decimal sums, counts,
  extremes, the hour's speeds for an exact 85th percentile, the meter's first and last
  reading), then the four slices as grouping sets, as `transforms.aggregates` does;
- `anomaly_summary` and `anomaly_events`: the stream worker's own rules re-run over each
  sensor's clean day (DuckDB hands each sensor's rows as Arrow to the very function Spark's
  `applyInPandas` runs, in one worker process per core as Spark's Python workers), then
  reconciled with the stream's landed anomalies and summed per kind and sensor in SQL.

Run `python -m bench.duckdb_reference LAKE_DIR OUT_DIR DAY`: it prints what it wrote and the
seconds it took as JSON (what `bench_batch` reads, from a process of its own whose memory it
samples).
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from smartcity.contract import type_properties
from smartcity.lake import Lake
from smartcity.layout import LANDING, landing_dir, landing_offsets, table_partition_key
from smartcity.registry import published_registry
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_dagster.transforms.anomalies import sensor_detector
from smartcity_stream.anomalies import ANOMALY_SCHEMA
from smartcity_stream.landing import landing_schema
from smartcity_stream.rules import RuleConfig

WRITE = "(FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION v2)"
"""How every table is written: zstd, and Parquet's v2 pages as Spark writes them."""
EXACT = "DECIMAL(38, 9)"
"""The type sums are taken in, as `transforms.aggregates.EXACT`: exact, so in any order."""
PLACES = ("district", "latitude", "longitude")
CONGESTED = ("high", "severe")
WEATHER_MEASURES = ("temperature_c", "humidity_pct", "pressure_hpa", "wind_speed_ms")
SEVERITY = {"warning": 1, "critical": 2}
CHUNKS_PER_WORKER = 4
"""Sensor chunks per worker process for the rules: small enough to even out the load."""


@dataclass
class Build:
    """What a day's build wrote (rows per table) and how long each step took, the steps
    named as the Dagster steps that do the same work (`sensor_tables`: every type's raw,
    clean and daily aggregates)."""

    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def step(self, name: str, tables: Callable[[], dict[str, int]]) -> None:
        started = time.perf_counter()
        self.rows |= tables()
        self.seconds[name] = time.perf_counter() - started


def build_day(lake: Lake, day: str, out: Path, workers: int) -> Build:
    """Every table of `day` from the landing of `lake` (a local folder) into `out`, in the
    lake's layout, the rules run by `workers` processes.

    The workers are spawned, not forked: a fork of a process that already runs threads
    (Arrow's pools, a test run's Kafka clients) gave a child that crashed in Arrow."""
    registry = published_registry(lake)
    build = Build()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(int).result()
        db = _connect()
        db.register("registry", registry.table)
        db.execute("CREATE VIEW districts AS SELECT sensor_id, district FROM registry")

        def sensor_tables() -> dict[str, int]:
            rows: dict[str, int] = {}
            for t in SENSOR_TYPES:
                rows |= _raw(db, lake, t, day, out)
                rows |= _clean(db, t, day, out)
                rows |= _aggregates(db, t, day, out)
            return rows

        build.step("sensor_tables", sensor_tables)

        def anomalies() -> dict[str, int]:
            batch = _detect(db, pool, workers, out, day, registry.sensors())
            return _anomaly_summary(db, lake, batch, day, out)

        build.step("anomaly_summary", anomalies)
    return build


def _connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """DuckDB in UTC (as Spark's session), quiet (stdout carries the result)."""
    db = duckdb.connect(config={} if threads is None else {"threads": threads})
    db.execute("SET TimeZone = 'UTC'")
    db.execute("SET enable_progress_bar = false")
    return db


def _path(out: Path, asset: str, day: str) -> Path:
    return out / table_partition_key(asset, day)


def _write(db: duckdb.DuckDBPyConnection, query: str, out: Path, asset: str, day: str) -> int:
    """`query`'s rows as the asset's partition file; returns how many."""
    path = _path(out, asset, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    found = db.execute(f"COPY ({query}) TO '{path}' {WRITE}").fetchone()
    return int(found[0]) if found else 0


def _read(out: Path, asset: str, day: str) -> str:
    return f"read_parquet('{_path(out, asset, day)}')"


def _text(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


# raw_<type> -----------------------------------------------------------------------------


def _raw(
    db: duckdb.DuckDBPyConnection, lake: Lake, sensor_type: str, day: str, out: Path
) -> dict[str, int]:
    """The day's landing files (those named by their Kafka offsets, as `transforms.raw`
    takes them) as one table in Kafka partition and offset order."""
    schema = landing_schema(sensor_type)
    files = [
        info.path
        for info in lake.list_files(landing_dir(sensor_type, day))
        if landing_offsets(info.path) is not None
    ]
    if files:
        listed = ", ".join(_text(path) for path in files)
        source = f"read_parquet([{listed}], union_by_name = true)"
    else:
        db.register("no_landing", schema.empty_table())
        source = "no_landing"
    columns = ", ".join(schema.names)
    query = f"SELECT {columns} FROM {source} ORDER BY kafka_partition, kafka_offset"
    asset = f"raw_{sensor_type}"
    return {asset: _write(db, query, out, asset, day)}


# clean_<type> ---------------------------------------------------------------------------


def contract_rules(sensor_type: str) -> list[tuple[str, str]]:
    """The contract's rules for one type as (reason, SQL that is true when a row breaks
    it), in the order of `transforms.clean.contract_rules` and with its reasons. A rule on a
    missing value is null, so not broken, as there."""
    properties, required = type_properties(sensor_type)
    rules: list[tuple[str, str]] = []
    for name, specs in properties.items():
        if name in ("schema_version", "event_time"):
            continue
        kinds = next((spec["type"] for spec in specs if "type" in spec), [])
        if name in required and not (isinstance(kinds, list) and "null" in kinds):
            rules.append((f"{name} is missing", f"{name} IS NULL"))
        if name == "sensor_type":
            rules.append((f"sensor_type is not {sensor_type}", f"{name} <> {_text(sensor_type)}"))
            continue
        for spec in specs:
            rules += _spec_rules(name, spec)
    return rules


def _spec_rules(name: str, spec: dict[str, Any]) -> list[tuple[str, str]]:
    rules = []
    if "minimum" in spec:
        rules.append((f"{name} below {spec['minimum']}", f"{name} < {spec['minimum']}"))
    if "maximum" in spec:
        rules.append((f"{name} above {spec['maximum']}", f"{name} > {spec['maximum']}"))
    if "exclusiveMinimum" in spec:
        bound = spec["exclusiveMinimum"]
        rules.append((f"{name} not above {bound}", f"{name} <= {bound}"))
    if "enum" in spec:
        allowed = ", ".join(_text(value) for value in spec["enum"])
        rules.append((f"{name} not one of {spec['enum']}", f"{name} NOT IN ({allowed})"))
    if "pattern" in spec:
        pattern = spec["pattern"]
        rules.append(
            (f"{name} does not match {pattern}", f"NOT regexp_matches({name}, {_text(pattern)})")
        )
    return rules


def _first_broken_rule(sensor_type: str) -> str:
    """The first rule a row breaks, or null: the rules, then a sensor the registry lacks."""
    rules = [*contract_rules(sensor_type), ("unknown sensor", "places.sensor_id IS NULL")]
    branches = "\n".join(f"    WHEN {broken} THEN {_text(reason)}" for reason, broken in rules)
    return f"CASE\n{branches}\nEND"


def _clean(db: duckdb.DuckDBPyConnection, sensor_type: str, day: str, out: Path) -> dict[str, int]:
    """The first copy of each (sensor_id, seq) judged: clean with its place, or a reject
    with its reason; both in (sensor_id, seq) order.

    Two queries, as Spark's two writes: clean rows from every first copy, rejects from the
    copies of the keys that have a broken row (none on most days). One query into a
    temporary table for both took twice as long on the 18.1 M-reading day: DuckDB then
    holds the day's rows in memory only to read them back."""
    raw = landing_schema(sensor_type).names
    judged = f"""
        SELECT raw.*, {", ".join(f"places.{name}" for name in PLACES)},
            {_first_broken_rule(sensor_type)} AS reject_reason
        FROM {_read(out, f"raw_{sensor_type}", day)} AS raw
        LEFT JOIN (SELECT sensor_id, {", ".join(PLACES)} FROM registry) AS places
            USING (sensor_id)
    """
    first_copy = """
        QUALIFY row_number() OVER (
            PARTITION BY sensor_id, seq ORDER BY kafka_partition, kafka_offset
        ) = 1
    """
    clean_columns = [
        f"{_text(sensor_type)} AS sensor_type" if name == "sensor_type" else name for name in raw
    ]
    clean = f"""
        SELECT {", ".join([*clean_columns, *PLACES])}
        FROM ({judged} {first_copy})
        WHERE reject_reason IS NULL
        ORDER BY sensor_id, seq
    """
    rejects = f"""
        WITH judged AS ({judged}),
        broken AS (SELECT DISTINCT sensor_id, seq FROM judged WHERE reject_reason IS NOT NULL)
        SELECT {", ".join(raw)}, reject_reason
        FROM (SELECT * FROM judged SEMI JOIN broken USING (sensor_id, seq) {first_copy})
        WHERE reject_reason IS NOT NULL
        ORDER BY sensor_id, seq
    """
    asset = f"clean_{sensor_type}"
    return {
        asset: _write(db, clean, out, asset, day),
        f"{asset}_rejects": _write(db, rejects, out, f"{asset}_rejects", day),
    }


# daily_<type>_aggregates ----------------------------------------------------------------


@dataclass(frozen=True)
class Measures:
    """A type's measures in the steps of `transforms.aggregates.Measures`: per sensor and
    hour over the clean rows (`partials`, then `per_hour` over those), merged for any slice
    (`merged`), and the published columns (`final`)."""

    partials: list[str]
    merged: list[str]
    final: list[str]
    per_hour: list[str] = field(default_factory=list)


def _exact_sum(value: str) -> str:
    return f"sum(({value})::{EXACT})"


def _sums(*names: str) -> list[str]:
    return [f"sum({name}) AS {name}" for name in names]


def _ratio(numerator: str, denominator: str) -> str:
    """A division as Spark's (null, not infinity, when the denominator is 0)."""
    return f"{numerator}::DOUBLE / nullif({denominator}::DOUBLE, 0)"


def _traffic() -> Measures:
    congested = ", ".join(_text(level) for level in CONGESTED)
    speed = "average_speed_kmh"
    return Measures(
        partials=[
            "sum(vehicle_count) AS vehicles",
            f"{_exact_sum(f'{speed} * vehicle_count')} AS speed_x_vehicles",
            f"sum(vehicle_count) FILTER (WHERE {speed} IS NOT NULL) AS vehicles_with_speed",
            f"count({speed}) AS speeds",
            f"list({speed}) FILTER (WHERE {speed} IS NOT NULL) AS speed_values",
            _exact_sum(f"CASE WHEN congestion_level IN ({congested}) THEN interval_s ELSE 0.0 END")
            + " AS congested_s",
        ],
        merged=[
            *_sums("vehicles", "speed_x_vehicles", "vehicles_with_speed", "speeds", "congested_s"),
            "flatten(list(speed_values)) AS speed_values",
        ],
        final=[
            "vehicles::BIGINT AS vehicles",
            f"{_ratio('speed_x_vehicles', 'vehicles_with_speed')} AS mean_speed_kmh",
            "CASE WHEN speeds > 0 THEN list_aggregate(speed_values, 'quantile_cont', 0.85) END"
            " AS p85_speed_kmh",
            "congested_s::DOUBLE / 60 AS congestion_minutes",
        ],
    )


def _weather() -> Measures:
    partials, merged, final = [], [], []
    for measure in WEATHER_MEASURES:
        partials += [
            f"min({measure}) AS {measure}_min",
            f"{_exact_sum(measure)} AS {measure}_sum",
            f"count({measure}) AS {measure}_n",
            f"max({measure}) AS {measure}_max",
        ]
        merged += [
            f"min({measure}_min) AS {measure}_min",
            *_sums(f"{measure}_sum", f"{measure}_n"),
            f"max({measure}_max) AS {measure}_max",
        ]
        final += [
            f"{measure}_min",
            f"{_ratio(f'{measure}_sum', f'{measure}_n')} AS {measure}_mean",
            f"{measure}_max",
        ]
    partials.append(f"{_exact_sum('precipitation_mm')} AS rain_mm")
    return Measures(partials, [*merged, *_sums("rain_mm")], [*final, "rain_mm::DOUBLE AS rain_mm"])


def _energy() -> Measures:
    """The meter's first and last reading of an hour in `seq` order; an hour's kWh from the
    sensor's previous hour's last reading (`transforms.aggregates._with_kwh_consumed`). A
    peak reached more than once is dated at its last time: Spark's `max_by` keeps the last
    of equal values in the order it reads them, an hour's rows in `seq` order."""
    return Measures(
        partials=[
            "arg_min(energy_kwh, seq) AS first_kwh",
            "arg_max(energy_kwh, seq) AS last_kwh",
            "max(power_kw) AS peak_kw",
            "arg_max(event_time, (power_kw, event_time)) AS peak_at",
            f"{_exact_sum('power_kw')} AS power_sum",
            "count(power_kw) AS power_n",
        ],
        per_hour=[
            "last_kwh - coalesce(lag(last_kwh) OVER (PARTITION BY sensor_id ORDER BY hour),"
            " first_kwh) AS kwh_consumed"
        ],
        merged=[
            f"{_exact_sum('kwh_consumed')} AS kwh_consumed",
            *_sums("power_sum", "power_n"),
            "max(peak_kw) AS peak_kw",
            "arg_max(peak_at, (peak_kw, peak_at)) AS peak_at",
        ],
        final=[
            "kwh_consumed::DOUBLE AS kwh_consumed",
            "peak_kw",
            "peak_at",
            f"{_ratio('power_sum', 'power_n')} AS mean_kw",
            f"{_ratio('power_sum', 'power_n')} / nullif(peak_kw, 0) AS load_factor",
        ],
    )


MEASURES = {"traffic": _traffic, "weather": _weather, "energy": _energy}


def _aggregates(
    db: duckdb.DuckDBPyConnection, sensor_type: str, day: str, out: Path
) -> dict[str, int]:
    """Partials per sensor and hour over the clean rows, then all four slices (sensor or
    district, hour or day) merged from those partials as grouping sets, in
    `transforms.aggregates.ORDER` (nulls first, as Spark sorts)."""
    measures = MEASURES[sensor_type]()
    query = f"""
        WITH partials AS (
            SELECT district, sensor_id, date_trunc('hour', event_time) AS hour,
                count(*) AS readings,
                {_columns(measures.partials)}
            FROM {_read(out, f"clean_{sensor_type}", day)}
            GROUP BY district, sensor_id, hour
        ),
        hours AS (SELECT {_columns(["*", *measures.per_hour])} FROM partials),
        slices AS (
            SELECT district, sensor_id, hour,
                grouping(sensor_id) = 1 AS by_district,
                grouping(hour) = 1 AS by_day,
                date_trunc('day', min(hour)) AS day,
                sum(readings) AS readings,
                {_columns(measures.merged)}
            FROM hours
            GROUP BY GROUPING SETS (
                (district, sensor_id, hour), (district, sensor_id), (district, hour), (district)
            )
        )
        SELECT
            CASE WHEN by_district THEN 'district' ELSE 'sensor' END AS level,
            sensor_id,
            district,
            CASE WHEN by_day THEN 'day' ELSE 'hour' END AS granularity,
            CASE WHEN by_day THEN day ELSE hour END AS period_start,
            readings::BIGINT AS readings,
            {_columns(measures.final)}
        FROM slices
        ORDER BY level, granularity, district NULLS FIRST, sensor_id NULLS FIRST, period_start
    """
    asset = f"daily_{sensor_type}_aggregates"
    return {asset: _write(db, query, out, asset, day)}


def _columns(expressions: list[str]) -> str:
    return ",\n                ".join(expressions)


# anomaly_summary ------------------------------------------------------------------------


def _detect(
    db: duckdb.DuckDBPyConnection,
    pool: Executor,
    workers: int,
    out: Path,
    day: str,
    sensors: Mapping[str, Mapping[str, Any]],
) -> pa.Table:
    """The stream's rules over every sensor's clean day, the sensors of each clean table
    spread over the worker processes in chunks."""
    tasks = []
    for sensor_type in SENSOR_TYPES:
        clean = str(_path(out, f"clean_{sensor_type}", day))
        found = db.execute(f"SELECT DISTINCT sensor_id FROM read_parquet('{clean}') ORDER BY 1")
        ids = [sensor_id for (sensor_id,) in found.fetchall()]
        size = max(1, -(-len(ids) // (workers * CHUNKS_PER_WORKER)))
        for start in range(0, len(ids), size):
            tasks.append(pool.submit(detect_sensors, clean, ids[start : start + size], sensors))
    return pa.concat_tables([ANOMALY_SCHEMA.empty_table(), *(task.result() for task in tasks)])


def detect_sensors(
    clean: str, sensor_ids: list[str], sensors: Mapping[str, Mapping[str, Any]]
) -> pa.Table:
    """In a worker process: the anomalies of `sensor_ids` in the clean table `clean`, each
    sensor's rows given to the function Spark's `applyInArrow` runs (`sensor_detector`) as
    Spark gives them: an Arrow table per sensor, times naive UTC in microseconds."""
    db = _connect(threads=1)
    rows = db.sql(
        f"""
        SELECT * REPLACE (timezone('UTC', event_time) AS event_time)
        FROM read_parquet('{clean}') WHERE list_contains(?, sensor_id)
        ORDER BY sensor_id, event_time, seq
        """,
        params=[sensor_ids],
    ).to_arrow_table()
    detect = sensor_detector(sensors, RuleConfig())
    found = [detect(group).cast(ANOMALY_SCHEMA) for group in _per_sensor(rows)]
    return pa.concat_tables([ANOMALY_SCHEMA.empty_table(), *found])


def _per_sensor(rows: pa.Table) -> Iterator[pa.Table]:
    """Slices of rows sorted by sensor, one per sensor."""
    if rows.num_rows == 0:
        return
    runs = pc.run_end_encode(rows.column("sensor_id").combine_chunks()).run_ends.to_pylist()
    start = 0
    for end in runs:
        yield rows.slice(start, end - start)
        start = end


def _stream_files(lake: Lake, day: str) -> list[str]:
    """The stream's landed anomaly files of `day`, in the order the asset reads them."""
    folder = f"{LANDING}/anomalies/date={day}"
    return [info.path for info in lake.list_files(folder) if info.path.endswith(".parquet")]


def _stream(db: duckdb.DuckDBPyConnection, lake: Lake, day: str) -> str:
    """The stream's anomalies, the first landed copy of each id (a replay lands again), with
    `landed`: their place in the order read."""
    files = _stream_files(lake, day)
    if not files:
        db.register("no_stream", ANOMALY_SCHEMA.empty_table())
        return "SELECT *, 0::BIGINT AS landed FROM no_stream"
    listed = "[" + ", ".join(_text(path) for path in files) + "]"
    columns = ", ".join(ANOMALY_SCHEMA.names)
    return f"""
        SELECT {columns}, row_number() OVER (ORDER BY landed) AS landed FROM (
            SELECT {columns},
                (list_position({listed}, filename), file_row_number) AS landed
            FROM read_parquet({listed}, filename = true, file_row_number = true)
            QUALIFY row_number() OVER (PARTITION BY anomaly_id ORDER BY landed) = 1
        )
    """


def _anomaly_summary(
    db: duckdb.DuckDBPyConnection, lake: Lake, batch: pa.Table, day: str, out: Path
) -> dict[str, int]:
    """The stream's anomalies reconciled with the batch's (`transforms.anomalies.reconcile`):
    in the order they landed, each stream anomaly takes the first batch anomaly of its
    sensor and kind within the episode gap that no earlier one took (`both`); batch
    anomalies left over are `batch`. Then per kind and sensor: counts per source, first and
    last time, the worst severity (`summarize`)."""
    db.register("batch_found", batch)
    gap_ms = int(RuleConfig().episode_gap_s * 1000)
    severity_rank = " ".join(f"WHEN {_text(k)} THEN {v}" for k, v in SEVERITY.items())
    severity_name = " ".join(f"WHEN {v} THEN {_text(k)}" for k, v in SEVERITY.items())
    db.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE events AS
        WITH RECURSIVE
        stream AS (
            SELECT *, row_number() OVER (PARTITION BY sensor_id, kind ORDER BY landed) AS turn
            FROM ({_stream(db, lake, day)})
        ),
        batch AS (
            SELECT *, row_number() OVER (PARTITION BY sensor_id, kind ORDER BY event_time)
                AS place
            FROM batch_found
        ),
        walk(sensor_id, kind, turn, taken, matched) AS (
            SELECT DISTINCT sensor_id, kind, 0::BIGINT, NULL::BIGINT, []::BIGINT[] FROM stream
            UNION ALL
            SELECT s.sensor_id, s.kind, s.turn, pick.place,
                CASE WHEN pick.place IS NULL THEN w.matched
                     ELSE list_append(w.matched, pick.place) END
            FROM walk AS w
            JOIN stream AS s
                ON s.sensor_id = w.sensor_id AND s.kind = w.kind AND s.turn = w.turn + 1
            LEFT JOIN LATERAL (
                SELECT min(b.place) AS place FROM batch AS b
                WHERE b.sensor_id = s.sensor_id AND b.kind = s.kind
                    AND abs(epoch_ms(b.event_time) - epoch_ms(s.event_time)) <= {gap_ms}
                    AND NOT list_contains(w.matched, b.place)
            ) AS pick ON true
        ),
        taken AS (SELECT sensor_id, kind, turn, taken FROM walk WHERE turn > 0)
        SELECT s.* EXCLUDE (landed, turn),
            CASE WHEN taken.taken IS NULL THEN 'stream' ELSE 'both' END AS source
        FROM stream AS s JOIN taken USING (sensor_id, kind, turn)
        UNION ALL
        SELECT b.* EXCLUDE (place), 'batch' AS source
        FROM batch AS b ANTI JOIN taken
            ON taken.sensor_id = b.sensor_id AND taken.kind = b.kind AND taken.taken = b.place
        """
    )
    anomaly_columns = ", ".join(f"events.{name}" for name in ANOMALY_SCHEMA.names)
    events = f"""
        SELECT {anomaly_columns}, registry.district, events.source
        FROM events LEFT JOIN districts AS registry USING (sensor_id)
        ORDER BY events.event_time, events.sensor_id, events.kind
    """
    summary = f"""
        SELECT kind, sensor_id, sensor_type, district,
            count(*) FILTER (WHERE source IN ('stream', 'both')) AS stream_count,
            count(*) FILTER (WHERE source IN ('batch', 'both')) AS batch_count,
            min(event_time) AS first_seen,
            max(event_time) AS last_seen,
            CASE max(CASE severity {severity_rank} ELSE 0 END) {severity_name} END
                AS max_severity
        FROM events LEFT JOIN districts USING (sensor_id)
        GROUP BY ALL
        ORDER BY kind, sensor_id, sensor_type, district NULLS LAST
    """
    return {
        "anomaly_events": _write(db, events, out, "anomaly_events", day),
        "anomaly_summary": _write(db, summary, out, "anomaly_summary", day),
    }


# comparing two builds -------------------------------------------------------------------

AGGREGATE_KEY = ("level", "granularity", "district", "sensor_id", "period_start")
TOLERANCE = 1e-9
"""Relative difference allowed between two floats: sums are exact decimals in both engines,
but their conversion to a double and the divisions after it may round differently."""


def table_keys() -> dict[str, tuple[str, ...]]:
    """Every table a day's build writes, with the columns that name a row (none: the rows
    are compared as a multiset, e.g. raw's, where a re-landed offset may come twice)."""
    keys: dict[str, tuple[str, ...]] = {}
    for sensor_type in SENSOR_TYPES:
        keys[f"raw_{sensor_type}"] = ()
        keys[f"clean_{sensor_type}"] = ("sensor_id", "seq")
        keys[f"clean_{sensor_type}_rejects"] = ("sensor_id", "seq")
        keys[f"daily_{sensor_type}_aggregates"] = AGGREGATE_KEY
    keys["anomaly_events"] = ("anomaly_id",)
    keys["anomaly_summary"] = ("kind", "sensor_id")
    return keys


def compare(expected: Path, found: Path, day: str) -> list[str]:
    """What differs between the tables of `day` under two lake roots (Spark's and this
    module's): for each table, its columns, its rows (by key, floats within `TOLERANCE`)
    and, where the key orders the table, each row's place in the file. Empty when the two
    builds hold the same rows."""
    db = _connect()
    problems = []
    for asset, key in table_keys().items():
        paths = [root / table_partition_key(asset, day) for root in (expected, found)]
        missing = [str(path) for path in paths if not path.exists()]
        if missing:
            problems.append(f"{asset}: no table at {', '.join(missing)}")
            continue
        problems += _compare_table(db, asset, key, *paths)
    return problems


def _compare_table(
    db: duckdb.DuckDBPyConnection, asset: str, key: tuple[str, ...], expected: Path, found: Path
) -> list[str]:
    for name, path in (("expected", expected), ("found", found)):
        db.execute(
            f"CREATE OR REPLACE TEMP VIEW {name} AS "
            f"SELECT * FROM read_parquet('{path}', file_row_number = true)"
        )
    columns = {
        name: [(c, t) for c, t, *_ in db.execute(f"DESCRIBE {name}").fetchall()]
        for name in ("expected", "found")
    }
    names = [[c for c, _ in columns[name] if c != "file_row_number"] for name in columns]
    if names[0] != names[1]:
        return [f"{asset}: columns {names[0]} != {names[1]}"]
    counts = [db.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in columns]
    if counts[0] != counts[1]:
        return [f"{asset}: {counts[0]} rows != {counts[1]} rows"]
    if not key:
        return _compare_multisets(db, asset, names[0])
    doubles = {c for c, t in columns["expected"] if t in ("DOUBLE", "FLOAT")}
    return _compare_by_key(db, asset, key, names[0], doubles, counts[0])


def _compare_multisets(db: duckdb.DuckDBPyConnection, asset: str, names: list[str]) -> list[str]:
    listed = ", ".join(names)
    only = [
        db.execute(
            f"SELECT count(*) FROM (SELECT {listed} FROM {a} EXCEPT ALL SELECT {listed} FROM {b})"
        ).fetchone()[0]
        for a, b in (("expected", "found"), ("found", "expected"))
    ]
    if only == [0, 0]:
        return []
    return [f"{asset}: {only[0]} rows only in the expected build, {only[1]} only in the other"]


def _compare_by_key(
    db: duckdb.DuckDBPyConnection,
    asset: str,
    key: tuple[str, ...],
    names: list[str],
    doubles: set[str],
    rows: int,
) -> list[str]:
    listed = ", ".join(key)
    for name in ("expected", "found"):
        distinct = db.execute(f"SELECT count(*) FROM (SELECT DISTINCT {listed} FROM {name})")
        if distinct.fetchone()[0] != rows:
            return [f"{asset}: a key ({listed}) comes twice in the {name} build"]
    tests = []
    for column in [c for c in names if c not in key]:
        a, b = f"e.{column}", f"f.{column}"
        if column in doubles:
            near = f"abs({a} - {b}) <= {TOLERANCE} * greatest(1, abs({a}), abs({b}))"
            tests.append(
                f"CASE WHEN NOT ({a} IS NOT DISTINCT FROM {b} OR {near}) THEN '{column}' END"
            )
        else:
            tests.append(f"CASE WHEN {a} IS DISTINCT FROM {b} THEN '{column}' END")
    if asset != "anomaly_events":  # its order has ties (time, sensor, kind); the others none
        tests.append(
            "CASE WHEN e.file_row_number IS DISTINCT FROM f.file_row_number THEN 'place' END"
        )
    joined = " AND ".join(f"e.{c} IS NOT DISTINCT FROM f.{c}" for c in key)
    differing = db.execute(
        f"""
        SELECT {", ".join(f"coalesce(e.{c}, f.{c})" for c in key)},
            list_filter([{", ".join(tests)}], lambda x: x IS NOT NULL) AS columns
        FROM expected AS e FULL JOIN found AS f ON {joined}
        WHERE e.file_row_number IS NULL OR f.file_row_number IS NULL OR len(columns) > 0
        """
    ).fetchall()
    if not differing:
        return []
    samples = "; ".join(str(row) for row in differing[:5])
    return [f"{asset}: {len(differing)} of {rows} rows differ (key, columns): {samples}"]


def main(argv: list[str] | None = None) -> None:
    lake_dir, out, day = argv or sys.argv[1:]
    lake = Lake.from_settings(Settings(_env_file=None, lake_uri=Path(lake_dir).as_uri()))
    started = time.perf_counter()
    build = build_day(lake, day, Path(out), multiprocessing.cpu_count())
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "steps": build.seconds, "rows": build.rows}))


if __name__ == "__main__":
    main()
