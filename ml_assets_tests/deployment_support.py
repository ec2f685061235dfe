"""What the deployment tests share (the local stack's, Celery's, compose's): test-sized settings,
skipping where the servers are not installed, and MLflow's REST API read as one of its users.

The stack itself is the product's (ml_assets/deploy/local/); this module holds only what tests need.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request

from ml_assets.deploy.local.postgres import PostgresUnavailable, pgbouncer_binary, postgres_bindir
from ml_assets.deploy.local.topology import RedisUnavailable, Topology, redis_server
from ml_assets_tests.support import GREEN_MODEL, ROUNDS_ENV

# Test-sized run monitoring (merged into deploy/dagster.yaml): a run whose worker died is failed within 5 s;
# the rest is production's. (Checking every 2 s, and the queue every second, cost the daemon a quarter more CPU.)
TEST_INSTANCE = {"run_monitoring": {"poll_interval_seconds": 5}}
# The code's test-sized settings for a deployment under test (real TLC months from 2023-01, one month
# of training, a short study, sensor and automation every 5 s, the tests' XGBoost threads and boosting rounds);
# everything else is production's.
TEST_SETTINGS = {
    "ML_ASSETS_START_MONTH": "2023-01",
    "ML_ASSETS_TRAINING_MONTHS": "1",
    "ML_ASSETS_TUNING_TRIALS": "2",
    "ML_ASSETS_TUNING_TIMEOUT_SECONDS": "10",
    "ML_ASSETS_SENSOR_INTERVAL_SECONDS": "5",
    "ML_ASSETS_AUTOMATION_INTERVAL_SECONDS": "5",
    **{  # conftest.py's
        name: os.environ[name] for name in ("ML_ASSETS_PARALLEL_TRAINING_STEPS", *ROUNDS_ENV)
    },
}


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
        client.get_model_version(GREEN_MODEL, found.version)  # search leaves aliases out
        for found in client.search_model_versions(f"name='{GREEN_MODEL}'")
    ]
    return {
        str(version.version): {"run_id": version.run_id, "status": version.status, "aliases": sorted(version.aliases)}
        for version in versions
    }
