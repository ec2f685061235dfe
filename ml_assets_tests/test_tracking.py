"""The registry's bookkeeping as plain functions, on a real MLflow sqlite store: what an interrupt or a broken
version leaves, which versions monitoring scores, and what the steps make of a registry changed by hand in the
MLflow UI."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import xgboost

from ml_assets.core import gate, tracking
from ml_assets.core.gate import GateResult
from ml_assets_tests.support import GREEN_MODEL


@pytest.fixture
def registry(tmp_path):
    """An empty tracking store in this test's folder, MLflow's default while the test runs."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("t", (tmp_path / "artifacts").as_uri()))
    yield mlflow.MlflowClient()
    mlflow.set_tracking_uri(None)


def logged_model(month: str, taxi: str = tracking.GREEN) -> str:
    """A tiny XGBoost model of `taxi` trips logged in a run as trained_model logs one (test month, training months,
    taxi type, RMSE, encoder); its model URI."""
    features = np.random.default_rng(0).random((30, 2))
    with mlflow.start_run():
        tags = {tracking.PARTITION_TAG: month, tracking.TRAINING_MONTHS_TAG: "2021-01", tracking.TAXI_TAG: taxi}
        mlflow.set_tags(tags)
        mlflow.log_metric("rmse", 5.0)
        mlflow.log_dict({"features": []}, "encoder.json")
        booster = xgboost.train({"max_depth": 1}, xgboost.DMatrix(features, label=features.sum(axis=1)), 2)
        return mlflow.xgboost.log_model(booster, name="model", pip_requirements=["xgboost"]).model_uri


def passes(champion) -> GateResult:
    return GateResult(True, "", None, None if champion is None else str(champion[0].version))


def published(month: str, taxi: str = tracking.GREEN) -> str:
    return tracking.publish(logged_model(month, taxi), passes, {tracking.PARTITION_TAG: month}, taxi).version


def test_an_interrupt_once_the_alias_moved_puts_champion_back_and_deletes_the_version(registry, monkeypatch):
    """Ctrl-C (or an answer that timed out) right after MLflow committed the alias: the alias had gone with
    the deleted version, and the next model was judged as if there had never been a champion."""
    assert published("2021-02") == "1"
    real, calls = mlflow.MlflowClient.set_registered_model_alias, []

    def moved_then_interrupted(self, *args, **kwargs):
        real(self, *args, **kwargs)
        calls.append(args)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", moved_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        published("2021-03")
    assert str(tracking.champion_version().version) == "1"
    assert [str(v.version) for v in tracking.registered_versions()] == ["1"]


def test_monitoring_scores_the_newest_versions_tested_before_the_month_and_the_champion(registry):
    for month in ("2021-02", "2021-03", "2021-04", "2021-05"):
        published(month)  # versions 1 to 4, the last one champion
    registry.set_registered_model_alias(GREEN_MODEL, tracking.CHAMPION, "1")

    def chosen(month: str, newest: int | None = None) -> list[str]:
        return [str(v.version) for v in tracking.versions_tested_before(month, tracking.champion_version(), newest)]

    # Newest first among those tested before 2021-04: the newest one, and the champion however old.
    assert chosen("2021-04", newest=1) == ["2", "1"]
    assert chosen("2021-04") == ["2", "1"]
    assert chosen("2021-06", newest=2) == ["4", "3", "1"]
    # A version registered by hand (no test month, on it or its run) is none of them, though it is the newest.
    with mlflow.start_run():
        features = np.random.default_rng(0).random((30, 2))
        booster = xgboost.train({"max_depth": 1}, xgboost.DMatrix(features, label=features.sum(axis=1)), 2)
        untagged = mlflow.xgboost.log_model(booster, name="model", pip_requirements=["xgboost"]).model_uri
    assert tracking.tested_on(mlflow.register_model(untagged, GREEN_MODEL)) is None
    assert chosen("2021-06", newest=2) == ["4", "3", "1"]


def test_a_trained_model_registered_again_by_hand_is_scored_with_its_run_s_test_month(registry):
    """A model of an ml_assets run registered again from the MLflow UI (a rollback: the version has no tags, its
    run has them) was never scored, and as champion had "no test month" for the decay check and `on_decay`."""
    first = published("2021-02")
    published("2021-03")
    run_id = registry.get_model_version(GREEN_MODEL, first).run_id
    again = mlflow.register_model(f"runs:/{run_id}/model", GREEN_MODEL)
    chosen = tracking.versions_tested_before("2021-04", tracking.champion_version())
    assert [str(v.version) for v in chosen] == ["3", "2", "1"]
    assert tracking.tested_on(again) == "2021-02"
    assert [model.tested_on for model in tracking.load_registered_models([again])[0]] == ["2021-02"]


def test_a_version_whose_run_or_files_are_gone_is_left_out_with_the_reason(registry):
    for month in ("2021-02", "2021-03", "2021-04"):
        published(month)
    first, second, _ = reversed(tracking.registered_versions())
    shutil.rmtree(Path(mlflow.artifacts.download_artifacts(f"models:/{GREEN_MODEL}/1")))
    registry.delete_run(second.run_id)  # a deleted run still loads: its score stands
    loaded, refused = tracking.load_registered_models(tracking.registered_versions())
    assert [model.version for model in loaded] == ["3", "2"]
    assert list(refused) == ["1"] and "MLmodel" in refused["1"]


@pytest.mark.parametrize("test_rmse", [float("nan"), 0.0])  # MLflow stores inf as the largest float
def test_a_version_whose_recorded_test_rmse_cannot_be_judged_against_is_left_out(registry, test_rmse):
    """A test RMSE of 0 stopped model_performance for every version (ZeroDivisionError on the ratio); NaN gave a
    ratio of NaN, which champion_decay passed as "within" its threshold."""
    for month in ("2021-02", "2021-03"):
        published(month)
    registry.log_metric(tracking.registered_versions()[0].run_id, "rmse", test_rmse, step=1)  # version 2's, now
    loaded, refused = tracking.load_registered_models(tracking.registered_versions())
    assert [model.version for model in loaded] == ["1"]
    assert refused == {
        "2": f"ValueError: its recorded test RMSE is {test_rmse}, which no realized RMSE can be judged against"
    }


def test_a_version_whose_run_has_no_test_rmse_is_left_out_saying_so(registry, tmp_path):
    """A version of an ml_assets-tagged run without the `rmse` metric (a notebook's, or deleted by hand) was refused
    as "KeyError: 'rmse'"."""
    published("2021-02")
    (version,) = tracking.registered_versions()
    with mlflow.start_run() as run:  # the same model, logged again by hand with the month's tag and no metrics
        mlflow.set_tag(tracking.PARTITION_TAG, "2021-02")
        for path in ("model", "encoder.json"):
            mlflow.log_artifact(
                mlflow.artifacts.download_artifacts(f"runs:/{version.run_id}/{path}", dst_path=tmp_path)
            )
    again = mlflow.register_model(f"runs:/{run.info.run_id}/model", GREEN_MODEL)
    loaded, refused = tracking.load_registered_models([again])
    assert loaded == []
    assert refused == {
        str(again.version): f"ValueError: its run {run.info.run_id} has no `rmse` metric (its test RMSE) to judge a "
        "later one against"
    }


def test_a_month_scored_again_shows_its_newest_realized_rmse(registry):
    """A month scored again with other values (a re-published month, new cleaning code): every point of a step
    had the month's first day as its timestamp, so realized_history (the decay plot's curves) kept whichever MLflow
    listed last, here the largest; and a value seen before was not logged again when it came back."""
    run_id = registry.get_model_version(GREEN_MODEL, published("2021-02")).run_id
    for rmse in (7.0, 6.0, 7.0, 5.5):
        tracking.log_realized_rmse(run_id, rmse, 2, "2021-04")
        assert tracking.realized_history(run_id) == {2: rmse}
    tracking.log_realized_rmse(run_id, 5.5, 2, "2021-04")  # the same data again: nothing new to log
    points = registry.get_metric_history(run_id, tracking.REALIZED_RMSE)
    assert len(points) == 4
    # MLflow's chart over time still places every point on the month it scored.
    assert {point.timestamp // 1000 for point in points} == {1617235200}  # 2021-04-01, UTC


def test_a_champion_that_cannot_be_loaded_is_named_as_the_cause(registry):
    published("2021-02")
    shutil.rmtree(Path(mlflow.artifacts.download_artifacts(f"models:/{GREEN_MODEL}/1")))
    with pytest.raises(ValueError, match="the champion alias of trip_duration_xgboost names version 1, which cannot"):
        tracking.load_champion()


def test_each_taxi_type_publishes_into_its_own_registered_model_and_sees_its_own_champion_only(registry):
    """One tracking store for a green and a yellow home: yellow's versions went into green's registered model, where
    its gate was judged against the green champion and took the alias from it."""
    assert [published("2021-02"), published("2021-02", "yellow"), published("2021-03", "yellow")] == ["1", "1", "2"]
    assert tracking.registered_model("yellow") == "trip_duration_xgboost_yellow"
    scored = {"green": ["1"], "yellow": ["2", "1"]}  # the versions tested before 2021-04, of each type
    for taxi, versions in scored.items():
        assert str(tracking.load_champion(taxi)[0].version) == versions[0]
        assert {v.tags[tracking.TAXI_TAG] for v in tracking.registered_versions(taxi)} == {taxi}
        chosen = tracking.versions_tested_before("2021-04", tracking.champion_version(taxi), taxi=taxi)
        assert [model.version for model in tracking.load_registered_models(chosen, taxi)[0]] == versions


def test_a_version_of_another_taxi_type_in_a_registered_model_is_named_not_mixed(registry):
    """A yellow model in green's registered model (registered there by hand from a yellow run, or a version a
    yellow home published before each type had its own, tagged since): the green steps loaded it as their champion
    and scored it on green months. Now they say which version it is, of which type, and what to do."""
    published("2021-02")
    yellow = mlflow.register_model(logged_model("2021-03", "yellow"), GREEN_MODEL)  # the UI's "Register model"
    registry.set_registered_model_alias(GREEN_MODEL, tracking.CHAMPION, yellow.version)
    said = (
        "version 2 of trip_duration_xgboost is a model of yellow taxis (`taxi` yellow on it or its run), but this home "
        "holds green taxis, whose models are registered in trip_duration_xgboost: register its run's model in "
        "trip_duration_xgboost_yellow instead"
    )
    with pytest.raises(tracking.UnloadableChampion, match=f"names a model of another taxi type: {re.escape(said)}"):
        tracking.load_champion()
    with pytest.raises(tracking.UnloadableChampion):  # no gate judges a green model against it
        published("2021-04")
    assert [str(v.version) for v in tracking.registered_versions()] == ["2", "1"]
    loaded, refused = tracking.load_registered_models(tracking.registered_versions())
    assert [model.version for model in loaded] == ["1"]
    assert list(refused) == ["2"] and refused["2"].startswith(f"OtherTaxiModel: {said}")
    # A version from before versions recorded their type is taken as its registered model's; one tagged by hand
    # as another type's is named like the one above.
    registry.set_registered_model_alias(GREEN_MODEL, tracking.CHAMPION, "1")
    registry.delete_model_version_tag(GREEN_MODEL, "1", tracking.TAXI_TAG)
    registry.delete_tag(registry.get_model_version(GREEN_MODEL, "1").run_id, tracking.TAXI_TAG)
    assert str(tracking.load_champion()[0].version) == "1"
    registry.set_model_version_tag(GREEN_MODEL, "1", tracking.TAXI_TAG, "yellow")
    with pytest.raises(tracking.UnloadableChampion, match="version 1 of trip_duration_xgboost is a model of yellow"):
        tracking.load_champion()


def test_an_unrecorded_champion_whose_predecessor_was_deleted_leaves_no_champion(registry):
    """The version an unrecorded champion replaced was deleted by hand since: putting the alias back on it had
    failed every MLflow step, reported as the store being unreachable."""
    published("2021-02")
    published("2021-03")  # champion, replacing version 1
    registry.delete_model_version(GREEN_MODEL, "1")
    assert tracking.restore_recorded_champion(lambda version: False) == ["2"]
    assert tracking.champion_version() is None


def test_unrecorded_champions_in_a_row_are_all_taken_back(registry):
    """Two runs killed in turn right after moving the alias: the champion goes back past both, to the last
    version whose publishing was recorded."""
    for month in ("2021-02", "2021-03", "2021-04"):
        published(month)  # each the champion, replacing the one before
    recorded = tracking.restore_recorded_champion(lambda version: str(version.version) == "1")
    assert recorded == ["3", "2"]
    assert str(tracking.champion_version().version) == "1"
    assert [str(v.version) for v in tracking.registered_versions()] == ["3", "2", "1"]  # nothing deleted


def test_an_interrupt_inside_register_model_leaves_no_version_claiming_the_alias(registry, monkeypatch):
    """SIGTERM (Dagster's run termination) once MLflow created the version, before register_model returned: the
    version kept `alias_at_registration: champion` though the alias never moved to it."""
    assert published("2021-02") == "1"
    real = mlflow.MlflowClient._create_model_version

    def created_then_interrupted(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(mlflow.MlflowClient, "_create_model_version", created_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        published("2021-03")
    assert str(tracking.champion_version().version) == "1"
    claims = {str(v.version): v.tags.get(tracking.ALIAS_AT_REGISTRATION_TAG) for v in tracking.registered_versions()}
    assert claims == {"1": tracking.CHAMPION, "2": None}


@pytest.mark.parametrize("store", ["file", "sqlite"])
def test_an_experiment_another_machine_creates_meanwhile_is_taken_as_found(tmp_path, monkeypatch, store):
    """Two first runs on two machines (Celery workers, run pods) share a tracking store: both looked the
    experiment up before either created it, as a lock file on one machine does not keep out the other. The
    second creation was refused (RESOURCE_ALREADY_EXISTS) and failed its step. A file store stands for a
    server: neither is a sqlite file that a lock could guard."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri() if store == "file" else f"sqlite:///{tmp_path / 'mlflow.db'}"
    looked_up = mlflow.MlflowClient.get_experiment_by_name

    def created_by_the_other_machine_meanwhile(self, name):
        found = looked_up(self, name)
        if found is None:
            mlflow.MlflowClient(uri).create_experiment(name, artifact_location=(tmp_path / "mlartifacts").as_uri())
        return found

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", created_by_the_other_machine_meanwhile)
    tracking.ensure_experiment(uri, "trip_duration")
    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", looked_up)
    assert [e.name for e in mlflow.MlflowClient(uri).search_experiments()].count("trip_duration") == 1


def predictions_failure(month: str, registry, trips=None):
    """Why trip_duration_predictions of `month` failed, run with the `mlflow` resource on the test's store and
    `trips` as its cleaned_trips (none: it fails before reading them), as the step's error: (message, its cause)."""
    import pandas as pd
    from dagster import AssetKey, DagsterInstance, asset, materialize_to_memory

    from ml_assets.assets.predictions import trip_duration_predictions
    from ml_assets.partitions import monthly_partitions
    from ml_assets.resources.tracking import mlflow_tracking_resource

    @asset(key=AssetKey("cleaned_trips"), partitions_def=monthly_partitions)
    def cleaned_trips():
        return pd.DataFrame() if trips is None else trips

    store = {"experiment_name": "t", "mlflow_tracking_uri": registry.tracking_uri}
    with DagsterInstance.ephemeral() as instance:
        result = materialize_to_memory(
            [cleaned_trips, trip_duration_predictions],
            partition_key=month,
            resources={"mlflow": mlflow_tracking_resource.configured(store)},
            instance=instance,
            raise_on_error=False,
        )
    (failure,) = result.get_step_failure_events()
    error = failure.step_failure_data.error
    return error.message, error.cause


def test_predictions_after_the_champion_was_deleted_name_the_versions_left(registry):
    """The champion's version deleted in the MLflow UI (MLflow deletes its alias with it): predictions said there
    was no champion "yet", to train a first month, though the registry held other versions to alias."""
    published("2021-02")
    published("2021-03")  # champion
    registry.delete_model_version(GREEN_MODEL, "2")
    said, _ = predictions_failure("2021-04", registry)
    assert "has version(s) 1: the version it named was deleted" in said
    assert "set `champion` on a version in the MLflow UI, or materialize trained_model again" in said


def test_a_champion_that_cannot_be_loaded_fails_predictions_saying_what_to_do(registry):
    """A champion whose files were deleted by hand failed predictions with a ValueError under MLflow's traceback,
    saying only to move the alias."""
    published("2021-02")
    shutil.rmtree(Path(mlflow.artifacts.download_artifacts(f"models:/{GREEN_MODEL}/1")))
    said, cause = predictions_failure("2021-04", registry)
    assert "trip_duration_predictions 2021-04: the champion alias of trip_duration_xgboost names version 1" in said
    assert "or delete the alias and materialize trained_model again" in said
    assert cause is None, cause  # the message says it all: no MLflow traceback under it


def test_a_champion_registered_again_by_hand_keeps_its_test_month_for_the_gate(registry):
    """A rollback from the MLflow UI ("Register model" on an ml_assets run: the version has no tags) made
    champion: the gate read the test month from the version's tags only, so a model of an earlier month than the
    champion's could replace it, while monitoring read the run's."""
    first = published("2021-03")
    run_id = registry.get_model_version(GREEN_MODEL, first).run_id
    again = mlflow.register_model(f"runs:/{run_id}/model", GREEN_MODEL)
    registry.set_registered_model_alias(GREEN_MODEL, tracking.CHAMPION, again.version)
    assert gate.tested_after("2021-02", tracking.load_champion()) == "2021-03"


def test_a_champion_before_tag_edited_by_hand_is_no_unreachable_store(registry):
    """`champion_before` of an unrecorded champion edited in the MLflow UI to what is no version number: MLflow
    refused to look it up (INVALID_PARAMETER_VALUE), and every step that may move the alias failed saying the
    store could not be reached."""
    published("2021-02")
    published("2021-03")
    registry.set_model_version_tag(GREEN_MODEL, "2", tracking.CHAMPION_BEFORE_TAG, "v1")
    assert tracking.restore_recorded_champion(lambda version: False) == ["2"]
    assert tracking.champion_version() is None


def test_a_champion_of_no_ml_assets_features_fails_predictions_naming_it(registry):
    """`champion` moved by hand to a version of a notebook's run tagged with a month (it loads, with an encoder of
    another shape): predictions failed with a bare KeyError from the encoding."""
    import pyarrow.parquet as pq

    from ml_assets.core.cleaning import clean_trips
    from ml_assets_tests.support import TLC_DATA

    published("2021-02")  # `logged_model` logs such an encoder
    trips = clean_trips(pq.read_table(TLC_DATA / "green_tripdata_2021-03.parquet"), "2021-03", "2021-03").trips
    said, _ = predictions_failure("2021-03", registry, trips.head(100))
    assert "trip_duration_predictions 2021-03: the champion, version 1, cannot score 2021-03's trips (KeyError" in said
    assert "move the alias to a version of this project's models" in said


def test_champion_before_tags_edited_into_a_cycle_end_with_no_champion(registry):
    """`champion_before` tags edited by hand so that two unrecorded champions name each other: putting the alias
    back went round between them for ever, every step that may move the alias hanging."""
    published("2021-02")
    published("2021-03")  # champion, replacing version 1
    registry.set_model_version_tag(GREEN_MODEL, "1", tracking.CHAMPION_BEFORE_TAG, "2")
    looked_at = []

    def unrecorded(version) -> bool:
        looked_at.append(str(version.version))
        return len(looked_at) > 5  # a bound for the test's sake: the round never ended

    assert tracking.restore_recorded_champion(unrecorded) == ["2", "1"]
    assert tracking.champion_version() is None


def test_a_test_month_tag_edited_by_hand_to_no_month_is_not_taken(registry):
    """A version's `partition` tag edited in the MLflow UI to what is no month: it was taken as the test month, so
    model_performance scored the version as tested before "2020" and failed for every version on months_between
    (as the retraining policy did on a champion's), and the gate refused every model against a champion "tested"
    on a tag that sorts after the months ("March"). The version's run still says which month it was."""
    first = published("2021-02")
    registry.set_model_version_tag(GREEN_MODEL, first, tracking.PARTITION_TAG, "2020")
    version = registry.get_model_version(GREEN_MODEL, first)
    assert tracking.tested_on(version) == "2021-02"
    registry.set_tag(version.run_id, tracking.PARTITION_TAG, "2020")  # the run's too: no test month at all
    assert tracking.tested_on(version) is None
    assert tracking.versions_tested_before("2021-04", None) == []
