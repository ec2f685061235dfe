"""When features, models and predictions build: declarative automation conditions and their sensor.

`new_month_sensor` ingests one month per run; everything downstream carries `WINDOW_READY`, which
`training_automation_sensor` (RUNNING; Dagster's default automation sensor starts STOPPED)
evaluates:
- eager() minus in_latest_time_window(): every monthly partition trains, not only the latest (in
  1.13 plain eager() would only ever train the latest month);
- `any_deps_missing` sees the partition mapping, so month M waits until every month of its window is in;
- never train on a window month whose blocking check failed: a check failing in the sensor's
  ingestion run cannot stop runs that automation starts later (`all_deps_blocking_checks_passed()`
  would not do: it is satisfied when *one* month of the window passed).
Known edge: the first partition has no earlier month; automation requests its features once, and
that run fails with MissingTrainingMonthsError (it is not retried).
"""

from dagster import AssetSelection, AutomationCondition, AutomationConditionSensorDefinition, DefaultSensorStatus

WINDOW_READY = (
    AutomationCondition.eager().without(AutomationCondition.in_latest_time_window())
    & ~AutomationCondition.any_deps_match(
        AutomationCondition.any_checks_match(AutomationCondition.check_failed(), blocking_only=True)
    ).with_label("any_deps_blocking_check_failed")
).with_label("window_ready")

training_automation_sensor = AutomationConditionSensorDefinition(
    "training_automation_sensor",
    target=AssetSelection.groups("features", "training", "predictions"),
    default_status=DefaultSensorStatus.RUNNING,
    description="Evaluates WINDOW_READY for features and models: a month trains once its whole window is ingested.",
)
