"""Installs come from uv.lock: `make run` on a new virtual environment installs the base dependencies
only, none of the extras (the production topology's, gcs, k8s, the test tools), and runs the README's
month end to end with them; and uv.lock is the resolution of pyproject.toml as it is now.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess

import pytest

from ml_assets.deploy.local.environment import clean_environ
from ml_assets_tests.support import BIN, ROOT, ROUNDS_ENV

pytestmark = pytest.mark.process  # uv, and make run on a new virtual environment

# Distributions that only an extra brings (checked below against the package's own metadata).
EXTRAS_ONLY = ["dagster-celery", "celery", "dagster-postgres", "psycopg2-binary", "s3fs", "boto3", "gcsfs"]
EXTRAS_ONLY += ["dagster-k8s", "kubernetes", "pytest", "ruff", "playwright", "moto", "gcp-storage-emulator"]


def test_uv_lock_is_the_resolution_of_pyproject():
    check = subprocess.run([str(BIN / "uv"), "lock", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr


def test_make_run_installs_the_base_dependencies_only_and_runs_a_month(tmp_path):
    from packaging.requirements import Requirement

    required = [Requirement(line) for line in importlib.metadata.requires("ml_assets")]
    assert not {r.name.lower() for r in required if r.marker is None} & set(EXTRAS_ONLY)
    venv, home = tmp_path / "venv", tmp_path / "dagster_home"
    env = {
        **clean_environ(),
        "DAGSTER_HOME": str(home),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # The month's size is not what is tested: the tests' trips, trials and boosting rounds.
        "ML_ASSETS_SYNTHETIC_ROWS": "5000",
        "ML_ASSETS_TUNING_TRIALS": "2",
        "ML_ASSETS_TUNING_TIMEOUT_SECONDS": "10",
        **{name: os.environ[name] for name in ROUNDS_ENV},  # conftest's
    }
    make = shutil.which("make")
    run = subprocess.run(
        # Not compiled to bytecode: 25 CPU-seconds that change no file looked at here (CI's own
        # `make install-dev` compiles a superset of these packages).
        [make, "--no-print-directory", "run", f"VENV={venv}", "COMPILE="],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "2021-02" in run.stdout and "rmse" in run.stdout.lower(), run.stdout[-3000:]

    listed = (
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(*(d.name for d in m.distributions()))",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.lower()
        .replace("_", "-")
        .split()
    )
    assert "ml-assets" in listed and "dagster" in listed
    assert not set(EXTRAS_ONLY) & set(listed), set(EXTRAS_ONLY) & set(listed)
