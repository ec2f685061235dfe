"""Faults around training: the registry only ever serves a model Dagster recorded, and a plain retry recovers.

Each fault is made real: a folder the run cannot write (capsh drops root's override), a registry
call that fails, a process killed with SIGKILL at a chosen library call, two runs of one month at
once, a tracking server that does not answer.
"""

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import mlflow
import optuna
import pytest
from dagster import AssetKey, DagsterEvent, DagsterEventType, DagsterRun, DagsterRunStatus, RunsFilter

from ml_assets.core import tracking, tuning
from ml_assets.keys import CHAMPION_POOL
from ml_assets.records import check_evaluations, latest_materialization, run_metadata
from ml_assets.runner.runs import materialize_month
from ml_assets_tests import forked
from ml_assets_tests.support import (
    FAST_CONFIG,
    GREEN_MODEL,
    ROOT,
    assert_champion_was_recorded,
    template_home,
    use_new_home,
)

MONTH = "2021-02"
INGESTION = ["raw_trips", "cleaned_trips"]
# A subprocess that materializes MONTH's whole graph; `inject` arranges its fault first.
RUN_MONTH = """
import json, os, signal, sys
from dagster import DagsterInstance
from ml_assets.runner.runs import materialize_month

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

{inject}
with DagsterInstance.get() as instance:
    result = materialize_month(instance, sys.argv[1], None, json.loads(sys.argv[2]), raise_on_error=False)
sys.exit(0 if result.success else 1)
"""


SYNTHETIC_ROWS = "5000"


@pytest.fixture(scope="module")
def two_months(tmp_path_factory) -> Path:
    """A home with 2021-01 and 2021-02 ingested from small synthetic months, built once for the module.
    Its MLflow and optuna stores do not exist yet: each test's first run creates them (two at once in
    test_two_runs_of_one_month_at_once_leave_one_champion)."""
    root = tmp_path_factory.mktemp("two_months")
    with template_home(root, ML_ASSETS_SYNTHETIC_ROWS=SYNTHETIC_ROWS) as instance:
        for month in ("2021-01", MONTH):
            assert materialize_month(instance, month, INGESTION).success
    return root / "dagster_home"


@pytest.fixture
def dagster_home(tmp_path, monkeypatch, two_months) -> Path:
    """In this module, every test's home is a copy of `two_months`'."""
    return use_new_home(tmp_path / "dagster_home", monkeypatch, template=two_months)


@pytest.fixture
def ingested(instance, monkeypatch):
    """This test's instance on its copy of `two_months`' home, the same synthetic source; fast heartbeats."""
    monkeypatch.setenv("ML_ASSETS_SYNTHETIC_ROWS", SYNTHETIC_ROWS)
    monkeypatch.setattr(tuning, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(tuning, "GRACE_SECONDS", 2)
    return instance


def client(dagster_home) -> mlflow.MlflowClient:
    uri = f"sqlite:///{dagster_home / 'ml_assets' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def champion_version(dagster_home):
    try:
        return client(dagster_home).get_model_version_by_alias(GREEN_MODEL, tracking.CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None


def run_month_in_subprocess(inject: str) -> subprocess.CompletedProcess:
    script = RUN_MONTH.format(inject=textwrap.dedent(inject))
    return forked.run(["-c", script, MONTH, json.dumps(FAST_CONFIG)], timeout=600)


@pytest.mark.process
def test_an_unwritable_model_folder_promotes_nothing(ingested, dagster_home, monkeypatch):
    """`make run` with a model folder it cannot write (capsh drops root's override): the printed failure
    names the file and the reason, where it said only DagsterExecutionHandleOutputError."""
    models = dagster_home / "ml_assets" / "assets" / "trained_model"
    models.mkdir(parents=True)
    models.chmod(0o555)
    monkeypatch.setenv("ML_ASSETS_TUNING_TRIALS", "3")
    monkeypatch.setenv("ML_ASSETS_TUNING_TIMEOUT_SECONDS", "20")
    drop = ["capsh", "--drop=cap_dac_override,cap_dac_read_search,cap_fowner", "--", "-c", '"$0" "$@"']
    runner = [*drop, sys.executable, "-m", "ml_assets.runner", MONTH]
    failed = subprocess.run(runner, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1, failed.stderr[-3000:]
    printed = f"FAILED trained_model {MONTH}: WriteFailed: cannot write trained_model {MONTH} to {models / MONTH}.ubj: "
    assert printed + "Permission denied" in failed.stderr, failed.stdout + failed.stderr
    assert MONTH not in ingested.get_materialized_partitions(AssetKey("trained_model"))
    assert champion_version(dagster_home) is None  # logged in MLflow, but never registered
    assert client(dagster_home).search_model_versions(f"name = '{GREEN_MODEL}'") == []

    models.chmod(0o755)
    assert materialize_month(ingested, MONTH, run_config=FAST_CONFIG).success
    assert_champion_was_recorded(ingested, dagster_home)


@pytest.mark.slow
def test_a_failure_after_registration_is_undone(ingested, dagster_home, monkeypatch):
    def unavailable(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("registry unavailable")

    with monkeypatch.context() as patched:
        patched.setattr(mlflow.MlflowClient, "set_registered_model_alias", unavailable)
        result = materialize_month(ingested, MONTH, run_config=FAST_CONFIG, raise_on_error=False)
    assert not result.success
    # The registry answered with an error: no outage to wait out, so model_gate is not retried.
    assert not [event for event in result.all_events if event.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert client(dagster_home).search_model_versions(f"name = '{GREEN_MODEL}'") == []
    assert materialize_month(ingested, MONTH, run_config=FAST_CONFIG).success
    assert_champion_was_recorded(ingested, dagster_home)


KILLS = {
    # while optuna runs the second trial
    "tuning": """
        import ml_assets.core.tuning as tuning
        tuning.HEARTBEAT_SECONDS, tuning.GRACE_SECONDS = 1, 2
        real, calls = tuning.fit, []
        def fit(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                die()
            return real(*args, **kwargs)
        tuning.fit = fit
    """,
    # the MLflow run has its params, not its metrics
    "mlflow logging": "import mlflow; mlflow.log_metrics = die",
    # the version is registered, its alias not yet moved
    "between registration and alias": "import mlflow; mlflow.MlflowClient.set_registered_model_alias = die",
}


@pytest.mark.process
@pytest.mark.parametrize("moment", KILLS)
def test_kill_9_leaves_nothing_a_retry_does_not_clean(moment, ingested, dagster_home, monkeypatch):
    killed = run_month_in_subprocess(KILLS[moment])
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert champion_version(dagster_home) is None
    # The retry's tuning fails the killed trial once its heartbeat is older than the grace period: short
    # here, as in the killed run, and past, however fast the retry reaches tuning.
    monkeypatch.setattr(tuning, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(tuning, "GRACE_SECONDS", 2)
    time.sleep(3)

    (dead,) = ingested.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    retry = materialize_month(ingested, MONTH, run_config=FAST_CONFIG)
    assert retry.success
    assert ingested.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
    assert_champion_was_recorded(ingested, dagster_home)
    runs = client(dagster_home).search_runs(
        [client(dagster_home).get_experiment_by_name("trip_duration").experiment_id],
        f"tags.{tracking.PARTITION_TAG} = '{MONTH}'",
    )
    assert [run.info.status for run in runs if run.info.status == "RUNNING"] == []
    study = optuna.load_study(
        study_name=f"trip_duration-rich-{MONTH}", storage=f"sqlite:///{dagster_home / 'ml_assets' / 'optuna.db'}"
    )
    states = [trial.state.name for trial in study.trials]
    assert "RUNNING" not in states
    finished = states.count("COMPLETE") + states.count("PRUNED")
    _, params = latest_materialization(ingested, "best_params", MONTH)
    assert params["trials_total"] == finished  # a failed (killed) trial is not counted as finished
    if moment == "tuning":
        assert states.count("FAIL") == 1
    if moment == "mlflow logging":
        assert [run.info.status for run in runs].count("FAILED") == 1


def gate_recorded(instance, version) -> bool:
    """Whether the run that published `version` recorded the model_gate evaluation that names it."""
    evaluations = check_evaluations(instance, version.tags[tracking.DAGSTER_RUN_TAG], "model_gate")
    return str(version.version) in [str(evaluation["model_version"]) for evaluation in evaluations]


@pytest.mark.process
def test_a_kill_right_after_the_alias_moved_is_put_back_by_the_next_run(ingested, dagster_home):
    """The run dies right after moving `champion` to its version, before its model_gate evaluation is
    recorded: the alias names a model whose publishing Dagster never recorded. The next run puts it
    back to the version it replaced, and its gate judges against that one."""
    assert materialize_month(ingested, MONTH, run_config=FAST_CONFIG).success
    first = champion_version(dagster_home)
    killed = run_month_in_subprocess(
        """
        import mlflow
        real = mlflow.MlflowClient.set_registered_model_alias
        def move_then_die(self, name, alias, version):
            real(self, name, alias, version)
            if alias == "champion":
                die()
        mlflow.MlflowClient.set_registered_model_alias = move_then_die
        """
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    unrecorded = champion_version(dagster_home)
    assert unrecorded.version != first.version and not gate_recorded(ingested, unrecorded)  # the fault
    assert unrecorded.tags[tracking.CHAMPION_BEFORE_TAG] == str(first.version)

    retry = materialize_month(ingested, MONTH, run_config=FAST_CONFIG)
    assert retry.success
    said = [entry.user_message for entry in ingested.all_logs(retry.run_id) if entry.level >= logging.WARNING]
    assert any(f"named version(s) {unrecorded.version}, published by runs that ended" in line for line in said), said
    (judged,) = check_evaluations(ingested, retry.run_id, "model_gate")
    assert judged["champion_version_before"] == str(first.version)  # not against the unrecorded one
    champion = champion_version(dagster_home)
    assert gate_recorded(ingested, champion)  # the retry's own model, or the first one put back
    versions = client(dagster_home).search_model_versions(f"name = '{GREEN_MODEL}'")
    assert {first.version, unrecorded.version} <= {version.version for version in versions}  # nothing lost
    assert client(dagster_home).get_model_version(GREEN_MODEL, unrecorded.version).aliases == []


# The order that let the older model take the alias: the second run trains once the first run's model
# is recorded, and the first run publishes once the month's newest model is the second run's. Each
# waits at most WAIT_FOR_THE_OTHER_RUN seconds, then goes on (and the test's assertions say why).
WAIT_FOR_THE_OTHER_RUN = 300
AFTER_THE_OTHER_RUN = """
import time
from ml_assets.core import tracking, training
from ml_assets.records import latest_materialization

def after(condition, call):
    def wait_then_call(*args, **kwargs):
        deadline = time.monotonic() + {seconds}
        with DagsterInstance.get() as instance:
            while not condition(instance, *args) and time.monotonic() < deadline:
                time.sleep(0.2)
        return call(*args, **kwargs)
    return wait_then_call

def newest_model_run(instance):
    return (latest_materialization(instance, "trained_model", sys.argv[1]) or [None])[0]

{patch}
"""
FIRST_RUN = AFTER_THE_OTHER_RUN.format(
    seconds=WAIT_FOR_THE_OTHER_RUN,
    patch="tracking.publish = after(lambda instance, uri, gate, tags, *_: newest_model_run(instance) not in "
    "(None, tags[tracking.DAGSTER_RUN_TAG]), tracking.publish)",
)
SECOND_RUN = AFTER_THE_OTHER_RUN.format(
    seconds=WAIT_FOR_THE_OTHER_RUN,
    patch="training.train_and_evaluate = after(lambda instance, *args: newest_model_run(instance) is not None, "
    "training.train_and_evaluate)",
)


@pytest.mark.process
def test_two_runs_of_one_month_at_once_leave_one_champion(ingested, dagster_home):
    """On a fresh MLflow and optuna store, started together (as from the CLI and the UI). Ordered as
    when the older model took the alias from the newer one: its gate came last. It is the challenger."""
    both = [
        forked.Forked(["-c", RUN_MONTH.format(inject=inject), MONTH, json.dumps(FAST_CONFIG)])
        for inject in (FIRST_RUN, SECOND_RUN)
    ]
    try:
        errors = [process.communicate(timeout=600)[1] for process in both]
    finally:
        for process in both:
            process.kill()
            process.wait()
    assert [process.returncode for process in both] == [0, 0], "\n".join(error[-2000:] for error in errors)
    versions = client(dagster_home).search_model_versions(f"name = '{GREEN_MODEL}'")
    assert len(versions) == 2
    # Each run published the model it trained, not the other run's (the newest of the month).
    for version in versions:
        trained = run_metadata(ingested, version.tags[tracking.DAGSTER_RUN_TAG], "trained_model", MONTH)
        assert version.run_id == trained["mlflow_run_id"]
    assert len({version.run_id for version in versions}) == 2
    champion = champion_version(dagster_home)  # an alias names one version: the question is which
    assert champion.tags["alias_at_registration"] == tracking.CHAMPION  # what its run reported
    # The alias is on the newest version registered as champion: a later model judged worse than
    # the first is the challenger and leaves it where it was.
    crowned = [int(v.version) for v in versions if v.tags["alias_at_registration"] == tracking.CHAMPION]
    assert int(champion.version) == max(crowned)
    assert_champion_was_recorded(ingested, dagster_home)
    (superseded,) = [v for v in versions if v.tags["alias_at_registration"] == tracking.CHALLENGER]
    (gate,) = check_evaluations(ingested, superseded.tags[tracking.DAGSTER_RUN_TAG], "model_gate")
    assert gate["reason"] == f"a newer model of this month was recorded meanwhile (MLflow run {champion.run_id})"


@pytest.mark.slow
def test_the_champion_moves_only_while_no_step_of_another_machine_may_move_it(ingested, dagster_home, monkeypatch):
    """model_gate of another machine (a Celery worker, a run pod of the same instance) holds the champion pool:
    this run publishes only once that step has given its slot back. The lock file under $DAGSTER_HOME/ml_assets
    held on one machine only, so both judged the same champion and both moved the alias."""
    storage = ingested.event_log_storage
    storage.initialize_concurrency_limit_to_default(CHAMPION_POOL)
    assert storage.get_concurrency_info(CHAMPION_POOL).slot_count == 1  # dagster.yaml's limit
    other = ("run-of-another-machine", "trained_model_model_gate")
    assert storage.claim_concurrency_slot(CHAMPION_POOL, *other).is_claimed
    holders_at_publishing, ended = [], threading.Event()

    def publishing(*args, **kwargs):
        holders_at_publishing.append(storage.get_concurrency_info(CHAMPION_POOL).active_run_ids)
        return publish(*args, **kwargs)

    def free_once_waited_for():  # the other step ends once one of this run's waits for it
        while not storage.get_concurrency_info(CHAMPION_POOL).pending_step_count and not ended.wait(0.2):
            pass
        storage.free_concurrency_slot_for_step(*other)

    publish = tracking.publish
    monkeypatch.setattr(tracking, "publish", publishing)
    freeing = threading.Thread(target=free_once_waited_for)
    freeing.start()
    try:
        result = materialize_month(ingested, MONTH, run_config=FAST_CONFIG)
    finally:
        ended.set()
        freeing.join()
    assert holders_at_publishing == [{result.run_id}]  # this run's model_gate alone
    assert_champion_was_recorded(ingested, dagster_home)


@pytest.mark.slow
def test_a_run_of_the_month_on_another_machine_keeps_its_mlflow_run(ingested, dagster_home):
    """A run of the month that a daemon started on another worker trains, its MLflow run RUNNING, in a process
    this machine does not have: trained_model here judged it dead by this machine's pids and marked its MLflow
    run FAILED. Now its Dagster run decides, as every machine sees it: STARTED, so still written to."""
    elsewhere = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process here has it
    other = ingested.add_run(DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4())))
    ingested.report_dagster_event(
        DagsterEvent(DagsterEventType.RUN_START.value, job_name=other.job_name, pid=elsewhere), other.run_id
    )
    assert ingested.get_run_by_id(other.run_id).status == DagsterRunStatus.STARTED
    store = client(dagster_home)
    artifacts = (dagster_home / "ml_assets" / "mlartifacts").resolve().as_uri()  # as the mlflow resource sets it
    experiment = store.create_experiment("trip_duration", artifact_location=artifacts)
    training = store.create_run(
        experiment, tags={tracking.DAGSTER_RUN_TAG: other.run_id, tracking.PARTITION_TAG: MONTH}
    )

    assert materialize_month(ingested, MONTH, ["trip_features", "best_params", "trained_model"], FAST_CONFIG).success
    assert store.get_run(training.info.run_id).info.status == "RUNNING"


@pytest.mark.slow
def test_an_unreachable_tracking_server_is_waited_for_then_fails_training_only(ingested, dagster_home, monkeypatch):
    """trained_model is retried while the tracking server does not answer (ml_assets.outages), for
    ML_ASSETS_OUTAGE_SECONDS (here 15: after 5 s, then 10 s), then fails naming the server; so does
    model_performance, the other step of the month that reads MLflow."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing answers
    monkeypatch.setenv("ML_ASSETS_OUTAGE_SECONDS", "15")
    result = materialize_month(ingested, MONTH, run_config=FAST_CONFIG, raise_on_error=False)
    assert not result.success
    retried = [event for event in result.all_events if event.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert sorted((event.step_key, event.event_specific_data.seconds_to_wait) for event in retried) == [
        ("model_performance", 5),
        ("model_performance", 10),
        ("trained_model", 5),
        ("trained_model", 10),
    ]
    failed = sorted((event for event in result.all_events if event.is_step_failure), key=lambda e: e.step_key)
    assert [event.step_key for event in failed] == ["model_performance", "trained_model"]
    failed = failed[1:]
    message = str(failed[0].step_failure_data.error)
    assert f"trained_model {MONTH}: MLflow tracking at http://127.0.0.1:9 cannot be reached" in message
    for asset in ("trip_features", "best_params"):  # they never talk to MLflow
        assert MONTH in ingested.get_materialized_partitions(AssetKey(asset))
    step = [entry.timestamp for entry in ingested.all_logs(result.run_id) if entry.step_key == "trained_model"]
    seconds = max(step) - min(step)
    assert 15 <= seconds < 75, seconds  # the two waits, then the failure: no silent client retries beyond them
