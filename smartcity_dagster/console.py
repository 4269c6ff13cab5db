"""The quiet console of the commands that build data in this process (`smartcity materialize`,
`smartcity demo`): one line per step with its time, a live display of the running steps on a
terminal, and all other output in a log file under `<runtime>/logs/`.

That other output comes from more than Python. Dagster's console logger and Python's warnings
write to `sys.stderr`, but the Spark driver's JVM, which pyspark starts from this process,
writes log4j's lines and the JDK's and its libraries' own warnings ("Java versions > Java 11
can only operate in restricted mode ...") straight to the descriptors 1 and 2 it inherits, and
so do the `tail` processes through which Dagster mirrors a run's captured output. A log4j
configuration would catch only the first kind. So while the steps run, descriptors 1 and 2
point at the log file, whoever writes to them and whenever they start; this module writes its
own lines to a duplicate of the original stdout. A JVM started meanwhile keeps its copies of
the descriptors, so it goes on writing to the log after this process's are restored. Spark's
configuration is untouched: runs that Dagster's daemon or UI start log as Dagster captures
them there.

With `-v` nothing is redirected: the detail is on the console as Dagster and Spark print it,
between the step lines.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

import dagster as dg
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column

LOGS_DIR = "logs"
DAGSTER_META = "dagster_meta"
"""The attribute of the log records a Dagster logger gets that holds the run's event (the one
Dagster's own `json_console_logger` writes out)."""
NOTE_CHARS = 200
DESCRIPTION_CHARS = 28
"""The display's first column is at least this wide, so that it does not jump as steps come
and go."""


def log_file(runtime_dir: Path, command: str, now: datetime | None = None) -> Path:
    """`<runtime>/logs/<command>-<UTC time>.log`: one file per invocation, sorted by time."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return runtime_dir / LOGS_DIR / f"{command}-{stamp}.log"


@contextmanager
def output_into(log: Path) -> Iterator[IO[str]]:
    """Descriptors 1 and 2 appended to `log` while the block runs; yields a stream on the
    original stdout, for the lines that belong on the console."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    console = os.fdopen(os.dup(saved[1]), "w", encoding="utf-8", errors="replace")
    try:
        with log.open("ab") as sink:
            for fd in saved:
                os.dup2(sink.fileno(), fd)
        yield console
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        console.close()


class StepConsole:
    """One line per finished step, with its time; while steps run, a live display of them
    (on a terminal, when quiet). Used as a context manager around the steps; with a `log`,
    all other output of the process goes there meanwhile (see the module's docstring).

    Steps may nest (a demo stage around Dagster's steps): an inner step's line is indented
    and printed before the outer one's."""

    def __init__(self, console: Console, log: Path | None) -> None:
        self.console = console
        self.log = log
        self.durations: dict[str, float] = {}
        self._running: dict[str, tuple[float, int, TaskID | None]] = {}
        self._expected: dict[str, None] = {}
        self._ended: set[str] = set()
        self._overall: TaskID | None = None
        self._progress = self._display(live=False)
        self._stack = ExitStack()
        self.detail: IO[str] | None = None
        """While the steps run, the stream of Dagster's own lines (see `dagster_loggers`): the
        log when quiet, else a duplicate of the original stderr."""

    def _display(self, live: bool) -> Progress:
        return Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", table_column=Column(min_width=DESCRIPTION_CHARS)),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            # Dagster's detail goes to sys.stderr: into the log, never above the display.
            redirect_stdout=False,
            redirect_stderr=False,
            disable=not live,
        )

    def __enter__(self) -> StepConsole:
        if self.log is not None:
            stream = self._stack.enter_context(output_into(self.log))
            previous = self.console.file
            self.console.file = stream
            self._stack.callback(setattr, self.console, "file", previous)
            self.detail = self._stack.enter_context(self.log.open("a", encoding="utf-8"))
        else:
            stderr = os.fdopen(os.dup(2), "w", encoding="utf-8", errors="replace")
            self.detail = self._stack.enter_context(stderr)
        self._stack.callback(setattr, self, "detail", None)
        self._progress = self._display(live=self.log is not None and self.console.is_terminal)
        self._stack.callback(self._progress.stop)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()

    def expect(self, names: Iterable[str]) -> None:
        """These steps will run: the display counts how many of them have ended."""
        self._expected.update(dict.fromkeys(names))
        if self._overall is None:
            self._overall = self._add_task("steps ended")
        self._count()

    def start(self, name: str) -> None:
        depth = len(self._running)
        task = self._add_task("  " * depth + name)
        self._running[name] = (time.monotonic(), depth, task)

    def finish(self, name: str, ok: bool = True, note: str = "") -> None:
        """The step's line; a step that never started (Dagster fails a step whose resources
        did not initialise without starting it) gets one too, with no time to speak of."""
        now = time.monotonic()
        started, depth, task = self._running.pop(name, (now, len(self._running), None))
        if task is not None:
            self._progress.remove_task(task)
        self.durations[name] = seconds = now - started
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        self._line(depth, f"{mark} {escape(name)} ({seconds:.1f} s)", note)
        self._ended.add(name)
        self._count()

    def part(self, name: str, seconds: float) -> None:
        """The line of a part of the running step that timed itself (a table of a step that
        builds several at once), under the step's line to come."""
        self._line(len(self._running), f"[green]✓[/] {escape(name)} ({seconds:.1f} s)", "")

    def skip(self, name: str, why: str = "skipped") -> None:
        self._line(len(self._running), f"[yellow]-[/] {escape(name)} {why}", "")
        self._ended.add(name)
        self._count()

    def not_run(self) -> None:
        """A line for each expected step that has not ended: after a failed step, Dagster
        reports nothing of the steps downstream of it."""
        for name in [n for n in self._expected if n not in self._ended]:
            self.skip(name, "not run")

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """A step of this process's own: its line once the block is done (✗ if it raised)."""
        self.start(name)
        try:
            yield
        except Exception as error:
            self.finish(name, ok=False, note=str(error))
            raise
        except BaseException:
            self.finish(name, ok=False, note="interrupted")
            raise
        self.finish(name)

    def print_log_file(self) -> None:
        """The console's last line: where the detail went, when it went to a file."""
        if self.log is not None:
            self.console.print(f"Full logs: {self.log}", soft_wrap=True, highlight=False)

    def _add_task(self, description: str) -> TaskID:
        """A row of the display, which starts with its first row: started empty, it would
        print a blank line at each refresh until then."""
        self._progress.start()
        return self._progress.add_task(description, count="")

    def _line(self, depth: int, text: str, note: str) -> None:
        """`note`'s first line only: the rest is in the log."""
        if note.strip():
            text += f": {escape(note.strip().splitlines()[0][:NOTE_CHARS])}"
        self.console.print("  " * depth + text, soft_wrap=True, highlight=False)

    def _count(self) -> None:
        if self._overall is not None:
            ended = len(self._ended & self._expected.keys())
            self._progress.update(self._overall, count=f"{ended}/{len(self._expected)}")


BUILD_SECONDS = "build_seconds"
"""A materialization's own time, when its step builds several tables at once: the console
shows it under the step."""


def built_table(event: dg.DagsterEvent) -> tuple[str, float] | None:
    """The table and its own time, for the materialization of a table that timed itself."""
    if not event.is_step_materialization:
        return None
    materialization = event.step_materialization_data.materialization
    seconds = materialization.metadata.get(BUILD_SECONDS)
    if not isinstance(seconds, dg.FloatMetadataValue) or seconds.value is None:
        return None
    return materialization.asset_key.to_user_string(), seconds.value


LOGGERS_CONFIG = {"console": {"config": {"log_level": "DEBUG"}}, "steps": {}}
"""Run config of `dagster_loggers`: Dagster's console logger at the level it has by default
(explicitly configured, it would drop to INFO)."""


def dagster_loggers(steps: StepConsole) -> dict[str, dg.LoggerDefinition]:
    """Dagster's lines (on `steps.detail`: the log file when quiet, else stderr) and a logger
    that reports every step's start and end to `steps`. Configure them with `LOGGERS_CONFIG`;
    make them while `steps` is entered."""
    if steps.detail is None:
        raise RuntimeError("dagster_loggers needs an entered StepConsole")
    return {
        "console": _detail(steps.detail),
        "steps": dg.LoggerDefinition(lambda _: _steps_logger(steps)),
    }


DETAIL_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


def _detail(stream: IO[str]) -> dg.LoggerDefinition:
    """Dagster's lines on a stream of their own, not on the process's stderr: an in-process run
    captures that into its compute log and mirrors it back through a `tail -F`, which it stops
    as the plan ends, so the last step's lines could miss the mirror (once the demo's log
    lacked the `STEP_SUCCESS` of its last step, once `-v`'s stderr that of the registry's
    step; dagster-io/dagster#23336)."""

    def make(context: dg.InitLoggerContext) -> logging.Logger:
        logger = logging.Logger("dagster", context.logger_config["log_level"])
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(DETAIL_FORMAT))
        logger.addHandler(handler)
        return logger

    return dg.LoggerDefinition(make, config_schema={"log_level": dg.Field(str, "DEBUG")})


def _steps_logger(steps: StepConsole) -> logging.Logger:
    logger = logging.Logger("smartcity.steps", logging.DEBUG)
    logger.addHandler(_StepEvents(steps))
    return logger


class _StepEvents(logging.Handler):
    """Step events of a run, from the records Dagster hands its loggers, to a `StepConsole`."""

    def __init__(self, steps: StepConsole) -> None:
        super().__init__(logging.DEBUG)
        self.steps = steps

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, DAGSTER_META, {}).get("dagster_event")
        if not isinstance(event, dg.DagsterEvent) or event.step_key is None:
            return
        if event.is_step_start:
            self.steps.start(event.step_key)
        elif event.is_step_success:
            self.steps.finish(event.step_key)
        elif event.is_step_failure:
            error = event.step_failure_data.error
            # The user's error is the innermost: Dagster wraps it in its own.
            while error is not None and error.cause is not None:
                error = error.cause
            self.steps.finish(event.step_key, ok=False, note=error.message if error else "")
        elif event.is_step_skipped:
            self.steps.skip(event.step_key)
        elif (built := built_table(event)) is not None:
            self.steps.part(*built)
