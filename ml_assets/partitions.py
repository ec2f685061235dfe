"""Monthly partitions keyed `YYYY-MM` (as in TLC's file names) and the training window."""

from __future__ import annotations

import warnings

from dagster import MonthlyPartitionsDefinition, TimeWindowPartitionMapping

from ml_assets import settings

# Both shape the asset graph, so they are fixed when the code location loads (see settings).
START_MONTH = settings.START_MONTH.value()
TRAINING_MONTHS = settings.TRAINING_MONTHS.value()

monthly_partitions = MonthlyPartitionsDefinition(start_date=START_MONTH, fmt="%Y-%m")

# Features for month M read the TRAINING_MONTHS months before M plus M itself (the test month).
# Months before the first partition are skipped, so early months train on what exists.
with warnings.catch_warnings():  # the parameter is beta in Dagster 1.13, and wanted here
    warnings.filterwarnings("ignore", message=".*allow_nonexistent_upstream_partitions.*")
    training_window = TimeWindowPartitionMapping(
        start_offset=-TRAINING_MONTHS, end_offset=0, allow_nonexistent_upstream_partitions=True
    )


def window_months(month: str) -> list[str]:
    """The cleaned_trips partitions trip_features for `month` reads: its training months and itself."""
    subset = monthly_partitions.subset_with_partition_keys([month])
    mapped = training_window.get_upstream_mapped_partitions_result_for_partitions(
        subset, monthly_partitions, monthly_partitions
    )
    return sorted(mapped.partitions_subset.get_partition_keys())


def monthly_checks(make):
    """Build partitioned checks without Dagster 1.13's preview warning for them (documented, and wanted here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")
        return make()
