"""One settings object for every process of the platform.

Values come from `SMARTCITY_*` environment variables, then from the `services.env` that
`smartcity services up` writes into the runtime folder, then from an optional `.env`.
A wrong value is reported as one line naming the variable (see `SettingsError`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SMARTCITY_"
SENSOR_TYPES: tuple[str, ...] = ("traffic", "weather", "energy")
SensorType = Literal["traffic", "weather", "energy"]


class SettingsError(ValueError):
    """A setting has a wrong value; the message is one line that names the variable."""


def default_runtime_dir() -> Path:
    return Path.cwd() / ".runtime"


JVM_MEMORY = r"^[1-9][0-9]*[kKmMgG]?$"
"""A JVM memory size as Spark takes it: 4g, 1536m."""


class Settings(BaseSettings):
    """Where the platform's parts find each other."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    runtime_dir: Path = Field(default_factory=default_runtime_dir)
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_timeout_s: float = Field(default=6.0, gt=0, le=60)
    topic_prefix: str = "smartcity."
    topic_partitions: int = Field(default=3, ge=1, le=1000)
    topic_replication: int = Field(
        default=1,
        ge=1,
        le=16,
        description="replicas of each platform topic; from 3 on, writes need 2 in sync",
    )
    lake_uri: str = Field(default_factory=lambda: (Path.cwd() / "lake").resolve().as_uri())
    s3_endpoint: str | None = None
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    api_key: SecretStr | None = None
    ingest_key: SecretStr | None = Field(
        default=None, description="key that writes readings (X-API-Key on POST /api/v1/readings)"
    )
    mqtt_broker: str = Field(default="127.0.0.1:1883", description="MQTT broker host:port")
    registry_refresh_s: float = Field(
        default=10.0,
        ge=0.1,
        le=3600,
        description="how often long-running readers look for a newly imported sensor registry",
    )
    api_cors_origins: str = Field(
        default="", description="comma-separated origins allowed by the API's CORS, or *"
    )
    api_cache_mb: int = Field(
        default=1024, ge=16, le=1_048_576, description="memory each API worker keeps lake reads in"
    )
    api_response_cache_s: float = Field(
        default=1.0, ge=0, le=60, description="how long the API reuses a hot route's answer"
    )
    event_time_ahead_s: float = Field(
        default=86_400.0,
        gt=0,
        description="how far after its broker timestamp a reading may be dated (a fast clock "
        "of hours is kept; a day ahead measures nothing that has happened)",
    )
    event_time_behind_s: float = Field(
        default=7 * 86_400.0,
        gt=0,
        description="how far before its broker timestamp a reading may be dated (a gateway "
        "that buffered through an outage; the brokers keep a week; a backfill widens it)",
    )
    spark_master: str = "local[*]"
    spark_driver_memory: str = Field(
        default="3g",
        pattern=JVM_MEMORY,
        description="the Spark driver's heap (in local mode the executors' too): the bench's "
        "day builds its three types at once in 3g, 4g only lets the collector grow the heap",
    )
    spark_executor_python: str | None = Field(
        default=None,
        description="the Python a cluster's executors run (local mode runs this interpreter)",
    )
    spark_cores_max: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="cores one run may take of a standalone cluster (all it offers when unset)",
    )
    spark_offheap_memory: str = Field(
        default="1536m", pattern=JVM_MEMORY, description="local Spark's sort and shuffle memory"
    )
    spark_remote: str | None = Field(
        default=None,
        pattern=r"^sc://[^/]+$",
        description="a kept Spark Connect server (sc://host:port) that runs take their session "
        "from, instead of starting a driver JVM each (`smartcity services up --spark`)",
    )
    spark_connect_patience_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="how long a run's Spark Connect client retries a server that stopped "
        "answering before the run's step fails",
    )
    spark_connect_token: SecretStr | None = Field(
        default=None,
        description="the token the Spark Connect server at SMARTCITY_SPARK_REMOTE asks for",
    )
    partitions_start: str = Field(default="2026-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$")
    alert_webhook_url: str | None = None
    kafka_port: int = Field(default=0, ge=0, le=65535)
    s3_port: int = Field(default=0, ge=0, le=65535)
    mqtt_port: int = Field(default=0, ge=0, le=65535)
    mqtt_client_id: str = Field(
        default="smartcity-bridge",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="the MQTT bridge's client id: names its persistent session on the broker",
    )
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None

    @field_validator("kafka_bootstrap", "mqtt_broker")
    @classmethod
    def _bootstrap_is_host_port_list(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @field_validator("lake_uri")
    @classmethod
    def _lake_uri_is_file_or_s3(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "file" and parts.path.startswith("/"):
            return value.rstrip("/")
        if parts.scheme == "s3" and parts.netloc:
            return value.rstrip("/")
        raise ValueError(f"expected file:///absolute/path or s3://bucket[/prefix], got {value!r}")

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint_is_http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"expected http(s)://host:port, got {value!r}")
        return value.rstrip("/")

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_a_legal_topic_start(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "._-" for c in value):
            raise ValueError(f"use letters, digits, '.', '_' or '-', got {value!r}")
        return value

    @property
    def cors_origins(self) -> list[str]:
        return [origin.strip() for origin in self.api_cors_origins.split(",") if origin.strip()]

    @property
    def lake_scheme(self) -> str:
        return urlsplit(self.lake_uri).scheme

    def topic(self, name: str) -> str:
        """The full topic name for `traffic`, `weather`, `energy`, `anomalies`, `deadletter`."""
        return f"{self.topic_prefix}{name}"

    def reading_topic(self, sensor_type: str) -> str:
        return self.topic(sensor_type)

    @property
    def all_topics(self) -> list[str]:
        return [self.topic(name) for name in (*SENSOR_TYPES, "anomalies", "deadletter")]

    def services_env_file(self) -> Path:
        return self.runtime_dir / "services.env"


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting of `settings` as its `SMARTCITY_*` variable (secrets revealed, unset
    ones left out): a process started with these loads the same settings, whatever its own
    `.env` or runtime folder says."""
    env = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is not None:
            plain = value.get_secret_value() if isinstance(value, SecretStr) else value
            env[f"{ENV_PREFIX}{name.upper()}"] = str(plain)
    return env


def _services_env_file() -> Path:
    runtime = os.environ.get(f"{ENV_PREFIX}RUNTIME_DIR")
    return (Path(runtime) if runtime else default_runtime_dir()) / "services.env"


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    message = first["msg"].removeprefix("Value error, ")
    return f"{ENV_PREFIX}{field.upper()}: {message}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; `SettingsError` with one line if a value is wrong."""
    try:
        return Settings(_env_file=(_services_env_file(), ".env"), **overrides)  # type: ignore[call-arg]
    except ValidationError as error:
        raise SettingsError(_one_line(error)) from None
