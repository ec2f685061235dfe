"""Resources: where trips come from, where optuna keeps its studies, where MLflow tracks runs."""
from __future__ import annotations

from typing import Optional

from dagster import ConfigurableResource, Field as ConfigField, InitResourceContext, Noneable, StringSource, resource
from pydantic import Field

from ml_assets.core.sources.tlc import DEFAULT_TLC_URL
from ml_assets.settings import env_source, state_dir


class TripSource(ConfigurableResource):
    """Chooses the source of monthly trip files: `synthetic`, `tlc`, or a directory path."""

    source: str = Field(default="synthetic", description="synthetic | tlc | path of a directory of TLC files")
    taxi: str = Field(default="green", description="TLC taxi type: green or yellow")
    tlc_url: str = Field(default=DEFAULT_TLC_URL, description="TLC base URL")
    cache_dir: str = Field(description="where downloaded and generated month files are kept")
    synthetic_seed: int = 0
    synthetic_rows: int = 60_000
    synthetic_published_through: Optional[str] = Field(
        default=None, description="synthetic months after this YYYY-MM count as not yet published"
    )

    def client(self):
        """The Dagster-free source object behind this resource."""
        from pathlib import Path

        if self.source == "synthetic":
            from ml_assets.core.sources.synthetic import SyntheticSource

            return SyntheticSource(cache_dir=str(Path(self.cache_dir) / "synthetic"), seed=self.synthetic_seed,
                                   rows=self.synthetic_rows, published_through=self.synthetic_published_through,
                                   taxi=self.taxi)
        if self.source == "tlc":
            from ml_assets.core.sources.tlc import TlcSource

            return TlcSource(cache_dir=str(Path(self.cache_dir) / "tlc"), base_url=self.tlc_url, taxi=self.taxi)
        from ml_assets.core.sources.directory import DirectorySource

        return DirectorySource(path=self.source, taxi=self.taxi)

    @property
    def label(self) -> str:
        """What `source` metadata says: synthetic, the TLC URL, or the directory."""
        if self.source == "tlc":
            return f"tlc {self.tlc_url}"
        return self.source if self.source == "synthetic" else f"directory {self.source}"


class OptunaStorage(ConfigurableResource):
    """RDB storage for optuna studies, so re-materializing a month continues its study."""

    url: str = Field(description="optuna RDB storage URL, e.g. sqlite:///path/optuna.db")
    study_prefix: str = "trip_duration"

    def study_name(self, feature_set: str, month: str) -> str:
        return f"{self.study_prefix}-{feature_set}-{month}"


def default_tracking_uri() -> str:
    return f"sqlite:///{state_dir() / 'mlflow.db'}"


@resource(
    config_schema={
        "experiment_name": ConfigField(StringSource, description="MLflow experiment name"),
        "mlflow_tracking_uri": ConfigField(Noneable(StringSource), default_value=None, is_required=False),
    },
    description="dagster-mlflow's mlflow_tracking: one MLflow run per Dagster run",
)
def mlflow_tracking_resource(context: InitResourceContext):
    """dagster-mlflow's `mlflow_tracking`, imported when a run needs it, with two fixes for asset jobs.

    - Artifacts go beside a sqlite tracking store, not into `./mlruns` of whatever directory
      the run starts in.
    - `mlflow_tracking` starts an MLflow run as soon as it is initialized, which the in-process
      executor does for every step of a run. A run that never reaches `trained_model` leaves
      that MLflow run empty: it is deleted at teardown, so each MLflow run is one trained model.
    """
    import mlflow
    from dagster_mlflow import mlflow_tracking

    from ml_assets.core.tracking import discard_unused_run, ensure_experiment

    ensure_experiment(context.resource_config.get("mlflow_tracking_uri"), context.resource_config["experiment_name"])
    generator = mlflow_tracking.resource_fn(context)
    tracking = next(generator)
    run_id = mlflow.active_run().info.run_id
    try:
        yield tracking
    finally:
        discard_unused_run(tracking.tracking_uri, run_id)
        generator.close()


def mlflow_resource():
    return mlflow_tracking_resource.configured({
        "experiment_name": env_source("ML_ASSETS_MLFLOW_EXPERIMENT", "trip_duration"),
        "mlflow_tracking_uri": env_source("MLFLOW_TRACKING_URI", default_tracking_uri()),
    })
