"""Clean one month of trips: the target (`duration`) and the rows a model may learn from.

A month is cleaned in Arrow, a batch of rows at a time (from a table or straight from its parquet
file), so that only the cleaned rows, in the canonical schema's narrow types, and one raw batch are
held: a yellow month of 3.4 M trips stays well under a gigabyte. pandas sees the result once,
converted column by column (`self_destruct`).

A trip given twice (a month published with its rows twice over) is kept once: the same trip is a row
with the same values in every canonical column, as `unify_schema` reads them (columns cleaning never
reads do not tell trips apart; `duration` follows from the times). A copy may lie batches away from
its first, so a 64-bit hash of each row kept so far is held with its place (12 bytes a row, 40 MB for
a yellow month).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ml_assets.core import tables
from ml_assets.core.months import month_bounds
from ml_assets.core.schema import (
    CANONICAL,
    DROPOFF,
    DURATION,
    PICKUP,
    REQUIRED,
    TLC_TIME_ZONE,
    ZONE_COLUMNS,
    canonical_name,
    check_columns,
    unify_schema,
)
from ml_assets.core.zones import known_zones

MIN_DURATION, MAX_DURATION = 1.0, 60.0  # minutes, as in the course notebook
# In the order they are judged; a zone id not in TLC's lookup (0, 999, -1) names no place a model could learn. A
# copy of a kept trip is judged last: a copy of a row dropped for another reason is counted under that reason.
REASONS = ("missing_values", "zone_not_in_lookup", "pickup_outside_month", "duration_out_of_range", "duplicate_trip")


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


def _bad(mask) -> np.ndarray:
    """A boolean Arrow result as numpy, null counted as false."""
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def _clock_change_days(*columns: pa.ChunkedArray) -> list[datetime.date]:
    """The days among the columns' dates on which New York's clocks change (a few a year at most)."""
    zone = ZoneInfo(TLC_TIME_ZONE)
    first, last = (pa.scalar(day, pa.date32()) for day in (datetime.date.min, datetime.date.max))
    dates = set()
    for column in columns:
        days = pc.unique(pc.cast(column, pa.date32()))
        # A stray time past Python's years (a dropoff in the year 30000) is no day the clocks change on.
        dates.update(days.filter(pc.and_(pc.greater(days, first), pc.less(days, last))).to_pylist())
    midnight = datetime.time()
    return sorted(
        day
        for day in dates
        if datetime.datetime.combine(day, midnight, zone).utcoffset()
        != datetime.datetime.combine(day + datetime.timedelta(days=1), midnight, zone).utcoffset()
    )


def _shortest_reading(pickup: pa.Array, dropoff: pa.Array) -> np.ndarray:
    """Minutes elapsed between New York wall-clock times: in the hour the clocks repeat (or skip), a time has
    two readings, and the shortest non-negative trip they allow is taken."""

    def instants(times: pa.Array, reading: str) -> np.ndarray:
        local = pc.assume_timezone(times, timezone=TLC_TIME_ZONE, ambiguous=reading, nonexistent=reading)
        return pc.cast(local, pa.int64()).to_numpy(zero_copy_only=False).astype("float64")  # UTC microseconds

    earliest, latest = instants(pickup, "earliest"), instants(pickup, "latest")
    readings = np.stack(
        [instants(dropoff, reading) - start for reading in ("earliest", "latest") for start in (earliest, latest)]
    )
    readings /= 60e6
    shortest = np.where(readings >= 0, readings, np.inf).min(axis=0)
    return np.where(np.isfinite(shortest), shortest, readings.max(axis=0))


def _elapsed_minutes(pickup: pa.ChunkedArray, dropoff: pa.ChunkedArray) -> pa.Array:
    """Minutes from pickup to dropoff as time passed, not as the clock read: TLC writes New York wall-clock
    times, so a trip across the spring change read an hour longer and one across the autumn change an hour
    shorter (or negative). Only trips with an end on a day the clocks change are read with the zone."""
    # As float64 at once: Arrow refuses to divide an integer past 2**53 (microseconds: a stray dropoff centuries away).
    elapsed = pc.cast(pc.cast(pc.subtract(dropoff, pickup), pa.int64()), pa.float64(), safe=False)
    wall = pc.divide(elapsed, 60e6).to_numpy(zero_copy_only=False)
    days = _clock_change_days(pickup, dropoff)
    if days:
        near = np.zeros(len(wall), dtype=bool)
        for day in days:
            start = pa.scalar(datetime.datetime.combine(day, datetime.time()), pickup.type)
            end = pa.scalar(datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time()), pickup.type)
            for column in (pickup, dropoff):
                near |= _bad(pc.and_(pc.greater_equal(column, start), pc.less(column, end)))
        rows = pa.array(np.flatnonzero(near))
        wall = wall.copy()  # Arrow's buffer, read-only
        wall[near] = _shortest_reading(pickup.take(rows), dropoff.take(rows))
    return pa.array(wall, pa.float64())


def _row_hashes(trips: pa.Table) -> np.ndarray:
    """A 64-bit hash of each row's canonical columns."""
    # Columns as they are (no copy into one block of floats); a category hashes faster than strings.
    columns = trips.select(CANONICAL.names).to_pandas(split_blocks=True, strings_to_categorical=True)
    return pd.util.hash_pandas_object(columns, index=False).to_numpy()


def _same_rows(a: pa.Table, b: pa.Table) -> np.ndarray:
    """Row by row, whether `a` and `b` hold the same canonical values, a missing value matching a missing one."""
    same = np.ones(a.num_rows, dtype=bool)
    for name in CANONICAL.names:
        both_missing = pc.and_(pc.is_null(a[name], nan_is_null=True), pc.is_null(b[name], nan_is_null=True))
        same &= _bad(pc.or_kleene(pc.equal(a[name], b[name]), both_missing))
    return same


class _KeptTrips:
    """The trips kept so far, and the hash of each. A row whose hash is an earlier row's is compared with that row in
    full before it is dropped: two distinct trips of a month of 3 M share a 64-bit hash about once in three million
    months, and then both are kept (a copy of the second may then be kept too: never a distinct trip dropped)."""

    def __init__(self):
        self.parts: list[pa.Table] = []
        self.rows = 0
        # Per part, its rows' hashes sorted and the kept row of each (numbered across parts): 12 bytes a row, searched
        # a part at a time, never merged.
        self.hashes: list[tuple[np.ndarray, np.ndarray]] = []

    def _first(self, hashes: np.ndarray, order: np.ndarray) -> np.ndarray:
        """For each row of a batch (`order` sorts its hashes), the first row with its hash: a kept one, else the
        batch's own first (numbered after the kept rows)."""
        ranked = hashes[order]
        starts = np.flatnonzero(np.diff(ranked, prepend=ranked[:1] + 1) != 0)  # the first of each run of one hash
        first = np.empty(len(hashes), np.int64)
        first[order] = self.rows + np.repeat(order[starts], np.diff(starts, append=len(hashes)))
        for kept, where in reversed(self.hashes):  # the earliest part last, to have the last word
            at = np.minimum(np.searchsorted(kept, ranked), len(kept) - 1)  # in order: each search starts at the last
            here = kept[at] == ranked
            first[order[here]] = where[at[here]]
        return first

    def add(self, trips: pa.Table) -> int:
        """Keep the rows of `trips` that repeat no kept row nor an earlier row of `trips`; the number of copies."""
        hashes = _row_hashes(trips)
        order = np.argsort(hashes, kind="stable")  # rows of one hash in their order: the first found is the first
        first = self._first(hashes, order)
        copies = np.flatnonzero(first < self.rows + np.arange(len(hashes)))  # rows whose hash came before
        if len(copies):  # none in a real month
            earlier = pa.concat_tables([*self.parts, trips]).take(first[copies])
            copies = copies[_same_rows(trips.take(copies), earlier)]
        keep = np.ones(trips.num_rows, dtype=bool)
        keep[copies] = False
        self.parts.append(trips.filter(keep) if len(copies) else trips)
        order = order[keep[order]]  # the kept rows, by hash
        if len(order):  # none of an empty part: a search needs a last element
            self.hashes.append((hashes[order], (self.rows + np.cumsum(keep)[order] - 1).astype(np.int32)))
        self.rows += len(order)
        return len(copies)


def _clean_batch(batch: pa.Table, start, end, dropped: dict[str, int], kept: _KeptTrips) -> None:
    """Adds the batch's rows that pass, with `duration`, to `kept`, and the dropped rows per reason to `dropped`."""
    pickup, dropoff = batch[PICKUP], batch[DROPOFF]
    minutes = _elapsed_minutes(pickup, dropoff)
    timestamp = pickup.type
    zones = pa.array(known_zones())
    rules = {
        "missing_values": np.logical_or.reduce([_bad(pc.is_null(batch[name], nan_is_null=True)) for name in REQUIRED]),
        "zone_not_in_lookup": np.logical_or.reduce(
            [~_bad(pc.is_in(batch[name], value_set=zones)) for name in ZONE_COLUMNS]
        ),
        "pickup_outside_month": _bad(
            pc.or_(pc.less(pickup, pa.scalar(start, timestamp)), pc.greater_equal(pickup, pa.scalar(end, timestamp)))
        ),
        "duration_out_of_range": ~_bad(
            pc.and_(pc.greater_equal(minutes, MIN_DURATION), pc.less_equal(minutes, MAX_DURATION))
        ),
    }
    keep = np.ones(batch.num_rows, dtype=bool)
    for reason, rule in rules.items():  # in the order of REASONS
        bad = rule & keep
        dropped[reason] += int(bad.sum())
        keep &= ~bad
    keep = pa.array(keep)
    dropped["duplicate_trip"] += kept.add(
        batch.filter(keep).append_column(DURATION, pc.cast(pc.filter(minutes, keep), pa.float32()))
    )


def clean_trips(trips: tables.TableOrFile, month: str, origin: str) -> CleanedMonth:
    """Unify the schema, add `duration` (minutes) and drop what a model must not see."""
    raw_rows, schema = tables.num_rows(trips), tables.schema(trips)
    if raw_rows == 0:
        raise EmptyMonthError(f"{origin}: the file has no trips")
    check_columns(schema, origin)
    known = [name for name in schema.names if canonical_name(name) in CANONICAL.names]  # the rest is never read
    start, end = (bound.to_pydatetime() for bound in month_bounds(month))
    dropped, kept = dict.fromkeys(REASONS, 0), _KeptTrips()
    for batch in tables.batches(trips, known):
        _clean_batch(unify_schema(pa.Table.from_batches([batch]), origin), start, end, dropped, kept)
    cleaned = pa.concat_tables(kept.parts)
    del kept
    if cleaned.num_rows == 0:
        raise EmptyMonthError(f"{origin}: no trips left after cleaning (dropped: {dropped})")
    trips = cleaned.to_pandas(self_destruct=True, split_blocks=True, strings_to_categorical=True)
    del cleaned
    for column in ZONE_COLUMNS:
        trips[column] = trips[column].astype("category")
    return CleanedMonth(trips=trips, raw_rows=raw_rows, dropped=dropped)
