"""Child process: the graph's work for one month with the Dagster-free core functions only.

The yardstick for orchestration overhead: read and clean the months, build features, tune on a
fresh optuna storage, train, evaluate, compute the baseline and log to MLflow, as the assets do
with their default config, minus Dagster (no run/event storage, no IO managers, no step processes).
Writes the test and baseline RMSE as JSON to `--out`.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pyarrow.parquet as pq

from ml_assets.core.cleaning import clean_trips
from ml_assets.core.features import TEST, build_features, design_matrices
from ml_assets.core.sources.directory import DirectorySource
from ml_assets.core.tracking import ensure_experiment, log_trained_model
from ml_assets.core.training import baseline_rmse, predict, regression_metrics, train_booster
from ml_assets.core.tuning import tune

EXPERIMENT = "trip_duration"  # the mlflow resource's default experiment


def cleaned(source: DirectorySource, month: str):
    return clean_trips(pq.read_table(source.fetch(month)), month, where=f"month {month}").trips


def log_model(state: Path, month: str, params: dict, metrics: dict, booster, data) -> None:
    """What trained_model logs, into a fresh sqlite tracking store like the resource's."""
    import mlflow

    uri = f"sqlite:///{state / 'mlflow.db'}"
    ensure_experiment(uri, EXPERIMENT)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run():
        log_trained_model(run_name=f"plain trained_model {month}", params={**params, "feature_set": "rich"},
                          metrics={**metrics, "best_iteration": booster.best_iteration},
                          tags={"partition": month}, booster=booster, encoder=data.encoder,
                          input_example=data.X[TEST][:5])


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
    frame = build_features({m: cleaned(source, m) for m in args.train}, cleaned(source, args.test), args.test)
    data = design_matrices(frame)
    tuned = tune(data, f"sqlite:///{state / 'optuna.db'}", f"trip_duration-rich-{args.test}", args.trials,
                 args.timeout, seed=0, threads=threads, log=lambda message: None)
    booster = train_booster(data, tuned.params, threads=threads)
    metrics = {**regression_metrics(data.y[TEST], predict(booster, data.X[TEST])), "baseline_rmse": baseline_rmse(frame)}
    log_model(state, args.test, tuned.params, metrics, booster, data)
    with open(args.out, "w") as out:
        json.dump({**metrics, "trials_run": tuned.trials_run, "valid_rmse": tuned.valid_rmse}, out)


if __name__ == "__main__":
    main()
