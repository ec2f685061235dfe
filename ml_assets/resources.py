"""Resources: where trips come from, where optuna keeps its studies, where MLflow tracks runs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from dagster import ConfigurableResource, Failure, InitResourceContext, Noneable, StringSource, resource
from dagster import Field as ConfigField
from pydantic import Field

from ml_assets import settings
from ml_assets.core import tracking
from ml_assets.core.locks import store_lock
from ml_assets.core.months import shift_month
from ml_assets.core.sources import TripFileSource
from ml_assets.core.storage import location
from ml_assets.io_managers import JsonIOManager, ParquetIOManager, XGBoostModelIOManager
from ml_assets.partitions import START_MONTH


class TripSourceResource(ConfigurableResource):
    """The source of monthly trip files: generated (`synthetic`), TLC over HTTP (`tlc`), or a folder."""

    kind: str = Field(default="synthetic", description="synthetic | tlc | directory")
    directory: str | None = Field(default=None, description="the folder of TLC-named files (kind directory)")
    taxi: str = Field(default="green", description="TLC taxi type: green or yellow")
    tlc_url: str = Field(default=settings.TLC_URL.default, description="TLC base URL")
    cache_dir: str = Field(
        description="folder or fsspec URL (s3://bucket/prefix) where downloaded and generated month files are kept"
    )
    synthetic_seed: int = 0
    synthetic_rows: int = 60_000
    synthetic_published_through: str | None = Field(
        default=None, description="synthetic months after this YYYY-MM count as not yet published"
    )

    def source(self) -> TripFileSource:
        """The Dagster-free source object this resource describes."""
        if self.kind == "synthetic":
            from ml_assets.core.sources.synthetic import SyntheticSource

            return SyntheticSource(
                cache_dir=str(location(self.cache_dir) / "synthetic"),
                seed=self.synthetic_seed,
                rows=self.synthetic_rows,
                published_through=self.synthetic_published_through,
                taxi=self.taxi,
            )
        if self.kind == "tlc":
            from ml_assets.core.sources.tlc import TlcSource

            return TlcSource(cache_dir=str(location(self.cache_dir) / "tlc"), base_url=self.tlc_url, taxi=self.taxi)
        from ml_assets.core.sources.directory import DirectorySource

        return DirectorySource(path=self.directory, taxi=self.taxi)

    @property
    def label(self) -> str:
        """What `source` metadata says: synthetic, the TLC URL, or the directory."""
        return {"synthetic": "synthetic", "tlc": f"tlc {self.tlc_url}"}.get(self.kind, f"directory {self.directory}")


class OptunaStorage(ConfigurableResource):
    """RDB storage for optuna studies, so re-materializing a month continues its study."""

    url: str = Field(description="optuna RDB storage URL, e.g. sqlite:///path/optuna.db")
    study_prefix: str = "trip_duration"

    def study_name(self, feature_set: str, month: str) -> str:
        return f"{self.study_prefix}-{feature_set}-{month}"


# Fail within seconds, not after MLflow's default 7 retries with backoff (about four minutes).
MLFLOW_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class MlflowTracking:
    """dagster-mlflow's `mlflow_tracking`, started by the step that trains rather than with the run.

    A run initializes its resources before its first step, so a tracking server that is down
    would otherwise fail ingestion steps that never talk to MLflow.
    """

    def __init__(self, context: InitResourceContext):
        self._context = context
        self.tracking_uri = context.resource_config.get("mlflow_tracking_uri")
        self.experiment_name = context.resource_config["experiment_name"]
        self.lock = store_lock(self.tracking_uri, settings.state_dir())

    def connect(self, what: str) -> None:
        """Point MLflow at the store (creating the experiment once); a clear Failure if it cannot be reached."""
        import mlflow

        for name, value in MLFLOW_CLIENT_ENV.items():
            os.environ.setdefault(name, value)
        try:
            mlflow.set_tracking_uri(self.tracking_uri)
            tracking.ensure_experiment(self.tracking_uri, self.experiment_name, self.lock)
        except Exception as error:  # MLflow raises its own, requests' and OS errors alike
            raise Failure(
                f"{what}: MLflow tracking at {self.tracking_uri} cannot be reached: {str(error).splitlines()[0][:300]}"
            ) from error

    @contextlib.contextmanager
    def run(self, what: str) -> Iterator[object]:
        """The Dagster run's MLflow run, active for the block; FINISHED after it, FAILED if it raises."""
        import mlflow
        from dagster_mlflow import mlflow_tracking

        self.connect(what)
        generator = mlflow_tracking.resource_fn(self._context)
        client = next(generator)
        try:
            yield client
        except BaseException:
            # Marking the run FAILED needs the server too: if it is gone, the first error is the one to see.
            with contextlib.suppress(Exception):
                mlflow.end_run("FAILED")
            raise
        mlflow.end_run()
        generator.close()


@resource(
    config_schema={
        "experiment_name": ConfigField(StringSource, description="MLflow experiment name"),
        "mlflow_tracking_uri": ConfigField(Noneable(StringSource), default_value=None, is_required=False),
    },
    description="dagster-mlflow's mlflow_tracking, started by the step that trains (one MLflow run per model)",
)
def mlflow_tracking_resource(context: InitResourceContext) -> MlflowTracking:
    return MlflowTracking(context)


def build_resources() -> dict:
    """Every resource, configured from the environment (see the README's table of variables)."""
    state = settings.state_dir()
    source = settings.SOURCE.value()
    kind = source if source in ("synthetic", "tlc") else "directory"
    storage_root = settings.STORAGE_ROOT.resource_value() or str(state / "assets")
    return {
        "trip_source": TripSourceResource(
            kind=kind,
            directory=settings.SOURCE.resource_value() if kind == "directory" else None,
            taxi=settings.TAXI.resource_value(),
            tlc_url=settings.TLC_URL.resource_value(),
            cache_dir=settings.CACHE_DIR.resource_value() or str(state / "downloads"),
            synthetic_rows=settings.SYNTHETIC_ROWS.resource_value(),
            # A fresh `dagster dev` shows a small live demo rather than years of runs.
            synthetic_published_through=(
                settings.SYNTHETIC_PUBLISHED_THROUGH.resource_value() or shift_month(START_MONTH, 5)
            ),
        ),
        "optuna_storage": OptunaStorage(
            url=settings.OPTUNA_STORAGE.resource_value() or f"sqlite:///{state / 'optuna.db'}"
        ),
        "mlflow": mlflow_tracking_resource.configured(
            {
                "experiment_name": settings.MLFLOW_EXPERIMENT.config_source(),
                "mlflow_tracking_uri": settings.MLFLOW_TRACKING_URI.config_source(f"sqlite:///{state / 'mlflow.db'}"),
            }
        ),
        "io_manager": ParquetIOManager(root=storage_root),
        "json_io_manager": JsonIOManager(root=storage_root),
        "model_io_manager": XGBoostModelIOManager(root=storage_root),
    }
