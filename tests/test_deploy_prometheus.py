"""Prometheus files of the stack, checked by Prometheus's own promtool (`make prometheus`)."""

from __future__ import annotations

import subprocess

import yaml

from tests.deploy_support import PROMETHEUS, alert_exprs, promtool

# The list of alerts: each must exist (and is unit-tested in alerts_test.yml).
REQUIRED_ALERTS = {
    "ConsumerLagGrowing",
    "DeadLetterRateHigh",
    "NoDataFromSensorType",
    "LandingWriteErrors",
    "AssetCheckFailed",
    "ApiErrorRateHigh",
    "ApiLatencyP95High",
    "TargetDown",
}


def _promtool(*args: str) -> str:
    result = subprocess.run(
        [promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_config_is_valid() -> None:
    # --syntax-only: the compose service names in the targets do not resolve here.
    assert "SUCCESS" in _promtool("check", "config", "--syntax-only", "prometheus.yml")


def test_rules_are_valid() -> None:
    assert "SUCCESS" in _promtool("check", "rules", "alerts.yml")


def test_rules_unit_tests_pass() -> None:
    assert "SUCCESS" in _promtool("test", "rules", "alerts_test.yml")


def test_required_alerts_exist_and_are_unit_tested() -> None:
    assert set(alert_exprs()) >= REQUIRED_ALERTS
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert tested >= REQUIRED_ALERTS, REQUIRED_ALERTS - tested


def test_every_part_of_the_stack_is_scraped() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"stream-worker", "api", "kafka", "minio", "spark-master", "spark-workers"} <= jobs
    assert config["rule_files"] == ["alerts.yml"]
