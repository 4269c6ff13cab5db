"""Which runs the stream-progress sensor requests: pure logic over its cursor.

A date counts as built only when a run for its current content succeeded. A failed run is
requested again, each attempt under its own run key, up to `MAX_ATTEMPTS` per date and
content; then the date waits, with one alert, until its content changes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

MAX_ATTEMPTS = 3


class Outcome(enum.Enum):
    """How the run of a date's current attempt stands in the run storage."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"
    MISSING = "missing"


class State(enum.Enum):
    REQUESTED = "requested"
    BUILT = "built"
    EXHAUSTED = "exhausted"
    """Every attempt failed; the alert saying so is not delivered yet."""
    GIVEN_UP = "given_up"


@dataclass(frozen=True)
class Build:
    """A date's content (fingerprint), its attempts so far and where they stand."""

    fingerprint: str
    attempt: int
    state: State


@dataclass(frozen=True)
class Plan:
    requests: dict[str, Build]
    """Dates to request a run for, with the attempt (its run key) to request."""
    builds: dict[str, Build]
    """The cursor after this tick. A date whose attempts are spent stays EXHAUSTED until
    its alert is delivered (then `given_up`), so an undelivered alert is planned again."""
    alerts: dict[str, Build]
    """Dates whose every attempt failed, to alert on."""


def plan(complete: dict[str, str], builds: dict[str, Build], outcomes: dict[str, Outcome]) -> Plan:
    """The next step for each complete date (date -> current fingerprint).

    `outcomes` holds, for each date in REQUESTED state, how its attempt's run stands. A run
    the storage does not know (the request not yet turned into a run, or the run deleted) is
    requested again under the same run key: if the run exists after all, Dagster's run key
    de-duplication drops the request.
    """
    requests: dict[str, Build] = {}
    alerts: dict[str, Build] = {}
    after = dict(builds)
    for day, content in complete.items():
        build = builds.get(day)
        if build is None or build.fingerprint != content:
            requests[day] = after[day] = Build(content, 1, State.REQUESTED)
        elif build.state is State.EXHAUSTED:
            alerts[day] = build
        elif build.state is State.REQUESTED:
            outcome = outcomes.get(day, Outcome.MISSING)
            if outcome is Outcome.SUCCEEDED:
                after[day] = replace(build, state=State.BUILT)
            elif outcome is Outcome.MISSING:
                requests[day] = build
            elif outcome is Outcome.FAILED and build.attempt < MAX_ATTEMPTS:
                requests[day] = after[day] = replace(build, attempt=build.attempt + 1)
            elif outcome is Outcome.FAILED:
                alerts[day] = after[day] = replace(build, state=State.EXHAUSTED)
    return Plan(requests, after, alerts)


def given_up(build: Build) -> Build:
    return replace(build, state=State.GIVEN_UP)


def dump(builds: dict[str, Build]) -> dict[str, dict[str, object]]:
    return {
        day: {"fingerprint": b.fingerprint, "attempt": b.attempt, "state": b.state.value}
        for day, b in builds.items()
    }


def load(cursor: dict[str, object]) -> dict[str, Build]:
    """The cursor's builds; a date of the earlier cursor format (date -> fingerprint of
    the requested run) counts as built."""
    builds = {}
    for day, entry in cursor.items():
        if isinstance(entry, str):
            builds[day] = Build(entry, 1, State.BUILT)
        elif isinstance(entry, dict):
            builds[day] = Build(
                str(entry["fingerprint"]), int(entry["attempt"]), State(entry["state"])
            )
    return builds
