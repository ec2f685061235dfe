"""Child process: each ingredient of the `rich` feature set, and the window and recency weight, on the 2023 months.

Dagster-free: the core functions `trip_features` and `trained_model` call, with the regularised
DEFAULT_PARAMS and no tuning, so that the difference between two rows is the ingredient alone. For
each month and variant: the validation RMSE (the window's newest 7 days, which also stop the
boosting; a refit model keeps the score of the model that chose its rounds) and the test RMSE (the
month itself, used for nothing else). Writes JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.plain import cleaned
from ml_assets.core import model
from ml_assets.core.features import FEATURE_INPUTS, build_features
from ml_assets.core.months import month_range, shift_month
from ml_assets.core.sources.directory import DirectorySource
from ml_assets.core.training import train_and_evaluate

FIRST = "2023-01"  # the first 2023 month: windows start here at the earliest
# (name, feature set, window months, recency weight, refit), each adding one thing to the row before it but the
# recency weight's, which only shows what the setting does.
VARIANTS = [
    ("plain: the features before issue 18", "plain", 3, 1.0, False),
    ("+ borough and airport flags (`zones`)", "zones", 3, 1.0, False),
    ("+ zone-pair statistics (`pairs`)", "pairs", 3, 1.0, False),
    ("+ pair distance and the trip's ratio to it (`rich`)", "rich", 3, 1.0, False),
    ("+ window 5", "rich", 5, 1.0, False),
    ("(+ recency weight 0.6)", "rich", 5, 0.6, False),
    ("+ trained again on train + holdout: the default", "rich", 5, 1.0, True),
]


def window(month: str, months: int) -> list[str]:
    """The `months` months before `month`, none before FIRST."""
    return month_range(max(FIRST, shift_month(month, -months)), shift_month(month, -1))


def ablation(data: Path, months: list[str], threads: int) -> dict:
    source = DirectorySource(str(data))
    trips = {}

    def month_trips(month: str):
        if month not in trips:
            trips[month] = cleaned(source, month)[FEATURE_INPUTS]
        return trips[month]

    results, done = {}, {}
    for month in months:
        for name, feature_set, length, recency, refit in VARIANTS:
            training = window(month, length)
            key = (feature_set, tuple(training), recency, refit)
            if key in done:  # a window the data cannot make longer (2023-04: three months at most)
                results.setdefault(name, {})[month] = {**done[key], "same_as_shorter_window": True}
                continue
            start = time.perf_counter()
            frame = build_features(
                {m: month_trips(m) for m in training}, month_trips(month), month, feature_set, recency_weight=recency
            )
            trained = train_and_evaluate(frame, model.DEFAULT_PARAMS, threads=threads, refit=refit)
            done[key] = {
                "valid_rmse": trained.metrics["valid_rmse"],
                "test_rmse": trained.metrics["rmse"],
                "best_iteration": model.best_iteration(trained.model),
                "window": training,
                "seconds": time.perf_counter() - start,
            }
            results.setdefault(name, {})[month] = done[key]
            print(name, month, json.dumps(done[key]), flush=True)
    return {"variants": results, "params": model.DEFAULT_PARAMS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--months", nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.out, "w") as out:
        json.dump(ablation(args.data, args.months, args.threads), out)


if __name__ == "__main__":
    main()
