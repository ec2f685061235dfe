"""Train the month's model and score it beside what it is judged against: the baseline and the champion."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml_assets.core import model
from ml_assets.core.features import (
    TEST,
    TRAIN,
    VALID,
    WEIGHT,
    DesignMatrices,
    course_matrix,
    course_vocabulary,
    design_matrices,
    split_rows,
    transform,
)
from ml_assets.core.schema import DURATION

BASELINE_ROWS = 1_000_000  # training rows the LinearRegression baseline is fitted on, at most


def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    error = predicted - actual
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}


def baseline_rmse(frame: pd.DataFrame, max_rows: int = BASELINE_ROWS) -> float:
    """The course's LinearRegression on `PU_DO` + `trip_distance`, fitted on the training window (a random
    `max_rows` of it when larger: sklearn's sparse solver takes minutes on ten million trips, and a million
    fit the model's few thousand coefficients as well) and evaluated on the whole test month."""
    from sklearn.linear_model import LinearRegression

    training, test = split_rows(frame, TRAIN, VALID), split_rows(frame, TEST)
    if len(training) > max_rows:
        training = training.take(np.sort(np.random.default_rng(0).choice(len(training), max_rows, replace=False)))
    vocabulary = course_vocabulary(training)
    # copy_X=False: a sparse X is never centred in place, so the copy would only cost memory.
    fitted = LinearRegression(copy_X=False).fit(course_matrix(training, vocabulary), training[DURATION].to_numpy())
    predicted = fitted.predict(course_matrix(test, vocabulary))
    return regression_metrics(test[DURATION].to_numpy(), predicted)["rmse"]


def champion_rmse(frame: pd.DataFrame, champion) -> float | None:
    """RMSE of `champion` ((version, model, encoder) or None) on the frame's test month, under its own encoder."""
    if champion is None:
        return None
    _, champion_model, encoder = champion
    test_rows = split_rows(frame, TEST)
    return regression_metrics(
        test_rows[DURATION].to_numpy(), model.predict(champion_model, transform(test_rows, encoder))
    )["rmse"]


@dataclass(frozen=True)
class TrainedModel:
    model: object
    data: DesignMatrices
    predicted: np.ndarray  # on the test month
    metrics: dict[str, float]  # rmse, mae, valid_rmse, baseline_rmse, and champion_rmse when there is a champion
    refitted: bool = False  # trained again on train + holdout with the rounds early stopping chose


def refit_rounds(best_iteration: int, train_rows: int, all_rows: int) -> int:
    """Rounds of the refit on train + holdout: the early-stopped model's, in proportion to the rows."""
    return max(1, round((best_iteration + 1) * all_rows / max(train_rows, 1)))


def train_and_evaluate(
    frame: pd.DataFrame,
    params: dict,
    champion=None,
    num_boost_round: int = 2000,
    early_stopping_rounds: int = 50,
    threads: int | None = None,
    callbacks=None,
    refit: bool | None = True,
    deadline: float | None = None,
) -> TrainedModel:
    """Fit the month's model and score it, the baseline and `champion` on the test month.

    The baseline and the champion are scored first, so that a time budget (a `model.stop_at`
    callback) leaves the boosting what they did not take. With `refit`, the model early-stopped on
    the holdout is then trained again on train + holdout for as many rounds (in proportion to the
    rows): the newest days, which only chose the rounds, are learnt from too. `refit=None` refits
    only when it fits before `deadline` (`time.monotonic()`), judged by how long the first training
    took, and never when a callback stopped that one early (a time budget).
    """
    data = design_matrices(frame)
    metrics = {"baseline_rmse": baseline_rmse(frame)}
    against = champion_rmse(frame, champion)
    if against is not None:
        metrics["champion_rmse"] = against
    started = time.monotonic()
    fitted = model.fit(data, params, num_boost_round, early_stopping_rounds, threads, callbacks)
    seconds = time.monotonic() - started
    metrics["valid_rmse"] = model.best_score(fitted)  # on the holdout, the newest days of the window
    window = split_rows(frame, TRAIN, VALID)
    rounds = refit_rounds(model.best_iteration(fitted), len(data.y[TRAIN]), len(window))
    if refit is None:
        ran = model.rounds(fitted)
        stopped_early = ran < min(num_boost_round, model.best_iteration(fitted) + 1 + early_stopping_rounds)
        needed = seconds * rounds / max(ran, 1) * len(window) / max(len(data.y[TRAIN]), 1)
        refit = not stopped_early and (deadline is None or time.monotonic() + needed < deadline)
    if refit:
        fitted = model.refit(
            transform(window, data.encoder),
            window[DURATION].to_numpy(),
            window[WEIGHT].to_numpy() if WEIGHT in window else None,
            params,
            rounds,
            metrics["valid_rmse"],
            threads,
            callbacks,
        )
    predicted = model.predict(fitted, data.X[TEST])
    return TrainedModel(fitted, data, predicted, {**regression_metrics(data.y[TEST], predicted), **metrics}, refit)
