"""raw_trips and cleaned_trips: a month of trips as the source publishes it, then cleaned for modelling."""

import hashlib

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import AssetExecutionContext, asset

from ml_assets import metadata as ui
from ml_assets.core import plots
from ml_assets.core.cleaning import EmptyMonthError, clean_trips
from ml_assets.core.schema import DURATION, check_required_columns
from ml_assets.partitions import monthly_partitions
from ml_assets.resources import TripSourceResource


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@asset(partitions_def=monthly_partitions, group_name="ingestion", kinds={"parquet"})
def raw_trips(context: AssetExecutionContext, trip_source: TripSourceResource) -> pa.Table:
    """One month of trips as the source publishes it (TLC's own file, schema untouched)."""
    month = context.partition_key
    path = trip_source.source().fetch(month)
    table = pq.read_table(path)
    where = f"month {month}, file {path}"
    check_required_columns(table.schema, where)
    if table.num_rows == 0:
        raise EmptyMonthError(f"{where}: the file has no trips")
    context.add_output_metadata(
        {
            "rows": table.num_rows,
            "source": trip_source.label,
            "source_file": str(path),
            "size_bytes": path.stat().st_size,
            "sha256": _sha256(path),
            **ui.table_metadata(table),
        }
    )
    return table


@asset(partitions_def=monthly_partitions, group_name="ingestion", kinds={"pandas"})
def cleaned_trips(context: AssetExecutionContext, raw_trips: pa.Table) -> pd.DataFrame:
    """Trips with a `duration` (minutes) of 1–60 whose pickup lies in the month, in one schema for all years."""
    month = context.partition_key
    cleaned = clean_trips(raw_trips, month, where=f"month {month}, raw_trips")
    context.add_output_metadata(
        {
            "rows": len(cleaned.trips),
            "raw_rows": cleaned.raw_rows,
            "dropped_rows": cleaned.dropped_rows,
            "dropped_share": round(cleaned.dropped_rows / cleaned.raw_rows, 5),
            **{f"dropped_{reason}": count for reason, count in cleaned.dropped.items()},
            "duration_mean": round(float(cleaned.trips[DURATION].mean()), 3),
            **ui.table_metadata(cleaned.trips),
            "preview": ui.preview(cleaned.trips),
            **ui.plot_metadata({"duration": lambda: plots.duration_histogram(cleaned.trips[DURATION])}, context.log),
        }
    )
    return cleaned.trips
