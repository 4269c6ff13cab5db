"""The platform's five topics, created idempotently: `smartcity topics create`.

Replicated three times or more (a cluster), a topic takes writes only while two replicas
are in sync, so an acknowledged message survives the loss of any one broker; with fewer
replicas one in sync is enough, or a single broker could never take a write.
"""

from __future__ import annotations

from concurrent.futures import Future

import typer
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic
from rich.console import Console

from smartcity.cli_support import friendly_errors, settings_or_exit
from smartcity.kafka import admin_client, cluster_metadata
from smartcity.settings import Settings

topics_app = typer.Typer(help="Kafka topics of the platform.", no_args_is_help=True)


def min_insync_replicas(replication: int) -> int:
    return 2 if replication >= 3 else 1


def create_topics(
    settings: Settings, partitions: int | None = None, replication: int | None = None
) -> dict[str, str]:
    """Create the missing topics (replication SMARTCITY_TOPIC_REPLICATION unless given);
    returns each topic's outcome (`created` or `exists`)."""
    replicas = replication or settings.topic_replication
    admin = admin_client(settings)
    existing = set(cluster_metadata(settings, admin).topics)
    outcome = {topic: "exists" for topic in settings.all_topics if topic in existing}
    wanted = [
        NewTopic(
            topic,
            num_partitions=partitions or settings.topic_partitions,
            replication_factor=replicas,
            config={"min.insync.replicas": str(min_insync_replicas(replicas))},
        )
        for topic in settings.all_topics
        if topic not in existing
    ]
    if not wanted:
        return outcome
    futures: dict[str, Future[None]] = admin.create_topics(
        wanted, request_timeout=settings.kafka_timeout_s
    )
    for topic, future in futures.items():
        try:
            future.result(timeout=settings.kafka_timeout_s + 5)
            outcome[topic] = "created"
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            outcome[topic] = "exists"
    return outcome


@topics_app.command("create")
@friendly_errors
def create_command(
    partitions: int = typer.Option(
        None, min=1, help="Partitions per topic (default SMARTCITY_TOPIC_PARTITIONS, 3)."
    ),
    replication: int = typer.Option(
        None, min=1, help="Replication factor (default SMARTCITY_TOPIC_REPLICATION, 1)."
    ),
) -> None:
    """Create the five topics of the platform (idempotent)."""
    settings = settings_or_exit()
    outcome = create_topics(settings, partitions, replication)
    console = Console()
    for topic in settings.all_topics:
        console.print(f"{outcome[topic]:>8}  {topic}")
