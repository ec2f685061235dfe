"""`monthly_retrain_schedule` (stopped by default): retrains the latest complete month, for when automation is off.

It holds back the month automation would hold back for a failed blocking check (`conditions.CHECKS_PASSED`).

With the sensor and automation on, every month already trains once its window is in; the schedule
would only re-tune and re-register the latest model every month (docs/architecture.md).
"""

from __future__ import annotations

import datetime

from dagster import (
    DagsterInstance,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from ml_assets.automation.conditions import failed_blocking_checks
from ml_assets.automation.jobs import retrain_month_job
from ml_assets.keys import CLEANED_TRIPS
from ml_assets.partitions import monthly_partitions, window_months

CRON = "0 6 2 * *"


def latest_complete_month(instance: DagsterInstance, now: datetime.datetime | None = None) -> str | None:
    """The latest month with cleaned_trips for its whole training window and at least one earlier month."""
    cleaned = instance.get_materialized_partitions(CLEANED_TRIPS)
    existing = set(monthly_partitions.get_partition_keys(current_time=now))
    for month in sorted(cleaned & existing, reverse=True):
        window = window_months(month)
        if len(window) > 1 and cleaned.issuperset(window):
            return month
    return None


@schedule(
    job=retrain_month_job,
    cron_schedule=CRON,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Safety net when the new-month sensor is off: retrain the latest month whose training window is in.",
)
def monthly_retrain_schedule(context: ScheduleEvaluationContext):
    # A tick always has a scheduled time, a preview (`dagster schedule preview`) none, and the public property then
    # raises: read it as Dagster's own partitioned schedules do, and fall back to the current time.
    now = context._scheduled_execution_time or datetime.datetime.now(datetime.timezone.utc)
    month = latest_complete_month(context.instance, now)
    if month is None:
        return SkipReason(
            "no month to retrain: none has cleaned_trips for its whole training window "
            "(ingest months first, e.g. with new_month_sensor or the ingest_month job)"
        )
    from ml_assets.definitions import defs  # which imports this module

    failed = failed_blocking_checks(defs, retrain_month_job.selection, context.instance, month)
    if failed:
        window = window_months(month)
        named = ", ".join(f"{check} failed for {checked}" for check, checked in failed if checked in window)
        return SkipReason(
            f"not retraining {month}: as for automation, a blocking check failed on its training window: {named} "
            "(ingest the month again, e.g. with the ingest_month job; the next tick retrains once it passes)"
        )
    return RunRequest(
        run_key=f"retrain:{month}:{now:%Y-%m-%d}",
        partition_key=month,
        tags={"ml_assets/trigger": "monthly_retrain_schedule"},
    )
