"""What `make run` prints: a line per finished step, a live tuning line, warnings; the full event log to a file.

Dagster loggers (job-scoped, given to the run) receive every event of the run: `StepLines` keeps
what a person reads, the event-log file keeps everything at DEBUG. Libraries' own chatter on
stderr (MLflow's registry messages, download bars, beta notes) goes to the same file.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dagster import DagsterEventType, LoggerDefinition, colored_console_logger

from ml_assets.core.tuning import TrialProgress

CLEAR_LINE = "\r\033[K"


# Dagster's wrappers around the user's error: running the step, storing its value, loading an input.
WRAPPERS = {
    "DagsterExecutionStepExecutionError",
    "DagsterExecutionHandleOutputError",
    "DagsterExecutionLoadInputError",
}


def first_line(error) -> str:
    """The user's error, not Dagster's wrapper around it ("Error occurred while handling output ...")."""
    if error.cls_name in WRAPPERS and error.cause is not None:
        error = error.cause
    # "package.module.Class: ...", or the class alone for an error without a message (a bare `assert`)
    message = re.sub(rf"^[\w.]*\b{error.cls_name}(:|$)", "", error.message.strip()).strip()
    return f"{error.cls_name}: {message.splitlines()[0]}" if message else error.cls_name


class StepLines(logging.Handler):
    """A line per finished step (name, month, seconds); on a terminal, a live line while tuning."""

    def __init__(self, stream: IO[str]):
        super().__init__(logging.DEBUG)
        self.stream = stream
        self.live = stream.isatty()

    def _print(self, line: str) -> None:
        self.stream.write((CLEAR_LINE if self.live else "") + line + "\n")
        self.stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None)  # Dagster's structured part of each record
        if meta is None:
            return
        event, step = meta["dagster_event"], meta["step_key"] or ""
        where = f"  {step:<38} {meta['job_tags'].get('dagster/partition', '')}"
        if event is not None and event.event_type == DagsterEventType.STEP_SUCCESS:
            self._print(f"{where}  {event.event_specific_data.duration_ms / 1000:6.1f} s")
        elif event is not None and event.event_type == DagsterEventType.STEP_FAILURE:
            self._print(f"{where}  FAILED  {first_line(event.step_failure_data.error)}")
        elif event is None and record.levelno >= logging.WARNING:
            self._print(f"{where}  warning: {meta['orig_message']}")
        elif event is None and self.live and (trial := TrialProgress.parse(meta["orig_message"])):
            line = f"trial {trial.finished} of {trial.budget}, best RMSE so far {trial.best:.4f}"
            self.stream.write(f"{CLEAR_LINE}{where}  {line}")
            self.stream.flush()


def _logger(name: str, handler: logging.Handler) -> LoggerDefinition:
    def make(_init_context) -> logging.Logger:
        log = logging.Logger(name, logging.DEBUG)
        log.addHandler(handler)
        return log

    return LoggerDefinition(make, description=name)


def event_log_path(state: Path) -> Path:
    return state / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"


@contextlib.contextmanager
def run_loggers(log_file: Path, stream: IO[str], verbose: bool) -> Iterator[dict[str, LoggerDefinition]]:
    """Loggers for the runs: the event log to `log_file`; Dagster's console logger with -v, else `StepLines`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as events:
        to_file = logging.StreamHandler(events)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        loggers = {"event_log": _logger("ml_assets.event_log", to_file)}
        if verbose:
            yield {**loggers, "console": colored_console_logger.configured({"log_level": "DEBUG"})}
        else:
            with contextlib.redirect_stderr(events):
                yield {**loggers, "progress": _logger("ml_assets.progress", StepLines(stream))}
