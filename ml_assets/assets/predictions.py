"""trip_duration_predictions: a month scored by the current champion model of the MLflow registry."""

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Failure, asset

from ml_assets.automation import WINDOW_READY
from ml_assets.core.features import FEATURE_INPUTS, derive_features, transform
from ml_assets.core.schema import DURATION, PICKUP, ZONE_COLUMNS
from ml_assets.execution import in_group
from ml_assets.metadata import row_count
from ml_assets.outages import waits_out_outages
from ml_assets.partitions import monthly_partitions

# What a reader of the predictions needs beside them: which trip, and what really happened.
TRIP_COLUMNS = [PICKUP, *ZONE_COLUMNS, "trip_distance", DURATION]


@asset(
    partitions_def=monthly_partitions,
    **in_group("predictions"),
    kinds={"xgboost", "pandas"},
    ins={"cleaned_trips": AssetIn(metadata={"columns": list(dict.fromkeys([*FEATURE_INPUTS, *TRIP_COLUMNS]))})},
    deps=["trained_model"],
    required_resource_keys={"mlflow"},
    automation_condition=WINDOW_READY,
)
@waits_out_outages
def trip_duration_predictions(context: AssetExecutionContext, cleaned_trips: pd.DataFrame) -> pd.DataFrame:
    """Predicted duration of every trip of month M by the champion (after M's own model was judged)."""
    from ml_assets.core import tracking
    from ml_assets.core.training import predict, regression_metrics

    month = context.partition_key
    context.resources.mlflow.connect(f"trip_duration_predictions {month}")
    champion = tracking.load_champion()
    if champion is None:
        raise Failure(
            f"no `{tracking.CHAMPION}` model in the MLflow registry yet: materialize trained_model "
            f"for a month with an earlier month to train on first"
        )
    version, booster, encoder = champion
    predicted = predict(booster, transform(derive_features(cleaned_trips), encoder))
    scored = cleaned_trips[TRIP_COLUMNS].assign(predicted_duration=predicted, model_version=str(version.version))
    context.add_output_metadata(
        {
            "rows": len(scored),
            **row_count(len(scored)),
            "model_version": str(version.version),
            "mean_predicted_duration": round(float(scored["predicted_duration"].mean()), 3),
            "mean_actual_duration": round(float(scored[DURATION].mean()), 3),
            "rmse": round(regression_metrics(scored[DURATION].to_numpy(), predicted)["rmse"], 4),
        }
    )
    return scored
