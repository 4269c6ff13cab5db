"""The step of the per-type tables (`assets/layers.py`): each type's chain in a thread of its
own, and what stops one chain stops no other."""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from smartcity.lake import Lake
from smartcity.layout import table_partition_key
from smartcity.settings import SENSOR_TYPES, Settings
from smartcity_dagster.assets.layers import Layer, sensor_type_tables
from smartcity_dagster.assets.publish import Publication
from smartcity_dagster.resources import SmartcityResource, build_resources
from smartcity_dagster.tables import stage_table
from tests.dagster_support import smartcity_env

DAY = "2026-11-27"
BROKEN = "traffic"


def _layer(stage: str, before: str | None, together: threading.Barrier) -> Layer:
    """A table per type that holds its type's name, staged and published for real; the
    middle stage of `BROKEN` raises instead. The first stage of each type waits for the
    others' at `together`: it times out unless the types run at once."""

    def spec(sensor_type: str) -> dg.AssetSpec:
        deps = [f"{before}_{sensor_type}"] if before else []
        return dg.AssetSpec(f"{stage}_{sensor_type}", deps=deps)

    def build(
        context: dg.AssetExecutionContext,
        smartcity: SmartcityResource,
        spark: SparkSession,
        sensor_type: str,
    ) -> Publication:
        if before is None:
            together.wait()
        name = f"{stage}_{sensor_type}"
        if stage == "second" and sensor_type == BROKEN:
            raise RuntimeError(f"{name} broke")
        publication = Publication(context, smartcity.lake, name)
        table = pa.table({"sensor_type": [sensor_type]})
        publication.audit(DAY, {name: stage_table(smartcity.lake, table, name, DAY)})
        return publication

    return Layer(spec, build)


@pytest.mark.integration
def test_an_error_stops_its_own_types_chain_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(_env_file=None, lake_uri=(tmp_path / "lake").as_uri())
    together = threading.Barrier(len(SENSOR_TYPES), timeout=60)
    stages = ["first", "second", "third"]
    step = sensor_type_tables(
        "tables", [_layer(s, b, together) for s, b in zip(stages, [None, *stages], strict=False)]
    )
    with smartcity_env(monkeypatch, settings):
        result = dg.materialize(
            [step],
            partition_key=DAY,
            resources=build_resources(settings),
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert f"second_{BROKEN} broke" in str(failure.step_failure_data.error)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    expected = {f"{s}_{t}" for s in stages for t in SENSOR_TYPES} - {
        f"second_{BROKEN}",
        f"third_{BROKEN}",
    }
    assert materialized == expected
    lake = Lake.from_settings(settings)
    for table in expected:
        published = lake.read_parquet(table_partition_key(table, DAY))
        assert published["sensor_type"].to_pylist() == [table.split("_", 1)[1]]
    assert not lake.exists(table_partition_key(f"second_{BROKEN}", DAY))
