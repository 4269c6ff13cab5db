"""The `smartcity` command: one entry point, one sub-command (group) per part of the platform.

Each package contributes its commands here, so `smartcity --help` lists the whole platform.
"""

from __future__ import annotations

import typer

from simulator.cli import simulate
from smartcity.demo import demo
from smartcity.services.cli import services_app
from smartcity.topics import topics_app
from smartcity_api.cli import api
from smartcity_dagster.cli import materialize
from smartcity_stream.cli import stream

app = typer.Typer(
    name="smartcity",
    help="Smart-city IoT data platform: Kafka, stream worker, Dagster assets, API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(services_app, name="services")
app.add_typer(topics_app, name="topics")
app.command("stream")(stream)
app.command("simulate")(simulate)
app.command("api")(api)
app.command("materialize")(materialize)
app.command("demo")(demo)
