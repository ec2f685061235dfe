"""The code location: every asset, check, resource, job and automation of ml_assets."""

import gc

from dagster import Definitions, load_assets_from_modules

from ml_assets.assets import features, ingestion, monitoring, predictions, training
from ml_assets.automation.conditions import training_automation_sensor
from ml_assets.automation.jobs import ingest_month_job, retrain_month_job
from ml_assets.automation.pool_watch import pool_watch_sensor
from ml_assets.automation.schedules import monthly_retrain_schedule
from ml_assets.automation.sensors import new_month_sensor
from ml_assets.checks.champion_decay import champion_decay
from ml_assets.checks.drift import cleaned_trips_drift
from ml_assets.checks.model_gate import model_gate
from ml_assets.core.tables import release_memory_promptly
from ml_assets.deploy.executor import run_executor
from ml_assets.resources import build_resources

release_memory_promptly()  # every process that runs steps loads this module

all_assets = load_assets_from_modules([ingestion, features, training, predictions, monitoring])
all_asset_checks = [cleaned_trips_drift, model_gate, champion_decay]

defs = Definitions(
    assets=all_assets,
    asset_checks=all_asset_checks,
    executor=run_executor(),
    resources=build_resources(),
    jobs=[ingest_month_job, retrain_month_job],
    sensors=[new_month_sensor, training_automation_sensor, pool_watch_sensor],
    schedules=[monthly_retrain_schedule],
)

# What is loaded now lives as long as the process: frozen, it is not traversed again by each full
# collection (about 1 s of a one-month run; docs/benchmarks.md, phase 4).
gc.freeze()
