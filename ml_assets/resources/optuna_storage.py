"""`optuna_storage`: the RDB storage of the optuna studies, so that re-materializing a month continues its study."""

from dagster import ConfigurableResource
from pydantic import Field


class OptunaStorage(ConfigurableResource):
    """RDB storage for optuna studies, so re-materializing a month continues its study."""

    url: str = Field(description="optuna RDB storage URL, e.g. sqlite:///path/optuna.db")
    study_prefix: str = "trip_duration"

    def study_name(self, feature_set: str, month: str) -> str:
        from ml_assets.core.tuning import study_name

        return study_name(feature_set, month, self.study_prefix)
