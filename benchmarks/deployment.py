"""Fixed overhead of the production topology: one month through it against `python -m ml_assets.runner`.

Both sides do the same work on the same real TLC files: ingest 2021-01 and 2021-02, then
features, tuning (a fixed trial count, so that both tune alike), the model and its predictions
for 2021-02.

- `runner`: `python -m ml_assets.runner 2021-02` in a fresh DAGSTER_HOME (`make run`'s path:
  one process, sqlite for Dagster, optuna and MLflow).
- `topology`: PostgreSQL, `mlflow server`, the gRPC code server, the webserver and the daemon
  (ml_assets_tests/topology.py, the processes of docker-compose.yml), started and ready before
  the clock starts (they are long-running services). Timed: from both month files landing in the
  source folder to `trip_duration_predictions` 2021-02, with nobody launching anything: the sensor
  ingests, automation trains, every run is a process the code server starts.

The topology's time is split into waiting for ticks (the automation sensor evaluates every 30 s,
Dagster's default; the new-month sensor every --sensor-interval seconds) and the runs themselves.
One run of each side (`--quick`: fewer trials). Prints figures; asserts nothing.

    python -m benchmarks.deployment            # about 5 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import DEFAULT_DATA, TEST_MONTH, TRAIN_MONTH, child_env, fresh_home, run_child

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.25


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory of TLC green files (read-only)")
    parser.add_argument("--trials", type=int, default=10, help="optuna trials on each side (default 10)")
    parser.add_argument("--sensor-interval", type=int, default=5,
                        help="seconds between new-month sensor ticks in the topology (production default 300)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 trials")
    args = parser.parse_args()
    if args.quick:
        args.trials = 3
    return args


def code_settings(trials: int) -> dict[str, str]:
    # The trial count, not the clock, bounds tuning: both sides run the same trials.
    return {"ML_ASSETS_TUNING_TRIALS": str(trials), "ML_ASSETS_TUNING_TIMEOUT_SECONDS": "3600"}


def runner_side(workdir: Path, data: Path, trials: int) -> float:
    home = fresh_home(workdir, "runner")
    env = {**child_env(home, data, TRAIN_MONTH), **code_settings(trials)}
    measured = run_child([sys.executable, "-m", "ml_assets.runner", TEST_MONTH], env, home / "runner.log")
    return measured.seconds


def topology_side(workdir: Path, data: Path, trials: int, sensor_interval: int) -> dict:
    sys.path.insert(0, str(ROOT / "ml_assets_tests"))
    from topology import Topology  # noqa: E402  (the test suite's topology, imported only here)

    from dagster import AssetKey, RunsFilter

    incoming = workdir / "incoming"
    incoming.mkdir()
    env = {"ML_ASSETS_SOURCE": str(incoming), "ML_ASSETS_START_MONTH": TRAIN_MONTH,
           "ML_ASSETS_SENSOR_INTERVAL_SECONDS": str(sensor_interval), **code_settings(trials)}
    with Topology(workdir / "topology", env=env) as topology:
        started = time.perf_counter()
        topology.wait_until_ready(300)
        ready = time.perf_counter() - started
        with topology.instance() as instance:
            start = time.time()
            for month in (TRAIN_MONTH, TEST_MONTH):
                name = f"green_tripdata_{month}.parquet"
                shutil.copy(data / name, incoming / f".{name}.partial")
                os.replace(incoming / f".{name}.partial", incoming / name)
            topology.wait_for(
                lambda: TEST_MONTH in instance.get_materialized_partitions(AssetKey("trip_duration_predictions")),
                f"{TEST_MONTH} through the topology", 1800, poll=0.5)
            end = time.time()
            records = [record for record in instance.get_run_records(RunsFilter())]
            spans = {}
            for record in records:
                run = record.dagster_run
                key = ("ingest" if run.tags.get("dagster/sensor_name") == "new_month_sensor" else "train",
                       run.tags.get("dagster/partition"))
                spans[key] = (record.create_timestamp.timestamp(), record.start_time, record.end_time, run.status.value)
    ingest_end = max(span[2] for key, span in spans.items() if key[0] == "ingest")
    training = spans[("train", TEST_MONTH)]
    return {"ready": ready, "seconds": end - start, "ingested": ingest_end - start,
            "tick_wait": training[0] - ingest_end, "training_run": training[2] - training[1], "spans": spans}


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="ml_assets_bench_deploy_") as tmp:
        workdir = Path(tmp)
        runner = runner_side(workdir, args.data, args.trials)
        topology = topology_side(workdir, args.data, args.trials, args.sensor_interval)
    ratio = topology["seconds"] / runner
    without_ticks = (topology["seconds"] - topology["tick_wait"]) / runner
    print(f"\nOne month ({TEST_MONTH}, its window {TRAIN_MONTH} ingested first; {args.trials} optuna trials on each side)")
    print(f"  python -m ml_assets.runner {TEST_MONTH}          {runner:7.1f} s   (one process, sqlite)")
    print(f"  production topology, file landed -> predictions {topology['seconds']:7.1f} s   "
          f"(services started and ready beforehand in {topology['ready']:.0f} s)")
    print(f"    ingested by the sensor after                   {topology['ingested']:7.1f} s   "
          f"(sensor every {args.sensor_interval} s)")
    print(f"    waiting for the automation tick                {topology['tick_wait']:7.1f} s   (Dagster default: 30 s)")
    print(f"    the training run (process start to end)        {topology['training_run']:7.1f} s")
    print(f"  ratio topology / runner                          {ratio:7.2f}   "
          f"(target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'})")
    print(f"  ratio without the automation tick wait           {without_ticks:7.2f}")


if __name__ == "__main__":
    main()
