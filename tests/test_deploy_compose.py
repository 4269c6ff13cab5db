"""The compose stack, checked at the YAML level: there is no Docker engine (nor compose
plugin) on the CI machines, so these tests check what `docker compose config` would."""

from __future__ import annotations

import re
import tomllib

from tests.deploy_support import COMPOSE, DOCKER, REPO, compose

SECRETS = {
    "KAFKA_CLUSTER_ID",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "SMARTCITY_S3_ACCESS_KEY",
    "SMARTCITY_S3_SECRET_KEY",
    "DAGSTER_PG_PASSWORD",
    "SMARTCITY_API_KEY",
    "SMARTCITY_INGEST_KEY",
    "SMARTCITY_MQTT_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
}
PROFILES = {"stream", "batch", "api", "ingest", "simulator", "monitoring", "all"}


def _variables(text: str) -> dict[str, str]:
    """`${VAR...}` references (not `$$VAR`, compose's escape) -> their modifier."""
    found: dict[str, str] = {}
    for match in re.finditer(r"(?<!\$)\$\{([A-Z0-9_]+)(:?[-?+][^}]*)?\}", text):
        found.setdefault(match.group(1), match.group(2) or "")
    return found


def _example() -> dict[str, str]:
    lines = (DOCKER / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_every_image_is_pinned_to_a_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for name, service in compose()["services"].items():
        image = service.get("image")
        assert image, f"{name}: no image"
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and "$" not in tag, f"{name}: {image}"
        assert re.search(r"\d", tag), f"{name}: {image} is not pinned to a version"
        if "build" in service:
            assert image == f"smartcity:{version}", f"{name}: the project image is {image}"


def test_every_variable_is_documented_and_every_secret_required() -> None:
    text = COMPOSE.read_text()
    variables = _variables(text)
    example = _example()
    assert set(variables) <= set(example), set(variables) - set(example)
    for secret in SECRETS:
        assert variables.get(secret, "").startswith(":?"), f"{secret} must be ${{{secret}:?...}}"
        assert example[secret] == "", f".env.example must not hold a value for {secret}"
    # Every secret use is a required one: no `${SECRET:-default}` anywhere.
    for match in re.finditer(r"\$\{([A-Z0-9_]+)(:?[-?+])", text):
        if match.group(1) in SECRETS:
            assert match.group(2) == ":?", f"{match.group(0)}: a secret cannot have a default"


def test_dependencies_name_services_with_valid_conditions() -> None:
    services = compose()["services"]
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert spec["condition"] in conditions, f"{name} -> {dependency}: {spec}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            if spec["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", dependency
            # A service must not depend on one that a profile may leave out.
            assert set(services[dependency].get("profiles", [])) <= set(
                service.get("profiles", [])
            ) or not services[dependency].get("profiles"), f"{name} -> {dependency}: profiles"


def test_profiles_are_known_and_all_holds_everything() -> None:
    for name, service in compose()["services"].items():
        profiles = set(service.get("profiles", []))
        assert profiles <= PROFILES, f"{name}: {profiles - PROFILES}"
        assert not profiles or "all" in profiles, f"{name}: missing from profile all"


def test_long_running_services_have_health_checks() -> None:
    for name, service in compose()["services"].items():
        if service.get("restart") == "no" or name in {"spark-worker", "simulator"}:
            continue
        assert "healthcheck" in service, f"{name}: no healthcheck"


def test_kafka_cluster_is_replicated() -> None:
    services = compose()["services"]
    brokers = [s for n, s in services.items() if re.fullmatch(r"kafka-\d", n)]
    assert len(brokers) == 3
    ids = {b["environment"]["KAFKA_NODE_ID"] for b in brokers}
    assert ids == {"1", "2", "3"}
    for broker in brokers:
        env = broker["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
    command = services["kafka-init"]["command"]
    assert "--replication 3" in command and "topics create" in command


def test_scalable_services_have_no_fixed_name_or_host_port() -> None:
    services = compose()["services"]
    for name in ("stream-worker", "spark-worker"):
        assert "container_name" not in services[name] and "ports" not in services[name]


def test_api_key_is_on_and_dagster_uses_postgres() -> None:
    services = compose()["services"]
    assert "SMARTCITY_API_KEY" in services["api"]["environment"]
    assert "SMARTCITY_INGEST_KEY" in services["api"]["environment"]
    for name in ("dagster-code", "dagster-webserver", "dagster-daemon"):
        assert services[name]["environment"]["DAGSTER_PG_HOST"] == "postgres"
    assert "smartcity_dagster.definitions" in services["dagster-code"]["command"]


def test_the_mqtt_broker_lets_in_only_its_users() -> None:
    services = compose()["services"]
    config = (DOCKER / "mosquitto" / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in config and "password_file" in config
    bridge = services["mqtt-bridge"]["environment"]
    assert bridge["SMARTCITY_MQTT_BROKER"] == "mosquitto:1883"
    assert {"SMARTCITY_MQTT_USERNAME", "SMARTCITY_MQTT_PASSWORD"} <= set(bridge)
    assert "bridge mqtt" in services["mqtt-bridge"]["command"]


def test_mounted_files_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name}: {source} missing"


def test_the_image_serves_the_map_built_from_its_lock_file() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG NODE_VERSION=\d+\.\d+\.\d+$", text, re.M)
    assert "npm ci" in text and "package-lock.json" in text
    assert "COPY --from=web /src/smartcity_api/map ./smartcity_api/map" in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "web/node_modules" in ignored and "smartcity_api/map" in ignored


def test_dockerfile_is_pinned_multi_stage_and_non_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    version = re.search(r"^ARG PYTHON_VERSION=(\S+)$", text, re.M)
    assert version and re.fullmatch(r"3\.\d+\.\d+", version.group(1))
    assert "constraints.txt" in text and "openjdk-17" in text
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in {"root", "0"}
