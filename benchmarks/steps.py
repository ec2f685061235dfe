"""Child process: materialize some assets of one month in-process (their checks included), nothing else.

The parent runs one such process per step so that each step's peak memory (`ru_maxrss`, which only
grows) is its own. Writes the wall time of each step from the event log, the whole call's wall time
and the process's peak RSS as JSON to `--out`. The instance is $DAGSTER_HOME's; upstream values
must be stored already.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from dagster import DagsterInstance

from benchmarks.harness import step_seconds
from ml_assets.runner import materialize_month


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("month")
    parser.add_argument("--select", required=True, help="comma-separated asset names")
    parser.add_argument("--config", default="{}", help="run config as JSON")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    selection = args.select.split(",")
    with DagsterInstance.get() as instance:
        start = time.perf_counter()
        result = materialize_month(instance, args.month, selection, json.loads(args.config))
        seconds = time.perf_counter() - start
        steps = step_seconds(instance, result.run_id)
    with open(args.out, "w") as out:
        json.dump(
            {
                "seconds": seconds,
                "steps": steps,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            },
            out,
        )


if __name__ == "__main__":
    main()
