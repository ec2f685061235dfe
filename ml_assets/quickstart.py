"""`make run`: materialize the whole graph for one month, then say where the model is and how good.

Months the model trains on are materialized first (raw and cleaned trips only) when the
instance does not have them yet, so a fresh `DAGSTER_HOME` works in one command.
"""
from __future__ import annotations

import argparse

from dagster import AssetKey, DagsterInstance

from ml_assets.definitions import defs
from ml_assets.partitions import monthly_partitions, training_window

INGESTION = [AssetKey("raw_trips"), AssetKey("cleaned_trips")]


def _materialized(instance: DagsterInstance, key: AssetKey, month: str) -> bool:
    return month in instance.get_materialized_partitions(key)


def run(month: str, instance: DagsterInstance) -> dict:
    job = defs.resolve_implicit_global_asset_job_def()
    window = training_window.get_upstream_mapped_partitions_result_for_partitions(
        monthly_partitions.subset_with_partition_keys([month]), monthly_partitions, monthly_partitions
    ).partitions_subset.get_partition_keys()
    for earlier in sorted(set(window) - {month}):
        if not _materialized(instance, AssetKey("cleaned_trips"), earlier):
            job.execute_in_process(partition_key=earlier, instance=instance, asset_selection=INGESTION)
    job.execute_in_process(partition_key=month, instance=instance)
    event = instance.get_latest_materialization_event(AssetKey("trained_model"))
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("month", nargs="?", default="2021-02", help="partition key YYYY-MM")
    month = parser.parse_args().month
    model = run(month, DagsterInstance.get())
    print(f"\ntrained_model {month}")
    print(f"  model file      {model['path']}")
    print(f"  test RMSE       {model['rmse']:.3f} min   (LinearRegression baseline {model['baseline_rmse']:.3f})")
    print(f"  MLflow run      {model['mlflow_run_id']}  (model {model['registered_model']} v{model['model_version']})")


if __name__ == "__main__":
    main()
