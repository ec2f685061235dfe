"""Tune XGBoost with optuna, then train and evaluate the month's model, tracked in MLflow."""

import os
from typing import Optional

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSpec, AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field

from ml_assets import metadata as ui
from ml_assets.core import plots
from ml_assets.core.features import SPLIT, TEST, design_matrices, transform
from ml_assets.core.months import shift_month
from ml_assets.partitions import monthly_partitions
from ml_assets.resources import OptunaStorage
from ml_assets.settings import env_int
from ml_assets.sensors import EAGER_ALL_MONTHS


class TuningConfig(Config):
    # Defaults from the environment too: runs started by sensors and automation carry no run config.
    n_trials: int = Field(default=env_int("ML_ASSETS_TUNING_TRIALS", 25), description="trial budget per materialization")
    timeout_seconds: float = Field(default=env_int("ML_ASSETS_TUNING_TIMEOUT_SECONDS", 40),
                                   description="time budget per materialization")
    seed: int = 0


class TrainingConfig(Config):
    num_boost_round: int = 2000
    early_stopping_rounds: int = 50
    champion_tolerance: float = Field(default=0.02, description="how much worse (relative RMSE) than the champion a new model may be")


def _threads() -> int:
    return len(os.sched_getaffinity(0))


def _previous_best(optuna_storage: OptunaStorage, feature_set: str, month: str) -> Optional[dict]:
    """The previous month's best params, to try first (warm start); None if that study does not exist."""
    import optuna

    try:
        study = optuna.load_study(study_name=optuna_storage.study_name(feature_set, shift_month(month, -1)),
                                  storage=optuna_storage.url)
        return study.best_params
    except (KeyError, ValueError):  # no such study, or no finished trial in it
        return None


@asset(partitions_def=monthly_partitions, group_name="training", kinds={"optuna"}, io_manager_key="json_io_manager",
       automation_condition=EAGER_ALL_MONTHS)
def best_params(context: AssetExecutionContext, config: TuningConfig, optuna_storage: OptunaStorage,
                trip_features: pd.DataFrame) -> dict:
    """Best XGBoost hyperparameters for the month, from a persistent optuna study (TPE + pruning)."""
    from ml_assets.core.tuning import tune

    month, feature_set = context.partition_key, trip_features.attrs["feature_set"]
    warm_start = _previous_best(optuna_storage, feature_set, month)
    result = tune(design_matrices(trip_features), optuna_storage.url, optuna_storage.study_name(feature_set, month),
                  config.n_trials, config.timeout_seconds, warm_start=warm_start, seed=config.seed,
                  threads=_threads(), log=context.log.info)
    context.add_output_metadata({
        "valid_rmse": round(result.valid_rmse, 4),
        "trials_run": result.trials_run,
        "trials_total": result.trials_total,
        "best_trial": result.best_trial,
        "warm_start": MetadataValue.json(warm_start or {}),
        "study": optuna_storage.study_name(feature_set, month),
        "params": MetadataValue.json(result.params),
        **ui.plot_metadata(plots.study_plots(result.study), context.log),
    })
    return result.params


@asset(partitions_def=monthly_partitions, group_name="training", kinds={"xgboost", "mlflow"},
       io_manager_key="model_io_manager", required_resource_keys={"mlflow"},
       automation_condition=EAGER_ALL_MONTHS,
       check_specs=[AssetCheckSpec("quality_gate", asset="trained_model",
                                   description="beats the baseline and is no worse than the champion")])
def trained_model(context: AssetExecutionContext, config: TrainingConfig, trip_features: pd.DataFrame,
                  best_params: dict):
    """XGBoost with the best params and early stopping on the holdout, evaluated on month M.

    The new version is registered in MLflow; the `champion` alias moves to it only if the quality
    gate passes (`challenger` otherwise).
    """
    import mlflow

    from ml_assets.core import tracking
    from ml_assets.core.training import baseline_rmse, predict, quality_gate, regression_metrics, train_booster

    month = context.partition_key
    try:
        data = design_matrices(trip_features)
        booster = train_booster(data, best_params, config.num_boost_round, config.early_stopping_rounds, _threads())
        predicted = predict(booster, data.X[TEST])
        metrics = {**regression_metrics(data.y[TEST], predicted),
                   "baseline_rmse": baseline_rmse(trip_features)}
        champion = tracking.load_champion()
        if champion is not None:
            version, champion_booster, encoder = champion
            test_rows = trip_features[trip_features[SPLIT] == TEST]
            metrics["champion_rmse"] = regression_metrics(
                data.y[TEST], predict(champion_booster, transform(test_rows, encoder)))["rmse"]
        passed, reason = quality_gate(metrics["rmse"], metrics["baseline_rmse"], metrics.get("champion_rmse"),
                                      config.champion_tolerance)
        tracked = tracking.log_trained_model(
            run_name=f"trained_model {month}",
            params={**best_params, **config.model_dump(), "feature_set": data.encoder["feature_set"]},
            metrics={**metrics, "best_iteration": booster.best_iteration},
            tags={"partition": month, "training_months": ",".join(trip_features.attrs["training_months"]),
                  "quality_gate": "passed" if passed else "failed"},
            booster=booster, encoder=data.encoder, input_example=data.X[TEST][:5],
        )
        alias = tracking.CHAMPION if passed else tracking.CHALLENGER
        tracking.set_alias(tracked["model_version"], alias)
        figures = ui.render_plots(plots.model_plots(
            data.y[TEST], predicted, booster.get_score(importance_type="gain"),
            {"this model": metrics["rmse"], "champion": metrics.get("champion_rmse"),
             "baseline": metrics["baseline_rmse"]}), context.log)
        tracking.log_pngs(figures.pngs)
        mlflow.end_run()
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    gate = {
        "rmse": metrics["rmse"],
        "baseline_rmse": metrics["baseline_rmse"],
        "champion_rmse": metrics.get("champion_rmse"),
        "champion_version_before": str(champion[0].version) if champion else None,
        "tolerance": config.champion_tolerance,
        "reason": reason,
    }
    yield Output(booster, metadata={
        **{name: round(value, 4) for name, value in metrics.items()},
        "train_rows": int(data.y["train"].size),
        "valid_rows": int(data.y["valid"].size),
        "test_rows": int(data.y[TEST].size),
        "feature_count": int(data.X[TEST].shape[1]),
        "best_iteration": booster.best_iteration,
        "mlflow_run_id": tracked["run_id"],
        "mlflow_model_uri": tracked["model_uri"],
        **ui.mlflow_links(tracked["tracking_uri"], tracked["experiment_id"], tracked["run_id"],
                          tracked["registered_model"], tracked["model_version"]),
        "model_version": tracked["model_version"],
        "alias": alias,
        "champion_version": tracked["model_version"] if passed else gate["champion_version_before"],
        "champion_reason": reason,
        **figures.metadata(),
    })
    yield AssetCheckResult(check_name="quality_gate", passed=passed,
                           metadata={key: value for key, value in gate.items() if value is not None})
