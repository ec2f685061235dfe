"""Materialize the whole graph for a month, or a range of months in order, then report the models.

`make run` (one month) and `make backfill` (a range) call this. Months are run one by one, oldest
first, each as one Dagster run in the instance under $DAGSTER_HOME (they show in the UI): a
range gives exactly what materializing its months one by one gives. Months the first one trains
on are ingested first (raw and cleaned trips only) when the instance does not have them yet, so a
fresh `DAGSTER_HOME` works in one command.
"""

from __future__ import annotations

import argparse

from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult, materialize

from ml_assets.checks import all_checks
from ml_assets.core.months import check_month, month_range
from ml_assets.definitions import all_assets
from ml_assets.materializations import latest_metadata
from ml_assets.partitions import START_MONTH, window_months
from ml_assets.resources import build_resources

INGESTION = ["raw_trips", "cleaned_trips"]


def materialize_month(
    instance: DagsterInstance,
    month: str,
    selection: list[str] | None = None,
    run_config: dict | None = None,
    raise_on_error: bool = True,
) -> ExecuteInProcessResult:
    """One run for `month` of `selection` (asset names; default all) with their checks, as in the UI.

    `run_config["ops"]` may configure assets outside the selection (one config for every run); those
    are left out. Resources are built from the environment at call time, not at import.
    """
    config = dict(run_config or {})
    if selection is not None and "ops" in config:
        unselected = {key.to_user_string() for assets in all_assets for key in assets.keys} - set(selection)
        config["ops"] = {op: value for op, value in config["ops"].items() if op not in unselected}
    return materialize(
        [*all_assets, *all_checks],
        partition_key=month,
        instance=instance,
        resources=build_resources(),
        run_config=config,
        selection=selection,
        raise_on_error=raise_on_error,
    )


def run(first: str, last: str, instance: DagsterInstance, run_config: dict | None = None) -> dict[str, dict]:
    """Materialize every asset for each month from `first` to `last`; trained_model metadata per month."""
    ingested = set(instance.get_materialized_partitions(AssetKey("cleaned_trips")))
    for earlier in sorted(set(window_months(first)) - {first} - ingested):
        materialize_month(instance, earlier, INGESTION, run_config)
    models = {}
    for month in month_range(first, last):
        materialize_month(instance, month, run_config=run_config)
        models[month] = latest_metadata(instance, "trained_model", month)
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
    parser = argparse.ArgumentParser(prog="ml_assets.runner", description=__doc__)
    parser.add_argument(
        "month", nargs="?", type=_partition, default="2021-02", help="partition key YYYY-MM (the first, for a range)"
    )
    parser.add_argument("--to", type=_partition, help="last month of a range (inclusive)")
    args = parser.parse_args()
    if args.to is not None and args.to < args.month:
        parser.error(f"argument --to: {args.to} is before the first month, {args.month}")
    for month, model in run(args.month, args.to or args.month, DagsterInstance.get()).items():
        print(f"\ntrained_model {month}")
        print(f"  model file      {model['path']}")
        print(f"  test RMSE       {model['rmse']:.3f} min   (LinearRegression baseline {model['baseline_rmse']:.3f})")
        print(
            f"  MLflow run      {model['mlflow_run_id']}  (model {model['registered_model']} "
            f"v{model['model_version']}, {model['alias']})"
        )


if __name__ == "__main__":
    main()
