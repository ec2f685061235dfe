"""One long-running process of the local stack, in a process group of its own as in a container."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ml_assets.deploy.local.environment import DEPLOY

SERVICE_SH = DEPLOY / "service.sh"  # the image's entry point: one command per compose service


def kill_group_left(process: subprocess.Popen) -> None:
    """SIGKILL whatever is left in the process group `process` leads (started with `start_new_session`): run workers
    outlive a server that exits, and a child started while the group was being stopped missed the signal (a code
    server `dagster dev` spawned then lived on, its heartbeat never begun)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        process.poll()  # reap the leader: a zombie still counts as a member of the group
        time.sleep(0.1)


@dataclass
class Service:
    name: str
    env: dict[str, str]
    log: Path
    cwd: Path
    command: str | None = None  # service.sh's command; default: the name
    argv: list[str] | None = None  # a process other than service.sh (redis-server)
    process: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("a") as out:
            out.write(f"\n===== start {self.starts} of {self.name} =====\n")
            out.flush()
            # A session (process group) of its own, like a container: killing it kills the run workers too.
            self.process = subprocess.Popen(
                self.argv or [str(SERVICE_SH), self.command or self.name],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """`sig` to the whole process group (default: kill -9, like a killed container)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        self.process.wait(timeout=30)
        if sig == signal.SIGKILL:
            self._reap_group()
            self.process = None  # stopped on purpose: not a crash

    def stop(self, grace_seconds: float = 20) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            pass
        self._reap_group()
        self.process = None

    def _reap_group(self) -> None:
        kill_group_left(self.process)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
