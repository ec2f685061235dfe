"""best_params and trained_model: tune the learner with optuna, then train the month's model and log it to MLflow."""

import time

import pyarrow.parquet as pq
from dagster import AssetExecutionContext, AssetIn, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from ml_assets import settings, ui_metadata
from ml_assets.automation.conditions import WINDOW_READY
from ml_assets.code_versions import code_version
from ml_assets.core import features, frame_parts, model, pair_stats, plots, training, tuning
from ml_assets.core.features import TEST, TRAIN, VALID, design_matrices
from ml_assets.core.months import shift_month
from ml_assets.deploy.executor import group_and_queue
from ml_assets.keys import BEST_PARAMS, RAW_TRIPS, TRAINING, TRIP_FEATURES
from ml_assets.outages import waits_out_outages
from ml_assets.partitions import month_of, monthly_partitions
from ml_assets.records import latest_metadata, run_is_alive
from ml_assets.resources.compute import ComputeResource
from ml_assets.resources.optuna_storage import OptunaStorage


class TuningConfig(Config):
    # Defaults from the environment: runs started by sensors and automation carry no run config.
    n_trials: int = settings.TUNING_TRIALS.field("trial budget per materialization")
    timeout_seconds: float = settings.TUNING_TIMEOUT_SECONDS.field("time budget per materialization")
    num_boost_round: int = settings.TUNING_ROUNDS.field("most boosting rounds of a trial")
    early_stopping_rounds: int = Field(
        default=tuning.EARLY_STOPPING_ROUNDS,
        ge=1,
        description="a trial stops after this many rounds without a better holdout score",
    )
    seed: int = 0


# What best_params leaves of its time budget for what follows the study (its plots, storing the value):
# a share of it and a few seconds, which drawing the plots takes on two busy cores whatever the budget.
TEARDOWN_SHARE, TEARDOWN_SECONDS = 0.05, 2.0
# Share of trained_model's time budget left for what follows the boosting: predicting the test month,
# logging the model and its plots.
TRAINING_TEARDOWN_SHARE = 0.1


class TrainingConfig(Config):
    num_boost_round: int = settings.TRAINING_ROUNDS.field("most boosting rounds")
    early_stopping_rounds: int = Field(
        default=model.EARLY_STOPPING_ROUNDS,
        ge=1,
        description="training stops after this many rounds without a better holdout score",
    )
    refit: bool = Field(
        default=True,
        description="train again on train + holdout with the rounds early stopping chose, when the time budget "
        "leaves time for it (docs/model.md)",
    )
    timeout_seconds: float = Field(
        default=300.0,
        gt=0,
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


@asset(
    partitions_def=monthly_partitions,
    **group_and_queue(TRAINING),
    kinds={"optuna"},
    io_manager_key="json_io_manager",
    ins={"trip_features": AssetIn(TRIP_FEATURES)},
    automation_condition=WINDOW_READY,
    code_version=code_version(tuning, model, features, pair_stats, frame_parts),
)
@waits_out_outages  # optuna's database restarting: the study goes on once it is back
def best_params(
    context: AssetExecutionContext,
    config: TuningConfig,
    optuna_storage: OptunaStorage,
    compute: ComputeResource,
    trip_features: pq.ParquetFile,
) -> dict:
    """Best hyperparameters for the month, from a persistent optuna study (TPE + pruning).

    The study tunes on a sample of the training rows sized by the time budget, which counts from
    here: reading the sample and starting the study are part of it, and so are the plots, left out
    when the budget is spent.
    """
    from ml_assets.core.tuning import best_params_of, sample_rows, tune, tuning_sample

    started = time.monotonic()
    month, threads = month_of(context), compute.threads()
    sample = tuning_sample(trip_features, sample_rows(config.timeout_seconds, threads), config.seed)
    feature_set, data = sample.attrs["feature_set"], design_matrices(sample, (TRAIN, VALID))
    study = optuna_storage.study_name(feature_set, month)
    warm_start = best_params_of(optuna_storage.url, optuna_storage.study_name(feature_set, shift_month(month, -1)))
    result = tune(
        data,
        optuna_storage.url,
        study,
        config.n_trials,
        config.timeout_seconds * (1 - TEARDOWN_SHARE) - TEARDOWN_SECONDS - (time.monotonic() - started),
        warm_start=warm_start,
        seed=config.seed,
        threads=threads,
        progress=lambda trial: context.log.info(trial.line()),
        num_boost_round=config.num_boost_round,
        early_stopping_rounds=config.early_stopping_rounds,
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
            "study": study,
            "params": MetadataValue.json(result.params),
            **ui_metadata.plot_metadata(
                _in_time(plots.study_plots(result.study), started + config.timeout_seconds), context.log
            ),
        }
    )
    return result.params


@asset(
    partitions_def=monthly_partitions,
    **group_and_queue(TRAINING),
    kinds={"xgboost", "mlflow"},
    io_manager_key="model_io_manager",
    ins={"trip_features": AssetIn(TRIP_FEATURES), "best_params": AssetIn(BEST_PARAMS)},
    required_resource_keys={"mlflow", "compute"},
    automation_condition=WINDOW_READY,
    code_version=code_version(training, model, features, pair_stats, frame_parts),
)
@waits_out_outages
def trained_model(
    context: AssetExecutionContext, config: TrainingConfig, trip_features: pq.ParquetFile, best_params: dict
):
    """The month's model with the best params and early stopping on the holdout, evaluated on month M.

    Logged to its MLflow run here; registered and given an alias only by the `model_gate` check,
    once this value is stored, so the registry never serves a model Dagster did not record.
    """
    from ml_assets.core import frame_parts, gate, tracking
    from ml_assets.core.lineage import record
    from ml_assets.core.training import train_and_evaluate

    started = time.monotonic()
    month, attrs = month_of(context), frame_parts.attrs(trip_features)
    mlflow = context.resources.mlflow
    with mlflow.run(f"trained_model {month}") as run:
        run_id = run.active_run().info.run_id
        run.set_tags(
            {
                "mlflow.runName": f"trained_model {month}",
                tracking.PARTITION_TAG: month,
                tracking.TRAINING_MONTHS_TAG: ",".join(attrs["training_months"]),
                tracking.TAXI_TAG: mlflow.taxi,
            }
        )
        stale = tracking.fail_stale_runs(run_id, lambda other: run_is_alive(context.instance, other))
        if stale:
            context.log.warning(f"marked FAILED the MLflow runs left RUNNING by runs that are over: {stale}")
        with mlflow.champion_must_load(f"trained_model {month}"):
            # What the champion of this moment scores; model_gate judges again.
            champion = tracking.load_champion(mlflow.taxi)
        if later := gate.tested_after(month, champion):
            context.log.info(
                f"trained_model {month}: the champion, version {champion[0].version}, was tested on {later} and may "
                f"have trained on {month}, so its RMSE here is no test score and is not recorded"
            )
            champion = None
        stopped, threads = {}, context.resources.compute.threads()
        deadline = started + config.timeout_seconds * (1 - TRAINING_TEARDOWN_SHARE)
        trained = train_and_evaluate(
            trip_features,
            best_params,
            champion,
            config.num_boost_round,
            config.early_stopping_rounds,
            threads,
            [model.stop_at(deadline, lambda epoch: stopped.setdefault("round", epoch))],
            refit=None if config.refit else False,  # when the budget leaves time for it
            deadline=deadline,
        )
        best_iteration, metrics, data = model.best_iteration(trained.model), trained.metrics, trained.data
        if stopped:
            context.log.warning(
                f"trained_model {month}: boosting stopped by the time budget ({config.timeout_seconds:.0f} s) "
                f"after round {stopped['round']}; best iteration {best_iteration}"
            )
        training_months = attrs["training_months"]
        lineage = record(
            test_month=month,
            training_months=training_months,
            raw_sha256={
                m: (latest_metadata(context.instance, RAW_TRIPS, m) or {}).get("sha256")
                for m in [*training_months, month]
            },
            feature_config=attrs.get("feature_config", {}),
            params=best_params,
            num_boost_round=trained.first_rounds,
            early_stopping_rounds=config.early_stopping_rounds,
            threads=threads,
            refit=trained.refitted,
        )
        logged = tracking.log_trained_model(
            params={
                **best_params,
                **config.model_dump(),
                **attrs.get("feature_config", {}),
                "feature_set": data.encoder["feature_set"],
                "window_months": len(training_months),
            },
            metrics={**metrics, "best_iteration": best_iteration},
            trained=trained.model,
            encoder=data.encoder,
            lineage=lineage,
            input_example=data.X[TEST][:5],
        )
        rmses = {"this model": metrics["rmse"], "champion": metrics.get("champion_rmse")}
        figures = ui_metadata.render_plots(
            plots.model_plots(
                data.y[TEST],
                trained.predicted,
                model.importance(trained.model),
                {**rmses, "baseline": metrics["baseline_rmse"]},
            ),
            context.log,
        )
        tracking.log_pngs(figures.pngs)
    return MaterializeResult(
        value=trained.model,
        metadata={
            **{name: round(value, 4) for name, value in metrics.items()},
            "train_rows": int(data.y[TRAIN].size),
            "valid_rows": int(data.y[VALID].size),
            "test_rows": int(data.y[TEST].size),
            "feature_count": int(data.X[TEST].shape[1]),
            "best_iteration": best_iteration,
            "stopped_by_time_budget": bool(stopped),
            "refit": trained.refitted,
            "xgboost_threads": threads,
            "raw_sha256": MetadataValue.json(lineage["raw_sha256"]),
            "test_rows_digest": trained.test_rows,  # the rows model_gate must find to judge it
            "mlflow_run_id": logged["run_id"],
            "mlflow_model_uri": logged["model_uri"],
            "mlflow_run": ui_metadata.mlflow_run_link(mlflow.ui_url, logged["experiment_id"], logged["run_id"]),
            **figures.metadata(),
        },
    )
