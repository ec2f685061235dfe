"""When features, models and predictions build: `WINDOW_READY`, evaluated by `training_automation_sensor`.

A month trains once every month of its training window is ingested and none failed a blocking
check; what each part of the condition is for is in docs/architecture.md (Automation).
"""

import warnings

from dagster import (
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    AutomationContext,
    AutomationResult,
    DefaultSensorStatus,
)

from ml_assets import settings
from ml_assets.keys import FEATURES, PREDICTION, TRAINING
from ml_assets.partitions import window_months

TRAINING_TAG = "ml_assets/stage"


class HasTrainingMonths(AutomationCondition):
    """True for the months whose training window holds at least one month before the month itself."""

    @property
    def description(self) -> str:
        return "the month's training window holds an earlier month"

    def get_label(self) -> str:
        return "has_training_months"

    def evaluate(self, context: AutomationContext) -> AutomationResult:
        candidates = context.candidate_subset
        able = {month for month in candidates.expensively_compute_partition_keys() if len(window_months(month)) > 1}
        return AutomationResult(context, candidates.compute_intersection_with_partition_keys(able))


_ANY_DEPS_MISSING = AutomationCondition.any_deps_missing()
_BLOCKING_CHECK_FAILED = AutomationCondition.any_checks_match(AutomationCondition.check_failed(), blocking_only=True)

WINDOW_READY = (
    AutomationCondition.eager()
    .without(AutomationCondition.in_latest_time_window())
    .without(~_ANY_DEPS_MISSING)
    .with_label("eager_every_month")
    & HasTrainingMonths()
    & ~_ANY_DEPS_MISSING.with_label("window_months_missing")
    & ~AutomationCondition.any_deps_match(
        _BLOCKING_CHECK_FAILED | AutomationCondition.any_deps_match(_BLOCKING_CHECK_FAILED)
    ).with_label("any_deps_blocking_check_failed")
).with_label("window_ready")

with warnings.catch_warnings():  # `use_user_code_server` is beta in Dagster 1.13, and needed here
    warnings.filterwarnings("ignore", message=".*use_user_code_server.*")
    training_automation_sensor = AutomationConditionSensorDefinition(
        "training_automation_sensor",
        target=AssetSelection.groups(FEATURES, TRAINING, PREDICTION),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.AUTOMATION_INTERVAL_SECONDS.value(),
        # A deployment's run queue allows one training run per machine by this tag (deploy/dagster.yaml).
        run_tags={TRAINING_TAG: "training"},
        # Evaluated in the code server: the daemon alone cannot evaluate a custom condition (HasTrainingMonths).
        use_user_code_server=True,
        description="Evaluates WINDOW_READY for features and models: a month trains once its whole window is ingested.",
    )
