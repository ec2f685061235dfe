"""Clean one month of trips: the target (`duration`) and the rows a model may learn from."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from ml_assets.core.months import month_bounds
from ml_assets.core.schema import DROPOFF, DURATION, PICKUP, REQUIRED, ZONE_COLUMNS, unify_schema

MIN_DURATION, MAX_DURATION = 1.0, 60.0  # minutes, as in the course notebook


class EmptyMonthError(ValueError):
    """A month has no trips, before or after cleaning."""


@dataclass(frozen=True)
class CleanedMonth:
    trips: pd.DataFrame
    raw_rows: int
    dropped: dict[str, int]  # reason -> rows; each dropped row counted under its first reason

    @property
    def dropped_rows(self) -> int:
        return self.raw_rows - len(self.trips)


def clean_trips(table: pa.Table, month: str, where: str) -> CleanedMonth:
    """Unify the schema, add `duration` (minutes) and drop what a model must not see."""
    if table.num_rows == 0:
        raise EmptyMonthError(f"{where}: the file has no trips")
    trips = unify_schema(table, where).to_pandas()
    trips[DURATION] = (trips[DROPOFF] - trips[PICKUP]).dt.total_seconds() / 60
    start, end = month_bounds(month)
    rules = {
        "missing_values": trips[list(REQUIRED)].isna().any(axis=1),
        "pickup_outside_month": (trips[PICKUP] < start) | (trips[PICKUP] >= end),
        "duration_out_of_range": ~trips[DURATION].between(MIN_DURATION, MAX_DURATION),
    }
    dropped, keep = {}, pd.Series(True, index=trips.index)
    for reason, bad in rules.items():
        dropped[reason] = int((bad & keep).sum())
        keep &= ~bad
    trips = trips[keep].reset_index(drop=True)
    if trips.empty:
        raise EmptyMonthError(f"{where}: no trips left after cleaning (dropped: {dropped})")
    for column in ZONE_COLUMNS:
        trips[column] = trips[column].astype("category")
    return CleanedMonth(trips=trips, raw_rows=table.num_rows, dropped=dropped)
