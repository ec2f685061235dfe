"""Fixtures: an isolated DAGSTER_HOME per test, its instance, an HTTP server over the TLC files, object stores."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml_assets.runner.signals import interrupt_as_in_a_terminal
from ml_assets_tests.http_server import ScriptedServer, serve_directory
from ml_assets_tests.object_stores import SCHEMES, Bucket, GcsServer, S3Server, start_store
from ml_assets_tests.support import ROUNDS_ENV, TLC_DATA, template_home, use_new_home

# XGBoost's OpenMP threads sleep while they wait instead of spinning, in this process and every one it
# starts (set before anything loads the OpenMP runtime, which reads it once). On two cores shared with
# other work, spinning threads took about 40 % more CPU for the same models, bit for bit.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Two training steps at once on each machine, as the suite runs them (two workers on two cores, the compose
# stack beside): XGBoost gets one thread a step, which took 6 % less CPU in the training tests (docs/testing.md).
os.environ.setdefault("ML_ASSETS_PARALLEL_TRAINING_STEPS", "2")
# support.ROUNDS' boosting rounds (ROUNDS_ENV) also for the runs that carry no run config (`make run`, sensors, the UI's
# launches): the models only have to be good enough for what each test checks.
for _name, _rounds in ROUNDS_ENV.items():
    os.environ.setdefault(_name, _rounds)


def _temporary_files_in_memory(shm: Path = Path("/dev/shm"), room: int = 4 * 2**30) -> None:
    """tmp_path and the homes in it on the RAM disk where there is a roomy one (not Docker's default
    64 MiB), unless TMPDIR or PYTEST_DEBUG_TEMPROOT already says where. Every Dagster event is a
    sqlite commit: on a disk shared with other work, waiting for them took 40 % of the wall time of
    test_pipeline's bad months and test_sensors (96 s there, 56 s in memory)."""
    if os.environ.get("TMPDIR") or os.environ.get("PYTEST_DEBUG_TEMPROOT"):
        return
    with contextlib.suppress(OSError):
        if os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= room:
            os.environ["PYTEST_DEBUG_TEMPROOT"] = str(shm)  # read when the first tmp_path is made


_temporary_files_in_memory()

# A suite started in the background (`make test &`) inherits SIGINT ignored, and so would every process
# it starts: `dagster dev` and the topologies' services, which Dagster makes ignore SIGTERM too, then
# waited out their 60 s (stop_process_group) or 15 s (a topology) to be killed.
interrupt_as_in_a_terminal()


# The slow tiers first, in this order, so that `make test`'s workers (pytest-xdist, a module to a worker)
# do not end on a long module started last; within a tier, the files' order.
SLOWEST_FIRST = ("compose", "ui", "deployment", "process", "slow")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def tier(item: pytest.Item) -> int:
        return next(
            (rank for rank, name in enumerate(SLOWEST_FIRST) if item.get_closest_marker(name)), len(SLOWEST_FIRST)
        )

    items.sort(key=tier)


@pytest.fixture(autouse=True)
def _tracking_uri_restored() -> Iterator[None]:
    """mlflow.set_tracking_uri, which some tests call themselves, also writes MLFLOW_TRACKING_URI into
    os.environ, where the next test's subprocesses would find this test's store (the tracking resource
    puts it back at its own teardown)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if os.environ.get("MLFLOW_TRACKING_URI") != before:
        if "mlflow" in sys.modules:
            sys.modules["mlflow"].set_tracking_uri(before)
        # MLflow writes the variable only when its own URI changes: where that was `before` already (a run's
        # resource put the variable back after it), the variable is put back here.
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="session")
def empty_home(tmp_path_factory) -> Path:
    """A home nothing ran in, whose stores exist: the instance's sqlite databases and MLflow's (its
    schema and Default experiment only), which take seconds to create on a busy machine. Tests that
    take `dagster_home` start from a copy; a test of what a home's first use does or creates takes
    `fresh_home` (or calls `use_new_home`)."""
    root = tmp_path_factory.mktemp("empty_home")
    with template_home(root):
        import mlflow

        # Where the project's MLflow store is by default (settings.MLFLOW_TRACKING_URI).
        (root / "dagster_home" / "ml_assets").mkdir()
        mlflow.MlflowClient(f"sqlite:///{root / 'dagster_home' / 'ml_assets' / 'mlflow.db'}").search_experiments()
    return root / "dagster_home"


@pytest.fixture
def dagster_home(tmp_path, monkeypatch, empty_home) -> Path:
    """This test's DAGSTER_HOME: a copy of `empty_home`."""
    return use_new_home(tmp_path / "dagster_home", monkeypatch, template=empty_home)


@pytest.fixture
def fresh_home(tmp_path, monkeypatch) -> Path:
    """This test's DAGSTER_HOME holding only dagster.yaml, for a test of what a home's first use creates."""
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
    with start_store("s3", tmp_path_factory.mktemp("moto") / "moto_server.log") as server:
        yield server


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory) -> Iterator[GcsServer]:
    """One GCS emulator on 127.0.0.1 for the whole session; tests use buckets of their own."""
    with start_store("gs", tmp_path_factory.mktemp("gcs") / "gcs_emulator.log") as server:
        yield server


@pytest.fixture(params=SCHEMES)
def bucket(request, monkeypatch) -> Bucket:
    """A new bucket in each object store, with this process's clients pointed at its test server."""
    import fsspec.config

    server = request.getfixturevalue({"s3": "s3_server", "gs": "gcs_server"}[request.param])
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    conf = copy.deepcopy(fsspec.config.conf)  # fsspec reads FSSPEC_* variables once, on import
    fsspec.config.set_conf_env(conf)
    monkeypatch.setattr(fsspec.config, "conf", conf)
    return Bucket(server, server.new_bucket())
