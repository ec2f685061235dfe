"""Runs of the whole graph for a month, or a range of months one by one, in this process and instance.

Each month is one Dagster run in the instance under $DAGSTER_HOME (they show in the UI), so a range
gives exactly what materializing its months one by one gives. Months the first one trains on are
ingested first when the instance lacks them, or records them but their stored value is gone, so a
fresh `DAGSTER_HOME` works in one command and a retry recovers a deleted month.
"""

from __future__ import annotations

import os

import dagster
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    JobDefinition,
    LoggerDefinition,
    RunsFilter,
    build_input_context,
    define_asset_job,
)
from upath import UPath

from ml_assets import settings
from ml_assets.checks.model_gate import MODEL_GATE
from ml_assets.core.locks import file_lock
from ml_assets.core.months import month_range, shift_month
from ml_assets.definitions import all_asset_checks, all_assets
from ml_assets.keys import CHAMPION_POOL, CLEANED_TRIPS, RAW_TRIPS, TRAINED_MODEL
from ml_assets.partitions import monthly_partitions, window_months
from ml_assets.pools import PoolWatch
from ml_assets.records import PROCESS_TAG, RANGE_TAG, UNFINISHED, run_or_latest_metadata, run_process_alive
from ml_assets.resources import build_resources
from ml_assets.runner.console import first_line

INGESTION = [RAW_TRIPS, CLEANED_TRIPS]
JOB = "ml_assets_runner"


class RunFailed(RuntimeError):
    """A step of a month's run failed; the message names the step, the month and the error."""


def open_instance() -> DagsterInstance:
    """The instance under $DAGSTER_HOME, its storage created by one process at a time: two runners
    starting on a fresh home would both create its sqlite tables, and one of them fail."""
    with file_lock(settings.state_dir() / "instance.lock"):
        return DagsterInstance.get()


def materialize_month(
    instance: DagsterInstance,
    month: str,
    selection: list[AssetKey | str] | None = None,
    run_config: dict | None = None,
    raise_on_error: bool = True,
    loggers: dict[str, LoggerDefinition] | None = None,
    tags: dict[str, str] | None = None,
) -> ExecuteInProcessResult:
    """One run for `month` of `selection` (asset keys or names; default all) with their checks, as in the UI.

    `run_config["ops"]` may configure ops outside the selection (one config for every run); those
    are left out. Resources are built from the environment at call time, not at import. `loggers`
    replace Dagster's console logger (a run starts only the loggers its run config names). `tags` go on the run.
    """
    config = {**(run_config or {}), "loggers": {name: {} for name in loggers or {}}}
    if selection is not None:
        selection = [AssetKey.from_coercible(asset) for asset in selection]
    if selection is not None and "ops" in config:
        unselected = {assets.node_def.name for assets in all_assets if not set(assets.keys) & set(selection)}
        config["ops"] = {op: value for op, value in config["ops"].items() if op not in unselected}
    fail_dead_runs(instance)
    defs = Definitions(
        assets=[*all_assets, *all_asset_checks],
        resources=build_resources(),
        loggers=loggers,
        jobs=[define_asset_job(JOB, selection=selection)],
    )
    return execute_in_process(defs.resolve_job_def(JOB), config, instance, month, raise_on_error, tags)


def execute_in_process(
    job: JobDefinition,
    run_config: dict,
    instance: DagsterInstance,
    month: str,
    raise_on_error: bool,
    tags: dict[str, str] | None = None,
) -> ExecuteInProcessResult:
    """`job.execute_in_process` without its output capture, which keeps every step's value in memory until the
    run ends, for `result.output_value()`, which nothing here reads: a 10 M-trip feature frame would stay
    resident through training and the gate (docs/large-months.md).

    On Dagster's private execution API, as `JobDefinition.execute_in_process` calls it (checked against
    dagster 1.13.27); a test compares the two. A step that Dagster's race strands in a pool is assigned (`pools`).
    """
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.execute_in_process import core_execute_in_process, merge_run_tags

    with PoolWatch(instance, CHAMPION_POOL):
        return core_execute_in_process(
            run_config=run_config,
            job=InMemoryJob(job_def=job.as_ephemeral_job(resource_defs={}, input_values={})),
            instance=instance,
            output_capturing_enabled=False,
            raise_on_error=raise_on_error,
            run_tags=merge_run_tags(
                job_def=job,
                partition_key=month,
                tags={**(tags or {}), PROCESS_TAG: str(os.getpid())},
                asset_selection=[],
                instance=instance,
                run_config=run_config,
            ),
            asset_selection=frozenset(),
        )


def fail_dead_runs(instance: DagsterInstance) -> None:
    """Runs of this runner killed earlier (kill -9, a closed terminal, a full disk) stay unfinished: mark them failed,
    and give back the concurrency pool slots they held (model_gate's), which nothing else frees without a daemon.

    Only this runner's own runs, which ran on this machine; runs launched by a daemon are left to
    Dagster's run monitoring (`free_slots_after_run_end_seconds` in deploy/dagster.yaml).
    """
    for run in instance.get_runs(RunsFilter(job_name=JOB, statuses=UNFINISHED)):
        if not run_process_alive(instance, run.run_id):
            instance.report_run_failed(run)
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


def _materialize_or_fail(
    instance: DagsterInstance,
    month: str,
    selection: list[AssetKey] | None,
    run_config: dict | None,
    loggers: dict[str, LoggerDefinition] | None,
    tags: dict[str, str],
) -> ExecuteInProcessResult:
    result = materialize_month(instance, month, selection, run_config, raise_on_error=False, loggers=loggers, tags=tags)
    failures = [
        f"{event.step_key} {month}: {first_line(event.step_failure_data.error)}"
        for event in result.all_events
        if event.is_step_failure
    ]
    if failures or not result.success:
        raise RunFailed("\n".join(failures) or f"the run for {month} failed ({result.run_id})")
    return result


def missing_values(instance: DagsterInstance, asset: AssetKey, months: list[str]) -> dict[str, UPath]:
    """Each of `months` whose value of `asset` its IO manager finds nothing at, and where it looked: the
    instance still records a month whose file was deleted, and training would then fail loading it."""
    (assets,) = [assets for assets in all_assets if asset in assets.keys]
    key = assets.get_io_manager_key_for_asset_key(asset)
    missing = {}
    # Built as a run builds it (its EnvVar config resolved), on the runner's instance rather than a new ephemeral one.
    with dagster.build_resources({key: build_resources()[key]}, instance=instance) as resources:
        io_manager = getattr(resources, key)
        for month in months:
            context = build_input_context(asset_key=asset, partition_key=month, asset_partitions_def=monthly_partitions)
            path = io_manager.month_path(context)
            if not io_manager.path_exists(path):
                missing[month] = path
    return missing


def run(
    first: str,
    last: str,
    instance: DagsterInstance,
    run_config: dict | None = None,
    loggers: dict[str, LoggerDefinition] | None = None,
) -> dict[str, dict]:
    """Materialize every asset for each month from `first` to `last`; per month, trained_model's
    metadata and what `model_gate` published (model name, version, alias, registry link). A training
    month recorded as materialized whose stored value is missing is printed, then materialized again.
    A range from the first partition ingests that month only, as automation does: no earlier month to
    train on (a run of that month alone fails saying so). Every run of a range carries RANGE_TAG, so that the
    months it has yet to reach show as in progress, and a sensor leaves them to it."""
    tags = {RANGE_TAG: f"{first}..{last}"} if last > first else {}
    if first == monthly_partitions.get_first_partition_key() and last > first:
        print(f"{first} is the first partition, with no earlier month to train on: ingested only", flush=True)
        _materialize_or_fail(instance, first, INGESTION, run_config, loggers, tags)
        first = shift_month(first, 1)
    earlier_months = set(window_months(first)) - {first}
    recorded = earlier_months & instance.get_materialized_partitions(CLEANED_TRIPS)
    missing = missing_values(instance, CLEANED_TRIPS, sorted(recorded))
    for month, path in missing.items():
        print(
            f"{CLEANED_TRIPS.to_user_string()} {month} is recorded as materialized, but its stored value is missing "
            f"(no file at {path}): materializing it again",
            flush=True,
        )
    for earlier in sorted((earlier_months - recorded) | set(missing)):
        _materialize_or_fail(instance, earlier, INGESTION, run_config, loggers, tags)
    models = {}
    for month in month_range(first, last):
        result = _materialize_or_fail(instance, month, None, run_config, loggers, tags)
        (gate,) = [check for check in result.get_asset_check_evaluations() if check.check_name == MODEL_GATE]
        published = {key: value.value for key, value in gate.metadata.items()}
        models[month] = {**run_or_latest_metadata(instance, result.run_id, TRAINED_MODEL, month), **published}
    return models
