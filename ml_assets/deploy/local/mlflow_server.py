"""The MLflow tracking server of the local stack: its environment for `service.sh mlflow`, and the
logins of its basic-auth app (ml_assets/deploy/mlflow_auth.py), generated for each stack."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ml_assets.deploy.local.environment import service_environ


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
