"""model_performance: every registered model tested before month M, scored on M as soon as M is ingested.

Each version's realized RMSE also goes to its own MLflow run (`realized_rmse`, one step per month
since its test month), so MLflow charts a model's decay too. The check `champion_decay`
(checks/champion_decay.py) warns when the champion has decayed on M; the `on_decay` retraining
policy reads the same figures (docs/models-over-time.md).
"""

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    Config,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from ml_assets import settings
from ml_assets.automation.conditions import MONTH_SCORABLE
from ml_assets.code_versions import code_version
from ml_assets.core import performance, plots
from ml_assets.core.features import FEATURE_INPUTS
from ml_assets.core.outages import is_outage
from ml_assets.core.performance import champion_on_month, score_versions
from ml_assets.deploy.executor import group_and_queue
from ml_assets.keys import CHAMPION_POOL, CLEANED_TRIPS, MONITORING
from ml_assets.outages import waits_out_outages
from ml_assets.partitions import month_of, monthly_partitions
from ml_assets.ui_metadata import plot_metadata, row_count_entry


class PerformanceConfig(Config):
    newest_versions: int | None = settings.PERFORMANCE_VERSIONS.field("score the newest this many versions (all: null)")


def _table(scores: pd.DataFrame) -> MetadataValue:
    kinds = {"O": "string", "i": "int", "f": "float"}
    columns = [TableColumn(name, kinds[scores[name].dtype.kind]) for name in scores.columns]
    rows = [
        TableRecord({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        for row in scores.to_dict("records")
    ]
    return MetadataValue.table(rows, TableSchema(columns=columns))


@asset(
    partitions_def=monthly_partitions,
    **group_and_queue(MONITORING),
    kinds={"mlflow", "pandas"},
    ins={"cleaned_trips": AssetIn(CLEANED_TRIPS, metadata={"columns": FEATURE_INPUTS})},
    required_resource_keys={"mlflow"},
    automation_condition=MONTH_SCORABLE,
    code_version=code_version(performance),
    pool=CHAMPION_POOL,  # may put back an unrecorded champion before judging its decay
)
@waits_out_outages
def model_performance(context: AssetExecutionContext, config: PerformanceConfig, cleaned_trips: pd.DataFrame):
    """Each registered version tested before month M: its realized RMSE on M beside its test RMSE."""
    from ml_assets.core import tracking

    month = month_of(context)
    mlflow = context.resources.mlflow
    mlflow.connect(f"model_performance {month}", in_champion_pool=True)
    # Read once, before choosing what to score: the champion recorded is the one scored, wherever the alias moves.
    current = tracking.champion_version(mlflow.taxi)
    earlier = tracking.versions_tested_before(month, current, config.newest_versions, mlflow.taxi)
    registered = {str(version.version): version for version in earlier}
    loaded, refused = tracking.load_registered_models(earlier, mlflow.taxi)
    scores, unscored = score_versions(cleaned_trips, month, loaded)
    refused |= unscored
    for version, why in refused.items():
        context.log.warning(f"model_performance {month}: version {version} is not scored: {why}")
    curves = {}
    for row in scores.itertuples():
        run_id = registered[row.version].run_id
        try:
            tracking.log_realized_rmse(run_id, row.realized_rmse, row.months_since_test, month)
        except Exception as error:  # noqa: BLE001 (e.g. its run was deleted: the score stands, unlogged)
            if is_outage(error):
                raise
            context.log.warning(
                f"model_performance {month}: realized_rmse of version {row.version} not logged: {error}"
            )
        curves[row.version] = {0: row.test_rmse, **tracking.realized_history(run_id)}
    champion = champion_on_month(
        scores,
        None if current is None else str(current.version),
        None if current is None else tracking.tested_on(current),
    )
    return MaterializeResult(
        value=scores,
        metadata={
            "versions": _table(scores),
            **row_count_entry(len(scores)),
            **({"versions_not_scored": MetadataValue.json(refused)} if refused else {}),
            **champion.metadata(),
            **plot_metadata({"decay": lambda: plots.decay_curves(curves, champion.version)}, context.log),
        },
    )
