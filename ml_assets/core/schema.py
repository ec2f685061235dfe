"""One schema for every month, whatever TLC's writer of the year used.

TLC changes physical types between years (int64 vs int32 ids, double vs int64 codes, a
null-typed `ehail_fee`, string vs large_string), names pickup/dropoff columns per taxi type
(`lpep_` green, `tpep_` yellow) and spells some columns in another letter case. Months must
stack into one training window, so every file is cast to the canonical schema below. What it
cannot take as it is, it does not guess at: an infinite number, and a zone id past int32's range
(no zone has one) or NaN, are read as missing, so that cleaning drops and counts the row as it does a
null; a timestamp stored with a zone is read as New York's wall-clock time (as TLC writes them),
one finer than a microsecond is cut to the microsecond (no trip is timed closer), a value that
cannot be read as its type (a word for a distance, bytes that are no UTF-8 in a string) is
refused, as is a number column of booleans or dates (Arrow casts them to 1/0 and days since 1970), and so is
a column given twice.

Its numbers are float32: a yellow month has millions of trips, float32 halves their memory, and
XGBoost computes in float32 whatever it is given. An integer float32 cannot hold exactly is rounded,
as a float64 is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PICKUP, DROPOFF = "pickup_datetime", "dropoff_datetime"
TIME_PREFIXES = {"green": "lpep_", "yellow": "tpep_"}  # TLC's prefix of PICKUP and DROPOFF, per taxi type
TLC_TIME_ZONE = "America/New_York"  # TLC's timestamps are this zone's wall-clock times, stored without a zone
PICKUP_ZONE, DROPOFF_ZONE = "PULocationID", "DOLocationID"
ZONE_COLUMNS = (PICKUP_ZONE, DROPOFF_ZONE)
DURATION = "duration"  # the target: minutes from pickup to dropoff, added by cleaning

REQUIRED = {
    PICKUP: pa.timestamp("us"),
    DROPOFF: pa.timestamp("us"),
    PICKUP_ZONE: pa.int32(),
    DROPOFF_ZONE: pa.int32(),
    "trip_distance": pa.float32(),
}
# Codes are nullable in TLC data; a float keeps the nulls as NaN, which XGBoost understands.
OPTIONAL = {
    "VendorID": pa.float32(),
    "store_and_fwd_flag": pa.string(),
    "RatecodeID": pa.float32(),
    "passenger_count": pa.float32(),
    "fare_amount": pa.float32(),
    "tip_amount": pa.float32(),
    "tolls_amount": pa.float32(),
    "total_amount": pa.float32(),
    "payment_type": pa.float32(),
    "trip_type": pa.float32(),
    "congestion_surcharge": pa.float32(),
}
CANONICAL = pa.schema({**REQUIRED, **OPTIONAL})
# cleaned_trips; zones and store_and_fwd_flag as categories
CLEANED_SCHEMA = pa.schema([*CANONICAL, pa.field(DURATION, pa.float32())])


class SchemaError(ValueError):
    """A month's file lacks what the pipeline needs, or holds values of the wrong kind."""


_SPELLED = {name.lower(): name for name in CANONICAL.names}  # each canonical name by its lower case


def canonical_name(name: str) -> str:
    """`lpep_pickup_datetime` / `tpep_pickup_datetime` -> `pickup_datetime`, and a canonical column in any
    letter case to its canonical spelling: TLC's files spell some columns differently between years and
    taxi types (`PUlocationID` beside `PULocationID`)."""
    lowered = name.lower()
    for prefix in TIME_PREFIXES.values():
        if lowered.startswith(prefix) and lowered[len(prefix) :] in (PICKUP, DROPOFF):
            return lowered[len(prefix) :]
    return _SPELLED.get(lowered, name)


def other_taxi_columns(names: Iterable[str], taxi: str) -> dict[str, list[str]]:
    """Other taxi type -> the file's pickup/dropoff columns named as that type's: a yellow file read as green
    would be cleaned, trained on and reported as the green month of its name."""
    found = defaultdict(list)
    for name in names:
        for other, prefix in TIME_PREFIXES.items():
            if other != taxi and name.lower() in (prefix + PICKUP, prefix + DROPOFF):
                found[other].append(name)
    return dict(found)


def describe_other_taxi(found: dict[str, list[str]], taxi: str) -> str:
    expected = ", ".join(TIME_PREFIXES[taxi] + name for name in (PICKUP, DROPOFF))
    columns = "; ".join(f"{other}-taxi columns ({', '.join(names)})" for other, names in found.items())
    return f"{columns} in a month read as {taxi} taxis, whose files have {expected}"


def columns_by_canonical_name(table: pa.Table) -> dict[str, pa.ChunkedArray]:
    return {canonical_name(name): table.column(name) for name in table.column_names}


def ambiguous_columns(names: Iterable[str]) -> dict[str, list[str]]:
    """Canonical column -> the file's columns that all read as it, where more than one does (`PULocationID`
    twice, or beside `pulocationid`): which of them holds the month's values cannot be told."""
    read_as = defaultdict(list)
    for name in names:
        read_as[canonical_name(name)].append(name)
    return {column: spelled for column, spelled in read_as.items() if column in CANONICAL.names and len(spelled) > 1}


def describe_ambiguous(ambiguous: dict[str, list[str]]) -> str:
    return "columns read as one canonical column: " + "; ".join(
        f"{column} ({', '.join(names)})" for column, names in ambiguous.items()
    )


def check_columns(schema: pa.Schema, origin: str) -> None:
    """Every REQUIRED column present, and no canonical column given twice."""
    missing = sorted(set(REQUIRED) - {canonical_name(name) for name in schema.names})
    ambiguous = ambiguous_columns(schema.names)
    problems = [f"missing required column(s) {', '.join(missing)}"] if missing else []
    if ambiguous:
        problems.append(describe_ambiguous(ambiguous))
    if problems:
        raise SchemaError(f"{origin}: " + "; ".join(problems))


def wall_clock(column: pa.ChunkedArray | pa.Array, to_type: pa.DataType = REQUIRED[PICKUP]):
    """Timestamps as TLC writes them, New York wall-clock time without a zone. Timestamps that carry a zone
    (a file rewritten by another tool) are converted to New York's clock first: a plain cast keeps UTC's. A part
    below `to_type`'s unit (nanoseconds, from a file rewritten by pandas) is cut off."""
    if pa.types.is_timestamp(column.type) and column.type.tz is not None:
        column = pc.local_timestamp(pc.cast(column, pa.timestamp(column.type.unit, tz=TLC_TIME_ZONE)))
    return pc.cast(column, options=pc.CastOptions(to_type, allow_time_truncate=True))


def _finite(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Infinite numbers as missing: no trip is infinitely long, and XGBoost and sklearn refuse them."""
    return pc.if_else(pc.is_inf(column), pa.scalar(None, column.type), column)


def _in_range(column: pa.ChunkedArray, to_type: pa.DataType) -> pa.ChunkedArray:
    """Numbers `to_type` (an integer type) cannot hold as missing: a zone id past int32's range is no zone, and a
    NaN (a float zone column's way of saying missing) none either."""
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return column
    bounds = np.iinfo(to_type.to_pandas_dtype())
    # Any integer type, 64-bit past 2**53 included, compared with the bounds: rounding cannot move a value across them.
    wide = pc.cast(column, pa.float64(), safe=False)
    outside = pc.or_(pc.is_nan(wide), pc.or_(pc.less(wide, bounds.min), pc.greater(wide, bounds.max)))
    return pc.if_else(pc.fill_null(outside, False), pa.scalar(None, column.type), column)


def _no_number(kind: pa.DataType) -> bool:
    """Booleans and dates, which Arrow casts to numbers (true to 1, a date to its days since 1970) though neither is a
    zone id, a distance or a code; numbers and text that reads as one ("74") are read."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_boolean(kind) or pa.types.is_temporal(kind)


def to_canonical(column: pa.ChunkedArray | pa.Array, to_type: pa.DataType):
    """A column read as its canonical type, odd values as the module docstring says; raises Arrow's error on a
    value that cannot be read (the raw schema rule and `unify_schema` judge a column alike)."""
    if (pa.types.is_integer(to_type) or pa.types.is_floating(to_type)) and _no_number(column.type):
        raise pa.ArrowNotImplementedError(f"Unsupported cast from {column.type} to {to_type}: no number")
    if pa.types.is_timestamp(to_type):
        return wall_clock(column, to_type)
    if pa.types.is_integer(to_type):
        column = _in_range(column, to_type)
        return pc.cast(column, to_type)
    if pa.types.is_floating(to_type):  # an integer past float32's exact range is rounded, as a float64 is
        return _finite(pc.cast(column, options=pc.CastOptions(to_type, allow_float_truncate=True)))
    cast = pc.cast(column, to_type)
    if pa.types.is_string(to_type):  # Arrow reads and casts strings unchecked: bytes that are no UTF-8 failed in pandas
        cast.validate(full=True)
    return cast


def unify_schema(table: pa.Table, origin: str) -> pa.Table:
    """Cast `table` to CANONICAL; `origin` (month and file) goes into every error message."""
    check_columns(table.schema, origin)
    columns = columns_by_canonical_name(table)
    arrays = []
    for field in CANONICAL:
        column = columns.get(field.name)
        if column is None:
            arrays.append(pa.nulls(table.num_rows, field.type))
            continue
        try:
            arrays.append(to_canonical(column, field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise SchemaError(
                f"{origin}: column {field.name} of type {column.type} cannot be read as {field.type}: {error}"
            ) from error
    return pa.Table.from_arrays(arrays, schema=CANONICAL)
