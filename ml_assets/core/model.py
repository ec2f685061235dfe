"""The learner: every XGBoost call of the project (fit, predict, save, load, log, importance) lives here.

Swapping the learner means changing this module; the rest of the code only passes its model around.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from ml_assets.core.features import TRAIN, VALID, DesignMatrices

# Fixed settings; optuna tunes the rest (see ml_assets.core.tuning).
# What scoring a model of other features raises: a column its encoder names is missing (KeyError), a value of
# another kind (TypeError), or XGBoost's own refusal of the matrix (a ValueError).
CANNOT_SCORE = (KeyError, TypeError, ValueError)
BASE_PARAMS = {"objective": "reg:squarederror", "eval_metric": "rmse", "tree_method": "hist", "max_cat_to_onehot": 1}
# A regularised model whose validation score carries to the next month: every study tries it first, so what
# tuning picks is never worse than it on the holdout.
DEFAULT_PARAMS = {
    "max_depth": 8,
    "learning_rate": 0.05,
    "min_child_weight": 20.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,  # XGBoost's own default, named: the search space tunes it
}
# Most boosting rounds of a model, and the rounds without a better holdout score that end it sooner.
MAX_ROUNDS, EARLY_STOPPING_ROUNDS = 2000, 50
FORMAT = "ubj"  # XGBoost's own binary JSON: portable across versions, unlike pickle


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity and, in a container, its CPU quota (joblib counts both)."""
    from joblib import cpu_count

    return cpu_count()


def stop_at(deadline: float, stopped: Callable[[int], None] = lambda epoch: None):
    """A callback that ends training after the first round finishing past `deadline` (`time.monotonic()`),
    telling `stopped` that round; the model keeps its best iteration so far.

    The first round always stays: early stopping, which records the best round, runs after this
    callback, so a training stopped at round 0 would have no score.
    """
    import xgboost as xgb

    class StopAtDeadline(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch: int, evals_log) -> bool:
            if epoch == 0 or time.monotonic() < deadline:
                return False
            stopped(epoch)
            return True

    return StopAtDeadline()


def training_matrices(data: DesignMatrices, threads: int | None = None):
    """`train` and `valid` as QuantileDMatrix: about a byte per value, read from the frame's own columns."""

    weight = (data.w or {}).get(TRAIN)  # recency weights of the training rows; the holdout is scored unweighted
    dtrain = _matrix(data.X[TRAIN], data.y[TRAIN], weight, threads)
    return dtrain, _matrix(data.X[VALID], data.y[VALID], None, threads, ref=dtrain)


def _matrix(X, y, weight, threads: int | None, ref=None):
    """A QuantileDMatrix of `X` (a frame's zones as XGBoost categories, or the course's sparse matrix)."""
    import xgboost as xgb

    categorical = isinstance(X, pd.DataFrame)
    return xgb.QuantileDMatrix(X, y, weight=weight, enable_categorical=categorical, nthread=threads, ref=ref)


def part_matrix(parts: Callable[[], Iterator[tuple]], threads: int | None = None, ref=None):
    """A QuantileDMatrix built a part at a time from `parts()`, which yields (X, y, weight or None) and is read
    twice (quantiles, then bins): the rows it holds are never all in memory at once as a frame."""
    import xgboost as xgb

    class Parts(xgb.DataIter):
        def __init__(self):
            self._parts, self.interrupt = None, None
            super().__init__(release_data=True)

        def reset(self) -> None:
            self._parts = None

        def next(self, input_data) -> bool:
            self._parts = self._parts or parts()
            try:
                X, y, weight = next(self._parts, (None, None, None))
            except Exception:
                raise
            except BaseException as interrupt:  # XGBoost's callback catches Exception only: kept, raised below
                self.interrupt = interrupt
                return False
            if X is None:
                return False
            input_data(data=X, label=y, weight=weight)
            return True

    iterator = Parts()
    try:
        matrix = xgb.QuantileDMatrix(iterator, enable_categorical=True, nthread=threads, ref=ref)
    except Exception:
        if iterator.interrupt is None:
            raise
        matrix = None  # XGBoost's own error about the parts cut short, when the interrupt is the cause
    if iterator.interrupt is not None:  # Ctrl-C or Dagster's termination, not an error of XGBoost's
        raise iterator.interrupt
    return matrix


def _booster_params(params: dict, threads: int | None) -> dict:
    return {**BASE_PARAMS, **params, "nthread": threads or 0}


def fit(
    data: DesignMatrices,
    params: dict,
    num_boost_round: int = MAX_ROUNDS,
    early_stopping_rounds: int = EARLY_STOPPING_ROUNDS,
    threads: int | None = None,
    callbacks=None,
    matrices=None,
):
    """Fit on `train`, stop early on `valid`; the test month is not touched.

    `matrices` (from `training_matrices`) saves building them again for every trial of a study.
    """
    import xgboost as xgb

    dtrain, dvalid = matrices or training_matrices(data, threads)
    return xgb.train(
        _booster_params(params, threads),
        dtrain,
        num_boost_round=num_boost_round,
        evals=[(dvalid, VALID)],
        early_stopping_rounds=early_stopping_rounds,
        callbacks=callbacks,
        verbose_eval=False,
    )


def refit(matrix, params: dict, rounds: int, valid_score: float, threads: int | None = None, callbacks=None):
    """Train again, without early stopping, for `rounds` rounds on `matrix` (the window's train and holdout rows):
    the holdout chose the rounds, and the model then learns from the newest days too. The booster keeps
    `valid_score` (the holdout's score of the model that chose the rounds) and its last round as best."""
    import xgboost as xgb

    booster = xgb.train(
        _booster_params(params, threads),
        matrix,
        num_boost_round=rounds,
        callbacks=callbacks,
        verbose_eval=False,
    )
    booster.best_iteration = booster.num_boosted_rounds() - 1
    booster.best_score = valid_score
    return booster


def best_trees(booster):
    """`booster` cut after its best iteration: early stopping leaves the rounds after it in the model, which
    `predict` skips but XGBoost's own `Booster.predict` (and so MLflow's loaded model) would use."""
    cut = booster[: booster.best_iteration + 1]
    cut.best_iteration, cut.best_score = booster.best_iteration, booster.best_score  # slicing drops them
    return cut


def best_iteration(model) -> int:
    return model.best_iteration


def rounds(model) -> int:
    """Boosting rounds the model ran (early stopping and a time budget end it before its round limit)."""
    return model.num_boosted_rounds()


def best_score(model) -> float:
    """The validation RMSE at the best iteration."""
    return float(model.best_score)


def predict(model, X) -> np.ndarray:
    """Predictions up to the best iteration, straight from `X` (no DMatrix copy of it)."""
    return model.inplace_predict(X, iteration_range=(0, model.best_iteration + 1))


def importance(model) -> dict[str, float]:
    """Total gain per feature."""
    return model.get_score(importance_type="gain")


def to_bytes(model) -> bytes:
    return bytes(model.save_raw(raw_format=FORMAT))


def from_bytes(raw: bytes):
    import xgboost as xgb

    model = xgb.Booster()
    model.load_model(bytearray(raw))
    return model


def log_to_mlflow(model, signature, name: str = "model"):
    """Log the model into the active MLflow run (xgboost flavour); returns MLflow's ModelInfo."""
    import mlflow.xgboost
    import xgboost

    # Requirements stated, not inferred: inference imports the model again in a subprocess (seconds per run).
    return mlflow.xgboost.log_model(
        model, name=name, signature=signature, model_format=FORMAT, pip_requirements=[f"xgboost=={xgboost.__version__}"]
    )


def load_from_mlflow(model_uri: str):
    """The model at `model_uri`, downloaded into a folder removed once it is loaded: from a tracking server,
    MLflow's own download goes into a new temporary folder that stays (a megabyte a load; monitoring loads
    every version each month)."""
    import tempfile

    import mlflow.xgboost

    with tempfile.TemporaryDirectory(prefix="ml_assets_model_") as folder:
        return mlflow.xgboost.load_model(model_uri, dst_path=folder)
