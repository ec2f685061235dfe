"""Atomic file writes: a reader never sees a half-written file under its final name.

A write goes to `.<name>.<8 random chars>.tmp` beside the target and is renamed into place. The
writer holds an advisory lock (`flock`) on its temporary file until it is done; the kernel drops it
when the process dies, even by `kill -9`. So the next write of the same target removes every
unlocked temporary sibling (left by a killed writer), never one that a live writer is filling.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from ml_assets.core import tables


def _create_locked_temp(target: Path) -> tuple[Path, int]:
    """A new temporary sibling of `target`, open and locked (mode 0666 minus the umask, as `open` gives)."""
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:
            return tmp, fd
        os.close(fd)  # a cleaner took it for stale between creation and lock: make another


def remove_stale_temp_files(target: Path) -> None:
    """Delete the temporary siblings of `target` that no live writer holds."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}\.tmp")
    for candidate in target.parent.iterdir():
        if not pattern.fullmatch(candidate.name):
            continue
        try:
            fd = os.open(candidate, os.O_RDONLY)
        except FileNotFoundError:  # its writer finished meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live writer holds it
            continue
        else:
            candidate.unlink(missing_ok=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(target)
    tmp, fd = _create_locked_temp(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.close(fd)


def write_table(table: tables.Trips, path: str | os.PathLike) -> Path:
    """A table, or a parquet file read a batch at a time, as a zstd parquet file at `path`."""
    with atomic_path(path) as tmp:
        tables.write_parquet(table, tmp)
    return Path(path)


def write_json(obj, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    return Path(path)


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())
