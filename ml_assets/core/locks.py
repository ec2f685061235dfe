"""Cross-process locks where two runs starting together on one machine would race: creating a local store's
tables (locks on local files, which the kernel releases when the holder dies, `kill -9` included), and
taking a study's next trial from sqlite (its own write lock). They hold on one machine only: what processes
of several machines share (moving MLflow's `champion` alias, creating its experiment or optuna's tables on a
server) is coordinated by Dagster's instance or the server itself (core.tracking, core.tuning).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) for the block; other holders wait."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sqlite_file(url: str | None) -> Path | None:
    """The database file of a `sqlite:///` URL (optuna, MLflow), None for a server."""
    prefix = "sqlite:///"
    if not url or not url.startswith(prefix):
        return None
    return Path(url[len(prefix) :]).resolve()


def store_lock(database: Path) -> Path:
    """The lock file of a sqlite database: beside it, where every process that opens the file finds it."""
    return database.with_name(database.name + ".lock")


def lock_at_begin(engine) -> None:
    """Make each transaction of a sqlite `engine` take the database's write lock at BEGIN (SQLAlchemy's recipe).

    pysqlite begins a transaction only at the first write, so SQLAlchemy's SELECT ... FOR UPDATE is a
    plain read there: two processes could both read optuna's enqueued trial as WAITING, and both run it.
    """
    from sqlalchemy import event

    def no_implicit_begin(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    event.listen(engine, "connect", no_implicit_begin)
    event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
    engine.dispose()  # the connections opened before the listeners
