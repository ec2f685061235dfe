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
    home = tmp_path / "dagster_home"
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
    """Materialize `selection` (asset names; default all) and its asset checks for one month with the project's resources."""
    from dagster import materialize

    from ml_assets.checks import all_checks
    from ml_assets.definitions import all_assets, build_resources

    config = {"ops": {op: cfg for op, cfg in FAST_CONFIG["ops"].items() if selection is None or op in selection}}
    # The checks of every selected asset run too, as they do in the UI, the CLI and sensor runs.
    return materialize([*all_assets, *all_checks], partition_key=month, instance=instance, resources=build_resources(),
                       run_config=config, selection=selection, raise_on_error=raise_on_error)


def latest_metadata(instance, asset: str, month: str) -> dict:
    from dagster import AssetKey

    """Metadata of the newest materialization of `asset` for `month`."""
    for record in instance.fetch_materializations(AssetKey(asset), limit=100).records:
        materialization = record.asset_materialization
        if materialization.partition == month:
            return {key: value.value for key, value in materialization.metadata.items()}
    raise AssertionError(f"{asset} has no materialization for {month}")
