"""CPU-seconds of every process on the machine while a command runs, summed by what the process is.

`python -m benchmarks.cpu_by_process make test` prints the table of docs/testing.md ("Where the CPU
goes"). /proc is read twice a second: a process's CPU is its last reading less its reading when the
command started (up to half a second of its end is missed), and a forked child is named by its
command line when first seen. The machine's other processes count too (its kernel threads among
them): run it on a machine otherwise idle.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

POLL_SECONDS = 0.5
TICKS = os.sysconf("SC_CLK_TCK")
# First match wins: what a process is, by its command line.
ROLES = [
    ("the pytest workers (in-process tests)", r"import sys;exec\(eval|pytest -m"),
    (
        "runners started by tests (`python -m ml_assets.runner`, kill and concurrency tests)",
        r"ml_assets\.runner|materialize_month|runner\.runs import run|ml_assets\.reproduce|evaluate_automation",
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


def role(command_line: str) -> str:
    return next((name for name, pattern in ROLES if re.search(pattern, command_line.strip())), OTHER)


def read_processes(seen: dict[tuple[int, int], list]) -> None:
    """Update pid and start time -> [CPU-seconds, command line] from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rfind(")") + 2 :].split()  # after the name, which may hold spaces
            key, cpu = (int(entry.name), int(fields[19])), (int(fields[11]) + int(fields[12])) / TICKS
            if key in seen:
                seen[key][0] = cpu
            else:
                seen[key] = [cpu, (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")]
        except (OSError, ValueError, IndexError):
            pass  # the process ended while being read


def cpu_by_role(command: list[str]) -> tuple[int, Counter]:
    before: dict[tuple[int, int], list] = {}
    read_processes(before)
    seen = {key: list(reading) for key, reading in before.items()}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(POLL_SECONDS):
            read_processes(seen)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        returncode = subprocess.call(command)
    finally:
        done.set()
        sampler.join()
    read_processes(seen)
    totals = Counter()
    for key, (cpu, command_line) in seen.items():
        totals[role(command_line)] += cpu - before.get(key, [0.0])[0]
    return returncode, totals


if __name__ == "__main__":
    returncode, totals = cpu_by_role(sys.argv[1:])
    print("| processes | CPU-s |\n|---|---:|")
    for name, cpu in totals.most_common():
        print(f"| {name} | {cpu:.0f} |")
    print(f"| total | {sum(totals.values()):.0f} |")
    sys.exit(returncode)
