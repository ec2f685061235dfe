"""Resources: where trips come from, where optuna keeps its studies, where MLflow tracks runs."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext, Noneable, StringSource, resource
from dagster import Field as ConfigField
from pydantic import Field

from ml_assets import settings
from ml_assets.core.months import shift_month
from ml_assets.core.sources import TripFileSource
from ml_assets.io_managers import JsonIOManager, ParquetIOManager, XGBoostModelIOManager
from ml_assets.partitions import START_MONTH


class TripSourceResource(ConfigurableResource):
    """The source of monthly trip files: generated (`synthetic`), TLC over HTTP (`tlc`), or a folder."""

    kind: str = Field(default="synthetic", description="synthetic | tlc | directory")
    directory: str | None = Field(default=None, description="the folder of TLC-named files (kind directory)")
    taxi: str = Field(default="green", description="TLC taxi type: green or yellow")
    tlc_url: str = Field(default=settings.TLC_URL.default, description="TLC base URL")
    cache_dir: str = Field(description="where downloaded and generated month files are kept")
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
                cache_dir=str(Path(self.cache_dir) / "synthetic"),
                seed=self.synthetic_seed,
                rows=self.synthetic_rows,
                published_through=self.synthetic_published_through,
                taxi=self.taxi,
            )
        if self.kind == "tlc":
            from ml_assets.core.sources.tlc import TlcSource

            return TlcSource(cache_dir=str(Path(self.cache_dir) / "tlc"), base_url=self.tlc_url, taxi=self.taxi)
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


def _old_style(setting: settings.Setting, default: str):
    """`resource_value` for old-style (`StringSource`) config such as dagster-mlflow's."""
    return {"env": setting.variable} if setting.raw() is not None else default


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
                "experiment_name": _old_style(settings.MLFLOW_EXPERIMENT, settings.MLFLOW_EXPERIMENT.default),
                "mlflow_tracking_uri": _old_style(settings.MLFLOW_TRACKING_URI, f"sqlite:///{state / 'mlflow.db'}"),
            }
        ),
        "io_manager": ParquetIOManager(root=storage_root),
        "json_io_manager": JsonIOManager(root=storage_root),
        "model_io_manager": XGBoostModelIOManager(root=storage_root),
    }
