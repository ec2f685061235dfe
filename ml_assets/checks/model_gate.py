"""`model_gate`: judge a stored trained_model against the baseline and the champion, then publish it.

A check, not part of the asset: it runs only after trained_model's value is stored and recorded,
so the `champion` alias (what predictions and every user of the registry load) only ever moves to
a model Dagster recorded, and never to one that a newer model of its month superseded. It is
blocking so that predictions in the same run wait for it; a model that does not pass is registered
as `challenger`, a WARN that blocks nothing. The RMSE trained_model recorded is judged only on the test rows it
was scored on: after the month's features were rebuilt, the check refuses (core.gate.gate_model says why).
"""

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetIn,
    Config,
    asset_check,
)
from pydantic import Field

from ml_assets.core.features import SPLIT, TEST
from ml_assets.core.gate import CHAMPION_TOLERANCE
from ml_assets.core.rules import percent
from ml_assets.deploy.executor import step_tags
from ml_assets.keys import CHAMPION_POOL, TRAINED_MODEL, TRAINING, TRIP_FEATURES
from ml_assets.outages import waits_out_outages
from ml_assets.partitions import month_of, monthly_partitions, partitioned_checks
from ml_assets.records import latest_metadata, run_or_latest_metadata
from ml_assets.ui_metadata import model_version_link

MODEL_GATE = "model_gate"


class GateConfig(Config):
    champion_tolerance: float = Field(
        default=CHAMPION_TOLERANCE,
        ge=0,
        description="how much worse (relative RMSE) than the champion a new model may be",
    )


@waits_out_outages
def _model_gate(context: AssetCheckExecutionContext, config: GateConfig, trip_features: pd.DataFrame):
    from ml_assets.core import tracking
    from ml_assets.core.gate import gate_model

    month = month_of(context)
    # The model this run trained; the newest one when the check runs on its own (e.g. re-executed).
    run_id = context.op_execution_context.run_id
    model = run_or_latest_metadata(context.instance, run_id, TRAINED_MODEL, month)
    mlflow = context.resources.mlflow
    mlflow.connect(f"{MODEL_GATE} {month}", in_champion_pool=True)

    def against(champion):
        # Read while no other step moves the alias, as the champion is: the month's newest model when this one
        # is judged.
        newest = (latest_metadata(context.instance, TRAINED_MODEL, month) or {}).get("mlflow_run_id")
        newer_run = None if newest in (None, model["mlflow_run_id"]) else newest
        rmse, baseline, scored_on = model["rmse"], model["baseline_rmse"], model.get("test_rows_digest")
        return gate_model(
            trip_features, rmse, baseline, config.champion_tolerance, champion, newer_run, scored_on=scored_on
        )

    tags = {tracking.PARTITION_TAG: month, tracking.DAGSTER_RUN_TAG: run_id}
    with mlflow.champion_must_load(f"{MODEL_GATE} {month}"):
        published = tracking.publish(model["mlflow_model_uri"], against, tags, mlflow.taxi)
    gate = published.verdict
    context.log.info(f"trained_model {month} is version {published.version}, {published.alias}: {gate.reason}")
    metadata = {
        "rmse": model["rmse"],
        "baseline_rmse": model["baseline_rmse"],
        "champion_rmse": gate.champion_rmse,
        "champion_version_before": gate.champion_version,
        "tolerance": config.champion_tolerance,
        "model_name": mlflow.registered_model,
        "model_version": published.version,
        "registered_model": model_version_link(mlflow.ui_url, mlflow.registered_model, published.version),
        "alias": published.alias,
        "reason": gate.reason,
    }
    return AssetCheckResult(
        passed=gate.passed,
        severity=AssetCheckSeverity.WARN,
        description=gate.reason,
        metadata={key: value for key, value in metadata.items() if value is not None},
    )


model_gate = partitioned_checks(
    lambda: asset_check(
        asset=TRAINED_MODEL,
        name=MODEL_GATE,
        description="Beats the LinearRegression baseline and is at most champion_tolerance (default "
        f"{percent(CHAMPION_TOLERANCE)}) worse than the champion on the same month; registers the model in MLflow as "
        "champion if so, as challenger if not.",
        blocking=True,
        # The test month's rows only: the gate scores the champion on them (a tenth of a 10 M-trip window).
        additional_ins={"trip_features": AssetIn(TRIP_FEATURES, metadata={"filters": [(SPLIT, "==", TEST)]})},
        required_resource_keys={"mlflow"},
        partitions_def=monthly_partitions,
        op_tags=step_tags(TRAINING),
        pool=CHAMPION_POOL,  # one step at a time moves `champion`, across every machine of the deployment
    )(_model_gate)
)
