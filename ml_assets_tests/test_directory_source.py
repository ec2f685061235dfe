"""DirectorySource over the TLC sample files in ../shared (read-only) and scratch directories."""

from __future__ import annotations

import pytest

from ml_assets.core.sources import (
    InvalidSourceFileError,
    MonthNotPublishedError,
    SourceUnavailableError,
)
from ml_assets.core.sources.directory import DirectorySource
from ml_assets_tests.support import TLC_DATA

MONTH = "2021-01"
NAME = f"green_tripdata_{MONTH}.parquet"


def test_fetch_returns_file_in_place():
    assert DirectorySource(str(TLC_DATA)).fetch(MONTH) == TLC_DATA / NAME


def test_probe_fingerprints_file():
    stat = (TLC_DATA / NAME).stat()
    assert DirectorySource(str(TLC_DATA)).probe(MONTH) == {
        "path": str(TLC_DATA / NAME),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


@pytest.mark.parametrize("taxi, month", [("green", "2030-01"), ("yellow", MONTH)])
def test_missing_month(taxi, month):
    src = DirectorySource(str(TLC_DATA), taxi=taxi)
    assert src.probe(month) is None
    with pytest.raises(MonthNotPublishedError, match=f"{taxi}_tripdata_{month}.parquet"):
        src.fetch(month)


def test_invalid_file(tmp_path):
    data = (TLC_DATA / NAME).read_bytes()
    (tmp_path / NAME).write_bytes(data[: len(data) // 2])
    src = DirectorySource(str(tmp_path))
    assert src.probe(MONTH)["size"] == len(data) // 2
    with pytest.raises(InvalidSourceFileError, match=f"month {MONTH}.*{NAME}"):
        src.fetch(MONTH)


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_broken_directory_is_unavailable(tmp_path, kind):
    path = tmp_path / "mirror"
    if kind == "a file":
        path.write_text("not a directory")
    src = DirectorySource(str(path))
    with pytest.raises(SourceUnavailableError):
        src.probe(MONTH)
    with pytest.raises(SourceUnavailableError):
        src.fetch(MONTH)


def test_month_is_checked():
    with pytest.raises(ValueError):
        DirectorySource(str(TLC_DATA)).probe("2021-13")


@pytest.mark.parametrize("kind, says", [("dangling link", "is a dangling symlink"), ("directory", "is a directory")])
def test_broken_month_entry_is_an_error_naming_it(tmp_path, kind, says):
    """A link to nothing or a directory under a month's name is a broken mirror, not a month yet to come or a file."""
    entry = tmp_path / NAME
    if kind == "dangling link":
        entry.symlink_to(tmp_path / "gone.parquet")
    else:
        entry.mkdir()
    src = DirectorySource(str(tmp_path))
    for call in (src.probe, src.fetch):
        with pytest.raises(SourceUnavailableError, match=f"month {MONTH}: {entry} {says}"):
            call(MONTH)
