"""What the local stack's processes run and with which environment: the checkout's deploy/ folder,
this virtual environment's commands, and none of a developer's own settings."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from ml_assets.settings import restoring_environ

ROOT = Path(__file__).resolve().parents[3]  # the checkout: deploy/ is not part of the installed package
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent  # the virtual environment's commands: dagster, mlflow, dg…
# The environment a service gets besides ours: nothing of a developer's own ML_ASSETS_* or MLflow setup.
_ESCAPING = ("ML_ASSETS_", "MLFLOW_", "DAGSTER_", "POSTGRES_", "PG")


def clean_environ() -> dict[str, str]:
    """This process's environment without a developer's own ML_ASSETS_*, MLflow, Dagster or PostgreSQL setup."""
    return {key: value for key, value in os.environ.items() if not key.startswith(_ESCAPING)}


def service_environ(store_env: dict[str, str]) -> dict[str, str]:
    """What every service.sh process gets: this venv on PATH, an object store's variables. No BIND_HOST:
    service.sh's default (127.0.0.1) is what the topology test checks."""
    return {
        **clean_environ(),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
        **store_env,
    }


@contextlib.contextmanager
def scoped_environ(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ while the block runs; what was there before is put back after."""
    with restoring_environ(values):
        os.environ.update(values)
        yield
