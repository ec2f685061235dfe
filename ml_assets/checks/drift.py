"""`cleaned_trips_drift`: month M against M-1 (check `drift_vs_previous_month`), a warning that never blocks.

An op of its own, run on the stored month. It reads both months through the `io_manager` resource,
only the columns it compares: an `AssetIn` with a partition mapping is not an option, as
`@asset_check` refuses its own asset in `additional_ins`, and an input for a month never
materialized would fail the step instead of letting the check say there is nothing to compare.
"""

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    PythonObjectDagsterType,
    asset_check,
    build_input_context,
)

from ml_assets import settings
from ml_assets.checks.thresholds import thresholds_config
from ml_assets.core import drift, plots
from ml_assets.core.months import shift_month
from ml_assets.deploy.executor import step_tags
from ml_assets.keys import CLEANED_TRIPS, INGESTION
from ml_assets.partitions import month_of, monthly_partitions, partitioned_checks
from ml_assets.records import latest_metadata
from ml_assets.ui_metadata import plot_metadata

DRIFT_CHECK = "drift_vs_previous_month"
DriftConfig = thresholds_config(
    "DriftConfig", drift.DriftThresholds, settings.DRIFT, "Warning thresholds of the drift check for one run."
)


def _load_month(context: AssetCheckExecutionContext, month: str) -> pd.DataFrame:
    """The columns drift compares of cleaned_trips for `month`, through the IO manager it is stored with."""
    input_context = build_input_context(
        asset_key=CLEANED_TRIPS,
        partition_key=month,
        asset_partitions_def=monthly_partitions,
        dagster_type=PythonObjectDagsterType(pd.DataFrame),
        instance=context.instance,
        definition_metadata={"columns": drift.DRIFT_INPUTS},
    )
    return context.resources.io_manager.load_input(input_context)


def _compare(context: AssetCheckExecutionContext, config, month: str, previous: str):
    """The drift result and its plot entries; a result saying why when there is nothing to compare."""
    if month == monthly_partitions.get_first_partition_key():
        return drift.nothing_to_compare(month, previous, f"{month} is the first partition"), {}
    if latest_metadata(context.instance, CLEANED_TRIPS, previous) is None:
        return drift.nothing_to_compare(month, previous, f"cleaned_trips for {previous} is not materialized"), {}
    try:
        previous_trips = _load_month(context, previous)
    except FileNotFoundError as error:  # recorded, but its stored value is gone
        reason = f"cleaned_trips for {previous} cannot be loaded: {error}"
        return drift.nothing_to_compare(month, previous, reason), {}
    trips = _load_month(context, month)
    result = drift.drift(previous_trips, trips, drift.DriftThresholds(**config.model_dump()), previous, month)
    plot = plot_metadata({"drift": lambda: plots.drift(previous_trips, trips, previous, month)}, context.log)
    return result, plot


@partitioned_checks
def cleaned_trips_drift():
    @asset_check(
        asset=CLEANED_TRIPS,
        name=DRIFT_CHECK,
        description="Month M against M-1: PSI and KS of duration and trip_distance, TVD of pickup-zone shares, "
        "growth of the model's codes' missing values; warns above the thresholds, never blocks. Passes when M-1 "
        "has no cleaned_trips.",
        blocking=False,
        required_resource_keys={"io_manager"},
        partitions_def=monthly_partitions,
        op_tags=step_tags(INGESTION),
    )
    def cleaned_trips_drift(context: AssetCheckExecutionContext, config: DriftConfig) -> AssetCheckResult:
        month = month_of(context)
        result, plot = _compare(context, config, month, shift_month(month, -1))
        if not result.passed:
            context.log.warning(f"cleaned_trips {month}: {result.message}")
        return AssetCheckResult(
            passed=result.passed,
            severity=AssetCheckSeverity.WARN,
            metadata={**result.metadata, **plot},
            description=result.message,
        )

    return cleaned_trips_drift
