"""No S3 key anywhere Dagster shows it: a Spark run over an S3 lake on the real MinIO, then
the webserver's GraphQL (resources, runs, logs, materialization and check metadata) and
every file Dagster stored, searched for the keys."""

import subprocess
from pathlib import Path

import httpx
import orjson
import pytest

from smartcity.demo import dagster_webserver_command
from smartcity.lake import Lake
from smartcity.layout import table_partition_key
from smartcity.services.processes import free_port, stop_sessions
from smartcity.settings import Settings
from smartcity_dagster.spark import s3a_credentials_env, spark_config
from tests.dagster_support import (
    MATERIALIZE,
    dagster_home,
    graphql,
    start_dagster,
    webserver_graphql,
)
from tests.stream_support import worker_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
DAY = "2026-11-27"
BUILT = ["raw_weather"]

ENTRY = """fragment Entry on MetadataEntry { label description
  ... on TextMetadataEntry { text } ... on JsonMetadataEntry { jsonString }
  ... on PathMetadataEntry { path } ... on UrlMetadataEntry { url }
  ... on MarkdownMetadataEntry { mdStr } ... on TableMetadataEntry { table { records } } }"""
WORKSPACE = """{ workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { ... on RepositoryLocation { repositories { name } } } } } } }"""
RESOURCES = """query($repo: RepositorySelector!) {
  allTopLevelResourceDetailsOrError(repositorySelector: $repo) {
  ... on ResourceDetailsList { results { name configuredValues { key value type }
  configFields { name defaultValueAsJson } } } } }"""
RUNS = """{ runsOrError { ... on Runs { results { runId status runConfigYaml
  tags { key value } } } } }"""
LOGS = (
    """query($run: ID!) { logsForRun(runId: $run) { ... on EventConnection { events {
  __typename ... on MessageEvent { message }
  ... on DisplayableEvent { metadataEntries { ...Entry } }
  ... on AssetCheckEvaluationEvent { evaluation { metadataEntries { ...Entry } } } } } } }"""
    + ENTRY
)
ASSETS = (
    """{ assetsOrError { ... on AssetConnection { nodes { key { path }
  assetMaterializations(limit: 5) { runId tags { key value }
  metadataEntries { ...Entry } } } } } }"""
    + ENTRY
)
CHECKS = (
    """query($asset: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $asset, checkName: $check, limit: 5) {
  runId evaluation { description metadataEntries { ...Entry } } } }"""
    + ENTRY
)
CHECK_NAMES = """query($asset: AssetKeyInput!) { assetNodeOrError(assetKey: $asset) {
  ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks { name } } } } } }"""


def secrets(settings: Settings) -> list[str]:
    assert settings.s3_access_key and settings.s3_secret_key
    return [settings.s3_access_key.get_secret_value(), settings.s3_secret_key.get_secret_value()]


def test_spark_properties_carry_no_key(live_settings: Settings) -> None:
    config = orjson.dumps(spark_config(live_settings)).decode()
    assert not [key for key in secrets(live_settings) if key in config]
    assert "spark.hadoop.fs.s3a.endpoint" in orjson.loads(config)
    assert sorted(s3a_credentials_env(live_settings).values()) == sorted(secrets(live_settings))


@pytest.fixture(scope="module")
def s3_lake(two_day_landing, live_settings: Settings) -> Settings:
    """The landed day (registry, landing files, progress) copied into an S3 lake."""
    landed, _ = two_day_landing
    settings = landed.model_copy(
        update={"lake_uri": live_settings.lake_uri.rsplit("/", 1)[0] + "/secrets"}
    )
    Lake.from_settings(landed).copy_into(Lake.from_settings(settings))
    return settings


def test_no_key_in_what_dagster_shows(s3_lake: Settings, tmp_path: Path) -> None:
    home = dagster_home(tmp_path / "dagster")
    env = {**worker_env(s3_lake), "DAGSTER_HOME": str(home)}
    for name in [n for n in env if n.startswith("AWS_")]:
        del env[name]
    for selection, partition in (("sensor_registry", []), (",".join(BUILT), ["--partition", DAY])):
        done = subprocess.run(
            [*MATERIALIZE, "--select", selection, *partition],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    lake = Lake.from_settings(s3_lake)
    assert lake.read_parquet(table_partition_key("raw_weather", DAY)).num_rows > 0, (
        "Spark wrote the table through S3A"
    )

    port = free_port()
    server = start_dagster(dagster_webserver_command(port), env)
    try:
        url = webserver_graphql(port)
        shown_texts = _everything_shown(url)
    finally:
        stop_sessions([server])

    shown = "\n".join(shown_texts)
    assert "fs.s3a.endpoint" in shown, "the pyspark resource's configuration was shown"
    assert "SMARTCITY_S3_SECRET_KEY" in shown, "the S3 resource shows the variable's name"
    assert "matches_landing" in shown and "rows" in shown, "metadata was shown"
    leaked = [i for i, key in enumerate(secrets(s3_lake)) if key in shown]
    assert leaked == [], "a key (0: access, 1: secret) is in a GraphQL answer"
    stored = [
        str(path.relative_to(home))
        for path in home.rglob("*")
        if path.is_file() and any(key.encode() in path.read_bytes() for key in secrets(s3_lake))
    ]
    assert stored == [], "a key is in a file Dagster stored (event log, runs, compute logs)"


def _everything_shown(url: str) -> list[str]:
    """The raw answers of every query that shows configuration, tags, logs or metadata."""
    answers = []

    def ask(query: str, variables: dict | None = None) -> dict:
        data = graphql(url, query, variables)
        answers.append(orjson.dumps(data).decode())
        return data

    [entry] = ask(WORKSPACE)["workspaceOrError"]["locationEntries"]
    [repo] = entry["locationOrLoadError"]["repositories"]
    selector = {"repositoryLocationName": entry["name"], "repositoryName": repo["name"]}
    resources = ask(RESOURCES, {"repo": selector})["allTopLevelResourceDetailsOrError"]
    assert {"pyspark", "s3", "smartcity"} <= {r["name"] for r in resources["results"]}
    runs = ask(RUNS)["runsOrError"]["results"]
    assert len(runs) == 2 and all(r["status"] == "SUCCESS" for r in runs)
    for run in runs:
        ask(LOGS, {"run": run["runId"]})
    ask(ASSETS)
    for asset in BUILT:
        key = {"path": [asset]}
        node = ask(CHECK_NAMES, {"asset": key})["assetNodeOrError"]
        for check in node["assetChecksOrError"]["checks"]:
            executions = ask(CHECKS, {"asset": key, "check": check["name"]})
            assert executions["assetCheckExecutions"], (asset, check["name"])
    answers.append(httpx.get(url.replace("/graphql", "/server_info"), timeout=10).text)
    return answers
