"""Train and evaluate the XGBoost duration model, and the LinearRegression baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_assets.core.features import SPLIT, TEST, TRAIN, VALID, DesignMatrices, course_records, fit_course_vectorizer
from ml_assets.core.schema import DURATION

# Fixed settings; optuna tunes the rest (see ml_assets.core.tuning).
BASE_PARAMS = {"objective": "reg:squarederror", "eval_metric": "rmse", "tree_method": "hist", "max_cat_to_onehot": 1}
DEFAULT_PARAMS = {
    "max_depth": 8,
    "learning_rate": 0.1,
    "min_child_weight": 5.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
}


def dmatrix(X, y):
    import xgboost as xgb

    return xgb.DMatrix(X, label=y, enable_categorical=isinstance(X, pd.DataFrame))


def train_booster(
    data: DesignMatrices,
    params: dict,
    num_boost_round: int = 2000,
    early_stopping_rounds: int = 50,
    threads: int | None = None,
    callbacks=None,
):
    """Fit on `train`, stop early on the `valid` holdout; the test month is not touched."""
    import xgboost as xgb

    dtrain, dvalid = dmatrix(data.X[TRAIN], data.y[TRAIN]), dmatrix(data.X[VALID], data.y[VALID])
    return xgb.train(
        {**BASE_PARAMS, **params, "nthread": threads or 0},
        dtrain,
        num_boost_round=num_boost_round,
        evals=[(dvalid, VALID)],
        early_stopping_rounds=early_stopping_rounds,
        callbacks=callbacks,
        verbose_eval=False,
    )


def predict(booster, X) -> np.ndarray:
    return booster.predict(dmatrix(X, None), iteration_range=(0, booster.best_iteration + 1))


def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    error = predicted - actual
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}


def baseline_rmse(frame: pd.DataFrame) -> float:
    """The course's LinearRegression on `PU_DO` + `trip_distance`, fitted on the whole training window."""
    from sklearn.linear_model import LinearRegression

    training, test = frame[frame[SPLIT] != TEST], frame[frame[SPLIT] == TEST]
    vectorizer = fit_course_vectorizer(training)
    model = LinearRegression().fit(vectorizer.transform(course_records(training)), training[DURATION])
    predicted = model.predict(vectorizer.transform(course_records(test)))
    return regression_metrics(test[DURATION].to_numpy(), predicted)["rmse"]


def model_bytes(booster) -> bytes:
    """XGBoost's own UBJSON format: portable across versions, unlike pickle."""
    return bytes(booster.save_raw(raw_format="ubj"))


def load_booster(raw: bytes):
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    return booster
