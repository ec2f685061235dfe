"""A feature frame read a part at a time, in memory (a DataFrame) or stored (its parquet file).

Training needs every row of the window only through the learner's matrices, which are built a part at a
time; what else it reads (the encoder's columns, the test month's rows) is small. So a window of ten
million trips is never in memory whole (docs/large-months.md). Both kinds give the same parts: a
stored frame's row groups hold `tables.ROW_GROUP_ROWS` rows, and an in-memory one is cut there too.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ml_assets.core import tables
from ml_assets.core.features import SPLIT, split_rows

Frame = pd.DataFrame | pq.ParquetFile


def attrs(frame: Frame) -> dict:
    """The frame's `attrs` (its feature set, months and config)."""
    if isinstance(frame, pd.DataFrame):
        return frame.attrs
    return tables.to_pandas(frame.schema_arrow.empty_table()).attrs


def columns(frame: Frame, names: list[str]) -> pd.DataFrame:
    """Every row, only those of the columns `names` the frame has, in memory and stored alike.

    Training asks every frame for the encoder's inputs, and a `course` frame has no pickup hour or weekday: a
    parquet file skips the columns it lacks, so a frame in memory must too, or a rebuild could not train what
    the pipeline trained.
    """
    held = frame.columns if isinstance(frame, pd.DataFrame) else frame.schema_arrow.names
    present = [name for name in names if name in held]
    if isinstance(frame, pd.DataFrame):
        return frame[present]
    return tables.to_pandas(frame.read(columns=present))


def rows(frame: Frame, *splits: str) -> pd.DataFrame:
    """The rows of `splits`, every column."""
    if isinstance(frame, pd.DataFrame):
        return split_rows(frame, *splits)
    return at(frame, np.flatnonzero(columns(frame, [SPLIT])[SPLIT].isin(splits).to_numpy()))


def at(frame: Frame, positions: np.ndarray) -> pd.DataFrame:
    """The rows at `positions` (sorted), every column; a stored frame keeps only those while it is read."""
    if isinstance(frame, pd.DataFrame):
        taken = frame.take(positions)
        taken.attrs = frame.attrs
        return taken
    return tables.to_pandas(tables.take(frame, positions))


def parts(frame: Frame, *splits: str) -> Iterator[pd.DataFrame]:
    """The rows of `splits`, `tables.ROW_GROUP_ROWS` rows of the frame at a time (parts without them skipped)."""
    if isinstance(frame, pd.DataFrame):
        for start in range(0, len(frame), tables.ROW_GROUP_ROWS):
            part = split_rows(frame.iloc[start : start + tables.ROW_GROUP_ROWS], *splits)
            if len(part):
                yield part
        return
    for group in range(frame.metadata.num_row_groups):
        split = tables.to_pandas(frame.read_row_group(group, columns=[SPLIT]))[SPLIT]
        if split.isin(splits).any():
            yield split_rows(tables.to_pandas(frame.read_row_group(group)), *splits)
