"""The blocking data rules as check specs of the ingestion op, and the run config of their thresholds.

The rules themselves are `core.rules`; the op judges a month before anything is stored, and a
failed rule fails the step, so nothing is stored and the assets downstream are skipped
(docs/checks-and-faults.md).
"""

from dagster import AssetCheckResult, AssetCheckSpec, AssetKey

from ml_assets import settings
from ml_assets.checks.thresholds import thresholds_config
from ml_assets.core import rules
from ml_assets.keys import CLEANED_TRIPS, RAW_TRIPS
from ml_assets.partitions import monthly_partitions, partitioned_checks

RulesConfig = thresholds_config(
    "RulesConfig", rules.RuleThresholds, settings.RULES, "Thresholds of the blocking rules for one run."
)


def rule_specs() -> list[AssetCheckSpec]:
    """One partitioned, blocking check spec per rule of raw_trips and cleaned_trips."""
    return partitioned_checks(
        lambda: [
            AssetCheckSpec(name, asset=asset, description=description, blocking=True, partitions_def=monthly_partitions)
            for asset, described in ((RAW_TRIPS, rules.RAW_RULES), (CLEANED_TRIPS, rules.CLEANED_RULES))
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
