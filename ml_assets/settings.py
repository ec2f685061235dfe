"""Every environment setting of ml_assets: its variable, default, allowed values, and when it is read.

One rule for all of them: each is read and validated when the code location loads, so a wrong value
fails `dagster dev`, `dg check defs` or `make run` at once with the variable, its value and what is
allowed. Settings that shape the asset graph (first month, training window, sensor interval) and
the defaults shown in the launchpad are fixed then; settings that say where things live (source,
folders, stores, tracking URI) go to resources as `EnvVar`, resolved again when a run starts, so the
UI shows where a value comes from and no credential is copied into run config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import EnvVar

from ml_assets.core.drift import DriftThresholds
from ml_assets.core.months import check_month
from ml_assets.core.rules import RuleThresholds


class SettingError(ValueError):
    """An environment variable holds a value ml_assets cannot use."""


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError
    return value


def _whole_seconds(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError
    return value


def _share(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise ValueError
    return value


def _http_url(raw: str) -> str:
    if not re.match(r"^https?://[^/\s]+", raw):
        raise ValueError
    return raw


def _url(raw: str) -> str:
    if not re.match(r"^[a-z][a-z0-9+.-]*://", raw):
        raise ValueError
    return raw


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError
        return raw

    return parse


@dataclass(frozen=True)
class Setting:
    """One environment variable: `default` when unset or empty, else `parse(raw)`."""

    variable: str
    default: Any
    parse: Callable[[str], Any]
    allowed: str

    def raw(self) -> str | None:
        return os.environ.get(self.variable) or None

    def value(self):
        raw = self.raw()
        if raw is None:
            return self.default
        try:
            return self.parse(raw)
        except (TypeError, ValueError):
            raise SettingError(f"{self.variable}={raw!r} is not allowed: expected {self.allowed}") from None

    def config_source(self, default: Any = None):
        """`resource_value` for old-style (`StringSource`) config such as dagster-mlflow's or dagster-celery's."""
        if self.raw() is None:
            return self.default if default is None else default
        self.value()
        return {"env": self.variable}

    def resource_value(self):
        """The validated value as a resource field: `EnvVar` when set (resolved at run time), else the default."""
        if self.raw() is None:
            return self.default
        self.value()
        return EnvVar.int(self.variable) if isinstance(self.default, int) else EnvVar(self.variable)


def state_dir() -> Path:
    """Where this project keeps its files when nothing else is configured: beside Dagster's own."""
    return Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").resolve() / "ml_assets"


def _location(raw: str) -> str:
    """A folder, or an fsspec URL whose protocol fsspec knows and whose package is installed."""
    protocol, _, rest = raw.partition("://")
    if rest:
        import fsspec

        try:
            fsspec.get_filesystem_class(protocol)
        except ImportError as error:  # e.g. gs:// without gcsfs
            raise ValueError from error
    return raw


def _source(raw: str) -> str:
    return raw if raw in ("synthetic", "tlc") else str(Path(raw).expanduser())


_RULES, _DRIFT = RuleThresholds(), DriftThresholds()

START_MONTH = Setting("ML_ASSETS_START_MONTH", "2021-01", check_month, "a month YYYY-MM")
TRAINING_MONTHS = Setting("ML_ASSETS_TRAINING_MONTHS", 3, _positive_int, "a whole number of months >= 1")
SENSOR_INTERVAL_SECONDS = Setting("ML_ASSETS_SENSOR_INTERVAL_SECONDS", 300, _positive_int, "whole seconds >= 1")
AUTOMATION_INTERVAL_SECONDS = Setting("ML_ASSETS_AUTOMATION_INTERVAL_SECONDS", 30, _positive_int, "whole seconds >= 1")
SENSOR_MAX_MONTHS = Setting("ML_ASSETS_SENSOR_MAX_MONTHS", 3, _positive_int, "a whole number >= 1")
TUNING_TRIALS = Setting("ML_ASSETS_TUNING_TRIALS", 25, _positive_int, "a whole number of trials >= 1")
PARALLEL_TRAINING_STEPS = Setting(
    "ML_ASSETS_PARALLEL_TRAINING_STEPS", 1, _positive_int, "a whole number >= 1 (training steps at once per machine)"
)
TUNING_TIMEOUT_SECONDS = Setting("ML_ASSETS_TUNING_TIMEOUT_SECONDS", 60.0, _positive_float, "seconds > 0")

SOURCE = Setting("ML_ASSETS_SOURCE", "synthetic", _source, "synthetic, tlc, or the path of a folder of TLC files")
TAXI = Setting("ML_ASSETS_TAXI", "green", _choice("green", "yellow"), "green or yellow")
TLC_URL = Setting(
    "ML_ASSETS_TLC_URL", "https://d37ci6vzurychx.cloudfront.net/trip-data", _http_url, "an http:// or https:// URL"
)
SYNTHETIC_ROWS = Setting("ML_ASSETS_SYNTHETIC_ROWS", 60_000, _positive_int, "a whole number of trips >= 1")
SYNTHETIC_PUBLISHED_THROUGH = Setting("ML_ASSETS_SYNTHETIC_PUBLISHED_THROUGH", None, check_month, "a month YYYY-MM")
ALLOWED_LOCATION = (
    "a folder or an fsspec URL with its package installed (s3://bucket/prefix, gs://… with gcsfs, file://…)"
)
CACHE_DIR = Setting("ML_ASSETS_CACHE_DIR", None, _location, ALLOWED_LOCATION)
STORAGE_ROOT = Setting("ML_ASSETS_STORAGE_ROOT", None, _location, ALLOWED_LOCATION)
OPTUNA_STORAGE = Setting("ML_ASSETS_OPTUNA_STORAGE", None, str, "an optuna RDB storage URL")
MLFLOW_TRACKING_URI = Setting("MLFLOW_TRACKING_URI", None, str, "an MLflow tracking URI")
MLFLOW_UI_URL = Setting("ML_ASSETS_MLFLOW_UI_URL", None, _http_url, "an http:// or https:// URL")
EXECUTOR = Setting(
    "ML_ASSETS_EXECUTOR", "in_process", _choice("in_process", "celery", "k8s"), "in_process, celery or k8s"
)
CELERY_BROKER_URL = Setting("ML_ASSETS_CELERY_BROKER_URL", "redis://localhost:6379/0", _url, "a Celery broker URL")
CELERY_BACKEND_URL = Setting(
    "ML_ASSETS_CELERY_BACKEND_URL", "redis://localhost:6379/1", _url, "a Celery result backend URL"
)
OUTAGE_SECONDS = Setting("ML_ASSETS_OUTAGE_SECONDS", 3600, _whole_seconds, "whole seconds >= 0")
MLFLOW_EXPERIMENT = Setting("ML_ASSETS_MLFLOW_EXPERIMENT", "trip_duration", str, "an experiment name")

MIN_ROWS = Setting("ML_ASSETS_MIN_ROWS", _RULES.min_rows, _positive_int, "a whole number of rows >= 1")
MAX_DROPPED_SHARE = Setting("ML_ASSETS_MAX_DROPPED_SHARE", _RULES.max_dropped_share, _share, "a share from 0 to 1")
MIN_PICKUPS_IN_MONTH = Setting(
    "ML_ASSETS_MIN_PICKUPS_IN_MONTH", _RULES.min_pickups_in_month, _share, "a share from 0 to 1"
)
DRIFT_PSI = Setting("ML_ASSETS_DRIFT_PSI", _DRIFT.psi, _positive_float, "a number > 0")
DRIFT_KS = Setting("ML_ASSETS_DRIFT_KS", _DRIFT.ks, _share, "a share from 0 to 1")
DRIFT_TVD = Setting("ML_ASSETS_DRIFT_TVD", _DRIFT.tvd, _share, "a share from 0 to 1")

ALL = [value for value in dict(globals()).values() if isinstance(value, Setting)]


def validate_all() -> None:
    """Fail with every wrong variable at once, not only the first one a run happens to read."""
    problems = []
    for setting in ALL:
        try:
            setting.value()
        except SettingError as error:
            problems.append(str(error))
    if problems:
        raise SettingError("; ".join(problems))


validate_all()  # on import, i.e. when the code location loads: every wrong variable is named at once
