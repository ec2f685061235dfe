"""Jobs over one month: ingestion alone (the sensor's runs), and retraining (the schedule's runs)."""

from dagster import AssetSelection, define_asset_job

from ml_assets.keys import FEATURES, INGESTION, TRAINING

ingest_month_job = define_asset_job(
    "ingest_month",
    selection=AssetSelection.groups(INGESTION),
    description="raw_trips and cleaned_trips for one month; features and models follow by automation.",
)

retrain_month_job = define_asset_job(
    "retrain_month",
    selection=AssetSelection.groups(FEATURES, TRAINING),
    description="trip_features, best_params and trained_model for one month whose training window is ingested.",
)
