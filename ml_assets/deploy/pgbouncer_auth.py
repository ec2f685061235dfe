"""PgBouncer's auth file (both stacks write it here), and the compose stack's PostgreSQL secret it
shares, at scram.ITERATIONS.

The postgres image hashes POSTGRES_PASSWORD at PostgreSQL's 4096 SCRAM iterations, and PgBouncer,
given the password itself, hashed it again at 4096 for every login; dagster-postgres logs in for
every query. This one-shot (compose's `pgbouncer_auth`, before PgBouncer starts) gives the role a
secret of fewer iterations unless it already has one for this password, and writes that secret to
PgBouncer's auth file: PgBouncer checks logins against it and passes them on to PostgreSQL, which
holds the same ([Deployment](../../docs/deployment.md#postgresql-logins)).

    python -m ml_assets.deploy.pgbouncer_auth AUTH_FILE   # reads POSTGRES_HOST, _PORT, _USER, _PASSWORD, _DB
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ml_assets.deploy.scram import ROLE_SECRET, hashes, scram_secret


def ensure_secret(connection, password: str) -> str:
    """The login role's secret: kept if it is `password`'s at scram.ITERATIONS, else replaced by one."""
    with connection.cursor() as cursor:
        cursor.execute(ROLE_SECRET.format(role="current_user"))
        (current,) = cursor.fetchone()
        if current and hashes(current, password):
            return current
        secret = scram_secret(password)
        cursor.execute("ALTER ROLE CURRENT_USER PASSWORD %s", (secret,))  # PostgreSQL stores a secret as it is
    return secret


def write_auth_file(path: Path, user: str, secret: str, mode: int = 0o600) -> None:
    """PgBouncer's auth file (`"user" "secret"`), replaced whole, with `mode`."""
    quoted = user.replace('"', '""')
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f'"{quoted}" "{secret}"\n')
    partial.chmod(mode)
    os.replace(partial, path)


def main(argv: list[str]) -> int:
    import psycopg2

    user, password = os.environ["POSTGRES_USER"], os.environ["POSTGRES_PASSWORD"]
    connection = psycopg2.connect(
        host=os.environ["POSTGRES_HOST"],
        port=os.environ.get("POSTGRES_PORT", "5432"),
        user=user,
        password=password,
        dbname=os.environ["POSTGRES_DB"],
    )
    connection.autocommit = True
    try:
        secret = ensure_secret(connection, password)
    except ValueError as refused:  # a password scram_secret does not hash
        print(f"pgbouncer_auth: POSTGRES_PASSWORD: {refused}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    # PgBouncer's container runs as another user: readable by all (a SCRAM secret checks a login, cannot make one).
    write_auth_file(Path(argv[0]), user, secret, mode=0o644)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
