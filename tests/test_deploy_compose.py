"""The compose stack, checked at the YAML level: there is no Docker engine (nor compose
plugin) on the CI machines, so these tests check what `docker compose config` would."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from smartcity.services import jvm
from smartcity.settings import ENV_PREFIX, Settings
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
SPARK_TARGET = "spark-executor"
"""The Dockerfile's stage of the Spark master's and workers' image."""
DAGSTER_SERVICES = ("dagster-code", "dagster-webserver", "dagster-daemon")


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
            target = service["build"].get("target")
            expected = (
                f"smartcity-spark:{version}" if target == SPARK_TARGET else f"smartcity:{version}"
            )
            assert image == expected, f"{name}: the image of target {target} is {image}"


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


def _stages() -> dict[str, tuple[str, str]]:
    """The Dockerfile's stages: name -> (what it is FROM, its instructions)."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    parts = re.split(r"^FROM (\S+) AS (\S+)$", text, flags=re.M)
    triples = zip(parts[1::3], parts[2::3], parts[3::3], strict=True)
    return {name: (base, body) for base, name, body in triples}


def _lineage(stages: dict[str, tuple[str, str]], name: str) -> str:
    """The instructions of stage `name` and of every stage it is built FROM."""
    base, body = stages[name]
    return (_lineage(stages, base) if base in stages else "") + body


def _env(body: str) -> dict[str, str]:
    """The variables that the ENV instructions of `body` set."""
    lines = re.findall(r"^ENV (.+)$", body, re.M)
    return dict(pair for line in lines for pair in re.findall(r"([A-Z_]+)=(\S+)", line))


def test_s3a_jars_are_resolved_by_maven_at_build_time() -> None:
    stages = _stages()
    runtime = list(stages)[-1]
    [maven] = [name for name, (base, _) in stages.items() if "mvn " in stages[name][1]]
    base, body = stages[maven]
    text = (REPO / "Dockerfile").read_text()
    pinned = re.search(rf"^ARG {base.strip('${}')}=maven:(\S+)$", text, re.M)
    assert pinned and re.search(r"\d+\.\d+\.\d+", pinned.group(1)), base
    assert "dependency:copy-dependencies" in body and "spark-s3a.pom.xml" in body
    copied = re.search(rf"^COPY --from={maven} (\S+) (\S+)$", stages[runtime][1], re.M)
    assert copied, f"the runtime stage does not copy the jars of stage {maven}"
    assert _env(stages[runtime][1])[jvm.JARS_DIR_ENV] == copied.group(2)
    assert f"-DoutputDirectory={copied.group(1)}/spark-s3a" in body
    assert "mvn" not in _lineage(stages, runtime), "no Maven where the platform runs"


def test_pre_resolved_jars_need_no_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's layout (`<dir>/spark-s3a/*.jar`) is the classpath; Maven is not run
    (there is none on PATH here); a folder without the pom's jars is an error naming it."""
    jars = tmp_path / "spark-s3a"
    jars.mkdir()
    for name in ("hadoop-aws-3.5.0.jar", "bundle-2.35.4.jar"):
        (jars / name).write_bytes(b"")
    monkeypatch.setenv(jvm.JARS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert jvm.classpath("spark-s3a").split(os.pathsep) == [
        str(jars / "bundle-2.35.4.jar"),
        str(jars / "hadoop-aws-3.5.0.jar"),
    ]
    with pytest.raises(jvm.JvmSetupError, match=jvm.JARS_DIR_ENV):
        jvm.classpath("kafka-broker")


def test_java_home_holds_on_every_cpu_architecture() -> None:
    text = (REPO / "Dockerfile").read_text() + COMPOSE.read_text()
    assert not re.search(r"amd64|arm64|aarch64|x86_64", text), "a path of one CPU architecture"
    stages = _stages()
    for stage in (list(stages)[-1], SPARK_TARGET):
        lineage = _lineage(stages, stage)
        home = _env(lineage)["JAVA_HOME"]
        assert re.search(rf'readlink -f "\$\(command -v java\)".*\s{home}\b', lineage), stage


def test_executors_get_the_drivers_libraries_but_not_the_project() -> None:
    stages = _stages()
    executor = _lineage(stages, SPARK_TARGET)
    install = re.search(r"pip install [^\n]*-c (\S+constraints\.txt) ([^\n&]+)", executor)
    assert install, "the executor image installs nothing pinned by constraints.txt"
    assert set(install.group(2).split()) == {"pandas", "pyarrow", "numpy"}
    pins = (REPO / "constraints.txt").read_text()
    assert all(re.search(rf"^{name}==\S+$", pins, re.M) for name in ("pandas", "pyarrow", "numpy"))
    spark = re.search(r"^ARG SPARK_VERSION=(\S+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert spark and f"\npyspark=={spark.group(1)}\n" in pins, "cluster and driver: one Spark"
    copied = re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", executor, re.M)
    sources = {source for line in copied for source in line.split()}
    assert sources <= {"constraints.txt", "/opt/spark"}, sources
    assert "pip install ." not in executor and "pip install --no-deps" not in executor
    assert re.search(r"^ARG PYTHON_VERSION=", (REPO / "Dockerfile").read_text(), re.M)
    runtime = list(stages)[-1]
    shared = stages[runtime][0]
    assert stages[SPARK_TARGET][0] == shared, "executors and driver start from one stage"
    assert stages[shared][0].startswith("python:${PYTHON_VERSION}-"), "and so one Python"
    services = compose()["services"]
    python = services["dagster-code"]["environment"]["SMARTCITY_SPARK_EXECUTOR_PYTHON"]
    assert _env(executor)["PYSPARK_PYTHON"] == python
    for name in ("spark-master", "spark-worker"):
        assert services[name]["build"]["target"] == SPARK_TARGET, name


def test_dagster_runs_on_postgres_with_the_code_server_in_the_workspace() -> None:
    services = compose()["services"]
    workspace = yaml.safe_load((DOCKER / "dagster" / "workspace.yaml").read_text())
    [location] = workspace["load_from"]
    server = location["grpc_server"]
    code = services["dagster-code"]
    command = code["command"].split()
    assert server["location_name"] == command[command.index("--location-name") + 1]
    for name in DAGSTER_SERVICES:
        env = services[name]["environment"]
        assert env[server["host"]["env"]] == "dagster-code"
        assert env[server["port"]["env"]] == command[command.index("-p") + 1]
        if name != "dagster-code":
            assert "-w /opt/dagster/home/workspace.yaml" in services[name]["command"], name
    instance = yaml.safe_load((REPO / "smartcity/services/dagster-deployment.yaml").read_text())
    assert set(instance["storage"]) == {"postgres"}
    assert "/opt/" not in yaml.safe_dump(instance), "no path of the image in the instance"
    assert "compute_logs" not in instance, "runs' logs go under $DAGSTER_HOME wherever it is"


def test_every_platform_setting_in_compose_is_a_setting() -> None:
    """SMARTCITY_* names that compose gives the services are fields of `Settings` (the Spark
    master and executor Python included): a misspelt one would be ignored silently."""
    fields = {f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields}
    for name, service in compose()["services"].items():
        given = {key for key in service.get("environment") or {} if key.startswith(ENV_PREFIX)}
        assert given <= fields, f"{name}: {given - fields}"
    dagster = compose()["services"]["dagster-code"]["environment"]
    assert dagster["SMARTCITY_SPARK_MASTER"] == "spark://spark-master:7077"
