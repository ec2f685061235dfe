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
        "taxi": "green",
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


@pytest.mark.slow
def test_a_step_waits_out_an_outage_that_also_refuses_the_warning_it_logs(instance, monkeypatch):
    """PostgreSQL restarted while best_params tuned: the step's error was an outage, but so was the error of
    the warning saying so (Dagster's event log is in that database too), and the step failed instead of
    waiting (test_deployment.py's restart, when it struck then). The event log refuses the warning here, as
    PostgreSQL did, and the step is retried all the same."""
    import psycopg2
    from dagster import DagsterEventType, asset, materialize

    from ml_assets.outages import waits_out_outages

    storage = type(instance.event_log_storage)
    store_event = storage.store_event
    refusals = []  # the writes the database still refuses

    def store_or_refuse(self, event, *args, **kwargs):
        if refusals:
            raise psycopg2.OperationalError(refusals.pop())
        return store_event(self, event, *args, **kwargs)

    monkeypatch.setattr(storage, "store_event", store_or_refuse)
    monkeypatch.setenv("ML_ASSETS_OUTAGE_SECONDS", "5")  # one retry, 5 s later

    @asset
    @waits_out_outages
    def tuned(context):
        if context.op_execution_context.retry_number == 0:
            # The warning, then Dagster's report that the warning could not be written.
            refusals.extend(["server closed the connection unexpectedly"] * 2)
            raise psycopg2.OperationalError("server closed the connection unexpectedly")
        return 1

    result = materialize([tuned], instance=instance, raise_on_error=False)
    assert refusals == [], "the warning was never logged"
    retried = [event.step_key for event in result.all_events if event.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert result.success and retried == ["tuned"]


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (ConnectionResetError(), "ConnectionResetError"),  # no message: the Failure had failed with IndexError
        (OSError("x" * 280 + " http://alice:PASSWORD@mlflow:5000/api"), "x" * 280 + " http://alice:***@ml"),
    ],
)
def test_an_unreachable_tracking_store_is_named_whatever_its_error_says(error, said, monkeypatch, dagster_home):
    """The error's first line is cut to 300 characters after its password is masked: cut first, a password
    that straddled the cut lost its `@` and was shown as it was."""
    from ml_assets.core import tracking as core_tracking
    from ml_assets.resources.tracking import MlflowTracking

    def unreachable(*args):
        raise error

    monkeypatch.setattr(core_tracking, "ensure_experiment", unreachable)
    for variable in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):  # connect sets them
        monkeypatch.setenv(variable, "1")
    config = {"mlflow_tracking_uri": "http://127.0.0.1:9", "experiment_name": "x"}
    config |= {"taxi": "green", "http_request_max_retries": 0, "http_request_timeout": 10}
    tracking = MlflowTracking(build_init_resource_context(config=config))
    failure = raised(lambda: tracking.connect("trained_model 2021-02"))
    assert isinstance(failure, Failure), failure
    assert failure.description.startswith("trained_model 2021-02: MLflow tracking at http://127.0.0.1:9 cannot be ")
    assert said in failure.description and "PASSWO" not in failure.description


def test_a_password_with_an_at_sign_is_mlflow_s_whole_and_masked_whole(dagster_home):
    """`http://alice:P@SS@host`, as requests reads it (the last `@` ends the user info): the password had ended at
    the first `@`, so MLflow logged in with `P` at `http://SS@host` and messages showed `SS`."""
    from ml_assets.resources.tracking import MlflowTracking

    config = {"mlflow_tracking_uri": "http://alice:P@SS@127.0.0.1:9/", "experiment_name": "x"}
    config |= {"taxi": "green", "http_request_max_retries": 0, "http_request_timeout": 10}
    tracking = MlflowTracking(build_init_resource_context(config=config))
    assert (tracking.tracking_uri, tracking.shown_uri) == ("http://127.0.0.1:9/", "http://alice:***@127.0.0.1:9/")
    assert tracking._client_env["MLFLOW_TRACKING_PASSWORD"] == "P@SS"


def test_what_an_error_said_is_masked_before_it_is_cut_and_named_by_its_class_when_empty():
    """The step's outage warning, the tracking store's failure and the runner's last line say an error this way:
    cut first, a password parted from its `@` showed (PASSWORD reading PASSW); empty, the runner raised IndexError."""
    from ml_assets.core.credentials import said

    cut = said(RuntimeError("x" * 280 + " at http://alice:PASSWORD@127.0.0.1:9/api"))
    assert len(cut) == 300 and "PASSW" not in cut and "alice:***" in cut
    assert said(RuntimeError("at http://alice:PASSWORD@127.0.0.1:9/api"), limit=20) == "at http://alice:***@"
    assert said(ConnectionResetError()) == said(ConnectionResetError("  \n")) == "ConnectionResetError"
    assert said(OSError("first line\nsecond")) == "first line"
