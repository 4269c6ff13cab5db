"""`smartcity bridge ...`: protocol bridges into Kafka."""

from __future__ import annotations

import typer

bridge_app = typer.Typer(help="Bridges from sensor protocols into Kafka.", no_args_is_help=True)
