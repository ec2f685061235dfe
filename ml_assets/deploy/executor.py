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

# The op tag dagster-celery routes a step by (dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG), spelled
# out so that the code location loads without the deploy extra, which only ML_ASSETS_EXECUTOR=celery needs.
CELERY_QUEUE_TAG = "dagster-celery/queue"
# Redis (broker and result backend) unreachable: a run waits for it, trying again every few seconds,
# instead of failing: publishing a step, connecting, and reading results never give up (Celery's
# defaults give up within seconds). A waiting run is still bounded by run monitoring's max runtime
# (deploy/dagster.yaml). deploy/celery.yaml gives the workers the same, so a step that ends while
# Redis is down keeps its result.
_UNTIL_REDIS_ANSWERS = {"max_retries": None, "interval_start": 1, "interval_step": 2, "interval_max": 10}
WAIT_FOR_REDIS = {
    "broker_transport_options": {**_UNTIL_REDIS_ANSWERS, "connect_retries_timeout": None},
    "task_publish_retry_policy": _UNTIL_REDIS_ANSWERS,
    "result_backend_always_retry": True,
    "result_backend_transport_options": {"retry_policy": _UNTIL_REDIS_ANSWERS},
}


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
    try:
        from dagster_celery import celery_executor
    except ImportError as error:
        raise ImportError("ML_ASSETS_EXECUTOR=celery needs dagster-celery: pip install 'ml_assets[deploy]'") from error
    return celery_executor.configured(
        {
            "broker": settings.CELERY_BROKER_URL.resource_value(old_style=True),
            "backend": settings.CELERY_BACKEND_URL.resource_value(old_style=True),
            "config_source": WAIT_FOR_REDIS,
        },
        name="celery",
    )
