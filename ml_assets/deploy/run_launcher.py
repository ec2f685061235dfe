"""Run launcher of the production topology: Dagster's DefaultRunLauncher plus a run worker health check.

With the DefaultRunLauncher the gRPC code server starts each run's worker as its own child process.
When that process dies with the server (the code server's container is killed or restarted),
nobody reports the run's end: it would stay STARTED forever, and run retries would never see a
failure. Run monitoring (`run_monitoring` in deploy/dagster.yaml) asks a launcher whether a run's
worker is alive only if the launcher can tell; this one asks the code server that started the run
(the `dagster/grpc_info` tag) which runs it is executing (`GetCurrentRuns`):

- the server answers and the run is among them: RUNNING;
- the server answers without it: the worker is gone (the server was restarted, or the process
  died and the server is about to report it): FAILED, so the run is marked failed and retried;
- the server cannot be reached: RUNNING until `unreachable_seconds` have passed since the first
  failed attempt (a restarting server is not a lost one), then FAILED;
- the server does not implement the call (a `dagster code-server start` proxy): RUNNING; use
  `dagster api grpc` as the code server (deploy/service.sh does).

It uses Dagster's private launcher and gRPC APIs (`dagster._core`, `dagster._grpc`), checked against
Dagster 1.13.27, the version pyproject.toml pins: check them again when upgrading.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from dagster import DefaultRunLauncher, Field
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._serdes import ConfigurableClassData

DEFAULT_UNREACHABLE_SECONDS = 300


class CodeServerRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose run workers run monitoring can check through their code server."""

    def __init__(
        self, inst_data: ConfigurableClassData | None = None, unreachable_seconds: int = DEFAULT_UNREACHABLE_SECONDS
    ):
        super().__init__(inst_data=inst_data)
        self.unreachable_seconds = unreachable_seconds
        self._unreachable_since: dict[str, float] = {}  # "host:port" -> first failed attempt

    @classmethod
    def config_type(cls):
        return {
            "unreachable_seconds": Field(
                int,
                is_required=False,
                default_value=DEFAULT_UNREACHABLE_SECONDS,
                description="how long a run's code server may be unreachable before its run counts as lost",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        import json

        import grpc
        from dagster._core.errors import DagsterUserCodeUnreachableError
        from dagster._grpc.client import DagsterGrpcClient
        from dagster._grpc.types import GetCurrentRunsResult
        from dagster._serdes import deserialize_value

        raw = run.tags.get(GRPC_INFO_TAG)
        if not raw:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no code server recorded for this run; not checked")
        info = json.loads(raw)
        server = f"{info.get('host')}:{info.get('port') or info.get('socket')}"
        client = DagsterGrpcClient(
            host=info.get("host"),
            port=info.get("port"),
            socket=info.get("socket"),
            use_ssl=bool(info.get("use_ssl", False)),
        )
        try:
            current = deserialize_value(client.get_current_runs(), GetCurrentRunsResult)
        except DagsterUserCodeUnreachableError as exc:
            cause = exc.__cause__
            if isinstance(cause, grpc.RpcError) and cause.code() == grpc.StatusCode.UNIMPLEMENTED:
                return CheckRunHealthResult(
                    WorkerStatus.RUNNING, f"code server {server} cannot list its runs; not checked"
                )
            since = self._unreachable_since.setdefault(server, time.monotonic())
            waited = time.monotonic() - since
            if waited < self.unreachable_seconds:
                return CheckRunHealthResult(
                    WorkerStatus.RUNNING,
                    f"code server {server} unreachable for {waited:.0f} s; waiting up to "
                    f"{self.unreachable_seconds} s before counting the run as lost",
                    transient=True,
                )
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"code server {server}, which ran this run's worker, has been unreachable "
                f"for {waited:.0f} s: the run worker is lost",
            )
        self._unreachable_since.pop(server, None)
        if current.serializable_error_info is not None:
            return CheckRunHealthResult(
                WorkerStatus.RUNNING,
                "code server could not list its runs; not checked: " + current.serializable_error_info.message,
                transient=True,
            )
        if run.run_id in current.current_runs:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"code server {server} is not running this run: its worker process is gone (the code server was "
            "restarted or the process was killed)",
        )
