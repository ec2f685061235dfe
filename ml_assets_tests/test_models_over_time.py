"""Every model judged on every later month, the on_decay retraining policy, and reproduction of a version.

Real TLC months (a tenth of their trips) trained with a one-month window in subprocesses, as the
runner and the code location run them with these settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance

from ml_assets.checks.champion_decay import CHAMPION_DECAY
from ml_assets.core.features import OTHER_ZONE
from ml_assets.core.lineage import LineageError, check_file
from ml_assets.core.performance import DecayThresholds
from ml_assets.deploy.local.environment import clean_environ
from ml_assets.keys import MODEL_PERFORMANCE
from ml_assets.records import check_evaluations, latest_materialization
from ml_assets_tests import forked
from ml_assets_tests.support import GREEN_MODEL, ROOT, drop_month

pytestmark = pytest.mark.process

MONTHS = ["2023-01", "2023-02", "2023-03", "2023-04", "2023-05"]
TRAINED = ["2023-02", "2023-03", "2023-04", "2023-05"]  # versions 1 to 4, each tested on its month


def environment(home: Path, source: Path, **extra: str) -> dict:
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return {
        **clean_environ(),  # nothing of this process's MLflow or Dagster settings: a test before may have left some
        "DAGSTER_HOME": str(home),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "ML_ASSETS_SOURCE": str(source),
        "ML_ASSETS_START_MONTH": MONTHS[0],
        "ML_ASSETS_TRAINING_MONTHS": "1",
        "ML_ASSETS_TUNING_TRIALS": "2",
        "ML_ASSETS_TUNING_TIMEOUT_SECONDS": "10",
        **extra,
    }


def python(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = forked.run(list(args), env, timeout=900)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Four months trained one by one (`make backfill`), each version scored on every later month."""
    root = tmp_path_factory.mktemp("over_time")
    source = root / "source"
    source.mkdir()
    for month in MONTHS:
        drop_month(source, month)
    env = environment(root / "home", source)
    python(env, "-m", "ml_assets.runner", TRAINED[0], "--to", TRAINED[-1])
    return env


def performance_of(env: dict, month: str, monkeypatch) -> tuple[dict, list[dict]]:
    """model_performance's newest metadata for `month` in the home of `env`, and the evaluations of
    `champion_decay` in the run that recorded it."""
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    with DagsterInstance.get() as instance:
        run_id, metadata = latest_materialization(instance, MODEL_PERFORMANCE, month)
        return metadata, check_evaluations(instance, run_id, CHAMPION_DECAY)


def registry(env: dict):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{Path(env['DAGSTER_HOME']) / 'ml_assets' / 'mlflow.db'}")


def realized_rmse(env: dict, version, month: str) -> float:
    """A version's RMSE on `month`, computed here from the month's file and the registered model alone."""
    import mlflow.xgboost
    import pandas as pd

    client = registry(env)
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        booster = mlflow.xgboost.load_model(f"models:/{GREEN_MODEL}/{version.version}")
        encoder = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/encoder.json")
    finally:
        mlflow.set_tracking_uri(None)
    trips = pq.read_table(Path(env["ML_ASSETS_SOURCE"]) / f"green_tripdata_{month}.parquet").to_pandas()
    pickup = trips["lpep_pickup_datetime"]
    trips["duration"] = (trips["lpep_dropoff_datetime"] - pickup).dt.total_seconds() / 60
    start = pd.Timestamp(month + "-01")
    kept = trips["duration"].between(1, 60) & (pickup >= start) & (pickup < start + pd.offsets.MonthBegin(1))
    trips = trips[kept & trips[["PULocationID", "DOLocationID", "trip_distance"]].notna().all(axis=1)]
    pickup = trips["lpep_pickup_datetime"]
    derived = {"pickup_hour": pickup.dt.hour + pickup.dt.minute / 60, "pickup_weekday": pickup.dt.dayofweek}
    folded = encoder.get("folded_zones", {})  # rare zones sharing OTHER_ZONE's category
    X = pd.DataFrame(
        {
            name: pd.Categorical(
                trips[name].mask(trips[name].isin(folded.get(name, [])), OTHER_ZONE),
                categories=encoder["categories"][name],
            )
            if name in encoder["categories"]
            else derived.get(name, trips.get(name)).astype("float32").fillna(encoder.get("missing_code", np.nan))
            for name in encoder["features"]
        }
    )
    predicted = booster.inplace_predict(X, iteration_range=(0, booster.best_iteration + 1))
    return float(np.sqrt(np.mean((predicted - trips["duration"].to_numpy()) ** 2)))


def test_every_earlier_version_is_scored_on_a_later_month(history, monkeypatch):
    performance, (decay,) = performance_of(history, "2023-05", monkeypatch)
    rows = {record.data["version"]: record.data for record in performance["versions"].records}
    assert sorted(rows) == ["1", "2", "3"]  # tested on 02, 03, 04; version 4 is 2023-05's own model
    assert performance["dagster/row_count"] == 3
    assert performance["plot_decay"].startswith("![decay](data:image/png;base64,")
    assert performance["champion_version"] in rows
    # champion_decay, in the same run, judges the champion's line of that table.
    assert decay["ratio"] == pytest.approx(rows[performance["champion_version"]]["ratio"], abs=1e-4)
    assert decay["decay_threshold"] == DecayThresholds().decay_threshold  # the default: history sets none

    client = registry(history)
    for version in client.search_model_versions(f"name = '{GREEN_MODEL}'"):
        if version.version not in rows:
            continue
        row, test_rmse = rows[version.version], client.get_run(version.run_id).data.metrics["rmse"]
        assert row["tested_on"] == TRAINED[int(version.version) - 1]
        assert row["test_rmse"] == pytest.approx(test_rmse, abs=1e-4)
        assert row["realized_rmse"] == pytest.approx(realized_rmse(history, version, "2023-05"), abs=1e-3)
        assert row["ratio"] == pytest.approx(row["realized_rmse"] / test_rmse, abs=1e-3)
        # MLflow charts the decay: one step per later month, counted from the version's test month.
        steps = sorted(point.step for point in client.get_metric_history(version.run_id, "realized_rmse"))
        assert steps == list(range(1, 5 - int(version.version)))


def reproduce(env: dict, version: int) -> subprocess.CompletedProcess:
    return python(env, "-m", "ml_assets.reproduce", str(version), check=False)


def test_a_version_is_rebuilt_exactly_and_refused_once_a_file_was_republished(history, tmp_path):
    rebuilt = reproduce(history, 2)  # trained on 2023-02, tested on 2023-03
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
    assert rebuilt.stdout.strip().endswith("MATCH")
    assert "predictions max |difference| 0" in rebuilt.stdout
    assert "Downloading artifacts" not in rebuilt.stderr, rebuilt.stderr[-3000:]  # the comparison is the output

    # TLC re-publishes 2023-02: the same trips, other bytes (another row group size).
    republished = tmp_path / "republished"
    shutil.copytree(history["ML_ASSETS_SOURCE"], republished)
    month_file = republished / "green_tripdata_2023-02.parquet"
    pq.write_table(pq.read_table(month_file), month_file, row_group_size=1000)
    refused = reproduce({**history, "ML_ASSETS_SOURCE": str(republished)}, 2)
    assert refused.returncode == 2
    message = refused.stderr.strip().splitlines()[-1]
    new_hash = hashlib.sha256(month_file.read_bytes()).hexdigest()
    old_hash = hashlib.sha256((Path(history["ML_ASSETS_SOURCE"]) / month_file.name).read_bytes()).hexdigest()
    assert "month 2023-02" in message and new_hash in message and old_hash in message
    assert "perhaps TLC re-published the month" in message  # a likely cause, not a fact: the source may differ


@contextlib.contextmanager
def model_logged_by_hand(env: dict, tags: dict | None = None) -> Iterator:
    """The home's MLflow store, MLflow's default for the block, with a tiny model logged in a run of its own (`tags`
    on the run) as a notebook logs one: no lineage. Its ModelInfo."""
    import mlflow
    import xgboost

    home = Path(env["DAGSTER_HOME"])
    (home / "ml_assets").mkdir()
    features = np.random.default_rng(0).random((50, 3))
    mlflow.set_tracking_uri(f"sqlite:///{home / 'ml_assets' / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("by hand", artifact_location=(home / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment, tags=tags):
            booster = xgboost.train({"max_depth": 2}, xgboost.DMatrix(features, label=features.sum(axis=1)), 3)
            info = mlflow.xgboost.log_model(booster, name="model", pip_requirements=["xgboost"])  # inferring: 3 CPU-s
        yield info
    finally:
        mlflow.set_tracking_uri(None)


def test_a_version_registered_without_lineage_is_refused(tmp_path):
    """A model registered before ml_assets recorded lineage (here: logged and registered by hand)."""
    import mlflow

    env = environment(tmp_path / "home", tmp_path)
    with model_logged_by_hand(env) as info:
        mlflow.register_model(info.model_uri, GREEN_MODEL)
    refused = reproduce(env, 1)
    assert refused.returncode == 2
    assert f"version 1: no lineage.json found on its MLflow run {info.run_id}" in refused.stderr
    assert "perhaps it was registered before ml_assets recorded what made each model" in refused.stderr


def test_a_yellow_home_rebuilds_versions_of_the_yellow_registered_model_only(tmp_path):
    """A yellow home sharing green's tracking store: `reproduce 1` took version 1 of green's model and rebuilt it from
    yellow files. It looks in yellow's registered model now, and refuses a green model found there, naming both."""
    import mlflow

    from ml_assets.core import tracking

    env = environment(tmp_path / "home", tmp_path, ML_ASSETS_TAXI="yellow")
    with model_logged_by_hand(env, {tracking.TAXI_TAG: "green"}) as info:  # as trained_model tags a green home's run
        mlflow.register_model(info.model_uri, GREEN_MODEL)
        absent = reproduce(env, 1)
        mlflow.register_model(info.model_uri, "trip_duration_xgboost_yellow")  # by hand, into the other type's
        mixed = reproduce(env, 1)
    assert absent.returncode == 2 and "trip_duration_xgboost_yellow has no version 1" in absent.stderr, absent.stderr
    assert mixed.returncode == 2
    assert (
        "version 1: version 1 of trip_duration_xgboost_yellow is a model of green taxis (`taxi` green on it or its "
        "run), but this home holds yellow taxis" in mixed.stderr
    ), mixed.stderr


def test_a_lineage_this_code_cannot_read_is_refused_not_a_mismatch(tmp_path):
    """A lineage.json without a field this code reads (written by hand, or by another version) ended in a
    traceback and exit status 1, which says the rebuilt model does not match."""
    import mlflow
    import xgboost

    env = environment(tmp_path / "home", tmp_path)
    (tmp_path / "home" / "ml_assets").mkdir()
    features = np.random.default_rng(0).random((50, 3))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'home' / 'ml_assets' / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            mlflow.log_dict({"features": []}, "encoder.json")
            mlflow.log_dict({"format": 1, "test_month": "2023-02"}, "lineage.json")  # no training_months
            booster = xgboost.train({"max_depth": 2}, xgboost.DMatrix(features, label=features.sum(axis=1)), 3)
            info = mlflow.xgboost.log_model(booster, name="model", pip_requirements=["xgboost"])
        mlflow.register_model(info.model_uri, GREEN_MODEL)
    finally:
        mlflow.set_tracking_uri(None)
    refused = reproduce(env, 1)
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert last == "ml_assets.reproduce: cannot rebuild version 1: KeyError: 'training_months'"
    assert "Traceback" in refused.stderr  # not one of the refusals it knows: where it failed is shown


def relocated(env: dict, folder: Path) -> dict:
    """A copy of `env`'s home in `folder`, its MLflow store naming the copy's artifacts, to break without harm."""
    import sqlite3

    home, copy = env["DAGSTER_HOME"], folder / "home"
    shutil.copytree(home, copy)
    with sqlite3.connect(copy / "ml_assets" / "mlflow.db") as store:
        for (table,) in store.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for column, kind in store.execute(f"SELECT name, type FROM pragma_table_info('{table}')").fetchall():
                if kind.upper().startswith(("VARCHAR", "TEXT")):
                    store.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?)', (home, str(copy)))
    return {**env, "DAGSTER_HOME": str(copy)}


def refusal(result: subprocess.CompletedProcess) -> str:
    """The one line a version that cannot be rebuilt is refused with, before any month is read or trained."""
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "recorded sha256" not in result.stdout  # found out before the rebuild, not after it
    (line,) = result.stderr.strip().splitlines()  # no traceback
    assert line.startswith("ml_assets.reproduce: cannot rebuild version ")
    return line


def test_a_version_that_cannot_be_loaded_or_reached_is_refused_at_once(history, tmp_path):
    env = relocated(history, tmp_path)
    client = registry(env)
    runs = {number: client.get_model_version(GREEN_MODEL, number).run_id for number in ("2", "3", "4")}
    artifacts = {
        number: Path(client.get_run(run).info.artifact_uri.removeprefix("file://")) for number, run in runs.items()
    }
    shutil.rmtree(client.get_model_version_download_uri(GREEN_MODEL, "2").removeprefix("file://"))
    (artifacts["3"] / "encoder.json").unlink()
    (artifacts["4"] / "lineage.json").unlink()

    assert "version 2: its registered model" in (line := refusal(reproduce(env, 2))) and "MLmodel" in line
    assert "version 3: " in (line := refusal(reproduce(env, 3))) and "encoder.json" in line
    assert f"version 4: no lineage.json found on its MLflow run {runs['4']}" in refusal(reproduce(env, 4))
    unreachable = refusal(reproduce({**env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, 1))
    assert "version 1: MLflow tracking at http://127.0.0.1:9 cannot be reached" in unreachable


def test_a_version_whose_month_the_source_cannot_give_is_refused_not_a_mismatch(history, tmp_path):
    """The source no longer has a month of the version (deleted, or TLC unreachable): it ended with a traceback and
    exit status 1, which says the rebuilt model does not match."""
    source = tmp_path / "source"
    shutil.copytree(history["ML_ASSETS_SOURCE"], source)
    (source / "green_tripdata_2023-02.parquet").unlink()
    line = refusal(reproduce({**history, "ML_ASSETS_SOURCE": str(source)}, 2))
    assert line.startswith("ml_assets.reproduce: cannot rebuild version 2: month 2023-02 ")
    assert "green_tripdata_2023-02.parquet does not exist" in line


def test_a_month_whose_file_hash_was_never_recorded_is_not_said_to_be_republished():
    """trained_model records None for a month whose raw_trips recorded no sha256 (an older home): reproduce
    said the model was trained on a file with sha256 None, "perhaps TLC re-published the month since"."""
    recorded = {"raw_sha256": {"2023-02": None}}
    with pytest.raises(LineageError) as refused:
        check_file(recorded, "2023-02", "ab" * 32, "green_tripdata_2023-02.parquet")
    assert str(refused.value) == (
        "month 2023-02: no sha256 was recorded for the file the model was trained on (raw_trips recorded none when "
        "it was trained), so green_tripdata_2023-02.parquet cannot be shown to be that file"
    )


CHAMPION_MOVES = """
import json, mlflow
from dagster import DagsterInstance
from ml_assets.core import tracking
from ml_assets.keys import MODEL_PERFORMANCE
from ml_assets.records import latest_metadata
from ml_assets.runner.runs import materialize_month

logged = tracking.log_realized_rmse

def then_the_champion_moves(*args):  # another month's model_gate moves the alias while this month is scored
    logged(*args)
    mlflow.MlflowClient().set_registered_model_alias(GREEN_MODEL, tracking.CHAMPION, "1")

tracking.log_realized_rmse = then_the_champion_moves
instance = DagsterInstance.get()
run_config = {"ops": {"model_performance": {"config": {"newest_versions": 1}}}}
assert materialize_month(instance, "2023-05", ["model_performance"], run_config).success
recorded = latest_metadata(instance, MODEL_PERFORMANCE, "2023-05")
print(json.dumps({name: value for name, value in recorded.items() if name.startswith("champion_")}))
"""


def test_the_champion_recorded_with_a_month_s_scores_is_the_one_scored(history, tmp_path):
    """The champion was read after the versions were scored: one that moved meanwhile to a version left out
    (here the newest one is scored, and the alias moves to version 1) was recorded without its ratio, so
    champion_decay and `on_decay` judged a champion the month's table does not hold."""
    env = relocated(history, tmp_path)
    registry(env).set_registered_model_alias(GREEN_MODEL, "champion", "3")  # tested on 2023-04
    recorded = json.loads(python(env, "-c", CHAMPION_MOVES).stdout.strip().splitlines()[-1])
    assert recorded["champion_version"] == "3" and recorded["champion_tested_on"] == "2023-04"
    assert recorded["champion_ratio"] > 0


ON_DECAY = """
import json
from dagster import DagsterInstance, evaluate_automation_conditions
from ml_assets.definitions import defs
from ml_assets.keys import CLEANED_TRIPS, MODEL_PERFORMANCE, PREDICTIONS, RAW_TRIPS, TRIP_FEATURES
from ml_assets.records import latest_metadata
from ml_assets.runner.runs import materialize_month

instance = DagsterInstance.get()
first = evaluate_automation_conditions(defs=defs, instance=instance)
for month in ("2023-03", "2023-04"):  # ingested; monitoring scores the champion on each
    assert materialize_month(instance, month, [RAW_TRIPS, CLEANED_TRIPS, MODEL_PERFORMANCE]).success
second = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
(features,) = [result for result in second.results if result.key == TRIP_FEATURES]

def true_for(result, label):
    if result.condition.get_label() == label:
        return sorted(result.true_subset.expensively_compute_partition_keys())
    return next((found for child in result.child_results if (found := true_for(child, label)) is not None), None)

print(json.dumps({
    "ratios": {m: latest_metadata(instance, MODEL_PERFORMANCE, m)["champion_ratio"] for m in ("2023-03", "2023-04")},
    "features": sorted(second.get_requested_partitions(TRIP_FEATURES)),
    "predictions": sorted(second.get_requested_partitions(PREDICTIONS)),
    "decayed": true_for(features, "champion_decayed"),
}))
"""


def test_on_decay_trains_only_the_month_the_champion_decayed_on(history, monkeypatch, tmp_path):
    """2023-02's model is the champion; on 2023-03 it keeps its error, on 2023-04 it is worse: with a threshold
    between the two, automation trains 2023-04 only, and scores 2023-03 with the champion."""
    ratios = {}
    for month in ("2023-03", "2023-04"):
        performance, _ = performance_of(history, month, monkeypatch)
        (row,) = [r.data for r in performance["versions"].records if r.data["version"] == "1"]
        ratios[month] = row["ratio"]
    assert 1 < ratios["2023-04"] and ratios["2023-03"] < ratios["2023-04"]  # the real months decay so
    threshold = (ratios["2023-03"] + ratios["2023-04"]) / 2 - 1
    env = environment(
        tmp_path / "home",
        Path(history["ML_ASSETS_SOURCE"]),
        ML_ASSETS_RETRAIN="on_decay",
        ML_ASSETS_DECAY_THRESHOLD=f"{threshold:.6f}",
    )
    python(env, "-m", "ml_assets.runner", "2023-02")  # a launch by hand always trains: version 1, champion
    decided = json.loads(python(env, "-c", ON_DECAY).stdout.strip().splitlines()[-1])
    assert decided["ratios"] == pytest.approx(ratios, abs=1e-3)  # the same model as history's version 1
    assert decided["features"] == ["2023-04"]
    assert decided["decayed"] == ["2023-04"]
    assert decided["predictions"] == ["2023-03"]  # 2023-04's wait for its own model
