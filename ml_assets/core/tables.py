"""A month's trips, whole in memory (`pa.Table`) or as a parquet file read a batch at a time (`pq.ParquetFile`).

Ingestion reads a month's file batch by batch, so that a month of any size needs memory for its
cleaned rows only, never for the whole raw table. An open `ParquetFile` also pins one version of
the file: a source that replaces it meanwhile (a re-published month) cannot mix two versions.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

BATCH_ROWS = 1 << 19

Trips = pa.Table | pq.ParquetFile


def release_memory_promptly() -> None:
    """Make Arrow allocate from jemalloc and give freed memory back to the system at once.

    Arrow's default pool keeps what a step frees for later, so a process that reads a month, frees
    it and reads the next holds both in its resident set. Steps run one after another in one process
    (the in-process executor); this keeps each step's peak its own.
    """
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except NotImplementedError:  # a pyarrow built without jemalloc keeps its default pool
        pass


def schema(trips: Trips) -> pa.Schema:
    return trips.schema_arrow if isinstance(trips, pq.ParquetFile) else trips.schema


def num_rows(trips: Trips) -> int:
    return trips.metadata.num_rows if isinstance(trips, pq.ParquetFile) else trips.num_rows


def batches(trips: Trips, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of `trips` (only `columns`, if given), BATCH_ROWS at a time."""
    if isinstance(trips, pq.ParquetFile):
        yield from trips.iter_batches(batch_size=BATCH_ROWS, columns=columns)
    else:
        yield from (trips if columns is None else trips.select(columns)).to_batches(max_chunksize=BATCH_ROWS)


def write_parquet(trips: Trips, path) -> None:
    """Write `trips` to a parquet file at `path`, a batch at a time."""
    with pq.ParquetWriter(path, schema(trips), compression="zstd") as writer:
        for batch in batches(trips):
            writer.write_batch(batch)
