"""`monthly_retrain_schedule`: a monthly safety net that retrains the latest complete month.

On the 2nd of every month at 06:00 UTC it runs `retrain_month` (trip_features → best_params →
trained_model) for the latest monthly partition whose whole training window has cleaned_trips:
the month itself and each of the TRAINING_MONTHS months before it that exist as partitions (the
first partition never qualifies: it has no earlier month to train on). If no month qualifies it
skips with the reason. Re-running continues the month's optuna study (more trials on top of the
earlier ones) and logs a new model version to MLflow.

Default status: STOPPED. With the defaults, `new_month_sensor` and declarative automation (both
running) already train every month as soon as its window is in, and retrain every month whose
window changed; a running schedule would on top of that re-tune and re-register the latest model
every month although nothing changed, and could start while automation is training the same
partition. Turn it on where that automation is off: the sensor stopped (months ingested by hand,
by backfills, or by `make run`), or automation paused on the instance, so that at least the latest
month gets a fresh model each month. Turn it on in the UI (Automation → monthly_retrain_schedule)
or with `dagster schedule start monthly_retrain_schedule`.
"""

from __future__ import annotations

import datetime

from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from ml_assets.jobs import retrain_month_job
from ml_assets.partitions import monthly_partitions, window_months

CLEANED_TRIPS = AssetKey("cleaned_trips")
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
    now = context.scheduled_execution_time
    month = latest_complete_month(context.instance, now)
    if month is None:
        return SkipReason(
            "no month to retrain: none has cleaned_trips for its whole training window "
            "(ingest months first, e.g. with new_month_sensor or the ingest_month job)"
        )
    tick = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%d")
    return RunRequest(
        run_key=f"retrain:{month}:{tick}", partition_key=month, tags={"ml_assets/trigger": "monthly_retrain_schedule"}
    )
