"""Asset checks on raw_trips and cleaned_trips: thin Dagster wrappers around `core.rules` and `core.drift`.

- Blocking rules, the check specs of the ingestion op itself (`ml_assets.assets.ingestion`):
  `schema`, `row_count`, `pickups_in_month` on raw_trips; `schema`, `row_count`,
  `dropped_share`, `pickups_in_month`, `no_nulls` on cleaned_trips. One check per rule, so the UI
  shows which rule failed; each result's metadata has `rule`, `message` and the figures with their
  threshold. The op judges the month before anything is stored: a failed rule is recorded as a
  failed check evaluation and then fails the step, so nothing is stored and the assets downstream
  are skipped. A later run is not stopped by an earlier failed check, so the automation condition
  of the training assets (`ml_assets.automation.WINDOW_READY`) refuses any window month with a
  failed blocking check.
- `cleaned_trips_drift`: check `drift_vs_previous_month` on cleaned_trips (WARN, not blocking), an
  op of its own, run on the stored month.

All checks are partitioned like their asset (one evaluation per month). Thresholds: run config
(`RulesConfig` of the ingestion op, `DriftConfig` of the drift check, e.g. from the launchpad),
whose defaults are the ML_ASSETS_* variables of `ml_assets.settings`.

The drift check reads both months' cleaned_trips through the `io_manager` resource (the IO manager
cleaned_trips is stored with), only the columns it compares. An `AssetIn` with a partition mapping
is not an option: `@asset_check` refuses its own asset in `additional_ins`, and an input for a
partition that was never materialized would fail the step instead of letting the check say there is
nothing to compare.
"""

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    Config,
    PythonObjectDagsterType,
    asset_check,
    build_input_context,
)
from pydantic import Field

from ml_assets import settings
from ml_assets.core import drift, plots, rules
from ml_assets.core.months import shift_month
from ml_assets.execution import step_tags
from ml_assets.materializations import latest_metadata
from ml_assets.metadata import plot_metadata
from ml_assets.partitions import monthly_checks, monthly_partitions

RAW, CLEANED = AssetKey("raw_trips"), AssetKey("cleaned_trips")
RAW_RULES = {
    "schema": "Required columns present; every known column castable to the canonical schema.",
    "row_count": "At least min_rows rows.",
    "pickups_in_month": "Share of pickups inside the month >= min_pickups_in_month.",
}
CLEANED_RULES = {
    "schema": "Canonical columns and duration present, castable to their canonical types.",
    "row_count": "At least min_rows rows.",
    "dropped_share": "Share of raw rows dropped by cleaning <= max_dropped_share.",
    "pickups_in_month": "Every pickup inside the month.",
    "no_nulls": "No nulls in the required columns and duration.",
}
DRIFT_CHECK = "drift_vs_previous_month"


class RulesConfig(Config):
    """Thresholds of the blocking rules for one run of the ingestion op (defaults: ML_ASSETS_* variables)."""

    min_rows: int = Field(default=settings.MIN_ROWS.value(), description="row-count floor")
    max_dropped_share: float = Field(
        default=settings.MAX_DROPPED_SHARE.value(), description="ceiling of the share of rows cleaning may drop"
    )
    min_pickups_in_month: float = Field(
        default=settings.MIN_PICKUPS_IN_MONTH.value(),
        description="raw_trips: minimum share of pickups inside the month",
    )

    def thresholds(self) -> rules.RuleThresholds:
        return rules.RuleThresholds(**self.model_dump())


class DriftConfig(Config):
    """Warning thresholds of the drift check for one run (defaults: ML_ASSETS_DRIFT_*, see settings)."""

    psi: float = Field(default=settings.DRIFT_PSI.value(), description="warn above this PSI")
    ks: float = Field(default=settings.DRIFT_KS.value(), description="warn above this KS statistic")
    tvd: float = Field(default=settings.DRIFT_TVD.value(), description="warn above this pickup-zone TVD")

    def thresholds(self) -> drift.DriftThresholds:
        return drift.DriftThresholds(**self.model_dump())


def rule_specs() -> list[AssetCheckSpec]:
    """The blocking rules of raw_trips and cleaned_trips, one partitioned check spec each."""
    return monthly_checks(
        lambda: [
            AssetCheckSpec(name, asset=asset, description=description, blocking=True, partitions_def=monthly_partitions)
            for asset, described in ((RAW, RAW_RULES), (CLEANED, CLEANED_RULES))
            for name, description in described.items()
        ]
    )


def rule_result(asset: AssetKey, result: rules.RuleResult) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=asset,
        check_name=result.rule,
        passed=result.passed,
        metadata=result.metadata,
        description=result.message,
    )


def _load_month(context: AssetCheckExecutionContext, month: str) -> pd.DataFrame:
    """The columns drift compares of cleaned_trips for `month`, through the IO manager it is stored with."""
    input_context = build_input_context(
        asset_key=CLEANED,
        partition_key=month,
        asset_partitions_def=monthly_partitions,
        dagster_type=PythonObjectDagsterType(pd.DataFrame),
        instance=context.instance,
        definition_metadata={"columns": drift.DRIFT_INPUTS},
    )
    return context.resources.io_manager.load_input(input_context)


def _previous_month_materialized(context: AssetCheckExecutionContext, month: str) -> bool:
    return latest_metadata(context.instance, CLEANED, month) is not None


def _drift_check(fn):
    return monthly_checks(
        lambda: asset_check(
            asset=CLEANED,
            name=DRIFT_CHECK,
            description="Month M against M-1: PSI and KS of duration and trip_distance, TVD of pickup-zone shares; "
            "warns above the thresholds, never blocks. Passes when M-1 has no cleaned_trips.",
            blocking=False,
            required_resource_keys={"io_manager"},
            partitions_def=monthly_partitions,
            op_tags=step_tags("ingestion"),
        )(fn)
    )


@_drift_check
def cleaned_trips_drift(context: AssetCheckExecutionContext, config: DriftConfig) -> AssetCheckResult:
    month = context.partition_key
    previous = shift_month(month, -1)
    plot = {}
    if month == monthly_partitions.get_first_partition_key():
        result = drift.nothing_to_compare(month, previous, f"{month} is the first partition")
    elif not _previous_month_materialized(context, previous):
        result = drift.nothing_to_compare(month, previous, f"cleaned_trips for {previous} is not materialized")
    else:
        try:
            previous_trips = _load_month(context, previous)
        except FileNotFoundError as error:  # recorded, but its stored value is gone
            result = drift.nothing_to_compare(
                month, previous, f"cleaned_trips for {previous} cannot be loaded: {error}"
            )
        else:
            cleaned_trips = _load_month(context, month)
            result = drift.drift(previous_trips, cleaned_trips, config.thresholds(), previous, month)
            plot = plot_metadata(
                {"drift": lambda: plots.drift(previous_trips, cleaned_trips, previous, month)}, context.log
            )
    if not result.passed:
        context.log.warning(f"cleaned_trips {month}: {result.message}")
    return AssetCheckResult(
        passed=result.passed,
        severity=AssetCheckSeverity.WARN,
        metadata={**result.metadata, **plot},
        description=result.message,
    )
