"""Features, training and tuning as plain functions, on real TLC months; best_params' time budget also as a step."""

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from dagster import DagsterEventType

from ml_assets.core import features
from ml_assets.core.cleaning import clean_trips
from ml_assets.core.features import SPLIT, TEST, TRAIN, VALID, build_features, design_matrices, fit_encoder, transform
from ml_assets.core.gate import gate_model
from ml_assets.core.model import DEFAULT_PARAMS, fit, from_bytes, predict, stop_at, to_bytes
from ml_assets.core.training import baseline_rmse, regression_metrics
from ml_assets.core.tuning import FIXED_PARAMS, TrialProgress, tune
from ml_assets.records import latest_metadata
from ml_assets.runner.runs import materialize_month
from ml_assets_tests.support import BIN, FAST_CONFIG, ROOT, TLC_DATA, cpu_quota


@pytest.fixture(scope="module")
def months():
    return {
        m: clean_trips(pq.read_table(TLC_DATA / f"green_tripdata_{m}.parquet"), m, m).trips
        for m in ("2021-01", "2021-02")
    }


@pytest.fixture(scope="module")
def rich(months):
    return build_features({"2021-01": months["2021-01"]}, months["2021-02"], "2021-02")


def test_splits_keep_the_test_month_apart(months, rich):
    counts = rich[SPLIT].value_counts()
    assert counts[TEST] == len(months["2021-02"])
    assert counts[TRAIN] + counts[VALID] == len(months["2021-01"])
    # The holdout is the window's newest 7 days, 2021-01-25 to 31.
    assert counts[VALID] == (months["2021-01"]["pickup_datetime"] >= "2021-01-25").sum() > 0
    assert rich.attrs == {"feature_set": "rich", "training_months": ["2021-01"], "test_month": "2021-02"}


def test_zone_categories_come_from_training_months_only(months):
    train = months["2021-01"]
    unseen = train["PULocationID"].iloc[0]
    kept = train[train["PULocationID"] != unseen]
    frame = build_features({"2021-01": kept}, months["2021-02"], "2021-02")
    assert unseen not in frame["PULocationID"].cat.categories
    tested = frame[frame[SPLIT] == TEST]
    seen = set(kept["PULocationID"].astype(int))
    unseen_in_test = ~months["2021-02"]["PULocationID"].astype(int).isin(seen)
    assert tested["PULocationID"].isna().sum() == unseen_in_test.sum()
    assert (months["2021-02"]["PULocationID"] == unseen).sum() > 0


def test_the_model_input_has_no_missing_trip_codes_unless_an_old_encoder_left_them(rich):
    # XGBoost stores a matrix without missing values densely, in half the memory.
    nulls = {name: int(rich[name].isna().sum()) for name in features.NULLABLE_CODES}
    assert sum(nulls.values()) > 0  # TLC leaves some codes null
    data = design_matrices(rich)
    for split in (TRAIN, VALID, TEST):
        X = data.X[split]
        assert not X[list(features.NULLABLE_CODES)].isna().any().any()
    train = rich[rich[SPLIT] == TRAIN]
    for name in features.NULLABLE_CODES:
        null = train[name].isna().to_numpy()
        assert (data.X[TRAIN][name].to_numpy()[null] == features.MISSING_CODE).all()
        assert np.array_equal(data.X[TRAIN][name].to_numpy()[~null], train[name].to_numpy()[~null])
    # An encoder logged before the fill (no `missing_code`) gets its model the NaN it was trained on.
    old = {key: value for key, value in data.encoder.items() if key != "missing_code"}
    assert transform(train, old)[list(features.NULLABLE_CODES)].isna().sum().sum() == sum(
        int(train[name].isna().sum()) for name in features.NULLABLE_CODES
    )


def test_zones_beyond_256_fold_into_one_category_in_training_and_serving(monkeypatch, rich):
    # The same rule, tried on fewer zones: the training months' 5 rarest pickup zones share OTHER_ZONE.
    counts = rich.loc[rich[SPLIT] != TEST, "PULocationID"].astype(int).value_counts()
    ranked = sorted(counts.index, key=lambda zone: (-counts[zone], zone))  # ties: the lower id stays
    monkeypatch.setattr(features, "MAX_ZONE_CATEGORIES", len(counts) - 4)
    encoder = fit_encoder(rich)
    json.dumps(encoder)  # logged with the model as JSON
    folded = encoder["folded_zones"]["PULocationID"]
    assert folded == sorted(ranked[-5:])
    assert encoder["categories"]["PULocationID"] == sorted([features.OTHER_ZONE, *ranked[:-5]])
    for split in (TRAIN, TEST):
        rows = rich[rich[SPLIT] == split]
        zones = transform(rows, encoder)["PULocationID"]
        is_folded = rows["PULocationID"].isin(folded).to_numpy()
        assert is_folded.any() and (zones[is_folded] == features.OTHER_ZONE).all()
        kept = ~is_folded & rows["PULocationID"].notna().to_numpy()
        assert np.array_equal(zones[kept].astype(int).to_numpy(), rows["PULocationID"][kept].astype(int).to_numpy())
    # A window within the limit folds nothing.
    monkeypatch.undo()
    assert fit_encoder(rich).get("folded_zones") == {}


def test_course_features_reproduce_the_course_linear_regression(months):
    course = build_features({"2021-01": months["2021-01"]}, months["2021-02"], "2021-02", feature_set="course")
    assert baseline_rmse(course) == pytest.approx(7.76, abs=0.02)
    data = design_matrices(course)
    assert data.X[TEST].shape[1] == len(data.encoder["vocabulary"])
    # As the course's DictVectorizer, fitted on the training month: its zone pairs only, and the distance.
    train = months["2021-01"]
    pairs = train["PULocationID"].astype(int).astype(str) + "_" + train["DOLocationID"].astype(int).astype(str)
    assert data.encoder["vocabulary"] == sorted({f"PU_DO={pair}" for pair in pairs} | {"trip_distance"})


def test_one_trip_of_thousands_of_miles_leaves_the_baseline_a_yardstick(months):
    """TLC's files keep trips of thousands of miles. Fitted on a window without one, the baseline's slope per mile
    would predict such a test trip at days; its predictions are held to a cleaned trip's 1 to 60 minutes."""
    train = months["2021-01"][months["2021-01"]["trip_distance"] < 100]
    test = months["2021-02"].copy()
    course = build_features({"2021-01": train}, test, "2021-02", feature_set="course")
    test.loc[test.index[0], "trip_distance"] = 33_650.0
    far = build_features({"2021-01": train}, test, "2021-02", feature_set="course")
    assert baseline_rmse(far) == pytest.approx(baseline_rmse(course), abs=0.01)


def test_a_window_of_one_trip_is_refused_naming_the_month(months):
    with pytest.raises(ValueError, match=r"2021-02: the training window \(2021-01\) has 1 trip\(s\)"):
        build_features({"2021-01": months["2021-01"].head(1)}, months["2021-02"], "2021-02")


def test_trained_model_beats_baseline_and_round_trips(rich):
    data = design_matrices(rich)
    booster = fit(data, {"max_depth": 6, "learning_rate": 0.3}, num_boost_round=200, early_stopping_rounds=10)
    predicted = predict(booster, data.X[TEST])
    assert regression_metrics(data.y[TEST], predicted)["rmse"] < baseline_rmse(rich) - 1.0
    again = from_bytes(to_bytes(booster))
    np.testing.assert_allclose(predict(again, data.X[TEST]), predicted, rtol=1e-6)


def test_a_model_the_champion_cannot_be_compared_with_does_not_replace_it(months, rich):
    """A `course` model trained while a `rich` champion serves: the champion reads columns the course frame does
    not carry. It had failed the step with a bare KeyError; the new model now stays a challenger, saying why."""
    data = design_matrices(rich)
    champion = (
        SimpleNamespace(version="9", tags={}, run_id=None),
        fit(data, {"max_depth": 2}, num_boost_round=5),
        data.encoder,
    )
    course = build_features({"2021-01": months["2021-01"]}, months["2021-02"], "2021-02", feature_set="course")
    scored_on = features.digest_of_test_rows(course)
    verdict = gate_model(course, 1.0, baseline_rmse(course), 0.02, champion, scored_on=scored_on)
    assert not verdict.passed and verdict.champion_version == "9"
    assert "the champion (version 9, rich features) cannot be scored on this month's course features" in verdict.reason


def test_a_model_of_an_earlier_month_than_the_champion_s_does_not_replace_it(rich):
    """2021-02 trained again while the champion was tested on 2021-04: that champion trained on 2021-02, so
    comparing the two there favours neither fairly, and serving the older model would move back in time."""
    data = design_matrices(rich)
    booster = fit(data, {"max_depth": 2}, num_boost_round=5)
    later = (SimpleNamespace(version="7", tags={"partition": "2021-04"}, run_id=None), booster, data.encoder)
    scored_on = features.digest_of_test_rows(rich)
    verdict = gate_model(rich, 1.0, baseline_rmse(rich), 0.02, later, scored_on=scored_on)
    assert not verdict.passed and verdict.champion_version == "7"
    assert "the champion (version 7) was tested on 2021-04, after this model's month 2021-02" in verdict.reason
    same_month = (SimpleNamespace(version="7", tags={"partition": "2021-02"}, run_id=None), booster, data.encoder)
    assert gate_model(rich, 1.0, baseline_rmse(rich), 0.02, same_month, scored_on=scored_on).passed  # trained again


def test_an_interrupt_while_the_matrix_is_built_is_raised_as_it_came(rich):
    """Ctrl-C (Dagster's termination alike) while XGBoost reads the parts had been reported as an XGBoostError."""
    from ml_assets.core.model import part_matrix

    data = design_matrices(rich)

    def parts():
        yield data.X[TEST], data.y[TEST], None
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        part_matrix(parts)


def test_study_continues_and_tries_the_defaults_and_the_warm_start_first(tmp_path, rich):
    sample = rich.sample(8_000, random_state=0)
    sample.attrs = rich.attrs
    data = design_matrices(sample)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    warm = {
        "max_depth": 7,
        "learning_rate": 0.08,
        "min_child_weight": 30.0,
        "subsample": 0.7,
        "colsample_bytree": 0.7,
        "reg_lambda": 2.0,
    }
    logged = []
    first = tune(data, storage, "s", n_trials=2, timeout_seconds=60, warm_start=warm, progress=logged.append)
    assert (first.trials_run, first.trials_total) == (2, 2)
    import optuna

    trials = optuna.load_study(study_name="s", storage=storage).trials
    tuned = [
        {name: value for name, value in params.items() if name not in FIXED_PARAMS} for params in (DEFAULT_PARAMS, warm)
    ]
    assert [trials[0].params, trials[1].params] == tuned  # the regularised defaults, then the warm start
    # The learning rate is not searched (a warm start's, from an older study, is left out), but is in the result.
    assert first.params["learning_rate"] == DEFAULT_PARAMS["learning_rate"]
    second = tune(data, storage, "s", n_trials=2, timeout_seconds=60, warm_start=warm, num_boost_round=40)
    assert (second.trials_run, second.trials_total) == (2, 4)  # continued, warm start not repeated
    assert second.valid_rmse <= first.valid_rmse
    later = optuna.load_study(study_name="s", storage=storage).trials[2:]
    assert [trial.user_attrs["best_iteration"] < 40 for trial in later] == [True, True]  # at most 40 rounds each
    assert [(trial.finished, trial.budget, trial.number, trial.state) for trial in logged] == [
        (1, 2, 0, "complete"),
        (2, 2, 1, "complete"),
    ]
    # What the step logs, `make run`'s live line reads back.
    parsed = TrialProgress.parse(logged[0].line())
    assert parsed._replace(value=None, best=None) == logged[0]._replace(value=None, best=None)
    assert parsed.best == pytest.approx(logged[0].best, abs=1e-4)


@pytest.mark.slow
def test_studies_sharing_a_sqlite_file_never_take_one_enqueued_trial_twice(tmp_path):
    """pysqlite reads outside a transaction: two runs of one month at once both took the study's enqueued
    trial, and the second to finish it failed (`Cannot tell a COMPLETE trial`). Three connections (a
    thread each) ask for the 150 enqueued trials: each is handed out once (core.locks.lock_at_begin)."""
    import threading

    import optuna

    from ml_assets.core.tuning import study_storage

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="month", storage=study_storage(url))
    for number in range(150):
        study.enqueue_trial({"x": number})
    handed_out = []

    def ask_fifty() -> None:
        mine = optuna.load_study(study_name="month", storage=study_storage(url))
        handed_out.extend(mine.ask().number for _ in range(50))

    threads = [threading.Thread(target=ask_fifty) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(handed_out) == list(range(150))


@pytest.mark.process
@pytest.mark.parametrize("winner_commits", ["before", "while_waited_for"])
def test_a_first_study_storage_on_a_server_takes_tables_another_process_created_meanwhile_as_found(winner_commits):
    """Two first studies on a fresh PostgreSQL database (workers of two machines, where no lock file holds) both
    found no tables, and the second to create them failed its step: `relation "studies" already exists` (the
    first had committed), or a duplicate key of PostgreSQL's catalog (it committed while the second waited).
    Here the other process creates them just after optuna's check; the storage is then taken as found."""
    import threading

    import optuna
    import sqlalchemy
    from optuna.storages._rdb import models
    from sqlalchemy import event

    from ml_assets.core.tuning import study_storage
    from ml_assets.deploy.local.postgres import throwaway_postgres
    from ml_assets_tests.deployment_support import require_servers

    require_servers()
    with throwaway_postgres() as server:
        url = server.url()
        other = sqlalchemy.create_engine(url)
        raced = []

        def other_process_creates(*_args, **_kwargs) -> None:
            """After optuna's create_all decided what to create, before it creates anything."""
            if raced:
                return
            raced.append(True)
            if winner_commits == "before":
                models.BaseModel.metadata.create_all(other)
                return
            connection = other.connect()
            transaction = connection.begin()
            models.BaseModel.metadata.create_all(connection)

            def commit_once_waited_for() -> None:
                waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                with other.connect() as watcher:
                    while not watcher.execute(sqlalchemy.text(waiting)).scalar():
                        time.sleep(0.05)
                transaction.commit()
                connection.close()

            threading.Thread(target=commit_once_waited_for).start()

        event.listen(models.BaseModel.metadata, "before_create", other_process_creates, insert=True)
        try:
            storage = study_storage(url)
        finally:
            event.remove(models.BaseModel.metadata, "before_create", other_process_creates)
        optuna.create_study(study_name="month", storage=storage)
        assert raced and [study.study_name for study in storage.get_all_studies()] == ["month"]
        storage.engine.dispose()
        other.dispose()


def test_a_trial_has_a_heartbeat_before_its_work_starts(tmp_path, monkeypatch):
    """optuna's heartbeat thread writes a trial's first beat a moment after the trial starts: a trial killed in
    between had none, and stayed RUNNING through every later study (kill -9 under two test workers).
    With the thread kept from writing, as in that moment, each trial still has its beat when its work starts."""
    import optuna
    import sqlalchemy
    from optuna.storages._heartbeat import NullHeartbeatThread

    from ml_assets.core.tuning import _optimize, study_storage

    monkeypatch.setattr(optuna.study._optimize, "get_heartbeat_thread", lambda *_: NullHeartbeatThread())
    storage = study_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="month", storage=storage)
    beats = []

    def objective(trial) -> float:
        count = "SELECT count(*) FROM trial_heartbeats WHERE trial_id = :id"
        with storage.engine.connect() as connection:
            beats.append(connection.execute(sqlalchemy.text(count), {"id": trial._trial_id}).scalar())
        return 1.0

    _optimize(study, storage, objective, n_trials=3)
    assert beats == [1, 1, 1]


def test_a_budget_spent_before_the_first_trial_still_gives_params(tmp_path, rich):
    """The setup (study tables, the sample's matrices) took the whole budget: one trial runs, its training
    stopped after its first round, and its params are the result."""
    sample = rich.sample(8_000, random_state=0)
    sample.attrs = rich.attrs
    result = tune(design_matrices(sample), f"sqlite:///{tmp_path / 'optuna.db'}", "spent", 25, 0)
    assert (result.trials_run, result.trials_total) == (1, 1)
    assert result.study.best_trial.user_attrs["best_iteration"] == 0
    assert set(result.params) >= {"max_depth", "learning_rate"}


# Another process keeps both cores busy training XGBoost, as a second run on the same machine would
# (its threads spinning as by default, not sleeping as the tests' own: conftest.py).
BUSY = [sys.executable, "-m", "benchmarks.busy"]


def start_busy() -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if name != "OMP_WAIT_POLICY"}
    return subprocess.Popen(BUSY, cwd=ROOT, env=env)


@pytest.mark.process
def test_the_time_budget_holds_inside_a_trial_under_load(tmp_path, rich):
    busy = start_busy()
    try:
        start = time.monotonic()
        result = tune(design_matrices(rich), f"sqlite:///{tmp_path / 'optuna.db'}", "budget", 1000, 5, threads=2)
        seconds = time.monotonic() - start
    finally:
        busy.kill()
        busy.wait()
    assert result.trials_run >= 1
    # Generous for a loaded machine (it must not take minutes); the tight figure is in the benchmark.
    assert seconds < 45, seconds


def test_a_trial_whose_budget_is_spent_before_its_first_round_still_has_a_score(rich):
    """On a loaded machine the budget can run out between optuna's check and a trial's first round."""
    stopped = []
    booster = fit(design_matrices(rich), {}, 100, 10, callbacks=[stop_at(time.monotonic() - 1, stopped.append)])
    assert booster.best_iteration == 0 and booster.best_score > 0
    assert stopped == [1]


@pytest.fixture
def featured(instance, monkeypatch) -> None:
    """2021-02's trip_features stored in `instance` (its window, 2021-01, ingested): best_params' input."""
    monkeypatch.setenv("ML_ASSETS_SOURCE", str(TLC_DATA))
    materialize_month(instance, "2021-01", ["raw_trips", "cleaned_trips"], run_config=FAST_CONFIG)
    materialize_month(instance, "2021-02", ["raw_trips", "cleaned_trips", "trip_features"], run_config=FAST_CONFIG)


@pytest.mark.process
def test_best_params_keeps_its_time_budget_under_load(instance, featured, monkeypatch):
    """The whole step (reading its sample of the stored features, the study, its plots) within the budget."""
    monkeypatch.setenv("ML_ASSETS_PARALLEL_TRAINING_STEPS", "1")  # the step alone on the machine: every core
    budget = {"ops": {"best_params": {"config": {"n_trials": 1000, "timeout_seconds": 5}}}}
    busy = start_busy()
    try:
        result = materialize_month(instance, "2021-02", ["best_params"], run_config=budget)
    finally:
        busy.kill()
        busy.wait()
    assert result.success
    events = instance.all_logs(result.run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS})
    started, ended = (
        next(e.timestamp for e in events if e.dagster_event_type == kind)
        for kind in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS)
    )
    # Generous for a loaded machine (it must not take minutes); the tight figure is in the benchmark.
    assert ended - started < 45, ended - started
    assert latest_metadata(instance, "best_params", "2021-02")["xgboost_threads"] == len(os.sched_getaffinity(0))


@pytest.mark.process
def test_xgboost_threads_follow_a_containers_cpu_quota(instance, featured, monkeypatch):
    """Limited to 1 CPU as a container is, on a machine that shows 2: best_params trains on 1 thread."""
    assert len(os.sched_getaffinity(0)) >= 2
    monkeypatch.setenv("ML_ASSETS_PARALLEL_TRAINING_STEPS", "1")  # the step alone: only the quota limits it
    budget = {"ops": {"best_params": FAST_CONFIG["ops"]["best_params"]}}
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", "ml_assets.definitions", "--select", "best_params"]
    command += ["--partition", "2021-02", "--config-json", json.dumps(budget)]
    with cpu_quota(1) as limited:
        result = subprocess.run([*limited, *command], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    metadata = latest_metadata(instance, "best_params", "2021-02")
    assert metadata["xgboost_threads"] == 1 and metadata["trials_run"] == 2


def test_a_version_that_cannot_score_the_month_is_left_out_with_the_reason(months, rich):
    """A version registered by hand from a notebook's run (tagged with a month, but an encoder or model of other
    features) loaded, then failed model_performance for every version with a bare KeyError while it was scored."""
    from ml_assets.core.performance import RegisteredModel, score_versions

    data = design_matrices(rich)
    booster = fit(data, {"max_depth": 2}, num_boost_round=5)
    ours = RegisteredModel("1", ["2020-12"], "2021-01", 5.0, booster, data.encoder)
    notebook = RegisteredModel("2", [], "2021-01", 5.0, booster, {"features": ["trip_distance"]})
    scores, refused = score_versions(months["2021-02"], "2021-02", [ours, notebook])
    assert list(scores["version"]) == ["1"] and scores["realized_rmse"].iloc[0] > 0
    assert list(refused) == ["2"] and refused["2"].startswith("cannot score 2021-02's trips: KeyError")


def test_a_champion_of_no_ml_assets_features_is_no_crash_of_the_gate(rich):
    """`champion` moved by hand to a version of a notebook's run (an encoder of another shape, a model of other
    features): the gate failed with a KeyError raised while it reported the first one."""
    data = design_matrices(rich)
    booster = fit(data, {"max_depth": 2}, num_boost_round=5)
    scored_on = features.digest_of_test_rows(rich)
    for encoder in ({"features": ["trip_distance"]}, {**data.encoder, "features": data.encoder["features"][:2]}):
        notebook = (SimpleNamespace(version="5", tags={}, run_id=None), booster, encoder)
        verdict = gate_model(rich, 1.0, baseline_rmse(rich), 0.02, notebook, scored_on=scored_on)
        assert not verdict.passed and verdict.champion_version == "5"
        assert "the champion (version 5" in verdict.reason and "cannot be scored on this month's" in verdict.reason
