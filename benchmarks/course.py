"""Child process: the MLOps-Zoomcamp split (train 2021-01, test 2021-02), the course's XGBoost and
its LinearRegression; or, with `--months`, the course's XGBoost on each of those months, trained as
the course trains it (on the month before). Writes their test RMSE as JSON to `--out`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import xgboost as xgb

from benchmarks.harness import TEST_MONTH, TRAIN_MONTH
from benchmarks.plain import cleaned
from ml_assets.core.features import TEST, TRAIN, VALID, build_features, course_matrix, course_vocabulary, split_rows
from ml_assets.core.model import predict
from ml_assets.core.months import shift_month
from ml_assets.core.schema import DURATION
from ml_assets.core.sources.directory import DirectorySource
from ml_assets.core.training import baseline_rmse, regression_metrics

# The course notebook's best hyperopt result.
COURSE_PARAMS = {
    "learning_rate": 0.09585355369315604,
    "max_depth": 30,
    "min_child_weight": 1.060597050922164,
    "objective": "reg:squarederror",
    "reg_alpha": 0.018060244040060163,
    "reg_lambda": 0.011658731377413597,
    "seed": 42,
}


def course_xgboost_rmse(frame, rounds: int) -> dict:
    """The course's model, early-stopped on the test month itself (the course's own shortcut)."""
    training, test = split_rows(frame, TRAIN, VALID), split_rows(frame, TEST)
    vocabulary = course_vocabulary(training)
    X_train, X_test = course_matrix(training, vocabulary), course_matrix(test, vocabulary)
    y_test = test[DURATION].to_numpy()
    booster = xgb.train(
        COURSE_PARAMS,
        xgb.DMatrix(X_train, label=training[DURATION].to_numpy()),
        num_boost_round=rounds,
        evals=[(xgb.DMatrix(X_test, label=y_test), "test")],
        early_stopping_rounds=50,
        verbose_eval=False,
    )
    return {
        "rmse": regression_metrics(y_test, predict(booster, X_test))["rmse"],
        "best_iteration": booster.best_iteration,
    }


def course_frame(source: DirectorySource, train_month: str, test_month: str):
    """`course` features fit on all of `train_month`, the course's way (one month, no holdout of its own)."""
    training = {train_month: cleaned(source, train_month)}
    return build_features(training, cleaned(source, test_month), test_month, feature_set="course")


def course_split(data: Path, rounds: int) -> dict:
    """Both course models on the project's cleaning."""
    frame = course_frame(DirectorySource(str(data)), TRAIN_MONTH, TEST_MONTH)
    start = time.perf_counter()
    course = course_xgboost_rmse(frame, rounds)
    seconds = time.perf_counter() - start
    return {
        "xgboost": {**course, "params": COURSE_PARAMS, "rounds": rounds, "seconds": seconds},
        "linear_rmse": baseline_rmse(frame),
    }


def course_months(data: Path, months: list[str], rounds: int) -> dict:
    """The course's XGBoost on each month, trained on the month before it."""
    source = DirectorySource(str(data))
    return {month: course_xgboost_rmse(course_frame(source, shift_month(month, -1), month), rounds) for month in months}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="directory of TLC files")
    parser.add_argument("--rounds", type=int, required=True, help="boosting rounds of the course XGBoost")
    parser.add_argument("--months", nargs="+", help="score the course's XGBoost on these months instead")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.months:
        result = {"months": course_months(args.data, args.months, args.rounds)}
    else:
        result = course_split(args.data, args.rounds)
    with open(args.out, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
