"""Fixtures: an isolated DAGSTER_HOME per test, its instance, an HTTP server over the TLC files, an S3 store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ml_assets_tests.http_server import ScriptedServer, serve_directory
from ml_assets_tests.s3 import S3Server, moto_s3
from ml_assets_tests.support import TLC_DATA, use_new_home


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    return use_new_home(tmp_path / "dagster_home", monkeypatch)


@pytest.fixture
def instance(dagster_home):
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        yield instance


@pytest.fixture
def tlc_server() -> Iterator[ScriptedServer]:
    """The TLC sample files of ../shared over HTTP."""
    with serve_directory(TLC_DATA) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """One S3-compatible server (moto) on 127.0.0.1 for the whole session; tests use buckets of their own."""
    with moto_s3(tmp_path_factory.mktemp("moto") / "moto_server.log") as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server, monkeypatch) -> str:
    """A new bucket, with this process's AWS_* variables pointing every S3 client at the test server."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server.new_bucket()
