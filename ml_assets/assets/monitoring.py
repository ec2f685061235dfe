"""model_performance: every registered model tested before month M, scored on M as soon as M is ingested.

Each version's realized RMSE also goes to its own MLflow run (`realized_rmse`, one step per month
since its test month), so MLflow charts a model's decay too. The check `champion_decay` warns when
the champion has decayed on M; the `on_decay` retraining policy reads the same figures
(docs/models-over-time.md).
"""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
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
from pydantic import Field

from ml_assets import settings
from ml_assets.automation.conditions import MONTH_INGESTED
from ml_assets.code_versions import code_version
from ml_assets.core import performance, plots
from ml_assets.core.features import FEATURE_INPUTS
from ml_assets.core.performance import champion_on_month, decayed, score_versions
from ml_assets.deploy.executor import group_and_queue
from ml_assets.keys import CLEANED_TRIPS, MODEL_PERFORMANCE, MONITORING
from ml_assets.outages import waits_out_outages
from ml_assets.partitions import month_of, monthly_partitions, partitioned_checks
from ml_assets.ui_metadata import plot_metadata, row_count_entry

CHAMPION_DECAY = "champion_decay"


_DECAY = settings.DECAY["decay_threshold"]


class PerformanceConfig(Config):
    decay_threshold: float = Field(default=_DECAY.value(), description=_DECAY.description)
    newest_versions: int | None = Field(
        default=settings.PERFORMANCE_VERSIONS.value(), description="score the newest this many versions (all: null)"
    )


def _table(scores: pd.DataFrame) -> MetadataValue:
    kinds = {"O": "string", "i": "int", "f": "float"}
    columns = [TableColumn(name, kinds[scores[name].dtype.kind]) for name in scores.columns]
    rows = [
        TableRecord({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        for row in scores.to_dict("records")
    ]
    return MetadataValue.table(rows, TableSchema(columns=columns))


def _decay_check(scores: pd.DataFrame, champion, month: str, decay_threshold: float) -> AssetCheckResult:
    if champion.ratio is None:
        why = (
            "there is no champion yet"
            if champion.version is None
            else f"v{champion.version} was tested on {month} or later"
        )
        return AssetCheckResult(passed=True, description=f"nothing to judge on {month}: {why}")
    row = scores[scores["version"] == champion.version].iloc[0]
    passed = not decayed(champion.ratio, decay_threshold)
    relation = "within" if passed else "more than"
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.WARN,
        description=f"champion v{champion.version}: realized RMSE {row['realized_rmse']:.3f} on {month} is {relation} "
        f"{decay_threshold:.0%} above its test RMSE {row['test_rmse']:.3f} ({champion.tested_on})",
        metadata={"ratio": round(champion.ratio, 4), "decay_threshold": decay_threshold},
    )


@partitioned_checks
def model_performance():
    @asset(
        partitions_def=monthly_partitions,
        **group_and_queue(MONITORING),
        kinds={"mlflow", "pandas"},
        ins={"cleaned_trips": AssetIn(CLEANED_TRIPS, metadata={"columns": FEATURE_INPUTS})},
        required_resource_keys={"mlflow"},
        check_specs=[
            AssetCheckSpec(
                CHAMPION_DECAY,
                asset=MODEL_PERFORMANCE,
                description="Warns when the champion's realized RMSE on the month exceeds its own test RMSE by more "
                "than decay_threshold.",
                partitions_def=monthly_partitions,
            )
        ],
        automation_condition=MONTH_INGESTED,
        code_version=code_version(performance),
    )
    @waits_out_outages
    def model_performance(context: AssetExecutionContext, config: PerformanceConfig, cleaned_trips: pd.DataFrame):
        """Each registered version tested before month M: its realized RMSE on M beside its test RMSE."""
        from ml_assets.core import tracking

        month = month_of(context)
        context.resources.mlflow.connect(f"model_performance {month}")
        earlier = [
            version
            for version in tracking.registered_versions(config.newest_versions)
            if version.tags.get(tracking.PARTITION_TAG, month) < month
        ]
        registered = {str(version.version): version for version in earlier}
        scores = score_versions(cleaned_trips, month, [tracking.load_registered(version) for version in earlier])
        curves = {}
        for row in scores.itertuples():
            run_id = registered[row.version].run_id
            tracking.log_realized_rmse(run_id, row.realized_rmse, row.months_since_test, month)
            curves[row.version] = {0: row.test_rmse, **tracking.realized_history(run_id)}
        current = tracking.champion_version()
        champion = champion_on_month(
            scores,
            None if current is None else str(current.version),
            None if current is None else current.tags.get(tracking.PARTITION_TAG),
        )
        return MaterializeResult(
            value=scores,
            metadata={
                "versions": _table(scores),
                **row_count_entry(len(scores)),
                **champion.metadata(),
                **plot_metadata({"decay": lambda: plots.decay_curves(curves, champion.version)}, context.log),
            },
            check_results=[_decay_check(scores, champion, month, config.decay_threshold)],
        )

    return model_performance
