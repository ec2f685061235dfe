"""`service.sh health SERVICE`: whether a service of this container (or machine) answers, as compose's
healthchecks and the local topology's readiness ask it. Exit status 0 when it does.

Compose runs these every few seconds for as long as the stack is up, so each imports as little as
it can: not Dagster (its `dagster api grpc-health-check` took 1.1 CPU-seconds a check, this one 0.1).
The daemon's check stays `dagster-daemon liveness-check` in service.sh: only the instance knows its
heartbeats.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request

TIMEOUT_SECONDS = 10
DAGSTER_API = "DagsterApi"  # the service name under which Dagster's gRPC server reports its health


def code_server() -> bool:
    """The gRPC code server reports DagsterApi SERVING on the standard gRPC health service."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{os.environ.get('DAGSTER_CODE_SERVER_PORT', '4000')}") as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=DAGSTER_API), timeout=TIMEOUT_SECONDS
        )
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
        return response.status == 200


def worker() -> bool:
    """This host's worker (CELERY_WORKER_NAME@hostname) answers a ping over the broker."""
    from celery import Celery

    node = f"{os.environ.get('CELERY_WORKER_NAME', 'worker')}@{socket.gethostname()}"
    app = Celery(broker=os.environ["ML_ASSETS_CELERY_BROKER_URL"])
    return bool(app.control.ping(destination=[node], timeout=TIMEOUT_SECONDS))


CHECKS = {
    "code-server": code_server,
    "webserver": lambda: answers(f"http://127.0.0.1:{os.environ.get('DAGSTER_WEBSERVER_PORT', '3000')}/server_info"),
    "mlflow": lambda: answers(f"http://127.0.0.1:{os.environ.get('MLFLOW_PORT', '5000')}/health"),
    "worker": worker,
}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in CHECKS:
        print(f"usage: service.sh health {'|'.join([*CHECKS, 'daemon'])}", file=sys.stderr)
        return 64
    try:
        healthy = CHECKS[argv[0]]()
    except Exception as error:  # whatever the reason, the service did not answer: say it, exit 1
        details = error.details() if hasattr(error, "details") else error  # gRPC's errors: without the stack
        print(f"{argv[0]}: {type(error).__name__}: {details}", file=sys.stderr)
        return 1
    if not healthy:
        print(f"{argv[0]}: not serving", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
