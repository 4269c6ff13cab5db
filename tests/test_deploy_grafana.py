"""Grafana dashboards: they load, use only the provisioned data source, and every metric
they (or the alert rules) name is one that something in the stack exports."""

from __future__ import annotations

import yaml

from tests.deploy_support import (
    DATASOURCES,
    THIRD_PARTY_METRICS,
    dashboards,
    panels,
    referenced_metrics,
)

EXPECTED = {"pipeline-overview.json", "data-quality.json", "api.json", "city-view.json"}


def _provisioned_uids() -> set[str]:
    uids = set()
    for path in DATASOURCES.glob("*.yaml"):
        uids |= {source["uid"] for source in yaml.safe_load(path.read_text())["datasources"]}
    return uids


def _datasource_refs(node: object) -> list[object]:
    """Every `datasource` value anywhere in a dashboard (panels, targets, templating)."""
    if isinstance(node, dict):
        found = [node["datasource"]] if "datasource" in node else []
        return found + [ref for value in node.values() for ref in _datasource_refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _datasource_refs(item)]
    return []


def test_dashboards_load_with_unique_uids() -> None:
    loaded = dashboards()
    assert set(loaded) == EXPECTED
    uids = [dashboard["uid"] for dashboard in loaded.values()]
    assert len(set(uids)) == len(uids)
    for name, dashboard in loaded.items():
        ids = [panel["id"] for panel in panels(dashboard)]
        assert len(set(ids)) == len(ids), name
        assert any(panel.get("targets") for panel in panels(dashboard)), name


def test_only_the_provisioned_data_source_is_referenced() -> None:
    uids = _provisioned_uids()
    assert uids == {"prometheus"}
    for name, dashboard in dashboards().items():
        refs = _datasource_refs(dashboard)
        assert refs, name
        for ref in refs:
            assert isinstance(ref, dict) and ref.get("uid") in uids, f"{name}: {ref}"


def test_city_view_has_a_map_of_the_sensors() -> None:
    city = dashboards()["city-view.json"]
    maps = [panel for panel in panels(city) if panel["type"] == "geomap"]
    assert maps and "smartcity_stream_sensor_congestion_level" in maps[0]["targets"][0]["expr"]
    layer = maps[0]["options"]["layers"][0]
    assert layer["location"] == {"mode": "coords", "latitude": "latitude", "longitude": "longitude"}


def test_unknown_metric_names_are_only_ours_or_allow_listed() -> None:
    """Names outside the smartcity namespace must be in the third-party allow-list (the
    live test checks every smartcity_* name against real /metrics output)."""
    for name in referenced_metrics():
        assert name.startswith("smartcity_") or name in THIRD_PARTY_METRICS, name
