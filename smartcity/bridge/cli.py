"""`smartcity bridge ...`: protocol bridges into Kafka."""

from __future__ import annotations

import logging

import typer

from smartcity.bridge.mqtt import BridgeOptions, MqttBridge
from smartcity.cli_support import UserError, friendly_errors, settings_or_exit
from smartcity.ingest import ReadingGate, ingest_producer
from smartcity.kafka import cluster_metadata
from smartcity.lake import Lake
from smartcity.settings import SENSOR_TYPES, Settings

log = logging.getLogger(__name__)

bridge_app = typer.Typer(help="Bridges from sensor protocols into Kafka.", no_args_is_help=True)


@bridge_app.command("mqtt")
@friendly_errors
def mqtt_command(
    client_id: str = typer.Option(
        None,
        help="The MQTT client id, which names the bridge's persistent session on the broker "
        "(default: SMARTCITY_MQTT_CLIENT_ID). Run one bridge per client id.",
    ),
    metrics_host: str = typer.Option("127.0.0.1", help="Address of /metrics and /healthz."),
    metrics_port: int = typer.Option(9109, min=0, max=65535, help="Port (0: a free one)."),
) -> None:
    """Bridge MQTT readings (smartcity/+/+, QoS 1) into Kafka until SIGTERM/SIGINT.

    A message is acknowledged on MQTT only once Kafka has it (its reading topic, or the
    dead-letter topic if it breaks the contract or disagrees with its topic).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = settings_or_exit(**({"mqtt_client_id": client_id} if client_id else {}))
    _check_kafka(settings)
    lake = Lake.from_settings(settings)
    options = BridgeOptions(
        client_id=settings.mqtt_client_id,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
    )
    gate = ReadingGate.for_lake(lake, settings.registry_refresh_s)
    bridge = MqttBridge(settings, options, gate, ingest_producer(settings))
    bridge.install_signal_handlers()
    bridge.connect()
    totals = bridge.run()
    log.info(
        "stopped: %d received, %d produced, %d dead-lettered %s, %d not delivered",
        totals.received,
        totals.produced,
        totals.dead_letters.total(),
        dict(totals.dead_letters),
        totals.failed,
    )


def _check_kafka(settings: Settings) -> None:
    """The broker answers and the topics exist: else every produce would fail minutes later."""
    topics = cluster_metadata(settings).topics
    wanted = [*(settings.reading_topic(t) for t in SENSOR_TYPES), settings.topic("deadletter")]
    missing = [topic for topic in wanted if topic not in topics]
    if missing:
        raise UserError(
            f"topics {', '.join(missing)} missing: `smartcity topics create` makes them"
        )
