"""Child process: the graph's work for one month with the Dagster-free core functions only.

The yardstick for orchestration overhead. It does what the assets and their checks do for month M
with their default settings (the trial budget comes from the caller): read and check the month,
clean and check it (drift against M-1 included), build features, tune on a fresh optuna storage,
train, evaluate, compute the baseline, gate and register the model in a fresh MLflow store, and
score M with the champion. Minus Dagster: no run or event storage, no IO managers (no asset files),
no step processes. Writes the RMSEs, the trial count and the time per asset as JSON to `--out`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import pyarrow.parquet as pq

from ml_assets.core import quality, tracking
from ml_assets.core.cleaning import clean_trips
from ml_assets.core.features import SPLIT, TEST, build_features, derive_features, design_matrices, transform
from ml_assets.core.months import shift_month
from ml_assets.core.sources.directory import DirectorySource
from ml_assets.core.training import baseline_rmse, predict, quality_gate, regression_metrics, train_booster
from ml_assets.core.tuning import tune

EXPERIMENT = "trip_duration"  # the mlflow resource's default experiment
CHAMPION_TOLERANCE = 0.02  # TrainingConfig's default


def cleaned(source: DirectorySource, month: str):
    return clean_trips(pq.read_table(source.fetch(month)), month, where=f"month {month}").trips


@contextlib.contextmanager
def timed(stages: dict, name: str):
    """Record the block's wall time under `name`, the asset it stands for."""
    start = time.perf_counter()
    yield
    stages[name] = time.perf_counter() - start


def start_tracking(state: Path) -> None:
    """A fresh sqlite MLflow store, set up as the mlflow resource sets it up."""
    import mlflow

    uri = f"sqlite:///{state / 'mlflow.db'}"
    tracking.ensure_experiment(uri, EXPERIMENT)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(EXPERIMENT)


def champion_rmse(frame, y_test):
    """The current champion's RMSE on the test month, None without a champion (as on a fresh store)."""
    champion = tracking.load_champion()
    if champion is None:
        return None
    _, booster, encoder = champion
    return regression_metrics(y_test, predict(booster, transform(frame[frame[SPLIT] == TEST], encoder)))["rmse"]


def train_and_register(frame, params: dict, month: str, threads: int) -> dict:
    """trained_model: train, evaluate, gate, log and register, move the alias."""
    import mlflow

    data = design_matrices(frame)
    booster = train_booster(data, params, threads=threads)
    metrics = {**regression_metrics(data.y[TEST], predict(booster, data.X[TEST])),
               "baseline_rmse": baseline_rmse(frame)}
    champion = champion_rmse(frame, data.y[TEST])
    passed, _ = quality_gate(metrics["rmse"], metrics["baseline_rmse"], champion, CHAMPION_TOLERANCE)
    with mlflow.start_run():
        tracked = tracking.log_trained_model(
            run_name=f"plain trained_model {month}", params={**params, "feature_set": data.encoder["feature_set"]},
            metrics={**metrics, "best_iteration": booster.best_iteration}, tags={"partition": month},
            booster=booster, encoder=data.encoder, input_example=data.X[TEST][:5])
        tracking.set_alias(tracked["model_version"], tracking.CHAMPION if passed else tracking.CHALLENGER)
    return metrics


def score_with_champion(trips) -> float:
    """trip_duration_predictions: the month scored by the champion."""
    _, booster, encoder = tracking.load_champion()
    predicted = predict(booster, transform(derive_features(trips), encoder))
    return regression_metrics(trips["duration"].to_numpy(), predicted)["rmse"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="directory of TLC files")
    parser.add_argument("--state", required=True, help="fresh directory for optuna and MLflow storage")
    parser.add_argument("--train", nargs="+", required=True, help="training months")
    parser.add_argument("--test", required=True, help="test month")
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    source, state, threads = DirectorySource(args.data), Path(args.state), len(os.sched_getaffinity(0))
    month, rules, stages = args.test, quality.QualityRules.from_env(), {}
    training = {m: cleaned(source, m) for m in args.train}  # in storage already on the CLI side
    with timed(stages, "raw_trips"):
        raw = pq.read_table(source.fetch(month))
        quality.raw_rules(raw, month, rules)
    with timed(stages, "cleaned_trips"):
        trips = clean_trips(raw, month, where=f"month {month}")
        quality.cleaned_rules(trips.trips, month, trips.raw_rows, rules)
        previous = shift_month(month, -1)
        if previous in training:
            quality.drift(training[previous], trips.trips, rules, previous, month)
    with timed(stages, "trip_features"):
        frame = build_features(training, trips.trips, month)
    with timed(stages, "best_params"):
        tuned = tune(design_matrices(frame), f"sqlite:///{state / 'optuna.db'}", f"trip_duration-rich-{month}",
                     args.trials, args.timeout, seed=0, threads=threads, log=lambda message: None)
    with timed(stages, "trained_model"):
        start_tracking(state)
        metrics = train_and_register(frame, tuned.params, month, threads)
    with timed(stages, "trip_duration_predictions"):
        predictions_rmse = score_with_champion(trips.trips)
    with open(args.out, "w") as out:
        json.dump({**metrics, "predictions_rmse": predictions_rmse, "trials_run": tuned.trials_run,
                   "valid_rmse": tuned.valid_rmse, "stages": stages}, out)


if __name__ == "__main__":
    main()
