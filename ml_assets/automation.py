"""When features, models and predictions build: declarative automation conditions and their sensor.

`new_month_sensor` ingests one month per run; everything downstream carries `WINDOW_READY`, which
`training_automation_sensor` (RUNNING; Dagster's default automation sensor starts STOPPED)
evaluates:
- eager() minus in_latest_time_window(): every monthly partition trains, not only the latest (in
  1.13 plain eager() would only ever train the latest month);
- `has_training_months`: a month whose window holds no earlier month (the first partition) cannot
  train, so it is never requested (a request would only show a failed run);
- `window_months_missing` (eager's any_deps_missing, labelled): month M waits until every month of
  its window is in; the partition mapping is applied, so the UI's evaluation of this node lists,
  under cleaned_trips, exactly which window months are missing;
- never train on a window month whose blocking check failed: a check failing in the sensor's
  ingestion run cannot stop runs that automation starts later (`all_deps_blocking_checks_passed()`
  would not do: it is satisfied when *one* month of the window passed). The check of a dep's dep
  counts too: when a raw_trips rule fails, cleaned_trips' rules are not evaluated (the month is
  not cleaned), so its failed check is one level further up.
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
        target=AssetSelection.groups("features", "training", "predictions"),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.AUTOMATION_INTERVAL_SECONDS.value(),
        # A deployment's run queue allows one training run per machine by this tag (deploy/dagster.yaml).
        run_tags={TRAINING_TAG: "training"},
        # Evaluated in the code server: the daemon alone cannot evaluate a custom condition (HasTrainingMonths).
        use_user_code_server=True,
        description="Evaluates WINDOW_READY for features and models: a month trains once its whole window is ingested.",
    )
