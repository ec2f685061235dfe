"""Child processes in fresh Dagster homes, timed from outside, and step times from an event log.

Every phase runs in its own process: partitions and resources are fixed when `ml_assets` is
imported, from `DAGSTER_HOME` and `ML_ASSETS_START_MONTH`, so each setting needs a new interpreter.
The parent stays small on purpose (it never imports the project): on Linux a child's ru_maxrss
starts at its parent's resident set when it is spawned, so a heavy parent would inflate every
child's peak memory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_MONTH, TEST_MONTH = "2021-01", "2021-02"  # the course's split
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "nyc-tlc"
# Settings that would point a child's state outside its fresh home.
_ESCAPING = ("ML_ASSETS_", "MLFLOW_TRACKING_URI")


def fresh_home(parent: Path, name: str) -> Path:
    """A new DAGSTER_HOME with the project's dagster.yaml."""
    home = parent / name
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def child_env(home: Path, data: Path, start_month: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(_ESCAPING)}
    env.update(
        DAGSTER_HOME=str(home),
        MLFLOW_DISABLE_TELEMETRY="true",
        ML_ASSETS_SOURCE=str(data.resolve()),  # settings refuse a relative folder
        ML_ASSETS_START_MONTH=start_month,
    )
    return env


@dataclass(frozen=True)
class Measured:
    seconds: float
    cpu_seconds: float  # user + system, descendants included
    peak_rss_mib: float  # largest resident set of the process and its descendants
    others_cpu_seconds: float  # CPU time the rest of the machine used meanwhile: how far to trust `seconds`


def busy_cpu_seconds() -> float:
    """CPU time spent by the whole machine since boot (/proc/stat, all but idle and iowait)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_child(command: list[str], env: dict[str, str], log: Path) -> Measured:
    """Run `command` to completion; its output goes to `log`, shown (tail) only if it fails.

    `os.wait4` gives this child's own rusage, so each phase's peak memory is its own rather than
    the running maximum over all children that RUSAGE_CHILDREN would give.
    """
    start, busy = time.perf_counter(), busy_cpu_seconds()
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds, busy = time.perf_counter() - start, busy_cpu_seconds() - busy
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}; end of {log}:\n{tail}")
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(seconds, cpu, usage.ru_maxrss / 1024, max(busy - cpu, 0.0))


def run_module(module: str, args: list[str], env: dict[str, str], workdir: Path) -> tuple[Measured, dict]:
    """`python -m module args --out FILE`, and the JSON the module wrote to FILE."""
    out = workdir / f"{module.rsplit('.', 1)[-1]}.json"
    measured = run_child([sys.executable, "-m", module, *args, "--out", str(out)], env, workdir / f"{out.stem}.log")
    return measured, json.loads(out.read_text())


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Seconds from STEP_START to STEP_SUCCESS per step, plus `run` (RUN_START to RUN_SUCCESS)."""
    from dagster import DagsterEventType

    starts = {DagsterEventType.STEP_START, DagsterEventType.RUN_START}
    started, seconds = {}, {}
    for entry in instance.all_logs(
        run_id, of_type=starts | {DagsterEventType.STEP_SUCCESS, DagsterEventType.RUN_SUCCESS}
    ):
        step = entry.step_key or "run"
        if entry.dagster_event_type in starts:
            started[step] = entry.timestamp
        else:
            seconds[step] = entry.timestamp - started[step]
    return seconds
