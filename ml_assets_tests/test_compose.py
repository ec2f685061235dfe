"""docker-compose.yml on a real Docker engine, as a new user starts it (`scripts/start.sh -d`).

The upstream images are used where Docker has them or can pull them; where no registry answers,
stand-ins with the same names are built from Debian packages (ml_assets_tests/standins). The
project's own image is built by start.sh from the Dockerfile. Months are real TLC files, every
SAMPLE_EVERY-th trip, dropped into a folder that a docker-compose.override.yml mounts into the
code server and the workers (as the README says to). In order, on one stack:

1. start.sh makes a fresh .env and every service becomes healthy;
2. a month launched from the webserver (GraphQL, as the UI's launchpad) is ingested and trained on
   the Celery worker, through a crash of the code server's container in the middle of training (run
   monitoring fails the run, the run retry finishes it); its model is `champion` in the MLflow
   server on its published port, and trained_model's `mlflow_run` link opens that run;
3. `down`, then `start.sh -d --scale worker=2`, keeps runs, assets and models;
4. Redis stopped while the sensor's runs start: they wait, and once Redis is back the months are
   ingested and trained by automation, without an operator, with steps on both workers;
5. no container ever logged the PostgreSQL password.

At the end the project's containers, networks and volumes are removed, whatever happened. Skipped
only where Docker is absent (no docker command, no engine answering, no Compose); in CI (CI set),
where .ci/run starts an engine, that is a failure. Run alone with `pytest -m compose` (`make test-compose`).
"""

from __future__ import annotations

import os
import time

import pytest

from ml_assets.checks.champion_decay import champion_decay
from ml_assets.deploy.local.ui_actions import TRAINING_TAG, backfill, launch, stop_sensors
from ml_assets.deploy.scram import ITERATIONS, ROLE_SECRET
from ml_assets_tests.compose import Stack, default_services, docker_missing, settled, upstream_images
from ml_assets_tests.deployment_support import TEST_SETTINGS
from ml_assets_tests.standins import LABEL, ensure_images, image_labels
from ml_assets_tests.support import ASSETS, GREEN_MODEL, drop_month, wait_until

pytestmark = [pytest.mark.compose, pytest.mark.timeout(2400)]

MONTHS = ["2023-01", "2023-02", "2023-03", "2023-04"]
SAMPLE_EVERY = 20
# The code's test-sized settings (the rest is .env's, as start.sh made it).
SETTINGS = {**TEST_SETTINGS, "ML_ASSETS_SOURCE": "/data/incoming", "MLFLOW_WORKERS": "1"}
# The README's way to give the code server and the workers a folder of files.
OVERRIDE = """services:
  code_server:
    volumes:
      - ./incoming:/data/incoming:ro
  worker:
    volumes:
      - ./incoming:/data/incoming:ro
"""
# What scripts/start.sh generates into .env; none may appear in any container's logs.
GENERATED_SECRETS = (
    "POSTGRES_PASSWORD",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
CELERY_WORKER_KEY = "Celery worker"  # what dagster-celery's task records in its engine event


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if missing := docker_missing():
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: .ci/run installs and starts Docker")
        pytest.skip(missing)
    started = time.monotonic()
    images = ensure_images(upstream_images())
    print(f"\nimages: {images} ({time.monotonic() - started:.0f} s)")
    work = tmp_path_factory.mktemp("compose") / "project"
    stack = Stack.copy_of_project(work, SETTINGS)
    (work / "docker-compose.override.yml").write_text(OVERRIDE)
    stack.incoming.mkdir()
    try:
        print(f"start.sh -d to every service healthy: {stack.start():.0f} s")
        yield stack
    finally:
        left = stack.remove()
        assert left == {"container": [], "network": [], "volume": []}, f"left of {stack.project}: {left}"


def steps_on_workers(stack: Stack, run_id: str) -> dict[str, set[str]]:
    """Step key -> hostnames of the Celery workers that executed it, from the run's engine events."""
    workers: dict[str, set[str]] = {}
    for event in stack.events(run_id):
        if CELERY_WORKER_KEY in event["metadata"]:
            workers.setdefault(event["stepKey"], set()).add(event["metadata"][CELERY_WORKER_KEY].split("@")[1])
    return workers


def wait_finished(stack: Stack, run_id: str, seconds: float) -> dict:
    def finished() -> dict | None:
        run = stack.run(run_id)
        return run if run["status"] in FINISHED else None

    return wait_until(finished, f"run {run_id} to end", seconds, poll=2)


def registered(stack: Stack) -> dict[str, str]:
    """Registered version -> the MLflow run it came from, from the MLflow server."""
    found = stack.mlflow("model-versions/search", filter=f"name='{GREEN_MODEL}'")
    return {version["version"]: version["run_id"] for version in found.get("model_versions", [])}


def snapshot(stack: Stack) -> dict:
    """What must survive recreating the containers: runs, materializations, registered models."""
    return {
        "runs": {run["runId"]: run["status"] for run in stack.runs()},
        "materialized": {
            (asset, month): (stack.materialization(asset, month) or {}).get("run_id")
            for asset in ASSETS
            for month in MONTHS
        },
        "models": registered(stack),
        "champion": stack.mlflow("registered-models/alias", name=GREEN_MODEL, alias="champion")["model_version"],
    }


def test_start_sh_makes_a_fresh_env_and_every_service_becomes_healthy(stack):
    assert "created .env from .env.example, with a generated POSTGRES_PASSWORD" in stack.start_output
    assert f"http://127.0.0.1:{stack.ports['webserver']}" in stack.start_output
    assert len(stack.dotenv("POSTGRES_PASSWORD")) == 32
    assert oct((stack.workdir / ".env").stat().st_mode & 0o777) == oct(0o600)
    containers = stack.containers()
    assert {c["service"] for c in containers} == set(default_services())
    assert all(settled(c) for c in containers), containers
    (one_shot,) = [c["service"] for c in containers if c["health"] == "none"]
    assert one_shot == "pgbouncer_auth"
    # PgBouncer checks logins against the role's own secret, at the cheaper iterations (pgbouncer_auth.py).
    user = stack.dotenv("POSTGRES_USER")
    query = ROLE_SECRET.format(role=f"'{user}'")
    secret = stack.compose("exec", "-T", "postgres", "psql", "-U", user, "-d", "postgres", "-At", "-c", query)
    assert secret.stdout.startswith(f"SCRAM-SHA-256${ITERATIONS}:"), secret.stdout
    auth_file = stack.compose("exec", "-T", "pgbouncer", "cat", "/etc/pgbouncer/auth/userlist.txt").stdout
    assert auth_file == f'"{user}" "{secret.stdout.strip()}"\n'
    # An image standing in for an upstream one says so.
    for image in upstream_images():
        labels = image_labels(image)
        assert labels is not None and (LABEL not in labels or labels[LABEL] in image), (image, labels)


def test_a_month_launched_from_the_webserver_trains_on_the_worker_through_a_code_server_crash(stack):
    stop_sensors(stack)  # this month is launched by hand; the sensors come back in the outage test
    for month in MONTHS[:2]:
        drop_month(stack.incoming, month, SAMPLE_EVERY)
    started = time.monotonic()
    (ingestion,) = stack.runs({"dagster/backfill": backfill(stack, "ingest_month", MONTHS[:1])})
    assert wait_finished(stack, ingestion["runId"], 300)["status"] == "SUCCESS"
    month = MONTHS[1]
    run_id = launch(stack, month, ASSETS)

    def tuning() -> bool:
        return any(
            e["__typename"] == "ExecutionStepStartEvent" and e["stepKey"] == "best_params" for e in stack.events(run_id)
        )

    wait_until(tuning, "best_params started", 300, poll=0.5)
    crashed = stack.crash("code_server")
    assert stack.run(run_id)["status"] == "STARTED"

    # Docker restarts the code server; run monitoring finds the run's process gone and fails it; the
    # run retry re-executes it from the failure.
    def retried() -> dict | None:
        (retry,) = stack.runs({"dagster/parent_run_id": run_id}) or [None]
        return retry if retry and retry["status"] in FINISHED else None

    def what_happened() -> str:  # once failed here beside the other tests, with nothing to tell why
        retries = [(run["runId"], run["status"]) for run in stack.runs({"dagster/parent_run_id": run_id})]
        return f"retries: {retries}\n{stack.logs('daemon', 'code_server', 'worker', 'mlflow')[-12000:]}"

    retry = wait_until(retried, "the run's retry to end", 600, poll=3, log=what_happened)
    print(f"month launched to trained, through the crash: {time.monotonic() - started:.0f} s")
    assert retry["status"] == "SUCCESS"
    assert stack.run(run_id)["status"] == "FAILURE"
    failure = [e["message"] for e in stack.events(run_id) if e["__typename"] == "RunFailureEvent"]
    assert any("code server" in message for message in failure), failure
    (code_server,) = stack.containers("code_server")
    assert code_server["restarts"] == crashed["restarts"] + 1 and code_server["health"] == "healthy"

    # Every step executed on the worker, never in the run's process.
    (worker,) = stack.containers("worker")
    for run in (run_id, retry["runId"]):
        started_steps = {e["stepKey"] for e in stack.events(run) if e["__typename"] == "ExecutionStepStartEvent"}
        on_workers = steps_on_workers(stack, run)
        assert started_steps and set(on_workers) >= started_steps, (run, on_workers, started_steps)
        assert set().union(*on_workers.values()) == {worker["hostname"]}

    # The month's model is champion in the MLflow server, and trained_model's link opens its run there.
    model = stack.materialization("trained_model", month)
    assert model["run_id"] in (run_id, retry["runId"])
    mlflow_run_id = model["metadata"]["mlflow_run_id"]
    champion = stack.mlflow("registered-models/alias", name=GREEN_MODEL, alias="champion")["model_version"]
    assert (champion["version"], champion["run_id"]) == ("1", mlflow_run_id)
    link = model["metadata"]["mlflow_run"]
    assert link.startswith(f"{stack.mlflow_url}/#/experiments/") and link.endswith(f"/runs/{mlflow_run_id}"), link
    with stack.mlflow_get(link.removeprefix(stack.mlflow_url)) as page:
        assert page.status == 200 and b"<html" in page.read().lower()
    run = stack.mlflow("runs/get", run_id=link.rsplit("/", 1)[1])["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {tag["key"]: tag["value"] for tag in run["data"]["tags"]}["partition"] == month
    assert stack.materialization("trip_duration_predictions", month) is not None


def test_down_then_up_keeps_runs_assets_and_models(stack):
    before = snapshot(stack)
    stack.saved_logs.append(stack.logs())  # the containers' own logs go with them
    stack.compose("down")
    assert stack.containers() == []
    stack.start("--scale", "worker=2")
    assert len(stack.containers("worker")) == 2
    assert snapshot(stack) == before


def test_redis_down_while_the_sensors_runs_start_is_waited_out_on_both_workers(stack):
    months = MONTHS[2:]
    earlier = {run["runId"] for run in stack.runs()}
    stack.compose("stop", "redis")
    stack.start_sensors()
    for month in months:
        drop_month(stack.incoming, month, SAMPLE_EVERY)

    def ingestion_runs() -> list[dict]:
        return [run for run in stack.runs({"dagster/sensor_name": "new_month_sensor"}) if run["runId"] not in earlier]

    def waiting() -> list[dict]:  # the queue starts two runs at a time: the rest wait for a slot
        runs = ingestion_runs()
        return runs if len(runs) == len(months) and "STARTED" in {run["status"] for run in runs} else []

    wait_until(
        waiting,
        "the sensor's runs requested, one started",
        180,
        poll=2,
        log=lambda: f"{[(run['status'], run['tags']) for run in ingestion_runs()]}\n{stack.logs('daemon')[-8000:]}",
    )
    time.sleep(20)  # long past Celery's own retries: the started runs wait for the broker, none fails
    pending = [run for run in stack.runs() if run["runId"] not in earlier]
    assert {run["status"] for run in pending} <= {"QUEUED", "STARTING", "STARTED"}, pending
    assert all(stack.materialization("raw_trips", month) is None for month in months)

    stack.compose("start", "redis")
    back = time.monotonic()
    for month in months:
        wait_until(
            lambda month=month: stack.materialization("trip_duration_predictions", month),
            f"{month} ingested and trained by automation",
            900,
            poll=5,
        )
    print(f"Redis back to {months} trained: {time.monotonic() - back:.0f} s")
    new = [run for run in stack.runs() if run["runId"] not in earlier]
    assert all(wait_finished(stack, run["runId"], 120)["status"] == "SUCCESS" for run in new), new
    assert not [run for run in new if any(tag["key"] == "dagster/parent_run_id" for tag in run["tags"])]
    # Automation trained each month once, in a run of its own (it also scores each month in model_performance).
    training = {"key": TRAINING_TAG[0], "value": TRAINING_TAG[1]}
    trained_by = {stack.materialization("trained_model", month)["run_id"] for month in months}
    scoring = [run for run in new if training in run["tags"] and run["runId"] not in trained_by]
    scored = {"model_performance", champion_decay.node_def.name}  # the asset and its check's own op
    assert all(set(steps_on_workers(stack, run["runId"])) == scored for run in scoring), scoring
    assert len(trained_by) == len(months)
    assert all(training in run["tags"] for run in new if run["runId"] in trained_by)
    # Steps went to both workers.
    workers = {c["hostname"] for c in stack.containers("worker")}
    used = set().union(*(hosts for run in new for hosts in steps_on_workers(stack, run["runId"]).values()))
    assert used == workers, (used, workers)


def test_no_container_logs_a_generated_secret(stack):
    secrets = [stack.dotenv(name) for name in GENERATED_SECRETS]
    assert all(len(secret) >= 16 for secret in secrets)
    for logs in [*stack.saved_logs, stack.logs()]:
        assert "ml-assets-service" in logs or "dagster" in logs.lower()
        assert not [name for name, secret in zip(GENERATED_SECRETS, secrets, strict=True) if secret in logs]
