"""The thread stacks of a stack's Python processes, for a wait that timed out: what a hung one waits on.

py-spy (the dev extra's) reads them from outside, without stopping or signalling the process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ml_assets.deploy.local.proc import process_table


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def is_python(pid: int) -> bool:
    """Whether process `pid` runs a Python interpreter (False once it ended)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name.startswith("python")
    except OSError:
        return False


def session_stacks(leaders: dict[str, int], chars: int = 2500) -> str:
    """`py-spy dump` of every Python process in the sessions led by `leaders` (name -> leader pid), the
    first `chars` of each (the main thread comes first), or why py-spy could not read one; empty without
    py-spy. Other processes (PostgreSQL, PgBouncer) are left out."""
    binary = py_spy()
    if binary is None:
        return ""
    names = {pid: name for name, pid in leaders.items()}
    dumps = []
    members = [(pid, stat) for pid, stat in process_table().items() if stat.session in names and is_python(pid)]
    # The leaders' children first: the run workers and MLflow's server workers do the work that hangs.
    for pid, stat in sorted(members, key=lambda member: (member[0] == member[1].session, member[0])):
        header = f"----- {names[stat.session]} process {pid}, state {stat.state} (py-spy dump) -----"
        try:
            dumped = subprocess.run([binary, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            dumps.append(f"{header}\nnot read within 30 s")
            continue
        stack = dumped.stdout if dumped.returncode == 0 else (dumped.stderr.strip().splitlines() or ["?"])[0]
        dumps.append(f"{header}\n{stack[:chars]}")
    return "\n".join(dumps)
