"""The zone-pair statistics and the `rich` features' leakage guards, on a sample of real TLC months (fast)."""

import json

import numpy as np
import pandas as pd
import pytest

from ml_assets.core import pair_stats
from ml_assets.core.features import (
    FEATURE_INPUTS,
    FEATURE_SETS,
    SPLIT,
    TEST,
    TRAIN,
    VALID,
    WEIGHT,
    build_features,
    derive_features,
    design_matrices,
    holdout_rows,
    split_rows,
    transform,
)
from ml_assets.core.schema import DURATION, PICKUP
from ml_assets.core.zones import BOROUGHS, zone_flags
from ml_assets_tests.support import cleaned_months

MONTHS = ("2023-01", "2023-02", "2023-03")
AFTER_THE_TRIP = ("fare_amount", "tip_amount", "tolls_amount", "total_amount", "payment_type", "dropoff_datetime")


@pytest.fixture(scope="module")
def months():
    """A third of each month's trips (every third row): enough pairs, fast."""
    return cleaned_months(MONTHS, 3)


@pytest.fixture(scope="module")
def frame(months):
    return build_features({m: months[m] for m in MONTHS[:2]}, months[MONTHS[2]], MONTHS[2])


def test_the_holdout_is_the_newest_days_of_the_window(months, frame):
    held = frame[SPLIT] == VALID
    training = pd.concat([months[m] for m in MONTHS[:2]])
    newest = (training[PICKUP] >= pd.Timestamp("2023-02-22")).sum()  # the last 7 days before 2023-03
    assert held.sum() == newest
    assert (frame[SPLIT] == TEST).sum() == len(months[MONTHS[2]])
    # The first instant of the seventh day before the test month is held out, the one before it is not.
    edges = np.array(["2023-02-21T23:59:59", "2023-02-22", "2023-02-25", "2023-02-05"], dtype="datetime64[us]")
    assert holdout_rows(edges, MONTHS[2], 7).tolist() == [False, True, True, False]
    # Fewer days in the window than the holdout asks for: the newest rows are held out instead.
    short = build_features({MONTHS[1]: months[MONTHS[1]]}, months[MONTHS[2]], MONTHS[2], holdout_days=60)
    counts = short[SPLIT].value_counts()
    assert 0 < counts[VALID] < counts[TRAIN]


def test_recency_weights_per_month_back(months):
    weighted = build_features({m: months[m] for m in MONTHS[:2]}, months[MONTHS[2]], MONTHS[2], recency_weight=0.5)
    train = split_rows(weighted, TRAIN)
    assert train[WEIGHT].mean() == pytest.approx(1.0, rel=1e-5)
    assert len(np.unique(train[WEIGHT])) == 2  # one per month
    low, high = np.unique(train[WEIGHT])
    assert high / low == pytest.approx(2.0, rel=1e-5)
    # The newer month weighs more: the train rows are the window's months in order, none of 2023-01 held out.
    older = len(months[MONTHS[0]])
    assert (train[WEIGHT][:older] == low).all() and (train[WEIGHT][older:] == high).all()
    assert (split_rows(weighted, TEST)[WEIGHT] == 1).all()
    data = design_matrices(weighted, (TRAIN, VALID))
    assert data.w[TRAIN] is not None and len(data.w[TRAIN]) == len(data.y[TRAIN])


def test_poisoned_test_month_changes_no_statistic_and_no_training_row(months, frame):
    """The test month's durations never reach the encoder nor the training rows."""
    poisoned = months[MONTHS[2]].copy()
    poisoned[DURATION] = np.float32(59.0)
    again = build_features({m: months[m] for m in MONTHS[:2]}, poisoned, MONTHS[2])
    assert design_matrices(again).encoder == design_matrices(frame).encoder
    columns = [c for c in frame.columns if c != DURATION]
    pd.testing.assert_frame_equal(split_rows(again, TRAIN, VALID), split_rows(frame, TRAIN, VALID))
    pd.testing.assert_frame_equal(split_rows(again, TEST)[columns], split_rows(frame, TEST)[columns])


def test_the_holdout_is_not_fitted_either(months, frame):
    """Poisoning the holdout's durations changes no pair statistic of any row but the holdout's own duration."""
    training = {m: months[m].copy() for m in MONTHS[:2]}
    late = training[MONTHS[1]][PICKUP] >= pd.Timestamp("2023-02-22")
    training[MONTHS[1]].loc[late, DURATION] = np.float32(59.0)
    again = build_features(training, months[MONTHS[2]], MONTHS[2])
    assert design_matrices(again).encoder["pair_stats"] == design_matrices(frame).encoder["pair_stats"]
    for name in pair_stats.COLUMNS:
        np.testing.assert_array_equal(again[name].to_numpy(), frame[name].to_numpy())


def test_out_of_fold_values_differ_from_in_fold_ones(frame):
    train = split_rows(frame, TRAIN)
    in_fold = pair_stats.transform(train, design_matrices(frame).encoder["pair_stats"])
    stored = train["pair_duration"].to_numpy()
    assert not np.allclose(stored, in_fold["pair_duration"])
    # Out of fold, a trip's own duration does not pull its pair's value toward it; in fold it does.
    own = train[DURATION].to_numpy()
    assert (
        np.corrcoef(in_fold["pair_bucket_duration"], own)[0, 1] > np.corrcoef(train["pair_bucket_duration"], own)[0, 1]
    )


def test_out_of_fold_rows_never_see_their_own_day():
    """Every trip of a day in one fold: a pair seen on one day only falls back to the zones, out of fold. Here no
    zone of a trip is seen on another day either, so every level of every row is the mean of the other days' trips
    alone (the global mean out of fold): neither the row's own duration nor its day's reaches it."""
    rows = pd.DataFrame(
        {
            "PULocationID": [1, 1, 2, 3],
            "DOLocationID": [2, 2, 3, 1],
            "pickup_hour": np.float32([8, 9, 8, 8]),
            "pickup_weekday": np.int8([1, 1, 2, 3]),
            "trip_distance": np.float32([3, 3, 2, 1]),
            DURATION: np.float32([30, 40, 10, 5]),
        }
    )
    days = np.array([0, 0, 1, 2])
    oof = pair_stats.out_of_fold(rows, days)
    assert oof["pair_count"][0] == oof["pair_count"][1] == 0  # pair 1->2 only on day 0
    assert len(np.unique(days)) <= pair_stats.FOLDS  # so each day is a fold of its own
    log_duration = np.log(rows[DURATION].to_numpy(dtype="float64"))
    log_speed = np.log(rows["trip_distance"].to_numpy(dtype="float64") + pair_stats.DISTANCE_OFFSET) - log_duration
    for row in range(len(rows)):
        others = days != days[row]
        duration, speed = np.exp(log_duration[others].mean()), np.exp(log_speed[others].mean() + np.log(60.0))
        for level in ("pu", "do", "pair", "pair_bucket"):
            assert oof[f"{level}_duration"][row] == pytest.approx(duration, rel=1e-5), (row, level)
            assert oof[f"{level}_speed"][row] == pytest.approx(speed, rel=1e-5), (row, level)


def test_an_unseen_pair_falls_back_to_its_zones_then_the_global_value(frame):
    fitted = design_matrices(frame).encoder["pair_stats"]
    seen = fitted["tables"]["pair"]["keys"]
    zones = sorted(set(fitted["tables"]["pu"]["keys"]) & set(fitted["tables"]["do"]["keys"]))
    pickup, dropoff = next((a, b) for a in zones for b in zones if a * 1000 + b not in seen)
    rows = pd.DataFrame(
        {
            "PULocationID": [pickup, 999],
            "DOLocationID": [dropoff, 998],
            "pickup_hour": np.float32([12, 12]),
            "pickup_weekday": np.int8([2, 2]),
            "trip_distance": np.float32([2, 2]),
        }
    )
    encoded = pair_stats.transform(rows, fitted)
    assert encoded["pair_count"][0] == 0
    # The pair's value is what its two zones say, each relative to the mean (in log space).
    log = {level: np.log(encoded[f"{level}_duration"][0]) for level in ("pu", "do", "pair", "pair_bucket")}
    assert log["pair"] == pytest.approx(log["pu"] + log["do"] - fitted["global"]["log_duration"], abs=1e-5)
    assert log["pair_bucket"] == pytest.approx(log["pair"], abs=1e-5)
    # Zones never seen: the global value at every level.
    glob = np.exp(fitted["global"]["log_duration"])
    for name in ("pu_duration", "do_duration", "pair_duration", "pair_bucket_duration"):
        assert encoded[name][1] == pytest.approx(glob, rel=1e-5)


def test_a_zone_id_past_the_pair_key_s_range_shares_no_statistic_with_a_real_pair():
    """Pair keys are pu * 1000 + do: a trip 1 -> 1001 would have shared the key of 2 -> 1 (TLC's ids are 1..265,
    a month's file may hold any int32). Such a trip's pair gets the prior, and the real pair only its own trips."""
    rows = pd.DataFrame(
        {
            "PULocationID": [1] * 50 + [2] * 2,
            "DOLocationID": [1001] * 50 + [1] * 2,
            "pickup_hour": np.float32([12] * 52),
            "pickup_weekday": np.int8([2] * 52),
            "trip_distance": np.float32([2] * 52),
            DURATION: np.float32([50] * 50 + [5] * 2),
        }
    )
    fitted = pair_stats.fit(rows)
    assert fitted["tables"]["pair"]["keys"] == [2001]
    encoded = pair_stats.transform(rows, fitted)
    assert encoded["pair_count"][-1] == pytest.approx(np.log1p(2))
    assert encoded["pair_count"][0] == 0
    # The real pair's value: its two trips' mean, smoothed toward what its zones say ((sum + m * prior) / (n + m)).
    m, glob = pair_stats.SMOOTHING, (50 * np.log(50) + 2 * np.log(5)) / 52
    zone = (2 * np.log(5) + m * glob) / (2 + m)  # pickup zone 2 and dropoff zone 1: the same two trips
    pair = (2 * np.log(5) + m * (zone + zone - glob)) / (2 + m)
    assert encoded["pair_duration"][-1] == pytest.approx(np.exp(pair), rel=1e-5)
    # Every trip is 2 miles: that is each pair's typical distance, and a trip's distance at its pair-and-bucket's
    # speed takes that bucket's duration.
    np.testing.assert_allclose(encoded["pair_distance"], 2.0, rtol=1e-5)
    np.testing.assert_allclose(encoded["distance_ratio"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(encoded["speed_duration"], encoded["pair_bucket_duration"], rtol=1e-5)
    assert encoded["pair_bucket_duration"][-1] != pytest.approx(encoded["pair_duration"][-1], rel=1e-3)


def test_a_pair_s_time_buckets_start_at_each_hour_edge_and_keep_weekends_apart():
    """Bucket b holds hours [edge_b, edge_b+1) (HOUR_EDGES), Saturday and Sunday in buckets of their own."""
    rows = pd.DataFrame(
        {
            "PULocationID": [1] * 5,
            "DOLocationID": [2] * 5,
            "pickup_hour": np.float32([6.5, 7.0, 8, 8, 23]),
            "pickup_weekday": np.int8([0, 0, 4, 5, 6]),  # Monday, Monday, Friday, Saturday, Sunday
            "trip_distance": np.float32([2] * 5),
            DURATION: np.float32([10] * 5),
        }
    )
    table = pair_stats.fit(rows)["tables"]["pair_bucket"]
    weekend = len(pair_stats.HOUR_EDGES)
    assert dict(zip(table["keys"], table["count"], strict=True)) == {
        1002 * 100 + 0: 1,  # 6:30, before the 7:00 edge
        1002 * 100 + 1: 2,  # 7:00 on a Monday and 8:00 on a Friday
        1002 * 100 + weekend + 1: 1,  # 8:00 on a Saturday
        1002 * 100 + weekend + 5: 1,  # 23:00 on a Sunday
    }


def test_predictions_use_the_logged_encoder_with_the_numbers_of_training(months, frame):
    """A month scored from its cleaned trips and the encoder as MLflow stores it (JSON) gets exactly the
    columns the model was tested on: the same numbers as training."""
    data = design_matrices(frame)
    logged = json.loads(json.dumps(data.encoder))
    served = transform(derive_features(months[MONTHS[2]][FEATURE_INPUTS]), logged)
    tested = data.X[TEST]
    assert list(served.columns) == list(tested.columns)
    for name in tested.columns:
        pd.testing.assert_series_equal(
            served[name].reset_index(drop=True), tested[name].reset_index(drop=True), check_names=False
        )
    # An encoder of another format is refused, not read as this one.
    other = {**logged["pair_stats"], "format": "pair_stats/0"}
    with pytest.raises(ValueError, match="not a pair_stats/1 encoder: 'pair_stats/0'"):
        pair_stats.transform(derive_features(months[MONTHS[2]][FEATURE_INPUTS].head(5)), other)


def test_only_what_is_known_at_pickup_is_a_feature(months, frame):
    for names in FEATURE_SETS.values():
        assert not set(names) & {*AFTER_THE_TRIP, DURATION, WEIGHT}
    assert not set(FEATURE_INPUTS) & set(AFTER_THE_TRIP)
    assert not set(frame.columns) & set(AFTER_THE_TRIP)
    # The pair statistics read the zones, pickup time and distance of the rows they encode, and nothing else.
    rows = derive_features(months[MONTHS[2]].head(50))
    fitted = design_matrices(frame).encoder["pair_stats"]
    assert set(pair_stats.INPUTS) < set(rows.columns)
    reduced = rows[list(pair_stats.INPUTS)]
    for name, values in pair_stats.transform(rows, fitted).items():
        np.testing.assert_array_equal(values, pair_stats.transform(reduced, fitted)[name])


def test_zone_flags_from_the_shipped_lookup():
    rows = pd.DataFrame({"PULocationID": [132, 4, 999], "DOLocationID": [138, 4, 1]})
    flags = zone_flags(rows)
    assert [BOROUGHS[code] for code in flags["pu_borough"]] == ["Queens", "Manhattan", "Unknown"]
    assert list(flags["pu_airport"]) == [1, 0, 0] and list(flags["do_airport"]) == [1, 0, 1]
    assert list(flags["same_borough"]) == [1, 1, 0]


def test_ablation_feature_sets_are_rich_without_an_ingredient(months):
    rich = set(FEATURE_SETS["rich"])
    assert set(FEATURE_SETS["pairs"]) == rich - set(pair_stats.DISTANCE_COLUMNS)
    assert set(FEATURE_SETS["zones"]) == set(FEATURE_SETS["pairs"]) - set(pair_stats.PAIR_COLUMNS)
    plain = build_features({MONTHS[1]: months[MONTHS[1]]}, months[MONTHS[2]], MONTHS[2], "plain")
    assert not set(plain.columns) & set(pair_stats.COLUMNS)
    assert "pair_stats" not in design_matrices(plain).encoder


def test_chunks_change_no_value(frame, monkeypatch):
    """Rows are encoded a chunk at a time (memory); the chunk size changes no number."""
    train = split_rows(frame, TRAIN).head(5000)
    days = np.arange(len(train)) // 200
    fitted = pair_stats.fit(train)
    whole = pair_stats.out_of_fold(train, days), pair_stats.transform(train, fitted)
    monkeypatch.setattr(pair_stats, "CHUNK_ROWS", 777)
    chunked = pair_stats.out_of_fold(train, days), pair_stats.transform(train, fitted)
    for before, after in zip(whole, chunked, strict=True):
        for name in pair_stats.COLUMNS:
            np.testing.assert_array_equal(before[name], after[name])


def test_a_model_recorded_with_a_feature_config_this_code_does_not_know_is_refused():
    """A lineage from before the time holdout (`holdout_fraction`) cannot be rebuilt the same: refused at once."""
    from ml_assets.core import lineage
    from ml_assets.core.reproduction import rebuild

    recorded = {
        "format": lineage.FORMAT,
        "test_month": "2021-02",
        "training_months": ["2021-01"],
        "feature_config": {"feature_set": "rich", "holdout_fraction": 0.15, "seed": 0},
    }
    with pytest.raises(lineage.LineageError, match="holdout_fraction"):
        rebuild(recorded, fetch=lambda month: pytest.fail("no file is read"))


def test_the_model_is_trained_again_on_train_and_holdout_with_the_rounds_early_stopping_chose(frame):
    from ml_assets.core import model
    from ml_assets.core.training import refit_rounds, train_and_evaluate

    params = {**model.DEFAULT_PARAMS, "learning_rate": 0.3}
    once = train_and_evaluate(frame, params, num_boost_round=60, early_stopping_rounds=5, refit=False)
    again = train_and_evaluate(frame, params, num_boost_round=60, early_stopping_rounds=5, refit=True)
    assert (once.refitted, again.refitted) == (False, True)
    # Not refitted, the model keeps no round after its best: XGBoost's own predict (MLflow's loaded model) used them.
    assert model.rounds(once.model) == model.best_iteration(once.model) + 1 < once.first_rounds
    import xgboost

    every_tree = once.model.predict(xgboost.DMatrix(once.data.X[TEST], enable_categorical=True))
    np.testing.assert_allclose(every_tree, once.predicted, rtol=1e-6)
    rows = {split: int((frame[SPLIT] == split).sum()) for split in (TRAIN, VALID)}
    rounds = refit_rounds(model.best_iteration(once.model), rows[TRAIN], rows[TRAIN] + rows[VALID])
    assert model.rounds(again.model) == rounds == model.best_iteration(again.model) + 1
    # It keeps the holdout score of the model that chose its rounds; the test month is scored by the refit one.
    assert again.metrics["valid_rmse"] == once.metrics["valid_rmse"]
    assert again.metrics["rmse"] != once.metrics["rmse"]
    # A first training stopped by a callback (a time budget) is not refitted when refit=None.
    stopped = train_and_evaluate(
        frame, params, num_boost_round=60, early_stopping_rounds=5, refit=None, callbacks=[model.stop_at(0)]
    )
    assert not stopped.refitted


def test_a_refitted_model_is_rebuilt_from_the_rounds_its_first_training_ran(frame):
    """What `make reproduce` gives train_and_evaluate: the rounds of the first training, which here ran all of
    them without stopping early. The refitted model's own rounds, which the lineage held before, let the
    rebuild's first training boost on to another best round, and so refit for other rounds."""
    from ml_assets.core import model
    from ml_assets.core.training import train_and_evaluate

    first = train_and_evaluate(frame, model.DEFAULT_PARAMS, num_boost_round=10, early_stopping_rounds=5, refit=True)
    assert model.best_iteration(first.model) + 1 == model.rounds(first.model) > first.first_rounds == 10
    rebuilt = train_and_evaluate(
        frame, model.DEFAULT_PARAMS, num_boost_round=first.first_rounds, early_stopping_rounds=5, refit=True
    )
    np.testing.assert_array_equal(rebuilt.predicted, first.predicted)
    boosted_on = train_and_evaluate(
        frame, model.DEFAULT_PARAMS, num_boost_round=model.rounds(first.model), early_stopping_rounds=5, refit=True
    )
    assert model.rounds(boosted_on.model) > model.rounds(first.model)


def test_the_champion_is_scored_with_its_own_pair_statistics(months, frame):
    """A champion of an earlier window, scored on this frame's test month (trained_model's champion_rmse, the
    gate), gets the columns its own logged encoder gives, as predictions and model_performance serve it: not the
    statistics this frame fitted on its newer window."""
    from types import SimpleNamespace

    from ml_assets.core import model
    from ml_assets.core.training import champion_rmse

    earlier = build_features({MONTHS[0]: months[MONTHS[0]]}, months[MONTHS[1]], MONTHS[1])
    data = design_matrices(earlier)
    booster = model.fit(data, {"max_depth": 4}, num_boost_round=20, early_stopping_rounds=5)
    champion = (SimpleNamespace(version="3", tags={"partition": MONTHS[1]}), booster, data.encoder)
    served = model.predict(booster, transform(derive_features(months[MONTHS[2]][FEATURE_INPUTS]), data.encoder))
    expected = np.sqrt(np.mean((served - months[MONTHS[2]][DURATION].to_numpy()) ** 2))
    assert champion_rmse(frame, champion) == pytest.approx(expected, rel=1e-6)
