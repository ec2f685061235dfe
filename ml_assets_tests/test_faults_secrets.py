"""No credential is recorded or printed: a password in a URI went into the `mlflow_run` link, the event
log, compute logs and `make run`'s log file, and into the failure printed while MLflow was down.

Made real: an MLflow server behind MLflow's basic-auth app (`deploy/service.sh mlflow`, as compose runs
it), which the pipeline reaches as `http://alice:PASSWORD@127.0.0.1:PORT`, and optuna's studies in a
PostgreSQL server whose URL holds its password. The production topology's own check is in
test_deployment.py.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from ml_assets.core import tracking
from ml_assets.deploy.local.mlflow_server import MlflowUsers, mlflow_env
from ml_assets.deploy.local.postgres import throwaway_postgres
from ml_assets.deploy.local.service import SERVICE_SH
from ml_assets.records import latest_metadata
from ml_assets_tests import forked
from ml_assets_tests.deployment_support import require_servers
from ml_assets_tests.support import (
    ROUNDS,
    free_port,
    holding,
    stop_process_group,
    use_new_home,
    wait_until_answers,
)

pytestmark = pytest.mark.process
MONTH = "2021-02"


class AuthMlflow:
    """`service.sh mlflow` with the basic-auth app, on sqlite stores in `folder`; stopped and started at will."""

    def __init__(self, folder: Path, users: MlflowUsers):
        self.folder, self.port, self.process = folder, free_port(), None
        auth = users.server_env(f"sqlite:///{folder / 'auth.db'}", folder / "auth.ini")
        self.env = mlflow_env(self.port, f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts"), {}, auth)

    def start(self) -> None:
        with (self.folder / "mlflow.log").open("a") as log:
            self.process = subprocess.Popen(
                [str(SERVICE_SH), "mlflow"], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        url = f"http://127.0.0.1:{self.port}/health"
        wait_until_answers(url, lambda: self.process.poll() is None, self.folder / "mlflow.log")

    def stop(self) -> None:
        stop_process_group(self.process)


@pytest.fixture
def servers(tmp_path) -> Iterator[tuple[AuthMlflow, object, MlflowUsers]]:
    """The MLflow server (its pipeline user `alice`) and a PostgreSQL server with a database for optuna."""
    require_servers()
    users = MlflowUsers(pipeline_user="alice", pipeline_password=f"S3cretPW-{secrets.token_hex(8)}")
    (tmp_path / "mlflow").mkdir()
    mlflow = AuthMlflow(tmp_path / "mlflow", users)
    with throwaway_postgres() as postgres:
        postgres.psql("-c", "CREATE DATABASE optuna")
        mlflow.start()
        try:
            yield mlflow, postgres, users
        finally:
            with contextlib.suppress(ProcessLookupError):
                mlflow.stop()


def make_run(*args: str) -> subprocess.CompletedProcess:
    return forked.run(["-m", "ml_assets.runner", *args], timeout=900)


def test_no_password_of_a_uri_is_recorded_or_printed(servers, tmp_path, monkeypatch):
    mlflow, postgres, users = servers
    home = use_new_home(tmp_path / "dagster_home", monkeypatch)
    for name, value in {
        "ML_ASSETS_SYNTHETIC_ROWS": "5000",
        "ML_ASSETS_TUNING_TRIALS": "2",
        "ML_ASSETS_TUNING_TIMEOUT_SECONDS": "10",
        "MLFLOW_TRACKING_URI": f"http://alice:{users.pipeline_password}@127.0.0.1:{mlflow.port}",
        "ML_ASSETS_OPTUNA_STORAGE": postgres.url("optuna"),
        "ML_ASSETS_OUTAGE_SECONDS": "0",  # MLflow down: fail at once instead of waiting it out
    }.items():
        monkeypatch.setenv(name, value)
    passwords = [users.pipeline_password, postgres.password]

    first = make_run(MONTH)
    assert first.returncode == 0, first.stderr[-3000:]
    assert holding(passwords, home, printed=first.stdout + first.stderr) == []
    with DagsterInstance.get() as instance:
        model = latest_metadata(instance, "trained_model", MONTH)
    assert model["mlflow_run"].startswith(f"http://127.0.0.1:{mlflow.port}/#/experiments/")
    import mlflow as client

    run = client.MlflowClient().get_run(model["mlflow_run_id"])  # this process logs in as the runs did
    assert not [word for word in passwords if word in str(run.data.params) + str(run.data.tags)]
    # A run with no run config takes its rounds from the environment (ML_ASSETS_TRAINING_ROUNDS, conftest.py's).
    assert (
        run.data.params["num_boost_round"] == os.environ["ML_ASSETS_TRAINING_ROUNDS"] == str(ROUNDS["num_boost_round"])
    )
    versions = tracking.registered_versions()

    mlflow.stop()
    down = make_run(MONTH)
    assert down.returncode == 1
    assert f"MLflow tracking at http://alice:***@127.0.0.1:{mlflow.port} cannot be reached" in down.stderr, down.stderr
    assert holding(passwords, home, printed=down.stdout + down.stderr) == []

    mlflow.start()
    retry = make_run(MONTH)
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert holding(passwords, home, printed=retry.stdout + retry.stderr) == []
    assert {version.version for version in versions} < {version.version for version in tracking.registered_versions()}
