"""Features for month M: fit on the months before it, test on M.

Two feature sets:
- `course`: the MLOps-Zoomcamp notebook's `PU_DO` + `trip_distance` through a DictVectorizer,
  kept for parity with the course numbers.
- `rich` (default): zones as categories, distance, time of day, weekday and the trip codes known
  at pickup, for XGBoost's native categorical support.
Whatever is fitted (category lists, the vectorizer's vocabulary) is fitted on the training
months only; zones never seen in training become missing values in the test month.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml_assets.core.schema import PICKUP

TARGET, SPLIT = "duration", "split"
TRAIN, VALID, TEST = "train", "valid", "test"
ZONES = ["PULocationID", "DOLocationID"]
FEATURE_SETS = {
    "course": [*ZONES, "trip_distance"],  # vectorized as PU_DO + trip_distance
    "rich": [*ZONES, "trip_distance", "pickup_hour", "pickup_weekday",
             "VendorID", "RatecodeID", "trip_type", "passenger_count"],
}


def _with_derived(trips: pd.DataFrame) -> pd.DataFrame:
    pickup = trips[PICKUP]
    return trips.assign(
        pickup_hour=pickup.dt.hour + pickup.dt.minute / 60,
        pickup_weekday=pickup.dt.dayofweek,
    )


def build_features(
    training: dict[str, pd.DataFrame],
    test: pd.DataFrame,
    test_month: str,
    feature_set: str = "rich",
    holdout_fraction: float = 0.15,
    seed: int = 0,
) -> pd.DataFrame:
    """One frame of features, `duration` and `split` (train / valid / test).

    `valid` is a random holdout of the training months used for early stopping and tuning, so
    the test month is never used for fitting anything.
    """
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; choose one of {sorted(FEATURE_SETS)}")
    if not training:
        raise ValueError(f"no training months for {test_month}")
    columns = FEATURE_SETS[feature_set] + [TARGET]
    train = pd.concat([_with_derived(training[m])[columns] for m in sorted(training)], ignore_index=True)
    holdout = np.random.default_rng(seed).random(len(train)) < holdout_fraction
    train[SPLIT] = np.where(holdout, VALID, TRAIN)
    tested = _with_derived(test)[columns].assign(**{SPLIT: TEST})
    for zone in ZONES:
        categories = sorted(set(train[zone].astype(int)))
        train[zone] = pd.Categorical(train[zone].astype(int), categories=categories)
        tested[zone] = pd.Categorical(tested[zone].astype(int), categories=categories)
    frame = pd.concat([train, tested], ignore_index=True)
    frame[SPLIT] = frame[SPLIT].astype("category")
    frame.attrs = {"feature_set": feature_set, "training_months": sorted(training), "test_month": test_month}
    return frame


@dataclass
class DesignMatrices:
    """Model inputs per split, and the fitted encoding as plain JSON (for MLflow)."""

    X: dict[str, object]
    y: dict[str, np.ndarray]
    encoder: dict


def design_matrices(frame: pd.DataFrame) -> DesignMatrices:
    feature_set = frame.attrs["feature_set"]
    features = FEATURE_SETS[feature_set]
    parts = {split: frame[frame[SPLIT] == split] for split in (TRAIN, VALID, TEST)}
    y = {split: part[TARGET].to_numpy() for split, part in parts.items()}
    if feature_set == "course":
        vectorizer = fit_course_vectorizer(frame[frame[SPLIT] != TEST])
        X = {split: vectorizer.transform(course_records(part)) for split, part in parts.items()}
        encoder = {"feature_set": feature_set, "vocabulary": vectorizer.feature_names_}
    else:
        X = {split: part[features] for split, part in parts.items()}
        encoder = {
            "feature_set": feature_set,
            "features": features,
            "categories": {zone: [int(c) for c in frame[zone].cat.categories] for zone in ZONES},
        }
    return DesignMatrices(X=X, y=y, encoder=encoder)


def course_records(trips: pd.DataFrame) -> list[dict]:
    """The course notebook's inputs: the pickup/dropoff zone pair and the distance."""
    pair = trips["PULocationID"].astype(str) + "_" + trips["DOLocationID"].astype(str)
    return pd.DataFrame({"PU_DO": pair, "trip_distance": trips["trip_distance"]}).to_dict("records")


def fit_course_vectorizer(trips: pd.DataFrame):
    from sklearn.feature_extraction import DictVectorizer

    return DictVectorizer().fit(course_records(trips))
