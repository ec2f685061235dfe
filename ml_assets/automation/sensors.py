"""`new_month_sensor`: ingests every month the trip source newly publishes or re-publishes.

Each tick compares the source's fingerprints with the instance and the cursor (`core.month_plan`),
never events, so a file that landed while Dagster was down is found; a source that cannot be
reached skips the tick with the reason, and a month that fails or answers late waits for the next
one. It ingests only; training follows by automation (docs/architecture.md).
"""

from __future__ import annotations

from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from ml_assets import settings
from ml_assets.automation.jobs import ingest_month_job
from ml_assets.core.month_plan import absence_warning, dump_cursor, load_cursor, plan_months, probe_months
from ml_assets.core.sources import SourceError
from ml_assets.keys import RAW_TRIPS
from ml_assets.partitions import monthly_partitions
from ml_assets.records import latest_metadata, partitions_in_progress
from ml_assets.resources.trip_source import TripSourceResource

IN_PROGRESS = "queued or running in a run or backfill, not requested"


def _recorded_size(instance: DagsterInstance):
    def size(month: str) -> int | None:
        return (latest_metadata(instance, RAW_TRIPS, month) or {}).get("size_bytes")

    return size


@sensor(
    job=ingest_month_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=settings.SENSOR_INTERVAL_SECONDS.value(),
    description="Ingests every month the trip source has and raw_trips lacks, or that was re-published "
    f"(oldest first, at most ${settings.SENSOR_MAX_MONTHS.variable} per tick).",
)
def new_month_sensor(context: SensorEvaluationContext, trip_source: TripSourceResource):
    limit = settings.SENSOR_MAX_MONTHS.value()
    months = monthly_partitions.get_partition_keys()
    try:
        source = trip_source.source().for_probing()
        fingerprints, unchecked = probe_months(source, months)
    except SourceError as exc:
        return SkipReason(
            f"trip source {trip_source.label} is unreachable, so no month was checked or requested "
            f"(cursor kept; the next tick tries again): {exc}"
        )

    not_checked = "; ".join(f"{month}: {why}" for month, why in sorted(unchecked.items()))
    if not fingerprints:
        return SkipReason(
            f"no month of {trip_source.label} could be checked, so none was requested (cursor kept; the next tick "
            f"tries again): {not_checked}"
        )
    if unchecked:
        context.log.warning(f"{len(unchecked)} month(s) not checked this tick, tried again on the next: {not_checked}")
    seen = load_cursor(context.cursor)
    first = monthly_partitions.get_first_partition_key()
    warning = absence_warning(fingerprints, seen, first, trip_source.label, source.file_of)
    if warning:
        context.log.warning(warning)
    plan = plan_months(
        fingerprints,
        seen,
        context.instance.get_materialized_partitions(RAW_TRIPS),
        _recorded_size(context.instance),
        partitions_in_progress(
            context.instance, RAW_TRIPS, monthly_partitions, months, context.repository_def.get_all_jobs()
        ),
    )
    chosen, waiting = plan.due[:limit], plan.due[limit:]
    cursor = dict(plan.cursor)
    requests = []
    for item in chosen:
        cursor[item.month] = item.fingerprint
        requests.append(
            RunRequest(
                run_key=item.run_key,
                partition_key=item.month,
                tags={"ml_assets/trigger": item.reason, "ml_assets/source_fingerprint": item.fingerprint},
            )
        )
        context.log.info(f"requesting {item.month} ({item.reason}, fingerprint {item.fingerprint})")
    if waiting:
        context.log.info(
            f"{len(waiting)} more month(s) for later ticks ({limit} per tick): " + ", ".join(d.month for d in waiting)
        )
    if plan.pending:
        context.log.info(
            "requested earlier, not materialized yet (queued, running or failed; not re-requested "
            "until re-published): " + ", ".join(plan.pending)
        )
    if plan.in_progress:
        context.log.info(f"{IN_PROGRESS}: " + ", ".join(plan.in_progress))
    if requests:
        return SensorResult(run_requests=requests, cursor=dump_cursor(cursor))
    available = sum(fp is not None for fp in fingerprints.values())
    reason = warning or f"nothing new: {available} month(s) available at {trip_source.label}, all ingested or requested"
    if plan.pending:
        reason += f"; requested earlier but not materialized: {', '.join(plan.pending)}"
    if plan.in_progress:
        reason += f"; {IN_PROGRESS}: {', '.join(plan.in_progress)}"
    return SensorResult(skip_reason=reason, cursor=dump_cursor(cursor))
