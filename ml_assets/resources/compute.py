"""`compute`: the cores a training step may use, shared by the training steps that run at once on a machine."""

from dagster import ConfigurableResource
from pydantic import Field

from ml_assets.core.model import usable_cores


class ComputeResource(ConfigurableResource):
    parallel_training_steps: int = Field(default=1, description="training steps that run at once on one machine")

    def threads(self) -> int:
        """XGBoost threads: the process's usable cores (affinity, container quota) divided among the steps."""
        return max(1, usable_cores() // self.parallel_training_steps)
