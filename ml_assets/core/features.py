"""Features for month M: fit on the months before it, test on M.

Feature sets:
- `course`: the MLOps-Zoomcamp notebook's `PU_DO` + `trip_distance` one-hot encoding (what its
  DictVectorizer makes, built here straight from the zone codes: a window of 10 M trips would not
  fit in memory as the notebook's list of dicts), kept for parity with the course numbers.
- `rich` (default): zones as categories, distance, time of day, weekday and the trip codes known
  at pickup, for XGBoost's native categorical support; borough and airport flags (`core.zones`);
  the zone-pair statistics of the training rows (`core.pair_stats`), and the trip's distance against
  its pair's typical one.
- `plain`, `zones`, `pairs`: `rich` without some of its ingredients, for the benchmarks' ablation
  (`plain` is the `rich` of before the pair statistics).
Whatever is fitted (category lists, the one-hot vocabulary, the pair statistics) is fitted on the
training rows only; zones never seen in training become missing values in the test month.

The holdout (`valid`, for early stopping and tuning) is the newest `holdout_days` days of the window:
validation looks like the month after it. Training rows carry a `weight`, `recency_weight` per
month back (1 = every month alike).

The feature frame holds its rows in split order (train, valid, test), so that each split is a
slice of it: the model reads its columns without a copy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml_assets.core import pair_stats
from ml_assets.core.months import months_between
from ml_assets.core.schema import DURATION, PICKUP, ZONE_COLUMNS
from ml_assets.core.zones import FLAG_COLUMNS, zone_flags, zone_ids

SPLIT = "split"
TRAIN, VALID, TEST = "train", "valid", "test"
SPLITS = (TRAIN, VALID, TEST)  # the order of the frame's rows
WEIGHT = "weight"  # a training row's weight (recency); not a feature
_PLAIN = [
    *ZONE_COLUMNS,
    "trip_distance",
    "pickup_hour",
    "pickup_weekday",
    "VendorID",
    "RatecodeID",
    "trip_type",
    "passenger_count",
]
FEATURE_SETS = {
    "course": [*ZONE_COLUMNS, "trip_distance"],  # one-hot PU_DO + trip_distance
    "rich": [*_PLAIN, *FLAG_COLUMNS, *pair_stats.COLUMNS],
    # Ablation: rich without the distance context, without the pair statistics, without the flags.
    "pairs": [*_PLAIN, *FLAG_COLUMNS, *pair_stats.PAIR_COLUMNS],
    "zones": [*_PLAIN, *FLAG_COLUMNS],
    "plain": _PLAIN,
}
DERIVED = ("pickup_hour", "pickup_weekday", *FLAG_COLUMNS)
ENCODED = pair_stats.COLUMNS  # computed by the fitted pair statistics
HOLDOUT_DAYS, RECENCY_WEIGHT = 7, 1.0
FALLBACK_HOLDOUT = 0.15  # the newest share of rows held out when the window has no more than holdout_days days
# The cleaned_trips columns any feature set is made from, and the target: all a feature step reads.
FEATURE_INPUTS = [
    PICKUP,
    *dict.fromkeys(
        name for names in FEATURE_SETS.values() for name in names if name not in DERIVED and name not in ENCODED
    ),
    DURATION,
]
# The feature frame's columns the encoder is fitted from, which the baseline also needs.
ENCODER_INPUTS = [*pair_stats.INPUTS, DURATION, SPLIT]
COURSE_PAIR, COURSE_DISTANCE = "PU_DO", "trip_distance"
# The trip codes TLC leaves null on some rows, and the value a null becomes in the model's input: below every
# code, so a split can still set the nulls apart. A matrix with no missing values stays dense in XGBoost, half
# the memory of one with them (docs/model.md).
NULLABLE_CODES = ("VendorID", "RatecodeID", "trip_type", "passenger_count")
MISSING_CODE = -1.0
# For the same reason, a zone column has at most 256 categories, which XGBoost stores a byte per value (TLC
# has 265 zones, and a window of green trips sees 257): the rarest zones beyond them share one, OTHER_ZONE
# (no zone of TLC's lookup has id 0, and cleaning keeps no other), and keep what the pair statistics say about each.
MAX_ZONE_CATEGORIES, OTHER_ZONE = 256, 0
_PAIR_BASE = 1 << 20  # pair key = pickup zone * base + dropoff zone (zone ids are far smaller)


def derive_features(trips: pd.DataFrame) -> pd.DataFrame:
    """Cleaned trips plus the columns the feature sets compute from pickup time and zones (trips' columns not
    copied)."""
    pickup = trips[PICKUP].dt
    derived = {
        "pickup_hour": (pickup.hour + pickup.minute / 60).astype("float32"),
        "pickup_weekday": pickup.dayofweek.astype("int8"),
        **{name: pd.Series(values, index=trips.index) for name, values in zone_flags(trips).items()},
    }
    return pd.DataFrame({**{name: trips[name] for name in trips.columns}, **derived}, copy=False)


def _zone_counts(column: pd.Series, rows: np.ndarray | None = None) -> dict[int, int]:
    """Trips per zone id in `column` (in `rows`, a boolean mask, if given)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        codes = codes if rows is None else codes[rows]
        counts = np.bincount(codes[codes >= 0].astype(np.int64), minlength=len(column.cat.categories))
        return {int(zone): int(count) for zone, count in zip(column.cat.categories, counts, strict=True) if count}
    values = column.to_numpy() if rows is None else column.to_numpy()[rows]
    return {int(zone): int(count) for zone, count in pd.Series(values).value_counts().items()}


def _zone_categories(column: pd.Series, rows: np.ndarray) -> tuple[list[int], list[int]]:
    """A fitted encoder's categories of a zone column, and the zones it folds into OTHER_ZONE: every zone of
    `rows` while they fit in MAX_ZONE_CATEGORIES, else the most frequent ones beside OTHER_ZONE."""
    counts = _zone_counts(column, rows)
    if len(counts) <= MAX_ZONE_CATEGORIES:
        return sorted(counts), []
    ranked = sorted(counts, key=lambda zone: (-counts[zone], zone))
    kept = MAX_ZONE_CATEGORIES - 1
    return sorted([OTHER_ZONE, *ranked[:kept]]), sorted(ranked[kept:])


def with_categories(column: pd.Series, categories: list[int], folded: list[int] | None = None) -> pd.Series:
    """`column` (zone ids) as a categorical over exactly `categories`; ids in `folded` become OTHER_ZONE, other
    ids missing."""
    wanted = pd.Index(categories, dtype="int64")
    if not isinstance(column.dtype, pd.CategoricalDtype):
        encoded = pd.Series(pd.Categorical(column, categories=wanted), index=column.index, name=column.name)
    elif column.cat.categories.equals(wanted) and column.cat.categories.dtype == wanted.dtype:
        encoded = column
    else:
        encoded = column.cat.set_categories(wanted)
    if not folded:
        return encoded
    codes = encoded.cat.codes.to_numpy().copy()
    codes[column.isin(folded).to_numpy()] = wanted.get_loc(OTHER_ZONE)
    return pd.Series(pd.Categorical.from_codes(codes, wanted), index=column.index, name=column.name)


def holdout_rows(pickups: np.ndarray, test_month: str, days: int) -> np.ndarray:
    """True for the training rows picked up in the last `days` days before `test_month` starts; when that is
    none or all of them (a window of a few days), the newest FALLBACK_HOLDOUT of the rows instead."""
    held = pickups >= np.datetime64(pd.Timestamp(f"{test_month}-01") - pd.Timedelta(days=days))
    if len(pickups) > 1 and (held.all() or not held.any()):
        newest = np.argsort(pickups, kind="stable")[len(pickups) - max(1, round(FALLBACK_HOLDOUT * len(pickups))) :]
        held = np.zeros(len(pickups), dtype=bool)
        held[newest] = True
    return held


def build_features(
    training: dict[str, pd.DataFrame],
    test: pd.DataFrame,
    test_month: str,
    feature_set: str = "rich",
    holdout_days: int = HOLDOUT_DAYS,
    recency_weight: float = RECENCY_WEIGHT,
    seed: int = 0,
) -> pd.DataFrame:
    """One frame of features, `duration`, `weight` and `split` (train / valid / test), rows in that order.

    `valid` is the newest `holdout_days` days of the training months, used for early stopping and
    tuning, so the test month is never used for fitting anything. The pair statistics are fitted on
    the `train` rows alone: their own values out of fold, the holdout's and the test month's from
    every train row. The frame is built a column at a time: besides the months, only the frame and
    one column being gathered are in memory.
    """
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; choose one of {sorted(FEATURE_SETS)}")
    if not training:
        raise ValueError(f"no training months for {test_month}")
    names = sorted(training)
    months = [derive_features(training[month]) for month in names]
    tested = derive_features(test)
    pickups = np.concatenate([month[PICKUP].to_numpy() for month in months])
    holdout = holdout_rows(pickups, test_month, holdout_days)
    if holdout.all() or not holdout.any():  # only a window of a single trip has no row for one side
        raise ValueError(
            f"{test_month}: the training window ({', '.join(names)}) has {len(pickups)} trip(s); a model needs at "
            "least two, one to fit and one to validate on"
        )
    holdouts = np.split(holdout, np.cumsum([len(month) for month in months])[:-1])
    # Rows of each piece, in the frame's order: every month's train rows, then its valid rows, then the test month.
    pieces = [(month, ~held) for month, held in zip(months, holdouts, strict=True)]
    pieces += [(month, held) for month, held in zip(months, holdouts, strict=True)]
    pieces.append((tested, slice(None)))
    columns = {}
    wanted = FEATURE_SETS[feature_set]
    for name in [*(name for name in wanted if name not in ENCODED), DURATION]:
        if name in ZONE_COLUMNS:
            categories = sorted(set().union(*(_zone_counts(month[name]) for month in months)))
            codes = [with_categories(frame[name], categories).cat.codes.to_numpy()[rows] for frame, rows in pieces]
            columns[name] = pd.Categorical.from_codes(np.concatenate(codes), pd.Index(categories, dtype="int64"))
        else:
            columns[name] = np.concatenate([frame[name].to_numpy()[rows] for frame, rows in pieces])
    sizes = [int(np.count_nonzero(~held)) for held in holdouts] + [int(np.count_nonzero(held)) for held in holdouts]
    if any(name in ENCODED for name in wanted):
        columns.update(_pair_columns(pieces, sizes[: len(months)], pickups[~holdout], wanted, seed))
    back = np.array([months_between(month, test_month) for month in names] * 2 + [1], dtype="float64")
    weight = np.repeat(np.power(float(recency_weight), back - 1), [*sizes, len(tested)])
    train_rows = sum(sizes[: len(months)])
    # Mean 1 over the train rows, so that min_child_weight keeps its meaning.
    weight[: sum(sizes)] /= weight[:train_rows].mean() if train_rows else 1.0
    weight[sum(sizes) :] = 1.0
    columns[WEIGHT] = weight.astype(np.float32)
    split = np.repeat(np.array([0] * len(months) + [1] * len(months) + [2], dtype=np.int8), [*sizes, len(tested)])
    # Categories in sorted order (test, train, valid), as `astype("category")` gives them.
    order = sorted(SPLITS)
    columns[SPLIT] = pd.Categorical.from_codes(np.array([order.index(s) for s in SPLITS], np.int8)[split], order)
    frame = pd.DataFrame(columns, copy=False)
    frame.attrs = {"feature_set": feature_set, "training_months": names, "test_month": test_month}
    return frame


def _gather(pieces, names) -> pd.DataFrame:
    """The rows of `pieces` ((frame, rows) pairs), columns `names` only, stacked."""
    return pd.DataFrame(
        {name: np.concatenate([frame[name].to_numpy()[rows] for frame, rows in pieces]) for name in names}
    )


def _pair_columns(pieces, train_sizes: list[int], train_pickups: np.ndarray, wanted: list[str], seed: int) -> dict:
    """The encoded columns of every row of the frame: the train rows' out of fold, the others' from every train row.
    Each is written into its place in one array per column, a piece at a time."""
    names = [name for name in wanted if name in ENCODED]
    total = sum(len(frame) if isinstance(rows, slice) else int(np.count_nonzero(rows)) for frame, rows in pieces)
    columns = {name: np.empty(total, dtype=np.float32) for name in names}
    count = len(train_sizes)
    train = _gather(pieces[:count], [*pair_stats.INPUTS, DURATION])
    fitted = pair_stats.fit(train)
    encoded = pair_stats.out_of_fold(train, train_pickups.astype("datetime64[D]").astype(np.int64), seed)
    at = len(train)
    del train
    for name in names:
        columns[name][:at] = encoded[name]
    for piece in pieces[count:]:
        encoded = pair_stats.transform(_gather([piece], pair_stats.INPUTS), fitted)
        for name in names:
            columns[name][at : at + len(encoded[name])] = encoded[name]
        at += len(encoded[names[0]])
    return columns


def split_rows(frame: pd.DataFrame, *splits: str) -> pd.DataFrame:
    """The frame's rows of `splits`: a view when they are contiguous (a frame from build_features), else a copy."""
    rows = frame[SPLIT].isin(splits).to_numpy()
    where = np.flatnonzero(rows)
    if len(where) and where[-1] - where[0] + 1 == len(where):
        return frame.iloc[where[0] : where[-1] + 1]
    return frame[rows]


def digest_of_test_rows(frame: pd.DataFrame) -> str:
    """A short hash of the frame's test rows, their columns and values but not their index: which version of the
    month's rows a model was scored on, told from those of the month's features rebuilt since (core.gate)."""
    rows = split_rows(frame, TEST)
    digest = hashlib.sha256("\0".join(map(str, rows.columns)).encode())
    digest.update(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class DesignMatrices:
    """Model inputs, targets and weights per split, and the fitted encoding as plain JSON (for MLflow)."""

    X: dict[str, object]
    y: dict[str, np.ndarray]
    encoder: dict
    w: dict[str, np.ndarray | None] | None = None


def fit_encoder(frame: pd.DataFrame) -> dict:
    """The encoding of a feature frame, fitted on its training months, as plain JSON (for MLflow): the pair
    statistics on its `train` rows (the holdout is encoded like the test month), the rest on train and valid."""
    feature_set = frame.attrs["feature_set"]
    training = (frame[SPLIT] != TEST).to_numpy()
    if feature_set == "course":
        return {"feature_set": feature_set, "vocabulary": course_vocabulary(frame, training)}
    encoder = {
        "feature_set": feature_set,
        "features": FEATURE_SETS[feature_set],
        "missing_code": MISSING_CODE,
    }
    zones = {zone: _zone_categories(frame[zone], training) for zone in ZONE_COLUMNS}
    encoder["categories"] = {zone: categories for zone, (categories, _) in zones.items()}
    encoder["folded_zones"] = {zone: folded for zone, (_, folded) in zones.items() if folded}
    if any(name in ENCODED for name in encoder["features"]):
        encoder["pair_stats"] = pair_stats.fit(split_rows(frame, TRAIN))
    return encoder


def transform(rows: pd.DataFrame, encoder: dict):
    """Model input for `rows` (feature columns, see `derive_features`) under a fitted `encoder`.

    Works for any month and any model's encoder, so a champion trained on other months can be
    evaluated on this one. Encoded columns the rows already hold (a feature frame's) are taken as
    they are, the others computed from the encoder's pair statistics; columns the encoding leaves
    as they are are not copied.
    """
    if encoder["feature_set"] == "course":
        return course_matrix(rows, encoder["vocabulary"])
    missing = [name for name in encoder["features"] if name in ENCODED and name not in rows]
    encoded = pair_stats.transform(rows, encoder["pair_stats"]) if missing else {}
    columns = {
        name: pd.Series(encoded[name], index=rows.index, name=name) if name in missing else rows[name]
        for name in encoder["features"]
    }
    for zone, categories in encoder["categories"].items():
        columns[zone] = with_categories(rows[zone], categories, encoder.get("folded_zones", {}).get(zone))
    if "missing_code" in encoder:  # encoders of before it left the nulls as NaN
        for name in NULLABLE_CODES:
            if name in columns and columns[name].hasnans:
                columns[name] = columns[name].fillna(encoder["missing_code"])
    return pd.DataFrame(columns, copy=False)


def design_matrices(frame: pd.DataFrame, splits=SPLITS) -> DesignMatrices:
    """Inputs, targets and weights of `splits` (all by default), under the encoder fitted on the training rows."""
    encoder = fit_encoder(frame)
    parts = {split: split_rows(frame, split) for split in splits}
    return DesignMatrices(
        X={split: transform(part, encoder) for split, part in parts.items()},
        y={split: part[DURATION].to_numpy() for split, part in parts.items()},
        encoder=encoder,
        w={split: part[WEIGHT].to_numpy() if WEIGHT in part else None for split, part in parts.items()},
    )


def pair_keys(rows: pd.DataFrame) -> np.ndarray:
    """Each row's pickup/dropoff zone pair as one int64, -1 where a zone is missing."""
    pickup, dropoff = (zone_ids(rows[zone]) for zone in ZONE_COLUMNS)
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
