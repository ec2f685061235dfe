"""trip_duration_predictions: a month scored by the current champion model of the MLflow registry."""

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Failure, asset

from ml_assets.automation.conditions import PREDICTIONS_READY
from ml_assets.code_versions import code_version
from ml_assets.core import features, model, pair_stats, zones
from ml_assets.core.features import FEATURE_INPUTS, derive_features, transform
from ml_assets.core.schema import DURATION, PICKUP, ZONE_COLUMNS
from ml_assets.deploy.executor import group_and_queue
from ml_assets.keys import CHAMPION_POOL, CLEANED_TRIPS, PREDICTION, TRAINED_MODEL
from ml_assets.outages import waits_out_outages
from ml_assets.partitions import month_of, monthly_partitions
from ml_assets.ui_metadata import row_count_entry

# What a reader of the predictions needs beside them: which trip, and what really happened.
TRIP_COLUMNS = [PICKUP, *ZONE_COLUMNS, "trip_distance", DURATION]


@asset(
    partitions_def=monthly_partitions,
    **group_and_queue(PREDICTION),
    kinds={"xgboost", "pandas"},
    ins={
        "cleaned_trips": AssetIn(
            CLEANED_TRIPS, metadata={"columns": list(dict.fromkeys([*FEATURE_INPUTS, *TRIP_COLUMNS]))}
        )
    },
    deps=[TRAINED_MODEL],
    required_resource_keys={"mlflow"},
    automation_condition=PREDICTIONS_READY,
    code_version=code_version(features, pair_stats, zones, model),
    pool=CHAMPION_POOL,  # may put back an unrecorded champion before serving it
)
@waits_out_outages
def trip_duration_predictions(context: AssetExecutionContext, cleaned_trips: pd.DataFrame) -> pd.DataFrame:
    """Predicted duration of every trip of month M by the champion (after M's own model was judged)."""
    from ml_assets.core import tracking
    from ml_assets.core.training import regression_metrics

    month = month_of(context)
    mlflow, what = context.resources.mlflow, f"trip_duration_predictions {month}"
    mlflow.connect(what, in_champion_pool=True)
    with mlflow.champion_must_load(what):
        champion = tracking.load_champion(mlflow.taxi)
    if champion is None:
        raise Failure(f"{what}: {tracking.no_champion(mlflow.taxi)}")
    version, champion_model, encoder = champion
    # A month rebuilt after a newer champion came may be one it trained on: its RMSE there is no test score.
    trained_on_month = tracking.trained_on(version, month)
    if trained_on_month:
        context.log.warning(
            f"trip_duration_predictions {month}: the champion, version {version.version}, was trained on {month}, "
            "so its RMSE here is not a test score"
        )
    derived = derive_features(cleaned_trips)
    try:
        predicted = model.predict(champion_model, transform(derived, encoder))
    except model.CANNOT_SCORE as error:
        raise Failure(
            f"{what}: the champion, version {version.version}, cannot score {month}'s trips "
            f"({type(error).__name__}: {error}): it is no model of this project's features (aliased by hand?); move "
            "the alias to a version of this project's models"
        ) from None
    scored = cleaned_trips[TRIP_COLUMNS].assign(predicted_duration=predicted, model_version=str(version.version))
    context.add_output_metadata(
        {
            "rows": len(scored),
            **row_count_entry(len(scored)),
            "model_name": mlflow.registered_model,
            "model_version": str(version.version),
            "mean_predicted_duration": round(float(scored["predicted_duration"].mean()), 3),
            "mean_actual_duration": round(float(scored[DURATION].mean()), 3),
            "rmse": round(regression_metrics(scored[DURATION].to_numpy(), predicted)["rmse"], 4),
            "champion_trained_on_month": trained_on_month,
        }
    )
    return scored
