"""trip_features: the training window for month M, fitted on the months before M, tested on M."""

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Config, asset
from pydantic import Field

from ml_assets import settings
from ml_assets.automation.conditions import TRAINING_DUE
from ml_assets.code_versions import code_version
from ml_assets.core import features, pair_stats, zones
from ml_assets.core.features import FEATURE_INPUTS, SPLIT, build_features
from ml_assets.core.schema import DURATION
from ml_assets.deploy.executor import group_and_queue
from ml_assets.keys import CLEANED_TRIPS, FEATURES
from ml_assets.partitions import TRAINING_MONTHS, month_of, monthly_partitions, training_window
from ml_assets.ui_metadata import row_count_entry


class FeatureConfig(Config):
    # Defaults from the environment: runs started by sensors and automation carry no run config.
    feature_set: str = Field(
        default="rich",
        description="rich (default), course (PU_DO + trip_distance), or rich without some of its ingredients "
        "(pairs, zones, plain: docs/model.md)",
    )
    holdout_days: int = settings.HOLDOUT_DAYS.field(
        "the newest this many days of the training window are held out for early stopping and tuning"
    )
    recency_weight: float = settings.RECENCY_WEIGHT.field(
        "weight of a training row per month back (1.0: every month alike)"
    )
    seed: int = 0


class MissingTrainingMonthsError(ValueError):
    """Month M has no earlier month to train on."""


@asset(
    partitions_def=monthly_partitions,
    ins={
        "cleaned_trips": AssetIn(CLEANED_TRIPS, partition_mapping=training_window, metadata={"columns": FEATURE_INPUTS})
    },
    **group_and_queue(FEATURES),
    kinds={"pandas"},
    automation_condition=TRAINING_DUE,
    code_version=code_version(features, pair_stats, zones),
)
def trip_features(
    context: AssetExecutionContext, config: FeatureConfig, cleaned_trips: dict[str, pd.DataFrame]
) -> pd.DataFrame:
    """Model inputs for the months before M (train + holdout) and for M (test), as one frame with a `split`."""
    month = month_of(context)
    training = {key: trips for key, trips in cleaned_trips.items() if key != month}
    if not training:
        raise MissingTrainingMonthsError(
            f"trip_features for {month} needs at least one earlier month of cleaned_trips to train on "
            f"(up to {TRAINING_MONTHS} months before {month}), and none exists before the first partition "
            f"{monthly_partitions.get_first_partition_key()}; materialize a later month, or set "
            f"ML_ASSETS_START_MONTH earlier"
        )
    frame = build_features(training, cleaned_trips[month], month, **config.model_dump())
    frame.attrs["feature_config"] = config.model_dump()  # what a reproduction of its models builds again
    rows = frame[SPLIT].value_counts()
    context.add_output_metadata(
        {
            "feature_set": config.feature_set,
            "training_months": ", ".join(sorted(training)),
            "test_month": month,
            **row_count_entry(len(frame)),
            **{f"{split}_rows": int(count) for split, count in rows.items()},
            "features": ", ".join(c for c in frame.columns if c not in (DURATION, SPLIT)),
        }
    )
    return frame
