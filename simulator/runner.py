"""The run loop: step the simulation, pace it if asked, stop cleanly on SIGINT or SIGTERM.

A signal only sets an event; the loop finishes the step it is in, releases held messages,
flushes the producer and reports, so an interrupted run still says exactly what was sent.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from simulator.producer import ReadingProducer
from simulator.simulation import Simulation

FLUSH_TIMEOUT_S = 60.0
PROGRESS_EVERY_S = 0.25

Progress = Callable[[int, int], None]
"""Called with (messages acknowledged, messages produced) a few times a second."""


@dataclass(frozen=True)
class RunOutcome:
    steps: int
    wall_seconds: float
    interrupted: bool
    unconfirmed: int


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (previous handlers restored)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(
    simulation: Simulation,
    producer: ReadingProducer,
    *,
    steps: int | None,
    seconds_per_step: float | None,
    stop: threading.Event,
    progress: Progress | None = None,
    first_due: float | None = None,
) -> RunOutcome:
    """Produce `steps` steps (None: until stopped), each not before its due wall-clock time.

    `seconds_per_step` paces the run (live mode: the reporting interval, so event time keeps
    up with the clock); None sends as fast as the broker acknowledges. `first_due` (Unix
    seconds) is when step 0 is due; live mode passes its first event time, so each reading
    leaves when it is taken, whatever the set-up before the loop cost.
    """
    started = time.monotonic()
    origin = started if first_due is None else started + first_due - time.time()
    next_report = started
    step = 0
    while (steps is None or step < steps) and not stop.is_set() and producer.fatal is None:
        if seconds_per_step is not None:
            wait = origin + step * seconds_per_step - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
        for batch in simulation.next_step():
            producer.send(batch)
        step += 1
        if progress is not None and time.monotonic() >= next_report:
            next_report = time.monotonic() + PROGRESS_EVERY_S
            progress(producer.acknowledged, producer.produced)
    for batch in simulation.finish():
        producer.send(batch)
    unconfirmed = producer.flush(FLUSH_TIMEOUT_S)
    if progress is not None:
        progress(producer.acknowledged, producer.produced)
    return RunOutcome(
        steps=step,
        wall_seconds=time.monotonic() - started,
        interrupted=stop.is_set() or producer.fatal is not None,
        unconfirmed=unconfirmed,
    )
