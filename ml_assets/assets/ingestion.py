"""raw_trips and cleaned_trips: a month of trips as the source publishes it, then cleaned for modelling.

One op, `ingest_trips`, makes both assets from one read of the month's file, so a month's stored
raw and cleaned values always come from one version of it (the op cannot be subset: Dagster and the
UI always materialize both). The blocking rules are the op's own check specs (`checks.rule_specs`)
and are judged before anything is stored: when one fails, every evaluated rule is recorded as a
check evaluation (the Checks tab shows it) and the step fails naming the month, the file and the
rule, so the last good values stay in place. When all pass, the values are stored first and the
evaluations follow, so that they target the new materializations.
"""

from dagster import AssetExecutionContext, AssetOut, DataVersion, Failure, MetadataValue, Output, multi_asset

from ml_assets import ui_metadata
from ml_assets.checks.blocking_rules import RulesConfig, rule_result, rule_specs
from ml_assets.code_versions import code_version
from ml_assets.core import cleaning, plots, rules, schema, tables, zones
from ml_assets.core.cleaning import CleanedMonth, EmptyMonthError, clean_trips
from ml_assets.core.schema import DURATION
from ml_assets.core.sources import check_taxi_of_home
from ml_assets.core.storage import open_parquet_hashed
from ml_assets.deploy.executor import group_and_queue
from ml_assets.keys import CLEANED_TRIPS, INGESTION, RAW_TRIPS
from ml_assets.partitions import month_of, monthly_partitions
from ml_assets.records import latest_metadata
from ml_assets.resources.trip_source import TripSourceResource


def _refusal(error: rules.BlockingRuleError) -> Failure:
    """The step's failure: each failed rule with its figures as the failure's metadata."""
    metadata = {result.rule: MetadataValue.json(result.metadata) for result in error.failed}
    return Failure(description=str(error), metadata=metadata)


def _raw_metadata(table: tables.TableOrFile, path, size: int, sha256: str, trip_source: TripSourceResource) -> dict:
    return {
        "rows": tables.num_rows(table),
        "source": trip_source.label,
        "taxi": trip_source.taxi,
        "source_file": str(path),
        "size_bytes": size,
        "sha256": sha256,
        **ui_metadata.table_metadata(table),
    }


def _cleaned_metadata(context: AssetExecutionContext, cleaned: CleanedMonth) -> dict:
    trips = cleaned.trips
    return {
        "rows": len(trips),
        "raw_rows": cleaned.raw_rows,
        "dropped_rows": cleaned.dropped_rows,
        "dropped_share": round(cleaned.dropped_rows / cleaned.raw_rows, 5),
        **{f"dropped_{reason}": count for reason, count in cleaned.dropped.items()},
        "duration_mean": round(float(trips[DURATION].mean()), 3),
        **ui_metadata.table_metadata(trips),
        "preview": ui_metadata.preview(trips),
        **ui_metadata.plot_metadata({"duration": lambda: plots.duration_histogram(trips[DURATION])}, context.log),
    }


@multi_asset(
    outs={
        "raw": AssetOut(
            key=RAW_TRIPS,
            code_version=code_version(tables),
            description="One month of trips as the source publishes it (TLC's own file, schema untouched).",
            kinds={"parquet"},
        ),
        "cleaned": AssetOut(
            key=CLEANED_TRIPS,
            code_version=code_version(cleaning, schema, tables, zones),
            description="Trips with a `duration` (minutes) of 1–60 whose pickup lies in the month, between zones "
            "of TLC's lookup, each once, in one schema for all years.",
            kinds={"pandas"},
        ),
    },
    internal_asset_deps={"raw": set(), "cleaned": {RAW_TRIPS}},
    check_specs=rule_specs(),
    partitions_def=monthly_partitions,
    **group_and_queue(INGESTION),
    can_subset=False,
)
def ingest_trips(context: AssetExecutionContext, config: RulesConfig, trip_source: TripSourceResource):
    """Fetch the month, judge it by the blocking rules, clean it; store both only if every rule passed."""
    month = month_of(context)
    stored = latest_metadata(context.instance, RAW_TRIPS) or {}
    check_taxi_of_home(stored.get("taxi"), trip_source.taxi, month)
    path = trip_source.source().fetch(month)
    # Read a batch at a time: the whole raw month is never in memory. Its hash is that of the bytes read.
    table, sha256, size = open_parquet_hashed(path)
    origin = f"month {month}, file {path}"
    if tables.num_rows(table) == 0:
        raise EmptyMonthError(f"{origin}: the file has no trips")
    thresholds = rules.RuleThresholds(**config.model_dump())
    raw_results = rules.raw_rules(table, month, thresholds, trip_source.taxi)
    evaluations = [rule_result(RAW_TRIPS, result) for result in raw_results]
    try:
        rules.require_passed(raw_results, f"{origin}: raw_trips")  # a month failing these is not worth cleaning
        cleaned = clean_trips(table, month, origin)
        cleaned_results = rules.cleaned_rules(cleaned.trips, month, cleaned.raw_rows, cleaned.dropped, thresholds)
        evaluations += [rule_result(CLEANED_TRIPS, result) for result in cleaned_results]
        rules.require_passed(cleaned_results, f"{origin}: cleaned_trips")
    except ValueError as error:  # a failed rule, or nothing left after cleaning: record what was judged
        yield from evaluations
        if isinstance(error, rules.BlockingRuleError):
            raise _refusal(error) from error
        raise
    raw_metadata = _raw_metadata(table, path, size, sha256, trip_source)
    # The file's own hash is the month's data version: Dagster marks what was built from an older file stale.
    yield Output(table, "raw", metadata=raw_metadata, data_version=DataVersion(raw_metadata["sha256"]))
    yield Output(cleaned.trips, "cleaned", metadata=_cleaned_metadata(context, cleaned))
    yield from evaluations
