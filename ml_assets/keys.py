"""The graph's names, each written once: asset keys, and the groups steps run in with their Celery queues."""

from dagster import AssetKey

RAW_TRIPS = AssetKey("raw_trips")
CLEANED_TRIPS = AssetKey("cleaned_trips")
TRIP_FEATURES = AssetKey("trip_features")
BEST_PARAMS = AssetKey("best_params")
TRAINED_MODEL = AssetKey("trained_model")
PREDICTIONS = AssetKey("trip_duration_predictions")
ASSETS = [RAW_TRIPS, CLEANED_TRIPS, TRIP_FEATURES, BEST_PARAMS, TRAINED_MODEL, PREDICTIONS]  # upstream first

# Group -> the Celery queue its steps go to: a machine can be given to training alone.
QUEUES = {"ingestion": "ingest", "features": "train", "training": "train", "predictions": "train"}
INGESTION, FEATURES, TRAINING, PREDICTION = QUEUES  # the group names
