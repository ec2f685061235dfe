"""Where steps execute (ml_assets.deploy.executor), without servers: the executor each setting gives, the
Celery queue of every step, and how far the Kubernetes executor gets without a cluster.

Steps on real Celery workers are tested in test_celery.py; Kubernetes itself is not tested here.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from ml_assets_tests.support import BIN, ROOT, TLC_DATA


def test_every_step_goes_to_the_queue_of_its_group():
    from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

    from ml_assets.definitions import all_asset_checks, all_assets, defs
    from ml_assets.keys import QUEUES

    graph = defs.resolve_asset_graph()
    for definition in [*all_assets, *all_asset_checks]:
        keys = definition.keys or {check.asset_key for check in definition.check_keys}
        (group,) = {graph.get(key).group_name for key in keys}
        assert definition.node_def.tags[DAGSTER_CELERY_QUEUE_TAG] == QUEUES[group], definition.node_def.name
    # No step is left to dagster-celery's default queue, which no worker reads; only ingestion's steps go to
    # `ingest`, so a machine given the `train` queue does all of the training side.
    job = defs.resolve_implicit_global_asset_job_def()
    queues = {node.name: node.tags.get(DAGSTER_CELERY_QUEUE_TAG) for node in job.graph.node_defs}
    assert set(queues.values()) == {"ingest", "train"}
    assert {name for name, queue in queues.items() if queue == "ingest"} == {
        "ingest_trips",
        "cleaned_trips_drift_vs_previous_month",
    }


def test_executor_is_in_process_unless_celery_is_chosen_and_workers_read_the_same_redis(monkeypatch):
    from dagster_celery.cli import get_validated_config

    from ml_assets.deploy.executor import WAIT_FOR_REDIS, run_executor

    monkeypatch.delenv("ML_ASSETS_EXECUTOR", raising=False)
    assert run_executor().name == "in_process"

    monkeypatch.setenv("ML_ASSETS_EXECUTOR", "celery")
    monkeypatch.setenv("ML_ASSETS_CELERY_BROKER_URL", "redis://broker.example:6379/0")
    monkeypatch.setenv("ML_ASSETS_CELERY_BACKEND_URL", "redis://broker.example:6379/1")
    executor = run_executor()
    assert executor.name == "celery"
    runs = executor.config_schema.resolve_config({}).value["config"]
    workers = get_validated_config(str(ROOT / "deploy" / "celery.yaml"))
    assert (runs["broker"], runs["backend"]) == (workers["broker"], workers["backend"])
    assert runs["broker"] == "redis://broker.example:6379/0"
    assert workers["config_source"]["task_acks_late"] is True
    # Runs and workers alike wait for Redis while it is down (ml_assets.deploy.executor.WAIT_FOR_REDIS); only
    # runs publish tasks.
    assert runs["config_source"] == WAIT_FOR_REDIS
    waits = runs["config_source"]  # never giving up: Celery's defaults give up within seconds
    assert waits["result_backend_always_retry"] is True
    assert waits["broker_transport_options"]["connect_retries_timeout"] is None
    retried = ["broker_transport_options", "task_publish_retry_policy", "result_backend_transport_options"]
    policies = [waits[key].get("retry_policy", waits[key]) for key in retried]
    assert [policy["max_retries"] for policy in policies] == [None, None, None]
    for key, value in WAIT_FOR_REDIS.items():
        if key != "task_publish_retry_policy":
            given = workers["config_source"][key]
            assert ({name: given[name] for name in value} if isinstance(value, dict) else given) == value, key


@pytest.mark.process
def test_k8s_executor_is_chosen_and_a_run_gets_as_far_as_the_kubernetes_api(monkeypatch, dagster_home):
    """ML_ASSETS_EXECUTOR=k8s: dagster-k8s's k8s_job_executor. Outside a cluster a run gets past
    Dagster's checks of that executor (a reconstructable job, a persistent instance, every output
    stored where another pod reads it) and stops where it asks Kubernetes for its in-cluster API."""
    from ml_assets.deploy.executor import run_executor

    monkeypatch.setenv("ML_ASSETS_EXECUTOR", "k8s")
    assert run_executor().name == "k8s"

    outside = {name: value for name, value in os.environ.items() if not name.startswith("KUBERNETES_")}
    env = {**outside, "ML_ASSETS_SOURCE": str(TLC_DATA)}  # as outside a cluster, even where the tests run in a pod
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", "ml_assets.definitions"]
    command += ["--select", "raw_trips,cleaned_trips", "--partition", "2021-01"]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "kubernetes.config.config_exception.ConfigException: Service host/port is not set." in run.stderr
    assert "DagsterUnmetExecutorRequirementsError" not in run.stderr


def test_the_runner_keeps_no_step_value_in_memory_once_it_is_stored(instance):
    """`execute_in_process` keeps every step's value until the run ends; the runner's does not, and tags its run
    with the month as `execute_in_process` does."""
    import gc
    import weakref

    from dagster import Definitions, IOManager, asset, define_asset_job

    from ml_assets.partitions import monthly_partitions
    from ml_assets.records import PROCESS_TAG
    from ml_assets.runner.runs import execute_in_process

    class Frame:  # stands for a month's feature frame
        pass

    made, alive = [], []

    class Copies(IOManager):  # like a file: what is read back is a new object
        def handle_output(self, context, obj):
            pass

        def load_input(self, context):
            return Frame()

    @asset(partitions_def=monthly_partitions)
    def features():
        made.append(weakref.ref(value := Frame()))
        return value

    @asset(partitions_def=monthly_partitions)
    def model(features):
        gc.collect()
        alive.append(made[-1]() is not None)

    job = Definitions(
        assets=[features, model], resources={"io_manager": Copies()}, jobs=[define_asset_job("both")]
    ).resolve_job_def("both")
    month = monthly_partitions.get_first_partition_key()
    captured = job.execute_in_process(instance=instance, partition_key=month)
    ours = execute_in_process(job, {}, instance, month, raise_on_error=True)
    assert alive == [True, False]  # the fault first: Dagster's keeps the features' value alive during `model`
    assert captured.success and ours.success
    # The same tags, and the runner's process (to tell a run whose process died before its first event).
    assert instance.get_run_by_id(ours.run_id).tags == {
        **instance.get_run_by_id(captured.run_id).tags,
        PROCESS_TAG: str(os.getpid()),
    }
