"""Where steps execute: in the run's own process (the default), on Celery workers by queue, or as
Kubernetes Jobs (ML_ASSETS_EXECUTOR; docs/deployment.md).

With Celery the run's process only orchestrates: each step is a task on the queue of its asset's
group (`keys.QUEUES`), set here as the op tag dagster-celery reads, so a machine can be given to
training alone. Workers take the same broker and backend from deploy/celery.yaml.
"""

from __future__ import annotations

from dagster import ExecutorDefinition, in_process_executor

from ml_assets import settings
from ml_assets.keys import QUEUES

# dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG, written out so that the code location loads without dagster-celery.
CELERY_QUEUE_TAG = "dagster-celery/queue"


def step_tags(group: str) -> dict[str, str]:
    """Op tags of a step (an asset's or a check's) of `group`: its Celery queue."""
    return {CELERY_QUEUE_TAG: QUEUES[group]}


def group_and_queue(group: str) -> dict:
    """`@asset` arguments: the asset's group and its step's Celery queue."""
    return {"group_name": group, "op_tags": step_tags(group)}


def run_executor() -> ExecutorDefinition:
    """The executor of every job, by ML_ASSETS_EXECUTOR."""
    executor = settings.EXECUTOR.value()
    if executor == "in_process":
        # One process per run: XGBoost already uses every core, and a subprocess per step would
        # re-import Dagster, MLflow and XGBoost for each of them.
        return in_process_executor
    if executor == "k8s":
        # A Kubernetes Job per step, started from the run's pod: the image, environment, volumes and
        # resources of K8sRunLauncher's run pods (deploy/helm/values.yaml) carry over to the step pods.
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as error:
            raise ImportError("ML_ASSETS_EXECUTOR=k8s needs dagster-k8s: pip install 'ml_assets[k8s]'") from error
        return k8s_job_executor
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {
            "broker": settings.CELERY_BROKER_URL.resource_value(old_style=True),
            "backend": settings.CELERY_BACKEND_URL.resource_value(old_style=True),
        },
        name="celery",
    )
