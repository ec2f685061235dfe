"""MLflow's basic-auth app for the tracking server of the production topology (`deploy/service.sh mlflow`).

Without it, anyone who reaches the server could move `champion`. MLflow reads its auth settings from
an ini file (MLFLOW_AUTH_CONFIG_PATH) and creates its admin from MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD;
this writes that file from the environment, readable by its owner only (it holds the auth
database's URL), and gives the pipeline a user of its own, MLFLOW_TRACKING_USERNAME with
MLFLOW_TRACKING_PASSWORD (the variables MLflow's clients log in with), never an admin.
Users who are not the admin read every experiment and model (`default_permission`); each edits
what it created.

`mlflow_server.py` calls `set_up` before it starts the server with the app (`--app-name basic-auth`).
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

DEFAULT_PERMISSION = "READ"
AUTH_CACHE_SECONDS = 60


def write_config(path: Path, database_uri: str) -> None:
    """The ini file MLflow's auth app reads, created with mode 0600."""
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        "default_permission": DEFAULT_PERMISSION,
        "database_uri": database_uri,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        # Checking a password (PBKDF2) on every request costs more than most requests: a training step makes
        # hundreds. A changed password may then be accepted for this long by the workers that cached it.
        "auth_cache_ttl_seconds": str(AUTH_CACHE_SECONDS),
    }
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        config.write(handle)


def ensure_user(database_uri: str, username: str, password: str) -> None:
    """`username` exists with `password` (set again if it changed), and is no admin."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(database_uri)  # creates or migrates the auth tables, as the server would
    if store.has_user(username, use_primary=True):
        store.update_user(username, password=password, is_admin=False)
    else:
        store.create_user(username, password, is_admin=False)


def set_up() -> None:
    """The config file at MLFLOW_AUTH_CONFIG_PATH and the pipeline's user, from the environment."""
    database_uri = os.environ["MLFLOW_AUTH_DATABASE_URI"]
    write_config(Path(os.environ["MLFLOW_AUTH_CONFIG_PATH"]), database_uri)
    ensure_user(database_uri, os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
