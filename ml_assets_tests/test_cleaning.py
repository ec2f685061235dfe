"""Cleaning and schema unification on real TLC files (../shared/data/nyc-tlc)."""

import datetime
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ml_assets.core import cleaning, tables
from ml_assets.core.cleaning import EmptyMonthError, clean_trips
from ml_assets.core.features import OTHER_ZONE
from ml_assets.core.rules import RuleThresholds, cleaned_rules, raw_rules
from ml_assets.core.schema import CANONICAL, SchemaError, unify_schema
from ml_assets.core.zones import known_zones
from ml_assets.records import latest_metadata
from ml_assets.runner.runs import materialize_month
from ml_assets_tests.support import TLC_DATA, YELLOW_TYPES, as_yellow, replace_column


def real(month: str) -> pa.Table:
    return pq.read_table(TLC_DATA / f"green_tripdata_{month}.parquet")


@pytest.mark.parametrize("month, course_rows, kept", [("2021-01", 73_908, 73_906), ("2021-02", 61_921, 61_920)])
def test_course_months_keep_the_course_rows_minus_out_of_month_pickups(month, course_rows, kept):
    cleaned = clean_trips(real(month), month, month)
    assert len(cleaned.trips) == kept
    assert cleaned.dropped_rows == cleaned.raw_rows - kept == sum(cleaned.dropped.values())
    # The course notebook's duration filter alone (no month filter) keeps `course_rows`.
    raw = real(month).to_pandas()
    minutes = (raw.lpep_dropoff_datetime - raw.lpep_pickup_datetime).dt.total_seconds() / 60
    assert minutes.between(1, 60).sum() == course_rows
    start = pd.Timestamp(month + "-01")
    assert cleaned.trips["pickup_datetime"].between(start, start + pd.offsets.MonthBegin(1), inclusive="left").all()
    assert cleaned.trips["duration"].between(1, 60).all()
    assert cleaned.trips["PULocationID"].dtype == "category"
    # The month's first instant is in it, the next month's first is not (no real trip starts at either).
    times = {name: raw[name].to_numpy().copy() for name in ("lpep_pickup_datetime", "lpep_dropoff_datetime")}
    inside = raw.lpep_pickup_datetime.between(start, start + pd.offsets.MonthBegin(1), inclusive="left")
    valid = raw.index[minutes.between(1, 60) & inside & raw.trip_distance.notna()][:2]  # kept trips
    for row, pickup in zip(valid, (start, start + pd.offsets.MonthBegin(1)), strict=True):
        times["lpep_pickup_datetime"][row], times["lpep_dropoff_datetime"][row] = pickup, pickup + pd.Timedelta("9min")
    edges = real(month)
    for name, values in times.items():
        edges = edges.set_column(edges.schema.get_field_index(name), name, pa.array(values, pa.timestamp("us")))
    on_edges = clean_trips(edges, month, month)
    assert on_edges.dropped == {**cleaned.dropped, "pickup_outside_month": cleaned.dropped["pickup_outside_month"] + 1}
    assert (on_edges.trips["pickup_datetime"] == start).sum() == 1


def test_months_of_different_years_unify_to_one_schema():
    old, new = real("2021-01"), real("2023-03")
    assert old.schema.field("PULocationID").type != new.schema.field("PULocationID").type  # real drift
    assert old.schema.field("ehail_fee").type == pa.null()
    for table, origin in ((old, "2021-01"), (new, "2023-03")):
        assert unify_schema(table, origin).schema == CANONICAL
    frames = [clean_trips(real(m), m, m).trips for m in ("2021-01", "2022-02", "2023-03")]
    stacked = pd.concat(frames, ignore_index=True)
    assert len(stacked) == sum(map(len, frames))
    assert stacked["trip_distance"].dtype == "float32"  # the canonical schema's narrow numbers
    assert stacked["RatecodeID"].dtype == "float32"


def test_missing_required_column_names_month_file_and_column():
    table = real("2021-01").drop(["trip_distance"])
    with pytest.raises(SchemaError, match=r"2021-01 \(x\.parquet\): missing required column\(s\) trip_distance"):
        clean_trips(table, "2021-01", "2021-01 (x.parquet)")


def test_column_names_in_another_letter_case_clean_alike():
    table = real("2021-01")
    respelled = table.rename_columns(
        [
            {"PULocationID": "PUlocationID", "lpep_pickup_datetime": "LPEP_PICKUP_DATETIME"}.get(n, n.lower())
            for n in table.column_names
        ]
    )
    cleaned, expected = clean_trips(respelled, "2021-01", "2021-01"), clean_trips(table, "2021-01", "2021-01")
    assert cleaned.dropped == expected.dropped
    pd.testing.assert_frame_equal(cleaned.trips, expected.trips)
    assert all(rule.passed for rule in raw_rules(respelled, "2021-01", RuleThresholds(), "green"))


@pytest.mark.parametrize(
    "copy_as", ["pulocationid", "PULocationID"], ids=["in another letter case", "under the same name"]
)
def test_a_column_given_twice_is_refused_naming_both(copy_as):
    """Which of two PULocationID columns holds the month's zones cannot be told: neither is read."""
    table = real("2021-01")
    twice = pa.Table.from_arrays(
        [*table.columns, pa.array([7] * table.num_rows, pa.int64())], names=[*table.column_names, copy_as]
    )
    (schema_rule,) = [rule for rule in raw_rules(twice, "2021-01", RuleThresholds(), "green") if rule.rule == "schema"]
    assert not schema_rule.passed
    assert f"PULocationID (PULocationID, {copy_as})" in schema_rule.message
    with pytest.raises(SchemaError, match=rf"month 2021-01: columns read as one .*\(PULocationID, {copy_as}\)"):
        clean_trips(twice, "2021-01", "month 2021-01")


def test_timestamps_with_a_zone_are_read_as_new_york_wall_clock_times():
    """TLC writes New York's wall-clock times without a zone; the same times stored with their zone (UTC, as
    another tool may rewrite a file) clean to the same trips, and the raw rule judges the same pickups."""
    table = real("2023-03")  # its second Sunday moves the clocks forward
    zoned = table
    for name in ("lpep_pickup_datetime", "lpep_dropoff_datetime"):
        local = pc.assume_timezone(table[name], "America/New_York", ambiguous="earliest", nonexistent="earliest")
        zoned = zoned.set_column(zoned.schema.get_field_index(name), name, pc.cast(local, pa.timestamp("us", "UTC")))
    # Only the trips picked up or dropped off in the skipped hour differ: that wall-clock time does not exist.
    skipped = pc.or_(*(pc.equal(pc.hour(table[name]), 2) for name in ("lpep_pickup_datetime", "lpep_dropoff_datetime")))
    skipped = pc.and_(skipped, pc.equal(pc.strftime(table["lpep_pickup_datetime"], "%Y-%m-%d"), "2023-03-12"))
    keep = pc.invert(skipped)
    cleaned, expected = (
        clean_trips(zoned.filter(keep), "2023-03", "2023-03"),
        clean_trips(table.filter(keep), "2023-03", "2023-03"),
    )
    assert cleaned.dropped == expected.dropped
    pd.testing.assert_frame_equal(cleaned.trips, expected.trips)
    judged = [rule.message for rule in raw_rules(zoned, "2023-03", RuleThresholds(), "green")]
    assert judged == [rule.message for rule in raw_rules(table, "2023-03", RuleThresholds(), "green")]


def wall_minutes(table: pa.Table) -> np.ndarray:
    trips = table.select(["lpep_pickup_datetime", "lpep_dropoff_datetime"]).to_pandas()
    return ((trips["lpep_dropoff_datetime"] - trips["lpep_pickup_datetime"]).dt.total_seconds() / 60).to_numpy()


def test_a_trip_across_a_clock_change_lasts_the_time_that_passed():
    """TLC writes New York wall-clock times: a trip across the spring change read an hour longer (real 2023-03
    trips of 7 to 28 minutes were dropped as over an hour), one across the autumn change an hour shorter or
    negative. In the hour the clocks repeat, the shortest trip the two readings allow is taken."""
    table = real("2023-03")  # the clocks went from 02:00 to 03:00 on 2023-03-12
    pickup, dropoff = (table[name].to_pandas() for name in ("lpep_pickup_datetime", "lpep_dropoff_datetime"))
    change = pd.Timestamp("2023-03-12 02:00")
    across = ((pickup < change) & (dropoff >= change + pd.Timedelta(hours=1))).to_numpy()
    spring = wall_minutes(table)[across] - 60
    assert 3 <= ((spring >= 1) & (spring <= 60)).sum()  # trips the wall clock read as over an hour
    cleaned = clean_trips(table, "2023-03", "2023-03").trips
    kept = cleaned[cleaned["pickup_datetime"].isin(pickup[across]) & cleaned["dropoff_datetime"].isin(dropoff[across])]
    assert sorted(kept["duration"].round(3)) == sorted(np.float32(spring[(spring >= 1) & (spring <= 60)]).round(3))

    # The autumn change (2023-11-05, 02:00 back to 01:00), on real trips given times of that night.
    autumn = real("2023-03").slice(0, 4)
    times = {  # pickup, dropoff (wall clock) -> minutes that passed
        ("01:50", "01:05"): 15,  # picked up before the change, dropped off after it: read as -45
        ("00:55", "01:10"): 15,  # 01:10 twice that night: the first
        ("01:30", "02:10"): 40,  # 01:30 twice: the second
        ("10:00", "10:20"): 20,
    }
    for name, index in (("lpep_pickup_datetime", 0), ("lpep_dropoff_datetime", 1)):
        values = pa.array([pd.Timestamp(f"2023-11-05 {pair[index]}") for pair in times], pa.timestamp("us"))
        autumn = autumn.set_column(autumn.schema.get_field_index(name), name, values)
    assert wall_minutes(autumn).tolist() == [-45, 15, 40, 20]
    cleaned = clean_trips(autumn, "2023-11", "2023-11")
    assert cleaned.trips["duration"].tolist() == list(times.values())


def test_an_infinite_distance_is_a_missing_value():
    """An infinite trip_distance (or one past float32's range), like a NaN, is dropped as a null is, not trained on;
    like a null, it is the row's first reason, before a duration out of range."""
    table = real("2021-01")
    expected = clean_trips(table, "2021-01", "2021-01")
    trips = table.select(["lpep_pickup_datetime", "lpep_dropoff_datetime", "trip_distance"]).to_pandas()
    minutes = (trips["lpep_dropoff_datetime"] - trips["lpep_pickup_datetime"]).dt.total_seconds() / 60
    kept = trips.index[trips["trip_distance"].notna() & minutes.between(1, 60)][:3]  # all picked up in January
    start = pd.Timestamp("2021-01-01")
    inside = trips["lpep_pickup_datetime"].between(start, start + pd.offsets.MonthBegin(1), inclusive="left")
    too_long = trips.index[trips["trip_distance"].notna() & inside & (minutes > 60)][:1]
    distances = trips["trip_distance"].to_numpy().copy()
    distances[[*kept, *too_long]] = [np.inf, 1e300, np.nan, np.inf]
    broken = table.set_column(table.schema.get_field_index("trip_distance"), "trip_distance", pa.array(distances))
    cleaned = clean_trips(broken, "2021-01", "2021-01")
    assert np.isfinite(cleaned.trips["trip_distance"]).all()
    assert cleaned.dropped == {
        **expected.dropped,
        "missing_values": expected.dropped["missing_values"] + 4,
        "duration_out_of_range": expected.dropped["duration_out_of_range"] - 1,
    }


def test_a_zone_id_past_int32_is_missing_and_a_nanosecond_part_is_dropped():
    """One odd row does not lose a month: a zone id int32 cannot hold is no known zone, read as missing (dropped and
    counted as a null is), and a time's part below a microsecond is cut off (it means nothing for a trip)."""
    table = real("2021-01")
    expected = clean_trips(table, "2021-01", "2021-01")
    trips = table.select(["lpep_pickup_datetime", "lpep_dropoff_datetime", "trip_distance"]).to_pandas()
    minutes = (trips["lpep_dropoff_datetime"] - trips["lpep_pickup_datetime"]).dt.total_seconds() / 60
    rows = trips.index[trips["trip_distance"].notna() & minutes.between(1, 60)][:2]  # kept, picked up in January
    zones = table["PULocationID"].to_numpy().astype("int64")
    zones[rows[0]] = 2**40
    pickups = table["lpep_pickup_datetime"].to_numpy().astype("datetime64[ns]")
    pickups[rows[1]] += np.timedelta64(999, "ns")
    odd = replace_column(table, "PULocationID", pa.array(zones))
    odd = replace_column(odd, "lpep_pickup_datetime", pa.array(pickups, pa.timestamp("ns")))
    assert [rule.message for rule in raw_rules(odd, "2021-01", RuleThresholds(), "green") if not rule.passed] == []
    cleaned = clean_trips(odd, "2021-01", "2021-01")
    assert cleaned.dropped == {**expected.dropped, "missing_values": expected.dropped["missing_values"] + 1}
    assert expected.trips["pickup_datetime"][0] == trips["lpep_pickup_datetime"][rows[0]]  # the first trip kept
    pd.testing.assert_frame_equal(cleaned.trips, expected.trips[1:].reset_index(drop=True))
    (dropped_share,) = [
        rule
        for rule in cleaned_rules(cleaned.trips, "2021-01", cleaned.raw_rows, cleaned.dropped, RuleThresholds())
        if rule.rule == "dropped_share"
    ]
    assert f"missing_values {cleaned.dropped['missing_values']}" in dropped_share.message


def kept_rows(table: pa.Table, month: str, count: int) -> pd.Index:
    """Rows of a real month that cleaning keeps (picked up in the month, 1-60 minutes, a distance): where one odd
    value shows as one more row dropped, under the reason that value gives."""
    trips = table.select(["lpep_pickup_datetime", "lpep_dropoff_datetime", "trip_distance"]).to_pandas()
    minutes = (trips["lpep_dropoff_datetime"] - trips["lpep_pickup_datetime"]).dt.total_seconds() / 60
    start = pd.Timestamp(f"{month}-01")
    inside = trips["lpep_pickup_datetime"].between(start, start + pd.offsets.MonthBegin(1), inclusive="left")
    return trips.index[trips["trip_distance"].notna() & minutes.between(1, 60) & inside][:count]


def test_a_time_centuries_away_loses_its_row_not_the_month():
    """A stray pickup or dropoff past Python's years (or 2**53 microseconds from its pair) is one odd row: the
    month's rules judge it and cleaning drops and counts it, where Arrow's division and Python's dates raised."""
    table = real("2021-01")
    expected = clean_trips(table, "2021-01", "2021-01")
    rows = kept_rows(table, "2021-01", 3)
    micros = {
        name: pc.cast(table[name], pa.int64()).to_numpy().copy()
        for name in ("lpep_pickup_datetime", "lpep_dropoff_datetime")
    }
    micros["lpep_dropoff_datetime"][rows[0]] = 9 * 10**18  # the year 287168
    micros["lpep_pickup_datetime"][rows[1]] = 253_402_300_800 * 10**6  # the first instant of the year 10000
    micros["lpep_pickup_datetime"][rows[2]] = -9 * 10**18
    odd = table
    for name, values in micros.items():
        odd = replace_column(odd, name, pa.array(values).cast(pa.timestamp("us")))
    judged = {rule.rule: rule for rule in raw_rules(odd, "2021-01", RuleThresholds(), "green")}
    assert all(rule.passed for rule in judged.values())
    assert "to 10000-01-01 00:00:00" in judged["pickups_in_month"].message
    cleaned = clean_trips(odd, "2021-01", "2021-01")
    assert cleaned.dropped == {
        **expected.dropped,
        "pickup_outside_month": expected.dropped["pickup_outside_month"] + 2,
        "duration_out_of_range": expected.dropped["duration_out_of_range"] + 1,
    }
    assert len(cleaned.trips) == len(expected.trips) - 3


def test_a_zone_id_as_a_float_nan_or_past_2_53_is_missing():
    """A zone column of floats with a NaN (another writer's null), or of int64 with an id past 2**53, loses its row
    (counted as missing), not the month: the range check refused to read either."""
    table = real("2021-01")
    expected = clean_trips(table, "2021-01", "2021-01")
    row = kept_rows(table, "2021-01", 1)[0]
    floats = table["PULocationID"].to_numpy().astype("float64")
    floats[row] = np.nan
    huge = table["PULocationID"].to_numpy().astype("int64")
    huge[row] = 2**60
    for values in (pa.array(floats, from_pandas=False), pa.array(huge)):
        odd = replace_column(table, "PULocationID", values)
        assert [rule.message for rule in raw_rules(odd, "2021-01", RuleThresholds(), "green") if not rule.passed] == []
        cleaned = clean_trips(odd, "2021-01", "2021-01")
        assert cleaned.dropped == {**expected.dropped, "missing_values": expected.dropped["missing_values"] + 1}


def test_an_integer_past_float32_s_exact_range_is_rounded_as_a_float64_is():
    """Yellow files of 2023 on store passenger_count and the other codes as int64: one value float32 cannot hold
    exactly (a garbage count of 2**40 + 1) is rounded, as 1e12 in a float64 column is, not a month refused."""
    table = real("2021-01")
    row = kept_rows(table, "2021-01", 1)[0]
    counts = pc.fill_null(table["passenger_count"], 1).to_numpy().astype("int64")
    counts[row] = 2**40 + 1
    odd = replace_column(table, "passenger_count", pa.array(counts))
    assert [rule.message for rule in raw_rules(odd, "2021-01", RuleThresholds(), "green") if not rule.passed] == []
    trips = clean_trips(odd, "2021-01", "2021-01").trips
    assert trips["passenger_count"].max() == np.float32(2**40)


def test_trips_whose_zone_is_not_in_tlc_s_lookup_are_dropped_under_their_own_reason():
    """Zone ids TLC's lookup does not have (0, 999, -1) name no place: those trips are dropped and counted, not
    trained on. TLC's own unknown zones, 264 and 265, are in the lookup and stay."""
    table = real("2021-02")
    expected = clean_trips(table, "2021-02", "2021-02")
    trips = table.select(["lpep_pickup_datetime", "lpep_dropoff_datetime", "trip_distance"]).to_pandas()
    minutes = (trips["lpep_dropoff_datetime"] - trips["lpep_pickup_datetime"]).dt.total_seconds() / 60
    start = pd.Timestamp("2021-02-01")
    inside = trips["lpep_pickup_datetime"].between(start, start + pd.offsets.MonthBegin(1), inclusive="left")
    kept = trips.index[trips["trip_distance"].notna() & minutes.between(1, 60) & inside][:4]
    zones = {name: table[name].to_numpy().copy() for name in ("PULocationID", "DOLocationID")}
    zones["PULocationID"][kept[:2]] = [0, 999]
    zones["DOLocationID"][kept[2]] = -1
    zones["PULocationID"][kept[3]], zones["DOLocationID"][kept[3]] = 264, 265
    broken = table
    for name, values in zones.items():
        broken = broken.set_column(broken.schema.get_field_index(name), name, pa.array(values))
    cleaned = clean_trips(broken, "2021-02", "2021-02")
    assert cleaned.dropped == {**expected.dropped, "zone_not_in_lookup": 3}
    assert len(cleaned.trips) == len(expected.trips) - 3
    for name in ("PULocationID", "DOLocationID"):
        assert set(cleaned.trips[name].astype(int)) <= set(range(1, 266))
    assert OTHER_ZONE not in known_zones()  # so the features' category of rare zones is no zone of a trip
    unknown = (cleaned.trips["PULocationID"] == 264) & (cleaned.trips["DOLocationID"] == 265)
    assert (
        unknown.sum() == ((expected.trips["PULocationID"] == 264) & (expected.trips["DOLocationID"] == 265)).sum() + 1
    )


@pytest.mark.parametrize("as_file", [False, True], ids=["copies in a batch of their own", "copies in the same batch"])
def test_a_month_given_twice_over_cleans_to_its_trips_once_and_counts_the_copies(tmp_path, as_file):
    """A month file holding its rows twice went through doubled: every trip weighed twice in training. Each copy of a
    kept trip is dropped under its own reason, and the dropped_share rule names the copies."""
    table = real("2021-01")
    once = clean_trips(table, "2021-01", "2021-01")
    twice = pa.concat_tables([table, table])  # two chunks: two batches
    if as_file:
        pq.write_table(twice, tmp_path / "twice.parquet")  # one row group: one batch
        twice = pq.ParquetFile(tmp_path / "twice.parquet")
    cleaned = clean_trips(twice, "2021-01", "2021-01")
    pd.testing.assert_frame_equal(cleaned.trips, once.trips)
    copies = len(once.trips)  # a copy of a row dropped for another reason is counted under that reason
    assert cleaned.dropped == {**{reason: 2 * rows for reason, rows in once.dropped.items()}, "duplicate_trip": copies}
    (share,) = [
        rule
        for rule in cleaned_rules(cleaned.trips, "2021-01", cleaned.raw_rows, cleaned.dropped, RuleThresholds())
        if rule.rule == "dropped_share"
    ]
    assert not share.passed and f"(duplicate_trip {copies}, " in share.message


def test_trips_copied_across_batches_are_dropped_once_each(monkeypatch):
    """Copies of a few trips, in the same batch, the next or the last one: each is dropped and counted, however far
    from its first. A copy of a row dropped for another reason counts under that reason; a copy with one value
    changed is another trip."""
    table = real("2021-01")
    expected = clean_trips(table, "2021-01", "2021-01")
    monkeypatch.setattr(tables, "BATCH_ROWS", 10_000)
    kept = kept_rows(table, "2021-01", 4)
    minutes = wall_minutes(table)
    too_long = np.flatnonzero(minutes > 60)[0]
    rows = table.num_rows
    order = np.insert(
        np.arange(rows), [kept[1] + 1, 10_003, 20_000, rows, rows], [kept[1], kept[0], too_long, kept[2], kept[2]]
    )
    changed = table.slice(kept[3], 1)
    changed = replace_column(changed, "fare_amount", pc.add(changed["fare_amount"], 1.0))
    copied = pa.concat_tables([table.take(pa.array(order)), changed])
    assert too_long < 20_000 and copied.num_rows > 7 * tables.BATCH_ROWS

    cleaned = clean_trips(copied, "2021-01", "2021-01")
    assert cleaned.dropped == {
        **expected.dropped,
        "duration_out_of_range": expected.dropped["duration_out_of_range"] + 1,
        "duplicate_trip": 4,
    }
    pd.testing.assert_frame_equal(cleaned.trips[:-1], expected.trips)
    assert cleaned.trips["fare_amount"].iloc[-1] == expected.trips["fare_amount"][3] + 1


def test_trips_that_share_a_hash_are_compared_in_full_not_dropped(monkeypatch):
    """A row is dropped only when it equals, column by column, an earlier row with its hash: distinct trips that share
    one (here every trip of a pickup zone, as if the hash collided for each) all stay."""
    table = real("2021-01")
    expected = clean_trips(table, "2021-01", "2021-01")
    monkeypatch.setattr(tables, "BATCH_ROWS", 10_000)
    monkeypatch.setattr(cleaning, "_row_hashes", lambda trips: trips["PULocationID"].to_numpy().astype(np.uint64))
    first = kept_rows(table, "2021-01", 1)[0]  # the first trip kept, so the first of its zone
    cleaned = clean_trips(pa.concat_tables([table, table.slice(first, 1)]), "2021-01", "2021-01")
    pd.testing.assert_frame_equal(cleaned.trips, expected.trips)
    assert cleaned.dropped == {**expected.dropped, "duplicate_trip": 1}


def test_uncastable_column_is_a_schema_error():
    table = real("2021-01")
    table = table.set_column(
        table.schema.get_field_index("trip_distance"), "trip_distance", pa.array(["far"] * table.num_rows)
    )
    with pytest.raises(SchemaError, match="trip_distance of type string"):
        unify_schema(table, "2021-01")


@pytest.mark.parametrize(
    "column, values",
    [
        ("PULocationID", lambda zones: pc.greater(zones, 100)),
        ("DOLocationID", lambda zones: pc.greater(zones, 100)),
        ("trip_distance", lambda miles: pc.greater(miles, 1)),
        ("passenger_count", lambda count: pc.greater(count, 1)),
        ("PULocationID", lambda zones: pa.array([datetime.date(2021, 1, 1)] * len(zones))),
    ],
    ids=["bool pickup zone", "bool dropoff zone", "bool distance", "bool code", "date zone"],
)
def test_a_numeric_column_of_booleans_or_dates_is_refused_naming_it(tmp_path, column, values):
    """Arrow casts true/false to 1/0 and a date to days since 1970: a file whose zone ids or distances are booleans
    (or dates) was read as zones 1 and 0 (or 18628) and distances of a mile, not refused as a word is."""
    table = real("2021-01")
    odd = replace_column(table, column, values(table[column]))
    pq.write_table(odd, tmp_path / "odd.parquet")
    month = pq.ParquetFile(tmp_path / "odd.parquet")
    kind = month.schema_arrow.field(column).type
    (schema_rule,) = [rule for rule in raw_rules(month, "2021-01", RuleThresholds(), "green") if not rule.passed]
    assert f"{column} ({kind} -> {CANONICAL.field(column).type}" in schema_rule.message
    with pytest.raises(
        SchemaError, match=re.escape(f"month 2021-01: column {column} of type {kind} cannot be read as")
    ):
        clean_trips(month, "2021-01", "month 2021-01")


def test_a_string_column_whose_bytes_are_no_utf8_is_refused_naming_it(tmp_path):
    """A file can label bytes that are no UTF-8 (text written as Latin-1) as strings; Arrow reads and casts them
    unchecked, and the month failed where pandas read them ("Unknown error: Wrapping ... failed"), past the raw
    rules. The schema rule now refuses the column by name, as it does any value it cannot read."""
    table = real("2021-01")
    flags = pa.array([b"N"] * (table.num_rows - 1) + [b"\xd1"], pa.binary())
    latin = replace_column(table, "store_and_fwd_flag", pa.Array.from_buffers(pa.string(), len(flags), flags.buffers()))
    pq.write_table(latin, tmp_path / "latin.parquet")
    month = pq.ParquetFile(tmp_path / "latin.parquet")
    (schema_rule,) = [rule for rule in raw_rules(month, "2021-01", RuleThresholds(), "green") if not rule.passed]
    assert "store_and_fwd_flag (string -> string: Invalid UTF8" in schema_rule.message
    with pytest.raises(SchemaError, match="month 2021-01: column store_and_fwd_flag .* Invalid UTF8"):
        clean_trips(month, "2021-01", "month 2021-01")


def test_empty_month_and_month_with_nothing_left_fail_clearly():
    table = real("2021-01")
    with pytest.raises(EmptyMonthError, match="has no trips"):
        clean_trips(table.slice(0, 0), "2021-01", "2021-01")
    with pytest.raises(EmptyMonthError, match="no trips left after cleaning"):
        clean_trips(table, "2021-05", "2021-05")  # every pickup is outside May


@pytest.mark.parametrize("year", sorted(YELLOW_TYPES))
def test_yellow_files_of_every_year_unify_like_green(year):
    green = real("2021-02")
    cleaned = clean_trips(as_yellow(green, year), "2021-02", "yellow 2021-02")
    assert len(cleaned.trips) == len(clean_trips(green, "2021-02", "green 2021-02").trips)
    assert pa.Schema.from_pandas(cleaned.trips, preserve_index=False).names[: len(CANONICAL)] == CANONICAL.names
    assert cleaned.trips["trip_type"].isna().all()  # yellow cabs have no trip type


def test_a_yellow_month_goes_through_the_graph(instance, monkeypatch, tmp_path):
    folder = tmp_path / "yellow"
    folder.mkdir()
    for month, year in (("2021-01", 2023), ("2021-02", 2024)):
        pq.write_table(as_yellow(real(month), year), folder / f"yellow_tripdata_{month}.parquet")
    monkeypatch.setenv("ML_ASSETS_SOURCE", str(folder))
    monkeypatch.setenv("ML_ASSETS_TAXI", "yellow")
    materialize_month(instance, "2021-01", ["raw_trips", "cleaned_trips"])
    result = materialize_month(instance, "2021-02", ["raw_trips", "cleaned_trips", "trip_features"])
    assert result.success
    assert latest_metadata(instance, "raw_trips", "2021-02")["source_file"].endswith("yellow_tripdata_2021-02.parquet")


def test_a_month_of_another_taxi_type_is_refused_in_a_home_that_holds_one(instance, monkeypatch, tmp_path):
    """Green months stored, then ML_ASSETS_TAXI=yellow: the yellow month would be trained on green windows and
    judged against a green champion, so it is refused, naming both types; nothing of it is stored."""
    folder = tmp_path / "both"
    folder.mkdir()
    pq.write_table(real("2021-01"), folder / "green_tripdata_2021-01.parquet")
    pq.write_table(real("2021-02"), folder / "green_tripdata_2021-02.parquet")
    pq.write_table(as_yellow(real("2021-02"), 2024), folder / "yellow_tripdata_2021-02.parquet")
    monkeypatch.setenv("ML_ASSETS_SOURCE", str(folder))
    materialize_month(instance, "2021-01", ["raw_trips", "cleaned_trips"])
    assert latest_metadata(instance, "raw_trips", "2021-01")["taxi"] == "green"

    monkeypatch.setenv("ML_ASSETS_TAXI", "yellow")
    result = materialize_month(instance, "2021-02", ["raw_trips", "cleaned_trips"], raise_on_error=False)
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    message = failure.step_failure_data.error.to_string()
    assert "ML_ASSETS_TAXI is yellow" in message and "holds green months" in message, message
    assert latest_metadata(instance, "raw_trips", "2021-02") is None

    monkeypatch.setenv("ML_ASSETS_TAXI", "green")  # a plain retry with the home's type goes through
    assert materialize_month(instance, "2021-02", ["raw_trips", "cleaned_trips"]).success
