"""Materialize the whole graph for a month, or a range of months in order, then report the models.

`make run` (one month) and `make backfill` (a range) call this. Months are run one by one, oldest
first, each as one Dagster run in the instance under $DAGSTER_HOME (they show in the UI): a
range gives exactly what materializing its months one by one gives. Months the first one trains
on are ingested first (raw and cleaned trips only) when the instance does not have them yet, so a
fresh `DAGSTER_HOME` works in one command.

It prints a line per finished step and the models; Dagster's whole event log goes to a file under
$DAGSTER_HOME (`-v` or VERBOSE=1 prints it instead). A failed step ends it with a non-zero status.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from dagster import (
    AssetKey,
    BetaWarning,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    LoggerDefinition,
    define_asset_job,
)

# Dagster's notes on its beta APIs are for the project's authors, not for whoever runs it.
warnings.filterwarnings("ignore", category=BetaWarning)

from ml_assets.checks import all_checks  # noqa: E402
from ml_assets.console import event_log_path, first_line, run_loggers  # noqa: E402
from ml_assets.core.months import month_range  # noqa: E402
from ml_assets.definitions import all_assets, build_resources  # noqa: E402
from ml_assets.materializations import latest_metadata  # noqa: E402
from ml_assets.partitions import window_months  # noqa: E402
from ml_assets.settings import state_dir  # noqa: E402

INGESTION = ["raw_trips", "cleaned_trips"]
JOB = "ml_assets_runner"


class RunFailed(RuntimeError):
    """A step of a month's run failed; the message names the step, the month and the error."""


def materialize_month(instance: DagsterInstance, month: str, selection: list[str] | None = None,
                      run_config: dict | None = None, raise_on_error: bool = True,
                      loggers: dict[str, LoggerDefinition] | None = None) -> ExecuteInProcessResult:
    """One run for `month` of `selection` (asset names; default all) with their checks, as in the UI.

    Resources are built from the environment at call time, not at import. `loggers` replace
    Dagster's console logger (a run starts only the loggers its run config names).
    """
    defs = Definitions(assets=[*all_assets, *all_checks], resources=build_resources(), loggers=loggers,
                       jobs=[define_asset_job(JOB, selection=selection)])
    run_config = {**(run_config or {}), "loggers": {name: {} for name in loggers or {}}}
    return defs.resolve_job_def(JOB).execute_in_process(
        run_config=run_config, instance=instance, partition_key=month, raise_on_error=raise_on_error)


def _materialize_or_fail(instance: DagsterInstance, month: str, selection: list[str] | None,
                         run_config: dict | None, loggers: dict[str, LoggerDefinition] | None) -> None:
    result = materialize_month(instance, month, selection, run_config, raise_on_error=False, loggers=loggers)
    failures = [f"{event.step_key} {month}: {first_line(event.step_failure_data.error)}"
                for event in result.all_events if event.is_step_failure]
    if failures or not result.success:
        raise RunFailed("\n".join(failures) or f"the run for {month} failed ({result.run_id})")


def run(first: str, last: str, instance: DagsterInstance, run_config: dict | None = None,
        loggers: dict[str, LoggerDefinition] | None = None) -> dict[str, dict]:
    """Materialize every asset for each month from `first` to `last`; trained_model metadata per month."""
    ingested = set(instance.get_materialized_partitions(AssetKey("cleaned_trips")))
    for earlier in sorted(set(window_months(first)) - {first} - ingested):
        _materialize_or_fail(instance, earlier, INGESTION, None, loggers)
    models = {}
    for month in month_range(first, last):
        _materialize_or_fail(instance, month, None, run_config, loggers)
        models[month] = latest_metadata(instance, "trained_model", month)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("month", nargs="?", default="2021-02", help="partition key YYYY-MM (the first, for a range)")
    parser.add_argument("--to", help="last month of a range (inclusive)")
    parser.add_argument("-v", "--verbose", action="store_true", default=os.environ.get("VERBOSE", "") not in ("", "0"),
                        help="print Dagster's whole event log (default when VERBOSE is set)")
    args = parser.parse_args()
    log_file = event_log_path(state_dir())
    print(f"Dagster event log: {log_file}")
    with DagsterInstance.get() as instance, run_loggers(log_file, sys.stdout, args.verbose) as loggers:
        try:
            models = run(args.month, args.to or args.month, instance, loggers=loggers)
        except RunFailed as failed:
            sys.exit(f"\nFAILED {failed}\n(the whole event log is in {log_file})")
    for month, model in models.items():
        print(f"\ntrained_model {month}")
        print(f"  model file      {model['path']}")
        print(f"  test RMSE       {model['rmse']:.3f} min   (LinearRegression baseline {model['baseline_rmse']:.3f})")
        print(f"  MLflow run      {model['mlflow_run']}")
        print(f"  MLflow model    {model['registered_model']}  (v{model['model_version']}, {model['alias']})")


if __name__ == "__main__":
    main()
