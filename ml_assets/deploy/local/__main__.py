"""`python -m ml_assets.deploy.local FOLDER` (`make stack`): the production topology without Docker.

Starts the stack of ml_assets.deploy.local.topology with its files in FOLDER (a new folder),
prints the webserver's and the MLflow server's addresses, where MLflow's logins are and the first
process of each service, then waits. Ctrl-C (SIGINT), SIGTERM or SIGHUP stops every process group
it started and PostgreSQL, whose cluster is deleted: a stack to try the deployment on,
not a place to keep models. The code's settings are the ML_ASSETS_* variables of this
environment, given to the code server (and the workers) as they are.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from ml_assets.deploy.local.service import SERVICE_SH
from ml_assets.deploy.local.topology import Topology

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
LOGINS = "mlflow-logins.env"  # in FOLDER while the stack runs, readable by its owner only


class Stopped(BaseException):
    """A stop signal arrived (a BaseException, as KeyboardInterrupt: no `except Exception` waiting on a
    service swallows it)."""


def _stop(signum: int, frame) -> None:
    # Once: a second Ctrl-C must not cut the stopping short and leave processes behind.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Stopped(signal.Signals(signum).name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ml_assets.deploy.local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", type=Path, help="a new (or empty) folder for the stack's files")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="run the steps on N Celery workers reading both queues, with a redis-server "
        "(ML_ASSETS_EXECUTOR=celery); default 0: each run executes its steps itself",
    )
    parser.add_argument(
        "--ready-seconds", type=float, default=300, help="how long each service may take to answer (default 300)"
    )
    return parser.parse_args(argv)


def write_logins(topology: Topology) -> Path:
    """MLflow's admin (the UI's login) and the pipeline's user, as scripts/start.sh writes them into .env."""
    users = topology.mlflow_users
    path = topology.workdir / LOGINS
    path.touch(mode=0o600)
    path.write_text(
        "# MLflow's logins of the stack running in this folder (deleted when it stops)\n"
        f"MLFLOW_AUTH_ADMIN_USERNAME=admin\nMLFLOW_AUTH_ADMIN_PASSWORD={users.admin_password}\n"
        f"MLFLOW_TRACKING_USERNAME={users.pipeline_user}\nMLFLOW_TRACKING_PASSWORD={users.pipeline_password}\n"
    )
    return path


def serve(topology: Topology, ready_seconds: float) -> None:
    """Start the stack, say where it is, and wait for a stop signal; every process is stopped on leaving."""
    with topology:
        topology.wait_until_ready(ready_seconds)
        logins = write_logins(topology)
        try:
            leaders = ", ".join(f"{name} {pid}" for name, pid in topology.leaders().items())
            print(
                f"ml_assets stack ready in {topology.workdir} (logs in {topology.workdir / 'logs'}):\n"
                f"  webserver  {topology.webserver_url}\n"
                f"  MLflow     {topology.tracking_uri}  (logins in {logins})\n"
                f"  processes: {leaders}\n"
                "    (each service's process group; PostgreSQL's postmaster)\n"
                "Ctrl-C or SIGTERM stops them all.",
                flush=True,
            )
            exited: set[str] = set()
            while True:
                time.sleep(2)
                for name, service in topology.services.items():
                    if service.process is not None and not service.running and name not in exited:
                        exited.add(name)
                        print(f"{name} exited ({service.log}); the stack goes on without it", file=sys.stderr)
        finally:
            logins.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not SERVICE_SH.exists():
        print(f"no {SERVICE_SH}: the stack runs from a checkout of the project", file=sys.stderr)
        return 2
    folder = args.folder.resolve()
    if folder.exists() and any(folder.iterdir()):
        print(f"{folder} is not empty: give the stack a new folder", file=sys.stderr)
        return 2
    settings = {key: value for key, value in os.environ.items() if key.startswith("ML_ASSETS_")}
    workers = {f"worker{number}": "ingest,train" for number in range(1, args.workers + 1)}
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)
    print(f"starting the stack in {folder} …", flush=True)
    try:
        serve(Topology(folder, env=settings, workers=workers), args.ready_seconds)
    except Stopped as stop:
        print(f"{stop}: every process of the stack stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
