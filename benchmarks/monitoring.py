"""Child process: the time model_performance takes to score N registered versions on one month.

In its DAGSTER_HOME (synthetic months, one-month windows, one tuning trial: the models only need
to exist), N months are trained one by one, giving N versions; the month after them is ingested,
then model_performance of that month is materialized on its own and timed by its step. Writes the
figures as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import time

from dagster import DagsterInstance

from benchmarks.harness import step_seconds
from ml_assets.core.months import shift_month
from ml_assets.keys import CLEANED_TRIPS, MODEL_PERFORMANCE, RAW_TRIPS
from ml_assets.partitions import START_MONTH
from ml_assets.records import latest_materialization, latest_metadata
from ml_assets.runner.runs import materialize_month, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--versions", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    first, last = shift_month(START_MONTH, 1), shift_month(START_MONTH, args.versions)
    scored = shift_month(last, 1)
    with DagsterInstance.get() as instance:
        started = time.perf_counter()
        run(first, last, instance)
        trained = time.perf_counter() - started
        materialize_month(instance, scored, [RAW_TRIPS, CLEANED_TRIPS])
        materialize_month(instance, scored, [MODEL_PERFORMANCE])
        run_id, metadata = latest_materialization(instance, MODEL_PERFORMANCE, scored)
        trips = latest_metadata(instance, CLEANED_TRIPS, scored)["rows"]
        seconds = step_seconds(instance, run_id)
    with open(args.out, "w") as out:
        json.dump(
            {
                "month": scored,
                "versions": metadata["dagster/row_count"],
                "trips": trips,
                "seconds": seconds["model_performance"],
                "run_seconds": seconds["run"],
                "training_seconds": trained,
            },
            out,
        )


if __name__ == "__main__":
    main()
