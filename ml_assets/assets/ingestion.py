"""raw_trips and cleaned_trips: a month of trips as the source publishes it, then cleaned for modelling.

Both judge a month by the blocking rules before returning it. Dagster runs blocking asset checks
only after the IO manager has stored the value, so a re-published month that reads but is bad
would otherwise replace the last good one; here it fails the step and nothing is stored. raw_trips
also cleans the month (a dry run, not stored) and applies cleaned_trips' rules: the stored raw and
cleaned values of a month always come from one version of its file. The thresholds are this run's
config of the check ops (`raw_trips_rules`, `cleaned_trips_rules`), so both judge alike.
"""

import hashlib

import pandas as pd
import pyarrow.parquet as pq
from dagster import AssetExecutionContext, Failure, MetadataValue, asset

from ml_assets import metadata as ui
from ml_assets.checks import RulesConfig, cleaned_trips_rules, raw_trips_rules
from ml_assets.core import plots, rules
from ml_assets.core.cleaning import EmptyMonthError, clean_trips
from ml_assets.core.schema import DURATION, check_required_columns
from ml_assets.partitions import monthly_partitions
from ml_assets.resources import TripSourceResource


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _thresholds(context: AssetExecutionContext, checks) -> rules.RuleThresholds:
    """The thresholds `checks` judge this run by: their op's run config, else the settings' defaults."""
    ops = context.run.run_config.get("ops", {})
    return RulesConfig(**ops.get(checks.node_def.name, {}).get("config", {})).thresholds()


def _require_passed(results, where: str) -> None:
    """Fail the step, nothing stored, with each failed rule's figures as the failure's metadata."""
    try:
        rules.require_passed(results, where)
    except rules.BlockingRuleError as error:
        metadata = {result.rule: MetadataValue.json(result.metadata) for result in error.failed}
        raise Failure(description=str(error), metadata=metadata) from error


@asset(partitions_def=monthly_partitions, group_name="ingestion", kinds={"parquet"})
def raw_trips(context: AssetExecutionContext, trip_source: TripSourceResource) -> pq.ParquetFile:
    """One month of trips as the source publishes it (TLC's own file, schema untouched).

    The file is opened once and read a batch at a time, by the rules, the dry run and the IO manager
    that stores it: the whole raw table is never in memory.
    """
    month = context.partition_key
    path = trip_source.source().fetch(month)
    table = pq.ParquetFile(path)
    where = f"month {month}, file {path}"
    check_required_columns(table.schema_arrow, where)
    if table.metadata.num_rows == 0:
        raise EmptyMonthError(f"{where}: the file has no trips")
    _require_passed(rules.raw_rules(table, month, _thresholds(context, raw_trips_rules)), f"{where}: raw_trips")
    cleaned = clean_trips(table, month, where)  # raises if nothing is left to clean
    cleaned_thresholds = _thresholds(context, cleaned_trips_rules)
    cleaned_results = rules.cleaned_rules(cleaned.trips, month, cleaned.raw_rows, cleaned_thresholds)
    _require_passed(cleaned_results, f"{where}: cleaned_trips (cleaned to check, not stored)")
    del cleaned
    context.add_output_metadata(
        {
            "rows": table.metadata.num_rows,
            "source": trip_source.label,
            "source_file": str(path),
            "size_bytes": path.stat().st_size,
            "sha256": _sha256(path),
            **ui.table_metadata(table),
        }
    )
    return table


@asset(partitions_def=monthly_partitions, group_name="ingestion", kinds={"pandas"})
def cleaned_trips(context: AssetExecutionContext, raw_trips: pq.ParquetFile) -> pd.DataFrame:
    """Trips with a `duration` (minutes) of 1–60 whose pickup lies in the month, in one schema for all years."""
    month = context.partition_key
    where = f"month {month}, raw_trips"
    cleaned = clean_trips(raw_trips, month, where)
    thresholds = _thresholds(context, cleaned_trips_rules)
    _require_passed(rules.cleaned_rules(cleaned.trips, month, cleaned.raw_rows, thresholds), f"{where}: cleaned_trips")
    context.add_output_metadata(
        {
            "rows": len(cleaned.trips),
            "raw_rows": cleaned.raw_rows,
            "dropped_rows": cleaned.dropped_rows,
            "dropped_share": round(cleaned.dropped_rows / cleaned.raw_rows, 5),
            **{f"dropped_{reason}": count for reason, count in cleaned.dropped.items()},
            "duration_mean": round(float(cleaned.trips[DURATION].mean()), 3),
            **ui.table_metadata(cleaned.trips),
            "preview": ui.preview(cleaned.trips),
            **ui.plot_metadata({"duration": lambda: plots.duration_histogram(cleaned.trips[DURATION])}, context.log),
        }
    )
    return cleaned.trips
