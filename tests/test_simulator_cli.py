"""`smartcity simulate` options: durations, dates, and one-line errors instead of tracebacks."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from simulator.cli import parse_backfill_start, parse_duration
from smartcity.cli import app
from smartcity.cli_support import UserError
from tests.simulator_support import NOV_27_MS


def test_durations_and_dates_parse() -> None:
    assert parse_duration("90", "--duration") == 90
    assert parse_duration("100ms", "--interval") == pytest.approx(0.1)
    assert parse_duration("5m", "--duration") == 300
    assert parse_duration("1.5h", "--duration") == 5400
    assert parse_backfill_start("2026-11-27") == NOV_27_MS
    assert parse_backfill_start("2026-11-27T08:15") == NOV_27_MS + 8 * 3_600_000 + 15 * 60_000
    for bad in ("soon", "-5s", "0"):
        with pytest.raises(UserError):
            parse_duration(bad, "--duration")
    with pytest.raises(UserError):
        parse_backfill_start("27.11.2026")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "typo=0.1"], "--faults"),
        (["--sensors", "2"], "--sensors"),
        (["--rate", "100", "--interval", "1s"], "not both"),
        (["--backfill-date", "yesterday"], "--backfill-date"),
    ],
)
def test_wrong_options_say_what_to_fix(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["simulate", "--no-progress", *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_no_broker_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTCITY_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    monkeypatch.setenv("SMARTCITY_KAFKA_TIMEOUT_S", "1")
    result = CliRunner().invoke(app, ["simulate", "--duration", "1", "--no-progress"])
    assert result.exit_code == 2
    assert "no Kafka broker answered" in result.output
