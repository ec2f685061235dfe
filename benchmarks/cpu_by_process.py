"""CPU-seconds of every process on the machine while a command runs, summed by what the process is, or by
the test (or test module) that started it.

`python -m benchmarks.cpu_by_process make test` prints a row for each kind of process, `--by-module` a
row for each test module (`--by-test`: for each test); `--report PAGE` also writes the table, the wall
time and pytest's summaries into PAGE's section for the command (`make bench-tests`: the one in
docs/testing.md). /proc is read twice a second: a process's CPU is its last reading less its reading when
the command started (up to half a second of its end is missed), and a process is named by its command
line in its first seconds (after a container's `runc init` or a shell has exec'd). By test, a process
counts for the test in its environment (PYTEST_CURRENT_TEST, which pytest sets while a test runs and
children inherit) or its nearest ancestor's; the pytest processes' own CPU comes from the plugin
benchmarks/cpu_per_test.py; what no test started (the containers, the kernel) is summed by what it is.
The machine's other processes count too: run it on a machine otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import report
from ml_assets.deploy.local import proc

POLL_SECONDS = 0.5
EXEC_SECONDS = 5.0  # how soon a process that execs another program has done it
TICKS = os.sysconf("SC_CLK_TCK")
# The command line of multiprocessing's forkserver and of every process it forks (ml_assets_tests/forked.py).
FORKSERVER = "multiprocessing.forkserver"
# First match wins: what a process is, by its command line.
ROLES = [
    ("the pytest workers (in-process tests)", r"import sys;exec\(eval|-m pytest\b"),
    (
        "runners started by tests (`python -m ml_assets.runner`, kill and concurrency tests)",
        r"ml_assets\.runner|materialize_month|runner\.runs import run|ml_assets\.reproduce|evaluate_automation|"
        + re.escape(FORKSERVER),
    ),
    ("run workers of code servers (`dagster dev`, the local topologies)", r"spawn_main"),
    ("compose: processes in containers", r"^/opt/venv|ml-assets-service"),
    ("compose: Docker engine (dockerd, containerd, runc)", r"dockerd|containerd|runc|docker"),
    ("MLflow servers", r"mlflow|uvicorn|huey"),
    (
        "Dagster code servers, daemons, webservers, `dagster dev`",
        r"api grpc|code-server|dagster-daemon|dagster\._daemon|dagster.webserver|bin/dagster dev|watch_orphans",
    ),
    ("`dagster` and `dg` commands", r"bin/dagster |bin/dg |-m dagster "),
    ("Celery workers (without containers)", r"celery"),
    ("PostgreSQL, PgBouncer, Redis", r"postgres|pgbouncer|redis|pg_isready"),
    ("Chromium", r"chrom|playwright"),
    ("kernel, sandbox and this sampler, not the command's", r"^$|process_api|line_io|cpu_by_process"),
]
OTHER = "other (uv, moto, the CPU hog, shells, health checks)"
PYTEST_ROLE = ROLES[0][0]  # their own CPU comes from the plugin, by test
CURRENT_TEST = b"PYTEST_CURRENT_TEST="
BETWEEN_TESTS = "pytest between tests (start-up, collection, xdist)"
# pytest's closing line, "===== 259 passed, 1 xfailed in 823.33s (0:13:43) =====" (without the = under -q)
PYTEST_SUMMARY = re.compile(r"^=* ?((?:no tests ran|\d+ \w+(?:, \d+ \w+)*) in [\d.]+s(?: \([\d:]+\))?) ?=*$")
SMALL = 10.0  # CPU-seconds: the report folds smaller rows into one


@dataclass
class Sampled:
    """A command's run: its exit status, wall time, pytest's closing lines, and CPU-seconds by row."""

    returncode: int
    seconds: float
    summaries: list[str]
    totals: Counter = field(default_factory=Counter)


@dataclass
class Process:
    cpu: float  # CPU-seconds, user + system, at the last reading
    command_line: str
    parent: int
    test: str | None  # the test in its environment when first seen ("path::name (phase)")


def role(command_line: str) -> str:
    return next((name for name, pattern in ROLES if re.search(pattern, command_line.strip())), OTHER)


def current_test(entry: Path) -> str | None:
    """The test running when the process started, from its environment (None if not readable)."""
    try:
        variables = (entry / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    found = [variable[len(CURRENT_TEST) :] for variable in variables if variable.startswith(CURRENT_TEST)]
    return found[0].decode(errors="replace") if found else None


def read_processes(seen: dict[tuple[int, int], Process]) -> None:
    """Update pid and start time -> Process from /proc. A process's command line is read again while it is
    younger than EXEC_SECONDS: one that execs a program (a container's `runc init`, a shell's `exec`) is
    named by that program, not by what it was when first seen."""
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rfind(")") + 2 :].split()  # after the name, which may hold spaces
            key, cpu = (int(entry.name), int(fields[19])), (int(fields[11]) + int(fields[12])) / TICKS
            if key in seen:
                seen[key].cpu = cpu
                if uptime - key[1] / TICKS < EXEC_SECONDS:
                    seen[key].command_line = proc.command_line(key[0])
            else:
                seen[key] = Process(cpu, proc.command_line(key[0]), int(fields[1]), current_test(entry))
        except (OSError, ValueError, IndexError):
            pass  # the process ended while being read (or is not ours to read)


def run_passing_output(command: list[str], env: dict[str, str] | None = None) -> Sampled:
    """Run `command`, its output passed on line by line; pytest's closing lines kept."""
    started, summaries = time.monotonic(), []
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            summary = PYTEST_SUMMARY.match(line.strip())
            if summary:
                summaries.append(summary[1])
    return Sampled(process.returncode, time.monotonic() - started, summaries)


def used_since(command: list[str], env: dict[str, str] | None = None) -> tuple[Sampled, dict, dict]:
    """Run `command`; how it ran, every process seen, and each one's CPU-seconds when it started."""
    before: dict[tuple[int, int], Process] = {}
    read_processes(before)
    seen = {key: Process(**vars(reading)) for key, reading in before.items()}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(POLL_SECONDS):
            read_processes(seen)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        sampled = run_passing_output(command, env)
    finally:
        done.set()
        sampler.join()
    read_processes(seen)
    return sampled, seen, {key: reading.cpu for key, reading in before.items()}


def cpu_by_role(command: list[str]) -> Sampled:
    sampled, seen, before = used_since(command)
    for key, process in seen.items():
        sampled.totals[role(process.command_line)] += process.cpu - before.get(key, 0.0)
    return sampled


def test_id(current: str) -> str:
    """A test's id from PYTEST_CURRENT_TEST ("path::name (phase)"), or a node id as it is."""
    return current.rsplit(" (", 1)[0]


def module_of(name: str) -> str:
    """A test id's module; any other name of the table (a role, pytest between tests) as it is."""
    return name.split("::")[0]


def cpu_by_test(command: list[str]) -> Sampled:
    """CPU-seconds by the test that used them, in its pytest process or in processes it started (module-scoped
    fixtures count with the module's first test); what no test started, by what it is."""
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as per_test:
        options = f"{os.environ.get('PYTEST_ADDOPTS', '')} -p benchmarks.cpu_per_test".strip()
        env = {**os.environ, "CPU_PER_TEST_FILE": per_test.name, "PYTEST_ADDOPTS": options}
        sampled, seen, before = used_since(command, env)
        lines = [json.loads(line) for line in Path(per_test.name).read_text().splitlines()]
    in_pytest = [line for line in lines if "cpu" in line]
    # Processes forked from ml_assets_tests/forked.py's server: /proc shows the server's environment.
    forked = {line["forked"]: line["test"] for line in lines if "forked" in line}
    by_pid: dict[int, list[tuple[int, Process]]] = {}
    for (pid, started), process in seen.items():
        by_pid.setdefault(pid, []).append((started, process))

    def test_of(pid: int, started: int, process: Process) -> str | None:
        """Up the tree to the nearest process started during a test. A parent is the newest process with
        the parent's pid that started no later than its child (pids are reused within a run)."""
        for _ in range(64):  # a process tree is never this deep
            if FORKSERVER in process.command_line and forked.get(pid):
                return forked[pid]
            if process.test:
                return process.test
            older = [(start, parent) for start, parent in by_pid.get(process.parent, []) if start <= started]
            if not older:
                return None
            pid = process.parent
            started, process = max(older, key=lambda found: found[0])
        return None

    totals = sampled.totals
    for row in in_pytest:
        totals[test_id(row["test"])] += row["cpu"]
    pytest_own = 0.0
    for key, process in seen.items():
        cpu = process.cpu - before.get(key, 0.0)
        if role(process.command_line) == PYTEST_ROLE and not process.test:
            pytest_own += cpu
        else:
            test = test_of(*key, process)
            totals[test_id(test) if test else role(process.command_line)] += cpu
    totals[BETWEEN_TESTS] += pytest_own - sum(row["cpu"] for row in in_pytest)
    return sampled


def by_module(by_test: Counter) -> Counter:
    """`cpu_by_test`'s table summed by test module."""
    totals = Counter()
    for name, cpu in by_test.items():
        totals[module_of(name)] += cpu
    return totals


HEADINGS = {
    None: "processes",
    "module": "test module, or processes no test started",
    "test": "test, or processes no test started",
}


def clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def report_parts(sampled: Sampled, heading: str) -> list[str]:
    """The report's tables: how the command ran, then the CPU-seconds by row (rows under SMALL folded)."""
    used = sum(sampled.totals.values())
    share = used / (sampled.seconds * len(os.sched_getaffinity(0)))
    run = [
        ["wall time", clock(sampled.seconds)],
        ["exit status", str(sampled.returncode)],
        ["CPU-seconds, every process", f"{used:.0f} ({share * 100:.0f} % of the cores)"],
        *[["pytest", summary] for summary in sampled.summaries],
    ]
    big = [(name, cpu) for name, cpu in sampled.totals.most_common() if cpu >= SMALL]
    small = [cpu for cpu in sampled.totals.values() if cpu < SMALL]
    rows = [[name, f"{cpu:.0f}"] for name, cpu in big]
    if small:
        rows.append([f"the other {len(small)}, each under {SMALL:.0f}", f"{sum(small):.0f}"])
    rows.append(["total", f"{used:.0f}"])
    return [report.table(["run", ""], run, "ll"), report.table([heading, "CPU-s"], rows)]


def main(argv: list[str]) -> int:
    """Run the command, print the table (and write it into --report's page); the command's exit status."""
    description = "CPU-seconds of every process while COMMAND runs, by kind of process, test module or test."
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_by_process", description=description)
    by = parser.add_mutually_exclusive_group()
    by.add_argument("--by-module", dest="by", action="store_const", const="module", help="a row a test module")
    by.add_argument("--by-test", dest="by", action="store_const", const="test", help="a row a test")
    parser.add_argument("--report", type=Path, metavar="PAGE", help="also write the command's section of PAGE")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="what to run, e.g. make test")
    args = parser.parse_args(argv)
    sampled = cpu_by_test(args.command) if args.by else cpu_by_role(args.command)
    if args.by == "module":
        sampled.totals = by_module(sampled.totals)
    print(f"| {HEADINGS[args.by]} | CPU-s |\n|---|---:|")
    for name, cpu in sampled.totals.most_common():
        print(f"| {name} | {cpu:.0f} |")
    print(f"| total | {sum(sampled.totals.values()):.0f} |")
    if args.report:
        shown = " ".join(args.command)
        name = re.sub(r"\W+", "-", shown).strip("-")
        provenance = report.Provenance(f"python -m benchmarks.cpu_by_process {' '.join(argv)}", None)
        parts = report_parts(sampled, HEADINGS[args.by])
        report.write_section(name, report.section(name, f"`{shown}`", provenance, parts), args.report)
    return sampled.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
