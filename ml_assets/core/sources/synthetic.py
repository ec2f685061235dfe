"""Synthetic green- or yellow-taxi months, for running the pipeline with no network and no real data.

The green tables have exactly TLC's green-taxi schema (the 2023-02+ layout); a yellow month holds
the same trips in yellow's columns (`tpep_` times, no green-only trip_type or ehail_fee, an
Airport_fee on pickups at the zone lookup's airports), so that it is judged and cleaned as the
yellow month it is named. They have the structure a duration model can learn from: skewed zone
popularity, a fixed map of zones (so distance and congestion depend on the zone pair), daily and
weekly rhythm, rush-hour slowdowns. Times are New York's clock readings, as TLC's are: a trip across
a clock change lasts its generated duration. They also carry TLC's usual dirt (non-positive and multi-hour
durations, pickups outside the month, nulls) so that cleaning has real work to do.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from ml_assets.core.months import check_month, month_bounds
from ml_assets.core.schema import DROPOFF, DROPOFF_ZONE, PICKUP, PICKUP_ZONE, TIME_PREFIXES, TLC_TIME_ZONE
from ml_assets.core.sources import MonthNotPublishedError, trip_file_name
from ml_assets.core.storage import arrow_file, location, write_table
from ml_assets.core.zones import zone_flags

GENERATOR = 3  # bump whenever the output for a given (month, seed, rows, taxi) changes
METADATA_KEY = b"ml_assets.synthetic"
N_ZONES = 265

SCHEMA = pa.schema(
    [
        ("VendorID", pa.int32()),
        ("lpep_pickup_datetime", pa.timestamp("us")),
        ("lpep_dropoff_datetime", pa.timestamp("us")),
        ("store_and_fwd_flag", pa.large_string()),
        ("RatecodeID", pa.int64()),
        ("PULocationID", pa.int32()),
        ("DOLocationID", pa.int32()),
        ("passenger_count", pa.int64()),
        ("trip_distance", pa.float64()),
        ("fare_amount", pa.float64()),
        ("extra", pa.float64()),
        ("mta_tax", pa.float64()),
        ("tip_amount", pa.float64()),
        ("tolls_amount", pa.float64()),
        ("ehail_fee", pa.float64()),
        ("improvement_surcharge", pa.float64()),
        ("total_amount", pa.float64()),
        ("payment_type", pa.int64()),
        ("trip_type", pa.int64()),
        ("congestion_surcharge", pa.float64()),
    ]
)
GREEN_ONLY = ("trip_type", "ehail_fee")
AIRPORT_FEE = 1.75  # yellow's fee on a pickup at an airport


def _schema(taxi: str) -> pa.Schema:
    """Green's SCHEMA, or yellow's: its own time columns, without green's own columns, with an airport fee."""
    if taxi == "green":
        return SCHEMA
    prefix = TIME_PREFIXES[taxi]
    times = {TIME_PREFIXES["green"] + name: prefix + name for name in (PICKUP, DROPOFF)}
    fields = [field.with_name(times.get(field.name, field.name)) for field in SCHEMA if field.name not in GREEN_ONLY]
    return pa.schema([*fields, ("Airport_fee", pa.float64())])


# Relative pickup volume by hour of day: quiet nights, a morning and a larger evening peak.
HOURLY = np.array([17, 12, 9, 7, 6, 6, 13, 35, 50, 50, 48, 52, 54, 55, 60, 70, 76, 80, 76, 60, 47, 38, 30, 24], float)
WEEKDAY = np.array([1.0, 1.05, 1.1, 1.1, 1.15, 0.9, 0.75])  # Monday .. Sunday
RUSH_HOURS = [7, 8, 9, 16, 17, 18, 19]

# Shares of dirty rows, as seen in real TLC months.
NON_POSITIVE_SHARE = 0.007  # dropoff at or before pickup
MULTI_HOUR_SHARE = 0.005  # 2-20 h trips (meters left running)
OUTSIDE_MONTH_SHARE = 0.0001  # pickups in 2009-01 or a day either side of the month
NULL_SHARE = 0.06  # rows with all nullable codes missing together, as TLC writes them
ZERO_DISTANCE_SHARE = 0.03

NULLABLE = {"store_and_fwd_flag", "RatecodeID", "passenger_count", "payment_type", "trip_type", "congestion_surcharge"}


class _City(NamedTuple):
    pickup_p: np.ndarray  # (zones,) pickup probability per zone
    dropoff_cdf: np.ndarray  # (zones * zones,) per-pickup-zone CDFs, row i shifted by +i
    distance: np.ndarray  # (zones, zones) road miles between zone pairs
    congestion: np.ndarray  # (zones, zones) travel-time multiplier per zone pair


@functools.lru_cache(maxsize=1)
def _city() -> _City:
    """The fixed map every month shares, so zone ids mean the same thing across months."""
    rng = np.random.default_rng(20_230_301)
    xy = rng.uniform([0, 0], [12, 16], size=(N_ZONES, 2))
    rank = rng.permutation(N_ZONES) + 1
    popularity = (rank + 4.0) ** -2.0  # top zone ~18 % of pickups, top 10 ~70 %, like TLC's
    pickup_p = popularity / popularity.sum()

    straight = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    within = rng.uniform(0.3, 1.2, N_ZONES)  # typical trip length inside one zone
    distance = np.where(np.eye(N_ZONES, dtype=bool), within[:, None], 1.3 * straight)

    # Gravity model: people go to popular places that are near.
    attraction = popularity**0.35 * np.exp(-distance / 2.0)
    cdf = np.cumsum(attraction, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    dropoff_cdf = (cdf + np.arange(N_ZONES)[:, None]).ravel()

    zone_slowness = rng.lognormal(0, 0.2, N_ZONES)
    congestion = zone_slowness[:, None] * zone_slowness[None] * rng.lognormal(0, 0.1, (N_ZONES, N_ZONES))
    return _City(pickup_p, dropoff_cdf, distance, congestion)


def _rng(month: str, seed: int) -> np.random.Generator:
    year, mon = map(int, check_month(month).split("-"))
    return np.random.default_rng([seed, year, mon, GENERATOR])


def _pickup_offsets(rng: np.random.Generator, start: np.datetime64, n_days: int, rows: int):
    """Seconds after the month's start, with weekly and daily shape; also day-of-week and hour."""
    first_weekday = int((start.astype("datetime64[D]").astype(np.int64) + 3) % 7)  # 1970-01-01 was a Thursday
    weekday = (first_weekday + np.arange(n_days)) % 7
    day_p = WEEKDAY[weekday] / WEEKDAY[weekday].sum()
    day = rng.choice(n_days, size=rows, p=day_p)
    hour = rng.choice(24, size=rows, p=HOURLY / HOURLY.sum())
    seconds = day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, rows)
    return seconds, weekday[day], hour


def generate_month(month: str, seed: int = 0, rows: int = 60_000, taxi: str = "green") -> pa.Table:
    """One month of `taxi` trips; the same (month, seed, rows) always gives the same trips, in `taxi`'s columns."""
    rng = _rng(month, seed)
    city = _city()
    start, end = (np.datetime64(t.to_datetime64(), "s") for t in month_bounds(month))
    n_days = int((end - start) // np.timedelta64(1, "D"))

    seconds, weekday, hour = _pickup_offsets(rng, start, n_days, rows)
    pu = rng.choice(N_ZONES, size=rows, p=city.pickup_p)
    do = np.searchsorted(city.dropoff_cdf, pu + rng.random(rows), side="right") - pu * N_ZONES

    miles = city.distance[pu, do] * rng.lognormal(0, 0.2, rows)
    weekend = weekday >= 5
    hour_factor = np.where(np.isin(hour, RUSH_HOURS) & ~weekend, 1.4, np.where(hour < 6, 0.8, 1.0))
    mph = 8 + 2.5 * np.sqrt(miles)  # longer trips use faster roads
    minutes = 1.5 + miles / mph * 60 * city.congestion[pu, do] * hour_factor * np.where(weekend, 0.85, 1.0)
    del weekday, hour, weekend, hour_factor, mph  # a month of millions of trips: hold no more than needed
    minutes *= rng.lognormal(0, 0.25, rows)
    trip_distance = np.where(rng.random(rows) < ZERO_DISTANCE_SHARE, 0.0, miles.round(2))

    pickup = start + seconds.astype("timedelta64[s]")
    del seconds
    duration = (minutes * 60).astype(np.int64)
    _add_dirt(rng, pickup, duration, start, end)
    pickup, dropoff = _clock_readings(pickup, duration)
    del duration

    null = rng.random(rows) < NULL_SHARE
    money = _money(rng, miles, minutes, null)
    del miles, minutes
    columns = {
        "VendorID": rng.choice(np.array([1, 2], np.int32), size=rows, p=[0.14, 0.86]),
        TIME_PREFIXES[taxi] + PICKUP: pickup,
        TIME_PREFIXES[taxi] + DROPOFF: dropoff,
        "store_and_fwd_flag": np.where(rng.random(rows) < 0.004, "Y", "N").astype(object),
        "RatecodeID": rng.choice([1, 5, 2, 4, 3], size=rows, p=[0.963, 0.032, 0.003, 0.001, 0.001]),
        PICKUP_ZONE: (pu + 1).astype(np.int32),
        DROPOFF_ZONE: (do + 1).astype(np.int32),
        "passenger_count": rng.choice(
            [1, 2, 3, 4, 5, 6, 0], size=rows, p=[0.85, 0.085, 0.014, 0.004, 0.024, 0.015, 0.008]
        ),
        "trip_distance": trip_distance,
        "ehail_fee": np.full(rows, np.nan),
        "trip_type": rng.choice([1, 2], size=rows, p=[0.97, 0.03]),
        **money,
    }
    if taxi != "green":
        airport = zone_flags(pd.DataFrame({PICKUP_ZONE: columns[PICKUP_ZONE], DROPOFF_ZONE: columns[DROPOFF_ZONE]}))
        columns["Airport_fee"] = np.where(airport["pu_airport"] == 1, AIRPORT_FEE, 0.0)
    del pickup, dropoff, pu, do, trip_distance, money
    # from_pandas turns NaN into null, which is how TLC leaves ehail_fee. Each numpy column is dropped
    # once it is in Arrow.
    schema = _schema(taxi)
    arrays = [
        pa.array(columns.pop(f.name), type=f.type, mask=null if f.name in NULLABLE else None, from_pandas=True)
        for f in schema
    ]
    metadata = {METADATA_KEY: json.dumps({"month": month, **fingerprint(seed, rows)}).encode()}
    return pa.Table.from_arrays(arrays, schema=schema.with_metadata(metadata))


def _clock_readings(pickup: np.ndarray, duration: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pickup and dropoff as New York's clocks read them (TLC's times), the dropoff `duration` seconds of real time
    after the pickup. A pickup drawn in the hour the spring change skips is read an hour later (as that much time
    past 01:00 reads), one in the hour the autumn change repeats is taken in its first pass."""
    local = pd.DatetimeIndex(pickup).tz_localize(
        TLC_TIME_ZONE, ambiguous=np.ones(len(pickup), dtype=bool), nonexistent=pd.Timedelta(hours=1)
    )
    dropoff = local + pd.to_timedelta(duration, unit="s")
    return tuple(times.tz_localize(None).to_numpy("datetime64[us]") for times in (local, dropoff))


def _money(rng: np.random.Generator, miles: np.ndarray, minutes: np.ndarray, null: np.ndarray) -> dict:
    """Metered fare, surcharges and tips; card payers tip, cash payers do not (as TLC records it)."""
    rows = len(miles)
    fare = (2.5 + 2.5 * miles + 0.5 * minutes).round(1)
    extra = rng.choice([0.0, 1.0, 2.5, 2.75], size=rows, p=[0.58, 0.18, 0.21, 0.03])
    mta_tax = np.where(rng.random(rows) < 0.9, 0.5, 0.0)
    surcharge = np.ones(rows)
    tolls = np.where(rng.random(rows) < 0.02, 6.55, 0.0)
    congestion = np.where(rng.random(rows) < 0.26, 2.75, 0.0)
    payment = rng.choice([1, 2, 3, 4], size=rows, p=[0.64, 0.35, 0.007, 0.003])
    tips = (payment == 1) & (rng.random(rows) < 0.85)
    tip = np.where(tips, fare * rng.uniform(0.1, 0.3, rows), 0.0).round(2)
    total = fare + extra + mta_tax + tip + tolls + surcharge + np.where(null, 0.0, congestion)  # null rows: none
    return {
        "fare_amount": fare,
        "extra": extra,
        "mta_tax": mta_tax,
        "tip_amount": tip,
        "tolls_amount": tolls,
        "improvement_surcharge": surcharge,
        "total_amount": total.round(2),
        "payment_type": payment,
        "congestion_surcharge": congestion,
    }


def _add_dirt(rng: np.random.Generator, pickup: np.ndarray, duration: np.ndarray, start, end) -> None:
    """Spoil disjoint sets of rows in place, in fixed shares, so tests can count them."""
    rows = len(pickup)
    order = rng.permutation(rows)
    counts = np.round(rows * np.array([NON_POSITIVE_SHARE, MULTI_HOUR_SHARE, OUTSIDE_MONTH_SHARE])).astype(int)
    non_positive, multi_hour, outside = np.split(order[: counts.sum()], np.cumsum(counts)[:-1])

    # Half end exactly at pickup, half before it (clock errors).
    backwards = -rng.integers(1, 3_600, len(non_positive))
    duration[non_positive] = np.where(rng.random(len(non_positive)) < 0.5, 0, backwards)
    duration[multi_hour] = (3_600 * np.exp(rng.uniform(np.log(2), np.log(20), len(multi_hour)))).astype(np.int64)

    day = np.timedelta64(86_400, "s")
    stray = rng.integers(0, 86_400, len(outside)).astype("timedelta64[s]")
    kind = np.arange(len(outside)) % 3  # 2009, the day before, the day after: each kind present
    pickup[outside] = np.select(
        [kind == 0, kind == 1],
        [np.datetime64("2009-01-01T00:00:00") + stray * 31, start - day + stray],
        end + stray,
    )


def fingerprint(seed: int, rows: int) -> dict:
    """What decides a generated month's content besides the month itself."""
    return {"seed": seed, "rows": rows, "generator": GENERATOR}


@dataclass(frozen=True)
class SyntheticSource:
    """A source that 'publishes' generated months up to `published_through` (None: every month)."""

    cache_dir: str | UPath  # a UPath keeps the store's login (core.storage.location)
    seed: int = 0
    rows: int = 60_000
    published_through: str | None = None
    taxi: str = "green"

    def _published(self, month: str) -> bool:
        check_month(month)
        return self.published_through is None or month <= check_month(self.published_through)

    def fetch(self, month: str) -> UPath:
        """Generate the month into the cache once; later calls reuse the file if it still matches."""
        if not self._published(month):
            raise MonthNotPublishedError(
                f"month {month} is not published yet (synthetic source publishes through {self.published_through})"
            )
        path = location(self.cache_dir) / trip_file_name(self.taxi, month)
        if path.exists() and _cached_fingerprint(path) == self.probe(month):
            return path
        return write_table(generate_month(month, self.seed, self.rows, self.taxi), path)

    def for_probing(self) -> SyntheticSource:
        return self  # probing generates nothing

    def file_of(self, month: str) -> str:
        return f"the synthetic {self.taxi} month {month}"

    def probe(self, month: str) -> dict | None:
        return fingerprint(self.seed, self.rows) if self._published(month) else None


def _cached_fingerprint(path: UPath) -> dict | None:
    """The fingerprint stored in a cached file, or None if the file is unreadable or foreign."""
    where, filesystem = arrow_file(path)
    try:
        metadata = pq.read_schema(where, filesystem=filesystem).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    if METADATA_KEY not in metadata:
        return None
    stored = json.loads(metadata[METADATA_KEY])
    return {key: stored.get(key) for key in ("seed", "rows", "generator")}
