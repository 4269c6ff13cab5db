"""Alert delivery to the webhook: in order, one at a time, each with retries and backoff.

A caller advances its cursor after each delivered alert, never past one that was not, so
an alert is sent again only after a crash between its POST and the cursor; its
`Idempotency-Key` (stable per alert) lets the receiver drop that repeat.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import tenacity

RETRIED_STATUSES = {408, 425, 429}


@dataclass(frozen=True)
class Alert:
    key: str
    """The Idempotency-Key: the same for every delivery of this alert, and no other's."""
    body: dict[str, object]


@dataclass(frozen=True)
class Delivery:
    """Retries of one alert, and how long one sensor tick spends delivering (Dagster ends a
    sensor evaluation after 60 s by default; what is left waits for the next tick)."""

    attempts: int = 4
    first_wait_s: float = 0.5
    max_wait_s: float = 4.0
    timeout_s: float = 5.0
    budget_s: float = 30.0


DELIVERY = Delivery()


def _transient(error: BaseException) -> bool:
    """A connection that failed or a server that said "later"; any other refusal is final
    for this tick (and is tried again next tick: an alert is never skipped)."""
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        return status >= 500 or status in RETRIED_STATUSES
    return isinstance(error, httpx.TransportError)


def post(client: httpx.Client, url: str, alert: Alert, delivery: Delivery) -> None:
    """POST the alert, retried with exponential backoff; raises the last error."""
    for attempt in tenacity.Retrying(
        stop=tenacity.stop_after_attempt(delivery.attempts),
        wait=tenacity.wait_exponential(multiplier=delivery.first_wait_s, max=delivery.max_wait_s),
        retry=tenacity.retry_if_exception(_transient),
        reraise=True,
    ):
        with attempt:
            client.post(
                url,
                json=alert.body,
                headers={"Idempotency-Key": alert.key},
                timeout=delivery.timeout_s,
            ).raise_for_status()


def deliver_in_order(
    alerts: Iterable[Alert],
    send: Callable[[Alert], None],
    delivered: Callable[[Alert], None],
    budget_s: float,
) -> Exception | None:
    """Send each alert and report it `delivered`, stopping at the first that fails (the
    error is returned) or once the budget is spent (None, as when all went out)."""
    deadline = time.monotonic() + budget_s
    for alert in alerts:
        if time.monotonic() >= deadline:
            return None
        try:
            send(alert)
        except (httpx.HTTPError, OSError) as error:
            return error
        delivered(alert)
    return None


@contextmanager
def webhook(url: str | None, delivery: Delivery) -> Iterator[Callable[[Alert], None]]:
    """A sender for `deliver_in_order` over one HTTP client; without a webhook URL every
    alert counts as delivered (the log gets it)."""
    if not url:
        yield lambda alert: None
        return
    with httpx.Client() as client:
        yield lambda alert: post(client, url, alert, delivery)
