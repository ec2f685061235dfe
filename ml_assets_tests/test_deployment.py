"""The production topology (docker-compose.yml) without containers: PostgreSQL, an MLflow tracking
server, the gRPC code server, the webserver and the daemon, as separate processes on 127.0.0.1.

There is no Docker engine here: the compose file and the Dockerfile are checked statically (and
with `docker compose config` / `docker-compose config` where one is installed), and the topology
test starts the image's own entry point (deploy/service.sh) once per compose service, through
the product's local stack (ml_assets/deploy/local/, which `python -m ml_assets.deploy.local` runs
for a person too). Months are real TLC files, a tenth of their trips (so that training fits the
time budget of a test), dropped one by one into a directory source.

Run alone with `pytest -m deployment`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ml_assets.core.tracking import REGISTERED_MODEL
from ml_assets.deploy.local.environment import clean_environ
from ml_assets.deploy.local.proc import ended, process_table
from ml_assets.deploy.local.service import SERVICE_SH
from ml_assets.deploy.local.topology import CELERY_WORKER, SERVICES, Topology
from ml_assets.deploy.local.ui_actions import TRAINING_TAG, graphql, launch
from ml_assets.keys import TRAINED_MODEL
from ml_assets_tests.deployment_support import (
    TEST_INSTANCE,
    TEST_SETTINGS,
    mlflow_get,
    mlflow_request,
    registered_versions,
    require_servers,
)
from ml_assets_tests.http_server import serve_directory
from ml_assets_tests.support import ROOT, drop_month, http_ok, stop_process_group, wait_until

pytestmark = pytest.mark.deployment

MONTHS = ["2023-01", "2023-02", "2023-03", "2023-04"]
IN_PROGRESS = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}
# What scripts/start.sh generates into .env besides POSTGRES_PASSWORD: MLflow's logins.
GENERATED_MLFLOW_SECRETS = ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")

# Test-sized budgets and intervals; everything else is the production configuration.
CODE_ENV = {
    **TEST_SETTINGS,
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

# --------------------------------------------------------------------------------------------
# Static checks: compose file, Dockerfile, .env.example, start script
# --------------------------------------------------------------------------------------------


def compose_file() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def env_example() -> dict[str, str]:
    pairs = [
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return {key.strip(): value.strip() for key, value in pairs}


def test_compose_file_describes_the_topology():
    compose = compose_file()
    services = compose["services"]
    assert set(services) == {
        "postgres",
        "pgbouncer",
        "mlflow",
        "code_server",
        "webserver",
        "daemon",
        "redis",
        "worker",
        "minio",
        "minio_bucket",
    }
    # MinIO only where asked for (`--profile minio`); nothing else depends on it.
    assert {name for name, service in services.items() if "profiles" in service} == {"minio", "minio_bucket"}
    assert services["minio"]["profiles"] == services["minio_bucket"]["profiles"] == ["minio"]
    assert services["minio_bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["minio"]["environment"]["MINIO_ROOT_USER"] == "${AWS_ACCESS_KEY_ID:-}"

    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "postgres_data:/var/lib/postgresql/data" in postgres["volumes"]
    assert "./deploy/postgres/init.sql:/docker-entrypoint-initdb.d/init.sql:ro" in postgres["volumes"]

    # Dagster's processes reach PostgreSQL through PgBouncer (session pooling), as the topology tests do;
    # MLflow's server and optuna, which pool their own connections, go to postgres.
    pgbouncer = services["pgbouncer"]
    assert pgbouncer["image"].startswith("edoburu/pgbouncer:")
    assert pgbouncer["environment"]["DB_HOST"] == "postgres"
    assert pgbouncer["environment"]["POOL_MODE"] == "session"
    assert pgbouncer["environment"]["AUTH_TYPE"] == "scram-sha-256"
    assert pgbouncer["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in pgbouncer["healthcheck"]["test"]
    for name in ("code_server", "webserver", "daemon", "worker"):
        env = services[name]["environment"]
        assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"]) == ("pgbouncer", pgbouncer["environment"]["LISTEN_PORT"])
        assert services[name]["depends_on"]["pgbouncer"]["condition"] == "service_healthy", name
    assert "ports" not in pgbouncer

    # Every other service runs the one image, through deploy/service.sh, with a healthcheck it runs too.
    commands = {}
    for name in ("mlflow", "code_server", "webserver", "daemon", "worker"):
        service = services[name]
        assert service["build"] == "." and service["image"] == services["mlflow"]["image"], name
        (commands[name],) = service["command"]
        assert service["healthcheck"]["test"] == ["CMD", "ml-assets-service", "health", commands[name]], name
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name
    assert set(commands.values()) == {*SERVICES, CELERY_WORKER}, "the topology tests start exactly these services"

    # Celery: Redis (its queue kept in a named volume) between the runs and the scalable workers,
    # which run the steps with the code server's settings and files.
    assert services["redis"]["image"].startswith("redis:")
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker, "`--scale worker=N` needs neither"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["depends_on"]["code_server"]["condition"] == "service_healthy"
    code_env = services["code_server"]["environment"]
    assert {key: value for key, value in worker["environment"].items() if not key.startswith("CELERY_WORKER_")} == (
        code_env
    )
    assert code_env["ML_ASSETS_CELERY_BROKER_URL"].endswith("redis://redis:6379/0}")

    # service.sh binds 127.0.0.1 unless told otherwise; inside a container, other containers must reach
    # the servers, so compose binds every interface there, and publishes on the host's loopback only.
    assert 'bind="${BIND_HOST:-127.0.0.1}"' in SERVICE_SH.read_text()
    for name in ("mlflow", "code_server", "webserver"):
        assert services[name]["environment"]["BIND_HOST"] == "0.0.0.0", name
    # Published on the loopback interface only.
    assert services["webserver"]["ports"] == ["127.0.0.1:${DAGSTER_UI_PORT:-3000}:3000"]
    assert services["mlflow"]["ports"] == ["127.0.0.1:${MLFLOW_UI_PORT:-5000}:5000"]
    assert services["minio"]["ports"] == ["127.0.0.1:${MINIO_CONSOLE_PORT:-9001}:9001"]
    assert all("ports" not in services[name] for name in ("postgres", "code_server", "daemon"))

    # Named volumes for everything that must survive recreating the containers.
    volumes = {
        name: [entry.split(":")[0] for entry in service.get("volumes", [])] for name, service in services.items()
    }
    assert set(compose["volumes"]) == {
        "postgres_data",
        "redis_data",
        "mlflow_artifacts",
        "assets",
        "downloads",
        "dagster_storage",
        "minio_data",
    }
    assert "mlflow_artifacts" in volumes["mlflow"] and "redis_data" in volumes["redis"]
    assert "minio_data" in volumes["minio"]
    assert {"assets", "downloads", "dagster_storage"} <= set(volumes["code_server"]) & set(volumes["worker"])
    assert "dagster_storage" in volumes["webserver"] and "dagster_storage" in volumes["daemon"]

    # MLflow: PostgreSQL backend, served artifacts; nobody else gets its database URL.
    mlflow_env = services["mlflow"]["environment"]
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    code_env = services["code_server"]["environment"]
    assert code_env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert code_env["ML_ASSETS_OPTUNA_STORAGE"].endswith("@postgres:5432/optuna")
    for name in ("code_server", "webserver", "daemon", "worker"):
        assert "MLFLOW_BACKEND_STORE_URI" not in services[name]["environment"], name
        for key in (
            "POSTGRES_HOST",
            "POSTGRES_PORT",
            "POSTGRES_USER",
            "POSTGRES_PASSWORD",
            "POSTGRES_DB",
            "DAGSTER_CODE_SERVER_HOST",
            "DAGSTER_CODE_SERVER_PORT",
        ):
            assert key in services[name]["environment"], (name, key)
    assert "--serve-artifacts" in SERVICE_SH.read_text()

    # MLflow's basic-auth app, its users in a database of their own; the pipeline logs in as its own user,
    # with a password from .env (never in the tracking URI), the admin's is the MLflow server's alone.
    assert mlflow_env["MLFLOW_AUTH_DATABASE_URI"].endswith("@postgres:5432/mlflow_auth")
    assert "CREATE DATABASE mlflow_auth;" in (ROOT / "deploy" / "postgres" / "init.sql").read_text()
    for secret in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_TRACKING_PASSWORD"):
        assert mlflow_env[secret].startswith(f"${{{secret}:?"), secret  # required: start.sh generates it
    assert code_env["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_TRACKING_PASSWORD:?")
    assert code_env["MLFLOW_TRACKING_USERNAME"] == mlflow_env["MLFLOW_TRACKING_USERNAME"]
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in code_env

    # An object store: the code server (its runs) and the MLflow server get its variables, and where
    # MLflow keeps artifacts is a setting (the volume by default).
    for name in ("mlflow", "code_server"):
        store = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"}
        assert store <= set(services[name]["environment"]), name
    assert mlflow_env["MLFLOW_ARTIFACTS_DESTINATION"] == "${MLFLOW_ARTIFACTS_DESTINATION:-/data/mlartifacts}"
    assert code_env["ML_ASSETS_STORAGE_ROOT"] == "${ML_ASSETS_STORAGE_ROOT:-/data/assets}"


def test_compose_variables_and_env_example_agree():
    """.env.example lists every variable the compose file reads, and every setting the code reads."""
    text = (ROOT / "docker-compose.yml").read_text()
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    listed = set(env_example())
    assert referenced - listed == set(), "variables the compose file reads but .env.example does not list"
    assert listed - referenced == set(), "variables of .env.example that the compose file never reads"

    # Every setting of the code (ml_assets.settings, the one table of them) reaches the code server.
    from ml_assets import settings

    variables = {setting.variable for setting in settings.ALL} - {settings.VERBOSE.variable}  # `make run`'s own
    code_server = set(compose_file()["services"]["code_server"]["environment"])
    assert variables - code_server == set(), "settings of the code that docker-compose.yml does not pass on"


def test_no_credentials_are_committed():
    """No password in any file of the repository: URLs and settings take theirs from the environment."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.suffix in {".parquet", ".ubj", ".png"}:
            continue
        text = path.read_text(errors="replace")
        for secret in re.findall(r"://[A-Za-z0-9_.$%{}()-]+:([^@\s/]+)@", text):
            # A variable, a PLACEHOLDER, or one masked as the project shows them (***)
            assert secret[0] in "${<" or secret.isupper() or secret == "***", f"{name}: a password in a URL"
        for value in re.findall(
            r"(?m)^[ \t]*[A-Z_]*(?:PASSWORD|ACCESS_KEY_ID|SECRET_ACCESS_KEY)[ \t]*[=:][ \t]*([^\s#]*)", text
        ):
            assert value == "" or value[0] in "${", f"{name}: a password or key setting with a value"
    example = env_example()
    assert example["POSTGRES_PASSWORD"] == example["AWS_ACCESS_KEY_ID"] == example["AWS_SECRET_ACCESS_KEY"] == ""
    instance = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    assert instance["storage"]["postgres"]["postgres_db"]["password"] == {"env": "POSTGRES_PASSWORD"}
    ignored = (ROOT / ".gitignore").read_text().split() + (ROOT / ".dockerignore").read_text().split()
    assert ignored.count(".env") == 2


def test_compose_file_validates():
    """`docker compose config` (or Debian's `docker-compose config`), where a compose tool is installed."""
    env = {**os.environ, **dict.fromkeys(("POSTGRES_PASSWORD", *GENERATED_MLFLOW_SECRETS), "0123456789abcdef")}
    tools = [["docker", "compose"], ["docker-compose"]]
    for tool in tools:
        if shutil.which(tool[0]) and subprocess.run([*tool, "version"], capture_output=True).returncode == 0:
            result = subprocess.run(
                [*tool, "--file", "docker-compose.yml", "config", "--quiet"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, result.stderr
            missing = subprocess.run(
                [*tool, "--file", "docker-compose.yml", "config", "--quiet"],
                cwd=ROOT,
                env={k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"},
                capture_output=True,
                text=True,
            )
            assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr
            return
    if os.environ.get("CI"):
        pytest.fail("no compose tool: .ci/run installs Debian's docker-compose")
    pytest.skip("neither `docker compose` nor `docker-compose` is installed")


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_copies_what_exists_and_runs_what_the_topology_test_runs():
    instructions = dockerfile_instructions()
    copies = [(args.split()[:-1], args.split()[-1]) for keyword, args in instructions if keyword == "COPY"]
    copied = [sources for sources, _ in copies]
    for sources in copied:
        for source in sources:
            assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert not {source for sources in copied for source in sources} & set(dockerignore)

    commands = dict(
        (keyword, args) for keyword, args in instructions if keyword in {"FROM", "USER", "ENTRYPOINT", "CMD"}
    )
    assert commands["FROM"].startswith("python:3.11"), "the Python the tests run on"
    assert commands["USER"] not in {"root", "0"}
    # The entry point is deploy/service.sh (the topology test's command), its default the code server.
    assert (["deploy/service.sh"], "/usr/local/bin/ml-assets-service") in copies
    assert json.loads(commands["ENTRYPOINT"]) == ["ml-assets-service"]
    assert json.loads(commands["CMD"])[0] in SERVICES
    # Dependencies are exactly uv.lock with the extras of the production topology, gs:// storage and
    # steps as Kubernetes Jobs, installed by uv pinned with hashes: the base image's pip resolves nothing.
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert [args for args in runs if "pip " in args] == [
        "python -m pip install --no-deps --require-hashes --requirement requirements-uv.txt"
    ]
    syncs = [shlex.split(args) for args in runs if args.startswith("uv ")]
    assert syncs and all(args[:3] == ["uv", "sync", "--frozen"] for args in syncs)
    for args in syncs:
        assert {value for option, value in zip(args, args[1:], strict=False) if option == "--extra"} == {
            "deploy",
            "gcs",
            "k8s",
        }
    package = importlib.metadata.metadata("ml_assets")
    assert {"deploy", "gcs", "k8s"} <= set(package.get_all("Provides-Extra"))
    assert any(
        pin.startswith("dagster-postgres==") and 'extra == "deploy"' in pin for pin in package.get_all("Requires-Dist")
    )
    # Every path the image's processes read is one it creates or copies.
    instance = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    assert instance["run_launcher"]["module"] == "ml_assets.deploy.run_launcher"


def test_helm_values_run_the_code_location_as_the_instance_does():
    """deploy/helm/values.yaml (Dagster's chart; no cluster here): the image's code location, one
    Kubernetes Job per run, and the run queue, monitoring and retries of deploy/dagster.yaml."""
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
    instance = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "ml_assets.definitions"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    daemon = values["dagsterDaemon"]
    queue = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queue["maxConcurrentRuns"] == instance["run_coordinator"]["config"]["max_concurrent_runs"]
    assert queue["tagConcurrencyLimits"] == instance["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert queue["dequeueIntervalSeconds"] == instance["run_coordinator"]["config"]["dequeue_interval_seconds"]
    assert daemon["runMonitoring"]["enabled"] and daemon["runRetries"]["enabled"]
    assert daemon["runRetries"]["maxRetries"] == instance["run_retries"]["max_retries"]


def test_start_script_creates_env_with_a_generated_password_and_starts_compose(tmp_path):
    """scripts/start.sh with a stand-in `docker` that records what it is asked."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    for name in ("scripts/start.sh", ".env.example", "docker-compose.yml"):
        shutil.copy(ROOT / name, project / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "docker-calls"
    fake = bin_dir / "docker"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexit 0\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}

    first = subprocess.run(
        ["bash", str(project / "scripts" / "start.sh"), "-d"], env=env, capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 0, first.stderr
    created = (project / ".env").read_text()
    secrets = {
        name: re.search(rf"^{name}=(.*)$", created, re.M)[1]
        for name in ("POSTGRES_PASSWORD", *GENERATED_MLFLOW_SECRETS)
    }
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in secrets.values()), secrets
    assert len(set(secrets.values())) == len(secrets)
    assert created.count("MLFLOW_TRACKING_PASSWORD=") == 1
    assert oct((project / ".env").stat().st_mode & 0o777) == oct(0o600)
    assert calls.read_text().splitlines() == ["info", "compose version", "compose up --build -d"]
    assert "http://127.0.0.1:3000" in first.stdout

    # A second start keeps the .env (and its password).
    again = subprocess.run(
        ["bash", str(project / "scripts" / "start.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and (project / ".env").read_text() == created

    # A .env made before MLflow had logins gets them, and keeps everything else.
    older = "".join(line for line in created.splitlines(True) if not line.startswith(GENERATED_MLFLOW_SECRETS))
    (project / ".env").write_text(older)
    upgraded = subprocess.run(
        ["bash", str(project / "scripts" / "start.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert upgraded.returncode == 0, upgraded.stderr
    lines = (project / ".env").read_text().splitlines(True)
    assert [line for line in lines if not line.startswith(GENERATED_MLFLOW_SECRETS)] == older.splitlines(True)
    assert all(re.search(rf"^{name}=[0-9a-f]{{32}}$", "".join(lines), re.M) for name in GENERATED_MLFLOW_SECRETS)
    assert oct((project / ".env").stat().st_mode & 0o777) == oct(0o600)

    # Without a Docker engine it says so and starts nothing.
    fake.write_text('#!/bin/sh\n[ "$1" = info ] && exit 1\nexit 0\n')
    broken = subprocess.run(
        ["bash", str(project / "scripts" / "start.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert broken.returncode != 0 and "Docker engine is not running" in broken.stderr


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


# --------------------------------------------------------------------------------------------
# The stack from the command line (before the topology below starts: one stack at a time)
# --------------------------------------------------------------------------------------------


def started_by(roots: set[int]) -> dict[int, int]:
    """pid -> start time of the processes `roots`, the members of their sessions, and all their descendants."""
    table = process_table()
    found = {pid for pid, stat in table.items() if pid in roots or stat.session in roots}
    todo = list(found)
    while todo:
        parent = todo.pop()
        children = [pid for pid, stat in table.items() if stat.ppid == parent and pid not in found]
        found.update(children)
        todo.extend(children)
    return {pid: table[pid].started for pid in found}


def still_running(processes: dict[int, int]) -> list[int]:
    """Those of `processes` (pid -> start time) that have not ended."""
    return [pid for pid, started in processes.items() if not ended(pid, started)]


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
    assert re.search(rf"----- hung process {hung.pid}, state [RS] \(py-spy dump\) -----", stacks), stacks
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


def test_the_stack_runs_from_the_command_line_until_sigterm(tmp_path):
    """`python -m ml_assets.deploy.local FOLDER` (`make stack`): the webserver and MLflow answer at the
    addresses it prints, and SIGTERM stops every process it started, each of them gone by its id."""
    require_servers()
    incoming = tmp_path / "incoming"
    incoming.mkdir()  # no month: nothing runs while the stack is up
    env = {**clean_environ(), **TEST_SETTINGS, "ML_ASSETS_SOURCE": str(incoming)}
    output = tmp_path / "stack.out"
    with output.open("w") as out:
        stack = subprocess.Popen(
            [sys.executable, "-m", "ml_assets.deploy.local", str(tmp_path / "stack")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    processes: dict[int, int] = {}

    def ready() -> str | None:
        text = output.read_text()
        return text if "stops them all." in text else None

    try:
        printed = wait_until(
            ready,
            "the stack ready",
            600,
            exited=lambda: "" if stack.poll() is None else "the stack",
            log=lambda: output.read_text()[-6000:],
        )
        listed = printed.split("processes: ")[1].splitlines()[0]
        leaders = {name: int(pid) for name, pid in re.findall(r"([\w-]+) (\d+)", listed)}
        assert set(leaders) == {"postgres", "pgbouncer", *SERVICES}, printed
        webserver = re.search(r"webserver +(http://127\.0\.0\.1:\d+)", printed)[1]
        mlflow = re.search(r"MLflow +(http://127\.0\.0\.1:\d+)", printed)[1]
        assert http_ok(f"{webserver}/server_info") and http_ok(f"{mlflow}/health")
        logins = Path(re.search(r"logins in (\S+)\)", printed)[1])
        assert oct(logins.stat().st_mode & 0o777) == oct(0o600)

        processes = started_by({stack.pid, *leaders.values()})
        assert set(leaders.values()) <= set(processes)
        assert len(processes) > len(leaders) + 1, "each leader's processes, PostgreSQL's backends"
        stack.send_signal(signal.SIGTERM)
        assert stack.wait(timeout=120) == 0, output.read_text()[-6000:]
        assert "SIGTERM: every process of the stack stopped" in output.read_text()
        assert not still_running(processes), output.read_text()[-6000:]
        # Nor any process that joined a service's group later (none should have: no run was launched).
        left = [pid for pid, stat in process_table().items() if stat.session in leaders.values() and stat.state != "Z"]
        assert not left, left
        assert not logins.exists()
    finally:
        if stack.poll() is None:
            stop_process_group(stack)
        for pid in still_running(processes):  # only after a failure: what the stack left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# The topology
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, s3_server):
    require_servers()
    work = tmp_path_factory.mktemp("deployment")
    incoming = work / "incoming"
    incoming.mkdir()
    # Three months at once: the sensor ingests them in one tick, automation trains 2023-02 and 2023-03.
    for month in MONTHS[:3]:
        drop_month(incoming, month)
    # MLflow's artifacts in an object store (S3 on moto), as a deployment with several machines keeps them.
    bucket = s3_server.new_bucket()
    (work / "tmp").mkdir()  # the services' temporary files, looked at by the first test
    with Topology(
        work / "topology",
        env={**CODE_ENV, "ML_ASSETS_SOURCE": str(incoming), "TMPDIR": str(work / "tmp")},
        overrides=TEST_INSTANCE,
        artifacts_destination=f"s3://{bucket}/mlartifacts",
        store_env=s3_server.env(),
    ) as topology:
        topology.incoming = incoming
        topology.s3, topology.artifacts_bucket = s3_server, bucket
        topology.wait_until_ready()
        yield topology


def materialized(instance, asset: str, month: str) -> bool:
    from dagster import AssetKey

    return month in instance.get_materialized_partitions(AssetKey(asset))


def metadata(instance, asset: str, month: str) -> dict:
    from ml_assets.records import latest_metadata

    return latest_metadata(instance, asset, month)


def run_status(run) -> str:
    return run.status.value


def training_runs(instance):
    from dagster import RunsFilter

    return instance.get_runs(RunsFilter(tags=dict([TRAINING_TAG])))


def assert_training_runs_never_overlapped(instance) -> None:
    """tag_concurrency_limits: at most one training run at a time."""
    records = [
        record
        for record in instance.get_run_records()
        if record.dagster_run.tags.get(TRAINING_TAG[0]) == TRAINING_TAG[1] and record.start_time
    ]
    spans = sorted((record.start_time, record.end_time or time.time(), record.dagster_run.run_id) for record in records)
    for (_, end, first), (start, _, second) in zip(spans, spans[1:], strict=False):
        assert start >= end - 0.5, f"training runs {first} and {second} overlapped"


def trains(run) -> bool:
    return TRAINED_MODEL in (run.asset_selection or ())


# Why Dagster's retry daemon did not retry a failed run whose every step had ended (DagsterInvalidSubsetError).
NOTHING_TO_RETRY = "No steps needed to be retried"


def succeeded_or_retried(instance, run_id: str) -> bool:
    """Whether the run succeeded, or failed and a run retry of it (`run_retries`, deploy/dagster.yaml) did,
    or failed after every step of it had succeeded (its worker killed at its very end), so that Dagster
    found nothing to retry."""
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter
    from dagster._core.storage.tags import ROOT_RUN_ID_TAG

    run = instance.get_run_by_id(run_id)
    if run.status != DagsterRunStatus.FAILURE:
        return run.status == DagsterRunStatus.SUCCESS
    retries = instance.get_runs(RunsFilter(tags={ROOT_RUN_ID_TAG: run_id}))
    if any(retry.status == DagsterRunStatus.SUCCESS for retry in retries):
        return True
    events = instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)  # "Failed to retry run", and why
    errors = [getattr(event.dagster_event.event_specific_data, "error", None) for event in events]
    return any(error is not None and NOTHING_TO_RETRY in error.message for error in errors)


def snapshot(topology: Topology, instance) -> dict:
    """Everything that must never be lost: materializations, asset files, registered versions, study trials."""
    import optuna
    from dagster import AssetKey

    materializations = {}
    for asset in (
        "raw_trips",
        "cleaned_trips",
        "trip_features",
        "best_params",
        "trained_model",
        "trip_duration_predictions",
    ):
        for month in instance.get_materialized_partitions(AssetKey(asset)):
            materializations[(asset, month)] = metadata(instance, asset, month).get("path")
    storage = topology.postgres.url("optuna")
    trials = {
        summary.study_name: len(
            optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(
                deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]
            )
        )
        for summary in optuna.get_all_study_summaries(storage)
    }
    return {
        "materializations": materializations,
        "versions": registered_versions(topology.tracking_uri),
        "trials": trials,
    }


def test_month_is_ingested_and_trained_through_the_topology(deployment):
    from dagster import DagsterRunStatus
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    with deployment.instance() as instance:
        # The instance is PostgreSQL all through.
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)

        deployment.wait_for(
            lambda: materialized(instance, "trip_duration_predictions", "2023-02"),
            "training 2023-02 by automation",
            240,
        )
        runs = {
            (run.tags.get("dagster/partition"), run.tags.get("dagster/sensor_name")): run for run in instance.get_runs()
        }
        for month in ("2023-01", "2023-02"):
            assert runs[(month, "new_month_sensor")].status == DagsterRunStatus.SUCCESS
        training = runs[("2023-02", "training_automation_sensor")]
        # Predictions are stored before the run records its own end: wait for that, then judge it.
        deployment.wait_for(lambda: instance.get_run_by_id(training.run_id).is_finished, "the training run's end", 60)
        training = instance.get_run_by_id(training.run_id)
        assert training.status == DagsterRunStatus.SUCCESS
        assert training.tags.get(TRAINING_TAG[0]) == TRAINING_TAG[1], "automation runs carry the training tag"

        model = metadata(instance, "trained_model", "2023-02")
        tuning = metadata(instance, "best_params", "2023-02")
        assert Path(model["path"]).is_relative_to(deployment.workdir / "data" / "assets")

    # The registered version and its alias, from the tracking server over HTTP.
    # (model_gate published trained_model's run: the champion is the model Dagster recorded.)
    champion = mlflow_get(deployment, "registered-models/alias", name=REGISTERED_MODEL, alias="champion")
    assert champion["model_version"]["run_id"] == model["mlflow_run_id"]
    run = mlflow_get(deployment, "runs/get", run_id=model["mlflow_run_id"])["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {tag["key"]: tag["value"] for tag in run["data"]["tags"]}["partition"] == "2023-02"
    # Artifacts go through the server (--serve-artifacts) into its object store, not the code server's disk.
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
    stored = deployment.s3.keys(deployment.artifacts_bucket, "mlartifacts/")
    assert any(model["mlflow_run_id"] in key and key.endswith("/encoder.json") for key in stored)
    model_id = model["mlflow_model_uri"].removeprefix("models:/")  # MLflow 3 keeps logged models apart from runs
    assert any(key.endswith(f"/models/{model_id}/artifacts/model.ubj") for key in stored), stored
    assert not (deployment.workdir / "data" / "mlartifacts").exists()
    # The champion, loaded from the server by each prediction step, leaves no copy behind (MLflow's stayed).
    assert list((deployment.workdir.parent / "tmp").rglob("MLmodel")) == []

    # The optuna study, from PostgreSQL.
    import optuna

    study = optuna.load_study(study_name=tuning["study"], storage=deployment.postgres.url("optuna"))
    assert len(study.trials) == tuning["trials_total"] >= 1
    assert study.best_value == pytest.approx(tuning["valid_rmse"], abs=1e-4)  # metadata rounds to 4 decimals

    # The webserver serves the code location from the code server.
    workspace = graphql(deployment)._execute("""{ workspaceOrError { ... on Workspace { locationEntries {
        name loadStatus locationOrLoadError { __typename } } } } }""")
    (entry,) = workspace["workspaceOrError"]["locationEntries"]
    assert (entry["name"], entry["loadStatus"], entry["locationOrLoadError"]["__typename"]) == (
        "ml_assets",
        "LOADED",
        "RepositoryLocation",
    )

    # The compose healthchecks pass against the running services.
    for name, result in deployment.health(*SERVICES).items():
        assert result.returncode == 0, f"`service.sh health {name}` failed: {result.stdout}{result.stderr}"


def test_services_accept_connections_from_this_machine_only(deployment):
    """service.sh binds 127.0.0.1 by default (BIND_HOST unset here): the code server's gRPC, which has no
    authentication, the webserver and the MLflow server listened on every interface."""
    listening = deployment.listening()
    for name in ("mlflow", "code-server", "webserver"):
        assert listening[name], f"{name} listens nowhere"
    for name, addresses in listening.items():
        assert all(address.rsplit(":", 1)[0] in ("127.0.0.1", "::1") for address in addresses), (name, addresses)


def test_only_the_pipeline_s_own_user_moves_champion(deployment):
    """MLflow's basic-auth app: without a login nothing is read or moved, a user who is not the
    pipeline's reads but cannot move `champion`; the pipeline's user (its password from the environment,
    never in the tracking URI) registered every version and moved the alias."""
    with deployment.instance() as instance:
        deployment.wait_for(lambda: materialized(instance, "trained_model", "2023-02"), "a model of 2023-02", 300)
    champion = mlflow_get(deployment, "registered-models/alias", name=REGISTERED_MODEL, alias="champion")
    version = champion["model_version"]["version"]
    move = {"name": REGISTERED_MODEL, "alias": "champion", "version": version}
    assert "@" not in deployment.code_env()["MLFLOW_TRACKING_URI"]

    assert (
        mlflow_request(deployment, "registered-models/alias", user=None, name=REGISTERED_MODEL, alias="champion")[0]
        == 401
    )
    assert mlflow_request(deployment, "registered-models/alias", move, user=None)[0] == 401
    admin = ("admin", deployment.mlflow_users.admin_password)
    visitor = ("visitor", "visitor-password-1")
    created = mlflow_request(deployment, "users/create", {"username": visitor[0], "password": visitor[1]}, user=admin)
    assert created[0] == 200, created
    assert mlflow_request(deployment, "registered-models/get", user=visitor, name=REGISTERED_MODEL)[0] == 200
    assert mlflow_request(deployment, "registered-models/alias", move, user=visitor)[0] == 403
    wrong = (deployment.mlflow_users.pipeline_user, "not-the-password")
    assert mlflow_request(deployment, "registered-models/alias", move, user=wrong)[0] == 401
    after = mlflow_get(deployment, "registered-models/alias", name=REGISTERED_MODEL, alias="champion")
    assert after["model_version"]["version"] == version


def test_no_password_is_recorded_or_printed(deployment):
    """PostgreSQL's password (in optuna's storage URL), MLflow's admin and pipeline passwords and its app key:
    in no service's output, compute log, Dagster event or run record, or MLflow run."""
    users = deployment.mlflow_users
    passwords = [deployment.postgres.password, users.admin_password, users.pipeline_password, users.secret_key]
    with deployment.instance() as instance:
        deployment.wait_for(lambda: materialized(instance, "trained_model", "2023-02"), "a model of 2023-02", 300)
    files = [path for path in deployment.workdir.rglob("*") if path.is_file() and path.name != "mlflow-auth.ini"]
    for path in files:
        # The topology goes on with later months meanwhile: an atomic write's temporary file may be renamed away.
        with contextlib.suppress(FileNotFoundError):
            text = path.read_bytes()
            assert not [word for word in passwords if word.encode() in text], f"a password in {path}"
    for table, column in (("event_logs", "event"), ("runs", "run_body")):
        query = f"SELECT count(*) FROM {table} WHERE " + " OR ".join(f"{column} LIKE '%{word}%'" for word in passwords)
        assert deployment.postgres.psql("-At", "-c", query).strip() == "0", f"a password in Dagster's {table}"
    experiment = mlflow_get(deployment, "experiments/get-by-name", experiment_name="trip_duration")["experiment"]
    status, found = mlflow_request(deployment, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})
    runs = found["runs"]
    recorded = json.dumps([run["data"] for run in runs])
    assert runs and not [word for word in passwords if word in recorded], "a password in an MLflow run"


def test_dagster_reaches_postgres_through_pgbouncer(deployment):
    """dagster-postgres opens a connection per query; through PgBouncer they reuse started backends.

    Over 20 s the daemon and the webserver query Dagster's database hundreds of times; straight to
    PostgreSQL each query would start a backend (a session), through the pooler almost none start.
    """
    assert deployment.dagster_env()["POSTGRES_PORT"] == str(deployment.ports["pgbouncer"])

    def sessions() -> int:
        query = "SELECT sessions FROM pg_stat_database WHERE datname = 'dagster'"
        return int(deployment.postgres.psql("-At", "-c", query).strip())

    before = sessions()
    with deployment.instance() as instance:
        for _ in range(50):  # and this process's queries too
            instance.get_runs(limit=1)
    time.sleep(20)
    started = sessions() - before - 1  # the query that counts them is a session of its own
    assert started <= 10, f"{started} new PostgreSQL sessions in 20 s: Dagster is not going through PgBouncer"


def test_killed_daemon_and_code_server_lose_nothing(deployment):
    """kill -9 the daemon, then the code server (with its run worker), while a training run is in flight."""
    from dagster import DagsterEventType, DagsterRunStatus

    with deployment.instance() as instance:
        launched = []

        def in_flight():
            """Automation's training run of 2023-03 if it is still to come; else one launched by hand."""
            runs = [run for run in training_runs(instance) if run_status(run) in IN_PROGRESS]
            # A run that trains: automation's run of 2023-01 only scores the month (no earlier month to
            # train on), and its steps can all be over before the kill, which leaves Dagster nothing to retry.
            started = [run for run in runs if run.status == DagsterRunStatus.STARTED and trains(run)]
            if started:
                return started[0]
            if not runs and not launched and materialized(instance, "trip_duration_predictions", "2023-03"):
                launched.append(
                    launch(
                        deployment,
                        "2023-03",
                        ["trip_features", "best_params", "trained_model", "trip_duration_predictions"],
                    )
                )
            return None

        found = []
        deployment.wait_for(
            lambda: found.append(in_flight()) or found[-1] is not None, "a training run in flight", 300, poll=0.3
        )
        run = found[-1]
        before = snapshot(deployment, instance)

        deployment.services["daemon"].kill()
        deployment.restart("daemon")
        deployment.services["code-server"].kill()  # with the run's worker process: it is the server's child
        deployment.restart("code-server")
        drop_month(deployment.incoming, "2023-04")  # a month published while the services come back

        deployment.wait_for(
            lambda: succeeded_or_retried(instance, run.run_id), "the killed run, or its retry, to succeed", 240
        )
        if instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE:  # the worker died with the server
            (failure,) = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
            assert "code server" in failure.message, failure.message

        # The next month still trains, and nothing stays in progress.
        deployment.wait_for(
            lambda: materialized(instance, "trip_duration_predictions", "2023-04"),
            "training 2023-04 after the restarts",
            240,
        )
        deployment.wait_for(
            lambda: not [r for r in instance.get_runs() if run_status(r) in IN_PROGRESS], "every run finished", 60
        )
        after = snapshot(deployment, instance)
        assert_training_runs_never_overlapped(instance)
        for month in ("2023-02", "2023-03", "2023-04"):
            assert materialized(instance, "trained_model", month)

    for key, path in before["materializations"].items():
        assert key in after["materializations"], f"materialization {key} lost"
        assert path is None or Path(path).exists(), f"file of {key} lost: {path}"
    for version, record in before["versions"].items():
        assert after["versions"].get(version, {}).get("run_id") == record["run_id"], f"model version {version} lost"
    for study, complete in before["trials"].items():
        assert after["trials"].get(study, 0) >= complete, f"finished trials of {study} lost"
    assert all(record["status"] == "READY" for record in after["versions"].values())


def test_mlflow_server_down_mid_step_is_waited_out(deployment):
    """The tracking server stops while trained_model trains: the step fails naming it and is retried
    after a delay (ml_assets.outages) until the server is back; the run then succeeds, with one
    registered version, and nobody re-executed anything."""
    from dagster import DagsterEventType, DagsterRunStatus

    month = "2023-02"
    with deployment.instance() as instance:
        deployment.wait_for(lambda: materialized(instance, "best_params", month), f"best_params {month}", 240)
        versions_before = registered_versions(deployment.tracking_uri)
        # Launched from the webserver as a user would, with enough boosting rounds (no early stopping)
        # to stop MLflow mid-step: its first call comes after training.
        rounds = 300
        run_id = launch(
            deployment,
            month,
            ["trained_model"],
            {"ops": {"trained_model": {"config": {"num_boost_round": rounds, "early_stopping_rounds": rounds}}}},
        )

        def events(event_type) -> list:
            logged = instance.all_logs(run_id, of_type=event_type)
            return [event for event in logged if event.step_key == "trained_model"]

        deployment.wait_for(lambda: events(DagsterEventType.STEP_START), "trained_model started", 240, poll=0.1)
        deployment.services["mlflow"].kill()
        (retry,) = deployment.wait_for(
            lambda: events(DagsterEventType.STEP_UP_FOR_RETRY), "trained_model up for retry", 120, poll=0.5
        )
        assert not instance.get_run_by_id(run_id).is_finished, (
            f"trained_model finished before the MLflow server was down: raise `rounds` ({rounds})"
        )
        error = retry.dagster_event.event_specific_data.error.to_string()
        assert deployment.tracking_uri in error, error
        assert not deployment.mlflow_ok()  # the step waits while the server is really down

        deployment.restart("mlflow")
        deployment.wait_for(lambda: instance.get_run_by_id(run_id).is_finished, "the run to end", 300, poll=0.5)
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.SUCCESS
        assert not events(DagsterEventType.STEP_FAILURE)
        model = metadata(instance, "trained_model", month)
        assert_training_runs_never_overlapped(instance)

    versions = registered_versions(deployment.tracking_uri)
    (new,) = set(versions) - set(versions_before)  # one version, registered by the retried step's model_gate
    assert versions[new]["run_id"] == model["mlflow_run_id"]
    assert len(versions[new]["aliases"]) == 1
    run = mlflow_get(deployment, "runs/get", run_id=model["mlflow_run_id"])["run"]
    assert run["info"]["status"] == "FINISHED"


def test_postgres_restarted_while_best_params_tunes_and_the_month_finishes(deployment):
    """`pg_ctl stop -m fast`, then start 3 s later, while best_params tunes: optuna lost its connection
    (StorageInternalError, then its own UnboundLocalError), the run failed with no retry and the trial
    stayed RUNNING. Now the step is retried once the database answers (ml_assets/outages.py), the trial
    the restart cut off is FAILED, and the month is done without an operator: by the run, or, where
    PgBouncer also refused Dagster's own event writes (it does while logging in to the server fails),
    by its run retry."""
    import optuna
    from dagster import DagsterEventType, DagsterRunStatus

    month = "2023-02"
    with deployment.instance() as instance:
        deployment.wait_for(lambda: materialized(instance, "best_params", month), f"best_params {month}", 300)
        deployment.wait_for(
            lambda: not [r for r in instance.get_runs() if run_status(r) in IN_PROGRESS], "other runs to end", 300
        )
        before = snapshot(deployment, instance)
        # Tuning until its budget is spent, each attempt: long enough to be cut off after its second trial.
        tuning = {"ops": {"best_params": {"config": {"n_trials": 1000, "timeout_seconds": 20}}}}
        run_id = launch(deployment, month, ["best_params"], tuning)

        def trials_logged() -> int:
            return sum("trial " in (entry.user_message or "") for entry in instance.all_logs(run_id))

        deployment.wait_for(lambda: trials_logged() >= 2, "best_params tuning", 240, poll=0.2)
        deployment.postgres.stop("fast")
        time.sleep(3)
        deployment.postgres.start()
        deployment.wait_for(lambda: succeeded_or_retried(instance, run_id), "the run, or its retry, to succeed", 300)
        retried = instance.all_logs(run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
        run_failed = instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
        assert [entry.step_key for entry in retried] == ["best_params"] or run_failed, "the restart missed the run"
        study = metadata(instance, "best_params", month)["study"]
        after = snapshot(deployment, instance)

    trials = optuna.load_study(study_name=study, storage=deployment.postgres.url("optuna")).get_trials(deepcopy=False)
    assert [trial.number for trial in trials if trial.state == optuna.trial.TrialState.RUNNING] == []
    for key in before["materializations"]:
        assert key in after["materializations"], f"materialization {key} lost"
    assert before["versions"] == after["versions"]
    for name, complete in before["trials"].items():
        assert after["trials"].get(name, 0) >= complete, f"finished trials of {name} lost"
