"""New months in, models out: `new_month_sensor` ingests, declarative automation trains.

- `new_month_sensor` (RUNNING) probes the trip source for every monthly partition (synthetic:
  published-through month; TLC: a HEAD's size/ETag/Last-Modified; a folder: size/mtime) and runs
  `ingest_month` (raw_trips + cleaned_trips of one month) for each month that is new or whose
  fingerprint changed (re-published), oldest first, at most ML_ASSETS_SENSOR_MAX_MONTHS per tick.
  It compares the source with the instance and its cursor on every tick, never events, so a file
  that landed while Dagster was down is found on the next tick. `run_key = month:fingerprint`, and
  the cursor remembers what was requested, so a queued or failed month is not requested again until
  it changes. An unreachable source skips the tick and keeps the cursor.
- Why the sensor does not run the whole graph: trip_features for M reads up to three months before
  M, so a whole-graph run for M fails whenever M-1 is still queued in the same tick. Its runs touch
  one month only; features, models and predictions carry EAGER_ALL_MONTHS, which waits until every
  month of the window is in (`any_deps_missing` sees the partition mapping) and none of them failed
  a blocking check, and `training_automation_sensor` (RUNNING; Dagster's default automation sensor
  starts STOPPED) evaluates it.
- Plain `eager()` would not do: in 1.13 it includes `in_latest_time_window()` and would only ever
  train the latest month.
- Known edge: the first partition has no earlier month; automation requests its features once, and
  that run fails with MissingTrainingMonthsError (it is not retried).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Iterable, Mapping, NamedTuple, Optional

from dagster import (
    AssetKey,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    DagsterInstance,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    sensor,
)

from ml_assets.core.sources import SourceUnavailableError
from ml_assets.materializations import latest_metadata
from ml_assets.partitions import monthly_partitions
from ml_assets.resources import TripSource
from ml_assets.settings import env_int

log = logging.getLogger("ml_assets.sensors")

RAW_TRIPS = AssetKey("raw_trips")
MAX_MONTHS_ENV = "ML_ASSETS_SENSOR_MAX_MONTHS"
DEFAULT_MAX_MONTHS = 3
INTERVAL_ENV = "ML_ASSETS_SENSOR_INTERVAL_SECONDS"
PROBE_WORKERS = 8
# A tick must end well within Dagster's sensor timeout (60 s by default): fewer, shorter HTTP tries
# than a download gets. The next tick tries again anyway.
PROBE_RETRIES = 1
PROBE_TIMEOUT_SECONDS = 10.0

# eager() minus in_latest_time_window(): every monthly partition, not only the latest (see above).
# Also never train on a window month whose blocking check failed: a check failing in the sensor's
# ingestion run cannot stop runs that automation starts later. (`all_deps_blocking_checks_passed()`
# would not do: it is satisfied when *one* month of the window passed.)
EAGER_ALL_MONTHS = (
    AutomationCondition.eager().without(AutomationCondition.in_latest_time_window())
    & ~AutomationCondition.any_deps_match(
        AutomationCondition.any_checks_match(AutomationCondition.check_failed(), blocking_only=True)
    ).with_label("any_deps_blocking_check_failed")
).with_label("eager_all_months")

TRAINING_ASSETS = ("trip_features", "best_params", "trained_model", "trip_duration_predictions")

training_automation_sensor = AutomationConditionSensorDefinition(
    "training_automation_sensor",
    target=AssetSelection.assets(*TRAINING_ASSETS),
    default_status=DefaultSensorStatus.RUNNING,
    description="Evaluates EAGER_ALL_MONTHS for features and models: a month trains once its whole window is ingested.",
)

ingest_month_job = define_asset_job(
    "ingest_month",
    selection=AssetSelection.assets("raw_trips", "cleaned_trips"),
    partitions_def=monthly_partitions,
    description="raw_trips and cleaned_trips for one month; features and models follow by automation.",
)


# Where a file is, not which version it is: moving a mirror or changing the TLC host is no re-publication.
LOCATION_KEYS = frozenset({"path", "url"})


def fingerprint_hash(fingerprint: Mapping[str, Any]) -> str:
    """Short, stable hash of a source's version fingerprint (key order and location keys do not matter)."""
    version = {key: value for key, value in fingerprint.items() if key not in LOCATION_KEYS}
    canonical = json.dumps(version, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_cursor(cursor: Optional[str]) -> dict[str, str]:
    """Fingerprint hash per month from the sensor's cursor; an unreadable cursor counts as empty."""
    if not cursor:
        return {}
    try:
        months = json.loads(cursor)["months"]
        if isinstance(months, dict):
            return {str(month): str(value) for month, value in months.items()}
    except (ValueError, KeyError, TypeError):
        pass
    log.warning("new_month_sensor: ignoring unreadable cursor %r", cursor[:200])
    return {}


def dump_cursor(months: Mapping[str, str]) -> str:
    return json.dumps({"months": dict(sorted(months.items()))}, sort_keys=True)


def max_months_per_tick() -> int:
    value = env_int(MAX_MONTHS_ENV, DEFAULT_MAX_MONTHS)
    if value < 1:
        raise ValueError(f"{MAX_MONTHS_ENV} must be at least 1, got {value}")
    return value


def _probe_client(trip_source: TripSource):
    client = trip_source.client()
    if hasattr(client, "timeout_seconds") and hasattr(client, "retries"):  # HTTP (TLC) source
        client = dataclasses.replace(client, retries=min(client.retries, PROBE_RETRIES),
                                     timeout_seconds=min(client.timeout_seconds, PROBE_TIMEOUT_SECONDS))
    return client


def probe_months(client, months: Iterable[str], workers: int = PROBE_WORKERS) -> dict[str, Optional[dict]]:
    """`client.probe` for every month, a few at a time; the first SourceUnavailableError stops it."""
    months = list(months)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(months) or 1))) as pool:
        futures = {pool.submit(client.probe, month): month for month in months}
        try:
            return {futures[future]: future.result() for future in as_completed(futures)}
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


class Due(NamedTuple):
    month: str
    fingerprint: str
    reason: str  # "new" or "republished"


class Plan(NamedTuple):
    due: list[Due]  # every month that needs ingesting, oldest first
    cursor: dict[str, str]  # the cursor before any request, with adopted baselines added
    pending: list[str]  # requested before, same fingerprint, still not materialized


def plan_months(fingerprints: Mapping[str, Optional[dict]], seen: Mapping[str, str],
                materialized: set[str], recorded_size) -> Plan:
    """What to ingest, given the source's fingerprints, the cursor and raw_trips' materializations.

    `recorded_size(month)` returns the `size_bytes` raw_trips recorded for a materialized month
    (None if unknown); it is only called for materialized months the cursor has no entry for.
    """
    cursor = dict(seen)
    due, pending = [], []
    for month in sorted(fingerprints):
        fingerprint = fingerprints[month]
        if fingerprint is None:
            continue  # not published (yet)
        current, previous = fingerprint_hash(fingerprint), seen.get(month)
        if previous == current:
            if month not in materialized:
                pending.append(month)
            continue
        if previous is None and month in materialized:
            size, recorded = fingerprint.get("size"), recorded_size(month)
            if size is None or recorded is None or int(size) == int(recorded):
                cursor[month] = current  # already ingested from this version: adopt as baseline
                continue
            due.append(Due(month, current, "republished"))
            continue
        due.append(Due(month, current, "new" if previous is None else "republished"))
    return Plan(due, cursor, pending)


def _recorded_size(instance: DagsterInstance):
    def size(month: str) -> Optional[int]:
        return (latest_metadata(instance, RAW_TRIPS, month) or {}).get("size_bytes")

    return size


@sensor(
    job=ingest_month_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=env_int(INTERVAL_ENV, 300),
    description="Ingests every month the trip source has and raw_trips lacks, or that was re-published "
                f"(oldest first, at most ${MAX_MONTHS_ENV} (default {DEFAULT_MAX_MONTHS}) per tick).",
)
def new_month_sensor(context: SensorEvaluationContext, trip_source: TripSource):
    limit = max_months_per_tick()
    months = monthly_partitions.get_partition_keys()
    try:
        fingerprints = probe_months(_probe_client(trip_source), months)
    except SourceUnavailableError as exc:
        return SkipReason(
            f"trip source {trip_source.label} is unreachable, so no month was checked or requested "
            f"(cursor kept; the next tick tries again): {exc}"
        )

    plan = plan_months(fingerprints, load_cursor(context.cursor),
                       context.instance.get_materialized_partitions(RAW_TRIPS), _recorded_size(context.instance))
    chosen, waiting = plan.due[:limit], plan.due[limit:]
    cursor = dict(plan.cursor)
    requests = []
    for item in chosen:
        cursor[item.month] = item.fingerprint
        requests.append(RunRequest(
            run_key=f"{item.month}:{item.fingerprint}",
            partition_key=item.month,
            tags={"ml_assets/trigger": item.reason, "ml_assets/source_fingerprint": item.fingerprint},
        ))
        context.log.info(f"requesting {item.month} ({item.reason}, fingerprint {item.fingerprint})")
    if waiting:
        context.log.info(f"{len(waiting)} more month(s) for later ticks ({limit} per tick): "
                         + ", ".join(d.month for d in waiting))
    if plan.pending:
        context.log.info("requested earlier, not materialized yet (queued, running or failed; not re-requested "
                         "until re-published): " + ", ".join(plan.pending))
    if requests:
        return SensorResult(run_requests=requests, cursor=dump_cursor(cursor))
    available = sum(fp is not None for fp in fingerprints.values())
    reason = f"nothing new: {available} month(s) available at {trip_source.label}, all ingested or requested"
    if plan.pending:
        reason += f"; requested earlier but not materialized: {', '.join(plan.pending)}"
    return SensorResult(skip_reason=reason, cursor=dump_cursor(cursor))
