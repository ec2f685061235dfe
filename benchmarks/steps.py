"""Child process: materialize some assets of one month in-process (their checks included), nothing else.

Writes, as JSON to `--out`: each step's wall time (from the event log) and peak resident memory,
the whole call's wall time and the process's peak. A step's peak is measured in the process that
runs every step, as `make run` does: Linux's high-water mark (VmHWM) is reset when the step starts
(`/proc/self/clear_refs`) and read when it ends, so it counts what earlier steps left resident.
The process's peak is the highest of them (the reset also resets `ru_maxrss`, so the parent cannot
take it from `wait4`). The instance is $DAGSTER_HOME's; upstream values must be stored already.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, LoggerDefinition

from benchmarks.harness import step_seconds
from ml_assets.records import latest_metadata
from ml_assets.runner.runs import materialize_month

PROC = Path("/proc/self")


def _high_water_mib() -> float:
    status = dict(line.split(":", 1) for line in (PROC / "status").read_text().splitlines() if ":" in line)
    return int(status["VmHWM"].split()[0]) / 1024


class StepPeaks(logging.Handler):
    """Peak resident memory of each step, from Dagster's step events."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.peaks: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
        if event is None:
            return
        if event.event_type == DagsterEventType.STEP_START:
            (PROC / "clear_refs").write_text("5")  # the high-water mark starts again from the current RSS
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            self.peaks[event.step_key] = _high_water_mib()


def _figures(metadata: dict | None) -> dict:
    """The numbers and flags of an asset's metadata (no plots, links or tables)."""
    return {key: value for key, value in (metadata or {}).items() if isinstance(value, int | float | bool)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("month")
    parser.add_argument("--select", required=True, help="comma-separated asset names")
    parser.add_argument("--config", default="{}", help="run config as JSON")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    peaks = StepPeaks()

    def make(_init_context) -> logging.Logger:
        log = logging.Logger("benchmarks.step_peaks", logging.DEBUG)
        log.addHandler(peaks)
        return log

    loggers = {"step_peaks": LoggerDefinition(make, description="peak RSS per step")}
    with DagsterInstance.get() as instance:
        start = time.perf_counter()
        result = materialize_month(
            instance, args.month, args.select.split(","), json.loads(args.config), loggers=loggers
        )
        seconds = time.perf_counter() - start
        steps = step_seconds(instance, result.run_id)
        metadata = {asset: _figures(latest_metadata(instance, asset, args.month)) for asset in args.select.split(",")}
    with open(args.out, "w") as out:
        json.dump(
            {
                "seconds": seconds,
                "steps": steps,
                "step_peak_rss_mib": peaks.peaks,
                "metadata": metadata,
                # Resetting the high-water mark resets ru_maxrss too: the process's peak is its steps' highest.
                "peak_rss_mib": max([*peaks.peaks.values(), _high_water_mib()]),
            },
            out,
        )


if __name__ == "__main__":
    main()
