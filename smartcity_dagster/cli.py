"""`smartcity materialize`: build date partitions in this process (backfills included)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import typer
from rich.console import Console

from smartcity.cli_support import UserError, friendly_errors, settings_or_exit
from smartcity_dagster.home import dagster_home
from smartcity_dagster.tags import RANGE_END, RANGE_START


def yesterday_utc(now: datetime | None = None) -> str:
    """The default partition: the last complete day in UTC, as the partitions are, whatever
    the machine's own time zone."""
    return ((now or datetime.now(UTC)).astimezone(UTC).date() - timedelta(days=1)).isoformat()


def _day(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise UserError(f"{option} {value!r}: expected a date like 2026-11-27") from None


@friendly_errors
def materialize(
    day: str = typer.Option(
        None, "--date", help="One date partition (UTC), e.g. 2026-11-27; default yesterday."
    ),
    start: str = typer.Option(None, "--from", help="First date of a range (with --to)."),
    end: str = typer.Option(None, "--to", help="Last date of a range, inclusive."),
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Dagster's and Spark's detail on the console, not in a log."
    ),
) -> None:
    """Materialize raw -> clean -> aggregates -> summary for a date or a range (one run).

    Prints a line per step with its time; the detail goes to a file in `<runtime>/logs/`,
    named in the last line (on the console with -v)."""
    one, first, last = _day(day, "--date"), _day(start, "--from"), _day(end, "--to")
    if (one and (first or last)) or bool(first) != bool(last):
        raise UserError("give either --date D, or --from D1 --to D2")
    if first and last and first > last:
        raise UserError(f"--from {first} is after --to {last}")
    if not one and not first:
        one = yesterday_utc()
    settings = settings_or_exit()
    dagster_home(settings)
    # Here, not at the top: every `smartcity` command imports this module, and Dagster with
    # the definitions (assets, Spark's configuration) takes seconds to import.
    import dagster as dg

    from smartcity_dagster.console import StepConsole, log_file

    log = None if verbose else log_file(settings.runtime_dir, "materialize")
    steps = StepConsole(Console(), log)
    tags = {RANGE_START: first, RANGE_END: last} if first else {}
    with steps:
        # Inside: importing the definitions prints Python's warnings, and may fail with a
        # line for the user (then printed once the console is back).
        from smartcity_dagster.runs import materialize_daily

        result = materialize_daily(
            dg.DagsterInstance.get(), one, steps, tags=tags, raise_on_error=False
        )
    console = steps.console
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            mark = "[green]pass[/]" if data.passed else f"[red]FAIL[/] ({data.severity.value})"
            check = f"{data.asset_key.to_user_string()}.{data.check_name}"
            console.print(f"  {data.partition or ''}  check {check}: {mark}")
    what = one or f"{first}..{last}"
    if result.success:
        console.print(f"[green]materialized[/] {what} (run {result.run_id})")
    steps.print_log_file()
    if not result.success:
        where = log or "the output above"
        raise UserError(
            f"materializing {what} failed (run {result.run_id}); see {where} or the Dagster UI"
        )
