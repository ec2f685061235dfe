"""The production topology of docker-compose.yml, without containers, on 127.0.0.1.

    with Topology(workdir, env={"ML_ASSETS_SOURCE": incoming}) as topology:
        topology.wait_until_ready()
        with topology.instance() as instance: ...

One process per compose service, each started as `deploy/service.sh SERVICE` (the image's
entry point) in a process group of its own, as a container would be: a throwaway PostgreSQL
cluster (postgres.py, with deploy/postgres/init.sql run as the postgres image runs it) behind
PgBouncer, `mlflow server` on it serving its own artifacts (in a folder, or at
`artifacts_destination`, e.g. an S3 URL, with `store_env` saying where the store is), the gRPC
code server (whose children are the run workers), the webserver and the daemon. DAGSTER_HOME
holds deploy/dagster.yaml and deploy/workspace.yaml, with `overrides` merged into the former
(e.g. the tests' shorter intervals). Only the MLflow server gets MLflow's database URL;
everything else talks to it over HTTP.

With `workers` (name -> queues), runs execute their steps on Celery: a `redis-server` (Debian's
package; compose's `redis`) and one `service.sh worker` per entry (compose's scaled `worker`),
reading deploy/celery.yaml with `celery_overrides` merged in, and ML_ASSETS_EXECUTOR=celery.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ml_assets.deploy.local.environment import DEPLOY, clean_environ, scoped_environ, service_environ
from ml_assets.deploy.local.mlflow_server import MlflowUsers, mlflow_env
from ml_assets.deploy.local.ports import free_port
from ml_assets.deploy.local.postgres import PostgresServer, accepting, pgbouncer_command, throwaway_postgres
from ml_assets.deploy.local.proc import listening_sockets, process_table, socket_inodes
from ml_assets.deploy.local.runs_report import runs_report
from ml_assets.deploy.local.service import SERVICE_SH, Service
from ml_assets.deploy.local.stacks import session_stacks
from ml_assets.deploy.local.waiting import http_ok, wait_until

# Started in this order; stopped in the reverse order.
SERVICES = ("mlflow", "code-server", "webserver", "daemon")
CELERY_WORKER = "worker"  # service.sh's command for compose's scaled `worker` service


class RedisUnavailable(RuntimeError):
    """No redis-server on this machine."""


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RedisUnavailable("redis-server not found: install Debian's `redis-server` package (.ci/run does)")
    return found


def deep_merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = deep_merge(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


@dataclass
class Topology:
    """The stack in `workdir` (DAGSTER_HOME, logs, asset files, MLflow's artifacts), started by `with`.

    Leaving the block stops every process group it started and deletes the PostgreSQL cluster."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)  # ML_ASSETS_* and other settings of the code
    overrides: dict = field(default_factory=dict)  # merged into deploy/dagster.yaml
    artifacts_destination: str | None = None  # the MLflow server's artifact store; default a folder in workdir
    store_env: dict[str, str] = field(default_factory=dict)  # AWS_* of an object store, for every service
    workers: dict[str, str] = field(default_factory=dict)  # Celery worker name -> its queues, "ingest,train"
    celery_overrides: dict = field(default_factory=dict)  # merged into deploy/celery.yaml
    postgres: PostgresServer | None = None
    mlflow_users: MlflowUsers = field(default_factory=MlflowUsers)
    services: dict[str, Service] = field(default_factory=dict)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __enter__(self) -> Topology:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- addresses and environments

    @property
    def home(self) -> Path:
        return self.workdir / "dagster_home"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def webserver_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['webserver']}"

    def dagster_env(self) -> dict[str, str]:
        """What every Dagster process (and the instance in this process) needs: PostgreSQL, the code server."""
        pg = self.postgres
        return {
            "DAGSTER_HOME": str(self.home),
            # Through PgBouncer, as in docker-compose.yml; optuna and MLflow pool their own connections.
            "POSTGRES_HOST": pg.host,
            "POSTGRES_PORT": str(self.ports["pgbouncer"]),
            "POSTGRES_USER": pg.user,
            "POSTGRES_PASSWORD": pg.password,
            "POSTGRES_DB": "dagster",
            "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
            "DAGSTER_CODE_SERVER_PORT": str(self.ports["code-server"]),
            "DAGSTER_WEBSERVER_PORT": str(self.ports["webserver"]),
        }

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports['redis']}"

    def code_env(self) -> dict[str, str]:
        """The code's settings (what docker-compose.yml gives the code server and the workers)."""
        celery = {
            "ML_ASSETS_EXECUTOR": "celery",
            "ML_ASSETS_CELERY_BROKER_URL": f"{self.redis_url}/0",
            "ML_ASSETS_CELERY_BACKEND_URL": f"{self.redis_url}/1",
        }
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            **self.mlflow_users.client_env(),
            "ML_ASSETS_OPTUNA_STORAGE": self.postgres.url("optuna"),
            "ML_ASSETS_STORAGE_ROOT": str(self.workdir / "data" / "assets"),
            "ML_ASSETS_CACHE_DIR": str(self.workdir / "data" / "downloads"),
            **(celery if self.workers else {}),
            **self.env,
        }

    def service_env(self, name: str) -> dict[str, str]:
        if name == "redis":
            return service_environ(self.store_env)
        if name == "mlflow":
            return mlflow_env(
                self.ports["mlflow"],
                self.postgres.url("mlflow"),
                self.artifacts_destination or str(self.workdir / "data" / "mlartifacts"),
                self.store_env,
                self.mlflow_users.server_env(self.postgres.url("mlflow_auth"), self.workdir / "mlflow-auth.ini"),
            )
        return {**service_environ(self.store_env), **self.dagster_env(), **self.code_env()}

    # ----- life cycle

    def start(self) -> None:
        import yaml

        self.workdir.mkdir(parents=True, exist_ok=True)
        # This process's MLflow clients (the tests' own checks) log in as the pipeline does.
        self._stack.enter_context(scoped_environ(self.mlflow_users.client_env()))
        self.postgres = self._stack.enter_context(throwaway_postgres())
        self.postgres.psql("-f", str(DEPLOY / "postgres" / "init.sql"))  # as the postgres image runs it
        self.ports = {name: free_port() for name in ("pgbouncer", "mlflow", "code-server", "webserver", "redis")}
        self.home.mkdir()
        for name, overrides in (("dagster.yaml", self.overrides), ("celery.yaml", self.celery_overrides)):
            config = deep_merge(yaml.safe_load((DEPLOY / name).read_text()), overrides)
            (self.home / name).write_text(yaml.safe_dump(config, sort_keys=False))
        (self.home / "workspace.yaml").write_text((DEPLOY / "workspace.yaml").read_text())
        logs = self.workdir / "logs"
        logs.mkdir()
        for name in SERVICES:
            self.services[name] = Service(name, self.service_env(name), logs / f"{name}.log", cwd=self.workdir)
        if self.workers:
            self._add_celery_services(logs)
        pgbouncer = pgbouncer_command(self.postgres, self.ports["pgbouncer"])
        self.services["pgbouncer"] = Service(
            "pgbouncer", clean_environ(), logs / "pgbouncer.log", self.workdir, argv=pgbouncer
        )
        self.services["pgbouncer"].start()
        self.wait_for(lambda: accepting(self.postgres, self.ports["pgbouncer"]), "pgbouncer ready", 30, poll=0.2)
        # As compose orders them (depends_on ... service_healthy): the webserver, the daemon and the
        # workers wait for the code server, which creates Dagster's tables in a new database first.
        for name in ("mlflow", "redis"):
            if name in self.services:
                self.services[name].start()
        self.services["code-server"].start()
        self.wait_for(self.code_server_ok, "code-server ready", 180, poll=0.5)
        for service in self.services.values():
            if service.process is None:
                service.start()

    def _add_celery_services(self, logs: Path) -> None:
        port = str(self.ports["redis"])
        argv = [redis_server(), "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no"]
        redis = Service("redis", self.service_env("redis"), logs / "redis.log", self.workdir, argv=argv)
        self.services["redis"] = redis
        for name, queues in self.workers.items():
            env = {**self.service_env(CELERY_WORKER), "CELERY_WORKER_NAME": name, "CELERY_WORKER_QUEUES": queues}
            key = f"{CELERY_WORKER}-{name}"
            self.services[key] = Service(key, env, logs / f"{key}.log", self.workdir, command=CELERY_WORKER)

    def close(self) -> None:
        """SIGTERM to every service at once, SIGKILL to what is left after a grace period; PostgreSQL last."""
        running = [service for service in self.services.values() if service.process is not None]
        for service in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for service in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            service.stop(grace_seconds=0.1)
        self._stack.close()

    def restart(self, name: str) -> None:
        self.services[name].start()

    # ----- readiness

    def wait_for(self, condition: Callable[[], object], what: str, seconds: float, poll: float = 1.0):
        """The condition's first truthy value (an exception counts as "not yet"), polled until `seconds`
        have passed or a service exited; the failure shows the dead services' logs, or the newest runs'
        last events, the stacks of every running service's Python processes and all the logs."""

        def attempt():
            try:
                return condition()
            except Exception:  # noqa: BLE001 - not yet
                return None

        def dead() -> list[str]:
            return [name for name, service in self.services.items() if service.process and not service.running]

        def log() -> str:
            if dead():
                return self.logs(dead())
            running = {name: service.process.pid for name, service in self.services.items() if service.running}
            return "\n".join(filter(None, [self.runs_report(), session_stacks(running), self.logs()]))

        return wait_until(attempt, what, seconds, poll, exited=lambda: ", ".join(dead()), log=log)

    def code_server_ok(self) -> bool:
        from dagster._grpc.client import DagsterGrpcClient

        DagsterGrpcClient(host="127.0.0.1", port=self.ports["code-server"]).ping("ready?")
        return True

    def mlflow_ok(self) -> bool:
        return http_ok(f"{self.tracking_uri}/health")

    def webserver_ok(self) -> bool:
        return http_ok(f"{self.webserver_url}/server_info")

    def daemon_ok(self) -> bool:
        from dagster._daemon.controller import all_daemons_live

        with self.instance() as instance:
            return all_daemons_live(instance)

    def worker_key(self, hostname: str) -> str:
        """The service of the Celery worker `hostname` (NAME@host, as step events name it)."""
        return f"{CELERY_WORKER}-{hostname.split('@')[0]}"

    def workers_ok(self) -> bool:
        keys = [self.worker_key(name) for name in self.workers]
        return all(result.returncode == 0 for result in self.health(*keys).values())

    def wait_until_ready(self, seconds: float = 120) -> None:
        checks = {
            "mlflow": self.mlflow_ok,
            "code-server": self.code_server_ok,
            "webserver": self.webserver_ok,
            "daemon": self.daemon_ok,
            "workers": self.workers_ok,
        }
        for name, check in checks.items():
            self.wait_for(check, f"{name} ready", seconds)

    def health(self, *names: str) -> dict[str, subprocess.CompletedProcess]:
        """`service.sh health COMMAND` (the compose healthchecks) of the named services, all at once."""
        running = {
            name: subprocess.Popen(
                [str(SERVICE_SH), "health", self.services[name].command or name],
                env=self.services[name].env,
                cwd=self.workdir,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for name in names
        }
        results = {}
        for name, process in running.items():
            output, _ = process.communicate(timeout=120)
            results[name] = subprocess.CompletedProcess(process.args, process.returncode, output, "")
        return results

    # ----- reading state

    @contextlib.contextmanager
    def instance(self) -> Iterator:
        """The Dagster instance on PostgreSQL, as the services see it."""
        from dagster import DagsterInstance

        with scoped_environ(self.dagster_env()):
            instance = DagsterInstance.from_config(str(self.home))
        with instance:
            yield instance

    def runs_report(self) -> str:
        """The newest runs and their last events (runs_report.py), or why the instance could not be read."""
        try:
            with self.instance() as instance:
                return runs_report(instance)
        except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the failure it explains
            return f"----- newest Dagster runs: unreadable ({exc!r}) -----"

    def leaders(self) -> dict[str, int]:
        """The first process of each running service, whose process group (session) holds all of the
        service's processes, and PostgreSQL's postmaster, the parent of all of PostgreSQL's."""
        groups = {"postgres": self.postgres.postmaster_pid} if self.postgres else {}
        return {**groups, **{name: service.process.pid for name, service in self.services.items() if service.running}}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each service's processes and by PostgreSQL's.

        A service's processes are its session (run workers included); those that ended count through
        their parent's cumulative children times. PostgreSQL's are the postmaster and its backends.
        """
        sessions = {service.process.pid: name for name, service in self.services.items() if service.running}
        totals = dict.fromkeys([*self.services, "postgres"], 0.0)
        postmaster = self.postgres.postmaster_pid if self.postgres else None
        for pid, stat in process_table().items():
            if stat.session in sessions:
                totals[sessions[stat.session]] += stat.cpu_seconds
            elif postmaster in (pid, stat.ppid):
                totals["postgres"] += stat.cpu_seconds
        return totals

    def listening(self) -> dict[str, set[str]]:
        """The addresses (`host:port`) each running service's processes accept TCP connections on."""
        sessions = {service.process.pid: name for name, service in self.services.items() if service.running}
        sockets = listening_sockets()
        found = {name: set() for name in sessions.values()}
        for pid, stat in process_table().items():
            if stat.session in sessions:
                found[sessions[stat.session]] |= {sockets[inode] for inode in socket_inodes(pid) if inode in sockets}
        return found

    def logs(self, names=None, chars: int = 3000) -> str:
        return "\n".join(
            f"----- {name} log (tail) -----\n{self.services[name].tail(chars)}" for name in (names or self.services)
        )
