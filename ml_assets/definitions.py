"""The code location: every asset, resource and automation of ml_assets."""
from __future__ import annotations

from dagster import Definitions, load_assets_from_modules

from ml_assets.assets import features, ingestion, training
from ml_assets.io_managers import JsonIOManager, ParquetIOManager, XGBoostModelIOManager
from ml_assets.resources import OptunaStorage, TripSource, mlflow_resource
from ml_assets.settings import state_dir, env_or

storage_root = env_or("ML_ASSETS_STORAGE_ROOT", str(state_dir() / "assets"))

defs = Definitions(
    assets=load_assets_from_modules([ingestion, features, training]),
    resources={
        "trip_source": TripSource(
            source=env_or("ML_ASSETS_SOURCE", "synthetic"),
            taxi=env_or("ML_ASSETS_TAXI", "green"),
            tlc_url=env_or("ML_ASSETS_TLC_URL", "https://d37ci6vzurychx.cloudfront.net/trip-data"),
            cache_dir=env_or("ML_ASSETS_CACHE_DIR", str(state_dir() / "downloads")),
            synthetic_published_through=env_or("ML_ASSETS_SYNTHETIC_PUBLISHED_THROUGH", None),
        ),
        "optuna_storage": OptunaStorage(url=env_or("ML_ASSETS_OPTUNA_STORAGE", f"sqlite:///{state_dir() / 'optuna.db'}")),
        "mlflow": mlflow_resource(),
        "io_manager": ParquetIOManager(root=storage_root),
        "json_io_manager": JsonIOManager(root=storage_root),
        "model_io_manager": XGBoostModelIOManager(root=storage_root),
    },
)
