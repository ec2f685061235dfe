"""The production topology's files, checked without starting it: docker-compose.yml and `.env.example`,
the Dockerfile, the Helm values, and `scripts/start.sh` with a stand-in `docker` (`docker compose
config` / `docker-compose config` too, where one is installed). test_deployment.py starts the topology
these files describe; test_compose.py runs the compose file on a real Docker engine.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ml_assets.deploy.local.service import SERVICE_SH
from ml_assets.deploy.local.topology import CELERY_WORKER, SERVICES
from ml_assets_tests.support import ROOT

pytestmark = pytest.mark.deployment

# What scripts/start.sh generates into .env besides POSTGRES_PASSWORD: MLflow's logins.
GENERATED_MLFLOW_SECRETS = ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")


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
        "pgbouncer_auth",
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
    # Over TCP: a check on the Unix socket passed against the entrypoint's temporary server, which listens on
    # nothing else, and pgbouncer_auth, started on that, was refused (one compose run of many, under load).
    assert "pg_isready --host 127.0.0.1 " in " ".join(postgres["healthcheck"]["test"])
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
    # PgBouncer gets the role's SCRAM secret from the one-shot pgbouncer_auth (ml_assets/deploy/pgbouncer_auth.py),
    # never the password; the one-shot runs the image's module and exits before PgBouncer starts.
    auth = services["pgbouncer_auth"]
    assert "DB_PASSWORD" not in pgbouncer["environment"]
    assert pgbouncer["depends_on"]["pgbouncer_auth"]["condition"] == "service_completed_successfully"
    assert auth["restart"] == "no" and auth["image"] == services["mlflow"]["image"]
    assert auth["command"][:3] == ["python", "-m", "ml_assets.deploy.pgbouncer_auth"]
    assert auth["depends_on"]["postgres"]["condition"] == "service_healthy"
    auth_volume, auth_dir = auth["volumes"][0].split(":")
    assert Path(auth["command"][3]).parent == Path(auth_dir)
    assert f"{auth_volume}:{Path(pgbouncer['environment']['AUTH_FILE']).parent}:ro" in pgbouncer["volumes"]
    assert auth_dir in (ROOT / "Dockerfile").read_text()  # the mount point exists, owned by the image's user
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
        "pgbouncer_auth",
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


def test_each_stand_in_reads_every_variable_compose_gives_its_service():
    """A stand-in image does what the compose file uses of the upstream one: the PgBouncer stand-in ignored
    SERVER_CHECK_DELAY and SERVER_LOGIN_RETRY, so the compose test ran PgBouncer as after no restart."""
    from ml_assets_tests.standins import HERE, STANDINS

    checked = []
    for name, service in compose_file()["services"].items():
        folder = STANDINS.get(service.get("image", "").split(":")[0])
        if folder is None or not (HERE / folder / "entrypoint.sh").exists():
            continue
        entrypoint = (HERE / folder / "entrypoint.sh").read_text()
        ignored = [var for var in service.get("environment", {}) if not re.search(rf"\$\{{?{var}\b", entrypoint)]
        assert not ignored, f"{name}: the {folder} stand-in ignores {ignored}"
        checked.append(name)
    assert {"postgres", "pgbouncer"} <= set(checked)


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
    # Any queuedRunCoordinator value makes the chart write `max_concurrent_runs: -1` into run_coordinator, which
    # Dagster refuses beside `concurrency:` (dagster._core.instance.config.validate_concurrency_config).
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator" and "config" not in daemon["runCoordinator"]
    runs, pools = values["concurrency"]["runs"], values["concurrency"]["pools"]
    assert runs["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert runs["tagConcurrencyLimits"] == instance["concurrency"]["runs"]["tag_concurrency_limits"]
    assert pools["defaultLimit"] == instance["concurrency"]["pools"]["default_limit"]
    assert daemon["runMonitoring"]["enabled"] and daemon["runRetries"]["enabled"]
    assert daemon["runMonitoring"]["maxRuntimeSeconds"] == instance["run_monitoring"]["max_runtime_seconds"]
    assert daemon["runRetries"]["maxRetries"] == instance["run_retries"]["max_retries"]
    # A step failing on bad data or a check is not retried (the chart left Dagster's default, True, so
    # every such run ran twice more on Kubernetes); a lost run worker is.
    assert daemon["runRetries"].get("retryOnAssetOrOpFailure") is False
    assert instance["run_retries"]["retry_on_asset_or_op_failure"] is False


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
