"""`deploy/service.sh mlflow`: MLflow's tracking server in one process, behind MLflow's basic-auth app
where MLFLOW_AUTH_DATABASE_URI is set (the logins: mlflow_auth.py).

    python -m ml_assets.deploy.mlflow_server [MLFLOW SERVER OPTIONS]

This is `mlflow server`, except that uvicorn serves in this process: `mlflow server` starts it as a
child process, which imports MLflow's server modules again (3.5 CPU-seconds at each start on sqlite).
Checked against MLflow 3.17: `mlflow.server._run_server` sets the server's environment and builds
uvicorn's command line, then hands both to `_exec_cmd`, which this replaces.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ml_assets.deploy import mlflow_auth


@dataclass
class _Stopped:
    """What `_run_server` waits on once uvicorn has returned: a server process that has ended."""

    returncode: int = 0

    def poll(self) -> int:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode


def _serve_here(command: Sequence[str], *, extra_env: dict[str, str] | None = None, **_) -> _Stopped:
    """`python -m uvicorn OPTIONS` (`command`) with `extra_env`, in this process, until the server stops."""
    if list(command[1:3]) != ["-m", "uvicorn"]:
        raise RuntimeError(f"mlflow server would run {command!r}, not uvicorn: check this module against MLflow")
    import mlflow.server
    from uvicorn.main import main as uvicorn

    os.environ.update(extra_env or {})
    if not mlflow.server.is_running_as_server:
        # The child would import MLflow's server knowing it is one, once the options are in its environment
        # (allowed hosts, CORS origins): its Flask app then has MLflow's security middleware, as here.
        from mlflow.server import security

        security.init_security_middleware(mlflow.server.app)
    uvicorn.main(args=list(command[3:]), prog_name="uvicorn", standalone_mode=False)
    return _Stopped()


def main(options: list[str]) -> None:
    import mlflow.server
    from mlflow.cli import cli

    if os.environ.get("MLFLOW_AUTH_DATABASE_URI"):
        mlflow_auth.set_up()
        options = ["--app-name", "basic-auth", *options]
    mlflow.server._exec_cmd = _serve_here
    cli.main(["server", *options], prog_name="mlflow")  # exits with the server


if __name__ == "__main__":
    main(sys.argv[1:])
