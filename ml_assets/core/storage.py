"""Where files live and how they are written whole: a local folder or an object store.

A location is a plain path or an fsspec URL (`s3://bucket/prefix`, `gs://bucket/prefix`,
`file:///srv/data`), as a universal-pathlib `UPath`. Every write goes through `atomic_path`, which
hands the writer a local temporary file and publishes it only once the writer is done:

- a local file: the temporary file is `.<name>.<8 random chars>.tmp` beside the target and is
  renamed into place, so a reader never sees a half-written file under its final name;
- an object in a store: the temporary file is staged in `$TMPDIR/ml_assets-uploads-<uid>/` and
  uploaded as one object (one PUT, or a multipart upload that the store only shows once it is
  complete), so the key holds the old object or the new one, never part of either.

The writer holds an advisory lock (`flock`) on its temporary file until it is done; the kernel drops it
when the process dies, even by `kill -9`. So the next write of the same target removes every
unlocked temporary file of that target (left by a killed writer), never one that a live writer is filling.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from ml_assets.core import tables
from ml_assets.core.credentials import S3_SCHEMES, split_userinfo
from ml_assets.core.errors import chain

LOCAL_PROTOCOLS = ("", "file", "local")
# Where values can be stored (docs/deployment.md): a local folder, S3 (s3fs) and Google Cloud Storage (gcsfs). fsspec
# knows other protocols, but they only read (https://, zip://, github://) or live in one process (memory://).
WRITABLE_PROTOCOLS = (*S3_SCHEMES, "gs", "gcs", *LOCAL_PROTOCOLS[1:])


class CredentialsNotTaken(ValueError):
    """A user and password in the URL of a store whose client does not log in with them."""


def location(path: str | os.PathLike | UPath) -> UPath:
    """A path or fsspec URL as a UPath (a plain path stays a local `pathlib.Path` too).

    A user and password in an S3 URL (`s3://KEY:SECRET@bucket/prefix`) are handed to s3fs as its key and
    secret and kept out of the path, so that no path a run logs, records or names in an error holds them;
    in another store's URL they are refused."""
    if isinstance(path, str):
        plain, user, password = split_userinfo(path)
        if user is not None:
            protocol = plain.partition("://")[0]
            if protocol not in S3_SCHEMES:  # gcsfs would take them, ignore them, and write with other credentials
                raise CredentialsNotTaken(
                    f"{protocol}:// takes no user or password in its URL ({plain}): give the store's client its "
                    "credentials its own way (for gs://, GOOGLE_APPLICATION_CREDENTIALS)"
                )
            return UPath(plain, username=user, password=password)
    return UPath(path)


def local_file(path: str | os.PathLike | UPath) -> Path | None:
    """The local path of `path`, or None where it names an object in a store."""
    path = location(path)
    return Path(path.path) if path.protocol in LOCAL_PROTOCOLS else None


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
def _locked_temp(target: Path) -> Iterator[Path]:
    """A fresh locked temporary sibling of `target` for the block (stale ones removed first), deleted after it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(target)
    tmp, fd = _create_locked_temp(target)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.close(fd)


def _staging_file(target: UPath) -> Path:
    """The local name an object is written under before its upload: one per object URL and user."""
    digest = hashlib.sha256(str(target).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir(), f"ml_assets-uploads-{os.getuid()}", f"{digest}-{target.name}")


class WriteFailed(OSError):
    """A value could not be stored; the message names where and why (the store's or the OS's error is its cause)."""


def cannot_write(what: str, path: str | os.PathLike | UPath, error: Exception) -> WriteFailed:
    """The error to raise when writing `what` to `path` failed: the place and the reason, not a temp file's name."""
    local = local_file(path)
    full = f" ({space_left(local.parent)})" if getattr(error, "errno", None) == errno.ENOSPC and local else ""
    return WriteFailed(f"cannot write {what} to {path}: {getattr(error, 'strerror', None) or error}{full}")


# How sqlite says a disk is full: a WAL database whose shared memory cannot grow reports an I/O error.
_FULL_DISK = ("database or disk is full", "disk I/O error", os.strerror(errno.ENOSPC))


def out_of_space(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from or during, says that a disk is full."""
    return any(
        getattr(link, "errno", None) == errno.ENOSPC or any(words in str(link) for words in _FULL_DISK)
        for link in chain(error)
    )


def space_left(folder: str | os.PathLike) -> str:
    """How much room the filesystem of a local `folder` has, e.g. "0 B free of 64.0 MiB"."""
    usage = shutil.disk_usage(next(parent for parent in (Path(folder), *Path(folder).parents) if parent.exists()))
    return f"{_size(usage.free)} free of {_size(usage.total)}"


def _size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike | UPath) -> Iterator[Path]:
    """Yield a local temporary file; only if the block succeeds does it replace `path`, whole."""
    target = location(path)
    local = local_file(target)
    if local is not None:
        with _locked_temp(local) as tmp:
            yield tmp
            os.replace(tmp, local)
        return
    with _locked_temp(_staging_file(target)) as tmp:
        yield tmp
        target.fs.put_file(str(tmp), target.path)


def arrow_file(path: str | os.PathLike | UPath) -> tuple[str, object | None]:
    """`path` as pyarrow's (path, filesystem): pyarrow's own I/O for a local file, fsspec's for an object."""
    path = location(path)
    local = local_file(path)
    return (str(local), None) if local is not None else (path.path, path.fs)


def open_parquet(path: str | os.PathLike | UPath) -> pq.ParquetFile:
    """A parquet file to read a batch at a time (one version of it, wherever it lives)."""
    where, filesystem = arrow_file(path)
    return pq.ParquetFile(where, filesystem=filesystem)


def read_table(path: str | os.PathLike | UPath, **options) -> pa.Table:
    where, filesystem = arrow_file(path)
    return pq.read_table(where, filesystem=filesystem, **options)


def write_table(table: tables.TableOrFile, path: str | os.PathLike | UPath) -> UPath:
    """A table, or a parquet file read a batch at a time, as a zstd parquet file at `path`."""
    with atomic_path(path) as tmp:
        tables.write_parquet(table, tmp)
    return location(path)


def _sha256(handle) -> str:
    """The sha256 of what `handle` reads, a MiB at a time: what tells one published version of a month from another."""
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def open_parquet_hashed(path: str | os.PathLike | UPath) -> tuple[pq.ParquetFile, str, int]:
    """`open_parquet`, with the sha256 and size of the bytes it reads: hashed from the same open file, they are
    those of its rows even if the file at `path` is replaced meanwhile (a local file; an object store's read
    is not pinned)."""
    where, filesystem = arrow_file(path)
    handle = pa.OSFile(where) if filesystem is None else filesystem.open(where, "rb")
    digest = _sha256(handle)
    size = handle.tell()
    handle.seek(0)
    return pq.ParquetFile(handle), digest, size


def json_text(obj) -> str:
    """How every JSON value is stored: indented, keys sorted, anything else as its string."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str)


def write_json(obj, path: str | os.PathLike | UPath) -> UPath:
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(obj))
    return location(path)


def read_json(path: str | os.PathLike | UPath):
    return json.loads(location(path).read_text())
