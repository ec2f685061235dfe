"""Shared fixtures: an isolated DAGSTER_HOME per test, the project's resources, fast tuning config."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from http_server import TLC_DATA, tlc_server  # noqa: E402,F401  (fixture for every test module)

# Small budgets: tests check behaviour, benchmarks check model quality and speed.
FAST_CONFIG = {
    "ops": {
        "best_params": {"config": {"n_trials": 3, "timeout_seconds": 20}},
        "trained_model": {"config": {"num_boost_round": 300, "early_stopping_rounds": 20}},
    }
}


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    """A fresh DAGSTER_HOME with the project's dagster.yaml; every project path derives from it."""
    return use_new_home(tmp_path / "dagster_home", monkeypatch)


def use_new_home(home: Path, monkeypatch) -> Path:
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("ML_ASSETS_SOURCE", "ML_ASSETS_TLC_URL", "ML_ASSETS_STORAGE_ROOT", "ML_ASSETS_CACHE_DIR",
                 "ML_ASSETS_OPTUNA_STORAGE", "MLFLOW_TRACKING_URI", "ML_ASSETS_SYNTHETIC_PUBLISHED_THROUGH"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def instance(dagster_home):
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        yield instance


def materialize_month(instance, month: str, selection=None, raise_on_error: bool = True):
    """The runner's one-month run, with FAST_CONFIG for the selected ops."""
    from ml_assets.runner import materialize_month as run_month

    config = {"ops": {op: cfg for op, cfg in FAST_CONFIG["ops"].items() if selection is None or op in selection}}
    return run_month(instance, month, selection, config, raise_on_error)


def latest_metadata(instance, asset: str, month: str) -> dict:
    """Metadata of the newest materialization of `asset` for `month`."""
    from ml_assets.materializations import latest_metadata as recorded

    metadata = recorded(instance, asset, month)
    assert metadata is not None, f"{asset} has no materialization for {month}"
    return metadata
