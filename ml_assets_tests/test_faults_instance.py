"""Faults of the instance under $DAGSTER_HOME that `make run` meets: runners started together on a
fresh home, a full disk. Each is made real: runner processes started at once, a small tmpfs filled up.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from ml_assets.core import tracking
from ml_assets.records import latest_materialization
from ml_assets_tests.support import ROOT, use_new_home

MONTH = "2021-02"


def start_runners(count: int, *argv: str) -> list[subprocess.Popen]:
    """`count` runners (`make run`) started together in this environment."""
    command = [sys.executable, "-m", "ml_assets.runner", *argv]
    return [
        subprocess.Popen(command, cwd=ROOT, env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]


def small_runs(monkeypatch) -> None:
    """Small synthetic months and a short study: the runner takes no run config."""
    for name, value in {
        "ML_ASSETS_SYNTHETIC_ROWS": "5000",
        "ML_ASSETS_TUNING_TRIALS": "3",
        "ML_ASSETS_TUNING_TIMEOUT_SECONDS": "20",
    }.items():
        monkeypatch.setenv(name, value)


def assert_champion_was_recorded(instance) -> None:
    """The champion's MLflow run is the newest trained_model materialization of its month."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{os.environ['DAGSTER_HOME']}/ml_assets/mlflow.db")
    champion = tracking.champion_version()
    _, model = latest_materialization(instance, "trained_model", champion.tags[tracking.PARTITION_TAG])
    assert champion.run_id == model["mlflow_run_id"]


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
    use_new_home(tmp_path / "dagster_home", monkeypatch)
    small_runs(monkeypatch)
    both = start_runners(2, MONTH)
    outputs = [runner.communicate(timeout=600) for runner in both]
    assert [runner.returncode for runner in both] == [0, 0], "\n".join(err[-3000:] for _, err in outputs)
    with DagsterInstance.get() as instance:
        assert {run.status for run in instance.get_runs()} == {DagsterRunStatus.SUCCESS}
        assert len(instance.fetch_materializations(AssetKey("trained_model"), limit=10).records) == 2
        assert_champion_was_recorded(instance)
