"""The `smartcity` command: one entry point, one sub-command (group) per part of the platform.

Each package contributes its commands here, so `smartcity --help` lists the whole platform.
Producers that are not part of the platform (the simulator) add theirs through the
`smartcity.commands` entry-point group, so the platform never imports them.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from smartcity.bridge.cli import bridge_app
from smartcity.demo import demo
from smartcity.registry.cli import sensors_app
from smartcity.services.cli import services_app
from smartcity.topics import topics_app
from smartcity_api.cli import api
from smartcity_dagster.cli import materialize
from smartcity_stream.cli import stream

PLUGIN_COMMANDS = "smartcity.commands"

app = typer.Typer(
    name="smartcity",
    help="Smart-city IoT data platform: Kafka, stream worker, Dagster assets, API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(services_app, name="services")
app.add_typer(topics_app, name="topics")
app.add_typer(sensors_app, name="sensors")
app.add_typer(bridge_app, name="bridge")
app.command("stream")(stream)
app.command("api")(api)
app.command("materialize")(materialize)
app.command("demo")(demo)
for plugin in entry_points(group=PLUGIN_COMMANDS):
    app.command(plugin.name)(plugin.load())
