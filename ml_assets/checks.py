"""Asset checks on raw_trips and cleaned_trips: thin Dagster wrappers around `ml_assets.core.quality`.

- `raw_trips_quality`: blocking checks `schema`, `row_count`, `pickups_in_month` on raw_trips.
- `cleaned_trips_quality`: blocking checks `schema`, `row_count`, `dropped_share`,
  `pickups_in_month`, `no_nulls` on cleaned_trips.
- `cleaned_trips_drift`: check `drift_vs_previous_month` on cleaned_trips (WARN, not blocking).

All checks are partitioned like their asset (one evaluation per month). Each group is one op (the
month is loaded once) that reports every rule as a check of its own, so the UI shows which rule
failed; each result's metadata has `rule`, `message` and the figures with their threshold.

Blocking: a failed ERROR-severity blocking check fails its step, so in the same run the assets
downstream of the checked asset (cleaned_trips after raw_trips, trip_features after cleaned_trips)
are skipped for that month. Checks run whenever their asset is selected (UI, CLI, the
`ingest_month` job of `new_month_sensor`). A blocking check only gates the run it is part of:
a later run is not stopped by an earlier failed check, so the automation condition of the training
assets (`EAGER_ALL_MONTHS` in sensors.py) refuses any window month with a failed blocking check.

Thresholds: `QualityRules` defaults, overridden by `ML_ASSETS_<RULE>` environment variables read
when the check runs (ML_ASSETS_MIN_ROWS, ML_ASSETS_MAX_DROPPED_SHARE, ML_ASSETS_MIN_PICKUPS_IN_MONTH,
ML_ASSETS_DRIFT_PSI, ML_ASSETS_DRIFT_KS, ML_ASSETS_DRIFT_TVD, ML_ASSETS_PSI_BINS), overridden in turn
by the check op's run config (`QualityConfig`, e.g. from the launchpad).

The drift check reads the previous month's cleaned_trips through the `io_manager` resource (the
IO manager cleaned_trips is stored with). An `AssetIn` with a partition mapping is not an option:
`@asset_check` refuses its own asset in `additional_ins`, and an input for a partition that was
never materialized would fail the step instead of letting the check say there is nothing to compare.
"""

import warnings
from typing import Iterable, Optional

import pandas as pd
import pyarrow as pa
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetIn,
    AssetKey,
    Config,
    PythonObjectDagsterType,
    asset_check,
    build_input_context,
    multi_asset_check,
)
from pydantic import Field

from ml_assets.core import plots, quality
from ml_assets.core.months import shift_month
from ml_assets.materializations import latest_metadata
from ml_assets.metadata import plot_metadata
from ml_assets.partitions import monthly_partitions

RAW, CLEANED = AssetKey("raw_trips"), AssetKey("cleaned_trips")
RAW_RULES = {
    "schema": "Required columns present; every known column castable to the canonical schema.",
    "row_count": "At least min_rows rows (ML_ASSETS_MIN_ROWS, default 1000).",
    "pickups_in_month": "Share of pickups inside the month >= min_pickups_in_month (default 0.95).",
}
CLEANED_RULES = {
    "schema": "Canonical columns and duration present, castable to their canonical types.",
    "row_count": "At least min_rows rows (ML_ASSETS_MIN_ROWS, default 1000).",
    "dropped_share": "Share of raw rows dropped by cleaning <= max_dropped_share (default 0.2).",
    "pickups_in_month": "Every pickup inside the month.",
    "no_nulls": "No nulls in the REQUIRED columns and duration.",
}
DRIFT_CHECK = "drift_vs_previous_month"


class QualityConfig(Config):
    """Per-run overrides of the rules' thresholds; unset fields come from ML_ASSETS_<NAME> or the defaults."""

    min_rows: Optional[int] = Field(default=None, description="row-count floor (default 1000)")
    max_dropped_share: Optional[float] = Field(default=None, description="ceiling of the dropped share (default 0.2)")
    min_pickups_in_month: Optional[float] = Field(
        default=None, description="raw_trips: minimum share of pickups inside the month (default 0.95)")
    drift_psi: Optional[float] = Field(default=None, description="warn above this PSI (default 0.2)")
    drift_ks: Optional[float] = Field(default=None, description="warn above this KS statistic (default 0.1)")
    drift_tvd: Optional[float] = Field(default=None, description="warn above this pickup-zone TVD (default 0.1)")

    def rules(self) -> quality.QualityRules:
        return quality.QualityRules.from_env(**self.model_dump())


def _quiet_preview(make):
    """Build without Dagster 1.13's preview warning for partitioned checks (documented, and wanted here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")
        return make()


def _specs(asset: AssetKey, rules: dict[str, str], blocking: bool) -> list[AssetCheckSpec]:
    return _quiet_preview(lambda: [
        AssetCheckSpec(name, asset=asset, description=description, blocking=blocking,
                       partitions_def=monthly_partitions)
        for name, description in rules.items()
    ])


def _blocking_checks(asset: AssetKey, rules: dict[str, str]):
    """One op per asset and month, loading the value once and reporting each rule as its own check."""
    name = asset.to_user_string()
    return multi_asset_check(
        specs=_specs(asset, rules, blocking=True), ins={name: AssetIn(asset)}, can_subset=True,
        name=f"{name}_quality", description=f"Blocking data checks on {name} (see ml_assets.core.quality).",
    )


def _result(asset: AssetKey, result: quality.RuleResult,
            severity: AssetCheckSeverity = AssetCheckSeverity.ERROR) -> AssetCheckResult:
    return AssetCheckResult(asset_key=asset, check_name=result.rule, passed=result.passed,
                            severity=severity, metadata=result.metadata, description=result.message)


def _selected(context: AssetCheckExecutionContext, asset: AssetKey,
              results: Iterable[quality.RuleResult]) -> Iterable[AssetCheckResult]:
    selected = {key.name for key in context.selected_asset_check_keys if key.asset_key == asset}
    for result in results:
        if result.rule in selected:
            if not result.passed:
                context.log.warning(f"{asset.to_user_string()} {context.partition_key}: "
                                    f"check {result.rule} failed: {result.message}")
            yield _result(asset, result)


@_blocking_checks(RAW, RAW_RULES)
def raw_trips_quality(context: AssetCheckExecutionContext, config: QualityConfig, raw_trips: pa.Table):
    rules = config.rules()
    yield from _selected(context, RAW, quality.raw_rules(raw_trips, context.partition_key, rules))


def _recorded_raw_rows(context: AssetCheckExecutionContext, month: str) -> Optional[int]:
    """`raw_rows` from cleaned_trips' newest materialization of `month` (the value being checked)."""
    value = (latest_metadata(context.instance, CLEANED, month) or {}).get("raw_rows")
    return int(value) if value is not None else None


@_blocking_checks(CLEANED, CLEANED_RULES)
def cleaned_trips_quality(context: AssetCheckExecutionContext, config: QualityConfig,
                          cleaned_trips: pd.DataFrame):
    month = context.partition_key
    rules = config.rules()
    results = quality.cleaned_rules(cleaned_trips, month, _recorded_raw_rows(context, month), rules)
    yield from _selected(context, CLEANED, results)


def _load_previous(context: AssetCheckExecutionContext, month: str) -> pd.DataFrame:
    input_context = build_input_context(
        asset_key=CLEANED, partition_key=month, asset_partitions_def=monthly_partitions,
        dagster_type=PythonObjectDagsterType(pd.DataFrame), instance=context.instance,
    )
    return context.resources.io_manager.load_input(input_context)


def _previous_month_materialized(context: AssetCheckExecutionContext, month: str) -> bool:
    return latest_metadata(context.instance, CLEANED, month) is not None


def _drift_check(fn):
    return _quiet_preview(lambda: asset_check(
        asset=CLEANED,
        name=DRIFT_CHECK,
        description="Month M against M-1: PSI and KS of duration and trip_distance, TVD of pickup-zone shares; "
                    "warns above the thresholds, never blocks. Passes when M-1 has no cleaned_trips.",
        blocking=False,
        required_resource_keys={"io_manager"},
        partitions_def=monthly_partitions,
    )(fn))


@_drift_check
def cleaned_trips_drift(context: AssetCheckExecutionContext, config: QualityConfig,
                        cleaned_trips: pd.DataFrame) -> AssetCheckResult:
    month = context.partition_key
    previous = shift_month(month, -1)
    plot = {}
    if month == monthly_partitions.get_first_partition_key():
        result = quality.nothing_to_compare(month, previous, f"{month} is the first partition")
    elif not _previous_month_materialized(context, previous):
        result = quality.nothing_to_compare(month, previous, f"cleaned_trips for {previous} is not materialized")
    else:
        try:
            previous_trips = _load_previous(context, previous)
        except FileNotFoundError as error:  # recorded, but its stored value is gone
            result = quality.nothing_to_compare(month, previous,
                                                f"cleaned_trips for {previous} cannot be loaded: {error}")
        else:
            result = quality.drift(previous_trips, cleaned_trips, config.rules(), previous, month)
            plot = plot_metadata({"drift": lambda: plots.drift(previous_trips, cleaned_trips, previous, month)},
                                 context.log)
    if not result.passed:
        context.log.warning(f"cleaned_trips {month}: {result.message}")
    return AssetCheckResult(passed=result.passed, severity=AssetCheckSeverity.WARN,
                            metadata={**result.metadata, **plot}, description=result.message)


all_checks = [raw_trips_quality, cleaned_trips_quality, cleaned_trips_drift]
