"""The compose stack's one-shot `pgbouncer_auth` against a real PostgreSQL and PgBouncer (the compose test
runs it in its container): the role's secret at scram.ITERATIONS, shared with PgBouncer's auth file."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ml_assets.deploy.local.ports import free_port
from ml_assets.deploy.local.postgres import accepting, pgbouncer_command, throwaway_postgres
from ml_assets.deploy.scram import ITERATIONS, hashes
from ml_assets_tests.deployment_support import require_servers
from ml_assets_tests.support import stop_process_group, wait_until

pytestmark = pytest.mark.deployment


def test_the_role_gets_a_cheaper_secret_once_and_pgbouncer_passes_logins_on_with_it(tmp_path):
    require_servers()
    import psycopg2

    with throwaway_postgres() as server:
        # As the postgres image leaves a new volume: the password hashed by PostgreSQL, at 4096 iterations.
        server.psql("-c", f"ALTER ROLE {server.user} PASSWORD '{server.password}'", database="postgres")
        assert server.secret(server.user).startswith("SCRAM-SHA-256$4096:")
        env = {
            **os.environ,
            "POSTGRES_HOST": server.host,
            "POSTGRES_PORT": str(server.port),
            "POSTGRES_USER": server.user,
            "POSTGRES_PASSWORD": server.password,
            "POSTGRES_DB": "dagster",
        }
        auth_file = tmp_path / "userlist.txt"

        def one_shot(**changed: str) -> subprocess.CompletedProcess:
            command = [sys.executable, "-m", "ml_assets.deploy.pgbouncer_auth", str(auth_file)]
            return subprocess.run(command, env={**env, **changed}, capture_output=True, text=True, timeout=60)

        assert one_shot().returncode == 0
        secret = server.secret(server.user)
        assert secret.startswith(f"SCRAM-SHA-256${ITERATIONS}:") and hashes(secret, server.password)
        line = f'"{server.user}" "{secret}"\n'  # PgBouncer's auth file format
        assert auth_file.read_text() == line
        assert oct(auth_file.stat().st_mode & 0o777) == "0o644"  # PgBouncer's container has a user of its own

        assert one_shot().returncode == 0  # every `up` runs it again: the secret stays
        assert server.secret(server.user) == secret and auth_file.read_text() == line

        refused = one_shot(POSTGRES_PASSWORD="wrong")  # not the password: PostgreSQL refuses the login
        assert refused.returncode != 0 and "password authentication failed" in refused.stderr, refused.stderr
        assert server.secret(server.user) == secret

        # PgBouncer with that secret: a client logs in with the password, and PgBouncer passes the login on.
        port = free_port()
        command = pgbouncer_command(server, port)
        assert (server.directory / "pgbouncer_users.txt").read_text() == auth_file.read_text()
        pgbouncer = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL)
        try:
            wait_until(lambda: accepting(server, port), "PgBouncer", 30)
            for _ in range(2):  # the second login reuses the pooled backend
                with (
                    psycopg2.connect(
                        host=server.host, port=port, user=server.user, password=server.password, dbname="dagster"
                    ) as connection,
                    connection.cursor() as cursor,
                ):
                    cursor.execute("SELECT current_user")
                    assert cursor.fetchone() == (server.user,)
            with pytest.raises(psycopg2.OperationalError, match="SASL authentication failed"):
                psycopg2.connect(host=server.host, port=port, user=server.user, password="wrong", dbname="dagster")
        finally:
            stop_process_group(pgbouncer)

        # A password scram_secret does not hash (PostgreSQL would normalize it first): said, and nothing changed.
        server.psql("-c", f"ALTER ROLE {server.user} PASSWORD 'pâté-42'", database="postgres")
        server.password = "pâté-42"  # for psql's logins from here on
        theirs = server.secret(server.user)
        refused = one_shot(POSTGRES_PASSWORD="pâté-42")
        assert refused.returncode == 1 and "POSTGRES_PASSWORD: only printable ASCII" in refused.stderr, refused.stderr
        assert server.secret(server.user) == theirs and auth_file.read_text() == line
