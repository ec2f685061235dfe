"""Train and evaluate the XGBoost duration model, and the LinearRegression baseline."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from ml_assets.core.features import (
    TEST,
    TRAIN,
    VALID,
    DesignMatrices,
    course_matrix,
    course_vocabulary,
    split_rows,
)
from ml_assets.core.schema import DURATION

# Fixed settings; optuna tunes the rest (see ml_assets.core.tuning).
BASE_PARAMS = {"objective": "reg:squarederror", "eval_metric": "rmse", "tree_method": "hist", "max_cat_to_onehot": 1}
BASELINE_ROWS = 1_000_000  # training rows the LinearRegression baseline is fitted on, at most
DEFAULT_PARAMS = {
    "max_depth": 8,
    "learning_rate": 0.1,
    "min_child_weight": 5.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
}


def stop_at(deadline: float, stopped: Callable[[int], None] = lambda epoch: None):
    """An XGBoost callback that ends the training after the first round that finishes past `deadline`
    (`time.monotonic()`), telling `stopped` that round; the booster keeps its best iteration so far.

    It always keeps the first round: XGBoost's early stopping, which records the best round, runs
    after this callback, so a training stopped at round 0 (the budget spent while it prepared its
    data, on a loaded machine) would have no score.
    """
    import xgboost as xgb

    class StopAtDeadline(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch: int, evals_log) -> bool:
            if epoch == 0 or time.monotonic() < deadline:
                return False
            stopped(epoch)
            return True

    return StopAtDeadline()


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity and, in a container, its CPU quota.

    The quota (cgroup `cpu.max`, or `cpu.cfs_quota_us` under cgroup v1) is what Docker's `cpus` and a
    Kubernetes CPU limit set; the affinity does not show it, so a pod limited to 2 CPUs on a 32-core
    node would run 32 threads, throttled to the time of 2. joblib (scikit-learn's) counts both.
    """
    from joblib import cpu_count

    return cpu_count()


def training_matrices(data: DesignMatrices, threads: int | None = None):
    """`train` and `valid` as XGBoost QuantileDMatrix: only the binned values are kept (about a byte per
    value), read from the frame's own columns, where a DMatrix would hold another copy of every value."""
    import xgboost as xgb

    categorical = isinstance(data.X[TRAIN], pd.DataFrame)
    dtrain = xgb.QuantileDMatrix(data.X[TRAIN], data.y[TRAIN], enable_categorical=categorical, nthread=threads)
    dvalid = xgb.QuantileDMatrix(
        data.X[VALID], data.y[VALID], enable_categorical=categorical, nthread=threads, ref=dtrain
    )
    return dtrain, dvalid


def train_booster(
    data: DesignMatrices,
    params: dict,
    num_boost_round: int = 2000,
    early_stopping_rounds: int = 50,
    threads: int | None = None,
    callbacks=None,
    matrices=None,
):
    """Fit on `train`, stop early on the `valid` holdout; the test month is not touched.

    `matrices` (from `training_matrices`) saves building them again for every trial of a study.
    """
    import xgboost as xgb

    dtrain, dvalid = matrices or training_matrices(data, threads)
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
    """Predictions up to the best iteration, straight from `X` (no DMatrix copy of it)."""
    return booster.inplace_predict(X, iteration_range=(0, booster.best_iteration + 1))


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
    model = LinearRegression(copy_X=False).fit(course_matrix(training, vocabulary), training[DURATION].to_numpy())
    predicted = model.predict(course_matrix(test, vocabulary))
    return regression_metrics(test[DURATION].to_numpy(), predicted)["rmse"]


def model_bytes(booster) -> bytes:
    """XGBoost's own UBJSON format: portable across versions, unlike pickle."""
    return bytes(booster.save_raw(raw_format="ubj"))


def load_booster(raw: bytes):
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    return booster
