"""Zone-pair statistics: what the training months know about trips between the same two zones, as a fitted encoder.

Per statistic (the means of log duration, log speed and log distance) and per level of a hierarchy of keys

    global  ->  pickup zone, dropoff zone  ->  pair (pickup, dropoff)  ->  pair x time bucket

the smoothed mean over the training rows of that key, `(sum + m * prior) / (count + m)`, where `m`
is the smoothing (pseudo-rows) and `prior` the coarser level's smoothed value: the global mean for a
zone, `pickup + dropoff - global` (additive in log space) for a pair, the pair's for a pair x bucket.
A key never seen in training gets its prior, all the way up to the global value: an unseen pair
needs no special case. Time buckets are hours of the day (`HOUR_EDGES`), weekends apart.

- `fit(rows)`: the tables of the training rows, as plain JSON (exact floats; never pickle), logged with
  the model as part of its `encoder.json`;
- `out_of_fold(rows, days)`: the training rows' own values, *out of fold*: the days of the window are
  dealt into FOLDS folds, and a row is encoded by the other folds' rows only, so no row sees its own
  duration, nor any trip of its own day;
- `transform(rows, fitted)`: any other rows (the holdout, the test month, a month to predict) encoded
  by every fitted row, exactly as a served model gets them.

Only `duration` is a target here; distance, zones and pickup time are known at pickup. Nothing known
only after the trip (fare, tip, tolls, total) is read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_assets.core.schema import DURATION, ZONE_COLUMNS
from ml_assets.core.zones import zone_ids

FORMAT = "pair_stats/1"
HOUR_EDGES = (0, 7, 10, 16, 19, 22)  # bucket b: hours [edge_b, edge_b+1), and the same on weekends apart
SMOOTHING = 20.0
FOLDS = 5
DISTANCE_OFFSET = 0.1  # miles: log(distance + offset), so zero-distance trips stay finite
CHUNK_ROWS = 1 << 20  # rows encoded at a time
STATS = ("log_duration", "log_speed", "log_distance")
LEVELS = ("pu", "do", "pair", "pair_bucket")
_ZONE_BASE, _BUCKET_BASE = 1000, 100  # pair key = pu * 1000 + do (TLC zone ids are 1..265); pair x bucket
# The encoder's columns: smoothed durations (min) and speeds (mph) per level, the pair's trip count (log1p),
# the trip's distance at its pair-and-bucket's speed, the pair's typical distance and the trip's ratio to it.
PAIR_COLUMNS = (
    "pu_duration",
    "do_duration",
    "pu_speed",
    "do_speed",
    "pair_duration",
    "pair_speed",
    "pair_count",
    "pair_bucket_duration",
    "pair_bucket_speed",
    "speed_duration",
)
DISTANCE_COLUMNS = ("pair_distance", "distance_ratio")
COLUMNS = PAIR_COLUMNS + DISTANCE_COLUMNS
INPUTS = (*ZONE_COLUMNS, "pickup_hour", "pickup_weekday", "trip_distance")


def _buckets(rows: pd.DataFrame) -> np.ndarray:
    hours = np.floor(rows["pickup_hour"].to_numpy(dtype="float64"))
    bucket = np.searchsorted(np.asarray(HOUR_EDGES[1:]), hours, side="right").astype(np.int64)
    return bucket + len(HOUR_EDGES) * (rows["pickup_weekday"].to_numpy() >= 5)


def _keys(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each row's key at every level; -1 where a zone is missing (the row then gets the prior). A pair key is
    made only of zone ids below _ZONE_BASE: another id would share its key with a real pair."""
    pu, do = (zone_ids(rows[zone]) for zone in ZONE_COLUMNS)
    pair = np.where((pu >= 0) & (pu < _ZONE_BASE) & (do >= 0) & (do < _ZONE_BASE), pu * _ZONE_BASE + do, -1)
    return {
        "pu": pu,
        "do": do,
        "pair": pair,
        "pair_bucket": np.where(pair >= 0, pair * _BUCKET_BASE + _buckets(rows), -1),
    }


def _log_distance(rows: pd.DataFrame) -> np.ndarray:
    return np.log(np.maximum(rows["trip_distance"].to_numpy(dtype="float64"), 0.0) + DISTANCE_OFFSET)


def _values(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The per-row values whose means are encoded: log minutes, log miles per hour, log miles."""
    distance, duration = _log_distance(rows), np.log(rows[DURATION].to_numpy(dtype="float64"))
    return {"log_duration": duration, "log_speed": distance - duration + np.log(60.0), "log_distance": distance}


def _smooth(total: np.ndarray, count: np.ndarray, prior: np.ndarray) -> np.ndarray:
    return (total + SMOOTHING * prior) / (count + SMOOTHING)


def _prior(level: str, stat: str, done: dict, global_value: np.ndarray) -> np.ndarray:
    if level in ("pu", "do"):
        return global_value
    if level == "pair":  # what the two zones say, each relative to the mean
        return done["pu"][stat] + done["do"][stat] - global_value
    return done["pair"][stat]


def _lookup(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Position of each wanted key in the sorted `keys`, -1 where absent (or the key is -1)."""
    if len(keys) == 0:
        return np.full(len(wanted), -1)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where((keys[at] == wanted) & (wanted >= 0), at, -1)


def _columns(rows: pd.DataFrame, encoded: dict) -> dict[str, np.ndarray]:
    """The model's columns from the smoothed log means, as float32."""
    log_distance = _log_distance(rows)
    columns = {
        "pu_duration": np.exp(encoded["pu"]["log_duration"]),
        "do_duration": np.exp(encoded["do"]["log_duration"]),
        "pu_speed": np.exp(encoded["pu"]["log_speed"]),
        "do_speed": np.exp(encoded["do"]["log_speed"]),
        "pair_duration": np.exp(encoded["pair"]["log_duration"]),
        "pair_speed": np.exp(encoded["pair"]["log_speed"]),
        "pair_count": np.log1p(encoded["pair"]["count"]),
        "pair_bucket_duration": np.exp(encoded["pair_bucket"]["log_duration"]),
        "pair_bucket_speed": np.exp(encoded["pair_bucket"]["log_speed"]),
        # The distance at the pair's typical speed in that bucket: a duration estimate trees cannot multiply out.
        "speed_duration": np.exp(log_distance - encoded["pair_bucket"]["log_speed"] + np.log(60.0)),
        "pair_distance": np.exp(encoded["pair"]["log_distance"]) - DISTANCE_OFFSET,
        "distance_ratio": np.exp(log_distance - encoded["pair"]["log_distance"]),
    }
    return {name: columns[name].astype(np.float32) for name in COLUMNS}


def _fold_sums(keys: np.ndarray, folds: np.ndarray, values: dict[str, np.ndarray], folds_count: int):
    """Unique keys (-1 left out), each known row's key index, and per (key, fold) the row count and sums."""
    known = keys >= 0
    unique, code = np.unique(keys[known], return_inverse=True)
    cell = code * folds_count + folds[known]
    size = len(unique) * folds_count
    count = np.bincount(cell, minlength=size).reshape(len(unique), folds_count).astype("float64")
    sums = {
        s: np.bincount(cell, weights=values[s][known], minlength=size).reshape(len(unique), folds_count) for s in STATS
    }
    return known, unique, code, count, sums


def fit(rows: pd.DataFrame) -> dict:
    """The encoder fitted on `rows` (training rows with `duration`), as plain JSON: per level, the sorted keys,
    their row counts and mean statistics, and the global means. The same rows give the same JSON."""
    keys, values = _keys(rows), _values(rows)
    global_mean = {s: float(values[s].mean()) if len(rows) else 0.0 for s in STATS}
    tables = {}
    for level in LEVELS:
        _, unique, _, count, sums = _fold_sums(keys[level], np.zeros(len(rows), np.int64), values, 1)
        key_count = count[:, 0]
        tables[level] = {
            "keys": unique.tolist(),
            "count": key_count.astype(np.int64).tolist(),
            **{s: (sums[s][:, 0] / np.maximum(key_count, 1)).tolist() for s in STATS},
        }
    return {
        "format": FORMAT,
        "hour_edges": list(HOUR_EDGES),
        "smoothing": SMOOTHING,
        "global": global_mean,
        "tables": tables,
    }


def _in_chunks(rows: pd.DataFrame, encode) -> dict[str, np.ndarray]:
    """The columns of `rows`, CHUNK_ROWS at a time: `encode(chunk_slice)` gives a chunk's per-level smoothed
    log means, so only a chunk's float64 intermediates are ever in memory (a window of ten million trips)."""
    out = {name: np.empty(len(rows), dtype=np.float32) for name in COLUMNS}
    for start in range(0, len(rows), CHUNK_ROWS):
        part = slice(start, min(start + CHUNK_ROWS, len(rows)))
        for name, values in _columns(rows.iloc[part], encode(part)).items():
            out[name][part] = values
    return out


def _codes(rows: pd.DataFrame, tables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each row's position in every level's sorted `tables[level]` keys (int32), -1 where not there."""
    keys = _keys(rows)
    return {level: _lookup(tables[level], keys.pop(level)).astype(np.int32) for level in LEVELS}


def out_of_fold(rows: pd.DataFrame, days: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The columns of the training `rows` (with `duration`; `days` their pickup day numbers), each row encoded by
    the rows of the other folds only: the window's days are dealt into FOLDS folds, so no row sees its own
    duration nor any trip of its own day."""
    unique_days, day_of_row = np.unique(days, return_inverse=True)
    folds = (np.random.default_rng(seed).permutation(len(unique_days)) % FOLDS)[day_of_row.reshape(-1)]
    del day_of_row
    values = _values(rows)
    fold_count = np.bincount(folds, minlength=FOLDS).astype("float64")
    fold_sum = {s: np.bincount(folds, weights=values[s], minlength=FOLDS) for s in STATS}
    everything = {s: fold_sum[s].sum() / max(fold_count.sum(), 1) for s in STATS}
    cells, keys = {}, _keys(rows)
    for level in LEVELS:  # per level: its keys, and per (key, fold) the row count and sums
        _, unique, _, count, sums = _fold_sums(keys.pop(level), folds, values, FOLDS)
        cells[level] = (unique, count, count.sum(axis=1), sums, {s: sums[s].sum(axis=1) for s in STATS})
    del values
    codes = _codes(rows, {level: cell[0] for level, cell in cells.items()})

    def encode(part: slice) -> dict:
        mine = folds[part]
        # Out of fold, the global means too; a fold holding every row (a window of one day) falls back to all.
        outside = fold_count.sum() - fold_count[mine]
        encoded = {}
        for level in LEVELS:
            _, count, key_count, sums, key_sums = cells[level]
            code = codes[level][part]
            hit, at = code >= 0, np.maximum(code, 0)
            n = np.where(hit, key_count[at] - count[at, mine], 0.0) if len(key_count) else np.zeros(len(mine))
            encoded[level] = {"count": n}
            for s in STATS:
                total = np.where(hit, key_sums[s][at] - sums[s][at, mine], 0.0) if len(key_count) else n
                glob = np.where(
                    outside > 0, (fold_sum[s].sum() - fold_sum[s][mine]) / np.maximum(outside, 1), everything[s]
                )
                encoded[level][s] = _smooth(total, n, _prior(level, s, encoded, glob))
        return encoded

    return _in_chunks(rows, encode)


def transform(rows: pd.DataFrame, fitted: dict) -> dict[str, np.ndarray]:
    """The columns of `rows` (any month) under a fitted encoder (`fit`'s JSON), from every fitted row."""
    if fitted.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} encoder: {fitted.get('format')!r}")
    tables = {
        level: {
            name: np.asarray(values, dtype=np.int64 if name == "keys" else "float64") for name, values in table.items()
        }
        for level, table in fitted["tables"].items()
    }
    codes = _codes(rows, {level: table["keys"] for level, table in tables.items()})

    def encode(part: slice) -> dict:
        encoded = {}
        for level in LEVELS:
            table, code = tables[level], codes[level][part]
            hit, at = code >= 0, np.maximum(code, 0)
            n = np.where(hit, table["count"][at], 0.0) if len(table["count"]) else np.zeros(len(code))
            encoded[level] = {"count": n}
            for s in STATS:
                mean = np.where(hit, table[s][at], 0.0) if len(table[s]) else n
                prior = _prior(level, s, encoded, np.full(len(code), fitted["global"][s]))
                encoded[level][s] = _smooth(mean * n, n, prior)
        return encoded

    return _in_chunks(rows, encode)
