"""Settings: every environment variable is validated when the code location loads, naming what is wrong."""

import os
import subprocess
import sys

import pytest

from ml_assets import settings
from ml_assets_tests.support import ROOT

BAD = {
    "ML_ASSETS_TRAINING_MONTHS": ("0", "a whole number of months >= 1"),
    "ML_ASSETS_RECENCY_WEIGHT": ("0", "a number > 0"),
    "ML_ASSETS_HOLDOUT_DAYS": ("0", "a whole number of days >= 1"),
    "ML_ASSETS_TUNING_TRIALS": ("abc", "a whole number of trials >= 1"),
    "ML_ASSETS_TLC_URL": ("ftp://x", "an http:// or https:// URL"),
    "ML_ASSETS_SOURCE": ("ftp://x", settings.SOURCE.allowed),  # loaded, then every sensor tick skipped
    "ML_ASSETS_START_MONTH": ("2021-13", "a month YYYY-MM"),
    "ML_ASSETS_MAX_DROPPED_SHARE": ("1.5", "a share from 0 to 1"),
    "ML_ASSETS_TAXI": ("blue", "green or yellow"),
    "ML_ASSETS_STORAGE_ROOT": ("nosuch://bucket/assets", settings.ALLOWED_LOCATION),  # a protocol fsspec does not know
    "ML_ASSETS_CACHE_DIR": ("s3:/bucket/cache", settings.ALLOWED_LOCATION),  # a folder to the eye, S3 to fsspec
    "ML_ASSETS_OPTUNA_STORAGE": ("notaurl", settings.OPTUNA_STORAGE.allowed),
    "ML_ASSETS_EXECUTOR": ("dask", "in_process, celery or k8s"),
    "ML_ASSETS_CELERY_BROKER_URL": ("localhost:6379", "a Celery broker URL"),
}
# Protocols fsspec knows but only reads: taken, they failed the first write at run time.
READ_ONLY = [
    "https://example.com/assets",
    "http://example.com/assets",
    "zip://assets::/srv/a.zip",
    "github://ml-assets/x",
]
READ_ONLY_STORES = {
    "ML_ASSETS_STORAGE_ROOT": (READ_ONLY[0], settings.ALLOWED_LOCATION),
    "ML_ASSETS_CACHE_DIR": (READ_ONLY[2], settings.ALLOWED_LOCATION),
}


@pytest.mark.parametrize("variable", BAD)
def test_a_bad_value_names_the_variable_the_value_and_what_is_allowed(variable, monkeypatch):
    raw, allowed = BAD[variable]
    monkeypatch.setenv(variable, raw)
    (setting,) = [s for s in settings.ALL if s.variable == variable]
    with pytest.raises(settings.SettingError) as error:
        setting.value()
    assert str(error.value) == f"{variable}={raw!r} is not allowed: expected {allowed}"


def _config_classes():
    from ml_assets.assets.features import FeatureConfig
    from ml_assets.assets.monitoring import PerformanceConfig
    from ml_assets.assets.training import TrainingConfig, TuningConfig
    from ml_assets.checks.blocking_rules import RulesConfig
    from ml_assets.checks.champion_decay import DecayConfig
    from ml_assets.checks.drift import DriftConfig
    from ml_assets.checks.model_gate import GateConfig

    return [
        FeatureConfig,
        TuningConfig,
        TrainingConfig,
        PerformanceConfig,
        RulesConfig,
        DriftConfig,
        DecayConfig,
        GateConfig,
    ]


# Run config a step refuses before it starts: a weight of 0 had left every training row's weight NaN, 0 rounds
# had failed inside XGBoost.
OUT_OF_BOUNDS = [
    ("FeatureConfig", "recency_weight", 0.0, "greater than 0"),
    ("FeatureConfig", "holdout_days", 0, "greater than or equal to 1"),
    ("TuningConfig", "n_trials", 0, "greater than or equal to 1"),
    ("TuningConfig", "timeout_seconds", 0.0, "greater than 0"),
    ("TuningConfig", "num_boost_round", 0, "greater than or equal to 1"),
    ("TuningConfig", "early_stopping_rounds", 0, "greater than or equal to 1"),
    ("TrainingConfig", "num_boost_round", 0, "greater than or equal to 1"),
    ("TrainingConfig", "early_stopping_rounds", 0, "greater than or equal to 1"),
    ("TrainingConfig", "timeout_seconds", -1.0, "greater than 0"),
    ("PerformanceConfig", "newest_versions", 0, "greater than or equal to 1"),
    ("RulesConfig", "max_dropped_share", 1.5, "less than or equal to 1"),
    ("RulesConfig", "min_rows", 0, "greater than or equal to 1"),
    ("DecayConfig", "decay_threshold", 0.0, "greater than 0"),
    ("GateConfig", "champion_tolerance", -0.1, "greater than or equal to 0"),
]


@pytest.mark.parametrize(("config", "field", "value", "allowed"), OUT_OF_BOUNDS)
def test_run_config_out_of_bounds_is_refused_naming_the_field(config, field, value, allowed):
    import pydantic

    (cls,) = [cls for cls in _config_classes() if cls.__name__ == config]
    with pytest.raises(pydantic.ValidationError, match=rf"{field}\n.*should be {allowed}"):
        cls(**{field: value})


@pytest.mark.process
@pytest.mark.parametrize("refused", [BAD, READ_ONLY_STORES], ids=["each variable", "read-only stores"])
def test_loading_the_code_location_reports_every_bad_variable_at_once(refused, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), **{name: raw for name, (raw, _) in refused.items()}}
    load = subprocess.run(
        [sys.executable, "-c", "import ml_assets.definitions"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert load.returncode != 0
    message = load.stderr.strip().splitlines()[-1]
    assert message.startswith("ml_assets.settings.SettingError: ")
    for name, (raw, allowed) in refused.items():
        assert f"{name}={raw!r} is not allowed: expected {allowed}" in message


def test_a_refused_value_shows_no_password(monkeypatch):
    monkeypatch.setenv("ML_ASSETS_STORAGE_ROOT", "nosuch://alice:PASSWORD@bucket/assets")
    with pytest.raises(settings.SettingError) as error:
        settings.STORAGE_ROOT.value()
    assert "'nosuch://alice:***@bucket/assets' is not allowed" in str(error.value)
    assert "PASSWORD" not in str(error.value)


# Each process (the daemon, the code server, a run) would resolve a relative path against its own working directory.
RELATIVE = [
    ("ML_ASSETS_STORAGE_ROOT", "data/assets"),
    ("ML_ASSETS_STORAGE_ROOT", "file://data/assets"),
    ("ML_ASSETS_CACHE_DIR", "~/downloads"),
    ("ML_ASSETS_OPTUNA_STORAGE", "sqlite:///optuna.db"),
    ("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
    ("ML_ASSETS_SOURCE", "data/incoming"),
    ("ML_ASSETS_SOURCE", "~/incoming"),
]


@pytest.mark.parametrize(("variable", "raw"), RELATIVE)
def test_a_relative_path_is_refused_saying_why(variable, raw, monkeypatch):
    monkeypatch.setenv(variable, raw)
    (setting,) = [s for s in settings.ALL if s.variable == variable]
    with pytest.raises(settings.SettingError) as error:
        setting.value()
    assert str(error.value).startswith(f"{variable}={raw!r} is not allowed: expected ")
    assert "absolute" in str(error.value) and "working directory" in str(error.value)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("ML_ASSETS_STORAGE_ROOT", "/srv/data/assets"),
        ("ML_ASSETS_STORAGE_ROOT", "file:///srv/data/assets"),
        ("ML_ASSETS_CACHE_DIR", "s3://bucket/downloads"),
        ("ML_ASSETS_OPTUNA_STORAGE", "sqlite:////srv/optuna.db"),
        ("MLFLOW_TRACKING_URI", "sqlite:////srv/mlflow.db"),
        ("MLFLOW_TRACKING_URI", "databricks"),
        ("ML_ASSETS_SOURCE", "/srv/incoming"),
    ],
)
def test_an_absolute_path_or_a_url_is_taken_as_it_is(variable, raw, monkeypatch):
    monkeypatch.setenv(variable, raw)
    (setting,) = [s for s in settings.ALL if s.variable == variable]
    assert setting.value() == raw


@pytest.mark.parametrize("variable", ["ML_ASSETS_STORAGE_ROOT", "ML_ASSETS_CACHE_DIR"])
def test_a_password_in_a_url_whose_store_ignores_it_is_refused(variable, monkeypatch):
    """gcsfs takes a user and password and ignores them, so the values would go wherever other credentials
    allow; only s3fs logs in with them (test_object_storage.py)."""
    from ml_assets.core.storage import CredentialsNotTaken, location

    monkeypatch.setenv(variable, "gs://KEY:SECRET@bucket/prefix")
    (setting,) = [s for s in settings.ALL if s.variable == variable]
    with pytest.raises(settings.SettingError) as error:
        setting.value()
    assert (
        str(error.value)
        == f"{variable}='gs://KEY:***@bucket/prefix' is not allowed: expected {settings.ALLOWED_LOCATION}"
    )
    with pytest.raises(
        CredentialsNotTaken, match=r"^gs:// takes no user or password in its URL \(gs://bucket/prefix\)"
    ):
        location("gs://KEY:SECRET@bucket/prefix")
    monkeypatch.setenv(variable, "s3://KEY:SECRET@bucket/prefix")
    assert setting.value() == "s3://KEY:SECRET@bucket/prefix"


@pytest.mark.parametrize("raw", READ_ONLY)
@pytest.mark.parametrize("variable", ["ML_ASSETS_STORAGE_ROOT", "ML_ASSETS_CACHE_DIR"])
def test_a_store_fsspec_only_reads_is_refused_naming_the_writable_ones(variable, raw, monkeypatch):
    monkeypatch.setenv(variable, raw)
    (setting,) = [s for s in settings.ALL if s.variable == variable]
    with pytest.raises(settings.SettingError) as error:
        setting.value()
    assert str(error.value) == f"{variable}={raw!r} is not allowed: expected {settings.ALLOWED_LOCATION}"
    assert "one of s3://, s3a://, gs://, gcs://, file://, local:// (" in settings.ALLOWED_LOCATION


def test_a_source_that_is_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "green_tripdata_2021-01.parquet").touch()
    monkeypatch.setenv("ML_ASSETS_SOURCE", str(tmp_path / "green_tripdata_2021-01.parquet"))
    with pytest.raises(settings.SettingError, match="ML_ASSETS_SOURCE=.* is not allowed"):
        settings.validate_all()


def test_unset_or_empty_means_the_default(monkeypatch):
    monkeypatch.setenv("ML_ASSETS_TRAINING_MONTHS", "")
    monkeypatch.delenv("ML_ASSETS_TUNING_TRIALS", raising=False)
    assert settings.TRAINING_MONTHS.value() == 5 and settings.TUNING_TRIALS.value() == 25
    monkeypatch.setenv("ML_ASSETS_TUNING_TRIALS", "7")
    assert settings.TUNING_TRIALS.value() == 7


@pytest.mark.parametrize("raw", ["0", "false", "False", "FALSE", "no", "No", "off"])
def test_a_flag_is_off_in_any_letter_case(raw, monkeypatch):
    """The configuration page shows VERBOSE's default as `False`: set so, it had turned the log on."""
    monkeypatch.setenv("VERBOSE", raw)
    assert settings.VERBOSE.value() is False


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "2", "debug"])
def test_a_flag_is_on_for_any_other_value(raw, monkeypatch):
    """As the configuration page says: any value but the few that mean off turns it on."""
    monkeypatch.setenv("VERBOSE", raw)
    assert settings.VERBOSE.value() is True


def test_an_optuna_storage_whose_driver_is_not_installed_is_refused(monkeypatch):
    """Its dialect is SQLAlchemy's own, so the URL had been taken and the first best_params failed on the import."""
    monkeypatch.setenv("ML_ASSETS_OPTUNA_STORAGE", "oracle://alice:PASSWORD@db/optuna")
    with pytest.raises(settings.SettingError) as error:
        settings.OPTUNA_STORAGE.value()
    assert str(error.value) == (
        "ML_ASSETS_OPTUNA_STORAGE='oracle://alice:***@db/optuna' is not allowed: expected "
        + settings.OPTUNA_STORAGE.allowed
    )


def test_a_month_with_a_trailing_newline_is_refused(monkeypatch):
    """As a value read from a file keeps it (a Kubernetes secret or config map made `--from-file`): `$` matched
    before the newline, so the month was taken and the code location died in strptime, naming no variable."""
    monkeypatch.setenv("ML_ASSETS_START_MONTH", "2021-01\n")
    with pytest.raises(settings.SettingError) as error:
        settings.START_MONTH.value()
    assert str(error.value) == "ML_ASSETS_START_MONTH='2021-01\\n' is not allowed: expected a month YYYY-MM"


@pytest.mark.parametrize("variable", ["ML_ASSETS_TUNING_TIMEOUT_SECONDS", "ML_ASSETS_RECENCY_WEIGHT"])
def test_an_infinite_number_is_refused(variable, monkeypatch):
    """`inf` is > 0 to float(): it was taken, and best_params failed sizing its sample (OverflowError)."""
    monkeypatch.setenv(variable, "inf")
    (setting,) = [s for s in settings.ALL if s.variable == variable]
    with pytest.raises(settings.SettingError, match=f"^{variable}='inf' is not allowed: expected "):
        setting.value()


def test_an_infinite_run_config_number_is_refused():
    from pydantic import ValidationError

    from ml_assets.assets.training import TuningConfig

    with pytest.raises(ValidationError, match="timeout_seconds"):
        TuningConfig(timeout_seconds=float("inf"))


def test_the_configuration_page_lists_every_setting_as_declared():
    """docs/configuration.md's table is `make docs`' output: a setting added or changed without it fails here."""
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert settings.with_table(page) == page
    assert all(f"`{setting.variable}`" in page for setting in settings.ALL)


def test_the_run_config_table_names_ops_the_launchpad_knows():
    """Dagster accepts config under an op name no job has, and ignores it: a misnamed op in the docs fails nowhere
    else (`cleaned_trips_drift` for `cleaned_trips_drift_vs_previous_month`)."""
    from ml_assets.definitions import defs

    page = (ROOT / "docs" / "configuration.md").read_text()
    table = page[page.index("## Run config") :].split("\n\n")[2]
    named = {line.split("`")[1] for line in table.splitlines()[2:]}
    ops = {node.name for node in defs.resolve_implicit_global_asset_job_def().graph.node_defs}
    assert named and named <= ops, named - ops
