"""Rebuild a registered model from its lineage and compare it with the registered one (no Dagster here).

The months are read and cleaned again, the features built with the recorded config and stored and
read back as the pipeline stores them, and the model trained with the recorded params, rounds and
threads: the same data and code give the same trees.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ml_assets.core import lineage, model, tables
from ml_assets.core.cleaning import clean_trips
from ml_assets.core.features import FEATURE_INPUTS, TEST, build_features, split_rows, transform
from ml_assets.core.storage import open_parquet_hashed, read_table
from ml_assets.core.training import regression_metrics, train_and_evaluate

RMSE_TOLERANCE, PREDICTION_TOLERANCE = 1e-9, 1e-6


def _as_stored(frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """`frame` written and read back as the parquet IO manager does, so dtypes match what the steps saw."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "value.parquet"
        frame.to_parquet(path, index=False, compression="zstd")
        return tables.to_pandas(read_table(path, columns=columns))


def _cleaned(trips: pq.ParquetFile, path, month: str) -> pd.DataFrame:
    return _as_stored(clean_trips(trips, month, f"month {month}, file {path}").trips, FEATURE_INPUTS)


def rebuild(recorded: dict, fetch: Callable[[str], object], log: Callable[[str], None] = print):
    """The feature frame and the model `recorded` (a lineage) describes, built again from the files `fetch(month)`
    gives; a file that is not the recorded one is refused (`LineageError`)."""
    if recorded.get("format") != lineage.FORMAT:
        raise lineage.LineageError(f"unknown lineage format {recorded.get('format')!r}")
    test_month, months = recorded["test_month"], recorded["training_months"]
    config = recorded["feature_config"]
    known = set(inspect.signature(build_features).parameters)
    if not set(config) <= known:  # e.g. a model recorded before the time holdout (`holdout_fraction`)
        raise lineage.LineageError(
            f"the model's feature config {config} names {sorted(set(config) - known)}, which this code does not "
            "know: it was trained by another version of ml_assets (see its lineage's `code`)"
        )
    cleaned = {}
    for month in [*months, test_month]:
        path = fetch(month)
        trips, sha256, _ = open_parquet_hashed(path)  # the hash of the bytes it rebuilds from, as ingestion's
        lineage.check_file(recorded, month, sha256, str(path))
        log(f"{month}: {path} has the recorded sha256 {recorded['raw_sha256'][month][:16]}…")
        cleaned[month] = _cleaned(trips, path, month)
    frame = build_features({m: cleaned[m] for m in months}, cleaned[test_month], test_month, **config)
    frame.attrs["feature_config"] = config
    frame = _as_stored(frame)
    return frame, train_and_evaluate(
        frame,
        recorded["params"],
        num_boost_round=recorded["num_boost_round"],
        early_stopping_rounds=recorded["early_stopping_rounds"],
        threads=recorded["threads"],
        refit=recorded.get("refit", False),
    )


@dataclass(frozen=True)
class Comparison:
    recorded_rmse: float
    rebuilt_rmse: float
    max_prediction_difference: float  # registered vs rebuilt model, on the test month
    same_encoder: bool

    @property
    def matches(self) -> bool:
        return (
            abs(self.recorded_rmse - self.rebuilt_rmse) <= RMSE_TOLERANCE
            and self.max_prediction_difference <= PREDICTION_TOLERANCE
            and self.same_encoder
        )


def compare(frame, rebuilt, registered_model, registered_encoder: dict, recorded_rmse: float) -> Comparison:
    """The rebuilt model against the registered one: test RMSE, every test-month prediction, the encoder."""
    registered = model.predict(registered_model, transform(split_rows(frame, TEST), registered_encoder))
    rebuilt_rmse = regression_metrics(rebuilt.data.y[TEST], rebuilt.predicted)["rmse"]
    return Comparison(
        recorded_rmse=recorded_rmse,
        rebuilt_rmse=rebuilt_rmse,
        max_prediction_difference=float(np.max(np.abs(registered - rebuilt.predicted), initial=0.0)),
        same_encoder=registered_encoder == rebuilt.data.encoder,
    )
