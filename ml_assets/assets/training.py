"""best_params and trained_model: tune XGBoost with optuna, then train and judge the month's model in MLflow."""

import time

import pandas as pd
import pyarrow.parquet as pq
from dagster import (
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from ml_assets import metadata as ui
from ml_assets import settings
from ml_assets.automation import WINDOW_READY
from ml_assets.core import plots
from ml_assets.core.features import TEST, TRAIN, VALID, design_matrices
from ml_assets.core.months import shift_month
from ml_assets.core.training import usable_cores
from ml_assets.execution import in_group
from ml_assets.materializations import run_process_alive
from ml_assets.outages import waits_out_outages
from ml_assets.partitions import monthly_partitions
from ml_assets.resources import OptunaStorage


class TuningConfig(Config):
    # Defaults from the environment: runs started by sensors and automation carry no run config.
    n_trials: int = Field(default=settings.TUNING_TRIALS.value(), description="trial budget per materialization")
    timeout_seconds: float = Field(
        default=settings.TUNING_TIMEOUT_SECONDS.value(), description="time budget per materialization"
    )
    seed: int = 0


# What best_params leaves of its time budget for what follows the study (its plots, storing the value):
# a share of it and a few seconds, which drawing the plots takes on two busy cores whatever the budget.
TEARDOWN_SHARE, TEARDOWN_SECONDS = 0.05, 2.0
# Share of trained_model's time budget left for what follows the boosting: predicting the test month,
# logging the model and its plots.
TRAINING_TEARDOWN_SHARE = 0.1


class TrainingConfig(Config):
    num_boost_round: int = 2000
    early_stopping_rounds: int = 50
    timeout_seconds: float = Field(
        default=300.0,
        description="time budget of the step: boosting stops in time for it, keeping its best iteration so far "
        "(a window too large for num_boost_round rounds within it)",
    )


def _in_time(figures: dict[str, plots.Plot], deadline: float) -> dict[str, plots.Plot]:
    """`figures`, each drawn only if the budget's `deadline` (`time.monotonic()`) has not passed yet."""

    def drawn_in_time(plot: plots.Plot) -> plots.Plot:
        def draw() -> bytes:
            if time.monotonic() >= deadline:
                raise plots.NoPlot("the step's time budget was spent before it could be drawn")
            return plot()

        return draw

    return {name: drawn_in_time(plot) for name, plot in figures.items()}


def _threads() -> int:
    """XGBoost threads: the cores this process may use, shared by the training steps that run at once."""
    return max(1, usable_cores() // settings.PARALLEL_TRAINING_STEPS.value())


@asset(
    partitions_def=monthly_partitions,
    **in_group("training"),
    kinds={"optuna"},
    io_manager_key="json_io_manager",
    automation_condition=WINDOW_READY,
)
@waits_out_outages
def best_params(
    context: AssetExecutionContext, config: TuningConfig, optuna_storage: OptunaStorage, trip_features: pq.ParquetFile
) -> dict:
    """Best XGBoost hyperparameters for the month, from a persistent optuna study (TPE + pruning).

    The study tunes on a sample of the training rows sized by the time budget, which counts from
    here: reading the sample (only its rows are kept) and starting the study are part of it, and so
    are the plots, left out when the budget is spent.
    """
    from ml_assets.core.tuning import best_params_of, sample_rows, tune, tuning_sample

    started = time.monotonic()
    month, threads = context.partition_key, _threads()
    sample = tuning_sample(trip_features, sample_rows(config.timeout_seconds, threads), config.seed)
    feature_set, data = sample.attrs["feature_set"], design_matrices(sample, (TRAIN, VALID))
    warm_start = best_params_of(optuna_storage.url, optuna_storage.study_name(feature_set, shift_month(month, -1)))
    result = tune(
        data,
        optuna_storage.url,
        optuna_storage.study_name(feature_set, month),
        config.n_trials,
        config.timeout_seconds * (1 - TEARDOWN_SHARE) - TEARDOWN_SECONDS - (time.monotonic() - started),
        warm_start=warm_start,
        seed=config.seed,
        threads=threads,
        log=context.log.info,
    )
    context.add_output_metadata(
        {
            "valid_rmse": round(result.valid_rmse, 4),
            "tuning_rows": len(sample),
            "xgboost_threads": threads,
            "trials_run": result.trials_run,
            "trials_total": result.trials_total,
            "best_trial": result.best_trial,
            "warm_start": MetadataValue.json(warm_start or {}),
            "study": optuna_storage.study_name(feature_set, month),
            "params": MetadataValue.json(result.params),
            **ui.plot_metadata(
                _in_time(plots.study_plots(result.study), started + config.timeout_seconds), context.log
            ),
        }
    )
    return result.params


@asset(
    partitions_def=monthly_partitions,
    **in_group("training"),
    kinds={"xgboost", "mlflow"},
    io_manager_key="model_io_manager",
    required_resource_keys={"mlflow"},
    automation_condition=WINDOW_READY,
)
@waits_out_outages
def trained_model(
    context: AssetExecutionContext, config: TrainingConfig, trip_features: pd.DataFrame, best_params: dict
):
    """XGBoost with the best params and early stopping on the holdout, evaluated on month M.

    Logged to its MLflow run here; registered and given an alias only by the `model_gate` check,
    once this value is stored, so the registry never serves a model Dagster did not record.
    """
    from ml_assets.core import tracking
    from ml_assets.core.gate import champion_rmse
    from ml_assets.core.training import baseline_rmse, predict, regression_metrics, stop_at, train_booster

    started = time.monotonic()
    month = context.partition_key
    mlflow = context.resources.mlflow
    with mlflow.run(f"trained_model {month}") as run:
        run_id = run.active_run().info.run_id
        run.set_tags(
            {
                "mlflow.runName": f"trained_model {month}",
                tracking.PARTITION_TAG: month,
                "training_months": ",".join(trip_features.attrs["training_months"]),
            }
        )
        stale = tracking.fail_stale_runs(month, run_id, lambda other: run_process_alive(context.instance, other))
        if stale:
            context.log.warning(f"marked FAILED the MLflow runs of {month} left RUNNING by dead processes: {stale}")
        data = design_matrices(trip_features)
        # The figures the model is judged against come first: the boosting gets what is left of the budget.
        metrics = {"baseline_rmse": baseline_rmse(trip_features)}
        # What the champion of this moment scores on M; `model_gate` judges again when it publishes.
        champion = champion_rmse(trip_features, data.y[TEST], tracking.load_champion())
        if champion is not None:
            metrics["champion_rmse"] = champion
        stopped, threads = {}, _threads()
        deadline = started + config.timeout_seconds * (1 - TRAINING_TEARDOWN_SHARE)
        booster = train_booster(
            data,
            best_params,
            config.num_boost_round,
            config.early_stopping_rounds,
            threads,
            [stop_at(deadline, lambda epoch: stopped.setdefault("round", epoch))],
        )
        if stopped:
            context.log.warning(
                f"trained_model {month}: boosting stopped by the time budget ({config.timeout_seconds:.0f} s) "
                f"after round {stopped['round']}; best iteration {booster.best_iteration}"
            )
        predicted = predict(booster, data.X[TEST])
        metrics = {**regression_metrics(data.y[TEST], predicted), **metrics}
        logged = tracking.log_trained_model(
            params={**best_params, **config.model_dump(), "feature_set": data.encoder["feature_set"]},
            metrics={**metrics, "best_iteration": booster.best_iteration},
            booster=booster,
            encoder=data.encoder,
            input_example=data.X[TEST][:5],
        )
        figures = ui.render_plots(
            plots.model_plots(
                data.y[TEST],
                predicted,
                booster.get_score(importance_type="gain"),
                {"this model": metrics["rmse"], "champion": champion, "baseline": metrics["baseline_rmse"]},
            ),
            context.log,
        )
        tracking.log_pngs(figures.pngs)
    return MaterializeResult(
        value=booster,
        metadata={
            **{name: round(value, 4) for name, value in metrics.items()},
            "train_rows": int(data.y["train"].size),
            "valid_rows": int(data.y["valid"].size),
            "test_rows": int(data.y[TEST].size),
            "feature_count": int(data.X[TEST].shape[1]),
            "best_iteration": booster.best_iteration,
            "stopped_by_time_budget": bool(stopped),
            "xgboost_threads": threads,
            "mlflow_run_id": logged["run_id"],
            "mlflow_model_uri": logged["model_uri"],
            "mlflow_run": ui.mlflow_run_link(mlflow.tracking_uri, logged["experiment_id"], logged["run_id"]),
            **figures.metadata(),
        },
    )
