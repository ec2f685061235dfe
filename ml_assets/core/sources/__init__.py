"""Where a month of trips comes from: synthetic, TLC over HTTP, or a local directory.

Every source is a `TripFileSource`: `fetch` a month's file, `probe` whether (and in which version) a
month is published, and `for_probing()` the source configured to probe many months cheaply.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from ml_assets.core.storage import arrow_file

# Keys of a fingerprint that say where a file is, not which version it is: moving a mirror or
# changing the TLC host is no re-publication.
LOCATION_KEYS = frozenset({"path", "url"})


def file_version(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a fingerprint that tells published versions of a month apart."""
    return {key: value for key, value in fingerprint.items() if key not in LOCATION_KEYS}


def version_without_etag(fingerprint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The version with its ETag left out, where it has both an ETag and a Last-Modified; else None.

    Where two fingerprints have it, it decides whether they are the same version: some CDNs hand out a
    new ETag for the same bytes on every request, while a re-published file always gets a new
    Last-Modified, so a new ETag alone, with the same size and Last-Modified, is no re-publication.
    """
    version = file_version(fingerprint)
    if version.get("etag") is None or version.get("last_modified") is None:
        return None
    return {key: value for key, value in version.items() if key != "etag"}


class TripFileSource(Protocol):
    def fetch(self, month: str) -> UPath:
        """A parquet file (local, or an object in a store) with the month's trips as the source publishes it."""

    def probe(self, month: str) -> dict | None:
        """A version fingerprint of the month if it is published, else None."""

    def for_probing(self) -> TripFileSource:
        """This source set up to probe many months within a sensor tick (fewer, shorter tries)."""

    def file_of(self, month: str) -> str:
        """Where the month's file is looked for, as a person would check it (a password masked)."""


class SourceError(Exception):
    """A month could not be had from its source."""


class MonthNotPublishedError(SourceError):
    """The source does not (yet) have this month."""


class SourceUnavailableError(SourceError):
    """The source could not be reached (network down, server errors after retries)."""


class InvalidSourceFileError(SourceError):
    """The file for a month is not readable parquet (corrupt or truncated)."""


class OtherTaxiError(ValueError):
    """The home already holds months of another taxi type."""


def check_taxi_of_home(recorded: str | None, taxi: str, month: str) -> None:
    """Refuse a month of `taxi` where the home's newest stored month is of another taxi type (`recorded`).

    A home holds one taxi type: its training windows, its champion and model_performance's series would
    mix green and yellow trips without a word. None (nothing stored yet, or stored before the type was
    recorded) passes."""
    if recorded is None or recorded == taxi:
        return
    raise OtherTaxiError(
        f"month {month}: ML_ASSETS_TAXI is {taxi}, but this home holds {recorded} months (raw_trips records "
        f"taxi={recorded}): its training windows and champion would mix both. Set ML_ASSETS_TAXI={recorded}, "
        f"or give {taxi} trips a home of their own: another DAGSTER_HOME (it may share the MLflow tracking server: "
        "each taxi type registers its models in a registered model of its own)"
    )


def trip_file_name(taxi: str, month: str) -> str:
    """TLC's file name for one month, e.g. `green_tripdata_2021-02.parquet`."""
    return f"{taxi}_tripdata_{month}.parquet"


def check_parquet(path: str | os.PathLike | UPath, month: str) -> None:
    """Raise InvalidSourceFileError unless `path` reads as parquet from end to end.

    The footer alone can look fine while a column chunk is cut off or corrupt, so every row group
    is decoded too (one at a time, to bound memory on large months).

    A file that cannot be read at all (no permission, an I/O error) raises that OSError instead: its
    bytes may be fine, and replacing or rejecting it would hide a broken setup.
    """
    where, filesystem = arrow_file(path)
    try:
        with pq.ParquetFile(where, filesystem=filesystem) as parquet:
            for i in range(parquet.num_row_groups):
                parquet.read_row_group(i)
    except (OSError, pa.ArrowException) as exc:
        if isinstance(exc, OSError) and _refused(exc):
            raise
        raise InvalidSourceFileError(f"month {month}: {path} is not readable parquet: {exc}") from exc


def _refused(error: OSError) -> bool:
    """Whether the system refused to read a file, rather than arrow finding its bytes bad.

    Arrow reports bad bytes (a corrupt page, say) as an OSError without errno; the OS sets one, and
    an object store raises PermissionError or FileNotFoundError.
    """
    return error.errno is not None or isinstance(error, (PermissionError, FileNotFoundError))
