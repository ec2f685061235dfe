"""`champion_decay`: warns when the champion's realized RMSE on month M has decayed past its own test RMSE.

An op of its own, not a check spec inside model_performance's: automation requests an op's bundled
checks by name, and a run that scored and trained one month then carried that check alone, without
model_gate, so its predictions found no champion (docs/models-over-time.md).
"""

import pandas as pd
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, Config, asset_check

from ml_assets import settings
from ml_assets.core.performance import ChampionOnMonth, decayed
from ml_assets.core.rules import percent
from ml_assets.deploy.executor import step_tags
from ml_assets.keys import MODEL_PERFORMANCE, MONITORING
from ml_assets.partitions import month_of, monthly_partitions, partitioned_checks
from ml_assets.records import run_or_latest_metadata

CHAMPION_DECAY = "champion_decay"
_DECAY = settings.DECAY["decay_threshold"]


class DecayConfig(Config):
    decay_threshold: float = _DECAY.field()


def judge_decay(scores: pd.DataFrame, champion: ChampionOnMonth, month: str, threshold: float) -> AssetCheckResult:
    """The check's verdict on a month's scores and the champion model_performance recorded with them."""
    if champion.version is None:
        return AssetCheckResult(
            passed=True,
            description=f"nothing to judge on {month}: there is no champion (none yet, or its alias was removed)",
        )
    if champion.ratio is None:
        if champion.tested_on is not None and champion.tested_on >= month:
            tested_later = f"v{champion.version} was tested on {month} or later"
            return AssetCheckResult(passed=True, description=f"nothing to judge on {month}: {tested_later}")
        # A champion that should have been scored and was not cannot be said to hold up: say so, as a warning.
        why = (
            "has no test month (registered by hand?), so its decay cannot be judged"
            if champion.tested_on is None
            else f"(tested on {champion.tested_on}) was not scored on {month}: see versions_not_scored on "
            "model_performance"
        )
        return AssetCheckResult(
            passed=False, severity=AssetCheckSeverity.WARN, description=f"champion v{champion.version} {why}"
        )
    row = scores[scores["version"] == champion.version].iloc[0]
    passed = not decayed(champion.ratio, threshold)
    relation = "within" if passed else "more than"
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.WARN,
        description=f"champion v{champion.version}: realized RMSE {row['realized_rmse']:.3f} on {month} is {relation} "
        f"{percent(threshold)} above its test RMSE {row['test_rmse']:.3f} ({champion.tested_on})",
        metadata={"ratio": round(champion.ratio, 4), "decay_threshold": threshold},
    )


@partitioned_checks
def champion_decay():
    @asset_check(
        asset=MODEL_PERFORMANCE,
        name=CHAMPION_DECAY,
        description="Warns when the champion's realized RMSE on the month exceeds its own test RMSE by more than "
        "decay_threshold; never blocks.",
        blocking=False,
        partitions_def=monthly_partitions,
        op_tags=step_tags(MONITORING),
    )
    def champion_decay(
        context: AssetCheckExecutionContext, config: DecayConfig, model_performance: pd.DataFrame
    ) -> AssetCheckResult:
        month = month_of(context)
        # The champion as this run's model_performance recorded it.
        run_id = context.op_execution_context.run_id
        recorded = run_or_latest_metadata(context.instance, run_id, MODEL_PERFORMANCE, month)
        return judge_decay(model_performance, ChampionOnMonth.from_metadata(recorded), month, config.decay_threshold)

    return champion_decay
