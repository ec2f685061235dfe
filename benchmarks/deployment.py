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
One run of each side (`--quick`: fewer trials). Wall time and CPU time (user + system of every
process of the side) are printed, with the CPU the rest of the machine used meanwhile: on a
busy machine the wall times say little. Prints figures; asserts nothing.

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

from benchmarks.harness import (
    DEFAULT_DATA,
    TEST_MONTH,
    TRAIN_MONTH,
    _busy_cpu_seconds,
    child_env,
    fresh_home,
    run_child,
    step_seconds,
)

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.25


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory of TLC green files (read-only)")
    parser.add_argument("--trials", type=int, default=10, help="optuna trials on each side (default 10)")
    parser.add_argument(
        "--sensor-interval",
        type=int,
        default=5,
        help="seconds between new-month sensor ticks and automation evaluations in the topology "
        "(production defaults 300 and 30)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 trials")
    args = parser.parse_args()
    if args.quick:
        args.trials = 3
    return args


def code_settings(trials: int) -> dict[str, str]:
    # The trial count, not the clock, bounds tuning: both sides run the same trials.
    return {"ML_ASSETS_TUNING_TRIALS": str(trials), "ML_ASSETS_TUNING_TIMEOUT_SECONDS": "3600"}


def runner_side(workdir: Path, data: Path, trials: int) -> dict:
    home = fresh_home(workdir, "runner")
    env = {**child_env(home, data, TRAIN_MONTH), **code_settings(trials)}
    measured = run_child([sys.executable, "-m", "ml_assets.runner", TEST_MONTH], env, home / "runner.log")
    from dagster import DagsterInstance

    from ml_assets.materializations import latest_materialization

    with DagsterInstance.from_config(str(home)) as instance:
        run_id, _ = latest_materialization(instance, "trained_model")
        steps = step_seconds(instance, run_id)
    return {
        "seconds": measured.seconds,
        "cpu": measured.cpu_seconds,
        "others_cpu": measured.others_cpu_seconds,
        "steps": steps,
    }


def topology_side(workdir: Path, data: Path, trials: int, sensor_interval: int) -> dict:
    from dagster import AssetKey, RunsFilter

    from ml_assets_tests.topology import Topology  # the test suite's topology, imported only here

    incoming = workdir / "incoming"
    incoming.mkdir()
    env = {
        "ML_ASSETS_SOURCE": str(incoming),
        "ML_ASSETS_START_MONTH": TRAIN_MONTH,
        "ML_ASSETS_SENSOR_INTERVAL_SECONDS": str(sensor_interval),
        "ML_ASSETS_AUTOMATION_INTERVAL_SECONDS": str(sensor_interval),
        **code_settings(trials),
    }
    with Topology(workdir / "topology", env=env) as topology:
        started = time.perf_counter()
        topology.wait_until_ready(300)
        ready = time.perf_counter() - started
        with topology.instance() as instance:
            cpu_before, busy_before, start = topology.cpu_seconds(), _busy_cpu_seconds(), time.time()
            for month in (TRAIN_MONTH, TEST_MONTH):
                name = f"green_tripdata_{month}.parquet"
                shutil.copy(data / name, incoming / f".{name}.partial")
                os.replace(incoming / f".{name}.partial", incoming / name)
            topology.wait_for(
                lambda: TEST_MONTH in instance.get_materialized_partitions(AssetKey("trip_duration_predictions")),
                f"{TEST_MONTH} through the topology",
                1800,
                poll=0.5,
            )
            end = time.time()
            # Run records are complete once every run has ended (RUN_SUCCESS follows the last step).
            topology.wait_for(
                lambda: all(record.end_time for record in instance.get_run_records(RunsFilter()) if record.start_time),
                "every run ended",
                300,
                poll=0.5,
            )
            cpu_after, busy = topology.cpu_seconds(), _busy_cpu_seconds() - busy_before
            cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
            spans = {}
            for record in instance.get_run_records(RunsFilter()):
                run = record.dagster_run
                kind = "ingest" if run.tags.get("dagster/sensor_name") == "new_month_sensor" else "train"
                spans[(kind, run.tags.get("dagster/partition"))] = (
                    record.create_timestamp.timestamp(),
                    record.start_time,
                    record.end_time,
                    run.run_id,
                )
            steps = step_seconds(instance, spans[("train", TEST_MONTH)][3])
    ingest_end = max(span[2] for key, span in spans.items() if key[0] == "ingest")
    training = spans[("train", TEST_MONTH)]
    total_cpu = sum(cpu.values())
    return {
        "ready": ready,
        "seconds": end - start,
        "ingested": ingest_end - start,
        "tick_wait": training[0] - ingest_end,
        "training_run": training[2] - training[1],
        "cpu": total_cpu,
        "cpu_by_service": cpu,
        "others_cpu": max(busy - total_cpu, 0.0),
        "steps": steps,
    }


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="ml_assets_bench_deploy_") as tmp:
        workdir = Path(tmp)
        runner = runner_side(workdir, args.data, args.trials)
        print(f"runner: {runner['seconds']:.1f} s", flush=True)
        topology = topology_side(workdir, args.data, args.trials, args.sensor_interval)
    ratio = topology["seconds"] / runner["seconds"]
    without_ticks = (topology["seconds"] - topology["tick_wait"]) / runner["seconds"]
    print(
        f"\nOne month ({TEST_MONTH}, its window {TRAIN_MONTH} ingested first; {args.trials} optuna trials on each side)"
    )
    print(
        f"  python -m ml_assets.runner {TEST_MONTH}            {runner['seconds']:7.1f} s   CPU {runner['cpu']:6.1f} s"
        f"   (one process, sqlite; other processes used {runner['others_cpu']:.0f} CPU s meanwhile)"
    )
    print(
        f"  production topology, files landed -> predictions {topology['seconds']:7.1f} s   "
        f"CPU {topology['cpu']:6.1f} s   (other processes used {topology['others_cpu']:.0f} CPU s meanwhile)"
    )
    print(f"    services started and ready beforehand in {topology['ready']:.0f} s (not counted)")
    print(
        f"    ingested by the sensor after {topology['ingested']:.1f} s (sensor every {args.sensor_interval} s; "
        f"production default 300 s)"
    )
    print(f"    waiting for the automation tick {topology['tick_wait']:.1f} s (Dagster's default interval: 30 s)")
    print(f"    the training run, process start to end {topology['training_run']:.1f} s")
    print(
        "    CPU by service: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in topology["cpu_by_service"].items())
    )
    print(f"  step seconds {'':18} {'runner':>8} {'topology':>9}")
    for step in sorted(set(runner["steps"]) | set(topology["steps"])):
        ours, theirs = runner["steps"].get(step, float("nan")), topology["steps"].get(step, float("nan"))
        print(f"    {step:30} {ours:8.1f} {theirs:9.1f}")
    print(
        f"  ratio topology / runner, wall time                 {ratio:6.2f}   "
        f"(target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'})"
    )
    print(f"  ratio without the automation tick wait             {without_ticks:6.2f}")
    print(f"  ratio of CPU time                                  {topology['cpu'] / runner['cpu']:6.2f}")


if __name__ == "__main__":
    main()
