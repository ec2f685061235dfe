"""docker-compose.yml on a real Docker engine, started as a user starts it: `scripts/start.sh -d`.

    stack = Stack.copy_of_project(workdir, settings)   # the project's files, a fresh .env made by start.sh
    stack.start()                                        # start.sh -d, then every service healthy
    stack.graphql(query, variables)                      # the webserver's published port
    stack.remove()                                       # down --volumes: nothing of the project is left

A copy of the project (what git tracks or would add) in `workdir`, so that start.sh makes its own
.env there and a developer's .env is never touched. Its compose project has a name of its own
(COMPOSE_PROJECT_NAME) and free published ports, so it cannot meet another: those and the test's
settings are given to start.sh in the environment, which Compose prefers to .env's values.
`Stack.ports["webserver"]` lets the GraphQL helpers of ml_assets.deploy.local.ui_actions (launch,
backfill, stop_sensors) drive this webserver as they drive the local stack's.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ml_assets.deploy.local.environment import clean_environ
from ml_assets.deploy.local.ui_actions import REPOSITORY, RUN_SENSORS, graphql
from ml_assets_tests.support import ROOT, free_port, wait_until

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def docker_missing() -> str | None:
    """Why Compose cannot run here (no docker CLI, no engine answering, no Compose), or None."""
    if shutil.which("docker") is None:
        return "no `docker` command: Docker is not installed"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
        return "the Docker engine does not answer (`docker info` failed)"
    if compose_command() is None:
        return "neither `docker compose` nor `docker-compose` is installed"
    return None


def compose_command() -> list[str] | None:
    """As scripts/start.sh chooses it: the Compose plugin, else Debian's docker-compose."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def default_services() -> dict[str, dict]:
    """The services `up` starts, by name: all of docker-compose.yml's but those behind a profile."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return {name: service for name, service in services.items() if "profiles" not in service}


def upstream_images() -> list[str]:
    """The images the project does not build: the Dockerfile's base and the compose file's other images
    (services of a profile, such as MinIO, are not started by default and left out)."""
    (base,) = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("FROM ")]
    named = {service["image"] for service in default_services().values() if "build" not in service}
    return [base, *sorted(named)]


def settled(container: dict) -> bool:
    """A service up and healthy, or a one-shot (no healthcheck) that has done its work."""
    if container["health"] == "none":
        return container["state"] == "exited" and container["exit_code"] == 0
    return container["health"] == "healthy" and container["state"] == "running"


@dataclass
class Stack:
    workdir: Path
    env: dict[str, str]  # what start.sh and Compose get: project name, ports, the code's settings
    ports: dict[str, int]
    saved_logs: list[str] = field(default_factory=list)  # of containers since removed
    start_output: str = ""  # what the last start.sh said

    @classmethod
    def copy_of_project(cls, workdir: Path, settings: dict[str, str]) -> Stack:
        files = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\0")
        for name in filter(None, files):
            if (ROOT / name).is_file():
                (workdir / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, workdir / name)
        ports = {"webserver": free_port(), "mlflow": free_port()}
        outside = {key: value for key, value in clean_environ().items() if not key.startswith(("COMPOSE_", "AWS_"))}
        env = {
            **outside,
            "COMPOSE_PROJECT_NAME": f"ml_assets_test_{secrets.token_hex(4)}",
            "DAGSTER_UI_PORT": str(ports["webserver"]),
            "MLFLOW_UI_PORT": str(ports["mlflow"]),
            # trained_model's links point at the published MLflow UI.
            "ML_ASSETS_MLFLOW_UI_URL": f"http://127.0.0.1:{ports['mlflow']}",
            **settings,
        }
        return cls(workdir, env, ports)

    @property
    def project(self) -> str:
        return self.env["COMPOSE_PROJECT_NAME"]

    @property
    def incoming(self) -> Path:
        """The folder docker-compose.override.yml mounts into the code server and the workers."""
        return self.workdir / "incoming"

    @property
    def mlflow_url(self) -> str:
        return self.env["ML_ASSETS_MLFLOW_UI_URL"]

    def dotenv(self, name: str) -> str:
        """A variable of the project's .env, where scripts/start.sh writes the passwords it generates."""
        (line,) = [line for line in (self.workdir / ".env").read_text().splitlines() if line.startswith(f"{name}=")]
        return line.split("=", 1)[1]

    # ----- life cycle

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [*compose_command(), *args], cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"compose {' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        return result

    def start(self, *args: str, healthy_within: float = 300) -> float:
        """`scripts/start.sh -d ARGS` (build, create, start); seconds until every service is healthy."""
        started = time.monotonic()
        result = subprocess.run(
            ["bash", "scripts/start.sh", "-d", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert result.returncode == 0, f"start.sh failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
        self.start_output = result.stdout + result.stderr
        self.wait_healthy(healthy_within)
        return time.monotonic() - started

    def wait_healthy(self, seconds: float) -> None:
        """Until every service is healthy, and every one-shot (no healthcheck) has exited 0."""

        def unhealthy() -> list[str]:
            return [f"{c['service']} {c['state']}/{c['health']}" for c in self.containers() if not settled(c)]

        wait_until(
            lambda: self.containers() and not unhealthy(),
            "every service healthy",
            seconds,
            poll=2,
            log=lambda: f"not healthy: {unhealthy()}\n{self.logs()[-6000:]}",
        )

    def containers(self, service: str | None = None) -> list[dict]:
        """The project's containers (all states): id, service, state, health, host pid, exit code, restarts."""
        ids = self._labelled("container")
        if not ids:
            return []
        found = json.loads(
            subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True).stdout
        )
        containers = [
            {
                "id": item["Id"],
                "service": item["Config"]["Labels"][SERVICE_LABEL],
                "hostname": item["Config"]["Hostname"],
                "state": item["State"]["Status"],
                "health": (item["State"].get("Health") or {}).get("Status", "none"),
                "pid": item["State"]["Pid"],
                "exit_code": item["State"]["ExitCode"],
                "restarts": item["RestartCount"],
            }
            for item in found
        ]
        return [c for c in containers if service in (None, c["service"])]

    def crash(self, service: str) -> dict:
        """kill -9 of the service's container's main process from the host, as a crash (or the OOM killer)
        would end it: Docker's restart policy restarts it. Returns the container as it was."""
        (container,) = self.containers(service)
        os.kill(container["pid"], signal.SIGKILL)
        return container

    def logs(self, *services: str) -> str:
        """The services' (default: every) containers' output, stdout and stderr, since they were created."""
        return self.compose("logs", "--no-color", "--timestamps", *services).stdout

    def remove(self) -> dict[str, list[str]]:
        """`down --volumes`; what is still left of the project afterwards (containers, networks, volumes)."""
        down = subprocess.run(
            [*compose_command(), "down", "--volumes", "--remove-orphans", "--timeout", "10"],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            timeout=600,
        )
        if down.returncode != 0:  # whatever stopped Compose: remove by the project's label
            for kind, remove in (("container", ["rm", "--force", "--volumes"]), ("network", ["network", "rm"])):
                if found := self._labelled(kind):
                    subprocess.run(["docker", *remove, *found], capture_output=True, timeout=300)
            if found := self._labelled("volume"):
                subprocess.run(["docker", "volume", "rm", *found], capture_output=True, timeout=300)
        return {kind: self._labelled(kind) for kind in ("container", "network", "volume")}

    def _labelled(self, kind: str) -> list[str]:
        """Ids (names for volumes) of the project's containers (all states), networks or volumes."""
        listing = {"container": ["ps", "--all"], "network": ["network", "ls"], "volume": ["volume", "ls"]}[kind]
        command = ["docker", *listing, "--quiet", "--filter", f"label={PROJECT_LABEL}={self.project}"]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()

    # ----- the webserver and the MLflow server, on their published ports

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        return graphql(self)._execute(query, variables or {})

    def mlflow(self, endpoint: str, **params) -> dict:
        """MLflow's REST API."""
        with self.mlflow_get(f"/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(params)}") as response:
            return json.load(response)

    def mlflow_get(self, path: str):
        """A page of the MLflow server, logged in as the pipeline's user (the server runs MLflow's basic-auth app)."""
        login = f"{self.dotenv('MLFLOW_TRACKING_USERNAME')}:{self.dotenv('MLFLOW_TRACKING_PASSWORD')}"
        headers = {"Authorization": f"Basic {b64encode(login.encode()).decode()}"}
        return urllib.request.urlopen(urllib.request.Request(self.mlflow_url + path, headers=headers), timeout=30)

    def start_sensors(self) -> None:
        for name in RUN_SENSORS:
            started = self.graphql(
                """mutation Start($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
                     __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }""",
                {"selector": {**REPOSITORY, "sensorName": name}},
            )["startSensor"]
            assert started.get("sensorState", {}).get("status") == "RUNNING", (name, started)

    def run(self, run_id: str) -> dict:
        return self.graphql(
            """query Run($id: ID!) { runOrError(runId: $id) { ... on Run { runId status tags { key value } } } }""",
            {"id": run_id},
        )["runOrError"]

    def runs(self, tags: dict[str, str] | None = None) -> list[dict]:
        found = self.graphql(
            """query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs {
                 results { runId status tags { key value } } } } }""",
            {"filter": {"tags": [{"key": key, "value": value} for key, value in (tags or {}).items()]}},
        )
        return found["runsOrError"]["results"]

    def events(self, run_id: str) -> list[dict]:
        """The run's events: type, step, message, metadata (label -> text or url)."""
        found = self.graphql(
            """query Logs($id: ID!) { logsForRun(runId: $id, limit: 100000) { ... on EventConnection { events {
                 __typename ... on MessageEvent { message } ... on StepEvent { stepKey }
                 ... on DisplayableEvent { metadataEntries { label
                   ... on TextMetadataEntry { text } ... on UrlMetadataEntry { url } } } } } } }""",
            {"id": run_id},
        )["logsForRun"]["events"]
        for event in found:
            event["metadata"] = {
                e["label"]: e.get("text") or e.get("url") for e in event.pop("metadataEntries", None) or []
            }
        return found

    def materialization(self, asset: str, month: str) -> dict | None:
        """The latest materialization of `asset` for `month`: its run and its metadata (label -> value)."""
        found = (
            self.graphql(
                """query Materialized($key: AssetKeyInput!, $month: String!) { assetOrError(assetKey: $key) {
                 ... on Asset { assetMaterializations(partitions: [$month], limit: 1) { runId metadataEntries {
                   label ... on TextMetadataEntry { text } ... on UrlMetadataEntry { url }
                   ... on FloatMetadataEntry { floatValue } } } } } }""",
                {"key": {"path": [asset]}, "month": month},
            )["assetOrError"].get("assetMaterializations")
            or []
        )
        if not found:
            return None
        (latest,) = found
        metadata = {e["label"]: e.get("text") or e.get("url") or e.get("floatValue") for e in latest["metadataEntries"]}
        return {"run_id": latest["runId"], "metadata": metadata}
