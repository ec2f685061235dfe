"""Model quality and speed of ml_assets on real TLC green-taxi data; prints figures, asserts nothing.

1. The course split (train 2021-01, test 2021-02): the course's XGBoost, its LinearRegression,
   and ours (the Dagster graph with default config).
2. 2023 months, each trained on the months before it (the default window): ours against the figure before
   issue 18 and the LinearRegression baseline, with validation beside test RMSE.
2b. Ablation: each ingredient of the `rich` feature set, the window and the recency weight, on the 2023
   months, with fixed params (benchmarks.ablation).
3. Wall time per step and peak memory of the one-month run.
4. Orchestration overhead: `dagster asset materialize` against the same work in plain Python.
5-8. Large months, time budgets, backfills, the tuning budget against a long study (benchmarks.scale).
9. Monitoring: model_performance scoring twelve registered versions on one month (benchmarks.monitoring).

Each phase runs in its own process and a fresh, temporary DAGSTER_HOME. `--quick` is a smoke run;
`--only` runs some phases (e.g. `--only overhead backfill`; `long` then runs its study without
`--long`), without the summary.

Each phase, once measured, replaces its own section of docs/benchmarks.md (benchmarks.report): the
page holds the latest figures of every phase. A `--quick` run writes none unless `--report` names a file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

from benchmarks import report, scale
from benchmarks.ablation import FIRST
from benchmarks.harness import (
    DEFAULT_DATA,
    TEST_MONTH,
    TRAIN_MONTH,
    Measured,
    child_env,
    fresh_home,
    run_child,
    run_module,
    step_seconds,
)
from benchmarks.report import MISSING, table
from ml_assets.core.features import HOLDOUT_DAYS

MONTHS_2023 = ["2023-02", "2023-03", "2023-04", "2023-05", "2023-06"]
# --only's names: phases 1 and 3 (course), 2 (months), 2b (ablation), 4, 5-6 (sizes), 7, 8, 9.
PHASES = ["course", "months", "ablation", "overhead", "sizes", "backfill", "long", "monitoring"]
MONITORED_VERSIONS = 12
LONG_STUDY_MONTH = "2023-04"
TARGET_RMSE, TARGET_RATIO = 5.3, 1.15  # the course split: 5.7 at first, 5.3 since issue 18
# Phase 2's test RMSE of the default model before issue 18 (its target: 5 % lower), and where the figure comes
# from: `make bench` as the issue quotes it, or the same configuration measured outside the project for 2023-05,
# which `make bench` did not run by default then.
BEFORE_ISSUE_18 = {
    "2023-04": (4.420, "make bench"),
    "2023-05": (4.577, "same configuration, measured outside the project"),
    "2023-06": (4.609, "make bench"),
}
TUNING_TIMEOUT = 3600.0  # generous: the trial count, not the clock, bounds tuning in phase 4
# The plain script's stages; a check's step counts with the asset it checks (its key starts with the name).
# (The ingestion op makes raw_trips and cleaned_trips; the cleaned_trips row is its drift check.)
ASSETS = ["ingest_trips", "cleaned_trips", "trip_features", "best_params", "trained_model", "trip_duration_predictions"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory of TLC green files (read-only)")
    parser.add_argument(
        "--months",
        nargs="+",
        choices=MONTHS_2023,
        help="2023 months for phase 2 (default 2023-04 2023-05 2023-06; each month adds 2-6 min)",
    )
    parser.add_argument("--trials", type=int, help="optuna trials on each side of phase 4 (default 10)")
    parser.add_argument(
        "--repeat",
        type=int,
        help="phase 4 pairs, alternating which side goes first; the fastest of each side counts (default 5: "
        "with 3, the machine's own noise moved the figure more than the CLI's extra cost)",
    )
    parser.add_argument("--rows", type=int, help="trips per synthetic month of phases 5-6 (default 3,400,000)")
    parser.add_argument(
        "--tuning-timeout", type=float, default=60.0, help="best_params budget of phases 5-6 (default 60 s)"
    )
    parser.add_argument("--long", action="store_true", help="phase 8: also run the long study (about 25 minutes)")
    parser.add_argument("--long-minutes", type=float, default=20.0, help="length of the long study (default 20)")
    parser.add_argument(
        "--only", nargs="+", choices=PHASES, help="run only these phases (`long`: phase 8 with its default-budget run)"
    )
    parser.add_argument("--course-rounds", type=int, help="boosting rounds of the course XGBoost (default 1000)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2023-06 only, 3 trials, 2 pairs, 100 course rounds (figures not comparable)",
    )
    report.add_arguments(parser, "phase sections are")
    args = parser.parse_args()
    args.report = report.destination(args)
    args.months = args.months or (["2023-06"] if args.quick else [LONG_STUDY_MONTH, "2023-05", "2023-06"])
    args.trials = args.trials or (3 if args.quick else 10)
    args.repeat = args.repeat or (2 if args.quick else 5)
    args.course_rounds = args.course_rounds or (100 if args.quick else 1000)
    args.rows = args.rows or (200_000 if args.quick else 3_400_000)
    return args


def course(workdir: Path, data: Path, rounds: int, months: list[str] | None = None) -> dict:
    """Phase 1a-b, Dagster-free; with `months`, the course's XGBoost on each of them instead (phase 2's column)."""
    state = fresh_home(workdir, "course-months" if months else "course")
    args = ["--data", str(data), "--rounds", str(rounds), *(["--months", *months] if months else [])]
    measured, result = run_module("benchmarks.course", args, child_env(state, data, TRAIN_MONTH), state)
    return {**result, "others_cpu": measured.others_cpu_seconds}


def materialize(workdir: Path, name: str, data: Path, start_month: str, months: list[str]) -> dict:
    """Phases 1c-3: months through Dagster in-process with default config (`make run`'s path)."""
    home = fresh_home(workdir, name)
    measured, result = run_module("benchmarks.materialize", months, child_env(home, data, start_month), home)
    return {**result, "others_cpu": measured.others_cpu_seconds}


def cli_run(workdir: Path, name: str, data: Path, trials: int) -> tuple[Measured, Path, str]:
    """The whole graph for 2021-02 by `dagster asset materialize`, its window's ingestion first (untimed)."""
    config = {"ops": {"best_params": {"config": {"n_trials": trials, "timeout_seconds": TUNING_TIMEOUT}}}}
    home = fresh_home(workdir, name)
    env = child_env(home, data, TRAIN_MONTH)
    dagster = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "ml_assets.definitions"]
    run_child([*dagster, "--select", "raw_trips,cleaned_trips", "--partition", TRAIN_MONTH], env, home / "ingest.log")
    command = [*dagster, "--select", "*", "--partition", TEST_MONTH, "--config-json", json.dumps(config)]
    return run_child(command, env, home / "cli.log"), home, shlex.join(["dagster", *command[1:]])


def plain_run(workdir: Path, name: str, data: Path, trials: int) -> tuple[Measured, dict]:
    state = fresh_home(workdir, name)
    return run_module(
        "benchmarks.plain",
        [
            "--data",
            str(data),
            "--state",
            str(state),
            "--train",
            TRAIN_MONTH,
            "--test",
            TEST_MONTH,
            "--trials",
            str(trials),
            "--timeout",
            str(TUNING_TIMEOUT),
        ],
        child_env(state, data, TRAIN_MONTH),
        state,
    )


def overhead(workdir: Path, data: Path, trials: int, repeat: int) -> dict:
    """Phase 4: CLI and plain runs on fresh storage each; the fastest run of each side counts."""
    cli, plain = [], []
    for i in range(repeat):  # alternate which side goes first, so a burst of other load hits both alike
        if i % 2 == 0:
            cli.append(cli_run(workdir, f"cli{i}", data, trials))
        plain.append(plain_run(workdir, f"plain{i}", data, trials))
        if i % 2 == 1:
            cli.append(cli_run(workdir, f"cli{i}", data, trials))
    cli_measured, home, command = min(cli, key=lambda run: run[0].seconds)
    plain_measured, plain_result = min(plain, key=lambda run: run[0].seconds)
    return {
        "cli": cli_measured,
        "cli_result": _cli_result(home),
        "cli_command": command,
        "plain": plain_measured,
        "plain_result": plain_result,
        "cli_all": [run[0] for run in cli],
        "plain_all": [run[0] for run in plain],
    }


def _cli_result(home: Path) -> dict:
    """The CLI run's RMSE, trial count and step times, from its instance.

    Dagster is imported here, once every child has run, to keep the parent small until then.
    """
    from dagster import DagsterInstance

    from ml_assets.records import latest_materialization

    with DagsterInstance.from_config(str(home)) as instance:
        _, model = latest_materialization(instance, "trained_model")
        run_id, params = latest_materialization(instance, "best_params")
        return {"rmse": model["rmse"], "trials_run": params["trials_run"], "steps": step_seconds(instance, run_id)}


def ablation(workdir: Path, data: Path, months: list[str]) -> dict:
    """Phase 2b, Dagster-free."""
    state = fresh_home(workdir, "ablation")
    measured, result = run_module(
        "benchmarks.ablation", ["--data", str(data), "--months", *months], child_env(state, data, FIRST), state
    )
    return {**result, "others_cpu": measured.others_cpu_seconds}


def md_ablation(result: dict, months: list[str]) -> list[str]:
    rows = []
    for name, by_month in result["variants"].items():
        cells = []
        for month in months:
            figures = by_month.get(month)
            if figures is None:
                cells += [MISSING, MISSING]
                continue
            same = " (as above: no longer window in the data)" if figures.get("same_as_shorter_window") else ""
            cells += [f"{figures['valid_rmse']:.3f}", f"{figures['test_rmse']:.3f}{same}"]
        rows.append((name, *cells))
    headers = ["variant", *(f"{month} {kind}" for month in months for kind in ("valid", "test"))]
    params = ", ".join(f"{k} {v:g}" for k, v in result["params"].items())
    return [
        "Each row adds one thing to the row above; fixed params (`DEFAULT_PARAMS`: "
        f"{params}), no tuning; *valid*: RMSE on the window's newest {HOLDOUT_DAYS} days (which also stop the "
        f"boosting), *test*: the month itself. Windows start at {FIRST}, so 2023-04 has three months at most. "
        "The row in brackets only shows the recency weight (the next row adds the refit to the one above it); "
        "a refit model keeps the holdout score of the model that chose its rounds.",
        table(headers, rows),
    ]


def print_ablation(result: dict, months: list[str]) -> None:
    print("\n2b. Ablation (fixed params; valid / test RMSE)")
    for name, by_month in result["variants"].items():
        cells = " ".join(
            f"{by_month[m]['valid_rmse']:.3f}/{by_month[m]['test_rmse']:.3f}" if m in by_month else "-" for m in months
        )
        print(f"   {name:55} {cells}")


def monitoring(workdir: Path, versions: int) -> dict:
    """Phase 9: synthetic months, one-month windows, one tuning trial: only the registered versions matter."""
    home = fresh_home(workdir, "monitoring")
    env = child_env(home, Path("synthetic"), TRAIN_MONTH)
    env.update(
        ML_ASSETS_SOURCE="synthetic",
        ML_ASSETS_SYNTHETIC_PUBLISHED_THROUGH="2099-12",
        ML_ASSETS_TRAINING_MONTHS="1",
        ML_ASSETS_TUNING_TRIALS="1",
        ML_ASSETS_TUNING_TIMEOUT_SECONDS="5",
    )
    measured, result = run_module("benchmarks.monitoring", ["--versions", str(versions)], env, home)
    return {**result, "others_cpu": measured.others_cpu_seconds}


def print_monitoring(result: dict) -> None:
    print(f"\n9. model_performance: {result['versions']} registered versions scored on {result['month']}")
    print(
        f"   {result['trips']} trips: the step took {result['seconds']:.1f} s (its run {result['run_seconds']:.1f} s); "
        f"training the {result['versions']} months took {result['training_seconds']:.0f} s"
    )


def md_monitoring(result: dict) -> list[str]:
    row = (
        str(result["versions"]),
        result["month"],
        str(result["trips"]),
        f"{result['seconds']:.1f}",
        f"{result['run_seconds']:.1f}",
    )
    return [table(["versions", "scored month", "trips", "model_performance step (s)", "its run (s)"], [row])]


def per_asset(steps: dict[str, float]) -> dict[str, float]:
    """Step times summed per step of ASSETS, a check's step with the asset it checks."""
    totals = dict.fromkeys(ASSETS, 0.0)
    for step, seconds in steps.items():
        owner = max((asset for asset in ASSETS if step.startswith(asset)), key=len, default=None)
        if owner:
            totals[owner] += seconds
    return totals


def verdict(value: float, target: float) -> str:
    return f"target <= {target}: {'met' if value <= target else 'NOT met'}"


def print_course(result: dict, ours: dict) -> None:
    xgb = result["xgboost"]
    print(f"\n1. Course split: train {TRAIN_MONTH}, test {TEST_MONTH} (test RMSE, minutes)")
    print(
        f"   (a) course XGBoost, DictVectorizer(PU_DO + trip_distance)  {xgb['rmse']:.3f}   "
        f"({xgb['rounds']} rounds max, best iteration {xgb['best_iteration']}, {xgb['seconds']:.0f} s)"
    )
    print(f"       params {xgb['params']}")
    print("       NB: early stopping watches the TEST month, as the course does: this figure peeks at the test set")
    print(f"   (b) LinearRegression on course features (baseline_rmse)   {result['linear_rmse']:.3f}")
    print(
        f"   (c) ours: Dagster graph, default config (trained_model)    {ours['rmse']:.3f}   "
        f"({verdict(ours['rmse'], TARGET_RMSE)}; tuning ran {ours['trials_run']} trials in its time budget)"
    )


def print_months(months: dict) -> None:
    print(f"\n2. 2023 months (ML_ASSETS_START_MONTH={FIRST}; each trains on the months before it, default config)")
    print(
        f"   {'month':8} {'ours':>6} {'valid':>6} {'study':>6} {'before':>7} {'change':>7} "
        f"{'course':>7} {'baseline':>9} {'gain':>6} {'trials':>7} {'wall s':>7}"
    )
    for month, result in months.items():
        gain = 1 - result["rmse"] / result["baseline_rmse"]
        before = BEFORE_ISSUE_18.get(month, (None, ""))[0]
        change = f"{result['rmse'] / before - 1:+.2%}" if before else "-"
        print(
            f"   {month:8} {result['rmse']:6.4f} {result.get('model_valid_rmse') or float('nan'):6.3f} "
            f"{result['valid_rmse']:6.3f} {before or float('nan'):7.3f} {change:>7} {result['course_rmse']:7.3f} "
            f"{result['baseline_rmse']:9.3f} "
            f"{gain:6.1%} {result['trials_run']:7d} {result['seconds']:7.0f}"
        )
        print(f"            params {result.get('params')}")
    skipped = [m for m in MONTHS_2023 if m not in months]
    if skipped:
        print(f"   not run: {', '.join(skipped)} (--months {' '.join(MONTHS_2023)} runs all)")


def print_steps(result: dict, peak: dict) -> None:
    steps = dict(result["steps"])
    run = steps.pop("run")
    print(f"\n3. One-month run {TEST_MONTH} (in-process, default config): wall time per step from the event log")
    for step, seconds in steps.items():
        print(f"   {step:38} {seconds:6.1f} s")
    print(
        f"   {'sum of steps':38} {sum(steps.values()):6.1f} s; run (RUN_START..RUN_SUCCESS) {run:.1f} s; "
        f"whole call incl. the {TRAIN_MONTH} ingestion run {result['seconds']:.1f} s"
    )
    print(f"   peak RSS (ru_maxrss): self {peak['self']:.0f} MiB, children {peak['children']:.0f} MiB")
    print(
        "   (children: processes the run spawned; a child's ru_maxrss starts at its parent's resident set when spawned)"
    )


def print_overhead(result: dict, trials: int, repeat: int) -> None:
    cli, plain = result["cli"], result["plain"]
    steps, stages = per_asset(result["cli_result"]["steps"]), result["plain_result"]["stages"]
    print(
        f"\n4. Orchestration overhead, {TEST_MONTH}, n_trials={trials} (timeout {TUNING_TIMEOUT:.0f} s) on both sides"
    )
    print(f"   CLI:   {result['cli_command']}")
    print(f"          after an untimed CLI call materializing raw_trips,cleaned_trips for {TRAIN_MONTH}")
    print(f"   plain: python -m benchmarks.plain (core functions; also cleans {TRAIN_MONTH}; writes no asset files)")
    print(
        "   between steps: the executor's bookkeeping (events, IO managers); outside: process start "
        "(imports, definitions), exit"
    )
    if repeat > 1:
        cli_walls, plain_walls = ([f"{run.seconds:.0f}" for run in result[side]] for side in ("cli_all", "plain_all"))
        print(
            f"   {repeat} runs per side, fastest shown: CLI {', '.join(cli_walls)} s; plain {', '.join(plain_walls)} s"
        )
    print(f"   {'':38} {'CLI':>8} {'plain':>8}   (checks counted with their asset)")
    run = result["cli_result"]["steps"]["run"]
    rows = [
        *[(asset, steps[asset], stages[asset]) for asset in ASSETS],
        ("in the run, between steps", run - sum(steps.values()), None),
        ("outside the run / stages", cli.seconds - run, plain.seconds - sum(stages.values())),
        ("wall", cli.seconds, plain.seconds),
        ("CPU (user+sys)", cli.cpu_seconds, plain.cpu_seconds),
        ("CPU used by other processes meanwhile", cli.others_cpu_seconds, plain.others_cpu_seconds),
    ]
    for name, left, right in rows:
        print(f"   {name:38} {left:7.1f}s " + ("       -" if right is None else f"{right:7.1f}s"))
    print(f"   {'peak RSS (largest process)':38} {cli.peak_rss_mib:5.0f}MiB {plain.peak_rss_mib:5.0f}MiB")
    print(
        f"   {'test RMSE, trials':38} {result['cli_result']['rmse']:5.3f},{result['cli_result']['trials_run']:<2d}"
        f" {result['plain_result']['rmse']:5.3f},{result['plain_result']['trials_run']:<2d}"
    )
    ratio = cli.seconds / plain.seconds
    print(
        f"   ratio CLI / plain wall {ratio:.2f} ({verdict(round(ratio, 2), TARGET_RATIO)}); "
        f"CPU {cli.cpu_seconds / plain.cpu_seconds:.2f}"
    )


def print_summary(course_result: dict, ours: dict, months: dict, over: dict) -> None:
    cli, plain = over["cli"], over["plain"]
    rows = [
        (f"course XGBoost {TEST_MONTH} (peeks at test)", f"{course_result['xgboost']['rmse']:.3f}", ""),
        (f"LinearRegression {TEST_MONTH}", f"{course_result['linear_rmse']:.3f}", ""),
        (f"ours {TEST_MONTH}", f"{ours['rmse']:.3f}", f"<= {TARGET_RMSE}"),
        *[(f"ours / baseline {m}", f"{r['rmse']:.3f} / {r['baseline_rmse']:.3f}", "") for m, r in months.items()],
        (f"one-month run {TEST_MONTH}", f"{ours['steps']['run']:.1f} s", ""),
        ("CLI / plain wall", f"{cli.seconds:.1f} / {plain.seconds:.1f} s", ""),
        ("CLI / plain ratio", f"{cli.seconds / plain.seconds:.2f}", f"<= {TARGET_RATIO}"),
    ]
    print("\nSummary")
    for name, value, target in rows:
        print(f"   {name:38} {value:>18}  {target}")


def md_course(result: dict, ours: dict, peak: dict) -> list[str]:
    """docs/benchmarks.md: phase 1's table, then phase 3's (the same run of `ours`)."""
    xgb = result["xgboost"]
    course = table(
        ["model", "test RMSE (min)", "notes"],
        [
            (
                "course XGBoost, DictVectorizer(PU_DO + trip_distance), early-stopped on the test month",
                f"{xgb['rmse']:.3f}",
                f"{xgb['rounds']} rounds max, best iteration {xgb['best_iteration']}, {xgb['seconds']:.0f} s",
            ),
            ("LinearRegression on the course features (`baseline_rmse`)", f"{result['linear_rmse']:.3f}", ""),
            (
                "ours: the Dagster graph, default config (`trained_model`)",
                f"{ours['rmse']:.3f}",
                f"{report.verdict(ours['rmse'], TARGET_RMSE)}; {ours['trials_run']} trials in its time budget",
            ),
        ],
        align="lrl",
    )
    steps = dict(ours["steps"])
    run = steps.pop("run")
    one_month = table(
        ["step", "wall s"],
        [
            *[(f"`{step}`", f"{seconds:.1f}") for step, seconds in steps.items()],
            ("sum of steps", f"{sum(steps.values()):.1f}"),
            ("run, RUN_START to RUN_SUCCESS", f"{run:.1f}"),
            (f"whole call, with the {TRAIN_MONTH} ingestion run", f"{ours['seconds']:.1f}"),
        ],
    )
    return [
        f"**1. Course split**: train {TRAIN_MONTH}, test {TEST_MONTH}.",
        course,
        f"**3. One-month run** {TEST_MONTH}, in process, default config: wall time per step from the event log.",
        one_month,
        f"Peak RSS (ru_maxrss): the process {peak['self']:.0f} MiB, its largest child {peak['children']:.0f} MiB.",
    ]


def md_months(months: dict) -> list[str]:
    rows = []
    for month, result in months.items():
        before = BEFORE_ISSUE_18.get(month, (None, ""))[0]
        valid = result.get("model_valid_rmse")
        rows.append(
            (
                month,
                f"**{result['rmse']:.4f}**",  # as recorded: the target is judged on it, unrounded
                MISSING if valid is None else f"{valid:.3f}",
                f"{result['valid_rmse']:.3f}",
                MISSING if before is None else f"{before:.3f}",
                MISSING if before is None else f"{result['rmse'] / before - 1:+.2%}",
                MISSING if before is None else report.verdict(result["rmse"], round(0.95 * before, 5)),
                f"{result['course_rmse']:.3f}",
                f"{result['baseline_rmse']:.3f}",
                f"{1 - result['rmse'] / result['baseline_rmse']:.1%}",
                str(result["trials_run"]),
                f"{result['seconds']:.0f}",
            )
        )
    params = "; ".join(
        f"{month}: " + ", ".join(f"{k} {v:.3g}" for k, v in (result.get("params") or {}).items())
        for month, result in months.items()
    )
    sources = "; ".join(f"{month} {value:.3f} ({source})" for month, (value, source) in BEFORE_ISSUE_18.items())
    return [
        table(
            [
                "month",
                "test RMSE",
                "valid RMSE",
                "study's valid RMSE",
                "before issue 18",
                "change",
                "target: 5 % lower",
                "course XGBoost",
                "baseline",
                "gain",
                "trials",
                "wall s",
            ],
            rows,
        ),
        f"*valid RMSE*: the trained model on the holdout (the window's newest {HOLDOUT_DAYS} days), which chose "
        "its boosting rounds before the model was trained again on train + holdout; *study's*: best_params' best "
        "trial, on its sample of the window. *course XGBoost*: the course notebook's model (`benchmarks/course.py`), "
        "trained on the month before and early-stopped on the month itself, as the course does. Params chosen: "
        f"{params}. Before issue 18 (window 3, random 15 % holdout, no pair statistics): {sources}.",
    ]


def md_overhead(result: dict, trials: int, repeat: int) -> list[str]:
    cli, plain = result["cli"], result["plain"]
    steps, stages = per_asset(result["cli_result"]["steps"]), result["plain_result"]["stages"]
    run = result["cli_result"]["steps"]["run"]
    walls = {side: ", ".join(f"{m.seconds:.0f}" for m in result[f"{side}_all"]) for side in ("cli", "plain")}
    rows = [
        *[(f"`{asset}`", f"{steps[asset]:.1f}", f"{stages[asset]:.1f}") for asset in ASSETS],
        ("in the run, between steps", f"{run - sum(steps.values()):.1f}", MISSING),
        ("outside the run / the stages", f"{cli.seconds - run:.1f}", f"{plain.seconds - sum(stages.values()):.1f}"),
        (f"**wall, fastest of {repeat}**", f"**{cli.seconds:.1f}**", f"**{plain.seconds:.1f}**"),
        ("every run's wall", walls["cli"], walls["plain"]),
        ("CPU, user + system", f"{cli.cpu_seconds:.1f}", f"{plain.cpu_seconds:.1f}"),
        ("other processes' CPU meanwhile", f"{cli.others_cpu_seconds:.1f}", f"{plain.others_cpu_seconds:.1f}"),
        ("peak RSS of the largest process, MiB", f"{cli.peak_rss_mib:.0f}", f"{plain.peak_rss_mib:.0f}"),
        *[
            (name, *(f"{result[side][key]:{spec}}" for side in ("cli_result", "plain_result")))
            for name, key, spec in (("test RMSE", "rmse", ".3f"), ("trials", "trials_run", "d"))
        ],
    ]
    ratio = cli.seconds / plain.seconds
    return [
        f"{TEST_MONTH}, `n_trials={trials}` on both sides; seconds, checks counted with their asset. "
        f"CLI: `{result['cli_command']}` after an untimed CLI call materializing raw_trips,cleaned_trips "
        f"for {TRAIN_MONTH}; plain: `python -m benchmarks.plain`.",
        table(["", "CLI", "plain"], rows),
        f"**CLI ÷ plain, wall: {ratio:.2f}** ({report.verdict(round(ratio, 2), TARGET_RATIO)}); "
        f"CPU {cli.cpu_seconds / plain.cpu_seconds:.2f}.",
    ]


def write(args: argparse.Namespace, name: str, title: str, others_cpu: float | None, parts: list[str]) -> None:
    """Replace phase `name`'s section of the report page, unless there is no page to write."""
    if args.report is not None:
        provenance = report.Provenance(args.command, others_cpu)
        report.write_section(name, report.section(name, title, provenance, parts), args.report)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run_phases(workdir: Path, args: argparse.Namespace, phases: list[str]) -> dict:
    """Run and print `phases` in order, each with what it needs; their results, for the summary."""
    results = {}
    if "course" in phases:
        one_month = materialize(workdir, "month", args.data, TRAIN_MONTH, [TEST_MONTH])
        results["ours"] = one_month["months"][TEST_MONTH]
        results["course"] = course(workdir, args.data, args.course_rounds)
        print_course(results["course"], results["ours"])
        print_steps(results["ours"], one_month["peak_rss_mib"])
        write(
            args,
            "course",
            "1 and 3. Course split and one-month run (`course`)",
            one_month["others_cpu"] + results["course"]["others_cpu"],
            md_course(results["course"], results["ours"], one_month["peak_rss_mib"]),
        )
    if "months" in phases:
        months = materialize(workdir, "2023", args.data, FIRST, args.months)
        courses = course(workdir, args.data, args.course_rounds, args.months)
        for month, result in months["months"].items():
            result["course_rmse"] = courses["months"][month]["rmse"]
        results["months"] = months["months"]
        print_months(results["months"])
        others = months["others_cpu"] + courses["others_cpu"]
        write(args, "months", "2. 2023 months (`months`)", others, md_months(results["months"]))
    if "ablation" in phases:
        ablated = results["ablation"] = ablation(workdir, args.data, args.months)
        print_ablation(ablated, args.months)
        write(
            args,
            "ablation",
            "2b. Ablation: what each ingredient does (`ablation`)",
            ablated["others_cpu"],
            md_ablation(ablated, args.months),
        )
    if "overhead" in phases:
        over = results["over"] = overhead(workdir, args.data, args.trials, args.repeat)
        print_overhead(over, args.trials, args.repeat)
        others = sum(m.others_cpu_seconds for m in (*over["cli_all"], *over["plain_all"]))
        write(
            args,
            "overhead",
            "4. Orchestration overhead (`overhead`)",
            others,
            md_overhead(over, args.trials, args.repeat),
        )
    if "sizes" in phases:
        results["sized"] = scale.sizes(workdir, args.rows, args.tuning_timeout)
        scale.print_sizes(results["sized"])
        results["budget"] = scale.budget(results["sized"], args.tuning_timeout)
        scale.print_budget(results["budget"])
        sized, others = results["sized"], results["budget"]["idle"]["others_cpu"]  # busy.py's load is no other's
        others += sum(
            run["others_cpu"] for run in (*sized["ingestion"].values(), sized["window"], sized["predictions"])
        )
        parts = scale.md_sizes(sized) + scale.md_budget(results["budget"])
        write(args, "sizes", "5 and 6. Large months and the tuning budget (`sizes`)", others, parts)
    if "backfill" in phases:
        results["backfill"], results["on_workers"] = scale.backfill(workdir), scale.celery_backfill(workdir)
        scale.print_backfill(results["backfill"], results["on_workers"])
        others = sum(m.others_cpu_seconds for m in results["backfill"].values())
        others += sum(run["others_cpu"] for run in results["on_workers"].values())
        parts = scale.md_backfill(results["backfill"], results["on_workers"])
        write(args, "backfill", "7. Backfill of twelve months ÷ one (`backfill`)", others, parts)
    if "long" in phases:
        month, others = LONG_STUDY_MONTH, 0.0
        # The default budget's run of phase 2 when it ran (and had the month), else one of its own.
        if "months" in results:
            default = results["months"].get(month)
        else:
            own = materialize(workdir, "default", args.data, FIRST, [month])
            default, others = own["months"][month], own["others_cpu"]
        long = None
        if default is not None and (args.long or args.only):
            long = scale.long_study(workdir, args.data, month, args.long_minutes)
        if default is not None:
            scale.print_long_study(month, default, long, args.long_minutes)
        if long is not None:  # without the long study there is nothing new to record
            parts = scale.md_long_study(month, default, long, args.long_minutes)
            write(args, "long", "8. Tuning budget against a long study (`long`)", others + long["others_cpu"], parts)
        results["default"], results["long"] = default, long
    if "monitoring" in phases:
        watched = results["monitoring"] = monitoring(workdir, 3 if args.quick else MONITORED_VERSIONS)
        print_monitoring(watched)
        parts = md_monitoring(watched)
        write(
            args,
            "monitoring",
            "9. Monitoring: model_performance over twelve versions (`monitoring`)",
            watched["others_cpu"],
            parts,
        )
    return results


def main() -> None:
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when the output is piped
    args.command = f"python -m benchmarks.run {shlex.join(sys.argv[1:])}".rstrip()
    print(args.command)
    print(
        f"data {args.data}; {len(os.sched_getaffinity(0))} cores; load average {_load()} "
        "(other processes on this machine skew the timings)"
    )
    with tempfile.TemporaryDirectory(prefix="ml_assets_bench_") as tmp:
        results = run_phases(Path(tmp), args, args.only or PHASES)
    if not args.only:
        print_summary(results["course"], results["ours"], results["months"], results["over"])
        scale.print_summary(
            results["sized"],
            results["budget"],
            results["backfill"],
            results["on_workers"],
            results["default"],
            results["long"],
        )
    print(f"\nload average at the end {_load()}")


if __name__ == "__main__":
    main()
