"""Fixed overhead of the production topology: one month through it against `python -m ml_assets.runner`.

Both sides do the same work on the same real TLC files: ingest 2021-01 and 2021-02, then
features, tuning (a fixed trial count, so that both tune alike), the model and its predictions
for 2021-02.

- `runner`: `python -m ml_assets.runner 2021-02` (`make run`'s path: one process, sqlite for
  Dagster, optuna and MLflow). First in a fresh DAGSTER_HOME, which ingests 2021-01 first; then
  `--repeat` times again in that home, the window ingested: the month alone.
- `topology`: PostgreSQL behind PgBouncer, `mlflow server`, the gRPC code server, the webserver and the daemon
  (ml_assets/deploy/local/, the processes of docker-compose.yml), started and ready before
  the clock starts (they are long-running services).
  - unattended: from both month files landing in the source folder to `trip_duration_predictions`
    2021-02, with nobody launching anything: the sensor ingests, automation trains. Compared with
    the runner's first run. The time is split into waiting for ticks (automation every
    --sensor-interval seconds here; Dagster's default 30 s) and the runs themselves.
  - launched: then, sensors stopped, the whole graph for 2021-02 launched `--repeat` times from
    the webserver as the UI's "Materialize" does (queued, started by the code server in its own
    process), from the launch to the run's end. Compared with the runner's later runs: both are one
    month, started by a person, its window ingested. This pair is the target figure (<= 1.25).

Wall time and CPU time (user + system of every process of the side) are printed, with the CPU the
rest of the machine used meanwhile: on a busy machine the wall times say little. The fastest of
the repeats counts on each side. Prints figures; asserts nothing.

    python -m benchmarks.deployment            # about 10 minutes on 2 cores

The figures also replace the `deployment` section of docs/benchmarks.md (benchmarks.report); a
`--quick` run writes none unless `--report` names a file.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import report
from benchmarks.harness import (
    DEFAULT_DATA,
    TEST_MONTH,
    TRAIN_MONTH,
    busy_cpu_seconds,
    child_env,
    fresh_home,
    run_child,
    step_seconds,
)

TARGET_RATIO = 1.25


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory of TLC green files (read-only)")
    parser.add_argument("--trials", type=int, default=10, help="optuna trials on each side (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="launched months on each side (default 3)")
    parser.add_argument(
        "--sensor-interval",
        type=int,
        default=5,
        help="seconds between new-month sensor ticks and automation evaluations in the topology "
        "(production defaults 300 and 30)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 trials, one launched month a side")
    report.add_arguments(parser, "`deployment` section is")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.repeat = 3, 1
    args.report = report.destination(args)
    return args


def code_settings(trials: int) -> dict[str, str]:
    # The trial count, not the clock, bounds tuning: both sides run the same trials.
    return {"ML_ASSETS_TUNING_TRIALS": str(trials), "ML_ASSETS_TUNING_TIMEOUT_SECONDS": "3600"}


def runner_side(workdir: Path, data: Path, trials: int, repeat: int) -> dict:
    """The runner's first month in a fresh home, then the month alone `repeat` times."""
    from dagster import DagsterInstance

    from ml_assets.records import latest_materialization

    home = fresh_home(workdir, "runner")
    env = {**child_env(home, data, TRAIN_MONTH), **code_settings(trials)}
    runs = []
    for i in range(1 + repeat):
        measured = run_child([sys.executable, "-m", "ml_assets.runner", TEST_MONTH], env, home / f"runner{i}.log")
        with DagsterInstance.from_config(str(home)) as instance:
            run_id, _ = latest_materialization(instance, "trained_model")
            steps = step_seconds(instance, run_id)
        runs.append(
            {
                "seconds": measured.seconds,
                "cpu": measured.cpu_seconds,
                "others_cpu": measured.others_cpu_seconds,
                "steps": steps,
            }
        )
    return {"first": runs[0], "months": runs[1:]}


def _cpu_since(topology, before: dict[str, float], busy_before: float) -> tuple[dict[str, float], float]:
    """CPU seconds by service since `before`, and what the rest of the machine used meanwhile."""
    after, busy = topology.cpu_seconds(), busy_cpu_seconds() - busy_before
    cpu = {name: after[name] - before.get(name, 0.0) for name in after}
    return cpu, max(busy - sum(cpu.values()), 0.0)


def unattended(topology, instance, data: Path, incoming: Path) -> dict:
    """Both month files land in the source folder; the sensor and automation do the rest."""
    from dagster import AssetKey, RunsFilter

    cpu_before, busy_before, start = topology.cpu_seconds(), busy_cpu_seconds(), time.time()
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
    cpu, others = _cpu_since(topology, cpu_before, busy_before)
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
    ingest_end = max(span[2] for key, span in spans.items() if key[0] == "ingest")
    training = spans[("train", TEST_MONTH)]
    return {
        "seconds": end - start,
        "ingested": ingest_end - start,
        "tick_wait": training[0] - ingest_end,
        "training_run": training[2] - training[1],
        "cpu": sum(cpu.values()),
        "cpu_by_service": cpu,
        "others_cpu": others,
        "steps": step_seconds(instance, training[3]),
    }


def launched(topology, instance) -> dict:
    """The whole graph for the month, launched from the webserver; from the launch to the run's end."""
    from dagster import RunsFilter

    from ml_assets.deploy.local.ui_actions import launch

    cpu_before, busy_before, start = topology.cpu_seconds(), busy_cpu_seconds(), time.time()
    run_id = launch(topology, TEST_MONTH)  # every asset
    topology.wait_for(lambda: instance.get_run_by_id(run_id).is_finished, f"run {run_id}", 1800, poll=0.2)
    (record,) = instance.get_run_records(RunsFilter(run_ids=[run_id]))
    assert record.dagster_run.is_success, f"run {run_id} failed:\n{topology.logs()}"
    cpu, others = _cpu_since(topology, cpu_before, busy_before)
    return {
        "seconds": record.end_time - start,
        "queued": record.start_time - start,
        "cpu": sum(cpu.values()),
        "cpu_by_service": cpu,
        "others_cpu": others,
        "steps": step_seconds(instance, run_id),
    }


def topology_side(workdir: Path, data: Path, trials: int, sensor_interval: int, repeat: int) -> dict:
    from ml_assets.deploy.local.topology import Topology
    from ml_assets.deploy.local.ui_actions import stop_sensors

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
            first = unattended(topology, instance, data, incoming)
            stop_sensors(topology)
            months = [launched(topology, instance) for _ in range(repeat)]
    return {"ready": ready, "unattended": first, "months": months}


def fastest(runs: list[dict]) -> dict:
    return min(runs, key=lambda run: run["seconds"])


def seconds(runs: list[dict]) -> str:
    return ", ".join(f"{run['seconds']:.1f}" for run in runs)


def print_steps(runner: dict, topology: dict) -> None:
    print(f"    step seconds {'':18} {'runner':>8} {'topology':>9}")
    for step in sorted(set(runner["steps"]) | set(topology["steps"])):
        ours, theirs = runner["steps"].get(step, float("nan")), topology["steps"].get(step, float("nan"))
        print(f"      {step:30} {ours:8.1f} {theirs:9.1f}")


def print_cpu(side: dict) -> None:
    print("    CPU by service: " + ", ".join(f"{name} {sec:.1f} s" for name, sec in side["cpu_by_service"].items()))


def md_deployment(runner: dict, topology: dict, args: argparse.Namespace) -> list[str]:
    """docs/benchmarks.md: the launched month (the target figure), then the unattended one."""

    def side_by_side(ours: dict, theirs: dict, all_ours: str, all_theirs: str) -> str:
        rows = [
            ("**wall**", f"**{ours['seconds']:.1f}**", f"**{theirs['seconds']:.1f}**"),
            ("every run's wall", all_ours, all_theirs),
            ("CPU, user + system of every process", f"{ours['cpu']:.1f}", f"{theirs['cpu']:.1f}"),
            ("other processes' CPU meanwhile", f"{ours['others_cpu']:.0f}", f"{theirs['others_cpu']:.0f}"),
        ]
        for step in sorted(set(ours["steps"]) | set(theirs["steps"])):
            figures = (
                f"{side['steps'][step]:.1f}" if step in side["steps"] else report.MISSING for side in (ours, theirs)
            )
            rows.append((f"`{step}`" if step != "run" else "the run, RUN_START to RUN_SUCCESS", *figures))
        return report.table(["seconds", "runner", "topology"], rows)

    alone, ours = fastest(topology["months"]), fastest(runner["months"])
    first, fresh = topology["unattended"], runner["first"]
    launched_ratio, unattended_ratio = alone["seconds"] / ours["seconds"], first["seconds"] / fresh["seconds"]
    target = report.verdict(round(launched_ratio, 2), TARGET_RATIO)
    return [
        f"One month ({TEST_MONTH}, its window {TRAIN_MONTH}), {args.trials} optuna trials on each side; runner: "
        f"`python -m ml_assets.runner {TEST_MONTH}`; the topology's services started and ready beforehand in "
        f"{topology['ready']:.0f} s (not counted).",
        f"**A. Launched** from the webserver, the window already ingested; fastest of {args.repeat} on each side. "
        f"Queued and started by the code server in {alone['queued']:.1f} s.",
        side_by_side(ours, alone, seconds(runner["months"]), seconds(topology["months"])),
        f"**Topology ÷ runner, wall: {launched_ratio:.2f}** ({target}); CPU {alone['cpu'] / ours['cpu']:.2f}.",
        f"**B. Unattended**: both files land, the sensor ingests, automation trains (ticks every "
        f"{args.sensor_interval} s); the runner in a fresh home, ingesting {TRAIN_MONTH} first. Ingested after "
        f"{first['ingested']:.1f} s; the training run created {first['tick_wait']:+.1f} s after the last ingestion "
        f"run ended, and ran {first['training_run']:.1f} s.",
        side_by_side(fresh, first, f"{fresh['seconds']:.1f}", f"{first['seconds']:.1f}"),
        f"**Topology ÷ runner, wall: {unattended_ratio:.2f}**; CPU {first['cpu'] / fresh['cpu']:.2f}.",
    ]


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="ml_assets_bench_deploy_") as tmp:
        workdir = Path(tmp)
        runner = runner_side(workdir, args.data, args.trials, args.repeat)
        print(f"runner: {seconds([runner['first'], *runner['months']])} s", flush=True)
        topology = topology_side(workdir, args.data, args.trials, args.sensor_interval, args.repeat)

    alone, ours = fastest(topology["months"]), fastest(runner["months"])
    ratio = alone["seconds"] / ours["seconds"]
    print(f"\nOne month ({TEST_MONTH}, its window {TRAIN_MONTH}; {args.trials} optuna trials on each side)")
    print(f"  services started and ready beforehand in {topology['ready']:.0f} s (not counted)")
    print("\n  A. Launched by a person, the window already ingested (fastest of each side's runs)")
    print(
        f"  python -m ml_assets.runner {TEST_MONTH}            {ours['seconds']:7.1f} s   CPU {ours['cpu']:6.1f} s"
        f"   (all: {seconds(runner['months'])} s; "
        f"other processes used {ours['others_cpu']:.0f} CPU s meanwhile)"
    )
    print(
        f"  launched from the webserver, launch -> run end    {alone['seconds']:7.1f} s   CPU {alone['cpu']:6.1f} s"
        f"   (all: {seconds(topology['months'])} s; "
        f"other processes used {alone['others_cpu']:.0f} CPU s meanwhile)"
    )
    print(f"    queued and started by the code server in {alone['queued']:.1f} s")
    print_cpu(alone)
    print_steps(ours, alone)
    print(
        f"  ratio topology / runner, wall time                 {ratio:6.2f}   "
        f"(target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'})"
    )
    print(f"  ratio of CPU time                                  {alone['cpu'] / ours['cpu']:6.2f}")

    first, fresh = topology["unattended"], runner["first"]
    print("\n  B. Unattended: both files land, the sensor ingests, automation trains")
    print(
        f"  python -m ml_assets.runner {TEST_MONTH}, fresh home  {fresh['seconds']:7.1f} s   CPU {fresh['cpu']:6.1f} s"
        f"   (ingests {TRAIN_MONTH} first; other processes used {fresh['others_cpu']:.0f} CPU s meanwhile)"
    )
    print(
        f"  topology, files landed -> predictions             {first['seconds']:7.1f} s   CPU {first['cpu']:6.1f} s"
        f"   (other processes used {first['others_cpu']:.0f} CPU s meanwhile)"
    )
    print(
        f"    ingested by the sensor after {first['ingested']:.1f} s (sensor every {args.sensor_interval} s; "
        f"production default 300 s)"
    )
    print(
        f"    the training run created {first['tick_wait']:+.1f} s after the last ingestion run ended "
        f"(automation every {args.sensor_interval} s, Dagster's default 30 s; it may see the month's "
        "materialization before that run records its end)"
    )
    print(f"    the training run, process start to end {first['training_run']:.1f} s")
    print_cpu(first)
    print_steps(fresh, first)
    print(f"  ratio topology / runner, wall time                 {first['seconds'] / fresh['seconds']:6.2f}")
    print(f"  ratio of CPU time                                  {first['cpu'] / fresh['cpu']:6.2f}")

    if args.report is not None:
        command = f"python -m benchmarks.deployment {shlex.join(sys.argv[1:])}".rstrip()
        others = sum(run["others_cpu"] for run in [*runner["months"], fresh, first, *topology["months"]])
        provenance = report.Provenance(command, others)
        title = "Production topology against `make run` (`make bench-deployment`)"
        parts = md_deployment(runner, topology, args)
        report.write_section("deployment", report.section("deployment", title, provenance, parts), args.report)


if __name__ == "__main__":
    main()
