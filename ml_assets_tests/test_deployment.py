"""The production topology (docker-compose.yml) without containers: PostgreSQL, an MLflow tracking
server, the gRPC code server, the webserver and the daemon, as separate processes on 127.0.0.1.

The topology test starts the image's own entry point (deploy/service.sh) once per compose service,
through the product's local stack (ml_assets/deploy/local/, which `python -m ml_assets.deploy.local`
runs for a person too, as the first test does). Months are real TLC files, a tenth of their trips
(so that training fits the time budget of a test), dropped one by one into a directory source. The
files the topology comes from are checked in test_deployment_files.py, its health checks in
test_service_checks.py.

Run alone with `pytest -m deployment`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml_assets.deploy.local.environment import clean_environ
from ml_assets.deploy.local.proc import ended, process_table
from ml_assets.deploy.local.topology import SERVICES, Topology
from ml_assets.deploy.local.ui_actions import TRAINING_TAG, graphql, launch
from ml_assets.deploy.scram import ITERATIONS, scram_secret
from ml_assets.keys import TRAINED_MODEL
from ml_assets_tests.deployment_support import (
    TEST_INSTANCE,
    TEST_SETTINGS,
    mlflow_get,
    mlflow_request,
    registered_versions,
    require_servers,
)
from ml_assets_tests.support import GREEN_MODEL, ROOT, drop_month, http_ok, stop_process_group, wait_until

pytestmark = pytest.mark.deployment

MONTHS = ["2023-01", "2023-02", "2023-03", "2023-04"]
IN_PROGRESS = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}

# Test-sized budgets and intervals; everything else is the production configuration.
CODE_ENV = {
    **TEST_SETTINGS,
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

# --------------------------------------------------------------------------------------------
# The stack from the command line (before the topology below starts: one stack at a time)
# --------------------------------------------------------------------------------------------


def started_by(roots: set[int]) -> dict[int, int]:
    """pid -> start time of the processes `roots`, the members of their sessions, and all their descendants."""
    table = process_table()
    found = {pid for pid, stat in table.items() if pid in roots or stat.session in roots}
    todo = list(found)
    while todo:
        parent = todo.pop()
        children = [pid for pid, stat in table.items() if stat.ppid == parent and pid not in found]
        found.update(children)
        todo.extend(children)
    return {pid: table[pid].started for pid in found}


def still_running(processes: dict[int, int]) -> list[int]:
    """Those of `processes` (pid -> start time) that have not ended."""
    return [pid for pid, started in processes.items() if not ended(pid, started)]


def test_the_stack_runs_from_the_command_line_until_sigterm(tmp_path):
    """`python -m ml_assets.deploy.local FOLDER` (`make stack`): the webserver and MLflow answer at the
    addresses it prints, and SIGTERM stops every process it started, each of them gone by its id."""
    require_servers()
    incoming = tmp_path / "incoming"
    incoming.mkdir()  # no month: nothing runs while the stack is up
    env = {**clean_environ(), **TEST_SETTINGS, "ML_ASSETS_SOURCE": str(incoming)}
    output = tmp_path / "stack.out"
    with output.open("w") as out:
        stack = subprocess.Popen(
            [sys.executable, "-m", "ml_assets.deploy.local", str(tmp_path / "stack")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    processes: dict[int, int] = {}

    def ready() -> str | None:
        text = output.read_text()
        return text if "stops them all." in text else None

    try:
        printed = wait_until(
            ready,
            "the stack ready",
            600,
            exited=lambda: "" if stack.poll() is None else "the stack",
            log=lambda: output.read_text()[-6000:],
        )
        listed = printed.split("processes: ")[1].splitlines()[0]
        leaders = {name: int(pid) for name, pid in re.findall(r"([\w-]+) (\d+)", listed)}
        assert set(leaders) == {"postgres", "pgbouncer", *SERVICES}, printed
        webserver = re.search(r"webserver +(http://127\.0\.0\.1:\d+)", printed)[1]
        mlflow = re.search(r"MLflow +(http://127\.0\.0\.1:\d+)", printed)[1]
        assert http_ok(f"{webserver}/server_info") and http_ok(f"{mlflow}/health")
        logins = Path(re.search(r"logins in (\S+)\)", printed)[1])
        assert oct(logins.stat().st_mode & 0o777) == oct(0o600)

        processes = started_by({stack.pid, *leaders.values()})
        assert set(leaders.values()) <= set(processes)
        assert len(processes) > len(leaders) + 1, "each leader's processes, PostgreSQL's backends"
        stack.send_signal(signal.SIGTERM)
        assert stack.wait(timeout=120) == 0, output.read_text()[-6000:]
        assert "SIGTERM: every process of the stack stopped" in output.read_text()
        assert not still_running(processes), output.read_text()[-6000:]
        # Nor any process that joined a service's group later (none should have: no run was launched).
        left = [pid for pid, stat in process_table().items() if stat.session in leaders.values() and stat.state != "Z"]
        assert not left, left
        assert not logins.exists()
    finally:
        if stack.poll() is None:
            stop_process_group(stack)
        for pid in still_running(processes):  # only after a failure: what the stack left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# The topology
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, s3_server):
    require_servers()
    work = tmp_path_factory.mktemp("deployment")
    incoming = work / "incoming"
    incoming.mkdir()
    # Three months at once: the sensor ingests them in one tick, automation trains 2023-02 and 2023-03.
    for month in MONTHS[:3]:
        drop_month(incoming, month)
    # MLflow's artifacts in an object store (S3 on moto), as a deployment with several machines keeps them.
    bucket = s3_server.new_bucket()
    temporary = work / "tmp"  # the services' temporary files, looked at by the first test
    temporary.mkdir()
    with Topology(
        work / "topology",
        env={**CODE_ENV, "ML_ASSETS_SOURCE": str(incoming), "TMPDIR": str(temporary)},
        overrides=TEST_INSTANCE,
        artifacts_destination=f"s3://{bucket}/mlartifacts",
        store_env=s3_server.env(),
    ) as topology:
        topology.incoming, topology.temporary = incoming, temporary
        topology.s3, topology.artifacts_bucket = s3_server, bucket
        topology.wait_until_ready()
        yield topology


def materialized(instance, asset: str, month: str) -> bool:
    from dagster import AssetKey

    return month in instance.get_materialized_partitions(AssetKey(asset))


def metadata(instance, asset: str, month: str) -> dict:
    from ml_assets.records import latest_metadata

    return latest_metadata(instance, asset, month)


def run_status(run) -> str:
    return run.status.value


def training_runs(instance):
    from dagster import RunsFilter

    return instance.get_runs(RunsFilter(tags=dict([TRAINING_TAG])))


def assert_training_runs_never_overlapped(instance) -> None:
    """tag_concurrency_limits: at most one training run at a time."""
    records = [
        record
        for record in instance.get_run_records()
        if record.dagster_run.tags.get(TRAINING_TAG[0]) == TRAINING_TAG[1] and record.start_time
    ]
    spans = sorted((record.start_time, record.end_time or time.time(), record.dagster_run.run_id) for record in records)
    for (_, end, first), (start, _, second) in zip(spans, spans[1:], strict=False):
        assert start >= end - 0.5, f"training runs {first} and {second} overlapped"


def trains(run) -> bool:
    return TRAINED_MODEL in (run.asset_selection or ())


# Why Dagster's retry daemon did not retry a failed run whose every step had ended (DagsterInvalidSubsetError).
NOTHING_TO_RETRY = "No steps needed to be retried"


def succeeded_or_retried(instance, run_id: str) -> bool:
    """Whether the run succeeded, or failed and a run retry of it (`run_retries`, deploy/dagster.yaml) did,
    or failed after every step of it had succeeded (its worker killed at its very end), so that Dagster
    found nothing to retry."""
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter
    from dagster._core.storage.tags import ROOT_RUN_ID_TAG

    run = instance.get_run_by_id(run_id)
    if run.status != DagsterRunStatus.FAILURE:
        return run.status == DagsterRunStatus.SUCCESS
    retries = instance.get_runs(RunsFilter(tags={ROOT_RUN_ID_TAG: run_id}))
    if any(retry.status == DagsterRunStatus.SUCCESS for retry in retries):
        return True
    events = instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)  # "Failed to retry run", and why
    errors = [getattr(event.dagster_event.event_specific_data, "error", None) for event in events]
    return any(error is not None and NOTHING_TO_RETRY in error.message for error in errors)


def snapshot(topology: Topology, instance) -> dict:
    """Everything that must never be lost: materializations, asset files, registered versions, study trials."""
    import optuna
    from dagster import AssetKey

    materializations = {}
    for asset in (
        "raw_trips",
        "cleaned_trips",
        "trip_features",
        "best_params",
        "trained_model",
        "trip_duration_predictions",
    ):
        for month in instance.get_materialized_partitions(AssetKey(asset)):
            materializations[(asset, month)] = metadata(instance, asset, month).get("path")
    storage = topology.postgres.url("optuna")
    trials = {
        summary.study_name: len(
            optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(
                deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]
            )
        )
        for summary in optuna.get_all_study_summaries(storage)
    }
    return {
        "materializations": materializations,
        "versions": registered_versions(topology.tracking_uri),
        "trials": trials,
    }


def test_month_is_ingested_and_trained_through_the_topology(deployment):
    from dagster import DagsterRunStatus
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    with deployment.instance() as instance:
        # The instance is PostgreSQL all through.
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)

        deployment.wait_for(
            lambda: materialized(instance, "trip_duration_predictions", "2023-02"),
            "training 2023-02 by automation",
            240,
        )
        runs = {
            (run.tags.get("dagster/partition"), run.tags.get("dagster/sensor_name")): run for run in instance.get_runs()
        }
        for month in ("2023-01", "2023-02"):
            assert runs[(month, "new_month_sensor")].status == DagsterRunStatus.SUCCESS
        training = runs[("2023-02", "training_automation_sensor")]
        # Predictions are stored before the run records its own end: wait for that, then judge it.
        deployment.wait_for(lambda: instance.get_run_by_id(training.run_id).is_finished, "the training run's end", 60)
        training = instance.get_run_by_id(training.run_id)
        assert training.status == DagsterRunStatus.SUCCESS
        assert training.tags.get(TRAINING_TAG[0]) == TRAINING_TAG[1], "automation runs carry the training tag"

        model = metadata(instance, "trained_model", "2023-02")
        tuning = metadata(instance, "best_params", "2023-02")
        assert Path(model["path"]).is_relative_to(deployment.workdir / "data" / "assets")

    # The registered version and its alias, from the tracking server over HTTP.
    # (model_gate published trained_model's run: the champion is the model Dagster recorded.)
    champion = mlflow_get(deployment, "registered-models/alias", name=GREEN_MODEL, alias="champion")
    assert champion["model_version"]["run_id"] == model["mlflow_run_id"]
    run = mlflow_get(deployment, "runs/get", run_id=model["mlflow_run_id"])["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {tag["key"]: tag["value"] for tag in run["data"]["tags"]}["partition"] == "2023-02"
    # Artifacts go through the server (--serve-artifacts) into its object store, not the code server's disk.
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
    stored = deployment.s3.keys(deployment.artifacts_bucket, "mlartifacts/")
    assert any(model["mlflow_run_id"] in key and key.endswith("/encoder.json") for key in stored)
    model_id = model["mlflow_model_uri"].removeprefix("models:/")  # MLflow 3 keeps logged models apart from runs
    assert any(key.endswith(f"/models/{model_id}/artifacts/model.ubj") for key in stored), stored
    assert not (deployment.workdir / "data" / "mlartifacts").exists()
    # The champion, loaded from the server by each prediction step, leaves no copy behind (MLflow's stayed).
    assert list(deployment.temporary.rglob("MLmodel")) == []

    # The optuna study, from PostgreSQL.
    import optuna

    study = optuna.load_study(study_name=tuning["study"], storage=deployment.postgres.url("optuna"))
    assert len(study.trials) == tuning["trials_total"] >= 1
    assert study.best_value == pytest.approx(tuning["valid_rmse"], abs=1e-4)  # metadata rounds to 4 decimals

    # The webserver serves the code location from the code server.
    workspace = graphql(deployment)._execute("""{ workspaceOrError { ... on Workspace { locationEntries {
        name loadStatus locationOrLoadError { __typename } } } } }""")
    (entry,) = workspace["workspaceOrError"]["locationEntries"]
    assert (entry["name"], entry["loadStatus"], entry["locationOrLoadError"]["__typename"]) == (
        "ml_assets",
        "LOADED",
        "RepositoryLocation",
    )

    # The compose healthchecks pass against the running services.
    for name, result in deployment.health(*SERVICES).items():
        assert result.returncode == 0, f"`service.sh health {name}` failed: {result.stdout}{result.stderr}"


def test_services_accept_connections_from_this_machine_only(deployment):
    """service.sh binds 127.0.0.1 by default (BIND_HOST unset here): the code server's gRPC, which has no
    authentication, the webserver and the MLflow server listened on every interface."""
    listening = deployment.listening()
    for name in ("mlflow", "code-server", "webserver"):
        assert listening[name], f"{name} listens nowhere"
    for name, addresses in listening.items():
        assert all(address.rsplit(":", 1)[0] in ("127.0.0.1", "::1") for address in addresses), (name, addresses)


def test_only_the_pipeline_s_own_user_moves_champion(deployment):
    """MLflow's basic-auth app: without a login nothing is read or moved, a user who is not the
    pipeline's reads but cannot move `champion`; the pipeline's user (its password from the environment,
    never in the tracking URI) registered every version and moved the alias."""
    with deployment.instance() as instance:
        deployment.wait_for(lambda: materialized(instance, "trained_model", "2023-02"), "a model of 2023-02", 300)
    champion = mlflow_get(deployment, "registered-models/alias", name=GREEN_MODEL, alias="champion")
    version = champion["model_version"]["version"]
    move = {"name": GREEN_MODEL, "alias": "champion", "version": version}
    assert "@" not in deployment.code_env()["MLFLOW_TRACKING_URI"]

    assert (
        mlflow_request(deployment, "registered-models/alias", user=None, name=GREEN_MODEL, alias="champion")[0] == 401
    )
    assert mlflow_request(deployment, "registered-models/alias", move, user=None)[0] == 401
    admin = ("admin", deployment.mlflow_users.admin_password)
    visitor = ("visitor", "visitor-password-1")
    created = mlflow_request(deployment, "users/create", {"username": visitor[0], "password": visitor[1]}, user=admin)
    assert created[0] == 200, created
    assert mlflow_request(deployment, "registered-models/get", user=visitor, name=GREEN_MODEL)[0] == 200
    assert mlflow_request(deployment, "registered-models/alias", move, user=visitor)[0] == 403
    wrong = (deployment.mlflow_users.pipeline_user, "not-the-password")
    assert mlflow_request(deployment, "registered-models/alias", move, user=wrong)[0] == 401
    after = mlflow_get(deployment, "registered-models/alias", name=GREEN_MODEL, alias="champion")
    assert after["model_version"]["version"] == version


def test_no_password_is_recorded_or_printed(deployment):
    """PostgreSQL's password (in optuna's storage URL), MLflow's admin and pipeline passwords and its app key:
    in no service's output, compute log, Dagster event or run record, or MLflow run."""
    users = deployment.mlflow_users
    passwords = [deployment.postgres.password, users.admin_password, users.pipeline_password, users.secret_key]
    with deployment.instance() as instance:
        deployment.wait_for(lambda: materialized(instance, "trained_model", "2023-02"), "a model of 2023-02", 300)
    files = [path for path in deployment.workdir.rglob("*") if path.is_file() and path.name != "mlflow-auth.ini"]
    for path in files:
        # The topology goes on with later months meanwhile: an atomic write's temporary file may be renamed away.
        with contextlib.suppress(FileNotFoundError):
            text = path.read_bytes()
            assert not [word for word in passwords if word.encode() in text], f"a password in {path}"
    for table, column in (("event_logs", "event"), ("runs", "run_body")):
        query = f"SELECT count(*) FROM {table} WHERE " + " OR ".join(f"{column} LIKE '%{word}%'" for word in passwords)
        assert deployment.postgres.psql("-At", "-c", query).strip() == "0", f"a password in Dagster's {table}"
    experiment = mlflow_get(deployment, "experiments/get-by-name", experiment_name="trip_duration")["experiment"]
    status, found = mlflow_request(deployment, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})
    runs = found["runs"]
    recorded = json.dumps([run["data"] for run in runs])
    assert runs and not [word for word in passwords if word in recorded], "a password in an MLflow run"


def test_dagster_reaches_postgres_through_pgbouncer(deployment):
    """dagster-postgres opens a connection per query; through PgBouncer they reuse started backends.

    Over 20 s the daemon and the webserver query Dagster's database hundreds of times; straight to
    PostgreSQL each query would start a backend (a session), through the pooler almost none start.
    """
    assert deployment.dagster_env()["POSTGRES_PORT"] == str(deployment.ports["pgbouncer"])

    def sessions() -> int:
        query = "SELECT sessions FROM pg_stat_database WHERE datname = 'dagster'"
        return int(deployment.postgres.psql("-At", "-c", query).strip())

    before = sessions()
    with deployment.instance() as instance:
        for _ in range(50):  # and this process's queries too
            instance.get_runs(limit=1)
    time.sleep(20)
    started = sessions() - before - 1  # the query that counts them is a session of its own
    assert started <= 10, f"{started} new PostgreSQL sessions in 20 s: Dagster is not going through PgBouncer"


def test_logins_check_a_secret_postgresql_s_own_hashing_would_give_at_fewer_iterations(deployment):
    """The stack's role has a secret of scram.ITERATIONS (a login costs the client a tenth of the CPU);
    PostgreSQL's hashing of a password gives what scram_secret does for its salt and iterations."""
    postgres = deployment.postgres
    ours = postgres.secret(postgres.user)
    assert ours.startswith(f"SCRAM-SHA-256${ITERATIONS}:")
    assert (postgres.directory / "pgbouncer_users.txt").read_text() == f'"{postgres.user}" "{ours}"\n'
    postgres.psql("-c", "CREATE ROLE scram_probe PASSWORD 'pencil-42'", database="postgres")
    theirs = postgres.secret("scram_probe")
    iterations, salt = theirs.split("$")[1].split(":")
    assert int(iterations) == 4096
    assert scram_secret("pencil-42", int(iterations), base64.b64decode(salt)) == theirs


def test_killed_daemon_and_code_server_lose_nothing(deployment):
    """kill -9 the daemon, then the code server (with its run worker), while a training run is in flight."""
    from dagster import DagsterEventType, DagsterRunStatus

    with deployment.instance() as instance:
        launched = []

        def in_flight():
            """Automation's training run of 2023-03 if it is still to come; else one launched by hand."""
            runs = [run for run in training_runs(instance) if run_status(run) in IN_PROGRESS]
            # A run that trains: automation's run of 2023-01 only scores the month (no earlier month to
            # train on), and its steps can all be over before the kill, which leaves Dagster nothing to retry.
            started = [run for run in runs if run.status == DagsterRunStatus.STARTED and trains(run)]
            if started:
                return started[0]
            if not runs and not launched and materialized(instance, "trip_duration_predictions", "2023-03"):
                launched.append(
                    launch(
                        deployment,
                        "2023-03",
                        ["trip_features", "best_params", "trained_model", "trip_duration_predictions"],
                    )
                )
            return None

        found = []
        deployment.wait_for(
            lambda: found.append(in_flight()) or found[-1] is not None, "a training run in flight", 300, poll=0.3
        )
        run = found[-1]
        before = snapshot(deployment, instance)

        deployment.services["daemon"].kill()
        deployment.restart("daemon")
        deployment.services["code-server"].kill()  # with the run's worker process: it is the server's child
        deployment.restart("code-server")
        drop_month(deployment.incoming, "2023-04")  # a month published while the services come back

        deployment.wait_for(
            lambda: succeeded_or_retried(instance, run.run_id), "the killed run, or its retry, to succeed", 240
        )
        if instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE:  # the worker died with the server
            (failure,) = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
            assert "code server" in failure.message, failure.message

        # The next month still trains, and nothing stays in progress.
        deployment.wait_for(
            lambda: materialized(instance, "trip_duration_predictions", "2023-04"),
            "training 2023-04 after the restarts",
            240,
        )
        deployment.wait_for(
            lambda: not [r for r in instance.get_runs() if run_status(r) in IN_PROGRESS], "every run finished", 60
        )
        after = snapshot(deployment, instance)
        assert_training_runs_never_overlapped(instance)
        for month in ("2023-02", "2023-03", "2023-04"):
            assert materialized(instance, "trained_model", month)

    for key, path in before["materializations"].items():
        assert key in after["materializations"], f"materialization {key} lost"
        assert path is None or Path(path).exists(), f"file of {key} lost: {path}"
    for version, record in before["versions"].items():
        assert after["versions"].get(version, {}).get("run_id") == record["run_id"], f"model version {version} lost"
    for study, complete in before["trials"].items():
        assert after["trials"].get(study, 0) >= complete, f"finished trials of {study} lost"
    assert all(record["status"] == "READY" for record in after["versions"].values())


def test_mlflow_server_down_mid_step_is_waited_out(deployment):
    """The tracking server stops while trained_model trains: the step fails naming it and is retried
    after a delay (ml_assets.outages) until the server is back; the run then succeeds, with one
    registered version, and nobody re-executed anything."""
    from dagster import DagsterEventType, DagsterRunStatus

    month = "2023-02"
    with deployment.instance() as instance:
        deployment.wait_for(lambda: materialized(instance, "best_params", month), f"best_params {month}", 240)
        versions_before = registered_versions(deployment.tracking_uri)
        # Launched from the webserver as a user would, with enough boosting rounds (no early stopping)
        # to stop MLflow mid-step: its first call comes after training.
        rounds = 300
        run_id = launch(
            deployment,
            month,
            ["trained_model"],
            {"ops": {"trained_model": {"config": {"num_boost_round": rounds, "early_stopping_rounds": rounds}}}},
        )

        def events(event_type) -> list:
            logged = instance.all_logs(run_id, of_type=event_type)
            return [event for event in logged if event.step_key == "trained_model"]

        deployment.wait_for(lambda: events(DagsterEventType.STEP_START), "trained_model started", 240, poll=0.1)
        deployment.services["mlflow"].kill()
        (retry,) = deployment.wait_for(
            lambda: events(DagsterEventType.STEP_UP_FOR_RETRY), "trained_model up for retry", 120, poll=0.5
        )
        assert not instance.get_run_by_id(run_id).is_finished, (
            f"trained_model finished before the MLflow server was down: raise `rounds` ({rounds})"
        )
        error = retry.dagster_event.event_specific_data.error.to_string()
        assert deployment.tracking_uri in error, error
        assert not deployment.mlflow_ok()  # the step waits while the server is really down

        deployment.restart("mlflow")
        deployment.wait_for(lambda: instance.get_run_by_id(run_id).is_finished, "the run to end", 300, poll=0.5)
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.SUCCESS
        assert not events(DagsterEventType.STEP_FAILURE)
        model = metadata(instance, "trained_model", month)
        assert_training_runs_never_overlapped(instance)

    versions = registered_versions(deployment.tracking_uri)
    (new,) = set(versions) - set(versions_before)  # one version, registered by the retried step's model_gate
    assert versions[new]["run_id"] == model["mlflow_run_id"]
    assert len(versions[new]["aliases"]) == 1
    run = mlflow_get(deployment, "runs/get", run_id=model["mlflow_run_id"])["run"]
    assert run["info"]["status"] == "FINISHED"


def test_postgres_restarted_while_best_params_tunes_and_the_month_finishes(deployment):
    """`pg_ctl stop -m fast`, then start 3 s later, while best_params tunes: optuna lost its connection
    (StorageInternalError, then its own UnboundLocalError), the run failed with no retry and the trial
    stayed RUNNING. Now the step is retried once the database answers (ml_assets/outages.py), the trial
    the restart cut off is FAILED, and the month is done without an operator: by the run, or, where
    PgBouncer also refused Dagster's own event writes (it does while logging in to the server fails),
    by its run retry."""
    import optuna
    from dagster import DagsterEventType, DagsterRunStatus

    month = "2023-02"
    with deployment.instance() as instance:
        deployment.wait_for(lambda: materialized(instance, "best_params", month), f"best_params {month}", 300)
        deployment.wait_for(
            lambda: not [r for r in instance.get_runs() if run_status(r) in IN_PROGRESS], "other runs to end", 300
        )
        before = snapshot(deployment, instance)
        # Tuning until its budget is spent, each attempt: long enough to be cut off after its second trial.
        tuning = {"ops": {"best_params": {"config": {"n_trials": 1000, "timeout_seconds": 20}}}}
        run_id = launch(deployment, month, ["best_params"], tuning)

        def trials_logged() -> int:
            return sum("trial " in (entry.user_message or "") for entry in instance.all_logs(run_id))

        deployment.wait_for(lambda: trials_logged() >= 2, "best_params tuning", 240, poll=0.2)
        deployment.postgres.stop("fast")
        time.sleep(3)
        deployment.postgres.start()
        deployment.wait_for(lambda: succeeded_or_retried(instance, run_id), "the run, or its retry, to succeed", 300)
        retried = instance.all_logs(run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
        run_failed = instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
        assert [entry.step_key for entry in retried] == ["best_params"] or run_failed, "the restart missed the run"
        study = metadata(instance, "best_params", month)["study"]
        after = snapshot(deployment, instance)

    trials = optuna.load_study(study_name=study, storage=deployment.postgres.url("optuna")).get_trials(deepcopy=False)
    assert [trial.number for trial in trials if trial.state == optuna.trial.TrialState.RUNNING] == []
    for key in before["materializations"]:
        assert key in after["materializations"], f"materialization {key} lost"
    assert before["versions"] == after["versions"]
    for name, complete in before["trials"].items():
        assert after["trials"].get(name, 0) >= complete, f"finished trials of {name} lost"
