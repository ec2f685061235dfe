"""Where a month of trips comes from: synthetic, TLC over HTTP, or a local directory.

Every source offers the same two calls:
- `fetch(month) -> Path`: a local parquet file with the month's trips as the source publishes it.
- `probe(month) -> dict | None`: a version fingerprint of the month if it is available, else None.
"""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq


class SourceError(Exception):
    """A month could not be had from its source."""


class MonthNotPublishedError(SourceError):
    """The source does not (yet) have this month."""


class SourceUnavailableError(SourceError):
    """The source could not be reached (network down, server errors after retries)."""


class InvalidSourceFileError(SourceError):
    """The file for a month is not readable parquet (corrupt or truncated)."""


def trip_file_name(taxi: str, month: str) -> str:
    """TLC's file name for one month, e.g. `green_tripdata_2021-02.parquet`."""
    return f"{taxi}_tripdata_{month}.parquet"


def check_parquet(path: str | os.PathLike, month: str) -> None:
    """Raise InvalidSourceFileError unless `path` reads as parquet from end to end.

    The footer alone can look fine while a column chunk is cut off or corrupt, so every row group
    is decoded too (one at a time, to bound memory on large months).
    """
    try:
        with pq.ParquetFile(path) as parquet:
            for i in range(parquet.num_row_groups):
                parquet.read_row_group(i)
    except (OSError, pa.ArrowException) as exc:
        raise InvalidSourceFileError(f"month {month}: {path} is not readable parquet: {exc}") from exc
