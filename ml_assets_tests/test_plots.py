"""Plots and links in the metadata: every plot is a small PNG inline, and a failing plot fails nothing."""

import base64
import io
import re

import mlflow
import pytest
from PIL import Image

from ml_assets.core import plots
from ml_assets.core.plots import MAX_PNG_BYTES
from ml_assets.records import latest_metadata
from ml_assets.runner.runs import materialize_month
from ml_assets.ui_metadata import DEFAULT_MLFLOW_UI_URL, mlflow_ui_url
from ml_assets_tests.support import FAST_CONFIG, ROUNDS

INGESTION = ["raw_trips", "cleaned_trips"]
DATA_URI = re.compile(r"!\[(\w+)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")
PLOTS = {
    "cleaned_trips": ["plot_duration"],
    "best_params": ["plot_optimization_history", "plot_param_importances"],
    "trained_model": ["plot_predicted_vs_actual", "plot_residuals", "plot_feature_importance", "plot_rmse"],
}
# Enough trials for parameter importances: MedianPruner prunes none of the first five.
CONFIG = {
    "ops": {
        **FAST_CONFIG["ops"],
        "best_params": {"config": {**ROUNDS, "n_trials": plots.MIN_TRIALS_FOR_IMPORTANCE, "timeout_seconds": 120}},
    }
}


def decoded_png(markdown: str) -> Image.Image:
    match = DATA_URI.fullmatch(markdown)
    assert match, markdown[:200]
    png = base64.b64decode(match.group(2))
    assert len(png) <= MAX_PNG_BYTES
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width > 100 and image.height > 100
    return image


def two_months(instance, monkeypatch, run_config):
    monkeypatch.setenv("ML_ASSETS_SYNTHETIC_ROWS", "5000")
    materialize_month(instance, "2021-01", INGESTION)
    return materialize_month(instance, "2021-02", run_config=run_config)


@pytest.mark.slow
def test_every_plot_is_a_small_png_in_the_metadata_and_in_mlflow(instance, dagster_home, monkeypatch):
    result = two_months(instance, monkeypatch, CONFIG)
    assert result.success
    for asset, names in PLOTS.items():
        metadata = latest_metadata(instance, asset, "2021-02")
        for name in names:
            decoded_png(metadata[name])
    drift = [check for check in result.get_asset_check_evaluations() if check.check_name == "drift_vs_previous_month"]
    decoded_png(drift[0].metadata["plot_drift"].value)

    model = latest_metadata(instance, "trained_model", "2021-02")
    assert model["rmse"] == round(model["rmse"], 4)
    assert model["mlflow_run"] == f"{DEFAULT_MLFLOW_UI_URL}/#/experiments/1/runs/{model['mlflow_run_id']}"
    (gate,) = [check for check in result.get_asset_check_evaluations() if check.check_name == "model_gate"]
    version = gate.metadata["model_version"].value
    assert gate.metadata["registered_model"].value.endswith(f"/#/models/trip_duration_xgboost/versions/{version}")
    client = mlflow.MlflowClient(f"sqlite:///{dagster_home / 'ml_assets' / 'mlflow.db'}")
    logged = {artifact.path for artifact in client.list_artifacts(model["mlflow_run_id"], "plots")}
    assert logged == {f"plots/{name.removeprefix('plot_')}.png" for name in PLOTS["trained_model"]}

    cleaned = latest_metadata(instance, "cleaned_trips", "2021-02")
    assert cleaned["dagster/row_count"] == cleaned["rows"]
    assert "duration" in [column.name for column in cleaned["dagster/column_schema"].columns]
    assert len(cleaned["preview"].splitlines()) == 2 + 5  # header, separator, five trips
    for asset in ("raw_trips", "trip_features", "trip_duration_predictions"):
        assert latest_metadata(instance, asset, "2021-02")["dagster/row_count"] > 0


@pytest.mark.slow
def test_a_failing_plot_leaves_a_reason_and_the_model(instance, monkeypatch):
    def broken(actual, predicted):
        raise RuntimeError("the plotting library broke")

    monkeypatch.setattr(plots, "residual_histogram", broken)
    assert two_months(instance, monkeypatch, FAST_CONFIG).success
    model = latest_metadata(instance, "trained_model", "2021-02")
    assert model["plot_residuals"] == "No plot: plotting failed: RuntimeError: the plotting library broke"
    decoded_png(model["plot_predicted_vs_actual"])
    best = latest_metadata(instance, "best_params", "2021-02")
    assert best["plot_param_importances"].startswith("No plot: parameter importances need at least 5 finished trials")


@pytest.mark.parametrize(
    "configured, tracking_uri, expected",
    [
        ("http://mlflow.example:8080/", "sqlite:///x.db", "http://mlflow.example:8080"),
        (None, "https://tracking.example", "https://tracking.example"),
        (None, "sqlite:///x.db", DEFAULT_MLFLOW_UI_URL),
    ],
)
def test_mlflow_ui_url(configured, tracking_uri, expected):
    assert mlflow_ui_url(configured, tracking_uri) == expected
