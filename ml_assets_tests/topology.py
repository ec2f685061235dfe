"""The production topology of docker-compose.yml, without containers, on 127.0.0.1.

    with Topology(workdir, env={"ML_ASSETS_SOURCE": incoming}) as topology:
        topology.wait_until_ready()
        with topology.instance() as instance: ...

One process per compose service, each started as `deploy/service.sh SERVICE` (the image's
entry point) in a process group of its own, as a container would be: a throwaway PostgreSQL
cluster (ml_assets_tests/postgres.py, with deploy/postgres/init.sql run as the postgres image
runs it), `mlflow server` on it serving its own artifacts (in a folder, or at `artifacts_destination`,
e.g. an S3 URL, with `store_env` saying where the store is), the gRPC code server (whose children
are the run workers), the webserver and the daemon. DAGSTER_HOME holds deploy/dagster.yaml and
deploy/workspace.yaml, with `overrides` merged into the former (test-sized intervals). Only the
MLflow server gets MLflow's database URL; everything else talks to it over HTTP.

With `workers` (name -> queues), runs execute their steps on Celery: a `redis-server` (Debian's
package; compose's `redis`) and one `service.sh worker` per entry (compose's scaled `worker`),
reading deploy/celery.yaml with `celery_overrides` merged in, and ML_ASSETS_EXECUTOR=celery.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ml_assets_tests.postgres import (
    PostgresServer,
    PostgresUnavailable,
    accepting,
    pgbouncer_binary,
    pgbouncer_command,
    postgres_bindir,
    throwaway_postgres,
)
from ml_assets_tests.support import BIN, ROOT, free_port, http_ok, wait_until

DEPLOY = ROOT / "deploy"
SERVICE_SH = DEPLOY / "service.sh"
# Started in this order; stopped in the reverse order.
SERVICES = ("mlflow", "code-server", "webserver", "daemon")
CELERY_WORKER = "worker"  # service.sh's command for compose's scaled `worker` service
# Test-sized intervals of the instance (merged into deploy/dagster.yaml); the rest is production's.
TEST_INSTANCE = {
    "run_monitoring": {"poll_interval_seconds": 2},
    "run_coordinator": {"config": {"dequeue_interval_seconds": 1}},
}
# The code's test-sized settings for a deployment under test (real TLC months from 2023-01, one month
# of training, a short study, sensor and automation every 5 s); everything else is production's.
TEST_SETTINGS = {
    "ML_ASSETS_START_MONTH": "2023-01",
    "ML_ASSETS_TRAINING_MONTHS": "1",
    "ML_ASSETS_TUNING_TRIALS": "2",
    "ML_ASSETS_TUNING_TIMEOUT_SECONDS": "10",
    "ML_ASSETS_SENSOR_INTERVAL_SECONDS": "5",
    "ML_ASSETS_AUTOMATION_INTERVAL_SECONDS": "5",
}
REGISTERED_MODEL = "trip_duration_xgboost"
REPOSITORY = {"repositoryLocationName": "ml_assets", "repositoryName": "__repository__"}
TRAINING_TAG = ("ml_assets/stage", "training")  # deploy/dagster.yaml's tag limit: one training run at a time
# The environment a service gets besides ours: nothing of a developer's own ML_ASSETS_* or MLflow setup.
_ESCAPING = ("ML_ASSETS_", "MLFLOW_", "DAGSTER_", "POSTGRES_", "PG")


class RedisUnavailable(RuntimeError):
    """No redis-server on this machine."""


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RedisUnavailable("redis-server not found: install Debian's `redis-server` package (.ci/run does)")
    return found


def require_servers(celery: bool = False) -> None:
    """Skip the calling test where PostgreSQL's server and PgBouncer (or, for `celery`, Redis) are not installed;
    fail in CI."""
    import pytest

    try:
        postgres_bindir()
        pgbouncer_binary()
        if celery:
            redis_server()
    except (PostgresUnavailable, RedisUnavailable) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


def clean_environ() -> dict[str, str]:
    """This process's environment without a developer's own ML_ASSETS_*, MLflow, Dagster or PostgreSQL setup."""
    return {key: value for key, value in os.environ.items() if not key.startswith(_ESCAPING)}


def service_environ(store_env: dict[str, str]) -> dict[str, str]:
    """What every service.sh process gets: this venv on PATH, an object store's variables. No BIND_HOST:
    service.sh's default (127.0.0.1) is what the topology test checks."""
    return {
        **clean_environ(),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
        **store_env,
    }


@dataclass(frozen=True)
class MlflowUsers:
    """The basic-auth app's secrets of one MLflow server: its admin, the pipeline's user, the app's key.

    Generated for each topology, as scripts/start.sh generates them into .env."""

    admin_password: str = field(default_factory=lambda: secrets.token_hex(16))
    pipeline_user: str = "ml_assets"
    pipeline_password: str = field(default_factory=lambda: secrets.token_hex(16))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))

    def server_env(self, database_uri: str, config_path: Path) -> dict[str, str]:
        return {
            "MLFLOW_AUTH_DATABASE_URI": database_uri,
            "MLFLOW_AUTH_CONFIG_PATH": str(config_path),
            "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret_key,
            **self.client_env(),
        }

    def client_env(self) -> dict[str, str]:
        """What the pipeline logs in with (MLflow's clients read these)."""
        return {"MLFLOW_TRACKING_USERNAME": self.pipeline_user, "MLFLOW_TRACKING_PASSWORD": self.pipeline_password}


def mlflow_env(
    port: int,
    backend_store_uri: str,
    artifacts_destination: str,
    store_env: dict[str, str],
    auth: dict[str, str] | None = None,
) -> dict:
    """`service.sh mlflow`'s environment: the tracking server on `port`, serving its artifacts from the destination;
    with `auth` (`MlflowUsers.server_env`), behind MLflow's basic-auth app."""
    return {
        **service_environ(store_env),
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_BACKEND_STORE_URI": backend_store_uri,
        "MLFLOW_ARTIFACTS_DESTINATION": artifacts_destination,
        **(auth or {}),
    }


def deep_merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = deep_merge(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


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
        """SIGKILL whatever is left in the group (run workers outlive a server that exits)."""
        pgid = self.process.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                return
            self.process.poll()  # reap the leader: a zombie still counts as a member of the group
            time.sleep(0.1)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class Topology:
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
        self._stack.enter_context(_environ(self.mlflow_users.client_env()))
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
        have passed or a service exited; the failure shows the dead services' logs, or all of them."""

        def attempt():
            try:
                return condition()
            except Exception:  # noqa: BLE001 - not yet
                return None

        def dead() -> list[str]:
            return [name for name, service in self.services.items() if service.process and not service.running]

        return wait_until(
            attempt, what, seconds, poll, exited=lambda: ", ".join(dead()), log=lambda: self.logs(dead() or None)
        )

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

        with _environ(self.dagster_env()):
            instance = DagsterInstance.from_config(str(self.home))
        with instance:
            yield instance

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each service's processes and by PostgreSQL's.

        A service's processes are its session (run workers included); those that ended count through
        their parent's cumulative children times. PostgreSQL's are the postmaster and its backends.
        """
        stats = _proc_stats()
        sessions = {service.process.pid: name for name, service in self.services.items() if service.running}
        totals = dict.fromkeys([*self.services, "postgres"], 0.0)
        postmaster = int((self.postgres.data / "postmaster.pid").read_text().split()[0]) if self.postgres else None
        for pid, (ppid, session, cpu) in stats.items():
            if session in sessions:
                totals[sessions[session]] += cpu
            elif postmaster in (pid, ppid):
                totals["postgres"] += cpu
        return totals

    def listening(self) -> dict[str, set[str]]:
        """The addresses (`host:port`) each running service's processes accept TCP connections on."""
        sessions = {service.process.pid: name for name, service in self.services.items() if service.running}
        sockets = _listening_sockets()
        found = {name: set() for name in sessions.values()}
        for pid, (_, session, _) in _proc_stats().items():
            if session in sessions:
                found[sessions[session]] |= {sockets[inode] for inode in _socket_inodes(pid) if inode in sockets}
        return found

    def logs(self, names=None, chars: int = 3000) -> str:
        return "\n".join(
            f"----- {name} log (tail) -----\n{self.services[name].tail(chars)}" for name in (names or self.services)
        )


def graphql(topology: Topology):
    from dagster_graphql import DagsterGraphQLClient

    return DagsterGraphQLClient("127.0.0.1", port_number=topology.ports["webserver"], timeout=60)


def launch(topology: Topology, month: str, assets: list[str], run_config: dict | None = None) -> str:
    """A run launched from the webserver, as the UI's launchpad does, tagged to queue like automation's."""
    return graphql(topology).submit_job_execution(
        "__ASSET_JOB",
        repository_location_name="ml_assets",
        repository_name="__repository__",
        run_config=run_config or {},
        tags={"dagster/partition": month, TRAINING_TAG[0]: TRAINING_TAG[1]},
        asset_selection=assets,
    )


def stop_sensors(topology: Topology) -> None:
    """Stop every sensor (both run by default) through the webserver, as a user would in the UI."""
    client = graphql(topology)
    found = client._execute(
        """query Sensors($repository: RepositorySelector!) { sensorsOrError(repositorySelector: $repository) {
             ... on Sensors { results { id name } } } }""",
        {"repository": REPOSITORY},
    )["sensorsOrError"]["results"]
    assert len(found) == 2, found
    for sensor in found:
        stopped = client._execute(
            """mutation Stop($id: String!) { stopSensor(id: $id) { __typename
                 ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }""",
            {"id": sensor["id"]},
        )["stopSensor"]
        assert stopped.get("instigationState", {}).get("status") == "STOPPED", (sensor["name"], stopped)


def backfill(
    topology: Topology, job: str, months: list[str], tags: dict | None = None, config: dict | None = None
) -> str:
    """A backfill of `job` over `months`, launched from the webserver as the UI's backfill dialog does."""
    launched = graphql(topology)._execute(
        """mutation Backfill($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
             __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
        {
            "params": {
                "selector": {"partitionSetName": f"{job}_partition_set", "repositorySelector": REPOSITORY},
                "partitionNames": months,
                "tags": [{"key": key, "value": value} for key, value in (tags or {}).items()],
                "runConfigData": config or {},
                # The runs are queued at once, not at the backfill daemon's next iteration (30 s).
                "forceSynchronousSubmission": True,
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def finished_runs(topology: Topology, instance, backfill_id: str, count: int, seconds: float) -> list:
    from dagster import RunsFilter

    def runs():
        return instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))

    topology.wait_for(
        lambda: len(runs()) == count and all(run.is_finished for run in runs()), f"backfill {backfill_id}", seconds
    )
    return runs()


def mlflow_request(
    topology: Topology, endpoint: str, body: dict | None = None, user: str | None = "pipeline", **params
):
    """A request to MLflow's REST API on the tracking server (a POST with `body`), as the pipeline's user
    (`user="pipeline"`), another (`(name, password)`), or nobody (None). Returns (status, JSON)."""
    url = f"{topology.tracking_uri}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if user == "pipeline":
        user = (topology.mlflow_users.pipeline_user, topology.mlflow_users.pipeline_password)
    if user is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(user).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as refused:
        return refused.code, {}


def mlflow_get(topology: Topology, endpoint: str, **params) -> dict:
    """A GET of MLflow's REST API on the tracking server, as the pipeline's user."""
    status, answer = mlflow_request(topology, endpoint, **params)
    assert status == 200, (endpoint, status)
    return answer


def registered_versions(tracking_uri: str) -> dict[str, dict]:
    """Version number -> version record of the registered model, from an MLflow tracking server or store."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    versions = [
        client.get_model_version(REGISTERED_MODEL, found.version)  # search leaves aliases out
        for found in client.search_model_versions(f"name='{REGISTERED_MODEL}'")
    ]
    return {
        str(version.version): {"run_id": version.run_id, "status": version.status, "aliases": sorted(version.aliases)}
        for version in versions
    }


def _proc_stats() -> dict[int, tuple[int, int, float]]:
    """pid -> (parent pid, session id, CPU seconds of it and its ended children) for every process."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        stats[int(entry.name)] = (int(fields[1]), int(fields[3]), sum(int(v) for v in fields[11:15]) / tick)
    return stats


def _listening_sockets() -> dict[str, str]:
    """Socket inode -> `host:port` of every TCP socket listening in this network namespace (IPv4 and IPv6)."""
    found = {}
    for table in ("tcp", "tcp6"):
        for line in Path("/proc/net", table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            host, port = fields[1].split(":")
            # The kernel writes each 32-bit word of the address in the machine's (little-endian) byte order.
            words = [bytes.fromhex(host[i : i + 8])[::-1] for i in range(0, len(host), 8)]
            address = ipaddress.ip_address(b"".join(words))
            address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1 is 127.0.0.1
            found[fields[9]] = f"{address}:{int(port, 16)}"
    return found


def _socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process `pid` holds open (none if it ended meanwhile)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    return inodes


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
