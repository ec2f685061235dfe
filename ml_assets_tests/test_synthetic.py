"""The synthetic source must look like TLC's green- and yellow-taxi files, dirt included, and cache safely."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ml_assets.core.cleaning import clean_trips
from ml_assets.core.months import month_bounds
from ml_assets.core.rules import RuleThresholds, raw_rules
from ml_assets.core.sources import MonthNotPublishedError, synthetic, trip_file_name
from ml_assets.core.sources.synthetic import GENERATOR, SyntheticSource, generate_month
from ml_assets_tests.support import TLC_DATA

MONTH = "2023-03"
ROWS = 60_000


@pytest.fixture(scope="module")
def table():
    return generate_month(MONTH, seed=0, rows=ROWS)


@pytest.fixture(scope="module")
def trips(table) -> pd.DataFrame:
    trips = table.to_pandas()
    trips["duration"] = (trips.lpep_dropoff_datetime - trips.lpep_pickup_datetime).dt.total_seconds() / 60
    return trips


def in_month(trips: pd.DataFrame, month: str = MONTH) -> pd.Series:
    start, end = month_bounds(month)
    return (trips.lpep_pickup_datetime >= start) & (trips.lpep_pickup_datetime < end)


def test_schema_equals_real_tlc_file(table):
    real = pq.read_schema(TLC_DATA / trip_file_name("green", MONTH))
    assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in real]
    assert table.num_rows == ROWS


def test_deterministic_per_month_and_seed(table):
    assert generate_month(MONTH, seed=0, rows=ROWS).equals(table, check_metadata=True)
    for other in (generate_month("2023-04", seed=0, rows=ROWS), generate_month(MONTH, seed=1, rows=ROWS)):
        assert not other.equals(table)
        assert not other.column("PULocationID").equals(table.column("PULocationID"))


def test_pickups_inside_month_but_for_a_few_strays(trips):
    start, end = month_bounds(MONTH)
    outside = trips[~in_month(trips)].lpep_pickup_datetime
    assert len(outside) == round(ROWS * 1e-4)
    assert (outside.dt.year == 2009).any()
    assert outside.between(start - pd.Timedelta("1D"), start).any()
    assert outside.between(end, end + pd.Timedelta("1D")).any()
    assert trips.lpep_pickup_datetime.dt.day.nunique() == 31


def test_dirt_in_real_shares(trips):
    assert 0.005 <= (trips.duration <= 0).mean() <= 0.01
    assert (trips.duration == 0).any() and (trips.duration < 0).any()
    multi_hour = trips.duration.between(120, 20 * 60)
    assert 0.004 <= multi_hour.mean() <= 0.008
    assert 0.005 <= (trips.trip_distance == 0).mean() <= 0.05


def test_nulls_like_tlc(trips):
    for column in (
        "store_and_fwd_flag",
        "RatecodeID",
        "passenger_count",
        "payment_type",
        "trip_type",
        "congestion_surcharge",
    ):
        assert 0.02 <= trips[column].isna().mean() <= 0.1, column
    assert trips.ehail_fee.isna().all()
    required = [
        "VendorID",
        "lpep_pickup_datetime",
        "lpep_dropoff_datetime",
        "PULocationID",
        "DOLocationID",
        "trip_distance",
    ]
    assert trips[required].notna().all().all()


def test_realistic_shape(trips):
    clean = trips[in_month(trips) & trips.duration.between(1, 60)]
    assert 10 <= clean.duration.median() <= 16
    assert 0.5 <= clean.trip_distance.median() <= 5
    assert (trips.trip_distance > 10).any()
    assert trips.PULocationID.between(1, 265).all() and trips.DOLocationID.between(1, 265).all()
    pickups = trips.PULocationID.value_counts(normalize=True)
    assert pickups.iloc[:10].sum() > 0.5 and len(pickups) > 150  # a few busy zones, long tail
    by_hour = trips.lpep_pickup_datetime.dt.hour.value_counts()
    assert by_hour[17] > 5 * by_hour[4]
    assert trips.total_amount.ge(trips.fare_amount).all()


def test_zone_and_hour_carry_signal_beyond_distance(trips):
    """A model must have something to learn besides distance, or tuning it is pointless."""
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    clean = trips[in_month(trips) & trips.duration.between(1, 60)].iloc[:20_000].copy()
    clean["hour"] = clean.lpep_pickup_datetime.dt.hour
    clean["weekend"] = clean.lpep_pickup_datetime.dt.dayofweek >= 5
    clean["log_distance"] = np.log1p(clean.trip_distance)
    train, test = clean.iloc[:15_000], clean.iloc[15_000:]

    def r2(columns, categorical):
        encode = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), categorical), remainder="passthrough")
        model = make_pipeline(encode, LinearRegression()).fit(train[columns], np.log(train.duration))
        return model.score(test[columns], np.log(test.duration))

    distance_only = r2(["log_distance"], [])
    full = r2(
        ["log_distance", "PULocationID", "DOLocationID", "hour", "weekend"], ["PULocationID", "DOLocationID", "hour"]
    )
    assert full > distance_only + 0.1


def test_fetch_writes_once_and_reuses(tmp_path, table):
    source = SyntheticSource(cache_dir=str(tmp_path))
    path = source.fetch(MONTH)
    assert path == tmp_path / trip_file_name("green", MONTH)
    assert pq.read_table(path).equals(table)
    mtime = os.stat(path).st_mtime_ns
    assert source.fetch(MONTH) == path
    assert os.stat(path).st_mtime_ns == mtime
    assert os.listdir(tmp_path) == [path.name]  # no temp files left behind


def test_a_yellow_month_has_yellow_columns_and_green_s_trips(tmp_path, table):
    """A yellow month is written as TLC writes yellow files (`tpep_` times, no green-only trip_type or ehail_fee),
    so that it passes the rules as yellow and cleans to the same trips as the green month of its seed."""
    path = SyntheticSource(cache_dir=str(tmp_path), taxi="yellow").fetch(MONTH)
    assert path.name == trip_file_name("yellow", MONTH)
    yellow = pq.read_table(path)
    assert {"tpep_pickup_datetime", "tpep_dropoff_datetime"} <= set(yellow.column_names)
    assert not {"lpep_pickup_datetime", "lpep_dropoff_datetime", "trip_type", "ehail_fee"} & set(yellow.column_names)
    assert yellow["tpep_pickup_datetime"].equals(table["lpep_pickup_datetime"])
    assert [rule.message for rule in raw_rules(yellow, MONTH, RuleThresholds(), "yellow") if not rule.passed] == []
    cleaned, green = (clean_trips(month, MONTH, MONTH) for month in (yellow, table))
    assert cleaned.dropped == green.dropped and cleaned.trips["trip_type"].isna().all()
    pd.testing.assert_frame_equal(cleaned.trips.drop(columns="trip_type"), green.trips.drop(columns="trip_type"))


def test_fetch_regenerates_on_other_seed_or_broken_file(tmp_path):
    path = SyntheticSource(cache_dir=str(tmp_path), rows=1_000).fetch(MONTH)
    reseeded = SyntheticSource(cache_dir=str(tmp_path), seed=7, rows=1_000).fetch(MONTH)
    assert reseeded == path
    assert pq.read_table(path).equals(generate_month(MONTH, seed=7, rows=1_000))

    path.write_bytes(b"not parquet")
    SyntheticSource(cache_dir=str(tmp_path), seed=7, rows=1_000).fetch(MONTH)
    assert pq.read_table(path).num_rows == 1_000
    assert os.listdir(tmp_path) == [path.name]


def test_published_through(tmp_path):
    source = SyntheticSource(cache_dir=str(tmp_path), seed=3, rows=500, published_through="2023-03")
    assert source.probe("2023-03") == {"seed": 3, "rows": 500, "generator": GENERATOR}
    assert source.probe("2023-04") is None
    with pytest.raises(MonthNotPublishedError, match="month 2023-04 is not published yet"):
        source.fetch("2023-04")
    assert os.listdir(tmp_path) == []
    assert source.fetch("2022-12").exists()
    assert SyntheticSource(cache_dir=str(tmp_path)).probe("2099-01") is not None
    with pytest.raises(ValueError):
        source.probe("2023-3")


@pytest.mark.parametrize("month", ["2021-03", "2021-11"])
def test_times_are_new_york_clock_readings_of_the_generated_trips(month, monkeypatch):
    """TLC writes New York wall-clock times; a generated trip is written as the clock read it, so no time falls in
    the hour the spring change skips and cleaning reads back every trip's generated duration. One that starts and
    ends in the hour the autumn change repeats reads alike an hour shorter: cleaning takes the shorter."""
    generated = []

    def keep_durations(rng, pickup, duration, start, end):
        add_dirt(rng, pickup, duration, start, end)
        generated.append(duration.copy())  # seconds, dirt included

    add_dirt = synthetic._add_dirt
    monkeypatch.setattr(synthetic, "_add_dirt", keep_durations)
    table = generate_month(month, seed=0, rows=ROWS)
    twice = np.ones(ROWS, dtype=bool)
    for name in ("lpep_pickup_datetime", "lpep_dropoff_datetime"):
        first, second = (
            pc.assume_timezone(table[name], "America/New_York", ambiguous=reading, nonexistent="raise")
            for reading in ("earliest", "latest")
        )
        twice &= pc.not_equal(first, second).to_numpy()
    (seconds,) = generated
    seconds = np.where(twice & (seconds >= 3600), seconds - 3600, seconds)
    kept = in_month(table.to_pandas(), month) & (seconds >= 60) & (seconds <= 3600)
    cleaned = clean_trips(table, month, month)
    assert len(cleaned.trips) == kept.sum()
    np.testing.assert_allclose(cleaned.trips["duration"], seconds[kept] / 60, rtol=1e-6)
