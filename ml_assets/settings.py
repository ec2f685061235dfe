"""Every environment setting of ml_assets: its variable, default, allowed values and meaning, declared once.

Each is validated when the code location loads, so a wrong value stops `dagster dev`, `dg check defs`
or `make run` at once, naming the variable, its value and what is allowed. They are read two ways,
by when they matter (docs/configuration.md):
- `value()` at import, only for what shapes the definitions: partitions, intervals, the executor,
  the launchpad's defaults;
- `resource_value()` for everything a run uses: resources get an `EnvVar`, resolved when the run
  starts, so the UI shows where a value comes from and no credential is copied into run config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import EnvVar

from ml_assets.core import features, model, tuning
from ml_assets.core.credentials import mask
from ml_assets.core.drift import DriftThresholds
from ml_assets.core.months import check_month
from ml_assets.core.performance import DecayThresholds
from ml_assets.core.rules import RuleThresholds
from ml_assets.core.storage import WRITABLE_PROTOCOLS, location


@contextlib.contextmanager
def restoring_environ(names: Iterable[str]) -> Iterator[None]:
    """The variables `names` of os.environ put back, when the block ends, as they were when it began: for what a
    run's resource or a started stack sets process-wide."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
    if not 0 < value < math.inf:  # inf is no number of seconds or weight: int(inf) raises, inf**k is no weight
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


_url_scheme = re.compile(r"^[a-z][a-z0-9+.-]*://")


def _url(raw: str) -> str:
    if not _url_scheme.match(raw):
        raise ValueError
    return raw


def _flag(raw: str) -> bool:
    return raw.strip().lower() not in ("0", "false", "no", "off")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError
        return raw

    return parse


# Why a local path must be absolute: the daemon, the code server and a run may each start in another folder.
_ABSOLUTE = "by its absolute path (each process would resolve a relative one against its own working directory)"


def _absolute(raw: str) -> str:
    """`raw`, a local path, unless it is relative (`~/x` too: it is not expanded, and a process's home may differ)."""
    if not Path(raw).is_absolute():
        raise ValueError
    return raw


def _location(raw: str) -> str:
    """An absolute folder, or the URL of a store values can be written to, whose package is installed; not
    `s3:/bucket`, which fsspec would read as S3 while it looks like a folder, nor `https://` (fsspec only reads it)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:/(?!/)", raw):
        raise ValueError
    protocol, _, rest = raw.partition("://")
    if not rest:
        return _absolute(raw)
    if protocol not in WRITABLE_PROTOCOLS:
        raise ValueError
    import fsspec

    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as error:  # e.g. gs:// without gcsfs
        raise ValueError from error
    if protocol in ("file", "local") and not rest.startswith("/"):  # file://data is a folder under the cwd
        raise ValueError
    location(raw)  # a user and password only where the store's client takes them
    return raw


def _absolute_sqlite(raw: str) -> str:
    """`raw`, unless it is the URL of a sqlite file by a relative path (`sqlite:///optuna.db`)."""
    if re.match(r"^sqlite(\+\w+)?://", raw):
        from sqlalchemy.engine import make_url

        database = make_url(raw).database or ":memory:"
        if database != ":memory:" and not Path(database.removeprefix("file:")).is_absolute():
            raise ValueError
    return raw


def _database_url(raw: str) -> str:
    """A SQLAlchemy URL whose driver (DBAPI) is installed (optuna's storages are SQLAlchemy's), a sqlite file by its
    absolute path."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(raw).get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError, ImportError) as error:
        raise ValueError from error
    return _absolute_sqlite(raw)


def _source(raw: str) -> str:
    """synthetic, tlc, or an absolute folder: a URL is refused (TLC's own is ML_ASSETS_TLC_URL), and so is a file."""
    if raw in ("synthetic", "tlc"):
        return raw
    folder = Path(_absolute(raw))
    if _url_scheme.match(raw) or (folder.exists() and not folder.is_dir()):
        raise ValueError
    return str(folder)


# What each parser allows, as pydantic's constraints: a run config field that a setting defaults allows the same.
_BOUNDS = {
    _positive_int: {"ge": 1},
    _whole_seconds: {"ge": 0},
    _positive_float: {"gt": 0, "allow_inf_nan": False},
    _share: {"ge": 0, "le": 1},
}


@dataclass(frozen=True)
class Setting:
    """One environment variable: `default` when unset or empty, else `parse(raw)`."""

    variable: str
    default: Any
    parse: Callable[[str], Any]
    allowed: str
    description: str
    shown_default: str | None = None  # for the docs, where the default is derived (None: `default`)

    def raw(self) -> str | None:
        return os.environ.get(self.variable) or None

    def value(self):
        raw = self.raw()
        if raw is None:
            return self.default
        try:
            return self.parse(raw)
        except (TypeError, ValueError):
            raise SettingError(f"{self.variable}={mask(raw)!r} is not allowed: expected {self.allowed}") from None

    def field(self, description: str | None = None) -> Any:
        """A run config field (pydantic's `Field`) defaulting to this setting and allowing what its variable
        allows; a value out of bounds fails the step before it does anything, naming the field."""
        from pydantic import Field

        return Field(default=self.value(), description=description or self.description, **_BOUNDS.get(self.parse, {}))

    def resource_value(self, default: Any = None, old_style: bool = False):
        """The setting as a resource field: an `EnvVar` when set (validated now, resolved when a run starts),
        else `default` or the setting's own. `old_style` resources (`config_schema`, e.g. dagster-mlflow's)
        take `{"env": VARIABLE}` instead."""
        if self.raw() is None:
            return self.default if default is None else default
        self.value()
        if old_style:
            return {"env": self.variable}
        return EnvVar.int(self.variable) if isinstance(self.default, int) else EnvVar(self.variable)


MISSING_FOLDER = "no such folder (yet): new_month_sensor skips every tick until it appears (a volume not mounted yet?)"


def state_dir() -> Path:
    """Where this project keeps its files when nothing else is configured: beside Dagster's own."""
    return Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").resolve() / "ml_assets"


ALLOWED_LOCATION = (
    f"a folder {_ABSOLUTE}, or the URL of a writable store whose package is installed, one of "
    + ", ".join(f"{protocol}://" for protocol in WRITABLE_PROTOCOLS)
    + " (s3://bucket/prefix, gs://… with gcsfs, file:///…); a KEY:SECRET@ in s3:// URLs only"
)
_KINDS = {  # a threshold's kind (core.rules.threshold) -> how its variable is parsed, and what it allows
    "count": (_positive_int, "a whole number >= 1"),
    "share": (_share, "a share from 0 to 1"),
    "positive": (_positive_float, "a number > 0"),
}


def _thresholds(thresholds: type, prefix: str) -> dict[str, Setting]:
    """A setting per field of a thresholds dataclass, e.g. `min_rows` -> ML_ASSETS_MIN_ROWS."""
    settings = {}
    for field in dataclasses.fields(thresholds):
        parse, allowed = _KINDS[field.metadata["kind"]]
        variable = f"{prefix}{field.name.upper()}"
        settings[field.name] = Setting(variable, field.default, parse, allowed, field.metadata["description"])
    return settings


START_MONTH = Setting("ML_ASSETS_START_MONTH", "2021-01", check_month, "a month YYYY-MM", "first monthly partition")
TRAINING_MONTHS = Setting(
    "ML_ASSETS_TRAINING_MONTHS",
    5,
    _positive_int,
    "a whole number of months >= 1",
    "months before M in M's training window (docs/model.md: how the default was chosen)",
)
RECENCY_WEIGHT = Setting(
    "ML_ASSETS_RECENCY_WEIGHT",
    features.RECENCY_WEIGHT,
    _positive_float,
    "a number > 0",
    "default weight of a training row per month back (`r`: the month before M weighs 1, the one before r, then "
    "r², …); `1.0` weighs every month of the window alike",
)
HOLDOUT_DAYS = Setting(
    "ML_ASSETS_HOLDOUT_DAYS",
    features.HOLDOUT_DAYS,
    _positive_int,
    "a whole number of days >= 1",
    "default holdout of trip_features: the newest this many days of the training window, for early stopping and tuning",
)
SENSOR_INTERVAL_SECONDS = Setting(
    "ML_ASSETS_SENSOR_INTERVAL_SECONDS",
    300,
    _positive_int,
    "whole seconds >= 1",
    "minimum time between new_month_sensor's ticks",
)
AUTOMATION_INTERVAL_SECONDS = Setting(
    "ML_ASSETS_AUTOMATION_INTERVAL_SECONDS",
    30,
    _positive_int,
    "whole seconds >= 1",
    "minimum time between training_automation_sensor's evaluations",
)
SENSOR_MAX_MONTHS = Setting(
    "ML_ASSETS_SENSOR_MAX_MONTHS", 3, _positive_int, "a whole number >= 1", "months new_month_sensor requests per tick"
)
TUNING_TRIALS = Setting(
    "ML_ASSETS_TUNING_TRIALS",
    25,
    _positive_int,
    "a whole number of trials >= 1",
    "default optuna trial budget of best_params",
)
TUNING_TIMEOUT_SECONDS = Setting(
    "ML_ASSETS_TUNING_TIMEOUT_SECONDS",
    60.0,
    _positive_float,
    "seconds > 0",
    "default time budget of best_params, counted from the step's start; it also ends the running trial and sizes "
    "the sample the study tunes on",
)
TUNING_ROUNDS = Setting(
    "ML_ASSETS_TUNING_ROUNDS",
    tuning.MAX_ROUNDS,
    _positive_int,
    "a whole number of rounds >= 1",
    "default most boosting rounds of each of best_params' trials (early stopping usually ends a trial sooner)",
)
TRAINING_ROUNDS = Setting(
    "ML_ASSETS_TRAINING_ROUNDS",
    model.MAX_ROUNDS,
    _positive_int,
    "a whole number of rounds >= 1",
    "default most boosting rounds of trained_model (early stopping usually ends it sooner)",
)
PARALLEL_TRAINING_STEPS = Setting(
    "ML_ASSETS_PARALLEL_TRAINING_STEPS",
    1,
    _positive_int,
    "a whole number >= 1 (training steps at once per machine)",
    "training steps that run at once on one machine: XGBoost gets the process's cores (its CPU affinity and a "
    "container's CPU quota) divided by this",
)

SOURCE = Setting(
    "ML_ASSETS_SOURCE",
    "synthetic",
    _source,
    f"synthetic, tlc, or a folder of TLC files {_ABSOLUTE} (not a URL, not a file)",
    "`synthetic`, `tlc`, or an absolute folder with `green_tripdata_YYYY-MM.parquet` files (`yellow_tripdata_…` "
    "for yellow taxis)",
)
TAXI = Setting(
    "ML_ASSETS_TAXI",
    "green",
    _choice("green", "yellow"),
    "green or yellow",
    "TLC taxi type. A home holds one: raw_trips records it, and a month of another type is refused. Its models go to "
    "a registered model of their own (`trip_duration_xgboost` for green, `trip_duration_xgboost_yellow` for yellow, "
    "each version and run tagged `taxi`), so homes of both types may share one MLflow tracking server",
)
TLC_URL = Setting(
    "ML_ASSETS_TLC_URL",
    "https://d37ci6vzurychx.cloudfront.net/trip-data",
    _http_url,
    "an http:// or https:// URL",
    "base URL of TLC's trip files",
)
SYNTHETIC_ROWS = Setting(
    "ML_ASSETS_SYNTHETIC_ROWS", 60_000, _positive_int, "a whole number of trips >= 1", "trips per synthetic month"
)
SYNTHETIC_PUBLISHED_THROUGH = Setting(
    "ML_ASSETS_SYNTHETIC_PUBLISHED_THROUGH",
    None,
    check_month,
    "a month YYYY-MM",
    "synthetic months after this are not published yet (the sensor's live demo)",
    "start month + 5",
)
CACHE_DIR = Setting(
    "ML_ASSETS_CACHE_DIR",
    None,
    _location,
    ALLOWED_LOCATION,
    "downloaded and generated month files: an absolute folder or an fsspec URL (`s3://bucket/prefix`)",
    "`$DAGSTER_HOME/ml_assets/downloads`",
)
STORAGE_ROOT = Setting(
    "ML_ASSETS_STORAGE_ROOT",
    None,
    _location,
    ALLOWED_LOCATION,
    "asset values (parquet, JSON, XGBoost UBJSON): an absolute folder or an fsspec URL",
    "`$DAGSTER_HOME/ml_assets/assets`",
)
OPTUNA_STORAGE = Setting(
    "ML_ASSETS_OPTUNA_STORAGE",
    None,
    _database_url,
    "an optuna RDB storage URL (a SQLAlchemy URL whose driver is installed, e.g. sqlite:////path/optuna.db: a "
    f"sqlite file {_ABSOLUTE})",
    "optuna RDB storage URL",
    "`sqlite:///$DAGSTER_HOME/ml_assets/optuna.db`",
)
MLFLOW_TRACKING_URI = Setting(
    "MLFLOW_TRACKING_URI",
    None,
    _absolute_sqlite,
    f"an MLflow tracking URI (a sqlite file {_ABSOLUTE}, e.g. sqlite:////path/mlflow.db)",
    "MLflow tracking (a sqlite store keeps its artifacts beside it)",
    "`sqlite:///$DAGSTER_HOME/ml_assets/mlflow.db`",
)
MLFLOW_EXPERIMENT = Setting(
    "ML_ASSETS_MLFLOW_EXPERIMENT", "trip_duration", str, "an experiment name", "MLflow experiment"
)
MLFLOW_UI_URL = Setting(
    "ML_ASSETS_MLFLOW_UI_URL",
    None,
    _http_url,
    "an http:// or https:// URL",
    "MLflow UI the `mlflow_run` and `registered_model` links point at",
    "an `http(s)` tracking URI itself, else `http://127.0.0.1:5000`",
)
EXECUTOR = Setting(
    "ML_ASSETS_EXECUTOR",
    "in_process",
    _choice("in_process", "celery", "k8s"),
    "in_process, celery or k8s",
    "where the steps of runs launched by `dagster dev` or a deployment execute: the run's own process, Celery "
    "workers, or a Kubernetes Job per step (docs/deployment.md); `make run` always runs in process",
)
CELERY_BROKER_URL = Setting(
    "ML_ASSETS_CELERY_BROKER_URL",
    "redis://localhost:6379/0",
    _url,
    "a Celery broker URL",
    "Celery broker between runs and workers (`celery` only)",
)
CELERY_BACKEND_URL = Setting(
    "ML_ASSETS_CELERY_BACKEND_URL",
    "redis://localhost:6379/1",
    _url,
    "a Celery result backend URL",
    "Celery result backend (`celery` only)",
)
# MLflow's own variables, with this project's defaults: fail within seconds, not after MLflow's 7 retries
# with backoff (about four minutes). MLflow reads them only from the environment (resources.tracking).
MLFLOW_HTTP_REQUEST_MAX_RETRIES = Setting(
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES", 1, _positive_int, "a whole number >= 1", "MLflow's retries of a failed request"
)
MLFLOW_HTTP_REQUEST_TIMEOUT = Setting(
    "MLFLOW_HTTP_REQUEST_TIMEOUT", 10, _positive_int, "whole seconds >= 1", "MLflow's timeout of one request"
)
OUTAGE_SECONDS = Setting(
    "ML_ASSETS_OUTAGE_SECONDS",
    3600,
    _whole_seconds,
    "whole seconds >= 0",
    "how long best_params, trained_model, model_gate, predictions and model_performance wait out an MLflow server "
    "or database they cannot reach (retried after 5 s, doubling up to 5 min apart) before they fail; `0`: fail at "
    "once",
)
VERBOSE = Setting(
    "VERBOSE",
    False,
    _flag,
    "any value; 0, false, no or off (in any letter case) for off",
    "`make run` prints Dagster's whole event log",
)

RETRAIN = Setting(
    "ML_ASSETS_RETRAIN",
    "monthly",
    _choice("monthly", "on_decay"),
    "monthly or on_decay",
    "when automation trains a month's model: `monthly` every month, `on_decay` only when the champion decayed on "
    "it, is too old, or there is none (docs/models-over-time.md); a backfill or a launch by hand always trains",
)
PERFORMANCE_VERSIONS = Setting(
    "ML_ASSETS_PERFORMANCE_VERSIONS",
    None,
    _positive_int,
    "a whole number >= 1",
    "model_performance scores the newest this many versions tested before each month, and the champion",
    "all",
)
RULES = _thresholds(RuleThresholds, "ML_ASSETS_")
DRIFT = _thresholds(DriftThresholds, "ML_ASSETS_DRIFT_")
DECAY = _thresholds(DecayThresholds, "ML_ASSETS_")

ALL = [value for value in dict(globals()).values() if isinstance(value, Setting)] + [
    *RULES.values(),
    *DRIFT.values(),
    *DECAY.values(),
]


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
    source = SOURCE.value()
    if source not in ("synthetic", "tlc") and not Path(source).is_dir():
        # Accepted: a volume may be mounted after the code location loads (docs/checks-and-faults.md).
        warnings.warn(f"{SOURCE.variable}={source!r}: {MISSING_FOLDER}", stacklevel=2)


TABLE_BEGIN, TABLE_END = "<!-- settings-table:begin -->\n", "<!-- settings-table:end -->"


def markdown_table() -> str:
    """The variables as docs/configuration.md shows them (`make docs` writes it; a test keeps them the same)."""
    rows = ["| variable | default | what it does |", "|---|---|---|"]
    for setting in ALL:
        default = setting.shown_default or f"`{setting.default}`"
        rows.append(f"| `{setting.variable}` | {default} | {setting.description} |")
    return "\n".join(rows) + "\n"


def with_table(page: str) -> str:
    """`page` with its settings-table block replaced by the current table."""
    before, _, rest = page.partition(TABLE_BEGIN)
    _, _, after = rest.partition(TABLE_END)
    return before + TABLE_BEGIN + markdown_table() + TABLE_END + after


validate_all()  # on import, i.e. when the code location loads: every wrong variable is named at once

if __name__ == "__main__":  # `python -m ml_assets.settings PAGE` writes the table into PAGE
    page = Path(sys.argv[1])
    page.write_text(with_table(page.read_text()))
