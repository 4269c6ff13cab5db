"""`smartcity sensors import|export|list`: the city's sensor registry, kept in the lake."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from smartcity.cli_support import UserError, err_console, friendly_errors, settings_or_exit
from smartcity.lake import Lake
from smartcity.registry.contract import RegistryError, validated_table
from smartcity.registry.files import file_format, read_rows, write_table
from smartcity.registry.store import import_registry, registry_in_force
from smartcity.settings import SENSOR_TYPES

sensors_app = typer.Typer(
    help="The sensor registry: import a city's sensors, export or list them.",
    no_args_is_help=True,
)
FORMAT_HELP = "csv, parquet or geojson (default: from the file's suffix)"


@sensors_app.command("import")
@friendly_errors
def import_command(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="The registry file."),
    fmt: str = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Validate every row, then make the file the registry in force (a new version).

    Nothing is written unless every row is valid; each bad row is named with its field.
    Importing the same sensors again adds no version.
    """
    settings = settings_or_exit()
    try:
        table = validated_table(read_rows(path, fmt))
    except RegistryError as error:
        for problem in error.problems:
            err_console.print(f"{path.name}: {problem}", highlight=False, soft_wrap=True)
        raise UserError(
            f"{path.name}: {len(error.problems)} problem(s), nothing imported"
        ) from None
    version, new = import_registry(Lake.from_settings(settings), table)
    counts = ", ".join(f"{n} {t}" for t, n in sorted(version.counts().items()))
    verb = "imported as" if new else "unchanged, still"
    typer.echo(f"{table.num_rows} sensors ({counts}) {verb} registry version {version.version}")


@sensors_app.command("export")
@friendly_errors
def export_command(
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default stdout)."),
    fmt: str = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Write the registry in force in a format `sensors import` takes back."""
    settings = settings_or_exit()
    if output is None and fmt is None:
        fmt = "csv"
    try:
        kind = file_format(output or Path("-"), fmt)
    except RegistryError as error:
        raise UserError(str(error)) from None
    data = write_table(registry_in_force(Lake.from_settings(settings)).table, kind)
    if output is None:
        sys.stdout.buffer.write(data)
    else:
        output.write_bytes(data)


@sensors_app.command("list")
@friendly_errors
def list_command(
    sensor_type: str = typer.Option(None, "--type", help="Only sensors of this type."),
    district: str = typer.Option(None, help="Only sensors of this district."),
) -> None:
    """The sensors of the registry in force, one line each, and the version."""
    if sensor_type is not None and sensor_type not in SENSOR_TYPES:
        raise UserError(f"--type {sensor_type!r}: expected one of {', '.join(SENSOR_TYPES)}")
    registry = registry_in_force(Lake.from_settings(settings_or_exit()))
    rows = [
        row
        for row in registry.table.to_pylist()
        if (sensor_type is None or row["sensor_type"] == sensor_type)
        and (district is None or row["district"] == district)
    ]
    table = Table(
        "sensor_id",
        "type",
        "district",
        "latitude",
        "longitude",
        "interval_s",
        "active",
        title=f"registry version {registry.version}: {len(rows)} of {registry.table.num_rows}",
    )
    for row in rows:
        table.add_row(
            row["sensor_id"],
            row["sensor_type"],
            row["district"],
            f"{row['latitude']:.6f}",
            f"{row['longitude']:.6f}",
            f"{row['interval_s']:g}",
            "yes" if row["active"] else "no",
        )
    Console(width=120).print(table)
