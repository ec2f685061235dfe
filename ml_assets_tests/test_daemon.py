"""End to end with the real daemon: a month dropped into the source is trained with nobody launching a run."""

import os

import pytest
from dagster import AssetKey, DagsterInstance

from ml_assets_tests.support import (
    drop_month,
    failed_runs,
    free_port,
    start_dagster_dev,
    stop_process_group,
    wait_until,
)

pytestmark = pytest.mark.process

WAIT_SECONDS = 600


def test_new_month_is_ingested_and_trained_by_the_daemon(dagster_home, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    drop_month(incoming, "2021-01")  # a tenth of each month's trips: what runs them is tested, not the model
    env = {
        **os.environ,
        "ML_ASSETS_SOURCE": str(incoming),
        "ML_ASSETS_SENSOR_INTERVAL_SECONDS": "5",
        "ML_ASSETS_AUTOMATION_INTERVAL_SECONDS": "5",  # as the topologies test it; 30 s by default (64 s -> 55 s alone)
        "ML_ASSETS_TUNING_TRIALS": "3",
        "ML_ASSETS_TUNING_TIMEOUT_SECONDS": "15",
    }
    log = tmp_path / "dagster_dev.log"
    dev = start_dagster_dev(env, free_port(), log)
    try:
        with DagsterInstance.get() as instance:

            def materialized(asset: str, month: str) -> bool:
                return month in instance.get_materialized_partitions(AssetKey(asset))

            def wait_for(condition, what: str) -> None:
                def exited() -> str:
                    return "" if dev.poll() is None else "dagster dev"

                wait_until(condition, what, WAIT_SECONDS, poll=5, exited=exited, log=lambda: log.read_text()[-6000:])

            wait_for(lambda: materialized("cleaned_trips", "2021-01"), "ingesting 2021-01")
            drop_month(incoming, "2021-02")  # TLC publishes a month
            wait_for(lambda: materialized("trained_model", "2021-02"), "training 2021-02")
            assert materialized("cleaned_trips", "2021-02") and materialized("best_params", "2021-02")
            # Every run was started by a sensor: new_month_sensor ingests, training_automation_sensor trains.
            starters = {run.tags.get("dagster/sensor_name") for run in instance.get_runs()}
            assert starters == {"new_month_sensor", "training_automation_sensor"}
            # Automation never requested 2021-01, which has no earlier month to train on: no red run.
            assert failed_runs(instance) == {}, log.read_text()[-6000:]
    finally:
        stop_process_group(dev)
