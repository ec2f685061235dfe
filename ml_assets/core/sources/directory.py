"""TLC trip files already on disk, e.g. a mirror or a shared folder, named as TLC names them."""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

from upath import UPath

from ml_assets.core.months import check_month
from ml_assets.core.sources import (
    MonthNotPublishedError,
    SourceUnavailableError,
    check_parquet,
    trip_file_name,
)
from ml_assets.core.storage import location


@dataclass(frozen=True)
class DirectorySource:
    path: str
    taxi: str = "green"

    def fetch(self, month: str) -> UPath:
        """The month's file in place; nothing is copied."""
        file = self._file(month)
        if self.probe(month) is None:
            raise MonthNotPublishedError(f"month {month} is not published yet: {file} does not exist")
        check_parquet(file, month)
        return file

    def probe(self, month: str) -> dict | None:
        """Fingerprint (size, mtime) of the month's file, or None if absent.

        A missing or unreadable directory raises instead: that is a broken setup, not a month that
        has yet to appear, and must not be mistaken for one. So do a dangling symlink and a directory
        under the month's file name: the mirror is broken there, and the month neither absent nor a file.
        """
        file = self._file(month)
        try:
            stat = file.stat()
        except FileNotFoundError:
            if file.is_symlink():
                raise SourceUnavailableError(
                    f"month {month}: {file} is a dangling symlink (to {os.readlink(file)}, which does not exist)"
                ) from None
            if pathlib.Path(self.path).is_dir():
                return None
            raise SourceUnavailableError(
                f"directory {self.path} does not exist (yet): its months are read once it appears, e.g. a volume "
                "mounted later"
            ) from None
        except OSError as exc:
            raise SourceUnavailableError(f"cannot read {file}: {exc}") from exc
        if file.is_dir():
            raise SourceUnavailableError(f"month {month}: {file} is a directory, not the month's parquet file")
        return {"path": str(file), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def for_probing(self) -> DirectorySource:
        return self  # a stat per month is cheap already

    def file_of(self, month: str) -> str:
        return str(self._file(month))

    def _file(self, month: str) -> UPath:
        return location(pathlib.Path(self.path) / trip_file_name(self.taxi, check_month(month)))
