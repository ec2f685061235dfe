"""The code location: every asset, resource and automation of ml_assets."""
from dagster import Definitions, in_process_executor, load_assets_from_modules

from ml_assets.assets import features, ingestion, predictions, training
from ml_assets.checks import all_checks
from ml_assets.core.months import shift_month
from ml_assets.io_managers import JsonIOManager, ParquetIOManager, XGBoostModelIOManager
from ml_assets.partitions import START_MONTH
from ml_assets.resources import DEFAULT_TLC_URL, OptunaStorage, TripSource, mlflow_resource
from ml_assets.schedules import monthly_retrain_schedule, retrain_month_job
from ml_assets.sensors import ingest_month_job, new_month_sensor, training_automation_sensor
from ml_assets.settings import env_or, state_dir


def build_resources() -> dict:
    """Resources configured from the environment (see the README's table of variables)."""
    state = state_dir()
    storage_root = env_or("ML_ASSETS_STORAGE_ROOT", str(state / "assets"))
    return {
        "trip_source": TripSource(
            source=env_or("ML_ASSETS_SOURCE", "synthetic"),
            taxi=env_or("ML_ASSETS_TAXI", "green"),
            tlc_url=env_or("ML_ASSETS_TLC_URL", DEFAULT_TLC_URL),
            cache_dir=env_or("ML_ASSETS_CACHE_DIR", str(state / "downloads")),
            synthetic_rows=env_or("ML_ASSETS_SYNTHETIC_ROWS", 60_000),
            # A fresh `dagster dev` shows a small live demo rather than years of runs.
            synthetic_published_through=env_or("ML_ASSETS_SYNTHETIC_PUBLISHED_THROUGH", shift_month(START_MONTH, 5)),
        ),
        "optuna_storage": OptunaStorage(url=env_or("ML_ASSETS_OPTUNA_STORAGE", f"sqlite:///{state / 'optuna.db'}")),
        "mlflow": mlflow_resource(),
        "io_manager": ParquetIOManager(root=storage_root),
        "json_io_manager": JsonIOManager(root=storage_root),
        "model_io_manager": XGBoostModelIOManager(root=storage_root),
    }


all_assets = load_assets_from_modules([ingestion, features, training, predictions])

defs = Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    # One process per run: XGBoost already uses every core, and a subprocess per step would
    # re-import Dagster, MLflow and XGBoost for each of them.
    executor=in_process_executor,
    resources=build_resources(),
    jobs=[ingest_month_job, retrain_month_job],
    sensors=[new_month_sensor, training_automation_sensor],
    schedules=[monthly_retrain_schedule],
)
