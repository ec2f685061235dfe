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

from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    ExecuteInProcessResult,
    LoggerDefinition,
    RunsFilter,
    define_asset_job,
)

from ml_assets.console import event_log_path, first_line, run_loggers
from ml_assets.core.months import check_month, month_range
from ml_assets.definitions import all_asset_checks, all_assets
from ml_assets.materializations import latest_metadata, run_process_alive
from ml_assets.model_gate import MODEL_GATE
from ml_assets.partitions import START_MONTH, window_months
from ml_assets.resources import build_resources
from ml_assets.settings import state_dir

INGESTION = ["raw_trips", "cleaned_trips"]
JOB = "ml_assets_runner"


class RunFailed(RuntimeError):
    """A step of a month's run failed; the message names the step, the month and the error."""


def materialize_month(
    instance: DagsterInstance,
    month: str,
    selection: list[str] | None = None,
    run_config: dict | None = None,
    raise_on_error: bool = True,
    loggers: dict[str, LoggerDefinition] | None = None,
) -> ExecuteInProcessResult:
    """One run for `month` of `selection` (asset names; default all) with their checks, as in the UI.

    `run_config["ops"]` may configure ops outside the selection (one config for every run); those
    are left out. Resources are built from the environment at call time, not at import. `loggers`
    replace Dagster's console logger (a run starts only the loggers its run config names).
    """
    config = {**(run_config or {}), "loggers": {name: {} for name in loggers or {}}}
    if selection is not None and "ops" in config:
        unselected = {
            assets.node_def.name
            for assets in all_assets
            if not {key.to_user_string() for key in assets.keys} & set(selection)
        }
        config["ops"] = {op: value for op, value in config["ops"].items() if op not in unselected}
    _fail_dead_runs(instance)
    defs = Definitions(
        assets=[*all_assets, *all_asset_checks],
        resources=build_resources(),
        loggers=loggers,
        jobs=[define_asset_job(JOB, selection=selection)],
    )
    return defs.resolve_job_def(JOB).execute_in_process(
        run_config=config, instance=instance, partition_key=month, raise_on_error=raise_on_error
    )


def _fail_dead_runs(instance: DagsterInstance) -> None:
    """Runs of this runner killed earlier (kill -9, a closed terminal) stay STARTED: mark them failed.

    Only this runner's own runs, which ran on this machine; runs launched by a daemon are left to
    Dagster's run monitoring.
    """
    for run in instance.get_runs(RunsFilter(job_name=JOB, statuses=[DagsterRunStatus.STARTED])):
        if not run_process_alive(instance, run.run_id):
            instance.report_run_failed(run)


def _materialize_or_fail(
    instance: DagsterInstance,
    month: str,
    selection: list[str] | None,
    run_config: dict | None,
    loggers: dict[str, LoggerDefinition] | None,
) -> ExecuteInProcessResult:
    result = materialize_month(instance, month, selection, run_config, raise_on_error=False, loggers=loggers)
    failures = [
        f"{event.step_key} {month}: {first_line(event.step_failure_data.error)}"
        for event in result.all_events
        if event.is_step_failure
    ]
    if failures or not result.success:
        raise RunFailed("\n".join(failures) or f"the run for {month} failed ({result.run_id})")
    return result


def run(
    first: str,
    last: str,
    instance: DagsterInstance,
    run_config: dict | None = None,
    loggers: dict[str, LoggerDefinition] | None = None,
) -> dict[str, dict]:
    """Materialize every asset for each month from `first` to `last`; per month, trained_model's
    metadata and what `model_gate` published (model name, version, alias, registry link)."""
    ingested = set(instance.get_materialized_partitions(AssetKey("cleaned_trips")))
    for earlier in sorted(set(window_months(first)) - {first} - ingested):
        _materialize_or_fail(instance, earlier, INGESTION, run_config, loggers)
    models = {}
    for month in month_range(first, last):
        result = _materialize_or_fail(instance, month, None, run_config, loggers)
        (gate,) = [check for check in result.get_asset_check_evaluations() if check.check_name == MODEL_GATE]
        published = {key: value.value for key, value in gate.metadata.items()}
        models[month] = {**latest_metadata(instance, "trained_model", month), **published}
    return models


def _partition(raw: str) -> str:
    """A month argument: a partition key of this code location, else argparse's usage error naming it."""
    try:
        month = check_month(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a month YYYY-MM") from None
    if month < START_MONTH:
        raise argparse.ArgumentTypeError(f"{month} is before the first partition, {START_MONTH}")
    return month


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="ml_assets.runner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "month", nargs="?", type=_partition, default="2021-02", help="partition key YYYY-MM (the first, for a range)"
    )
    parser.add_argument("--to", type=_partition, help="last month of a range (inclusive)")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=os.environ.get("VERBOSE", "") not in ("", "0"),
        help="print Dagster's whole event log (default when VERBOSE is set)",
    )
    args = parser.parse_args()
    if args.to is not None and args.to < args.month:
        parser.error(f"argument --to: {args.to} is before the first month, {args.month}")
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
