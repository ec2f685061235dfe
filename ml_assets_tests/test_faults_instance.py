"""Faults of the instance under $DAGSTER_HOME that `make run` meets: runners started together on a
fresh home, a full disk. Each is made real: runner processes started at once, a small tmpfs filled up.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus

from ml_assets.deploy.local.proc import command_line
from ml_assets_tests import forked
from ml_assets_tests.support import GREEN_MODEL, ROOT, assert_champion_was_recorded, stored_values, use_new_home

MONTH = "2021-02"


def start_runners(count: int, *argv: str) -> list[forked.Forked]:
    """`count` runners (`make run`) started together in this environment."""
    return [forked.Forked(["-m", "ml_assets.runner", *argv]) for _ in range(count)]


def small_runs(monkeypatch) -> None:
    """Small synthetic months and a short study: the runner takes no run config."""
    for name, value in {
        "ML_ASSETS_SYNTHETIC_ROWS": "5000",
        "ML_ASSETS_TUNING_TRIALS": "3",
        "ML_ASSETS_TUNING_TIMEOUT_SECONDS": "20",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.process
def test_runners_started_together_on_a_fresh_home_all_get_the_instance(tmp_path, monkeypatch):
    """Where one of them died creating the instance's sqlite tables (`table secondary_indexes already
    exists`, or alembic's `more than one head`): each of four runners on each of three fresh homes gets
    as far as the month's data, which is not there (an empty source folder)."""
    (tmp_path / "source").mkdir()
    for home in ("a", "b", "c"):
        use_new_home(tmp_path / home, monkeypatch)
        monkeypatch.setenv("ML_ASSETS_SOURCE", str(tmp_path / "source"))
        for runner in start_runners(4, MONTH):
            _, err = runner.communicate(timeout=300)
            assert runner.returncode == 1, err[-3000:]
            assert "FAILED ingest_trips 2021-01: MonthNotPublishedError" in err, err[-3000:]


@pytest.mark.process
def test_two_runners_on_a_fresh_home_both_succeed(tmp_path, monkeypatch):
    home = use_new_home(tmp_path / "dagster_home", monkeypatch)
    small_runs(monkeypatch)
    both = start_runners(2, MONTH)
    outputs = [runner.communicate(timeout=600) for runner in both]
    assert [runner.returncode for runner in both] == [0, 0], "\n".join(err[-3000:] for _, err in outputs)
    with DagsterInstance.get() as instance:
        assert {run.status for run in instance.get_runs()} == {DagsterRunStatus.SUCCESS}
        assert len(instance.fetch_materializations(AssetKey("trained_model"), limit=10).records) == 2
        assert_champion_was_recorded(instance, home)
    # Each prints its own model: the MLflow run its version was registered from (it had printed the other's).
    client = mlflow.MlflowClient(f"sqlite:///{home / 'ml_assets' / 'mlflow.db'}")
    for out, _ in outputs:
        run_id = re.search(r"MLflow run .*/runs/(\w+)", out)[1]
        version = re.search(r"MLflow model .*\(v(\d+), ", out)[1]
        assert client.get_model_version(GREEN_MODEL, version).run_id == run_id, out[-2000:]


@pytest.mark.timeout(240)
def test_a_step_dagster_s_race_queues_beside_a_free_slot_gets_the_slot(instance, monkeypatch):
    """Dagster's claim reads whether the pool has a free slot, then queues the step: when another run's step frees the
    slot in between, the step is queued unassigned beside a free slot and nothing assigns it. Two runners racing for
    `champion` hung so until killed (600 s, in a `make test` on a busy machine). Made certain here: every claim reads
    that no slot is free; the step still runs, once the watch has seen it stranded twice."""
    from ml_assets.keys import CHAMPION_POOL, MODEL_PERFORMANCE
    from ml_assets.runner.runs import INGESTION, materialize_month

    monkeypatch.setenv("ML_ASSETS_SYNTHETIC_ROWS", "5000")
    assert materialize_month(instance, "2021-01", INGESTION).success
    storage = type(instance.event_log_storage)
    monkeypatch.setattr(storage, "has_unassigned_slots", lambda self, pool: False)
    assert materialize_month(instance, "2021-01", [MODEL_PERFORMANCE]).success
    info = instance.event_log_storage.get_concurrency_info(CHAMPION_POOL)
    assert (info.slot_count, info.claimed_slots, info.pending_steps) == (1, [], [])  # the slot was the pool's one


def test_a_step_stranded_beside_a_free_slot_is_given_it_by_the_sensor_on_its_second_tick(instance):
    """Where a daemon launches the runs (their steps claim on run workers): the same race, as Dagster's storage leaves
    it. The sensor gives the slot on the second tick that sees the step stranded, not on the first."""
    from dagster import SkipReason, build_sensor_context

    from ml_assets.automation.pool_watch import pool_watch_sensor
    from ml_assets.keys import CHAMPION_POOL

    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(CHAMPION_POOL)
    step = ("a-run", "trained_model_model_gate")
    storage.add_pending_step(CHAMPION_POOL, *step, should_assign=False)  # where the race leaves it

    def tick(cursor):
        context = build_sensor_context(instance=instance, cursor=cursor)
        return pool_watch_sensor(context), context.cursor

    first, cursor = tick(None)
    assert "looked at again" in first.skip_message
    assert storage.check_concurrency_claim(CHAMPION_POOL, *step).assigned_timestamp is None
    second, cursor = tick(cursor)
    assert isinstance(second, SkipReason) and "assigned the free slot" in second.skip_message
    assert storage.claim_concurrency_slot(CHAMPION_POOL, *step).is_claimed
    third, _ = tick(cursor)  # held: nothing stranded
    assert third.skip_message == f"no step stranded in pool {CHAMPION_POOL}"


def test_runs_whose_runner_died_before_their_first_event_are_failed_by_the_next_runner(instance):
    """A runner that dies between creating its run and the run's first event (the full disk below) leaves it
    NOT_STARTED, with nothing but the run's process tag to tell it from a runner that is just starting. Its
    pid may be another process's by then (`reused`: one started after the run was created). Creating a run
    logs Dagster's planned events, which name no process (`planned`): the tag still decides."""
    import time

    from dagster import DagsterRun, Definitions, asset, define_asset_job

    from ml_assets.records import PROCESS_TAG
    from ml_assets.runner.runs import JOB, fail_dead_runs

    @asset
    def planned_asset():
        return 1

    job = Definitions(assets=[planned_asset], jobs=[define_asset_job(JOB)]).resolve_job_def(JOB)

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    runs = {
        "dead": {PROCESS_TAG: dead.stdout.strip()},
        "alive": {PROCESS_TAG: str(os.getpid())},
        "untagged": {},  # from before the tag: nothing to judge by, so left as it is
        "reused": {},
    }
    for name, tags in runs.items():
        instance.add_run(DagsterRun(job_name=JOB, run_id=name, status=DagsterRunStatus.NOT_STARTED, tags=tags))
    planned = instance.create_run_for_job(job, tags={PROCESS_TAG: dead.stdout.strip()}).run_id
    assert instance.get_records_for_run(planned, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
    time.sleep(2.5)  # more than the second of rounding that process start times have
    later = subprocess.Popen(["sleep", "60"])
    try:
        instance.add_run_tags("reused", {PROCESS_TAG: str(later.pid)})
        fail_dead_runs(instance)
    finally:
        later.kill()
        later.wait()
    assert {name: instance.get_run_by_id(name).status for name in runs} == {
        "dead": DagsterRunStatus.FAILURE,
        "alive": DagsterRunStatus.NOT_STARTED,
        "untagged": DagsterRunStatus.NOT_STARTED,
        "reused": DagsterRunStatus.FAILURE,
    }
    assert instance.get_run_by_id(planned).status == DagsterRunStatus.FAILURE


@pytest.mark.process
def test_a_recorded_month_whose_stored_value_is_gone_is_materialized_again(dagster_home, monkeypatch):
    """cleaned_trips 2021-01 is recorded as materialized but its file was deleted: every plain retry of
    make run failed in trip_features with NotMaterializedError ("materialize cleaned_trips for 2021-01
    first"), the runner planning from the instance's records only. It names the month and the missing
    file, ingests the month again and trains."""
    small_runs(monkeypatch)
    from ml_assets.runner.runs import INGESTION, materialize_month

    with DagsterInstance.get() as instance:
        materialize_month(instance, "2021-01", INGESTION)
    stored = dagster_home / "ml_assets" / "assets" / "cleaned_trips" / "2021-01.parquet"
    stored.unlink()

    retry = forked.run(["-m", "ml_assets.runner", MONTH])
    assert retry.returncode == 0, retry.stdout[-2000:] + retry.stderr[-3000:]
    assert (
        f"cleaned_trips 2021-01 is recorded as materialized, but its stored value is missing (no file at {stored}): "
        "materializing it again"
    ) in retry.stdout, retry.stdout
    assert stored.exists()
    assert f"trained_model {MONTH}" in retry.stdout


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A real 64 MiB filesystem (tmpfs; mounting needs root), unmounted at the end."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "--lazy", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Take every free block of `disk` with one file (others write meanwhile: grow it until nothing fits)."""
    ballast = disk / "ballast"
    with ballast.open("wb") as handle:
        size, step = 0, shutil.disk_usage(disk).free
        while step >= 4096:
            try:
                os.posix_fallocate(handle.fileno(), size, step)
                size += step
            except OSError:
                step //= 2
    return ballast


def runner_filling_the_disk(disk: Path, month: str, after_step: str) -> subprocess.CompletedProcess:
    """`make run` for `month`, the disk filled as soon as `after_step` is done (the next step is running)."""
    command = [sys.executable, "-m", "ml_assets.runner", month]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runner = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed = []
    for line in runner.stdout:
        printed.append(line)
        if line.split()[:1] == [after_step]:
            fill(disk)
            break
    out, err = runner.communicate(timeout=600)
    return subprocess.CompletedProcess(command, runner.returncode, "".join(printed) + out, err)


# What is free when the message is written: some bytes or KiB ("0 B", "12.5 KiB"), or more once the failed
# step's own files are gone.
NO_SPACE = re.compile(
    r"Out of disk space\? DAGSTER_HOME \((.+)\) has [\d.]+ (B|KiB|MiB) free of 64\.0 MiB on its filesystem"
)


def judged_by(instance, run_id: str) -> dict:
    """What `run_process_alive` judges a run by: its process and when it last showed, and that pid's live
    command line, if one has it now."""
    from ml_assets.records import run_process

    pid, seen = run_process(instance, instance.get_run_record_by_id(run_id))
    try:
        command = command_line(pid)[:200] if pid else None
    except OSError:  # no such process (any more)
        command = None
    return {"pid": pid, "seen": seen, "live process": command}


@pytest.mark.process
def test_a_full_disk_is_named_with_its_free_space_and_a_retry_cleans_up(small_disk, monkeypatch):
    """DAGSTER_HOME on a 64 MiB tmpfs, filled up while trained_model runs: where make run printed a raw
    `sqlite3 disk I/O error` traceback (and could not even open the instance until space returned), it
    names the folder and its free space; the month before is intact, and once there is room again a
    plain retry trains the month and marks what the killed attempt left RUNNING failed."""
    home = use_new_home(small_disk / "home", monkeypatch)
    small_runs(monkeypatch)
    first = forked.run(["-m", "ml_assets.runner", MONTH])
    assert first.returncode == 0, first.stderr[-3000:]
    before = stored_values(home / "ml_assets" / "assets")

    full = runner_filling_the_disk(small_disk, "2021-03", after_step="best_params")
    assert full.returncode == 1, full.stdout + full.stderr[-3000:]
    assert "Traceback" not in full.stderr, full.stderr[-3000:]
    named = NO_SPACE.search(full.stderr)
    assert named and named[1] == str(home), full.stderr
    # Full, the instance cannot be opened: said the same way.
    again = forked.run(["-m", "ml_assets.runner", "2021-03"])
    assert again.returncode == 1 and NO_SPACE.search(again.stderr) and "Traceback" not in again.stderr, again.stderr

    (small_disk / "ballast").unlink()
    with DagsterInstance.get() as instance:
        unfinished = [run.run_id for run in instance.get_runs() if not run.is_finished]
    assert unfinished, "the attempt on a full disk could record its own end"
    assert stored_values(home / "ml_assets" / "assets").items() >= before.items(), "a value of 2021-02 was lost"
    retry = forked.run(["-m", "ml_assets.runner", "2021-03"])
    assert retry.returncode == 0, retry.stderr[-3000:]
    with DagsterInstance.get() as instance:
        statuses = {run_id: instance.get_run_by_id(run_id).status for run_id in unfinished}
        assert set(statuses.values()) == {DagsterRunStatus.FAILURE}, {
            run_id: (status, judged_by(instance, run_id)) for run_id, status in statuses.items()
        }
        assert_champion_was_recorded(instance, home)
    import mlflow

    running = mlflow.MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("trip_duration").experiment_id], "attributes.status = 'RUNNING'"
    )
    assert running == [], "an MLflow run of the attempt on a full disk is still RUNNING"
