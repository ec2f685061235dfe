"""Child process: materialize months in-process with default config (or `--config`), as `make run` does.

Writes, per month, the trained_model and best_params metadata and the step times of the
month's run, and the process's peak memory, as JSON to `--out`. Months are run one by one in the
order given, each through `ml_assets.runner.run`, so they need not be consecutive.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from dagster import DagsterInstance

from benchmarks.harness import step_seconds
from ml_assets.keys import BEST_PARAMS
from ml_assets.records import latest_materialization
from ml_assets.runner.runs import run


def materialize(month: str, instance: DagsterInstance, run_config: dict) -> dict:
    start = time.perf_counter()
    model = run(month, month, instance, run_config)[month]
    seconds = time.perf_counter() - start
    run_id, params = latest_materialization(instance, BEST_PARAMS)
    return {
        "seconds": seconds,  # earlier months' ingestion included, when it was needed
        "steps": step_seconds(instance, run_id),
        "rmse": model["rmse"],
        "baseline_rmse": model["baseline_rmse"],
        "trials_run": params["trials_run"],
        "valid_rmse": params["valid_rmse"],  # best_params' study, on its sample
        "model_valid_rmse": model.get("valid_rmse"),  # the trained model on the whole holdout
        "params": params.get("params"),
        "best_iteration": model.get("best_iteration"),
        "stopped_by_time_budget": model.get("stopped_by_time_budget"),
    }


def peak_rss_mib() -> dict[str, float]:
    """ru_maxrss (KiB on Linux) of this process and of its largest finished child."""
    return {
        who: resource.getrusage(flag).ru_maxrss / 1024
        for who, flag in (("self", resource.RUSAGE_SELF), ("children", resource.RUSAGE_CHILDREN))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("months", nargs="+")
    parser.add_argument("--config", default="{}", help="run config as JSON (default: none, as `make run`)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with DagsterInstance.get() as instance:
        months = {month: materialize(month, instance, json.loads(args.config)) for month in args.months}
    with open(args.out, "w") as out:
        json.dump({"months": months, "peak_rss_mib": peak_rss_mib()}, out)


if __name__ == "__main__":
    main()
