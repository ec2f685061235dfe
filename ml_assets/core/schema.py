"""One schema for every month, whatever TLC's writer of the year used.

TLC changes physical types between years (int64 vs int32 ids, double vs int64 codes, a
null-typed `ehail_fee`, string vs large_string), names pickup/dropoff columns per taxi type
(`lpep_` green, `tpep_` yellow) and spells some columns in another letter case. Months must
stack into one training window, so every file is cast to the canonical schema below.

Its numbers are float32: a yellow month has millions of trips, float32 halves their memory, and
XGBoost computes in float32 whatever it is given.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

PICKUP, DROPOFF = "pickup_datetime", "dropoff_datetime"
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
    for prefix in ("lpep_", "tpep_"):
        if lowered.startswith(prefix) and lowered[len(prefix) :] in (PICKUP, DROPOFF):
            return lowered[len(prefix) :]
    return _SPELLED.get(lowered, name)


def columns_by_canonical_name(table: pa.Table) -> dict[str, pa.ChunkedArray]:
    return {canonical_name(name): table.column(name) for name in table.column_names}


def check_required_columns(schema: pa.Schema, origin: str) -> None:
    missing = sorted(set(REQUIRED) - {canonical_name(name) for name in schema.names})
    if missing:
        raise SchemaError(f"{origin}: missing required column(s) {', '.join(missing)}")


def unify_schema(table: pa.Table, origin: str) -> pa.Table:
    """Cast `table` to CANONICAL; `where` (month and file) goes into every error message."""
    check_required_columns(table.schema, origin)
    columns = columns_by_canonical_name(table)
    arrays = []
    for field in CANONICAL:
        column = columns.get(field.name)
        if column is None:
            arrays.append(pa.nulls(table.num_rows, field.type))
            continue
        try:
            arrays.append(pc.cast(column, field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise SchemaError(
                f"{origin}: column {field.name} of type {column.type} cannot be read as {field.type}: {error}"
            ) from error
    return pa.Table.from_arrays(arrays, schema=CANONICAL)
