"""A month's trips, whole in memory (`pa.Table`) or as a parquet file read a batch at a time (`pq.ParquetFile`).

Ingestion reads a month's file batch by batch, so that a month of any size needs memory for its
cleaned rows only, never for the whole raw table. An open `ParquetFile` also pins one version of
the file: a source that replaces it meanwhile (a re-published month) cannot mix two versions.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

BATCH_ROWS = 1 << 19
ROW_GROUP_ROWS = 1 << 20  # rows per row group of a stored frame (pyarrow's default, pinned: see core.frame_parts)

TableOrFile = pa.Table | pq.ParquetFile  # a month in memory, or its parquet file read a batch at a time


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


def schema(trips: TableOrFile) -> pa.Schema:
    return trips.schema_arrow if isinstance(trips, pq.ParquetFile) else trips.schema


def num_rows(trips: TableOrFile) -> int:
    return trips.metadata.num_rows if isinstance(trips, pq.ParquetFile) else trips.num_rows


def batches(trips: TableOrFile, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of `trips` (only `columns`, if given), BATCH_ROWS at a time."""
    if isinstance(trips, pq.ParquetFile):
        yield from trips.iter_batches(batch_size=BATCH_ROWS, columns=columns)
    else:
        yield from (trips if columns is None else trips.select(columns)).to_batches(max_chunksize=BATCH_ROWS)


def write_parquet(trips: TableOrFile, path) -> None:
    """Write `trips` to a parquet file at `path`, a batch at a time."""
    with pq.ParquetWriter(path, schema(trips), compression="zstd") as writer:
        for batch in batches(trips):
            writer.write_batch(batch)


def take(trips: TableOrFile, rows: np.ndarray, columns: list[str] | None = None) -> pa.Table:
    """The rows at `rows` (sorted positions), read a batch at a time: never the whole table at once."""
    parts, offset = [], 0
    for batch in batches(trips, columns):
        first, last = np.searchsorted(rows, [offset, offset + batch.num_rows])
        if last > first:
            parts.append(batch.take(pa.array(rows[first:last] - offset)))
        offset += batch.num_rows
    whole = schema(trips)
    wanted = whole if columns is None else pa.schema([whole.field(name) for name in columns], whole.metadata)
    return pa.Table.from_batches(parts, schema=wanted)


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Like `pd.read_parquet`, but numeric categoricals (zone ids) come back as categoricals too,
    and without a second copy of the data (Arrow's buffers are freed column by column).

    Parquet keeps only string dictionaries; the pandas metadata still says which columns were
    categorical and of which type. `table` cannot be used afterwards.
    """
    schema = table.schema
    frame = table.to_pandas(self_destruct=True, split_blocks=True)
    for column in (schema.pandas_metadata or {}).get("columns", []):
        name = column["name"]
        if name in frame and column["pandas_type"] == "categorical" and frame[name].dtype != "category":
            values = pd.Categorical(frame[name])
            # The column's stored type: the metadata's `numpy_type` is that of the codes (int8 for
            # fewer than 128 categories, which would wrap zone 200 to -56).
            stored = schema.field(column["field_name"]).type.to_pandas_dtype()
            frame[name] = values.rename_categories(values.categories.astype(stored))
    return frame
