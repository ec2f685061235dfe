"""The graph's names, each written once: asset keys, and the groups steps run in with their Celery queues."""

from dagster import AssetKey

RAW_TRIPS = AssetKey("raw_trips")
CLEANED_TRIPS = AssetKey("cleaned_trips")
TRIP_FEATURES = AssetKey("trip_features")
BEST_PARAMS = AssetKey("best_params")
TRAINED_MODEL = AssetKey("trained_model")
PREDICTIONS = AssetKey("trip_duration_predictions")
MODEL_PERFORMANCE = AssetKey("model_performance")
# Upstream first; model_performance depends on cleaned_trips only.
ASSETS = [RAW_TRIPS, CLEANED_TRIPS, TRIP_FEATURES, BEST_PARAMS, TRAINED_MODEL, PREDICTIONS, MODEL_PERFORMANCE]

# Group -> the Celery queue its steps go to: a machine can be given to training alone.
QUEUES = {
    "ingestion": "ingest",
    "features": "train",
    "training": "train",
    "predictions": "train",
    "monitoring": "train",
}
INGESTION, FEATURES, TRAINING, PREDICTION, MONITORING = QUEUES  # the group names

# Dagster's concurrency pool of the steps that may move MLflow's `champion` alias (model_gate, and the steps
# that put back an unrecorded champion before using it). Its one slot (dagster.yaml `concurrency:`) is kept in
# the instance's database, which every process of a deployment shares, on whatever machine it runs.
CHAMPION_POOL = "mlflow_champion"
