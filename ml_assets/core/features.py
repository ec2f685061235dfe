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

from ml_assets.core.schema import DURATION, PICKUP, ZONE_COLUMNS

SPLIT = "split"
TRAIN, VALID, TEST = "train", "valid", "test"
FEATURE_SETS = {
    "course": [*ZONE_COLUMNS, "trip_distance"],  # vectorized as PU_DO + trip_distance
    "rich": [
        *ZONE_COLUMNS,
        "trip_distance",
        "pickup_hour",
        "pickup_weekday",
        "VendorID",
        "RatecodeID",
        "trip_type",
        "passenger_count",
    ],
}


def derive_features(trips: pd.DataFrame) -> pd.DataFrame:
    """Cleaned trips plus the columns the feature sets compute from pickup time."""
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
    columns = FEATURE_SETS[feature_set] + [DURATION]
    train = pd.concat([derive_features(training[m])[columns] for m in sorted(training)], ignore_index=True)
    holdout = np.random.default_rng(seed).random(len(train)) < holdout_fraction
    train[SPLIT] = np.where(holdout, VALID, TRAIN)
    tested = derive_features(test)[columns].assign(**{SPLIT: TEST})
    for zone in ZONE_COLUMNS:
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


def fit_encoder(frame: pd.DataFrame) -> dict:
    """The encoding of a feature frame, fitted on its training months, as plain JSON (for MLflow)."""
    feature_set = frame.attrs["feature_set"]
    training = frame[frame[SPLIT] != TEST]
    if feature_set == "course":
        return {"feature_set": feature_set, "vocabulary": fit_course_vectorizer(training).feature_names_}
    return {
        "feature_set": feature_set,
        "features": FEATURE_SETS[feature_set],
        "categories": {zone: sorted(int(c) for c in training[zone].dropna().unique()) for zone in ZONE_COLUMNS},
    }


def transform(rows: pd.DataFrame, encoder: dict):
    """Model input for `rows` (feature columns, see `derive_features`) under a fitted `encoder`.

    Works for any month and any model's encoder, so a champion trained on other months can be
    evaluated on this one.
    """
    if encoder["feature_set"] == "course":
        from sklearn.feature_extraction import DictVectorizer

        vectorizer = DictVectorizer()
        vectorizer.feature_names_ = encoder["vocabulary"]
        vectorizer.vocabulary_ = {name: i for i, name in enumerate(encoder["vocabulary"])}
        return vectorizer.transform(course_records(rows))
    X = rows[encoder["features"]].copy()
    for zone, categories in encoder["categories"].items():
        X[zone] = pd.Categorical(rows[zone].astype("float64"), categories=[float(c) for c in categories])
        X[zone] = X[zone].cat.rename_categories(categories)
    return X


def design_matrices(frame: pd.DataFrame) -> DesignMatrices:
    encoder = fit_encoder(frame)
    parts = {split: frame[frame[SPLIT] == split] for split in (TRAIN, VALID, TEST)}
    return DesignMatrices(
        X={split: transform(part, encoder) for split, part in parts.items()},
        y={split: part[DURATION].to_numpy() for split, part in parts.items()},
        encoder=encoder,
    )


def course_records(trips: pd.DataFrame) -> list[dict]:
    """The course notebook's inputs: the pickup/dropoff zone pair and the distance."""
    pickup_zone, dropoff_zone = ZONE_COLUMNS
    pair = trips[pickup_zone].astype(str) + "_" + trips[dropoff_zone].astype(str)
    return pd.DataFrame({"PU_DO": pair, "trip_distance": trips["trip_distance"]}).to_dict("records")


def fit_course_vectorizer(trips: pd.DataFrame):
    from sklearn.feature_extraction import DictVectorizer

    return DictVectorizer().fit(course_records(trips))
