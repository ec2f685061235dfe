"""Child process: the graph's work for one month with the Dagster-free core functions only.

The yardstick for orchestration overhead. It does what the assets and their checks do for month M
with their default settings (the trial budget comes from the caller): read and check the month,
clean and check it (drift against M-1 included), build features, tune on a fresh optuna storage,
train, evaluate, compute the baseline, gate and register the model in a fresh MLflow store, and
score M with the champion. It draws the figures the assets draw (trip durations, drift, the study,
the model's four, logged to MLflow) and scores the champion of the moment as trained_model does.
Minus Dagster: no run or event storage, no IO managers (no asset files), no step processes, no
metadata. Writes the RMSEs, the trial count and the time per asset as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from pathlib import Path

import pyarrow.parquet as pq

from ml_assets import settings
from ml_assets.core import drift, model, plots, rules, tracking
from ml_assets.core.cleaning import clean_trips
from ml_assets.core.features import TEST, TRAIN, VALID, build_features, derive_features, design_matrices, transform
from ml_assets.core.gate import CHAMPION_TOLERANCE, gate_model
from ml_assets.core.model import usable_cores
from ml_assets.core.months import shift_month
from ml_assets.core.schema import DURATION
from ml_assets.core.sources.directory import DirectorySource
from ml_assets.core.training import regression_metrics, train_and_evaluate
from ml_assets.core.tuning import sample_rows, study_name, tune, tuning_sample

EXPERIMENT = settings.MLFLOW_EXPERIMENT.default
log = logging.getLogger("benchmarks.plain")


def draw(figures: dict) -> dict[str, bytes]:
    """Every figure as PNG bytes, as the assets draw them."""
    return plots.draw_all(figures, log)[0]


def cleaned(source: DirectorySource, month: str):
    return clean_trips(pq.read_table(source.fetch(month)), month, origin=f"month {month}").trips


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


def train_and_register(frame, params: dict, month: str, threads: int) -> dict:
    """trained_model and model_gate: train, evaluate, log, then judge, register and move the alias."""
    import mlflow

    trained = train_and_evaluate(frame, params, tracking.load_champion(), threads=threads, refit=None)
    metrics, data = trained.metrics, trained.data
    with mlflow.start_run(run_name=f"plain trained_model {month}", tags={tracking.PARTITION_TAG: month}):
        logged = tracking.log_trained_model(
            params={**params, "feature_set": data.encoder["feature_set"]},
            metrics={**metrics, "best_iteration": model.best_iteration(trained.model)},
            trained=trained.model,
            encoder=data.encoder,
            lineage={},
            input_example=data.X[TEST][:5],
        )
        rmses = {
            "this model": metrics["rmse"],
            "champion": metrics.get("champion_rmse"),
            "baseline": metrics["baseline_rmse"],
        }
        figures = plots.model_plots(data.y[TEST], trained.predicted, model.importance(trained.model), rmses)
        tracking.log_pngs(draw(figures))

    def against(champion):
        rmse, baseline = metrics["rmse"], metrics["baseline_rmse"]
        return gate_model(frame, rmse, baseline, CHAMPION_TOLERANCE, champion, scored_on=trained.test_rows)

    tracking.publish(logged["model_uri"], against, {tracking.PARTITION_TAG: month})
    return metrics


def score_with_champion(trips) -> float:
    """trip_duration_predictions: the month scored by the champion."""
    _, champion, encoder = tracking.load_champion()
    predicted = model.predict(champion, transform(derive_features(trips), encoder))
    return regression_metrics(trips[DURATION].to_numpy(), predicted)["rmse"]


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

    source, state, threads = DirectorySource(args.data), Path(args.state), usable_cores()
    month, stages = args.test, {}
    training = {m: cleaned(source, m) for m in args.train}  # in storage already on the CLI side
    with timed(stages, "ingest_trips"):
        raw = pq.read_table(source.fetch(month))
        rules.raw_rules(raw, month, rules.RuleThresholds(), source.taxi)
        trips = clean_trips(raw, month, origin=f"month {month}")
        rules.cleaned_rules(trips.trips, month, trips.raw_rows, trips.dropped, rules.RuleThresholds())
        draw({"duration": lambda: plots.duration_histogram(trips.trips[DURATION])})
    with timed(stages, "cleaned_trips"):  # its drift check
        previous = shift_month(month, -1)
        if previous in training:
            drift.drift(training[previous], trips.trips, drift.DriftThresholds(), previous, month)
            draw({"drift": lambda: plots.drift(training[previous], trips.trips, previous, month)})
    with timed(stages, "trip_features"):
        frame = build_features(training, trips.trips, month)
    with timed(stages, "best_params"):
        tuned = tune(
            design_matrices(tuning_sample(frame, sample_rows(args.timeout, threads)), (TRAIN, VALID)),
            f"sqlite:///{state / 'optuna.db'}",
            study_name("rich", month),
            args.trials,
            args.timeout,
            seed=0,
            threads=threads,
            progress=lambda trial: None,
        )
        draw(plots.study_plots(tuned.study))
    with timed(stages, "trained_model"):
        start_tracking(state)
        metrics = train_and_register(frame, tuned.params, month, threads)
    with timed(stages, "trip_duration_predictions"):
        predictions_rmse = score_with_champion(trips.trips)
    with open(args.out, "w") as out:
        json.dump(
            {
                **metrics,
                "predictions_rmse": predictions_rmse,
                "trials_run": tuned.trials_run,
                "valid_rmse": tuned.valid_rmse,
                "stages": stages,
            },
            out,
        )


if __name__ == "__main__":
    main()
