"""The whole asset graph, materialized in-process: synthetic data, real TLC files over HTTP, bad input."""

import hashlib
import os
import shutil

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey
from upath import UPath

from ml_assets import settings
from ml_assets.checks.model_gate import model_gate
from ml_assets.core.features import SPLIT, TEST
from ml_assets.records import latest_metadata
from ml_assets.resources.io_managers import ParquetIOManager
from ml_assets.runner.runs import materialize_month
from ml_assets_tests.support import FAST_CONFIG, TLC_DATA

INGESTION = ["raw_trips", "cleaned_trips"]
GRAPH = ["raw_trips", "cleaned_trips", "trip_features", "best_params", "trained_model"]


def materialized(instance, asset: str) -> set[str]:
    return set(instance.get_materialized_partitions(AssetKey(asset)))


def failure_message(result) -> str:
    return "\n".join(str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure)


def test_whole_graph_on_the_synthetic_source(instance, dagster_home, monkeypatch):
    monkeypatch.setenv("ML_ASSETS_SYNTHETIC_ROWS", "20000")
    mlflow_settings = ["MLFLOW_TRACKING_URI", settings.MLFLOW_HTTP_REQUEST_MAX_RETRIES.variable]
    before = {name: os.environ.get(name) for name in mlflow_settings}
    materialize_month(instance, "2021-01", INGESTION, run_config=FAST_CONFIG)
    result = materialize_month(instance, "2021-02", run_config=FAST_CONFIG)
    assert result.success
    # MLflow's process-wide settings, which the tracking resource set for the run, are as they were after it.
    assert {name: os.environ.get(name) for name in mlflow_settings} == before
    assert str(dagster_home) not in mlflow.get_tracking_uri()
    assert all(materialized(instance, asset) >= {"2021-02"} for asset in GRAPH)
    (gate,) = [check for check in result.get_asset_check_evaluations() if check.check_name == "model_gate"]
    published = {key: value.value for key, value in gate.metadata.items()}
    assert gate.passed and published["alias"] == "champion"
    assert latest_metadata(instance, "raw_trips", "2021-02")["source"] == "synthetic"
    cleaned = latest_metadata(instance, "cleaned_trips", "2021-02")
    assert cleaned["dropped_rows"] == 20_000 - cleaned["rows"] > 0
    model = latest_metadata(instance, "trained_model", "2021-02")
    assert model["rmse"] < model["baseline_rmse"]

    client = mlflow.MlflowClient(f"sqlite:///{dagster_home / 'ml_assets' / 'mlflow.db'}")
    run = client.get_run(model["mlflow_run_id"])
    assert run.info.run_name == "trained_model 2021-02" and run.info.status == "FINISHED"
    assert run.data.metrics["rmse"] == pytest.approx(model["rmse"], abs=1e-4)
    assert run.data.params["feature_set"] == "rich" and "max_depth" in run.data.params
    assert "encoder.json" in [artifact.path for artifact in client.list_artifacts(run.info.run_id)]
    version = client.get_model_version(published["model_name"], published["model_version"])
    assert version.run_id == run.info.run_id and version.aliases == ["champion"]
    mlflow.set_tracking_uri(client.tracking_uri)
    logged = mlflow.xgboost.load_model(model["mlflow_model_uri"])
    assert logged.num_boosted_rounds() > 0
    assert (dagster_home / "ml_assets" / "assets" / "trained_model" / "2021-02.ubj").exists()

    # The gate reads the test month's rows of trip_features only, as its input asks the IO manager.
    (asks,) = [put.metadata for put in model_gate.node_def.input_defs if put.name == "trip_features"]
    files = ParquetIOManager(root=str(dagster_home / "ml_assets" / "assets")).create_io_manager(None)
    path = UPath(dagster_home / "ml_assets" / "assets" / "trip_features" / "2021-02.parquet")
    whole, read = files.read(path, pd.DataFrame), files.read(path, pd.DataFrame, **asks)
    assert len(read) == (whole[SPLIT] == TEST).sum() > 0 and set(read[SPLIT]) == {TEST}
    assert read.attrs["feature_set"] == "rich"


def test_first_month_says_which_months_it_needs(instance, monkeypatch):
    monkeypatch.setenv("ML_ASSETS_SYNTHETIC_ROWS", "5000")
    result = materialize_month(instance, "2021-01", raise_on_error=False, run_config=FAST_CONFIG)
    assert not result.success
    assert "trip_features for 2021-01 needs at least one earlier month" in failure_message(result)
    assert materialized(instance, "cleaned_trips") == {"2021-01"}
    assert materialized(instance, "trained_model") == set()


def test_missing_window_month_names_it(instance, monkeypatch):
    monkeypatch.setenv("ML_ASSETS_SYNTHETIC_ROWS", "5000")
    result = materialize_month(instance, "2021-03", raise_on_error=False, run_config=FAST_CONFIG)
    message = failure_message(result)
    assert "cleaned_trips for 2021-01 has no stored value" in message, message


@pytest.mark.slow
def test_real_tlc_months_through_the_download_code(instance, monkeypatch, tlc_server):
    monkeypatch.setenv("ML_ASSETS_SOURCE", "tlc")
    monkeypatch.setenv("ML_ASSETS_TLC_URL", tlc_server.url)
    tlc_server.script = [503]  # a transient server error is retried
    materialize_month(instance, "2021-01", INGESTION, run_config=FAST_CONFIG)
    assert materialize_month(instance, "2021-02", run_config=FAST_CONFIG).success
    assert (tlc_server.count("HEAD"), tlc_server.count("GET")) == (3, 2)  # the 503, then one download a month

    raw = latest_metadata(instance, "raw_trips", "2021-01")
    source_file = TLC_DATA / "green_tripdata_2021-01.parquet"
    assert raw["sha256"] == hashlib.sha256(source_file.read_bytes()).hexdigest()
    assert raw["rows"] == 76_518 and raw["source"] == f"tlc {tlc_server.url}"
    assert latest_metadata(instance, "cleaned_trips", "2021-01")["rows"] == 73_906
    assert latest_metadata(instance, "cleaned_trips", "2021-02")["rows"] == 61_920
    model = latest_metadata(instance, "trained_model", "2021-02")
    assert model["baseline_rmse"] == pytest.approx(7.76, abs=0.02)
    assert model["rmse"] < 6.0

    missing = materialize_month(instance, "2021-04", INGESTION, raise_on_error=False, run_config=FAST_CONFIG)
    assert "month 2021-04 is not published yet" in failure_message(missing)
    assert (tlc_server.count("HEAD"), tlc_server.count("GET")) == (4, 2)  # a 404 is final: no retry, no download


def _write(table, path):
    pq.write_table(table, path)


BAD_FILES = {  # how to spoil the month's file, what the ingestion step's error must say
    "truncated": (lambda good, path: path.write_bytes(good.read_bytes()[:200_000]), "is not readable parquet"),
    "missing column": (
        lambda good, path: _write(pq.read_table(good).drop(["lpep_dropoff_datetime"]), path),
        "missing required column(s) dropoff_datetime",
    ),
    "empty": (lambda good, path: _write(pq.read_table(good).slice(0, 0), path), "the file has no trips"),
    # January's trips published as February's: raw_trips refuses them by the blocking rule.
    "shifted timestamps": (
        lambda good, path: shutil.copy(TLC_DATA / "green_tripdata_2021-01.parquet", path),
        "raw_trips: rule pickups_in_month failed",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_month_fails_clearly_and_loses_nothing(case, instance, monkeypatch, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    good = TLC_DATA / "green_tripdata_2021-02.parquet"
    shutil.copy(good, source / good.name)
    monkeypatch.setenv("ML_ASSETS_SOURCE", str(source))
    materialize_month(instance, "2021-02", INGESTION, run_config=FAST_CONFIG)
    assets = tmp_path / "dagster_home" / "ml_assets" / "assets"
    stored = {path: path.read_bytes() for path in assets.rglob("2021-02.parquet")}

    make_bad, message = BAD_FILES[case]
    make_bad(good, source / good.name)
    result = materialize_month(instance, "2021-02", INGESTION, raise_on_error=False, run_config=FAST_CONFIG)
    assert not result.success
    error = failure_message(result)
    assert message in error
    failed = [event.step_key for event in result.all_events if event.is_step_failure]
    assert failed == ["ingest_trips"]
    assert "2021-02" in error and str(source / good.name) in error
    # Nothing was built from the bad file: every asset keeps its earlier good value.
    assert {path: path.read_bytes() for path in assets.rglob("2021-02.parquet")} == stored
    for asset in INGESTION:
        assert len(instance.fetch_materializations(AssetKey(asset), limit=10).records) == 1
