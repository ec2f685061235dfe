"""Whether a service is up, and where things stood when a wait on one timed out: `service.sh health`
(compose's healthchecks and the local topology's readiness) against real servers, and what a timed-out
wait on the topology prints: each service's Python stacks and the newest runs' last events.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ml_assets.deploy.local.service import SERVICE_SH
from ml_assets_tests.http_server import serve_directory
from ml_assets_tests.support import stop_process_group, wait_until

pytestmark = pytest.mark.deployment


def test_health_checks_answer_for_a_serving_service_and_name_what_is_wrong_otherwise(tmp_path):
    """`service.sh health` as compose runs it, against a real gRPC health service registered as Dagster's
    code server registers it and a real HTTP server: SERVING and 200 are healthy; NOT_SERVING, a closed
    port and an unknown service are not, with the reason. (The topology test runs them against the real
    Dagster and MLflow servers.)"""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from ml_assets.deploy.health import DAGSTER_API
    from ml_assets.deploy.local.environment import service_environ

    def check(service: str, **ports: int) -> subprocess.CompletedProcess:
        env = {**service_environ({}), **{name: str(port) for name, port in ports.items()}}
        return subprocess.run([str(SERVICE_SH), "health", service], env=env, capture_output=True, text=True)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        servicer.set(DAGSTER_API, health_pb2.HealthCheckResponse.SERVING)
        assert check("code-server", DAGSTER_CODE_SERVER_PORT=port).returncode == 0
        servicer.set(DAGSTER_API, health_pb2.HealthCheckResponse.NOT_SERVING)
        refused = check("code-server", DAGSTER_CODE_SERVER_PORT=port)
        assert refused.returncode == 1 and "not serving" in refused.stderr, refused.stderr
    finally:
        server.stop(grace=None)
    closed = check("code-server", DAGSTER_CODE_SERVER_PORT=port)
    assert closed.returncode == 1 and "Connection refused" in closed.stderr, closed.stderr
    closed = check("mlflow", MLFLOW_PORT=port)  # nothing listens there any more
    assert closed.returncode == 1 and "Connection refused" in closed.stderr, closed.stderr

    (tmp_path / "server_info").write_text("{}")  # the webserver's address answers; /health is a 404 here
    with serve_directory(tmp_path) as web:
        web_port = int(web.url.rsplit(":", 1)[1])
        assert check("webserver", DAGSTER_WEBSERVER_PORT=web_port).returncode == 0
        missing = check("mlflow", MLFLOW_PORT=web_port)
        assert missing.returncode == 1 and "404" in missing.stderr, missing.stderr
    assert check("scheduler").returncode == 64


def test_a_celery_worker_stops_on_the_sigterm_its_first_process_gets(tmp_path):
    """`docker stop` signals the container's first process only: `service.sh worker` must be Celery itself.
    It was `dagster-celery worker start`, which waits on a `celery worker` child and forwards nothing:
    as PID 1 it ignored SIGTERM (no handler) and the worker was killed after the grace period; outside a
    container it died and left Celery running."""
    import signal

    from ml_assets.deploy.local.environment import DEPLOY, service_environ
    from ml_assets.deploy.local.ports import free_port
    from ml_assets.deploy.local.proc import process_table

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (home / "celery.yaml").write_text((DEPLOY / "celery.yaml").read_text())
    broker = f"redis://127.0.0.1:{free_port()}"  # nothing answers: the worker waits for Redis
    env = {
        **service_environ({}),
        "DAGSTER_HOME": str(home),
        "ML_ASSETS_CELERY_BROKER_URL": f"{broker}/0",
        "ML_ASSETS_CELERY_BACKEND_URL": f"{broker}/1",
    }
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [str(SERVICE_SH), "worker"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(lambda: "Cannot connect to" in log.read_text(), "the worker's consumer started", 120)
        os.kill(worker.pid, signal.SIGTERM)  # the first process only, as `docker stop` does
        wait_until(
            lambda: (
                worker.poll() is not None and not any(stat.session == worker.pid for stat in process_table().values())
            ),
            "every process of the worker to exit",
            30,
            log=lambda: log.read_text()[-3000:],
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def test_a_timed_out_wait_shows_where_each_python_process_of_a_service_is(tmp_path):
    """What a hung service waits on, read from outside (py-spy): a Python process waiting on a socket
    in a session of its own, as a service's are, and its non-Python child, which is left out."""
    from ml_assets.deploy.local.stacks import session_stacks

    script = tmp_path / "hung.py"
    script.write_text(
        "import socket, subprocess\n"
        "def wait_for_a_caller():\n"
        "    listening = socket.create_server(('127.0.0.1', 0))\n"
        "    listening.accept()\n"
        "subprocess.Popen(['sleep', '60'])\n"
        "wait_for_a_caller()\n"
    )
    hung = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    try:
        stacks = wait_until(
            lambda: "wait_for_a_caller" in (dumped := session_stacks({"hung": hung.pid})) and dumped,
            "the stack of the hung process",
            30,
        )
    finally:
        stop_process_group(hung)
    assert stacks.count("(py-spy dump)") == 1, stacks  # not `sleep`
    # The state is a snapshot: S while it waits, R or D (a page read in) under load.
    assert re.search(rf"----- hung process {hung.pid}, state [A-Za-z] \(py-spy dump\) -----", stacks), stacks
    assert "socket.accept" in stacks


def test_a_timed_out_wait_shows_where_each_run_stopped():
    """The newest runs, each with its status and partition; a failed one with its last events, which
    name the step, the error and the line that raised it. A run that succeeded shows no events."""
    from dagster import DagsterInstance, asset, materialize

    from ml_assets.deploy.local.runs_report import runs_report

    @asset
    def fine():
        return 1

    @asset
    def broken():
        raise ValueError("the month's file is truncated")

    with DagsterInstance.ephemeral() as instance:
        materialize([fine], instance=instance, tags={"dagster/partition": "2023-02"})
        failed = materialize([broken], instance=instance, raise_on_error=False)
        report = runs_report(instance, events=50).splitlines()

    assert report[1].startswith(f"{failed.run_id[:8]} FAILURE __ephemeral_asset_job__ partition=None")
    (failure,) = [line for line in report if "STEP_FAILURE broken" in line]
    assert "the month's file is truncated at File" in failure and "in broken" in failure, failure
    assert " SUCCESS __ephemeral_asset_job__ partition=2023-02 by=-" in report[-1]


def test_a_port_one_process_picked_is_never_picked_by_another(monkeypatch):
    """The compose tests run beside the rest of the suite, and each picked a free port that the other
    then bound ("address already in use"): a port stays reserved for the process that picked it, until
    that process ends, though nothing listens on it yet."""
    import secrets

    from ml_assets.deploy.local import ports

    pick_and_wait = "from ml_assets.deploy.local.ports import free_port; print(free_port(), flush=True); input()"
    picker = subprocess.Popen(
        [sys.executable, "-c", pick_and_wait],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        taken = int(picker.stdout.readline())
        low = min(10000, int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]) // 2)
        draws = iter([taken - low, taken - low + 1, taken - low - 1])
        monkeypatch.setattr(secrets, "randbelow", lambda _: next(draws))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", taken))  # free: only reserved
        assert ports.free_port() in (taken + 1, taken - 1)
    finally:
        picker.communicate("\n", timeout=30)
    draws = iter([taken - low])  # its picker ended: free again
    assert ports.free_port() == taken


def test_stopping_a_process_group_leaves_none_of_it(tmp_path):
    """A member that outlives its leader's SIGTERM (a code server `dagster dev` spawned while it was being stopped
    missed the signal and lived on for good, found after a `make test`) is killed with the group."""
    pid_file = tmp_path / "member.pid"
    leader = subprocess.Popen(
        ["sh", "-c", f"sh -c 'trap \"\" TERM; echo $$ > {pid_file}; while :; do sleep 1; done' & wait"],
        start_new_session=True,
    )
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), "the member started", 30, poll=0.1)
    member = int(pid_file.read_text())
    stop_process_group(leader)

    def gone() -> bool:
        try:
            state = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        return state == "Z"  # killed, not yet reaped by init

    wait_until(gone, "the member stopped", 10, poll=0.1)
