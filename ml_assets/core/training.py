"""Train the month's model and score it beside what it is judged against: the baseline and the champion."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml_assets.core import frame_parts, model
from ml_assets.core.cleaning import MAX_DURATION, MIN_DURATION
from ml_assets.core.features import (
    ENCODED,
    ENCODER_INPUTS,
    TEST,
    TRAIN,
    VALID,
    WEIGHT,
    DesignMatrices,
    course_matrix,
    course_vocabulary,
    digest_of_test_rows,
    fit_encoder,
    split_rows,
    transform,
)
from ml_assets.core.frame_parts import Frame
from ml_assets.core.schema import DURATION

BASELINE_ROWS = 1_000_000  # training rows the LinearRegression baseline is fitted on, at most


def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    error = predicted - actual
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}


def baseline_rmse(frame: pd.DataFrame, max_rows: int = BASELINE_ROWS) -> float:
    """The course's LinearRegression on `PU_DO` + `trip_distance`, fitted on the training window (a random
    `max_rows` of it when larger: sklearn's sparse solver takes minutes on ten million trips, and a million
    fit the model's few thousand coefficients as well) and evaluated on the whole test month. Its predictions are
    held to the durations a cleaned trip can have: TLC's files keep trips of thousands of miles, and one such trip
    in the test month, predicted at thousands of minutes, would raise the baseline's RMSE past any model's."""
    from sklearn.linear_model import LinearRegression

    training, test = split_rows(frame, TRAIN, VALID), split_rows(frame, TEST)
    if len(training) > max_rows:
        training = training.take(np.sort(np.random.default_rng(0).choice(len(training), max_rows, replace=False)))
    vocabulary = course_vocabulary(training)
    # copy_X=False: a sparse X is never centred in place, so the copy would only cost memory.
    fitted = LinearRegression(copy_X=False).fit(course_matrix(training, vocabulary), training[DURATION].to_numpy())
    predicted = np.clip(fitted.predict(course_matrix(test, vocabulary)), MIN_DURATION, MAX_DURATION)
    return regression_metrics(test[DURATION].to_numpy(), predicted)["rmse"]


class NotComparable(ValueError):
    """The champion cannot be scored on a frame: it reads columns the frame's feature set does not carry."""


def champion_rmse(frame: pd.DataFrame, champion) -> float | None:
    """RMSE of `champion` ((version, model, encoder) or None) on the frame's test month, under its own encoder: the
    frame's pair statistics are its own window's, so the champion's are computed from its encoder, as it serves."""
    if champion is None:
        return None
    version, champion_model, encoder = champion
    test_rows = split_rows(frame, TEST)
    kind = f"{encoder.get('feature_set', 'unknown')} features"  # unknown: a model ml_assets never trained
    try:
        own = pd.DataFrame({name: test_rows[name] for name in test_rows if name not in ENCODED}, copy=False)
        predicted = model.predict(champion_model, transform(own, encoder))
    except KeyError as missing:
        raise NotComparable(
            f"the champion (version {version.version}, {kind}) cannot be scored on this month's "
            f"{frame.attrs.get('feature_set', 'other')} features, which lack its input {missing}"
        ) from None
    except model.CANNOT_SCORE as error:  # a model of other features (a missing input is the KeyError above)
        raise NotComparable(
            f"the champion (version {version.version}, {kind}) cannot be scored on this month's features: "
            f"{type(error).__name__}: {error}"
        ) from None
    return regression_metrics(test_rows[DURATION].to_numpy(), predicted)["rmse"]


@dataclass(frozen=True)
class TrainedModel:
    model: object
    data: DesignMatrices
    predicted: np.ndarray  # on the test month
    test_rows: str  # which test rows it was scored on (features.digest_of_test_rows): model_gate judges it on no others
    metrics: dict[str, float]  # rmse, mae, valid_rmse, baseline_rmse, and champion_rmse when there is a champion
    refitted: bool  # trained again on train + holdout with the rounds early stopping chose
    # Rounds the first, early-stopped training ran: a rebuild that runs as many stops at the same best round,
    # so its refit has the same rounds too (the refitted model's own rounds would let it boost on).
    first_rounds: int


def refit_rounds(best_iteration: int, train_rows: int, all_rows: int) -> int:
    """Rounds of the refit on train + holdout: the early-stopped model's, in proportion to the rows."""
    return max(1, round((best_iteration + 1) * all_rows / max(train_rows, 1)))


def train_and_evaluate(
    frame: Frame,
    params: dict,
    champion=None,
    num_boost_round: int = model.MAX_ROUNDS,
    early_stopping_rounds: int = model.EARLY_STOPPING_ROUNDS,
    threads: int | None = None,
    callbacks=None,
    refit: bool | None = True,
    deadline: float | None = None,
) -> TrainedModel:
    """Fit the month's model and score it, the baseline and `champion` on the test month.

    `frame` is a feature frame in memory or its stored file, read a part at a time (core.frame_parts):
    the learner's matrices are built a row group at a time, so the window is never in memory whole.
    The baseline and the champion are scored first, so that a time budget (a `model.stop_at`
    callback) leaves the boosting what they did not take. With `refit`, the model early-stopped on
    the holdout is then trained again on train + holdout for as many rounds (in proportion to the
    rows): the newest days, which only chose the rounds, are learnt from too. `refit=None` refits
    only when it fits before `deadline` (`time.monotonic()`), judged by how long the first training
    took, and never when a callback stopped that one early (a time budget).
    """
    fitted_on = frame_parts.columns(frame, ENCODER_INPUTS)
    encoder = fit_encoder(fitted_on)
    test = frame_parts.rows(frame, TEST)
    metrics = {"baseline_rmse": baseline_rmse(fitted_on)}
    try:
        against = champion_rmse(test, champion)
    except NotComparable:  # the gate says why, and keeps the champion
        against = None
    if against is not None:
        metrics["champion_rmse"] = against
    y = {split: split_rows(fitted_on, split)[DURATION].to_numpy() for split in (TRAIN, VALID)}
    del fitted_on
    data = DesignMatrices(X={TEST: transform(test, encoder)}, y={**y, TEST: test[DURATION].to_numpy()}, encoder=encoder)

    def matrix(*splits: str, weighted: bool = True, ref=None):
        def parts():
            for part in frame_parts.parts(frame, *splits):
                weight = part[WEIGHT].to_numpy() if weighted and WEIGHT in part else None
                yield transform(part, encoder), part[DURATION].to_numpy(), weight

        return model.part_matrix(parts, threads, ref)

    started = time.monotonic()
    dtrain = matrix(TRAIN)
    dvalid = matrix(VALID, weighted=False, ref=dtrain)  # the holdout is scored unweighted
    fitted = model.fit(data, params, num_boost_round, early_stopping_rounds, threads, callbacks, (dtrain, dvalid))
    del dtrain, dvalid
    seconds = time.monotonic() - started
    metrics["valid_rmse"] = model.best_score(fitted)  # on the holdout, the newest days of the window
    window = len(y[TRAIN]) + len(y[VALID])
    ran = model.rounds(fitted)
    rounds = refit_rounds(model.best_iteration(fitted), len(y[TRAIN]), window)
    if refit is None:
        stopped_early = ran < min(num_boost_round, model.best_iteration(fitted) + 1 + early_stopping_rounds)
        needed = seconds * rounds / max(ran, 1) * window / max(len(y[TRAIN]), 1)
        refit = not stopped_early and (deadline is None or time.monotonic() + needed < deadline)
    if refit:
        fitted = model.refit(matrix(TRAIN, VALID), params, rounds, metrics["valid_rmse"], threads, callbacks)
    else:
        fitted = model.best_trees(fitted)
    predicted = model.predict(fitted, data.X[TEST])
    metrics = {**regression_metrics(data.y[TEST], predicted), **metrics}
    return TrainedModel(fitted, data, predicted, digest_of_test_rows(test), metrics, refit, ran)
