"""New months in, models out: `new_month_sensor` ingests, declarative automation trains.

How a month flows
-----------------
1. `new_month_sensor` (RUNNING by default) asks the configured `trip_source` for a version
   fingerprint of every monthly partition up to now (`probe(month)`: synthetic seed/rows, TLC's
   size/ETag/Last-Modified from a HEAD request, a directory file's size/mtime). It requests the
   `ingest_month` job (raw_trips + cleaned_trips of that one month) for every available month that
   - has no raw_trips materialization and was never requested before, or
   - was requested or materialized before with a different fingerprint (TLC re-published it).
   All such months are requested, oldest first so that training windows fill in order, at most
   `ML_ASSETS_SENSOR_MAX_MONTHS` (default 3) per tick; the rest follow on the next ticks.
2. trip_features, best_params and trained_model carry `EAGER_ALL_MONTHS`, and
   `training_automation_sensor` (an automation condition sensor for these three assets, RUNNING by
   default) requests a month's features and model once every month of its training window is in.
   It is declared here rather than left to Dagster's `default_automation_condition_sensor` because
   in 1.13 that one is created STOPPED: on a fresh instance nothing would train until someone
   turned it on in the UI. Assets that others give an automation condition later fall to that
   default sensor (add them to this sensor's target to have them run by default too; one asset
   must not be targeted by two automation sensors).

Why the sensor ingests only, and automation trains
---------------------------------------------------
trip_features for M reads cleaned_trips for up to TRAINING_MONTHS months before M plus M itself.
A sensor run over the whole graph for M (`define_asset_job` with every asset) would fail
trip_features for M whenever M-1 is still queued in the same tick (several new months at once,
a re-published month, a fresh instance catching up) and the model would only appear after a
manual re-run. Ordering runs in the sensor would mean re-implementing a scheduler. So the sensor's
runs touch one month only (they can never fail because of another month), and the window
dependency is left to declarative automation, which sees partition mappings:
`~any_deps_missing()` is evaluated over *all* upstream partitions that `training_window` maps M to
(months before the first partition are dropped by the mapping), so features for M wait until
each of those months has cleaned_trips; `~any_deps_in_progress()` also waits while one of them is
being (re)ingested. Re-ingesting a re-published month updates cleaned_trips for it, so features
and models of every month whose window contains it are rebuilt, once each.

`AutomationCondition.eager()` as such would not do: in Dagster 1.13 it starts with
`in_latest_time_window()`, so it only ever materializes the *latest* monthly partition and would
leave every earlier month (all of them, when catching up) untrained. `EAGER_ALL_MONTHS` is eager()
without that operand (everything else identical; builtin conditions only, so the daemon can
evaluate it and the UI shows each sub-condition).

Known edge: the first partition (START_MONTH) has no earlier month to train on, and no builtin
condition can tell it apart, so when its cleaned_trips arrives automation requests trip_features
for it once (with its best_params and trained_model in the same run, which are then skipped),
and that run fails with `MissingTrainingMonthsError`; it is not retried, the request counts as
handled. Excluding that partition would take a custom Python AutomationCondition, which Dagster
only evaluates in a sensor with `use_user_code_server=True` (beta), not worth one failed run.

Duplicates and failures
-----------------------
The fingerprint hash leaves out where the file is (`path`, `url`): moving a mirror or changing the
TLC host re-ingests nothing. Every request has `run_key = f"{month}:{fingerprint hash}"`, and
Dagster never launches two runs with the same run key for one sensor; the cursor (JSON,
`{"months": {month: fingerprint hash}}`) also remembers what was requested, so a month whose run
is queued, running or failed is not asked for again until its fingerprint changes. A failed ingestion is therefore not retried by the sensor
(re-execute it, or enable run retries on the instance). Decisions compare the source with the
instance's materializations and the cursor on every tick, never events, so a file that landed
while Dagster was down (or the sensor off) is found on the next tick.

When the cursor has no entry for a materialized month (sensor turned on for the first time, or its
cursor reset) the month is requested again only if the source's size differs from the `size_bytes`
that raw_trips recorded; otherwise its current fingerprint is adopted as the baseline.

If the source is unreachable (`SourceUnavailableError`) the tick is skipped with the reason,
the cursor is left as it was, and nothing is requested.

Settings: `ML_ASSETS_SENSOR_MAX_MONTHS` (months requested per tick, default 3, read every tick),
`ML_ASSETS_SENSOR_INTERVAL_SECONDS` (minimum seconds between ticks, default 300, read at load:
probing TLC is one HEAD request per month since START_MONTH).
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
    AssetRecordsFilter,
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
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=RAW_TRIPS, asset_partitions=[month]), limit=1
        ).records
        if not records or records[0].asset_materialization is None:
            return None
        value = records[0].asset_materialization.metadata.get("size_bytes")
        return getattr(value, "value", value)

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
