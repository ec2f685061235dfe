"""Every resource of the code location, configured from the environment (ml_assets.settings)."""

from __future__ import annotations

from ml_assets import settings
from ml_assets.core.months import shift_month
from ml_assets.partitions import START_MONTH
from ml_assets.resources.compute import ComputeResource
from ml_assets.resources.io_managers import JsonIOManager, ModelIOManager, ParquetIOManager
from ml_assets.resources.optuna_storage import OptunaStorage
from ml_assets.resources.tracking import mlflow_tracking_resource
from ml_assets.resources.trip_source import TripSourceResource


def build_resources() -> dict:
    """The resources by key; locations default to folders under $DAGSTER_HOME/ml_assets."""
    state = settings.state_dir()
    source = settings.SOURCE.value()
    kind = source if source in ("synthetic", "tlc") else "directory"
    storage_root = settings.STORAGE_ROOT.resource_value(str(state / "assets"))
    return {
        "trip_source": TripSourceResource(
            kind=kind,
            directory=settings.SOURCE.resource_value() if kind == "directory" else None,
            taxi=settings.TAXI.resource_value(),
            tlc_url=settings.TLC_URL.resource_value(),
            cache_dir=settings.CACHE_DIR.resource_value(str(state / "downloads")),
            synthetic_rows=settings.SYNTHETIC_ROWS.resource_value(),
            # A fresh `dagster dev` shows a small live demo rather than years of runs.
            synthetic_published_through=settings.SYNTHETIC_PUBLISHED_THROUGH.resource_value(
                shift_month(START_MONTH, 5)
            ),
        ),
        "optuna_storage": OptunaStorage(url=settings.OPTUNA_STORAGE.resource_value(f"sqlite:///{state / 'optuna.db'}")),
        "mlflow": mlflow_tracking_resource.configured(
            {
                "experiment_name": settings.MLFLOW_EXPERIMENT.resource_value(old_style=True),
                "taxi": settings.TAXI.resource_value(old_style=True),
                "mlflow_tracking_uri": settings.MLFLOW_TRACKING_URI.resource_value(
                    f"sqlite:///{state / 'mlflow.db'}", old_style=True
                ),
                "ui_url": settings.MLFLOW_UI_URL.resource_value(old_style=True),
                "http_request_max_retries": settings.MLFLOW_HTTP_REQUEST_MAX_RETRIES.resource_value(old_style=True),
                "http_request_timeout": settings.MLFLOW_HTTP_REQUEST_TIMEOUT.resource_value(old_style=True),
            }
        ),
        "compute": ComputeResource(parallel_training_steps=settings.PARALLEL_TRAINING_STEPS.resource_value()),
        "io_manager": ParquetIOManager(root=storage_root),
        "json_io_manager": JsonIOManager(root=storage_root),
        "model_io_manager": ModelIOManager(root=storage_root),
    }
