"""Settings: defaults, one-line errors naming the variable, and the contract copy."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from smartcity.contract import ContractError, reading_schema, validate_reading
from smartcity.settings import Settings, SettingsError, load_settings, settings_env


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("SMARTCITY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_follow_the_architecture(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.topic_prefix == "smartcity."
    assert settings.all_topics == [
        "smartcity.traffic",
        "smartcity.weather",
        "smartcity.energy",
        "smartcity.anomalies",
        "smartcity.deadletter",
    ]
    assert settings.lake_uri == (tmp_path / "lake").as_uri()
    assert settings.lake_scheme == "file"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SMARTCITY_LAKE_URI", "ftp://nowhere"),
        ("SMARTCITY_LAKE_URI", "relative/path"),
        ("SMARTCITY_LAKE_URI", "s3://"),
        ("SMARTCITY_KAFKA_BOOTSTRAP", "localhost"),
        ("SMARTCITY_KAFKA_BOOTSTRAP", "localhost:99999"),
        ("SMARTCITY_S3_ENDPOINT", "minio:9000"),
        ("SMARTCITY_TOPIC_PREFIX", "bad prefix"),
        ("SMARTCITY_TOPIC_PARTITIONS", "zero"),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message


def test_dotenv_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SMARTCITY_LAKE_URI=s3://city/lake\n")
    settings = load_settings()
    assert settings.lake_uri == "s3://city/lake"
    assert settings.lake_scheme == "s3"


def test_services_env_is_read_and_dotenv_wins(tmp_path: Path) -> None:
    runtime = tmp_path / ".runtime"
    runtime.mkdir()
    (runtime / "services.env").write_text(
        "export SMARTCITY_KAFKA_BOOTSTRAP=127.0.0.1:4242\nexport SMARTCITY_S3_ENDPOINT=http://127.0.0.1:9\n"
    )
    (tmp_path / ".env").write_text("SMARTCITY_S3_ENDPOINT=http://127.0.0.1:10\n")
    settings = load_settings()
    assert settings.kafka_bootstrap == "127.0.0.1:4242"
    assert settings.s3_endpoint == "http://127.0.0.1:10"


def test_the_packaged_contract_is_the_one_the_decoder_uses() -> None:
    packaged = Path(__file__).resolve().parents[1] / "smartcity" / "contracts"
    assert orjson.loads((packaged / "sensor-reading.schema.json").read_bytes()) == reading_schema()
    assert reading_schema()["$id"] == "smartcity/sensor-reading/v1"


def test_contract_rejects_what_it_should() -> None:
    good = {
        "schema_version": 1,
        "sensor_id": "WEATHER_0001",
        "sensor_type": "weather",
        "event_time": "2026-11-27T08:15:00.000Z",
        "seq": 7,
        "temperature_c": 4.5,
        "humidity_pct": 81.0,
        "pressure_hpa": 1012.3,
        "wind_speed_ms": 3.2,
        "precipitation_mm": 0.0,
        "source": "simulated",
    }
    validate_reading(good)
    for broken in (
        {**good, "temperature_c": 99.0},
        {**good, "sensor_id": "TRAFFIC_0001"},
        {**good, "event_time": "2026-11-27T08:15:00+01:00"},
        {key: value for key, value in good.items() if key != "seq"},
    ):
        with pytest.raises(ContractError):
            validate_reading(broken)


def test_settings_pass_to_a_child_as_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a test or a bench starts gets the settings it was given, whatever the folder's
    own `.env` says."""
    (tmp_path / ".env").write_text("SMARTCITY_SPARK_MASTER=spark://127.0.0.1:1\n")
    given = Settings(
        _env_file=None,
        runtime_dir=tmp_path / "elsewhere",
        lake_uri="s3://city/lake",
        s3_secret_key=SecretStr("not-in-the-repr"),
        topic_replication=3,
    )
    for name, value in settings_env(given).items():
        monkeypatch.setenv(name, value)
    assert load_settings() == given
