"""What the instance recorded: an asset's newest materialization, a run's own, which partitions runs and backfills
are about to materialize, and whether a run's process lives."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from dagster import (
    AssetKey,
    AssetPartitionStatus,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    JobDefinition,
    PartitionsDefinition,
    RunRecord,
    RunsFilter,
)

# Private in Dagster 1.13 (checked against 1.13.27): the filter `DagsterInstance.get_backfills` takes, and what it
# returns.
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus, PartitionBackfill


def latest_materialization(
    instance: DagsterInstance, asset: str | AssetKey, month: str | None = None
) -> tuple[str, dict] | None:
    """(run id, metadata as plain values) of the newest materialization of `asset` (for `month`, if given)."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey.from_coercible(asset), asset_partitions=[month] if month else None),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    return records[0].run_id, _plain(records[0].asset_materialization.metadata)


def latest_metadata(instance: DagsterInstance, asset: str | AssetKey, month: str | None = None) -> dict | None:
    """Metadata (plain values) of the newest materialization of `asset` for `month`; None if there is none."""
    latest = latest_materialization(instance, asset, month)
    return None if latest is None else latest[1]


def run_or_latest_metadata(instance: DagsterInstance, run_id: str, asset: str | AssetKey, month: str) -> dict:
    """`run_metadata`, or the newest materialization's when run `run_id` made none (a check re-executed on its
    own); {} when there is none at all."""
    return run_metadata(instance, run_id, asset, month) or latest_metadata(instance, asset, month) or {}


def run_metadata(instance: DagsterInstance, run_id: str, asset: str | AssetKey, month: str) -> dict | None:
    """Metadata (plain values) of `asset`'s materialization for `month` in run `run_id`; None if it made none.

    What a later step of that run must use: another run of the month may have recorded a newer one meanwhile.
    """
    key = AssetKey.from_coercible(asset)
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    for record in reversed(records):
        materialization = record.event_log_entry.asset_materialization
        if materialization and materialization.asset_key == key and materialization.partition == month:
            return _plain(materialization.metadata)
    return None


def partitions_in_progress(
    instance: DagsterInstance,
    asset: AssetKey,
    partitions_def: PartitionsDefinition,
    keys: list[str],
    jobs: Iterable[JobDefinition],
) -> set[str]:
    """Which of `keys` of `asset` a run not yet finished (queued or running), or a backfill still in progress, is
    to materialize: Dagster's own `AutomationCondition.in_progress()`, for a sensor, and what that condition does
    not look at: backfills of `jobs` (the code location's), and the months of a range `make backfill` has yet to
    reach (RANGE_TAG).

    An asset backfill's partitions count until it materialized them or they failed, a job backfill's until
    the daemon launched their runs (then the runs count), so both before their runs exist. (A backfill an older
    Dagster created keeps its data serialized, readable only with the asset graph: it is not looked at.)
    """
    status = instance.get_status_by_partition(asset, keys, partitions_def) or {}
    pending = {key for key, state in status.items() if state == AssetPartitionStatus.IN_PROGRESS}
    for run in instance.get_runs(RunsFilter(statuses=UNFINISHED)):
        month, last = run.tags.get("dagster/partition"), run.tags.get(RANGE_TAG, "").partition("..")[2]
        pending |= {key for key in keys if month and month < key <= last}
    materializing = {job.name for job in jobs if asset in job.asset_layer.selected_asset_keys}
    for backfill in instance.get_backfills(filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])):
        data = backfill.asset_backfill_data
        if data is not None:
            left = data.target_subset - data.materialized_subset - data.failed_and_downstream_subset
            subset = left.partitions_subsets_by_asset_key.get(asset)
            pending |= set() if subset is None else set(subset.get_partition_keys()) & set(keys)
        elif backfill.job_name in materializing and asset in (backfill.asset_selection or [asset]):
            pending |= set(_not_launched(backfill)) & set(keys)
    return pending


def _not_launched(backfill: PartitionBackfill) -> list[str]:
    """The partitions a job backfill has not launched runs for yet: those after its checkpoint, as Dagster's
    backfill daemon takes them (`get_num_cancelable` counts them)."""
    names, checkpoint = list(backfill.partition_names or []), backfill.last_submitted_partition_name
    return names[names.index(checkpoint) + 1 :] if checkpoint in names else names


def _plain(metadata: Mapping) -> dict:
    """Metadata as plain values (a MetadataValue's `value`)."""
    return {name: getattr(value, "value", value) for name, value in metadata.items()}


PROCESS_TAG = "ml_assets/pid"  # the process that runs a run started in a process of this machine (`make run`)
# `FIRST..LAST` on every run of one `make backfill`, which runs its range month by month: while one of them is
# unfinished, the months after its own up to LAST are still to come. (Between two months, for the moment the
# runner takes to create the next run, none is unfinished.)
RANGE_TAG = "ml_assets/range"
UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]  # a runner's run


def _started_at(pid: int) -> float | None:
    """When process `pid` started, in seconds since the epoch (to within a second), from Linux's /proc; None
    elsewhere or when there is no such process."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")


def run_process(instance: DagsterInstance, record: RunRecord) -> tuple[int | None, float]:
    """The process a run ran in, and when it last showed: the pid of its newest Dagster event that names
    one, or its PROCESS_TAG and creation time while none does (None: nothing names it)."""
    run_id = record.dagster_run.run_id
    # The planned events that creating a run logs name no process (nor does a user's log line), and a
    # runner that died right after them leaves nothing newer.
    newest = instance.get_records_for_run(run_id, of_type=set(DagsterEventType), limit=50, ascending=False).records
    named = next((r.event_log_entry for r in newest if r.event_log_entry.dagster_event.pid is not None), None)
    if named is not None:
        return named.dagster_event.pid, named.timestamp
    pid = record.dagster_run.tags.get(PROCESS_TAG)
    return (None if pid is None else int(pid)), record.create_timestamp.timestamp()


def run_process_alive(instance: DagsterInstance, run_id: str) -> bool:
    """Whether a run that is not finished still has a live process (`run_process`).

    A process killed with SIGKILL leaves its run STARTED, or NOT_STARTED when it died (a full disk) before
    the run's first event; this tells such a run from a running one when both ran on this machine. A live
    process that started after that event (or after the run was created) only got the pid since: pids
    come round again within minutes where they wrap at 32768 and tests start processes by the thousand.
    """
    record = instance.get_run_record_by_id(run_id)
    if record is None or record.dagster_run.is_finished:
        return False
    pid, seen = run_process(instance, record)
    if pid is None:
        return True  # nothing to judge by: assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    started = _started_at(pid)  # None without /proc: the pid alone decides
    return started is None or started <= seen + 1  # to within the second that `_started_at` allows


def run_is_alive(instance: DagsterInstance, run_id: str) -> bool:
    """Whether a run may still be writing: not finished (a run whose worker died is failed by run monitoring,
    or a runner's by the next runner, `fail_dead_runs`). Judged by the instance, which every machine of a
    deployment shares; a process is never looked for here, where another worker's run has none. True for a
    run this instance does not know: another instance's, on a shared MLflow server.
    """
    run = instance.get_run_by_id(run_id)
    return run is None or not run.is_finished


def check_evaluations(instance: DagsterInstance, run_id: str, check_name: str) -> list[dict]:
    """Metadata (plain values) of every evaluation of the check `check_name` that run `run_id` recorded."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    evaluations = [record.event_log_entry.dagster_event.event_specific_data for record in records]
    return [_plain(evaluation.metadata) for evaluation in evaluations if evaluation.check_name == check_name]
