"""Defaults that follow the environment, so one `export` reconfigures the whole project."""
from __future__ import annotations

import os
from pathlib import Path

from dagster import EnvVar


def state_dir() -> Path:
    """Where this project keeps its files when nothing else is configured: beside Dagster's own."""
    return Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").resolve() / "ml_assets"


def env_or(name: str, default):
    """`EnvVar(name)` when the variable is set (resolved at run time, shown in the UI), else `default`."""
    if not os.environ.get(name):
        return default
    return EnvVar.int(name) if isinstance(default, int) else EnvVar(name)


def env_source(name: str, default: str):
    """The same for old-style (`StringSource`) config such as dagster-mlflow's."""
    return {"env": name} if os.environ.get(name) else default


def env_int(name: str, default: int) -> int:
    """For the few settings the asset graph's shape depends on, read once at load time."""
    return int(os.environ.get(name) or default)
