"""Jobs over one month: ingestion alone (the sensor's runs), and retraining (the schedule's runs), and the tag
that queues training runs one at a time."""

from dagster import AssetSelection, define_asset_job

from ml_assets.keys import FEATURES, INGESTION, TRAINING

# XGBoost and optuna use every core: deploy/dagster.yaml's run queue lets one run with this tag run at a time.
TRAINING_TAG = ("ml_assets/stage", "training")

ingest_month_job = define_asset_job(
    "ingest_month",
    selection=AssetSelection.groups(INGESTION),
    description="raw_trips and cleaned_trips for one month; features and models follow by automation.",
)

retrain_month_job = define_asset_job(
    "retrain_month",
    selection=AssetSelection.groups(FEATURES, TRAINING),
    tags=dict([TRAINING_TAG]),  # every run of it, the schedule's, a backfill's or one from the launchpad
    description="trip_features, best_params and trained_model for one month whose training window is ingested.",
)
