"""Figures of issue 10 ("past one machine"): large months, time budgets, backfills, tuning budget quality.

Parent-side phases of `python -m benchmarks.run`; every measurement runs in child processes (see
harness), each step's peak memory measured in the process that runs all of a run's steps
(benchmarks.steps).

- sizes: synthetic months of `rows` trips (3.4 M: TLC's yellow March 2023). Each of four months is
  ingested (raw_trips with the source's generation, cleaned_trips, their checks) in a process of its
  own; then trip_features, best_params and trained_model of the fourth month, trained on the three
  before it (about 10 M trips), in one process; then trip_duration_predictions.
- budget: best_params alone on that window, with no trial limit: its wall time against its
  `timeout_seconds`, as it is and while another process trains XGBoost on both cores.
- backfill: `python -m ml_assets.runner` for one month, and for twelve in one call, on the default
  synthetic months, a fixed trial count (the clock does not decide how much is done); each month
  trains on three, and both calls first ingest the three months before the first. Then the same
  months on two Celery workers: the production topology of ml_assets/deploy/local/ with Redis
  and two `dagster-celery` workers reading both queues, started (not timed) for each side; timed
  from launching the ingestion backfill of the months and their window, through the training
  backfill of the months, to the end of its last run, both launched from the webserver.
- long study: the RMSE of a month tuned by the default budget against a study of `--long-minutes`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import ROOT, busy_cpu_seconds, child_env, fresh_home, run_child, run_module
from benchmarks.report import MISSING, table
from benchmarks.report import verdict as md_verdict

SIZE_MONTHS = ["2021-01", "2021-02", "2021-03", "2021-04"]  # the last is tested on, trained on the others
INGESTION = "raw_trips,cleaned_trips"
WINDOW_STEPS = "trip_features,best_params,trained_model"
INGESTION_TARGET_GB, TRAINING_TARGET_S = 1.2, 300
WINDOW_TARGET_GB = 3.2  # at most 20 % above the 2.68 GB of before the pair statistics (issue 18; issue 10 asked 4)
BUDGET_TARGET, BACKFILL_TARGET, LONG_STUDY_TARGET = 1.10, 12.5, 0.01
# Twelve months, each trained on a full window of three (the first month of a backfill starting at
# 2021-02 would train on one and take a third of the others' work).
BACKFILL_FIRST, BACKFILL_LAST = "2021-04", "2022-03"
BACKFILL_TRIALS = 5
# A fixed trial count: the clock does not decide how much is done.
BACKFILL_TUNING = {"ML_ASSETS_TUNING_TRIALS": str(BACKFILL_TRIALS), "ML_ASSETS_TUNING_TIMEOUT_SECONDS": "3600"}
CELERY_WORKERS = {"one": "ingest,train", "two": "ingest,train"}


def _steps(home: Path, env: dict, month: str, select: str, config: dict | None = None, name: str = "") -> dict:
    args = [month, "--select", select, "--config", json.dumps(config or {})]
    workdir = home / f"steps-{month}-{name or select.replace(',', '+')}"
    workdir.mkdir()
    measured, result = run_module("benchmarks.steps", args, env, workdir)
    return {**result, "cpu": measured.cpu_seconds, "others_cpu": measured.others_cpu_seconds}


def sizes(workdir: Path, rows: int, timeout_seconds: float) -> dict:
    """Large synthetic months through the graph, a process per run; leaves the home for `budget`."""
    home = fresh_home(workdir, "sizes")
    env = {**child_env(home, "synthetic", SIZE_MONTHS[0]), "ML_ASSETS_SYNTHETIC_ROWS": str(rows)}
    ingestion = {month: _steps(home, env, month, INGESTION) for month in SIZE_MONTHS}
    config = {"ops": {"best_params": {"config": {"timeout_seconds": timeout_seconds}}}}
    window = _steps(home, env, SIZE_MONTHS[-1], WINDOW_STEPS, config)
    predictions = _steps(home, env, SIZE_MONTHS[-1], "trip_duration_predictions")
    return {
        "home": home,
        "env": env,
        "rows": rows,
        "ingestion": ingestion,
        "window": window,
        "predictions": predictions,
    }


def budget(sized: dict, timeout_seconds: float) -> dict:
    """best_params' wall time over its budget on the large window, idle and while XGBoost trains beside it."""
    config = {"ops": {"best_params": {"config": {"n_trials": 100_000, "timeout_seconds": timeout_seconds}}}}
    month, home, env = SIZE_MONTHS[-1], sized["home"], sized["env"]
    idle = _steps(home, env, month, "best_params", config, "idle")
    busy = subprocess.Popen([sys.executable, "-m", "benchmarks.busy"], cwd=ROOT, env=env)
    try:
        loaded = _steps(home, env, month, "best_params", config, "loaded")
    finally:
        busy.kill()
        busy.wait()
    return {"timeout": timeout_seconds, "idle": idle, "loaded": loaded}


def backfill(workdir: Path) -> dict:
    """One month, then twelve, through `python -m ml_assets.runner` in fresh homes (in-process executor)."""
    runs = {}
    for name, months in (("one", [BACKFILL_FIRST]), ("twelve", [BACKFILL_FIRST, "--to", BACKFILL_LAST])):
        home = fresh_home(workdir, f"backfill-{name}")
        env = {
            **child_env(home, "synthetic", "2021-01"),
            **BACKFILL_TUNING,
            "ML_ASSETS_SYNTHETIC_PUBLISHED_THROUGH": BACKFILL_LAST,  # the synthetic source's default is 2021-06
        }
        runs[name] = run_child([sys.executable, "-m", "ml_assets.runner", *months], env, home / "runner.log")
    return runs


def celery_backfill(workdir: Path) -> dict:
    """One month, then twelve, as backfills on two Celery workers, each in a fresh topology."""
    from dagster import DagsterRunStatus

    from ml_assets.core.months import month_range, shift_month
    from ml_assets.core.sources.synthetic import SyntheticSource
    from ml_assets.deploy.local.topology import Topology
    from ml_assets.deploy.local.ui_actions import TRAINING_TAG, backfill, finished_runs, stop_sensors

    results = {}
    for name, last in (("one", BACKFILL_FIRST), ("twelve", BACKFILL_LAST)):
        months = month_range(BACKFILL_FIRST, last)
        window = month_range(shift_month(BACKFILL_FIRST, -3), last)
        # The same synthetic months, in a folder that fills only once the sensors are stopped.
        incoming = workdir / f"celery-{name}-months"
        incoming.mkdir()
        env = {**BACKFILL_TUNING, "ML_ASSETS_SOURCE": str(incoming), "ML_ASSETS_START_MONTH": "2021-01"}
        with Topology(workdir / f"celery-{name}", env=env, workers=CELERY_WORKERS) as topology:
            topology.wait_until_ready(300)
            stop_sensors(topology)  # runs come from the backfills only
            for month in window:
                SyntheticSource(str(incoming)).fetch(month)
            with topology.instance() as instance:
                cpu_before, busy_before, started = topology.cpu_seconds(), busy_cpu_seconds(), time.perf_counter()
                ingest = backfill(topology, "ingest_month", window)
                runs = finished_runs(topology, instance, ingest, len(window), 3600)
                train = backfill(topology, "retrain_month", months, dict([TRAINING_TAG]))
                runs += finished_runs(topology, instance, train, len(months), 3600)
                seconds, cpu_after = time.perf_counter() - started, topology.cpu_seconds()
                busy = busy_cpu_seconds() - busy_before
            failed = [run.run_id for run in runs if run.status != DagsterRunStatus.SUCCESS]
            assert not failed, f"backfill runs failed: {failed}\n{topology.logs()}"
        cpu = sum(cpu_after.values()) - sum(cpu_before.values())
        results[name] = {"seconds": seconds, "cpu": cpu, "others_cpu": max(busy - cpu, 0.0)}
    return results


def long_study(workdir: Path, data: Path, month: str, minutes: float) -> dict:
    """The month with a study of `minutes` (no trial limit) instead of the default budget."""
    home = fresh_home(workdir, "long-study")
    config = {"ops": {"best_params": {"config": {"n_trials": 1_000_000, "timeout_seconds": minutes * 60}}}}
    env = child_env(home, data, "2023-01")
    measured, result = run_module("benchmarks.materialize", [month, "--config", json.dumps(config)], env, home)
    return {**result["months"][month], "others_cpu": measured.others_cpu_seconds}


def _gb(mib: float) -> float:
    return mib * 2**20 / 1e9


def _verdict(value: float, target: float, unit: str = "") -> str:
    return f"target <= {target}{unit}: {'met' if value <= target else 'NOT met'}"


def print_sizes(sized: dict) -> None:
    rows, ingestion, window = sized["rows"], sized["ingestion"], sized["window"]
    print(f"\n5. Large months: synthetic, {rows:,} trips a month (ML_ASSETS_SYNTHETIC_ROWS), each run its own process")
    print(f"   {'run / step':44} {'wall s':>7} {'peak RSS':>9}")
    for month, run in ingestion.items():
        print(
            f"   {month} {INGESTION + ' (generating the month)':37} "
            f"{run['seconds']:7.1f} {_gb(run['peak_rss_mib']):7.2f}GB"
        )
        for step, seconds in run["steps"].items():
            if step != "run":
                print(f"     {step:42} {seconds:7.1f} {_gb(run['step_peak_rss_mib'].get(step, 0)):7.2f}GB")
    worst = max(run["peak_rss_mib"] for run in ingestion.values())
    print(
        f"   raw_trips + cleaned_trips, highest peak of the {len(ingestion)} months: {_gb(worst):.2f} GB "
        f"({_verdict(round(_gb(worst), 2), INGESTION_TARGET_GB, ' GB')})"
    )
    model, params = window["metadata"]["trained_model"], window["metadata"]["best_params"]
    training = window["steps"]["trained_model"]
    print(
        f"   {SIZE_MONTHS[-1]} {WINDOW_STEPS}, trained on {', '.join(SIZE_MONTHS[:-1])} (one process): "
        f"{model['train_rows']:,} train + {model['valid_rows']:,} holdout rows, {model['test_rows']:,} test rows"
    )
    for run in (window, sized["predictions"]):
        for step, seconds in run["steps"].items():
            if step != "run":
                print(f"     {step:42} {seconds:7.1f} {_gb(run['step_peak_rss_mib'].get(step, 0)):7.2f}GB")
    print(
        f"   {WINDOW_STEPS} process peak: {_gb(window['peak_rss_mib']):.2f} GB "
        f"({_verdict(round(_gb(window['peak_rss_mib']), 2), WINDOW_TARGET_GB, ' GB')}); "
        f"trained_model {training:.0f} s ({_verdict(round(training), TRAINING_TARGET_S, ' s')})"
    )
    print(
        f"   tuned on {params['tuning_rows']:,} rows ({params['trials_run']} trials); "
        f"model: test RMSE {model['rmse']:.3f} "
        f"(baseline {model['baseline_rmse']:.3f}), best iteration {model['best_iteration']}, "
        f"{'stopped by its time budget' if model['stopped_by_time_budget'] else 'early-stopped'}"
    )
    print(
        f"   CPU used by other processes meanwhile: {window['others_cpu']:.0f} s "
        f"over {window['seconds']:.0f} s of the window run"
    )


def print_budget(result: dict) -> None:
    timeout = result["timeout"]
    print(
        f"\n6. best_params time budget on the {SIZE_MONTHS[-1]} window, timeout_seconds={timeout:.0f}, no trial limit"
    )
    for name, label in (("idle", "as it is"), ("loaded", "with benchmarks.busy training XGBoost on 2 cores")):
        run = result[name]
        seconds = run["steps"]["best_params"]
        print(
            f"   {label:50} step {seconds:6.1f} s = {seconds / timeout:.3f} x budget "
            f"({_verdict(round(seconds / timeout, 2), BUDGET_TARGET)}); other processes' CPU {run['others_cpu']:.0f} s"
        )


def print_backfill(runs: dict, on_workers: dict) -> None:
    one, twelve = runs["one"], runs["twelve"]
    ratio = twelve.seconds / one.seconds
    print(
        f"\n7. Backfill, in-process executor: python -m ml_assets.runner, default synthetic months, "
        f"{BACKFILL_TRIALS} trials a month"
    )
    print(f"   one month ({BACKFILL_FIRST})                      {one.seconds:7.1f} s  CPU {one.cpu_seconds:6.1f} s")
    print(
        f"   twelve months ({BACKFILL_FIRST} .. {BACKFILL_LAST})       "
        f"{twelve.seconds:7.1f} s  CPU {twelve.cpu_seconds:6.1f} s"
    )
    print(f"   ratio twelve / one {ratio:.2f} ({_verdict(round(ratio, 2), BACKFILL_TARGET)})")
    one, twelve = on_workers["one"], on_workers["twelve"]
    ratio = twelve["seconds"] / one["seconds"]
    print(
        "   on two Celery workers (production topology, ML_ASSETS_EXECUTOR=celery; ingestion then training "
        "backfills from the webserver, without predictions)"
    )
    print(f"   one month                                 {one['seconds']:7.1f} s  CPU {one['cpu']:6.1f} s")
    print(f"   twelve months                             {twelve['seconds']:7.1f} s  CPU {twelve['cpu']:6.1f} s")
    print(f"   ratio twelve / one {ratio:.2f} ({_verdict(round(ratio, 2), BACKFILL_TARGET)})")


def print_long_study(month: str, default: dict, long: dict | None, minutes: float) -> None:
    print(f"\n8. Tuning budget against a long study, real TLC {month} (trained on the 3 months before it)")
    print(
        f"   default budget: test RMSE {default['rmse']:.4f}, {default['trials_run']} trials, "
        f"valid RMSE {default['valid_rmse']:.4f}"
    )
    if long is None:
        print(f"   {minutes:.0f}-minute study: not run (--long runs it; about {minutes + 3:.0f} minutes)")
        return
    excess = default["rmse"] / long["rmse"] - 1  # > 0: the default budget's model is worse
    print(
        f"   {minutes:.0f}-minute study: test RMSE {long['rmse']:.4f}, {long['trials_run']} trials, "
        f"valid RMSE {long['valid_rmse']:.4f}"
    )
    print(
        f"   default budget's test RMSE {excess:+.2%} against the long study's "
        f"({_verdict(round(excess, 4), LONG_STUDY_TARGET)}; negative: the default did better)"
    )


def print_summary(
    sized: dict, budget: dict, backfill: dict, on_workers: dict, default: dict | None, long: dict | None
) -> None:
    ingestion = max(run["peak_rss_mib"] for run in sized["ingestion"].values())
    window = sized["window"]
    ratio = {name: budget[name]["steps"]["best_params"] / budget["timeout"] for name in ("idle", "loaded")}
    backfill_ratio = backfill["twelve"].seconds / backfill["one"].seconds
    rows = [
        (
            f"raw+cleaned peak RSS, {sized['rows']:,}-trip month",
            f"{_gb(ingestion):.2f} GB",
            f"<= {INGESTION_TARGET_GB} GB",
        ),
        (
            "features+params+model peak RSS, window",
            f"{_gb(window['peak_rss_mib']):.2f} GB",
            f"<= {WINDOW_TARGET_GB} GB",
        ),
        ("trained_model on the window", f"{window['steps']['trained_model']:.0f} s", f"<= {TRAINING_TARGET_S} s"),
        ("best_params wall / budget, idle", f"{ratio['idle']:.3f}", f"<= {BUDGET_TARGET}"),
        ("best_params wall / budget, under load", f"{ratio['loaded']:.3f}", f"<= {BUDGET_TARGET}"),
        ("backfill 12 months / 1, in-process", f"{backfill_ratio:.2f}", f"<= {BACKFILL_TARGET}"),
        (
            "backfill 12 months / 1, two Celery workers",
            f"{on_workers['twelve']['seconds'] / on_workers['one']['seconds']:.2f}",
            f"<= {BACKFILL_TARGET}",
        ),
    ]
    if default is not None and long is not None:
        rows.append(("default budget RMSE / long study's", f"{default['rmse'] / long['rmse']:.4f}", "<= 1.01"))
    for name, value, target in rows:
        print(f"   {name:44} {value:>14}  {target}")


# docs/benchmarks.md (benchmarks.report): the figures printed above, as tables.


def md_sizes(sized: dict) -> list[str]:
    """Phase 5: every run and step of the large months, then the targets."""
    rows, ingestion, window = sized["rows"], sized["ingestion"], sized["window"]

    def steps(run: dict) -> list[tuple]:
        peaks = {step: f"{_gb(mib):.2f}" for step, mib in run["step_peak_rss_mib"].items()}
        return [
            (f"&nbsp;&nbsp;`{step}`", f"{seconds:.1f}", peaks.get(step, MISSING), "")
            for step, seconds in run["steps"].items()
            if step != "run"
        ]

    lines = []
    for month, run in ingestion.items():
        lines += [
            (
                f"{month} {INGESTION}, generating the month",
                f"{run['seconds']:.1f}",
                f"{_gb(run['peak_rss_mib']):.2f}",
                "",
            )
        ]
        lines += steps(run)
    worst = round(_gb(max(run["peak_rss_mib"] for run in ingestion.values())), 2)
    lines.append(
        (
            f"ingestion, highest peak of the {len(ingestion)} months",
            "",
            f"{worst:.2f}",
            md_verdict(worst, INGESTION_TARGET_GB, " GB"),
        )
    )
    lines.append((f"{SIZE_MONTHS[-1]} {WINDOW_STEPS}, one process", f"{window['seconds']:.1f}", "", ""))
    lines += steps(window) + steps(sized["predictions"])
    peak, training = round(_gb(window["peak_rss_mib"]), 2), window["steps"]["trained_model"]
    lines.append((f"{WINDOW_STEPS}, process peak", "", f"{peak:.2f}", md_verdict(peak, WINDOW_TARGET_GB, " GB")))
    lines.append(
        ("`trained_model` on the window", f"{training:.0f}", "", md_verdict(round(training), TRAINING_TARGET_S, " s"))
    )
    model, params = window["metadata"]["trained_model"], window["metadata"]["best_params"]
    return [
        f"**5. Large months**: synthetic, {rows:,} trips a month, each run its own process; "
        f"{SIZE_MONTHS[-1]} trained on {', '.join(SIZE_MONTHS[:-1])}.",
        table(["run / step", "wall s", "peak RSS, GB", "target"], lines, align="lrrl"),
        f"{model['train_rows']:,} training + {model['valid_rows']:,} holdout rows, {model['test_rows']:,} test rows; "
        f"tuned on {params['tuning_rows']:,} rows ({params['trials_run']} trials); test RMSE {model['rmse']:.3f} "
        f"(baseline {model['baseline_rmse']:.3f}), best iteration {model['best_iteration']}, "
        f"{'stopped by its time budget' if model['stopped_by_time_budget'] else 'early-stopped'}.",
    ]


def md_budget(result: dict) -> list[str]:
    """Phase 6: best_params' wall time against its budget, alone and under load."""
    timeout, rows = result["timeout"], []
    for name, label in (("idle", "alone"), ("loaded", "while `benchmarks.busy` trains XGBoost on 2 cores")):
        run = result[name]
        seconds = run["steps"]["best_params"]
        ratio = round(seconds / timeout, 2)
        rows.append(
            (
                label,
                f"{seconds:.1f}",
                f"{seconds / timeout:.3f}",
                md_verdict(ratio, BUDGET_TARGET),
                f"{run['others_cpu']:.0f}",
            )
        )
    return [
        f"**6. `best_params` time budget** on the {SIZE_MONTHS[-1]} window, `timeout_seconds={timeout:.0f}`, "
        "no trial limit.",
        table(["`best_params`", "step s", "× budget", "target", "other processes' CPU s"], rows, align="lrrlr"),
    ]


def md_backfill(runs: dict, on_workers: dict) -> list[str]:
    """Phase 7: twelve months against one, in process and on two Celery workers."""
    in_process = {name: {"seconds": run.seconds, "cpu": run.cpu_seconds} for name, run in runs.items()}
    rows = []
    for label, sides in (
        ("in process: `python -m ml_assets.runner`", in_process),
        ("two Celery workers, backfills launched from the webserver", on_workers),
    ):
        one, twelve = sides["one"], sides["twelve"]
        ratio = round(twelve["seconds"] / one["seconds"], 2)
        rows.append(
            (
                label,
                f"{one['seconds']:.1f}",
                f"{twelve['seconds']:.1f}",
                f"**{ratio:.2f}**",
                md_verdict(ratio, BACKFILL_TARGET),
                f"{one['cpu']:.0f} / {twelve['cpu']:.0f}",
            )
        )
    return [
        f"Default synthetic months, {BACKFILL_TRIALS} trials a month, each trained on three; one month is "
        f"{BACKFILL_FIRST}, twelve are {BACKFILL_FIRST} to {BACKFILL_LAST}.",
        table(
            ["executor", "one month s", "twelve months s", "twelve ÷ one", "target", "CPU s, one / twelve"],
            rows,
            align="lrrrlr",
        ),
    ]


def md_long_study(month: str, default: dict, long: dict, minutes: float) -> list[str]:
    """Phase 8: the default budget's model against a long study's."""
    rows = [
        (label, str(run["trials_run"]), f"{run['valid_rmse']:.4f}", f"{run['rmse']:.4f}")
        for label, run in (("default budget", default), (f"{minutes:.0f}-minute study", long))
    ]
    excess = default["rmse"] / long["rmse"] - 1  # > 0: the default budget's model is worse
    target = md_verdict(round(excess * 100, 2), LONG_STUDY_TARGET * 100, " %")
    return [
        f"Real TLC {month}, trained on the 3 months before it.",
        table(["study", "trials", "valid RMSE", "test RMSE"], rows),
        f"**Default budget's test RMSE against the long study's: {excess:+.2%}** "
        f"({target}; negative: the default did better).",
    ]
