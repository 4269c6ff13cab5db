"""Helpers of the deployment tests: the files under `docker/`, and the metric names in them."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
PROMETHEUS = DOCKER / "prometheus"
DASHBOARDS = DOCKER / "grafana" / "dashboards"
DATASOURCES = DOCKER / "grafana" / "provisioning" / "datasources"

# Metrics of third-party exporters: they are not exported by this repo's code, so the live
# check cannot see them. Each is a documented metric of the exporter named beside it.
THIRD_PARTY_METRICS = {
    "up": "Prometheus itself: 1 when a target's last scrape succeeded",
    "kafka_brokers": "kafka-exporter: brokers in the cluster",
    "kafka_consumergroup_lag": "kafka-exporter: lag per group, topic, partition",
    "kafka_topic_partition_current_offset": "kafka-exporter: end offset per partition",
    "minio_cluster_usage_total_bytes": "MinIO /minio/v2/metrics/cluster: bytes used",
}

# Named by a dashboard or alert but not exported yet: the failed asset checks, which Dagster's
# check_failure_alerts sensor counts into the lake for the API to serve. The live test fails
# once a name here is exported, so the entry is removed then; and fails if a name is neither.
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip


def promtool() -> str:
    """The promtool binary; `make prometheus` installs it, so its absence is a set-up error."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run `make prometheus` (installs Debian's prometheus)")
    return path


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> dict[str, list[str]]:
    """Every PromQL expression of every dashboard, by file name."""
    return {
        name: [
            target["expr"]
            for panel in panels(dashboard)
            for target in panel.get("targets", [])
            if target.get("expr")
        ]
        for name, dashboard in dashboards().items()
    }


def alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (inside `{...}` or `by (...)`), durations or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in _KEYWORDS:
            continue
        if match.start() > 0 and (
            expr[match.start() - 1].isdigit() or expr[match.start() - 1] == "."
        ):
            continue  # the `e` of 1e3, or a unit after a number
        names.add(match.group())
    return names


def referenced_metrics() -> set[str]:
    exprs = [e for exprs in dashboard_exprs().values() for e in exprs]
    exprs += list(alert_exprs().values())
    return {name for expr in exprs for name in metric_names(expr)}


def exported_names(exposition: str) -> set[str]:
    """Every series name a `/metrics` text can carry, including names of labelled metrics
    that have no sample yet (from `# TYPE`) and a histogram's `_bucket/_sum/_count`."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())
