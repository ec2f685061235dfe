"""Train the month's model and score it beside what it is judged against: the baseline and the champion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml_assets.core import model
from ml_assets.core.features import (
    TEST,
    TRAIN,
    VALID,
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


def train_and_evaluate(
    frame: pd.DataFrame,
    params: dict,
    champion=None,
    num_boost_round: int = 2000,
    early_stopping_rounds: int = 50,
    threads: int | None = None,
    callbacks=None,
) -> TrainedModel:
    """Fit the month's model and score it, the baseline and `champion` on the test month.

    The baseline and the champion are scored first, so that a time budget (a `model.stop_at`
    callback) leaves the boosting what they did not take.
    """
    data = design_matrices(frame)
    metrics = {"baseline_rmse": baseline_rmse(frame)}
    against = champion_rmse(frame, champion)
    if against is not None:
        metrics["champion_rmse"] = against
    fitted = model.fit(data, params, num_boost_round, early_stopping_rounds, threads, callbacks)
    predicted = model.predict(fitted, data.X[TEST])
    metrics["valid_rmse"] = model.best_score(fitted)  # on the holdout, the newest days of the window
    return TrainedModel(fitted, data, predicted, {**regression_metrics(data.y[TEST], predicted), **metrics})
