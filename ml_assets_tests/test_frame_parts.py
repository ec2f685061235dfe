"""A feature frame read a part at a time (core.frame_parts): a stored frame gives the same parts, and so the
same model, as the frame in memory; the learner's matrices are built from parts that hold one split only."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from upath import UPath

from ml_assets.core import frame_parts, model, tables
from ml_assets.core.features import SPLIT, TEST, TRAIN, VALID, WEIGHT, build_features, split_rows
from ml_assets.core.schema import DURATION, ZONE_COLUMNS
from ml_assets.core.storage import open_parquet
from ml_assets.core.training import train_and_evaluate
from ml_assets.resources.io_managers import ParquetFiles
from ml_assets_tests.support import cleaned_months

MONTHS = ("2023-01", "2023-02", "2023-03")
PART_ROWS = 2000


@pytest.fixture(scope="module")
def months():
    """A fifth of each month's trips."""
    return cleaned_months(MONTHS, 5)


@pytest.fixture(scope="module")
def frame(months):
    """Recency-weighted (the weights must reach the matrices too)."""
    return build_features({m: months[m] for m in MONTHS[:2]}, months[MONTHS[2]], MONTHS[2], recency_weight=0.8)


def store(frame, folder) -> pq.ParquetFile:
    """`frame` as the parquet IO manager stores it (in parts of PART_ROWS rows, under monkeypatch)."""
    path = folder / "trip_features" / "2023-03.parquet"
    path.parent.mkdir()
    ParquetFiles(base_path=UPath(folder)).write(frame, path)
    return open_parquet(path)


@pytest.fixture
def stored(frame, tmp_path, monkeypatch) -> pq.ParquetFile:
    monkeypatch.setattr(tables, "ROW_GROUP_ROWS", PART_ROWS)
    return store(frame, tmp_path)


def comparable(rows):
    """The rows' values, zones as their ids (a stored part's categories are the zones it holds)."""
    return rows.assign(**{zone: rows[zone].astype("float64") for zone in ZONE_COLUMNS}).reset_index(drop=True)


def test_a_stored_frame_gives_the_parts_rows_and_columns_the_frame_in_memory_gives(frame, stored):
    assert stored.metadata.num_row_groups == -(-len(frame) // PART_ROWS)
    assert frame_parts.attrs(stored) == frame.attrs
    for splits in [(TRAIN,), (VALID,), (TRAIN, VALID), (TEST,)]:
        in_memory, from_file = list(frame_parts.parts(frame, *splits)), list(frame_parts.parts(stored, *splits))
        assert [len(part) for part in from_file] == [len(part) for part in in_memory]
        assert all(0 < len(part) <= PART_ROWS and part[SPLIT].isin(splits).all() for part in from_file)
        for ours, theirs in zip(from_file, in_memory, strict=True):
            assert comparable(ours).astype(str).equals(comparable(theirs).astype(str))
    assert len(list(frame_parts.parts(frame, TRAIN))) > 1
    test = frame_parts.rows(stored, TEST)
    assert comparable(test).astype(str).equals(comparable(split_rows(frame, TEST)).astype(str))
    columns = frame_parts.columns(stored, [DURATION, SPLIT])
    assert list(columns.columns) == [DURATION, SPLIT] and columns.attrs == frame.attrs
    assert np.array_equal(columns[DURATION].to_numpy(), frame[DURATION].to_numpy())


@pytest.mark.slow
def test_a_model_trained_from_the_stored_frame_is_the_one_trained_in_memory(frame, stored):
    """What `make reproduce` relies on: the trained_model step reads its frame from the file, a rebuild has it in
    memory; with the same parts, the matrices, the trees and the scores are the same."""
    assert WEIGHT in frame
    runs = [
        train_and_evaluate(source, model.DEFAULT_PARAMS, num_boost_round=40, early_stopping_rounds=5, refit=True)
        for source in (frame, stored)
    ]
    in_memory, from_file = runs
    assert from_file.refitted and in_memory.refitted
    assert from_file.model.get_dump() == in_memory.model.get_dump()
    assert from_file.metrics == in_memory.metrics
    assert from_file.data.encoder == in_memory.data.encoder
    assert np.array_equal(from_file.predicted, in_memory.predicted)
    assert {split: len(y) for split, y in from_file.data.y.items()} == {
        split: int((frame[SPLIT] == split).sum()) for split in (TRAIN, VALID, TEST)
    }


@pytest.mark.slow
def test_a_course_frame_trains_the_same_model_in_memory_as_stored(months, tmp_path, monkeypatch):
    """A `course` frame has none of the pickup columns the encoder's inputs name: the stored file skips them when
    the pipeline trains, so a rebuild (in memory) must skip them too, and trains the same model."""
    monkeypatch.setattr(tables, "ROW_GROUP_ROWS", PART_ROWS)
    course = build_features({MONTHS[0]: months[MONTHS[0]]}, months[MONTHS[1]], MONTHS[1], feature_set="course")
    assert "pickup_hour" not in course
    stored_course, wanted = store(course, tmp_path), [DURATION, "pickup_hour", SPLIT]
    for source in (course, stored_course):
        assert list(frame_parts.columns(source, wanted).columns) == [DURATION, SPLIT]
    in_memory, from_file = (
        train_and_evaluate(source, model.DEFAULT_PARAMS, num_boost_round=20, early_stopping_rounds=5)
        for source in (course, stored_course)
    )
    assert from_file.model.get_dump() == in_memory.model.get_dump()
    assert from_file.data.encoder == in_memory.data.encoder


def test_the_tuning_sample_is_the_same_from_a_stored_frame_and_leaves_the_test_month_out(frame, stored):
    from ml_assets.core.tuning import tuning_sample

    training = frame[SPLIT].isin([TRAIN, VALID]).sum()
    sample = tuning_sample(frame, training // 3, seed=1)
    assert len(sample) == training // 3 and sample[SPLIT].isin([TRAIN, VALID]).all()
    assert sample.index.is_monotonic_increasing and sample.attrs == frame.attrs
    assert comparable(sample).astype(str).equals(comparable(tuning_sample(stored, training // 3, seed=1)).astype(str))
    assert not sample.index.equals(tuning_sample(frame, training // 3, seed=2).index)
    everything = tuning_sample(stored, training)
    assert len(everything) == training and comparable(everything).astype(str).equals(
        comparable(frame[frame[SPLIT].isin([TRAIN, VALID])]).astype(str)
    )
