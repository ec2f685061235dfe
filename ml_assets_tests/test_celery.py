"""Steps on Celery workers: the production topology with Redis and two `dagster-celery` workers.

The topology of test_deployment.py (ml_assets/deploy/local/: PostgreSQL, the MLflow server,
the code server, webserver and daemon) plus a real `redis-server` and two workers started as
compose starts them (`deploy/service.sh worker`: `celery worker` as `dagster-celery worker start`
runs it): `general` takes both queues, `trainer` only `train`, as a machine given to training would. The code
server's runs use the Celery executor (ML_ASSETS_EXECUTOR=celery): their steps execute in the
workers. Sensors are stopped first, so runs come only from the backfills and the tests.

- A backfill of three months (ingestion, then training of the two that have an earlier month)
  executes every step on a worker of its step's queue, and stores the same data, tunes the same
  parameters and registers the same models with the same metrics as the in-process executor
  (`python -m ml_assets.runner`, i.e. `make backfill`) on the same files.
- A worker killed (kill -9 of its process group) in the middle of a step: the step stays
  unacknowledged in Redis (acks_late, deploy/celery.yaml), goes back to its queue and the other
  worker executes it; the run succeeds and nothing is left half-done.

Months are real TLC files, every SAMPLE_EVERY-th trip, so that every step takes seconds. Run alone
with `pytest -m deployment`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import defaultdict

import pytest

from ml_assets.deploy.local.environment import clean_environ
from ml_assets.deploy.local.topology import Topology
from ml_assets.deploy.local.ui_actions import TRAINING_TAG, backfill, finished_runs, launch, stop_sensors
from ml_assets_tests.deployment_support import TEST_INSTANCE, registered_versions, require_servers
from ml_assets_tests.support import ROOT, ROUNDS, drop_month, stop_process_group, stored_values

pytestmark = pytest.mark.deployment

MONTHS = ["2023-01", "2023-02", "2023-03"]  # the last trains on the month before, tuning warm-started
SAMPLE_EVERY = 40
WORKERS = {"general": "ingest,train", "trainer": "train"}
# The same settings and run config for both executors; a tuning time budget that never cuts a
# study short, so that both run exactly the same trials. Two training steps at once here (the
# in-process backfill runs beside the workers): XGBoost gets one core each.
CODE_ENV = {
    "ML_ASSETS_START_MONTH": MONTHS[0],
    "ML_ASSETS_TRAINING_MONTHS": "1",
    "ML_ASSETS_TUNING_TRIALS": "2",
    "ML_ASSETS_TUNING_TIMEOUT_SECONDS": "3600",
    "ML_ASSETS_PARALLEL_TRAINING_STEPS": "2",
}
RUN_CONFIG = {"ops": {name: {"config": ROUNDS} for name in ("best_params", "trained_model")}}
# A step of a killed worker goes back to its queue after this many seconds unacknowledged
# (production: two hours); every step here takes far less, so none is ever handed out twice.
VISIBILITY_TIMEOUT = 30
CELERY_OVERRIDES = {
    "execution": {
        "config": {
            "config_source": {
                "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT, "unacked_restore_interval": 1}
            }
        }
    }
}
CELERY_WORKER_KEY = "Celery worker"  # what dagster-celery's task records in its engine event


# --------------------------------------------------------------------------------------------
# The topology with Redis and two workers
# --------------------------------------------------------------------------------------------


RUNNER = (
    "import json, sys; from dagster import DagsterInstance; from ml_assets.runner.runs import run; "
    "run(sys.argv[1], sys.argv[2], DagsterInstance.get(), run_config=json.loads(sys.argv[3]))"
)


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """`ml_assets.runner`'s backfill of the months after the first (`make backfill`: the in-process executor,
    sqlite) on the same months, with RUN_CONFIG, started at once so that it runs while the topology starts."""
    require_servers(celery=True)
    work = tmp_path_factory.mktemp("in_process")
    incoming, home = work / "incoming", work / "dagster_home"
    incoming.mkdir()
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    for month in MONTHS:
        drop_month(incoming, month, SAMPLE_EVERY)
    env = {**clean_environ(), **CODE_ENV, "ML_ASSETS_SOURCE": str(incoming), "DAGSTER_HOME": str(home)}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    log = work / "runner.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", RUNNER, MONTHS[1], MONTHS[-1], json.dumps(RUN_CONFIG)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, home, log
    finally:
        if process.poll() is None:
            stop_process_group(process)


@pytest.fixture(scope="module")
def celery_topology(tmp_path_factory):
    require_servers(celery=True)
    work = tmp_path_factory.mktemp("celery")
    incoming = work / "incoming"
    incoming.mkdir()
    with Topology(
        work / "topology",
        env={**CODE_ENV, "ML_ASSETS_SOURCE": str(incoming)},
        overrides=TEST_INSTANCE,
        workers=WORKERS,
        celery_overrides=CELERY_OVERRIDES,
    ) as topology:
        topology.wait_until_ready()
        stop_sensors(topology)  # before any month is there, so that no tick can have requested one
        for month in MONTHS:
            drop_month(incoming, month, SAMPLE_EVERY)
        yield topology


@pytest.fixture(scope="module")
def backfilled(celery_topology):
    """Ingestion of the three months, then training of the two after the first (one training run
    at a time, in month order: deploy/dagster.yaml's tag limit); the topology and both backfills' runs."""
    with celery_topology.instance() as instance:
        ingest = backfill(celery_topology, "ingest_month", MONTHS)
        ingested = finished_runs(celery_topology, instance, ingest, len(MONTHS), 300)
        train = backfill(celery_topology, "retrain_month", MONTHS[1:], dict([TRAINING_TAG]), RUN_CONFIG)
        trained = finished_runs(celery_topology, instance, train, len(MONTHS) - 1, 300)
    return celery_topology, ingested, trained


def step_workers(instance, run_id: str) -> dict[str, list[str]]:
    """Step key -> the Celery workers (NAME@host) that started executing it, in order, as the run's
    engine events name them."""
    from dagster import DagsterEventType

    workers = defaultdict(list)
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        metadata = entry.dagster_event.engine_event_data.metadata
        if CELERY_WORKER_KEY in metadata:
            workers[entry.step_key].append(metadata[CELERY_WORKER_KEY].value)
    return workers


def step_events(instance, run_id: str, event_type) -> list:
    return instance.all_logs(run_id, of_type=event_type)


def worker_names(workers: list[str]) -> set[str]:
    return {worker.split("@")[0] for worker in workers}


def registered_models(tracking_uri: str) -> dict[str, dict]:
    """Version -> month, aliases, and the params and metrics of the MLflow run it was registered from: what
    training logged, not the realized RMSE that model_performance (in neither job) adds on later months."""
    from mlflow import MlflowClient

    from ml_assets.core.tracking import REALIZED_RMSE

    client = MlflowClient(tracking_uri)
    models = {}
    for version, record in registered_versions(tracking_uri).items():
        run = client.get_run(record["run_id"])
        models[version] = {
            "month": run.data.tags["partition"],
            "aliases": record["aliases"],
            "params": run.data.params,
            "metrics": {name: value for name, value in run.data.metrics.items() if name != REALIZED_RMSE},
        }
    return models


def test_backfill_on_workers_equals_the_in_process_executor(in_process, backfilled):
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
    from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

    from ml_assets.definitions import defs
    from ml_assets.records import latest_metadata

    topology, ingested, trained = backfilled
    nodes = {node.name: node for node in defs.resolve_implicit_global_asset_job_def().graph.node_defs}
    queues = {name: set(queues.split(",")) for name, queues in WORKERS.items()}

    with topology.instance() as instance:
        for run in [*ingested, *trained]:
            assert run.status == DagsterRunStatus.SUCCESS, run.run_id
            (orchestrator,) = step_events(instance, run.run_id, DagsterEventType.RUN_START)
            started = step_events(instance, run.run_id, DagsterEventType.STEP_START)
            workers = step_workers(instance, run.run_id)
            # Every step executed once, in a worker reading its queue (ingestion: only `general`),
            # never in the run's own process.
            assert set(workers) == {event.step_key for event in started}, run.run_id
            assert orchestrator.dagster_event.pid not in {event.dagster_event.pid for event in started}
            for step, (worker,) in workers.items():
                (name,) = worker_names([worker])
                assert nodes[step].tags[DAGSTER_CELERY_QUEUE_TAG] in queues[name], (step, worker)
        ingesting = [
            worker for run in ingested for names in step_workers(instance, run.run_id).values() for worker in names
        ]
        assert worker_names(ingesting) == {"general"}  # the only worker reading `ingest`
        # One training run at a time, in month order: each month's tuning starts from the month before's.
        records = sorted((instance.get_run_record_by_id(run.run_id) for run in trained), key=lambda r: r.start_time)
        assert [record.dagster_run.tags["dagster/partition"] for record in records] == MONTHS[1:]
        tuning = {month: latest_metadata(instance, "best_params", month) for month in MONTHS[1:]}

    process, home, log = in_process
    assert process.wait(timeout=600) == 0, log.read_text()[-4000:]
    with DagsterInstance.from_config(str(home)) as baseline:
        baseline_tuning = {month: latest_metadata(baseline, "best_params", month) for month in MONTHS[1:]}

    # The same stored values: every value of the two jobs' assets (not predictions, not monitoring).
    jobs = {
        key.to_user_string()
        for job in ("ingest_month", "retrain_month")
        for key in defs.resolve_job_def(job).asset_layer.executable_asset_keys
    }
    on_workers = stored_values(topology.workdir / "data" / "assets")
    in_process_values = stored_values(home / "ml_assets" / "assets")
    assert set(on_workers) == {name for name in in_process_values if name.split("/")[0] in jobs}
    for name, value in on_workers.items():
        assert value == in_process_values[name], name
    for month in MONTHS[1:]:
        for key in ("trials_total", "valid_rmse", "params", "warm_start"):
            assert tuning[month][key] == baseline_tuning[month][key], (month, key)

    # The same registered models: versions in the same order, the same aliases, params and metrics.
    assert registered_models(topology.tracking_uri) == registered_models(
        f"sqlite:///{home / 'ml_assets' / 'mlflow.db'}"
    )


def slow_training(rounds: int = 2000) -> dict:
    """Many rounds and no early stopping, so that trained_model is still training when it is killed."""
    return {"ops": {"trained_model": {"config": {"num_boost_round": rounds, "early_stopping_rounds": rounds}}}}


def mlflow_runs_of(tracking_uri: str, dagster_run_id: str) -> list[tuple[str, str]]:
    """(MLflow run id, status) of the trip_duration runs that the Dagster run logged to (tagged by
    dagster-mlflow with the Dagster run, then by trained_model with the month)."""
    from mlflow import MlflowClient

    from ml_assets.core.tracking import PARTITION_TAG

    client = MlflowClient(tracking_uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "trip_duration"]
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.dagster_run_id = '{dagster_run_id}' and tags.{PARTITION_TAG} != ''"
    )
    return [(run.info.run_id, run.info.status) for run in runs]


def test_a_step_process_killed_fails_the_run_and_run_retries_finish_it(backfilled):
    """kill -9 of the pool process executing trained_model, its worker alive (the OOM killer's way):
    Celery fails the task at once (WorkerLostError), so the run fails instead of waiting; Dagster's
    run retries (deploy/dagster.yaml) start a retry from the failed step, which succeeds; the killed
    attempt's MLflow run is marked FAILED and only the retry's is registered."""
    import os
    import signal

    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

    from ml_assets.records import latest_materialization

    topology, _, _ = backfilled
    month = MONTHS[-1]
    versions_before = registered_versions(topology.tracking_uri)
    with topology.instance() as instance:
        run_id = launch(topology, month, ["trained_model"], slow_training())

        def step_process() -> int | None:
            started = step_events(instance, run_id, DagsterEventType.STEP_START)
            return next((e.dagster_event.pid for e in started if e.step_key == "trained_model"), None)

        pid = topology.wait_for(step_process, "trained_model started in a worker", 120, poll=0.1)
        # Killed once it trains: its MLflow run is open, tagged with the Dagster run and the month.
        topology.wait_for(lambda: mlflow_runs_of(topology.tracking_uri, run_id), "trained_model's MLflow run", 120, 0.2)
        (worker,) = step_workers(instance, run_id)["trained_model"]
        worker_service = topology.services[topology.worker_key(worker)]
        assert pid != worker_service.process.pid  # the pool's process, not the worker itself
        os.kill(pid, signal.SIGKILL)

        # The fault: the step's process is gone; the run fails with the worker's error, it does not hang.
        topology.wait_for(lambda: instance.get_run_by_id(run_id).is_finished, "the killed run to end", 120, poll=0.5)
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
        (failure,) = step_events(instance, run_id, DagsterEventType.RUN_FAILURE)
        assert "WorkerLostError" in failure.dagster_event.event_specific_data.error.to_string()
        assert not step_events(instance, run_id, DagsterEventType.STEP_SUCCESS)
        assert worker_service.running  # the worker lives on, with a new pool process

        # Recovery: the daemon's run retry re-executes the failed step (and its check) and succeeds.
        def retry():
            (found,) = instance.get_runs(RunsFilter(tags={"dagster/parent_run_id": run_id})) or [None]
            return found if found is not None and found.is_finished else None

        retried = topology.wait_for(retry, "the run's retry to end", 420, poll=1)
        assert retried.status == DagsterRunStatus.SUCCESS, topology.logs()
        assert retried.tags["dagster/retry_number"] == "1"
        materialized_by, model = latest_materialization(instance, "trained_model", month)
        assert materialized_by == retried.run_id

    # Nothing half-done: the killed attempt's MLflow run is FAILED, never registered; the retry's
    # run is FINISHED and is the one new version.
    killed_runs = mlflow_runs_of(topology.tracking_uri, run_id)
    assert [status for _, status in killed_runs] == ["FAILED"]
    assert mlflow_runs_of(topology.tracking_uri, retried.run_id) == [(model["mlflow_run_id"], "FINISHED")]
    versions = registered_versions(topology.tracking_uri)
    (new,) = set(versions) - set(versions_before)
    assert versions[new]["run_id"] == model["mlflow_run_id"]


def test_a_worker_killed_mid_step_hands_the_step_to_the_other_worker(backfilled):
    """kill -9 of the worker executing trained_model: the step waits in Redis, not lost; the other
    worker executes it once it has been unacknowledged for VISIBILITY_TIMEOUT; the run succeeds."""
    import redis
    from dagster import DagsterEventType, DagsterRunStatus

    from ml_assets.records import latest_materialization

    topology, _, _ = backfilled
    month = MONTHS[-1]
    broker = redis.Redis.from_url(topology.code_env()["ML_ASSETS_CELERY_BROKER_URL"])
    versions_before = registered_versions(topology.tracking_uri)
    with topology.instance() as instance:
        run_id = launch(topology, month, ["trained_model"], slow_training())

        def taken_by() -> list[str]:
            return step_workers(instance, run_id).get("trained_model", [])

        topology.wait_for(taken_by, "trained_model taken by a worker", 120, poll=0.1)
        (first,) = taken_by()
        killed = topology.worker_key(first)
        topology.services[killed].kill()  # the worker and its pool process, as a lost machine

        # The fault: the step's worker is gone mid-step; the run waits with the step in Redis, unacknowledged.
        assert not [e for e in step_events(instance, run_id, DagsterEventType.STEP_SUCCESS)], (
            "trained_model ended before its worker was killed: raise slow_training's rounds"
        )
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED
        assert broker.hlen("unacked") == 1

        topology.wait_for(
            lambda: instance.get_run_by_id(run_id).is_finished, "the run to end", VISIBILITY_TIMEOUT + 180, poll=0.5
        )
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.SUCCESS
        workers = step_workers(instance, run_id)["trained_model"]
        assert len(workers) == 2 and workers[0] == first and workers[1] != first, workers
        assert len(step_events(instance, run_id, DagsterEventType.STEP_SUCCESS)) == 2  # trained_model, model_gate
        materialized_by, model = latest_materialization(instance, "trained_model", month)
        assert materialized_by == run_id

    # Nothing half-done: one MLflow run for the Dagster run (the second attempt resumed the first's,
    # dagster-mlflow finds it by the run's id), FINISHED, and registered once.
    assert mlflow_runs_of(topology.tracking_uri, run_id) == [(model["mlflow_run_id"], "FINISHED")]
    versions = registered_versions(topology.tracking_uri)
    for version, record in versions_before.items():  # still there (aliases may have moved to the new one)
        assert (versions[version]["run_id"], versions[version]["status"]) == (record["run_id"], record["status"])
    (new,) = set(versions) - set(versions_before)
    assert versions[new]["run_id"] == model["mlflow_run_id"]
    assert broker.hlen("unacked") == 0
