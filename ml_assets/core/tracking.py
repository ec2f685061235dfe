"""MLflow bookkeeping for one trained model: params, metrics, model, encoder, registry."""

from __future__ import annotations

from pathlib import Path

REGISTERED_MODEL = "trip_duration_xgboost"


def ensure_experiment(tracking_uri: str | None, name: str) -> None:
    """Create `name` with its artifacts beside a local sqlite store (not in the working directory).

    MLflow stores an experiment's artifact location as an absolute path. When the store was copied
    or moved with its DAGSTER_HOME, the experiment still points at the old folder; it is renamed
    (its runs keep their artifacts where they are) and `name` is created again beside the store,
    so new runs never write into another home.
    """
    import mlflow

    prefix = "sqlite:///"
    if not tracking_uri or not tracking_uri.startswith(prefix):
        return
    client = mlflow.MlflowClient(tracking_uri)
    location = (Path(tracking_uri[len(prefix) :]).resolve().parent / "mlartifacts").as_uri()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None and experiment.artifact_location != location:
        client.rename_experiment(experiment.experiment_id, f"{name} (artifacts in {experiment.artifact_location})")
        experiment = None
    if experiment is None:
        client.create_experiment(name, artifact_location=location)


def discard_unused_run(tracking_uri: str | None, run_id: str) -> None:
    """End the active run; delete it if nothing was logged into it."""
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.end_run()
    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    if not run.data.metrics and not run.data.params:
        client.delete_run(run_id)


def log_trained_model(
    *,
    run_name: str,
    params: dict,
    metrics: dict,
    tags: dict,
    booster,
    encoder: dict,
    input_example,
    registered_model: str = REGISTERED_MODEL,
) -> dict:
    """Log into the active run (dagster-mlflow starts it) and register a new model version."""
    import mlflow
    import mlflow.xgboost
    from mlflow.models import infer_signature

    mlflow.set_tags({"mlflow.runName": run_name, **tags})
    mlflow.log_params(params)
    mlflow.log_metrics(metrics)
    mlflow.log_dict(encoder, "encoder.json")
    signature = infer_signature(input_example, booster.inplace_predict(input_example))
    import xgboost

    # Stated, not inferred: inference imports the model again in a subprocess (seconds per run).
    info = mlflow.xgboost.log_model(
        booster,
        name="model",
        signature=signature,
        model_format="ubj",
        pip_requirements=[f"xgboost=={xgboost.__version__}"],
        registered_model_name=registered_model,
    )
    run_id = mlflow.active_run().info.run_id
    return {
        "run_id": run_id,
        "model_uri": info.model_uri,
        "model_version": str(info.registered_model_version),
        "registered_model": registered_model,
    }


CHAMPION, CHALLENGER = "champion", "challenger"


def load_champion(registered_model: str = REGISTERED_MODEL):
    """(version, booster, encoder) of the model the `champion` alias points at, or None."""
    import mlflow
    import mlflow.xgboost
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(registered_model, CHAMPION)
    except MlflowException:  # no registered model yet, or no champion alias
        return None
    booster = mlflow.xgboost.load_model(f"models:/{registered_model}@{CHAMPION}")
    encoder = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/encoder.json")
    return version, booster, encoder


def set_alias(version: str, alias: str, registered_model: str = REGISTERED_MODEL) -> None:
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(registered_model, alias, version)
