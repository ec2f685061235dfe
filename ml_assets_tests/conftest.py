"""Fixtures: an isolated DAGSTER_HOME per test, its instance, and an HTTP server over the TLC files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ml_assets_tests.http_server import ScriptedServer, serve_directory
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
