"""Features for month M: fit on the months before it, test on M.

Two feature sets:
- `course`: the MLOps-Zoomcamp notebook's `PU_DO` + `trip_distance` one-hot encoding (what its
  DictVectorizer makes, built here straight from the zone codes: a window of 10 M trips would not
  fit in memory as the notebook's list of dicts), kept for parity with the course numbers.
- `rich` (default): zones as categories, distance, time of day, weekday and the trip codes known
  at pickup, for XGBoost's native categorical support.
Whatever is fitted (category lists, the one-hot vocabulary) is fitted on the training months only;
zones never seen in training become missing values in the test month.

The feature frame holds its rows in split order (train, valid, test), so that each split is a
slice of it: the model reads its columns without a copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml_assets.core.schema import DURATION, PICKUP, ZONE_COLUMNS

SPLIT = "split"
TRAIN, VALID, TEST = "train", "valid", "test"
SPLITS = (TRAIN, VALID, TEST)  # the order of the frame's rows
FEATURE_SETS = {
    "course": [*ZONE_COLUMNS, "trip_distance"],  # one-hot PU_DO + trip_distance
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
DERIVED = ("pickup_hour", "pickup_weekday")
# The cleaned_trips columns any feature set is made from, and the target: all a feature step reads.
FEATURE_INPUTS = [
    PICKUP,
    *dict.fromkeys(name for names in FEATURE_SETS.values() for name in names if name not in DERIVED),
    DURATION,
]
COURSE_PAIR, COURSE_DISTANCE = "PU_DO", "trip_distance"
_PAIR_BASE = 1 << 20  # pair key = pickup zone * base + dropoff zone (zone ids are far smaller)


def derive_features(trips: pd.DataFrame) -> pd.DataFrame:
    """Cleaned trips plus the columns the feature sets compute from pickup time (trips' columns not copied)."""
    pickup = trips[PICKUP].dt
    derived = {
        "pickup_hour": (pickup.hour + pickup.minute / 60).astype("float32"),
        "pickup_weekday": pickup.dayofweek.astype("int8"),
    }
    return pd.DataFrame({**{name: trips[name] for name in trips.columns}, **derived}, copy=False)


def _observed_zones(column: pd.Series, rows: np.ndarray | None = None) -> set[int]:
    """Zone ids that occur in `column` (in `rows`, a boolean mask, if given)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        codes = np.unique(codes if rows is None else codes[rows])
        return {int(value) for value in column.cat.categories[codes[codes >= 0]]}
    values = column.to_numpy() if rows is None else column.to_numpy()[rows]
    return {int(value) for value in pd.unique(values[~pd.isna(values)])}


def with_categories(column: pd.Series, categories: list[int]) -> pd.Series:
    """`column` (zone ids) as a categorical over exactly `categories`; other ids become missing."""
    wanted = pd.Index(categories, dtype="int64")
    if not isinstance(column.dtype, pd.CategoricalDtype):
        return pd.Series(pd.Categorical(column, categories=wanted), index=column.index, name=column.name)
    if column.cat.categories.equals(wanted) and column.cat.categories.dtype == wanted.dtype:
        return column
    return column.cat.set_categories(wanted)


def build_features(
    training: dict[str, pd.DataFrame],
    test: pd.DataFrame,
    test_month: str,
    feature_set: str = "rich",
    holdout_fraction: float = 0.15,
    seed: int = 0,
) -> pd.DataFrame:
    """One frame of features, `duration` and `split` (train / valid / test), rows in that order.

    `valid` is a random holdout of the training months used for early stopping and tuning, so
    the test month is never used for fitting anything. The frame is built a column at a time:
    besides the months, only the frame and one column being gathered are in memory.
    """
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; choose one of {sorted(FEATURE_SETS)}")
    if not training:
        raise ValueError(f"no training months for {test_month}")
    months = [derive_features(training[month]) for month in sorted(training)]
    tested = derive_features(test)
    holdout = np.random.default_rng(seed).random(sum(map(len, months))) < holdout_fraction
    holdouts = np.split(holdout, np.cumsum([len(month) for month in months])[:-1])
    # Rows of each piece, in the frame's order: every month's train rows, then its valid rows, then the test month.
    pieces = [(month, ~held) for month, held in zip(months, holdouts, strict=True)]
    pieces += [(month, held) for month, held in zip(months, holdouts, strict=True)]
    pieces.append((tested, slice(None)))
    columns = {}
    for name in FEATURE_SETS[feature_set] + [DURATION]:
        if name in ZONE_COLUMNS:
            categories = sorted(set().union(*(_observed_zones(month[name]) for month in months)))
            codes = [with_categories(frame[name], categories).cat.codes.to_numpy()[rows] for frame, rows in pieces]
            columns[name] = pd.Categorical.from_codes(np.concatenate(codes), pd.Index(categories, dtype="int64"))
        else:
            columns[name] = np.concatenate([frame[name].to_numpy()[rows] for frame, rows in pieces])
    sizes = [int(np.count_nonzero(~held)) for held in holdouts] + [int(np.count_nonzero(held)) for held in holdouts]
    split = np.repeat(np.array([0] * len(months) + [1] * len(months) + [2], dtype=np.int8), [*sizes, len(tested)])
    # Categories in sorted order (test, train, valid), as `astype("category")` gives them.
    order = sorted(SPLITS)
    columns[SPLIT] = pd.Categorical.from_codes(np.array([order.index(s) for s in SPLITS], np.int8)[split], order)
    frame = pd.DataFrame(columns, copy=False)
    frame.attrs = {"feature_set": feature_set, "training_months": sorted(training), "test_month": test_month}
    return frame


def split_rows(frame: pd.DataFrame, *splits: str) -> pd.DataFrame:
    """The frame's rows of `splits`: a view when they are contiguous (a frame from build_features), else a copy."""
    rows = frame[SPLIT].isin(splits).to_numpy()
    where = np.flatnonzero(rows)
    if len(where) and where[-1] - where[0] + 1 == len(where):
        return frame.iloc[where[0] : where[-1] + 1]
    return frame[rows]


@dataclass
class DesignMatrices:
    """Model inputs per split, and the fitted encoding as plain JSON (for MLflow)."""

    X: dict[str, object]
    y: dict[str, np.ndarray]
    encoder: dict


def fit_encoder(frame: pd.DataFrame) -> dict:
    """The encoding of a feature frame, fitted on its training months, as plain JSON (for MLflow)."""
    feature_set = frame.attrs["feature_set"]
    training = (frame[SPLIT] != TEST).to_numpy()
    if feature_set == "course":
        return {"feature_set": feature_set, "vocabulary": course_vocabulary(frame, training)}
    return {
        "feature_set": feature_set,
        "features": FEATURE_SETS[feature_set],
        "categories": {zone: sorted(_observed_zones(frame[zone], training)) for zone in ZONE_COLUMNS},
    }


def transform(rows: pd.DataFrame, encoder: dict):
    """Model input for `rows` (feature columns, see `derive_features`) under a fitted `encoder`.

    Works for any month and any model's encoder, so a champion trained on other months can be
    evaluated on this one. Columns the encoding leaves as they are are not copied.
    """
    if encoder["feature_set"] == "course":
        return course_matrix(rows, encoder["vocabulary"])
    columns = {name: rows[name] for name in encoder["features"]}
    for zone, categories in encoder["categories"].items():
        columns[zone] = with_categories(rows[zone], categories)
    return pd.DataFrame(columns, copy=False)


def design_matrices(frame: pd.DataFrame, splits=SPLITS) -> DesignMatrices:
    """Inputs and targets of `splits` (all by default) under the encoder fitted on the frame's training rows."""
    encoder = fit_encoder(frame)
    parts = {split: split_rows(frame, split) for split in splits}
    return DesignMatrices(
        X={split: transform(part, encoder) for split, part in parts.items()},
        y={split: part[DURATION].to_numpy() for split, part in parts.items()},
        encoder=encoder,
    )


def _zone_ids(column: pd.Series) -> np.ndarray:
    """Zone ids as int64, -1 where missing."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        ids = column.cat.categories.to_numpy().astype(np.int64)[codes]
        return np.where(codes >= 0, ids, -1)
    values = column.to_numpy(dtype="float64", na_value=np.nan)
    return np.where(np.isnan(values), -1, values).astype(np.int64)


def pair_keys(rows: pd.DataFrame) -> np.ndarray:
    """Each row's pickup/dropoff zone pair as one int64, -1 where a zone is missing."""
    pickup, dropoff = (_zone_ids(rows[zone]) for zone in ZONE_COLUMNS)
    return np.where((pickup >= 0) & (dropoff >= 0), pickup * _PAIR_BASE + dropoff, -1)


def course_vocabulary(rows: pd.DataFrame, fitted_on: np.ndarray | None = None) -> list[str]:
    """DictVectorizer's sorted feature names for `rows` (those in `fitted_on`, if given): `PU_DO=<pu>_<do>`
    for every zone pair seen, and `trip_distance`."""
    keys = pair_keys(rows)
    keys = np.unique(keys if fitted_on is None else keys[fitted_on])
    keys = keys[keys >= 0]
    pairs = [f"{COURSE_PAIR}={key // _PAIR_BASE}_{key % _PAIR_BASE}" for key in keys.tolist()]
    return sorted([*pairs, COURSE_DISTANCE])


def course_matrix(rows: pd.DataFrame, vocabulary: list[str]):
    """The CSR matrix DictVectorizer(vocabulary) gives for the course's records of `rows`: a 1 in the
    column of the row's zone pair (none for a pair not in the vocabulary) and the distance."""
    from scipy.sparse import csr_matrix

    prefix = f"{COURSE_PAIR}="
    named = [(i, name[len(prefix) :].split("_")) for i, name in enumerate(vocabulary) if name.startswith(prefix)]
    known = np.array([int(float(pu)) * _PAIR_BASE + int(float(do)) for _, (pu, do) in named], dtype=np.int64)
    position = np.array([i for i, _ in named], dtype=np.int32)
    order = np.argsort(known)
    known, position = known[order], position[order]

    keys = pair_keys(rows)
    at = np.minimum(np.searchsorted(known, keys), max(len(known) - 1, 0))
    found = (keys >= 0) & (known[at] == keys) if len(known) else np.zeros(len(keys), bool)
    indptr = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(found.astype(np.int64) + 1, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int32)
    data = np.empty(indptr[-1], dtype=np.float64)
    first = indptr[:-1][found]
    indices[first], data[first] = position[at[found]], 1.0
    last = indptr[1:] - 1  # the pair sorts before trip_distance, as in DictVectorizer's rows
    indices[last], data[last] = vocabulary.index(COURSE_DISTANCE), rows[COURSE_DISTANCE].to_numpy()
    return csr_matrix((data, indices, indptr), shape=(len(keys), len(vocabulary)))
