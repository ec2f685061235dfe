"""Which errors a step waits out (ml_assets.outages, core.outages): those of real clients whose server cannot
be reached, never a data problem or a bug; and the delays between the retries.

A step retried through a whole outage is shown in test_faults_training.py (a tracking server that
never answers), test_deployment.py (the MLflow server stopped mid-step, then back) and
test_compose.py (Redis stopped while the sensor's runs start), and PostgreSQL restarted while best_params
tunes (test_deployment.py).
"""

from __future__ import annotations

import pytest
from dagster import Failure, build_init_resource_context

from ml_assets.core.outages import LONGEST_DELAY_SECONDS, is_outage, retry_delays
from ml_assets.core.rules import BlockingRuleError, RuleResult
from ml_assets.core.schema import SchemaError
from ml_assets_tests.support import free_port


def raised(call) -> BaseException:
    with pytest.raises(Exception) as caught:
        call()
    return caught.value


def test_errors_of_services_that_cannot_be_reached_are_outages(monkeypatch, dagster_home):
    import mlflow
    import optuna
    import requests

    from ml_assets.resources.tracking import MlflowTracking

    closed = free_port()  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow_down = raised(lambda: mlflow.MlflowClient(f"http://127.0.0.1:{closed}").search_experiments())
    assert type(mlflow_down).__name__ == "MlflowException" and is_outage(mlflow_down)
    database_down = raised(
        lambda: optuna.storages.RDBStorage(f"postgresql+psycopg2://u:PASSWORD@127.0.0.1:{closed}/optuna")
    )
    assert is_outage(database_down)
    unknown_host = raised(lambda: requests.get("http://mlflow.invalid:5000/health", timeout=10))
    assert is_outage(unknown_host)

    # What trained_model, model_gate and predictions raise (the server's error is its cause).
    config = {
        "mlflow_tracking_uri": f"http://127.0.0.1:{closed}",
        "experiment_name": "x",
        "http_request_max_retries": 0,
        "http_request_timeout": 10,
    }
    tracking = MlflowTracking(build_init_resource_context(config=config))
    unreachable = raised(lambda: tracking.connect("trained_model 2021-02"))
    assert isinstance(unreachable, Failure) and is_outage(unreachable)


def test_data_problems_and_bugs_are_not_outages(tmp_path):
    import mlflow
    import optuna

    rule = RuleResult(rule="row_count", passed=False, message="12 rows, fewer than 1000")
    for error in (
        BlockingRuleError("raw_trips 2021-02", [rule]),
        SchemaError("raw_trips 2021-02: missing required column(s) trip_distance"),
        Failure("no `champion` model in the MLflow registry yet"),
        mlflow.exceptions.MlflowException("registry unavailable"),  # the server answered, with an error
        raised(lambda: (tmp_path / "missing").read_bytes()),
        raised(lambda: optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/no/such/folder/optuna.db")),
        KeyError("rmse"),
    ):
        assert not is_outage(error), error


def test_retries_start_after_5_seconds_double_up_to_5_minutes_and_stay_within_the_budget():
    assert retry_delays(0) == retry_delays(4) == []
    assert retry_delays(15) == [5, 10]
    hour = retry_delays(3600)
    assert hour[:7] == [5, 10, 20, 40, 80, 160, LONGEST_DELAY_SECONDS]
    assert set(hour[6:]) == {LONGEST_DELAY_SECONDS}
    assert sum(hour) <= 3600 < sum(hour) + LONGEST_DELAY_SECONDS
