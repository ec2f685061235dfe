"""Monthly partitions: a partition key is a month (`core.months`), and month M trains on the months before it."""

from __future__ import annotations

import warnings

from dagster import MonthlyPartitionsDefinition, TimeWindowPartitionMapping

from ml_assets import settings
from ml_assets.core.months import MONTH_FORMAT, check_month

# Both shape the asset graph, so they are fixed when the code location loads (see settings).
START_MONTH = settings.START_MONTH.value()
TRAINING_MONTHS = settings.TRAINING_MONTHS.value()

monthly_partitions = MonthlyPartitionsDefinition(start_date=START_MONTH, fmt=MONTH_FORMAT)

# Features for month M read the TRAINING_MONTHS months before M plus M itself (the test month).
# Months before the first partition are skipped, so early months train on what exists.
with warnings.catch_warnings():  # the parameter is beta in Dagster 1.13, and wanted here
    warnings.filterwarnings("ignore", message=".*allow_nonexistent_upstream_partitions.*")
    training_window = TimeWindowPartitionMapping(
        start_offset=-TRAINING_MONTHS, end_offset=0, allow_nonexistent_upstream_partitions=True
    )


def month_of(context) -> str:
    """The month a step, check or IO call works on: its partition key."""
    return check_month(context.partition_key)


def window_months(month: str) -> list[str]:
    """The cleaned_trips partitions trip_features for `month` reads: its training months and itself."""
    subset = monthly_partitions.subset_with_partition_keys([month])
    mapped = training_window.get_upstream_mapped_partitions_result_for_partitions(
        subset, monthly_partitions, monthly_partitions
    )
    return sorted(mapped.partitions_subset.get_partition_keys())


def partitioned_checks(make):
    """`make()`'s partitioned checks, without Dagster 1.13's preview warning for them (documented, and wanted)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")
        return make()
