"""`service.sh health SERVICE`: whether a service answers at its address, as compose's healthchecks and
the local topology's readiness ask it; service.sh passes the address, from the same defaults it starts
the service with. Exit status 0 when it answers, 1 with the reason when not.

    python -m ml_assets.deploy.health grpc HOST:PORT | http URL | celery WORKER_NAME

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


def grpc_serving(address: str) -> bool:
    """The gRPC server (Dagster's code server) reports DagsterApi SERVING on the standard health service."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=DAGSTER_API), timeout=TIMEOUT_SECONDS
        )
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def http_answers(url: str) -> bool:
    """200 (urllib raises, with the reason, for an error status or no answer)."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
        return response.status == 200


def celery_worker_answers(name: str) -> bool:
    """This host's worker NAME@hostname answers a ping over the broker (ML_ASSETS_CELERY_BROKER_URL, read
    from the environment: it may hold a password, which a command line would show)."""
    from celery import Celery

    app = Celery(broker=os.environ["ML_ASSETS_CELERY_BROKER_URL"])
    return bool(app.control.ping(destination=[f"{name}@{socket.gethostname()}"], timeout=TIMEOUT_SECONDS))


CHECKS = {"grpc": grpc_serving, "http": http_answers, "celery": celery_worker_answers}
USAGE = "usage: python -m ml_assets.deploy.health grpc HOST:PORT | http URL | celery WORKER_NAME"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in CHECKS:
        print(USAGE, file=sys.stderr)
        return 64
    kind, target = argv
    try:
        healthy = CHECKS[kind](target)
    except Exception as error:  # whatever the reason, the service did not answer: say it, exit 1
        details = error.details() if hasattr(error, "details") else error  # gRPC's errors: without the stack
        print(f"{kind} {target}: {type(error).__name__}: {details}", file=sys.stderr)
        return 1
    if not healthy:
        print(f"{kind} {target}: not serving", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
